//! The whole server on a real S3-compatible store (`METERBASE_TEST_S3_URL`, set by
//! `make test` through `scripts/test-env.sh`): ingest, flush, staged CSV upload, deletion,
//! compaction, a crash, and the same answers throughout; warm queries served by the read
//! cache.

mod common;

use common::{Server, compact, customer_totals, metric, num, tempdir};
use serde_json::{Value, json};

#[test]
fn the_server_works_the_same_on_s3() {
    let Ok(base) = std::env::var("METERBASE_TEST_S3_URL") else {
        eprintln!("METERBASE_TEST_S3_URL is not set: S3 not tested here (make test sets it)");
        return;
    };
    let url = format!(
        "{}/server-{}",
        base.trim_end_matches('/'),
        std::process::id()
    );
    let dir = tempdir();
    let mut s = Server::start(
        &dir.path().join("d"),
        &[
            "--object-store",
            &url,
            "--flush-age-ms",
            "100",
            "--csv-chunk-rows",
            "1000",
            "--compaction-interval-secs",
            "0",
            "--compaction-grace-secs",
            "0",
        ],
    );
    s.create_compute_events();
    let events: Vec<Value> = (0..3000)
        .map(|i| json!({"customer_id": format!("c{}", i % 3), "timestamp": 1_735_689_600 + i * 30, "data": {"cpu_hours_consumed": 1, "region": "r"}}))
        .collect();
    assert_eq!(
        s.post_json("/usage/compute_events", &json!(events)).status,
        200
    );
    s.wait_flushed();
    let mut csv = String::from("customer_id,timestamp,cpu_hours_consumed,region\n");
    for i in 0..5000 {
        csv.push_str(&format!("u{},{},2,r\n", i % 2, 1_735_689_600 + i * 40));
    }
    let r = s.request(
        "POST",
        "/usage/compute_events/csv",
        Some(&s.key),
        &[("content-type", "text/csv")],
        Some(csv.as_bytes()),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.delete("/usage/compute_events/events?customer_id=c0");
    assert_eq!(r.body["deleted"], 1000, "{}", r.text);
    s.wait_flushed();
    let expect = customer_totals(&s, None);
    let total: f64 = expect.iter().map(|r| num(&r["v"])).sum();
    assert_eq!(total, 2000.0 + 10_000.0);
    compact(&s);
    assert_eq!(customer_totals(&s, None), expect);
    s.restart();
    assert_eq!(customer_totals(&s, None), expect);
    // Warm, the same query reads every byte from the cache: no request reaches the store.
    let misses = metric(&s, "meterbase_read_cache_misses_total");
    let hits = metric(&s, "meterbase_read_cache_hits_total");
    assert!(
        misses > 0.0,
        "the first query after a restart fetched nothing"
    );
    assert_eq!(customer_totals(&s, None), expect);
    assert_eq!(metric(&s, "meterbase_read_cache_misses_total"), misses);
    assert!(metric(&s, "meterbase_read_cache_hits_total") > hits);
}
