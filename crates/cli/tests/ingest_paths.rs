//! Other ways in: compressed bodies (and bombs), gzip responses, Zuora-style bulk.

mod common;

use std::io::{Read, Write};

use common::{Server, num, tempdir};
use serde_json::json;

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn gzip_and_zstd_bodies_limits_after_inflating_and_gzip_responses() {
    let dir = tempdir();
    let s = Server::start(&dir.path().join("d"), &["--max-body-bytes", "1000000"]);
    s.create_compute_events();
    let nd: String = (0..500)
        .map(|i| json!({"customer_id": "c", "timestamp": 1_735_689_600 + i, "data": {"cpu_hours_consumed": 1, "region": "r"}}).to_string() + "\n")
        .collect();
    let r = s.request(
        "POST",
        "/usage/compute_events",
        Some(&s.key),
        &[
            ("content-type", "application/x-ndjson"),
            ("content-encoding", "gzip"),
        ],
        Some(&gz(nd.as_bytes())),
    );
    assert_eq!(
        (r.status, r.body["accepted"].as_u64()),
        (200, Some(500)),
        "{}",
        r.text
    );
    let z = zstd::encode_all(nd.replace("\"c\"", "\"z\"").as_bytes(), 3).unwrap();
    let r = s.request(
        "POST",
        "/usage/compute_events",
        Some(&s.key),
        &[
            ("content-type", "application/x-ndjson"),
            ("content-encoding", "zstd"),
        ],
        Some(&z),
    );
    assert_eq!(
        (r.status, r.body["accepted"].as_u64()),
        (200, Some(500)),
        "{}",
        r.text
    );
    // A bomb: 50 MB of spaces in a small gzip body; refused once 1 MB has come out.
    let bomb = gz(&vec![b' '; 50 << 20]);
    assert!(bomb.len() < 100_000);
    let r = s.request(
        "POST",
        "/usage/compute_events",
        Some(&s.key),
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
        Some(&bomb),
    );
    assert_eq!(r.status, 413, "{}", r.text);
    let r = s.request(
        "POST",
        "/usage/compute_events",
        Some(&s.key),
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
        Some(b"not gzip"),
    );
    assert_eq!(r.status, 400);
    let r = s.request(
        "POST",
        "/usage/compute_events",
        Some(&s.key),
        &[
            ("content-type", "application/json"),
            ("content-encoding", "br"),
        ],
        Some(b"{}"),
    );
    assert_eq!(r.status, 415);
    assert_eq!(
        s.sql("SELECT count(*) AS n FROM compute_events")[0]["n"],
        1000
    );

    // Responses over 1000 bytes are gzip-compressed for clients that accept it.
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let mut resp = agent
        .post(format!("{}/sql", s.addr))
        .header("x-api-key", &s.key)
        .header("accept-encoding", "gzip")
        .send_json(json!({"sql": "SELECT * FROM compute_events LIMIT 100"}))
        .unwrap();
    assert_eq!(
        resp.headers()
            .get("content-encoding")
            .map(|v| v.to_str().unwrap()),
        Some("gzip")
    );
    let raw = resp.body_mut().read_to_vec().unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(&raw[..])
        .read_to_string(&mut text)
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["rows"].as_array().unwrap().len(), 100);
    let small = agent
        .get(format!("{}/healthz", s.addr))
        .header("accept-encoding", "gzip")
        .call()
        .unwrap();
    assert!(small.headers().get("content-encoding").is_none());
}

#[test]
fn zuora_bulk_ingestion() {
    let dir = tempdir();
    let s = Server::start(&dir.path().join("d"), &[]);
    let r = s.post_json("/rawmetrics", &json!({"name": "meter", "dataschema": {"data": {"usage_identifier": "String", "quantity": "Decimal(18,4)", "unit": "Nullable(String)"}}}));
    assert_eq!(r.status, 201);
    // The payload shape of the Zuora IngestUsageEvents document, plus a contract-shaped event.
    let body = json!([
        {"CustomerId": "A-001", "UsageIdentifier": "api_calls", "UsageDate": "2025-07-01T10:00:00Z", "Quantity": 12.5},
        {"CustomerId": "A-001", "UsageIdentifier": "api_calls", "UsageDate": "2025-07-02T10:00:00Z", "Quantity": "7", "Unit": "calls"},
        {"customer_id": "B-002", "timestamp": "2025-07-01 00:00:00", "data": {"usage_identifier": "api_calls", "quantity": 1}}
    ]);
    let track = [
        ("zuora-track-id", "trace-42"),
        ("content-type", "application/json"),
    ];
    let r = s.request(
        "POST",
        "/usage/bulk/meter",
        Some(&s.key),
        &track,
        Some(body.to_string().as_bytes()),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["success"], true);
    assert_eq!(r.body["message"], "3 events ingested");
    assert_eq!(r.body["receipt"]["count"], 3);
    assert_eq!(r.header("zuora-track-id"), Some("trace-42"));
    let rows = s.sql("SELECT customer_id, sum(quantity) AS q FROM meter GROUP BY customer_id ORDER BY customer_id");
    assert_eq!(rows[0]["q"], "19.5000");
    assert_eq!(rows[1]["q"], "1.0000");
    // A single object works too.
    let one = json!({"CustomerId": "C", "UsageIdentifier": "x", "UsageDate": "2025-07-03T00:00:00Z", "Quantity": 1});
    assert_eq!(
        s.post_json("/usage/bulk/meter", &one).body["message"],
        "1 events ingested"
    );
    // Errors: problem+json with success:false, the event's index and the snake_case field.
    let bad = json!([one, {"CustomerId": "C", "UsageIdentifier": "x", "UsageDate": "2025-07-04T00:00:00Z", "Quantity": "lots"}]);
    let r = s.request(
        "POST",
        "/usage/bulk/meter",
        Some(&s.key),
        &track,
        Some(bad.to_string().as_bytes()),
    );
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["success"], false);
    assert_eq!(r.body["errors"][0]["index"], 1);
    assert_eq!(r.body["errors"][0]["pointer"], "/data/quantity");
    assert_eq!(r.header("zuora-track-id"), Some("trace-42"));
    for bad_track in ["a:b", "x".repeat(65).as_str(), "quote'"] {
        let r = s.request(
            "POST",
            "/usage/bulk/meter",
            Some(&s.key),
            &[("zuora-track-id", bad_track)],
            Some(one.to_string().as_bytes()),
        );
        assert_eq!(
            (r.status, r.body["success"].clone()),
            (400, json!(false)),
            "{bad_track}"
        );
    }
    // A formatted file (line breaks inside an event) is one event per object, as on
    // /usage/{slug}; it was split into lines and refused (the zuora_bulk fuzz target).
    let pretty = serde_json::to_vec_pretty(&json!([
        {"customer_id": "D", "timestamp": "2025-07-05T00:00:00Z", "data": {"usage_identifier": "x", "quantity": 2}}
    ]))
    .unwrap();
    let json_type = [("content-type", "application/json")];
    let r = s.request(
        "POST",
        "/usage/bulk/meter",
        Some(&s.key),
        &json_type,
        Some(&pretty),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["message"], "1 events ingested");
    assert_eq!(num(&s.sql("SELECT count(*) AS n FROM meter")[0]["n"]), 5.0);
}

