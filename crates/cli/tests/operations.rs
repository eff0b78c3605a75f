//! Lifecycle: data-directory lock, health, metrics, overload answers, SIGTERM, as_of.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Server, num, tempdir};
use serde_json::json;

fn ev(ts: u64, v: f64) -> serde_json::Value {
    json!({"customer_id": "c", "timestamp": ts, "data": {"cpu_hours_consumed": v, "region": "r"}})
}

#[test]
fn a_second_server_cannot_open_the_same_data_directory() {
    let dir = tempdir();
    let data = dir.path().join("d");
    let _s = Server::start(&data, &[]);
    let out = Command::new(env!("CARGO_BIN_EXE_meterbase"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another meterbase server"), "{err}");
}

#[test]
fn full_buffer_answers_503_with_retry_after_and_recovers() {
    let dir = tempdir();
    let s = Server::start(
        &dir.path().join("d"),
        &[
            "--max-buffer-bytes",
            "1",
            "--flush-age-ms",
            "300",
            "--buffer-wait-ms",
            "0",
        ],
    );
    s.create_compute_events();
    assert_eq!(
        s.post_json("/usage/compute_events", &ev(1_735_689_600, 1.0))
            .status,
        200
    );
    let r = s.post_json("/usage/compute_events", &ev(1_735_689_601, 1.0));
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    s.wait_flushed();
    assert_eq!(
        s.post_json("/usage/compute_events", &ev(1_735_689_601, 2.0))
            .status,
        200
    );
    let rows = s.sql("SELECT count(*) AS n, sum(cpu_hours_consumed) AS v FROM compute_events");
    assert_eq!((rows[0]["n"].as_u64(), num(&rows[0]["v"])), (Some(2), 3.0));
    let m = s.request("GET", "/metrics", None, &[], None);
    assert_eq!(m.status, 200);
    for name in [
        "meterbase_events_ingested_total 2",
        "meterbase_overload_rejections_total 1",
        "meterbase_wal_syncs_total",
    ] {
        assert!(m.text.contains(name), "{name} missing in\n{}", m.text);
    }
}

#[test]
fn a_write_that_finds_the_buffer_full_waits_for_the_persist_instead_of_bouncing() {
    let dir = tempdir();
    let s = Server::start(
        &dir.path().join("d"),
        &["--max-buffer-bytes", "1", "--flush-age-ms", "300"],
    );
    s.create_compute_events();
    for (i, v) in [(0, 1.0), (1, 2.0)] {
        let r = s.post_json("/usage/compute_events", &ev(1_735_689_600 + i, v));
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let rows = s.sql("SELECT count(*) AS n, sum(cpu_hours_consumed) AS v FROM compute_events");
    assert_eq!((rows[0]["n"].as_u64(), num(&rows[0]["v"])), (Some(2), 3.0));
    let m = s.request("GET", "/metrics", None, &[], None).text;
    for name in [
        "meterbase_buffer_waits_total 1",
        "meterbase_overload_rejections_total 0",
    ] {
        assert!(m.contains(name), "{name} missing in\n{m}");
    }
}

#[test]
fn sigterm_persists_everything_and_replay_is_not_needed() {
    let dir = tempdir();
    let data = dir.path().join("d");
    let mut s = Server::start(&data, &["--flush-age-ms", "3600000"]);
    s.create_compute_events();
    let batch: Vec<_> = (0..1000).map(|i| ev(1_735_689_600 + i, 0.5)).collect();
    assert_eq!(
        s.post_json("/usage/compute_events", &json!(batch)).status,
        200
    );
    assert!(s.terminate().success());
    // Every buffer went to Parquet, so the log holds nothing that still needs replaying.
    s.spawn();
    let metrics = s.request("GET", "/metrics", None, &[], None).text;
    assert!(
        metrics.contains("\nmeterbase_buffer_bytes 0\n"),
        "{metrics}"
    );
    let rows = s.sql("SELECT count(*) AS n, sum(cpu_hours_consumed) AS v FROM compute_events");
    assert_eq!(
        (rows[0]["n"].as_u64(), num(&rows[0]["v"])),
        (Some(1000), 500.0)
    );
    let future = s.sql("SELECT count(*) AS n FROM compute_events WHERE _ingested_at > now()");
    assert_eq!(future[0]["n"], 0, "{future:?}");
}

#[test]
fn as_of_hides_later_arrivals_and_restores_replaced_versions() {
    let dir = tempdir();
    let s = Server::start(&dir.path().join("d"), &["--flush-age-ms", "50"]);
    s.create_compute_events();
    assert_eq!(
        s.post_json("/usage/compute_events", &ev(1_735_689_600, 1.0))
            .status,
        200
    );
    std::thread::sleep(Duration::from_millis(20));
    let t1 = s.sql("SELECT max(_ingested_at) AS t FROM compute_events")[0]["t"]
        .as_str()
        .unwrap()
        .to_string();
    std::thread::sleep(Duration::from_millis(20));
    s.wait_flushed();
    assert_eq!(
        s.post_json(
            "/usage/compute_events",
            &json!([ev(1_735_689_600, 5.0), ev(1_735_689_700, 7.0)])
        )
        .status,
        200
    );
    let sum = |as_of: Option<&str>| {
        let mut body = json!({"sql": "SELECT count(*) AS n, sum(cpu_hours_consumed) AS v FROM compute_events"});
        if let Some(t) = as_of {
            body["as_of"] = json!(t);
        }
        let r = s.post_json("/sql", &body);
        assert_eq!(r.status, 200, "{}", r.text);
        (
            r.body["rows"][0]["n"].as_u64().unwrap(),
            num(&r.body["rows"][0]["v"]),
        )
    };
    assert_eq!(sum(None), (2, 12.0));
    assert_eq!(sum(Some(&t1)), (1, 1.0));
    // Before anything arrived (within the history kept; older is refused).
    let hour_ago = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    assert_eq!(sum(Some(&hour_ago)).0, 0);
    let r = s.post_json("/sql", &json!({"sql": "SELECT 1", "as_of": "yesterday"}));
    assert_eq!(r.status, 400);
}

#[test]
fn queries_over_their_caps_fail_clearly_and_the_server_stays_healthy() {
    let dir = tempdir();
    let s = Server::start(
        &dir.path().join("d"),
        &[
            "--query-memory-bytes",
            "2000000",
            "--query-timeout-ms",
            "300",
        ],
    );
    let heavy = "SELECT count(DISTINCT v) AS n FROM (SELECT value * 7 AS v FROM generate_series(1, 20000000))";
    let r = s.post_json("/sql", &json!({ "sql": heavy }));
    assert_eq!(r.status, 422, "{}", r.text);
    let title = r.body["title"].as_str().unwrap_or_default();
    assert!(title.contains("limit exceeded"), "{}", r.text);
    let r = s.post_json(
        "/sql",
        &json!({"sql": "SELECT count(*) AS n FROM generate_series(1, 5000000000)"}),
    );
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("time limit"), "{}", r.text);
    assert_eq!(s.request("GET", "/healthz", None, &[], None).status, 200);
    assert_eq!(s.sql("SELECT 1 AS one")[0]["one"], 1);
}
