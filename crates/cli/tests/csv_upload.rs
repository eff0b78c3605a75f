//! `POST /usage/{slug}/csv` through the real server: validation with exact line numbers, dry
//! runs, mapping, staged multi-chunk uploads (all or nothing, also across a crash).

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{Reply, Server, num, parquet_files, tempdir};
use serde_json::json;

fn post_csv(s: &Server, query: &str, body: &[u8], headers: &[(&str, &str)]) -> Reply {
    let mut h = vec![("content-type", "text/csv")];
    h.extend_from_slice(headers);
    s.request(
        "POST",
        &format!("/usage/compute_events/csv{query}"),
        Some(&s.key),
        &h,
        Some(body),
    )
}

fn count(s: &Server) -> u64 {
    s.sql("SELECT count(*) AS n FROM compute_events")[0]["n"]
        .as_u64()
        .unwrap()
}

fn rows_csv(n: usize, customer: &str, value: f64) -> String {
    let mut csv = String::from("customer_id,timestamp,cpu_hours_consumed,region\n");
    for i in 0..n {
        csv.push_str(&format!(
            "{customer},{},{value},eu\n",
            1_735_689_600 + (i as i64) * 60
        ));
    }
    csv
}

#[test]
fn errors_name_lines_and_columns_and_a_dry_run_stores_nothing() {
    let dir = tempdir();
    let s = Server::start(&dir.path().join("d"), &[]);
    s.create_compute_events();
    // Line 3 holds a quoted cell with a newline, so the row after it starts on line 5.
    let body = "customer_id,timestamp,cpu_hours_consumed,region\n\
        c1,2025-01-01T00:00:00Z,1.5,eu\n\
        c1,2025-01-01T01:00:00Z,2,\"multi\nline\"\n\
        c1,2025-01-01T02:00:00Z,abc,eu\n\
        ,2025-01-01T03:00:00Z,1,eu\n\
        c1,not a time,1,eu\n\
        c1,2025-01-01T04:00:00Z,1\n\
        c1,2025-01-01T05:00:00Z,4,eu\n";
    let r = post_csv(&s, "?dry_run=true", body.as_bytes(), &[]);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        (r.body["rows"].as_u64(), r.body["valid"].as_u64()),
        (Some(7), Some(3))
    );
    let errors: Vec<(u64, String)> = r.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["line"].as_u64().unwrap(),
                e["pointer"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        errors,
        vec![
            (5, "cpu_hours_consumed".to_string()),
            (6, "customer_id".to_string()),
            (7, "timestamp".to_string()),
            (8, "".to_string()),
        ],
        "{}",
        r.text
    );
    assert_eq!(count(&s), 0, "a dry run stored rows");

    let r = post_csv(&s, "", body.as_bytes(), &[]);
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/problem+json"))
    );
    assert_eq!(r.body["errors"].as_array().unwrap().len(), 4);
    assert_eq!(r.body["errors"][0]["line"], 5);
    assert!(
        r.body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("abc"),
        "{}",
        r.text
    );
    assert_eq!(count(&s), 0, "a rejected file stored rows");

    // A BOM, CRLF line ends, quoted cells with commas, quotes and newlines.
    let good = "\u{feff}customer_id,timestamp,cpu_hours_consumed,region\r\n\
        \"c,1\",2025-01-01T00:00:00Z,1.5,\"eu \"\"west\"\"\"\r\n\
        c2,1735693200,2.25,\"us\r\neast\"\r\n";
    let r = post_csv(&s, "", good.as_bytes(), &[]);
    assert_eq!(r.status, 200, "{}", r.text);
    let mut body = r.body.clone();
    let receipt = body.as_object_mut().unwrap().remove("receipt").unwrap();
    assert_eq!(body, json!({"rows": 2, "accepted": 2}));
    // One chunk goes through the log as one record.
    assert_eq!(receipt["count"], 2);
    assert_eq!(receipt["first_seq"], receipt["last_seq"]);
    let rows = s.sql(
        "SELECT customer_id, data.region AS region, data.cpu_hours_consumed AS v FROM compute_events ORDER BY customer_id",
    );
    assert_eq!(rows[0]["customer_id"], "c,1");
    assert_eq!(rows[0]["region"], "eu \"west\"");
    assert_eq!(rows[1]["region"], "us\r\neast");
    assert_eq!(num(&rows[1]["v"]), 2.25);
}

#[test]
fn mapping_unknown_columns_and_bad_headers() {
    let dir = tempdir();
    let s = Server::start(&dir.path().join("d"), &[]);
    s.create_compute_events();
    let body = "Account,When,CPU,region,comment\nacme,2025-02-01 10:00:00,3,eu,first\n";
    let r = post_csv(&s, "", body.as_bytes(), &[]);
    assert_eq!(r.status, 400, "{}", r.text);
    let q = "?map.customer_id=Account&map.timestamp=When&map.cpu_hours_consumed=CPU";
    let r = post_csv(&s, q, body.as_bytes(), &[]);
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["errors"][0]["pointer"], "comment", "{}", r.text);
    assert_eq!(r.body["errors"][0]["line"], 1);
    let r = post_csv(
        &s,
        &format!("{q}&ignore_unknown_columns=true"),
        body.as_bytes(),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let rows = s.sql("SELECT customer_id, data.cpu_hours_consumed AS v FROM compute_events");
    assert_eq!(
        (rows[0]["customer_id"].as_str(), num(&rows[0]["v"])),
        (Some("acme"), 3.0)
    );

    for (query, body, why) in [
        ("", "", "empty body"),
        ("?map.nope=Account", body, "unknown field"),
        ("?map.customer_id=Nope", body, "unknown column"),
        ("?dry_run=maybe", body, "bad flag"),
        ("", "customer_id,customer_id\n", "duplicate column"),
        (
            "",
            "customer_id,timestamp,region\n",
            "required field without column",
        ),
    ] {
        let r = post_csv(&s, query, body.as_bytes(), &[]);
        assert_eq!(r.status, 400, "{why}: {}", r.text);
    }
    let r = s.request(
        "POST",
        "/usage/compute_events/csv",
        Some(&s.key),
        &[("content-type", "application/json")],
        Some(b"{}"),
    );
    assert_eq!(r.status, 415);
    assert_eq!(count(&s), 1);
}

