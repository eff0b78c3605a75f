//! Queries running while flushes persist buffers must see each row exactly once.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::{Server, num, tempdir};
use serde_json::json;

#[test]
fn counts_are_exact_while_buffers_are_persisted() {
    let dir = tempdir();
    let s = Server::start(
        &dir.path().join("d"),
        &["--flush-age-ms", "30", "--flush-bytes", "40000"],
    );
    s.create_compute_events();
    let acked = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    const BATCHES: u64 = 60;
    const PER: u64 = 100;
    let writer = {
        let (addr, key, acked, sent) = (s.addr.clone(), s.key.clone(), acked.clone(), sent.clone());
        std::thread::spawn(move || {
            let agent = ureq::Agent::new_with_defaults();
            for b in 0..BATCHES {
                // Later batches also revisit earlier days, so files and buffer overlap in time.
                let events: Vec<_> = (0..PER)
                    .map(|i| {
                        let k = b * PER + i;
                        json!({"customer_id": format!("c{}", k % 7), "timestamp": 1_735_689_600 + (k * 7919) % 25_000 * 10 + k % 10,
                               "data": {"cpu_hours_consumed": 1.0, "region": "r"}})
                    })
                    .collect();
                sent.fetch_add(PER, Ordering::SeqCst);
                agent
                    .post(format!("{addr}/usage/compute_events"))
                    .header("x-api-key", &key)
                    .send_json(json!(events))
                    .expect("post");
                acked.fetch_add(PER, Ordering::SeqCst);
            }
        })
    };
    let mut checks = 0;
    while !writer.is_finished() {
        let lo = acked.load(Ordering::SeqCst);
        let rows = s.sql(
            "SELECT count(*) AS n, coalesce(sum(cpu_hours_consumed), 0) AS v FROM compute_events",
        );
        let hi = sent.load(Ordering::SeqCst);
        let n = rows[0]["n"].as_u64().unwrap();
        assert!(lo <= n && n <= hi, "count {n} outside [{lo}, {hi}]");
        assert_eq!(num(&rows[0]["v"]), n as f64);
        checks += 1;
    }
    writer.join().unwrap();
    let rows = s.sql("SELECT count(*) AS n FROM compute_events");
    assert_eq!(rows[0]["n"].as_u64(), Some(BATCHES * PER));
    s.wait_flushed();
    let rows = s.sql("SELECT count(*) AS n, count(DISTINCT customer_id) AS c FROM compute_events");
    assert_eq!(rows[0]["n"].as_u64(), Some(BATCHES * PER));
    assert!(checks > 5, "only {checks} queries ran during the load");
}
