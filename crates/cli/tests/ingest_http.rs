//! Ingest over HTTP: validation errors as problem+json, all-or-nothing, NDJSON, limits.

mod common;

use common::{Server, num, tempdir};
use serde_json::json;

fn ev(c: &str, ts: &str, v: serde_json::Value) -> serde_json::Value {
    json!({"customer_id": c, "timestamp": ts, "data": {"cpu_hours_consumed": v, "region": "r"}})
}

#[test]
fn invalid_events_are_listed_and_nothing_is_stored() {
    let dir = tempdir();
    let s = Server::start(
        &dir.path().join("d"),
        &["--max-events", "50", "--max-body-bytes", "20000"],
    );
    s.create_compute_events();
    let body = json!([
        ev("a", "2025-01-01T00:00:00Z", json!(1)),
        ev("b", "2025-01-01T00:00:00Z", json!("abc")),
        ev("", "2025-01-01T00:00:00Z", json!(1)),
        {"customer_id": "d", "timestamp": "2025-01-01T00:00:00Z", "data": {"cpu_hours_consumed": 1, "region": "r", "zone": 3}},
    ]);
    let r = s.post_json("/usage/compute_events", &body);
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(r.body["status"], 400);
    let errors = r.body["errors"].as_array().unwrap();
    let got: Vec<(u64, &str)> = errors
        .iter()
        .map(|e| (e["index"].as_u64().unwrap(), e["pointer"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, "/data/cpu_hours_consumed"),
            (2, "/customer_id"),
            (3, "/data/zone")
        ]
    );
    assert_eq!(
        errors[0]["message"],
        r#"expected Float64, got "abc": not a number"#
    );
    assert_eq!(s.sql("SELECT count(*) AS n FROM compute_events")[0]["n"], 0);

    // NDJSON reports 1-based lines.
    let nd = format!(
        "{}\n\n{}\n",
        ev("a", "2025-01-01T00:00:00Z", json!(1)),
        ev("a", "2025-01-01T00:00:01Z", json!(null))
    );
    let r = s.request(
        "POST",
        "/usage/compute_events",
        Some(&s.key),
        &[("content-type", "application/x-ndjson")],
        Some(nd.as_bytes()),
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.body["errors"][0]["line"], 3);
    let nd = format!(
        "{}\n{}\n",
        ev("a", "2025-01-01T00:00:00Z", json!(1)),
        ev("a", "2025-01-01T00:00:01Z", json!(2))
    );
    let r = s.request(
        "POST",
        "/usage/compute_events",
        Some(&s.key),
        &[("content-type", "application/x-ndjson")],
        Some(nd.as_bytes()),
    );
    assert_eq!((r.status, r.body["accepted"].as_u64()), (200, Some(2)));

    // Limits: more events than allowed, a body over the limit.
    let many: Vec<_> = (0..51)
        .map(|i| ev("a", &format!("2025-01-02T00:00:{:02}Z", i % 60), json!(1)))
        .collect();
    assert_eq!(
        s.post_json("/usage/compute_events", &json!(many)).status,
        413
    );
    let big = "x".repeat(30_000);
    assert_eq!(
        s.post_json("/usage/compute_events", &json!([{"customer_id": big}]))
            .status,
        413
    );
    // Malformed JSON, wrong content type, unknown slug.
    let r = s.request(
        "POST",
        "/usage/compute_events",
        Some(&s.key),
        &[("content-type", "application/json")],
        Some(b"{\"customer_id\":"),
    );
    assert_eq!(r.status, 400);
    let r = s.request(
        "POST",
        "/usage/compute_events",
        Some(&s.key),
        &[("content-type", "text/xml")],
        Some(b"<a/>"),
    );
    assert_eq!(r.status, 415);
    assert_eq!(
        s.post_json("/usage/nope", &ev("a", "2025-01-01T00:00:00Z", json!(1)))
            .status,
        404
    );
    // Invalid UTF-8 and duplicate keys are refused.
    let r = s.request(
        "POST",
        "/usage/compute_events",
        Some(&s.key),
        &[("content-type", "application/json")],
        Some(b"{\"customer_id\":\"\xff\"}"),
    );
    assert_eq!(r.status, 400);
    let dup = br#"{"customer_id":"a","timestamp":"2025-01-01T00:00:00Z","data":{"cpu_hours_consumed":1,"cpu_hours_consumed":2,"region":"r"}}"#;
    let r = s.request(
        "POST",
        "/usage/compute_events",
        Some(&s.key),
        &[("content-type", "application/json")],
        Some(dup),
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.body["errors"][0]["message"], "duplicate key");
    let rows = s.sql("SELECT count(*) AS n, sum(cpu_hours_consumed) AS v FROM compute_events");
    assert_eq!((rows[0]["n"].as_u64(), num(&rows[0]["v"])), (Some(2), 3.0));
}

#[test]
fn sql_sandbox_and_formats() {
    let dir = tempdir();
    let s = Server::start(&dir.path().join("d"), &[]);
    s.create_compute_events();
    assert_eq!(
        s.post_json(
            "/usage/compute_events",
            &ev("a", "2025-01-01T00:00:00Z", json!(1.5))
        )
        .status,
        200
    );
    for bad in [
        "CREATE TABLE t (a int)",
        "DROP TABLE compute_events",
        "INSERT INTO compute_events VALUES ('a')",
        "DELETE FROM compute_events",
        "COPY compute_events TO '/tmp/x.csv'",
        "SET datafusion.execution.batch_size = 1",
        "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
        "SELECT * FROM '/etc/passwd'",
        "SELECT * FROM 'file:///etc/hosts'",
        "SELECT * FROM information_schema.tables",
        "SELECT nope FROM compute_events",
        "SELEC 1",
    ] {
        let r = s.post_json("/sql", &json!({ "sql": bad }));
        assert_eq!(r.status, 400, "{bad}: {}", r.text);
    }
    let r = s.post_json("/sql", &json!({"sql": "SELECT sum(cpu_hours_consumed) AS v FROM compute_events WHERE customer_id = $c", "params": {"c": "a"}}));
    assert_eq!(num(&r.body["rows"][0]["v"]), 1.5, "{}", r.text);
    let q = json!({"sql": "SELECT customer_id, timestamp, cpu_hours_consumed FROM compute_events"})
        .to_string();
    let get = |accept: &str| {
        s.request(
            "POST",
            "/sql",
            Some(&s.key),
            &[("accept", accept), ("content-type", "application/json")],
            Some(q.as_bytes()),
        )
    };
    let r = get("application/x-ndjson");
    assert_eq!(
        r.text.trim(),
        r#"{"customer_id":"a","timestamp":"2025-01-01T00:00:00Z","cpu_hours_consumed":1.5}"#
    );
    let r = get("text/csv");
    assert!(
        r.text
            .starts_with("customer_id,timestamp,cpu_hours_consumed\na,2025-01-01T00:00:00"),
        "{}",
        r.text
    );
    let r = get("application/vnd.apache.arrow.stream");
    assert_eq!(
        (r.status, r.header("content-type")),
        (200, Some("application/vnd.apache.arrow.stream"))
    );
    let r = get("application/vnd.apache.parquet");
    assert_eq!(r.status, 200);
    assert_eq!(get("image/png").status, 406);
}
