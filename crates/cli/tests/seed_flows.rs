//! The seed documents' flows against the real binary: definitions, events, sums.

mod common;

use common::{Server, compute_events_definition, num, tempdir};
use serde_json::json;

#[test]
fn seed_definitions_events_and_sums() {
    let dir = tempdir();
    let s = Server::start(&dir.path().join("d"), &[]);

    // Seed 000, first definition, as in the API tab.
    let r = s.post_json("/rawmetrics", &compute_events_definition());
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["endpoint"], "/usage/compute_events");
    assert_eq!(r.body["unique_key"], json!(["customer_id", "timestamp"]));
    // The seed's "second definition" repeats name and slug of the first: a conflict.
    let mut dup = compute_events_definition();
    dup["dataschema"]["data"] = json!({"storage_gb_month": "Float64", "storage_tier": "String"});
    assert_eq!(s.post_json("/rawmetrics", &dup).status, 409);
    // As the dashboard tab names it: "Storage events" → slug derived.
    let r = s.post_json(
        "/rawmetrics",
        &json!({"name": "Storage events", "dataschema": {"data": {"storage_gb_month": "Float64", "storage_tier": "String"},
                 "timestamp": "DateTime64", "customer_id": "String"}, "column_order": ["timestamp"]}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["api_slug"], "storage_events");

    let cust = "cust_7d2f9b8c-1e2a-4c3d-9f0e-1a2b3c4d5e6f";
    let r = s.post_json(
        "/usage/compute_events",
        &json!({"customer_id": cust, "timestamp": "2025-07-28T10:00:00Z", "data": {"cpu_hours_consumed": 10.5, "region": "us-east-1"}}),
    );
    assert_eq!(
        (r.status, r.body["accepted"].as_u64()),
        (200, Some(1)),
        "{}",
        r.text
    );
    // Seed 002 style: space-separated timestamp, numbers as strings, Bearer auth, organisation header.
    let body = json!([
        {"data": {"cpu_hours_consumed": "5", "region": "eu-west-1"}, "timestamp": "2025-07-28 09:30:38.731", "customer_id": cust},
        {"data": {"cpu_hours_consumed": 2.25, "region": "eu-west-1"}, "timestamp": 1753700000, "customer_id": "cus_123"}
    ]);
    let bearer = format!("Bearer {}", s.key);
    let r = s.request(
        "POST",
        "/usage/compute_events",
        None,
        &[
            ("authorization", &bearer),
            ("organisation", "default"),
            ("content-type", "application/json"),
        ],
        Some(body.to_string().as_bytes()),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.post_json(
        "/usage/storage_events",
        &json!({"customer_id": cust, "timestamp": "2025-07-28T10:00:00Z", "data": {"storage_gb_month": 500.0, "storage_tier": "standard"}}),
    );
    assert_eq!(r.status, 200, "{}", r.text);

    let rows = s.sql("SELECT customer_id, sum(cpu_hours_consumed) AS v, sum(data.cpu_hours_consumed) AS v2, count(*) AS n FROM compute_events GROUP BY customer_id ORDER BY customer_id");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["customer_id"], "cus_123");
    assert_eq!(num(&rows[0]["v"]), 2.25);
    assert_eq!(rows[1]["customer_id"], cust);
    assert_eq!(num(&rows[1]["v"]), 15.5);
    assert_eq!(num(&rows[1]["v2"]), 15.5);
    assert_eq!(rows[1]["n"], 2);
    let rows = s.sql("SELECT sum(storage_gb_month) AS gb FROM storage_events");
    assert_eq!(num(&rows[0]["gb"]), 500.0);

    // Definitions and events survive a clean restart (SIGTERM flushes to Parquet).
    let mut s = s;
    assert!(s.terminate().success());
    s.spawn();
    assert_eq!(
        s.get("/rawmetrics").body["items"].as_array().map(Vec::len),
        Some(2)
    );
    let rows = s.sql("SELECT count(*) AS n, sum(cpu_hours_consumed) AS v FROM compute_events");
    assert_eq!(
        (rows[0]["n"].as_u64(), num(&rows[0]["v"])),
        (Some(3), 17.75)
    );
    let files: Vec<String> = common::parquet_files(&dir.path().join("d/store"))
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        files
            .iter()
            .any(|p| p.contains("/compute_events/date=2025-07-28/")),
        "{files:?}"
    );
}

