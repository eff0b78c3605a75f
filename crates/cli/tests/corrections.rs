//! Corrections through the real server: range deletions (logged, counted, undone by `as_of`),
//! history retention for `as_of`.

mod common;

use std::time::Duration;

use common::{Server, customer_totals, num, tempdir};
use serde_json::{Value, json};

fn event(customer: &str, ts: i64, v: f64) -> Value {
    json!({"customer_id": customer, "timestamp": ts, "data": {"cpu_hours_consumed": v, "region": "eu"}})
}

fn totals(s: &Server, as_of: Option<&str>) -> Vec<(String, u64, f64)> {
    customer_totals(s, as_of)
        .iter()
        .map(|r| {
            (
                r["customer_id"].as_str().unwrap().to_string(),
                r["n"].as_u64().unwrap(),
                num(&r["v"]),
            )
        })
        .collect()
}

fn delete(s: &Server, query: &str) -> (u16, Value) {
    let r = s.delete(&format!("/usage/compute_events/events{query}"));
    (r.status, r.body)
}

fn now() -> String {
    std::thread::sleep(Duration::from_millis(3));
    let t = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    std::thread::sleep(Duration::from_millis(3));
    t
}

const T0: i64 = 1_735_689_600; // 2025-01-01T00:00:00Z

#[test]
fn deletions_are_logged_counted_and_undone_by_as_of() {
    let dir = tempdir();
    let mut s = Server::start(&dir.path().join("d"), &["--flush-age-ms", "100"]);
    s.create_compute_events();
    // a: 10 events in files; b: 10 events, 5 in files and 5 in the buffer.
    let first: Vec<Value> = (0..10)
        .map(|i| event("a", T0 + i * 3600, 1.0))
        .chain((0..5).map(|i| event("b", T0 + i * 3600, 2.0)))
        .collect();
    assert_eq!(
        s.post_json("/usage/compute_events", &json!(first)).status,
        200
    );
    s.wait_flushed();
    let later: Vec<Value> = (5..10).map(|i| event("b", T0 + i * 3600, 2.0)).collect();
    assert_eq!(
        s.post_json("/usage/compute_events", &json!(later)).status,
        200
    );
    let before = now();

    // Refused without a filter, or with half a range, or a reversed one.
    for q in [
        "",
        "?from=2025-01-01T00:00:00Z",
        "?to=2025-01-02T00:00:00Z",
        "?from=2025-01-02T00:00:00Z&to=2025-01-01T00:00:00Z",
        "?customer=a",
    ] {
        assert_eq!(delete(&s, q).0, 400, "{q}");
    }
    // A dry run counts what a deletion would remove and removes nothing.
    let totals_before = totals(&s, None);
    let (status, body) = delete(
        &s,
        "?customer_id=b&from=2025-01-01T03:00:00Z&to=2025-01-01T07:00:00Z&dry_run=true",
    );
    assert_eq!((status, body), (200, json!({"would_delete": 4})));
    assert_eq!(totals(&s, None), totals_before, "a dry run deletes nothing");
    // b's hours 3..7 span the files and the buffer.
    let (status, body) = delete(
        &s,
        "?customer_id=b&from=2025-01-01T03:00:00Z&to=2025-01-01T07:00:00Z",
    );
    assert_eq!((status, body), (200, json!({"deleted": 4})));
    // Deleting the same range again removes nothing.
    let (_, body) = delete(
        &s,
        "?customer_id=b&from=2025-01-01T03:00:00Z&to=2025-01-01T07:00:00Z",
    );
    assert_eq!(body, json!({"deleted": 0}));
    let after_b = now();
    // Every customer's first two hours.
    let (_, body) = delete(&s, "?from=2025-01-01T00:00:00Z&to=2025-01-01T02:00:00Z");
    assert_eq!(body, json!({"deleted": 4}));
    // A replacement after the deletion brings one key back.
    assert_eq!(
        s.post_json("/usage/compute_events", &event("a", T0, 7.0))
            .status,
        200
    );
    let expect_now = vec![("a".to_string(), 9, 8.0 + 7.0), ("b".to_string(), 4, 8.0)];
    assert_eq!(totals(&s, None), expect_now);
    assert_eq!(
        totals(&s, Some(&before)),
        vec![("a".to_string(), 10, 10.0), ("b".to_string(), 10, 20.0)]
    );
    assert_eq!(
        totals(&s, Some(&after_b)),
        vec![("a".to_string(), 10, 10.0), ("b".to_string(), 6, 12.0)]
    );
    // The listing agrees with SQL.
    let r = s.get("/usage/compute_events/events?customer_id=b&limit=1000");
    assert_eq!(r.body["items"].as_array().unwrap().len(), 4);

    // Deletions survive a flush, a crash (replayed from the log) and a clean restart.
    s.restart();
    assert_eq!(totals(&s, None), expect_now);
    assert_eq!(totals(&s, Some(&after_b))[1], ("b".to_string(), 6, 12.0));
    s.wait_flushed();
    s.terminate();
    s.spawn();
    assert_eq!(totals(&s, None), expect_now);
    assert_eq!(totals(&s, Some(&before))[1], ("b".to_string(), 10, 20.0));
}

#[test]
fn as_of_is_refused_beyond_the_history_kept() {
    let dir = tempdir();
    let s = Server::start(&dir.path().join("d"), &["--history-retention-days", "30"]);
    s.create_compute_events();
    let old = (chrono::Utc::now() - chrono::Duration::days(31)).to_rfc3339();
    let r = s.post_json(
        "/sql",
        &json!({"sql": "SELECT count(*) FROM compute_events", "as_of": old}),
    );
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(
        r.body["detail"].as_str().unwrap().contains("30 days"),
        "{}",
        r.text
    );
    let recent = (chrono::Utc::now() - chrono::Duration::days(29)).to_rfc3339();
    let r = s.post_json(
        "/sql",
        &json!({"sql": "SELECT count(*) FROM compute_events", "as_of": recent}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let metric = json!({"name": "cpu", "usage_event": "compute_events", "aggregation": "sum", "field": "cpu_hours_consumed"});
    assert_eq!(s.post_json("/billable_metrics", &metric).status, 201);
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("start_date", "2025-01-01")
        .append_pair("end_date", "2025-02-01")
        .append_pair("as_of", &old)
        .finish();
    let r = s.get(&format!("/billable_metrics/cpu/usage?{q}"));
    assert_eq!(r.status, 400, "{}", r.text);
}