#[test]
fn events_listing_pages_without_gaps_or_repeats() {
    let dir = tempdir();
    let s = Server::start(&dir.path().join("d"), &["--flush-age-ms", "30"]);
    s.create_compute_events();
    // 250 events of customer a (some sharing a timestamp with customer b), in two requests with
    // a flush between, plus a replacement of one of a's events.
    let ev = |c: &str, t: i64, v: f64| json!({"customer_id": c, "timestamp": t, "data": {"cpu_hours_consumed": v, "region": "r"}});
    let first: Vec<_> = (0..150)
        .flat_map(|i| {
            [
                ev("a", 1_735_689_600 + i / 2 * 60 + i % 2, 1.0),
                ev("b", 1_735_689_600 + i / 2 * 60, 1.0),
            ]
        })
        .collect();
    assert_eq!(
        s.post_json("/usage/compute_events", &json!(first)).status,
        200
    );
    s.wait_flushed();
    let second: Vec<_> = (150..250)
        .map(|i| ev("a", 1_735_689_600 + i / 2 * 60 + i % 2, 1.0))
        .collect();
    assert_eq!(
        s.post_json("/usage/compute_events", &json!(second)).status,
        200
    );
    assert_eq!(
        s.post_json("/usage/compute_events", &ev("a", 1_735_689_600, 9.0))
            .status,
        200
    );
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = "/usage/compute_events/events?customer_id=a&limit=40".to_string();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let r = s.get(&path);
        assert_eq!(r.status, 200, "{}", r.text);
        pages += 1;
        for item in r.body["items"].as_array().unwrap() {
            assert_eq!(item["customer_id"], "a");
            assert!(item["ingested_at"].as_str().unwrap().ends_with('Z'));
            seen.push((
                item["timestamp"].as_str().unwrap().to_string(),
                num(&item["data"]["cpu_hours_consumed"]),
            ));
        }
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, 7);
    assert_eq!(seen.len(), 250, "no gaps, no repeats");
    let mut sorted = seen.clone();
    sorted.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(seen, sorted, "timestamp order");
    sorted.dedup_by(|x, y| x.0 == y.0);
    assert_eq!(sorted.len(), 250);
    assert_eq!(seen[0].1, 9.0, "the latest version of a replaced key");
    // from/to bound the page; both customers when none is named.
    let r = s.get("/usage/compute_events/events?from=2025-01-01T00:00:00Z&to=2025-01-01T00:01:00Z");
    assert_eq!(r.body["items"].as_array().unwrap().len(), 3);
    assert_eq!(s.get("/usage/compute_events/events?cursor=zz").status, 400);
    assert_eq!(s.get("/usage/compute_events/events?limit=0").status, 400);
}

#[test]
fn events_listing_pages_over_a_nullable_key_column() {
    let dir = tempdir();
    let s = Server::start(&dir.path().join("d"), &[]);
    let r = s.post_json(
        "/rawmetrics",
        &json!({"name": "calls", "dataschema": {"data": {"user_id": "Nullable(String)"}}, "unique_key": ["customer_id", "timestamp", "user_id"]}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    // Five rows at one instant, one of them with a null key column.
    let events: Vec<_> = [
        json!(null),
        json!("u1"),
        json!("u2"),
        json!("u3"),
        json!("u4"),
    ]
    .into_iter()
    .map(|u| json!({"customer_id": "a", "timestamp": 1_735_689_600, "data": {"user_id": u}}))
    .collect();
    assert_eq!(s.post_json("/usage/calls", &json!(events)).status, 200);
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let r = s.get(&format!("/usage/calls/events?limit=2{cursor}"));
        assert_eq!(r.status, 200, "{}", r.text);
        seen.extend(
            r.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["data"]["user_id"].clone()),
        );
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(
        seen,
        vec![
            json!(null),
            json!("u1"),
            json!("u2"),
            json!("u3"),
            json!("u4")
        ]
    );
}