#[test]
fn event_type_lifecycle() {
    let dir = tempdir();
    let s = Server::start(&dir.path().join("d"), &[]);
    let r = s.post_json("/rawmetrics", &json!({"name": "A raw metric", "dataschema": {"data": {
        "amount": "Decimal(12,4)", "n": "UInt32", "tier": "LowCardinality(String)", "note": "Nullable(String)",
        "flag": "Bool", "day": "Date", "at": "DateTime64(6)", "id": "UUID"}},
        "unique_key": ["customer_id", "timestamp", "id"]}));
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["api_slug"], "a_raw_metric");
    for bad in [
        json!({"name": "x", "api_slug": "has space"}),
        json!({"name": "x", "dataschema": {"data": {"v": "Float65"}}}),
        json!({"name": "x", "dataschema": {"customer_id": "Int64"}}),
        json!({"dataschema": {}}),
    ] {
        let r = s.post_json("/rawmetrics", &bad);
        assert_eq!(r.status, 400, "{bad}: {}", r.text);
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
    }
    let ev = json!({"customer_id": "c", "timestamp": "2025-01-01T00:00:00Z", "data": {
        "amount": "12345678.1234", "n": 7, "tier": "gold", "flag": "true", "day": "2025-01-01",
        "at": "2025-01-01 00:00:00.5", "id": "123e4567-e89b-12d3-a456-426614174000"}});
    assert_eq!(s.post_json("/usage/a_raw_metric", &ev).status, 200);
    let rows = s.sql(
        "SELECT amount, sum(amount) OVER () AS total, note, data.tier AS tier FROM a_raw_metric",
    );
    assert_eq!(rows[0]["amount"], "12345678.1234");
    assert_eq!(rows[0]["note"], serde_json::Value::Null);
    assert_eq!(rows[0]["tier"], "gold");

    // PATCH: rename and add a Nullable field; anything else is refused.
    let patch = |body: serde_json::Value| {
        s.request(
            "PATCH",
            "/rawmetrics/a_raw_metric",
            Some(&s.key),
            &[("content-type", "application/json")],
            Some(body.to_string().as_bytes()),
        )
    };
    assert_eq!(patch(json!({"name": "Renamed"})).status, 200);
    let mut data = r.body["dataschema"]["data"].clone();
    data["extra"] = json!("Nullable(Int64)");
    let r2 = patch(json!({"dataschema": {"data": data}}));
    assert_eq!(r2.status, 200, "{}", r2.text);
    data["required"] = json!("Int64");
    assert_eq!(patch(json!({"dataschema": {"data": data}})).status, 400);
    assert_eq!(patch(json!({"column_order": ["customer_id"]})).status, 400);
    let rows = s.sql("SELECT count(*) AS n, max(extra) AS e FROM a_raw_metric");
    assert_eq!(
        (rows[0]["n"].as_u64(), rows[0]["e"].clone()),
        (Some(1), serde_json::Value::Null)
    );
    let mut ev2 = ev.clone();
    ev2["timestamp"] = json!("2025-01-02T00:00:00Z");
    ev2["data"]["extra"] = json!(5);
    assert_eq!(s.post_json("/usage/a_raw_metric", &ev2).status, 200);
    assert_eq!(s.sql("SELECT sum(extra) AS e FROM a_raw_metric")[0]["e"], 5);

    // DELETE refuses while events exist, unless forced.
    assert_eq!(s.delete("/rawmetrics/a_raw_metric").status, 409);
    assert_eq!(s.delete("/rawmetrics/a_raw_metric?force=true").status, 204);
    assert_eq!(s.get("/rawmetrics/a_raw_metric").status, 404);
    assert_eq!(s.post_json("/usage/a_raw_metric", &ev).status, 404);
}

#[test]
fn replacement_across_buffer_and_files() {
    let dir = tempdir();
    let s = Server::start(&dir.path().join("d"), &["--flush-age-ms", "50"]);
    s.create_compute_events();
    // Two versions of one key in the buffer, from two requests: one row, the later value.
    let other = |v: f64| json!({"customer_id": "c2", "timestamp": "2025-02-01T00:00:00Z", "data": {"cpu_hours_consumed": v, "region": "r"}});
    assert_eq!(
        s.post_json("/usage/compute_events", &other(10.0)).status,
        200
    );
    assert_eq!(
        s.post_json("/usage/compute_events", &other(20.0)).status,
        200
    );
    let rows = s.sql("SELECT count(*) AS n, sum(cpu_hours_consumed) AS v FROM compute_events");
    assert_eq!((rows[0]["n"].as_u64(), num(&rows[0]["v"])), (Some(1), 20.0));
    s.wait_flushed();
    assert_eq!(
        s.delete("/rawmetrics/compute_events?force=true").status,
        204
    );
    s.create_compute_events();
    let ev = |v: f64| json!({"customer_id": "c1", "timestamp": "2025-03-01T00:00:00Z", "data": {"cpu_hours_consumed": v, "region": "r"}});
    assert_eq!(s.post_json("/usage/compute_events", &ev(1.0)).status, 200);
    s.wait_flushed();
    assert_eq!(s.post_json("/usage/compute_events", &ev(2.0)).status, 200);
    // One version in a file, one in the buffer: the later arrival wins.
    let rows = s.sql("SELECT count(*) AS n, sum(cpu_hours_consumed) AS v FROM compute_events");
    assert_eq!((rows[0]["n"].as_u64(), num(&rows[0]["v"])), (Some(1), 2.0));
    s.wait_flushed();
    let rows = s.sql("SELECT count(*) AS n, sum(cpu_hours_consumed) AS v FROM compute_events");
    assert_eq!((rows[0]["n"].as_u64(), num(&rows[0]["v"])), (Some(1), 2.0));
    // Two versions in one request: the last one wins.
    let r = s.post_json("/usage/compute_events", &json!([ev(3.0), ev(4.0)]));
    assert_eq!(r.status, 200);
    let rows = s.sql("SELECT count(*) AS n, sum(cpu_hours_consumed) AS v FROM compute_events");
    assert_eq!((rows[0]["n"].as_u64(), num(&rows[0]["v"])), (Some(1), 4.0));
}

#[test]
fn sql_command_prints_a_table() {
    let dir = tempdir();
    let s = Server::start(&dir.path().join("d"), &[]);
    s.create_compute_events();
    let ev = json!({"customer_id": "cust_1", "timestamp": "2025-07-28T10:00:00Z", "data": {"cpu_hours_consumed": 10.5, "region": "us-east-1"}});
    assert_eq!(s.post_json("/usage/compute_events", &ev).status, 200);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meterbase"))
        .args([
            "sql",
            "--url",
            &s.addr,
            "--api-key",
            &s.key,
            "SELECT customer_id, sum(cpu_hours_consumed) AS total FROM compute_events GROUP BY 1",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("| customer_id | total |")
            && text.contains("| cust_1      | 10.5  |")
            && text.contains("(1 rows)"),
        "{text}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meterbase"))
        .args([
            "sql",
            "--url",
            &s.addr,
            "--api-key",
            &s.key,
            "DROP TABLE compute_events",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("400"));
}