#[test]
fn a_multi_chunk_upload_is_staged_and_all_or_nothing() {
    let dir = tempdir();
    let data = dir.path().join("d");
    let mut s = Server::start(&data, &["--csv-chunk-rows", "1000"]);
    s.create_compute_events();
    // Earlier values for some of the same keys, through the API.
    let earlier: Vec<_> = (0..100)
        .map(|i| json!({"customer_id": "big", "timestamp": 1_735_689_600 + i * 60, "data": {"cpu_hours_consumed": 100.0, "region": "old"}}))
        .collect();
    assert_eq!(
        s.post_json("/usage/compute_events", &json!(earlier)).status,
        200
    );
    s.wait_flushed();
    let before_upload = chrono::Utc::now().to_rfc3339();
    std::thread::sleep(Duration::from_millis(5));

    // Ten chunks, the last line invalid: nothing is stored and no staged file is left.
    let mut bad = rows_csv(10_000, "big", 1.0);
    bad.push_str("big,2025-01-01T00:00:00Z,oops,eu\n");
    let r = post_csv(&s, "", bad.as_bytes(), &[]);
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["errors"][0]["line"], 10_002);
    assert_eq!(count(&s), 100);
    assert_eq!(
        parquet_files(&data).len(),
        1,
        "staged files were left behind"
    );

    // The same rows, valid and gzip-compressed: all visible at once, the 100 old keys replaced.
    let good = rows_csv(10_000, "big", 1.0);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(good.as_bytes()).unwrap();
    let r = post_csv(
        &s,
        "",
        &gz.finish().unwrap(),
        &[("content-encoding", "gzip")],
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let mut body = r.body.clone();
    let receipt = body.as_object_mut().unwrap().remove("receipt").unwrap();
    assert_eq!(body, json!({"rows": 10_000, "accepted": 10_000}));
    // Staged: one sequence per chunk, then the commit's.
    assert_eq!(receipt["count"], 10_000);
    assert_eq!(
        receipt["last_seq"].as_u64().unwrap() - receipt["first_seq"].as_u64().unwrap(),
        10
    );
    let check = |s: &Server| {
        let rows = s.sql(
            "SELECT count(*) AS n, sum(data.cpu_hours_consumed) AS total, count(DISTINCT timestamp) AS keys FROM compute_events",
        );
        assert_eq!(rows[0]["n"], 10_000);
        assert_eq!(rows[0]["keys"], 10_000);
        assert_eq!(num(&rows[0]["total"]), 10_000.0);
    };
    check(&s);
    assert!(parquet_files(&data).len() > 1);
    // As of before the upload: only the old 100 rows.
    let r = s.post_json(
        "/sql",
        &json!({"sql": "SELECT count(*) AS n, sum(data.cpu_hours_consumed) AS total FROM compute_events", "as_of": before_upload}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["rows"][0]["n"], 100);
    assert_eq!(num(&r.body["rows"][0]["total"]), 10_000.0);
    // Later API writes replace uploaded rows.
    let later = json!({"customer_id": "big", "timestamp": 1_735_689_600, "data": {"cpu_hours_consumed": 2.0, "region": "new"}});
    assert_eq!(s.post_json("/usage/compute_events", &later).status, 200);
    let rows =
        s.sql("SELECT count(*) AS n, sum(data.cpu_hours_consumed) AS total FROM compute_events");
    assert_eq!(
        (rows[0]["n"].as_u64(), num(&rows[0]["total"])),
        (Some(10_000), 10_001.0)
    );
    s.restart();
    let rows =
        s.sql("SELECT count(*) AS n, sum(data.cpu_hours_consumed) AS total FROM compute_events");
    assert_eq!(
        (rows[0]["n"].as_u64(), num(&rows[0]["total"])),
        (Some(10_000), 10_001.0)
    );
}

#[test]
fn a_crash_mid_upload_leaves_nothing_visible() {
    let dir = tempdir();
    let data = dir.path().join("d");
    let mut s = Server::start(&data, &["--csv-chunk-rows", "500"]);
    s.create_compute_events();
    let body = rows_csv(20_000, "crash", 1.0);
    let host = s.addr.trim_start_matches("http://").to_string();
    let mut conn = std::net::TcpStream::connect(&host).unwrap();
    write!(
        conn,
        "POST /usage/compute_events/csv HTTP/1.1\r\nhost: {host}\r\nx-api-key: {}\r\ncontent-type: text/csv\r\ncontent-length: {}\r\n\r\n",
        s.key,
        body.len()
    )
    .unwrap();
    // Send most of the file, then wait until chunks are staged as files, then kill.
    conn.write_all(&body.as_bytes()[..body.len() * 3 / 4])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while parquet_files(&data).len() < 5 {
        assert!(Instant::now() < deadline, "no chunk was staged");
        std::thread::sleep(Duration::from_millis(20));
    }
    s.kill9();
    drop(conn);
    s.spawn();
    assert_eq!(count(&s), 0);
    assert!(
        parquet_files(&data).is_empty(),
        "staged files of the interrupted upload are still there"
    );
}
