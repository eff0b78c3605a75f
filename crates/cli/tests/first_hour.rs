//! What a new user hit in their first hour (issue 20), each as the request that showed it.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{Server, tempdir};

fn post_csv(s: &Server, query: &str, body: &str) -> common::Reply {
    s.request(
        "POST",
        &format!("/usage/compute_events/csv{query}"),
        Some(&s.key),
        &[("content-type", "text/csv")],
        Some(body.as_bytes()),
    )
}

fn count(s: &Server) -> u64 {
    s.sql("SELECT count(*) AS n FROM compute_events")[0]["n"]
        .as_u64()
        .unwrap()
}

const UNTERMINATED: &str = "customer_id,timestamp,cpu_hours_consumed,region\n\
    c_unterm,2025-06-17T14:03:12Z,1,\"oops\n\
    c_next,2025-06-17T14:03:12Z,1,x\n";

#[test]
fn csv_an_unterminated_quote_is_an_error_naming_its_line() {
    let dir = tempdir();
    let s = Server::start(&dir.path().join("d"), &[]);
    s.create_compute_events();
    let r = post_csv(&s, "?dry_run=true", UNTERMINATED);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["valid"], 0, "{}", r.text);
    assert_eq!(r.body["errors"][0]["line"], 2, "{}", r.text);
    assert!(
        r.body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("opened on line 2 is never closed"),
        "{}",
        r.text
    );
    let r = post_csv(&s, "", UNTERMINATED);
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(count(&s), 0);
}

#[test]
fn csv_crlf_files_report_the_same_lines_as_lf_files() {
    let dir = tempdir();
    let s = Server::start(&dir.path().join("d"), &[]);
    s.create_compute_events();
    let lf = "customer_id,timestamp,cpu_hours_consumed,region\n\
        c1,2025-01-01T00:00:00Z,abc,eu\n\
        c1,2025-01-01T01:00:00Z,1,eu\n\
        c1,2025-01-01T02:00:00Z,x,eu\n";
    let lines = |body: &str| -> Vec<u64> {
        let r = post_csv(&s, "?dry_run=true", body);
        assert_eq!(r.status, 200, "{}", r.text);
        r.body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["line"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(lines(lf), vec![2, 4]);
    assert_eq!(lines(&lf.replace('\n', "\r\n")), vec![2, 4]);
}

fn import(s: &Server, url: &str, args: &[&str], stdin: Option<&[u8]>) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_meterbase"))
        .arg("import")
        .args([
            "--url",
            url,
            "--api-key",
            &s.key,
            "--event",
            "compute_events",
        ])
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::piped())
        .spawn()
        .expect("run meterbase import");
    if let Some(bytes) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(bytes).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn import_refuses_an_unterminated_quote_reads_stdin_and_takes_a_bare_address() {
    let dir = tempdir();
    let s = Server::start(&dir.path().join("d"), &[]);
    s.create_compute_events();
    let path = dir.path().join("bad.csv");
    std::fs::write(&path, UNTERMINATED.replace('\n', "\r\n")).unwrap();
    let (ok, stderr) = import(&s, &s.addr, &[path.to_str().unwrap()], None);
    assert!(!ok, "{stderr}");
    assert!(stderr.contains("line 2: the quoted field"), "{stderr}");
    assert_eq!(count(&s), 0);

    let bare = s.addr.trim_start_matches("http://").to_string();
    let body = "customer_id,timestamp,cpu_hours_consumed,region\r\nc1,2025-01-01T00:00:00Z,1,eu\r\nc2,2025-01-01T00:00:00Z,x,eu\r\n";
    let (ok, stderr) = import(&s, &bare, &["--format", "csv", "-"], Some(body.as_bytes()));
    assert!(!ok, "{stderr}");
    assert!(stderr.contains("line 3, cpu_hours_consumed"), "{stderr}");
    assert!(
        !stderr.contains("nothing from this file"),
        "a batch is not the file: {stderr}"
    );
    let (ok, stderr) = import(
        &s,
        &bare,
        &["--format", "csv", "-"],
        Some(&body.as_bytes()[..79]),
    );
    assert!(ok, "{stderr}");
    assert_eq!(count(&s), 1);
    let (ok, stderr) = import(&s, &bare, &["-"], Some(b""));
    assert!(!ok);
    assert!(stderr.contains("--format"), "{stderr}");
}

fn create_metric(s: &Server, body: serde_json::Value) -> common::Reply {
    s.post_json("/billable_metrics", &body)
}

fn ingest_two(s: &Server) {
    let r = s.post_json(
        "/usage/compute_events",
        &serde_json::json!([
            {"customer_id": "a", "timestamp": "2025-06-10T00:00:00Z", "data": {"cpu_hours_consumed": 2, "region": "eu"}},
            {"customer_id": "a", "timestamp": "2025-07-10T00:00:00Z", "data": {"cpu_hours_consumed": 5, "region": "eu"}}
        ]),
    );
    assert_eq!(r.status, 200, "{}", r.text);
}

#[test]
fn metrics_quoted_placeholders_bind_and_a_period_free_metric_must_say_so() {
    let dir = tempdir();
    let s = Server::start(&dir.path().join("d"), &[]);
    s.create_compute_events();
    ingest_two(&s);
    let r = create_metric(
        &s,
        serde_json::json!({"name": "quoted", "sql": "SELECT customer_id, sum(cpu_hours_consumed) AS value FROM compute_events WHERE timestamp >= '{{start_date}}' AND timestamp < '{{end_date}}' GROUP BY customer_id"}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let r = s.get("/billable_metrics/quoted/usage?start_date=2025-07-01&end_date=2025-08-01");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["rows"][0]["value"], 5.0, "{}", r.text);

    let all_time = "SELECT customer_id, sum(cpu_hours_consumed) AS value FROM compute_events GROUP BY customer_id";
    let r = create_metric(&s, serde_json::json!({"name": "forgot", "sql": all_time}));
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(
        r.body["detail"].as_str().unwrap().contains("all_time"),
        "{}",
        r.text
    );
    let r = create_metric(
        &s,
        serde_json::json!({"name": "lifetime", "sql": all_time, "period": "all_time"}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["period"], "all_time");
    let r = s.get("/billable_metrics/lifetime/usage?start_date=2025-07-01&end_date=2025-08-01");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        (
            r.body["period"].as_str(),
            r.body["rows"][0]["value"].as_f64()
        ),
        (Some("all_time"), Some(7.0))
    );
    let r = s.get(
        "/billable_metrics/lifetime/usage?start_date=2025-06-01&end_date=2025-08-01&window=month",
    );
    assert_eq!(r.status, 400, "{}", r.text);
}

#[test]
fn user_mistakes_are_400s_that_say_what_is_wrong() {
    let dir = tempdir();
    let s = Server::start(&dir.path().join("d"), &[]);
    s.create_compute_events();
    ingest_two(&s);
    let r = s.post_json(
        "/sql",
        &serde_json::json!({"sql": "SELECT count(*) FROM compute_events WHERE customer_id = $c"}),
    );
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(
        r.body["detail"].as_str().unwrap().contains("$c"),
        "{}",
        r.text
    );
    let r = s.post_json(
        "/sql",
        &serde_json::json!({"sql": "SELECT sum(region) FROM compute_events"}),
    );
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(!r.text.contains("bug report"), "{}", r.text);
    assert!(r.text.contains("sum(Utf8)"), "{}", r.text);
    for sql in [
        "SELECT 1 / 0",
        "SELECT CAST(region AS INT) FROM compute_events",
        "SELECT CAST('nope' AS TIMESTAMP)",
    ] {
        let r = s.post_json("/sql", &serde_json::json!({ "sql": sql }));
        assert_eq!(r.status, 400, "{sql}: {}", r.text);
    }
    let r = create_metric(
        &s,
        serde_json::json!({"name": "bad sum", "usage_event": "compute_events", "aggregation": "sum", "field": "region"}),
    );
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(
        r.body["detail"], "sum needs a numeric field; region is String",
        "{}",
        r.text
    );
    assert!(!r.text.contains("bug"), "{}", r.text);
}

#[test]
fn route_words_are_reserved_slugs() {
    let dir = tempdir();
    let s = Server::start(&dir.path().join("d"), &[]);
    for slug in ["bulk", "csv", "events", "BULK"] {
        let mut def = common::compute_events_definition();
        def["api_slug"] = serde_json::json!(slug);
        let r = s.post_json("/rawmetrics", &def);
        assert_eq!(r.status, 400, "{slug}: {}", r.text);
        assert!(
            r.body["detail"].as_str().unwrap().contains("reserved"),
            "{}",
            r.text
        );
    }
    let r = s.post_json("/rawmetrics", &serde_json::json!({"name": "Bulk"}));
    assert_eq!(r.status, 400, "a derived slug is checked too: {}", r.text);
}

/// Runs `meterbase serve` expecting it to fail; its stderr.
fn failed_start(data: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_meterbase"))
        .arg("serve")
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env("METERBASE_LOG", "info")
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_failed_start_creates_nothing_and_says_why_once() {
    let dir = tempdir();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = format!("127.0.0.1:{}", taken.local_addr().unwrap().port());
    for (args, why) in [
        (
            vec!["--listen", "127.0.0.1:0", "--object-store", "gs://bucket/x"],
            "supported schemes",
        ),
        (vec!["--listen", "localhost"], "has no port"),
        (vec!["--listen", port.as_str()], "cannot listen on"),
    ] {
        let data = dir.path().join("d");
        let stderr = failed_start(&data, &args);
        assert_eq!(stderr.matches(why).count(), 1, "{args:?}: {stderr}");
        assert!(!stderr.contains("first start"), "{args:?}: {stderr}");
        assert!(!data.join("catalog.json").exists(), "{args:?}");
        assert!(!data.join("default-api-key").exists(), "{args:?}");
    }
}

#[test]
fn two_different_keys_in_one_request_are_refused() {
    let dir = tempdir();
    let s = Server::start(&dir.path().join("d"), &[]);
    s.create_compute_events();
    let r = s.admin(
        "POST",
        "/admin/organisations",
        Some(&serde_json::json!({"name": "acme"})),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let other = r.body["api_key"].as_str().unwrap().to_string();
    let bearer = format!("Bearer {other}");
    let r = s.request(
        "GET",
        "/rawmetrics",
        Some(&s.key),
        &[("authorization", &bearer)],
        None,
    );
    assert_eq!(r.status, 401, "{}", r.text);
    let own = format!("Bearer {}", s.key);
    let r = s.request(
        "GET",
        "/rawmetrics",
        Some(&s.key),
        &[("authorization", &own)],
        None,
    );
    assert_eq!(r.status, 200, "the same key twice is fine: {}", r.text);
    let r = s.request(
        "POST",
        "/usage/bulk/compute_events",
        Some("mb_wrong"),
        &[("content-type", "application/json")],
        Some(b"[]"),
    );
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(r.body["success"], false, "{}", r.text);
}

#[test]
fn the_first_key_of_an_organisation_can_be_listed_and_revoked() {
    let dir = tempdir();
    let s = Server::start(&dir.path().join("d"), &[]);
    let r = s.admin(
        "POST",
        "/admin/organisations",
        Some(&serde_json::json!({"name": "acme"})),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let first_id = r.body["api_key_id"].as_str().unwrap().to_string();
    let first_key = r.body["api_key"].as_str().unwrap().to_string();
    assert_eq!(
        s.admin("POST", "/admin/organisations/acme/api_keys", None)
            .status,
        201
    );
    let r = s.admin("GET", "/admin/organisations/acme/api_keys", None);
    assert_eq!(r.status, 200, "{}", r.text);
    let items = r.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["id"], first_id.as_str());
    assert!(items[0]["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(!r.text.contains(&first_key), "keys are never shown again");
    assert_eq!(
        s.admin("DELETE", &format!("/admin/api_keys/{first_id}"), None)
            .status,
        204
    );
    assert_eq!(
        s.request("GET", "/rawmetrics", Some(&first_key), &[], None)
            .status,
        401
    );
    assert_eq!(
        s.admin("GET", "/admin/organisations/nobody/api_keys", None)
            .status,
        404
    );
}

#[test]
fn events_take_plain_dates_like_usage_does() {
    let dir = tempdir();
    let s = Server::start(&dir.path().join("d"), &[]);
    s.create_compute_events();
    ingest_two(&s);
    let r = s.get("/usage/compute_events/events?from=2025-06-01&to=2025-07-01");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1, "{}", r.text);
    let r = s.delete("/usage/compute_events/events?from=2025-07-01&to=2025-08-01");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["deleted"], 1, "{}", r.text);
    assert_eq!(count(&s), 1);
}

#[test]
fn a_restart_tells_files_replaced_by_compaction_from_leftovers() {
    let dir = tempdir();
    let data = dir.path().join("d");
    let mut s = Server::start(&data, &["--flush-age-ms", "50"]);
    s.create_compute_events();
    for i in 0..3 {
        let r = s.post_json(
            "/usage/compute_events",
            &serde_json::json!({"customer_id": format!("c{i}"), "timestamp": "2025-06-10T00:00:00Z", "data": {"cpu_hours_consumed": 1, "region": "eu"}}),
        );
        assert_eq!(r.status, 200, "{}", r.text);
        s.wait_flushed();
    }
    let before = common::parquet_files(&data).len();
    assert_eq!(common::compact(&s)["files_in"], 3);
    assert_eq!(s.terminate().code(), Some(0));
    // A file a crash left behind mid-persist, named like the table's own files.
    let leftover = common::parquet_files(&data)[0].with_file_name(format!(
        "{}-99-99.parquet",
        common::parquet_files(&data)[0]
            .file_name()
            .unwrap()
            .to_string_lossy()
            .split('-')
            .next()
            .unwrap()
    ));
    std::fs::write(&leftover, b"half a file").unwrap();
    let log = data.with_extension("log");
    let logged_before = std::fs::read_to_string(&log).unwrap().len();
    s.spawn();
    let restart_log = std::fs::read_to_string(&log).unwrap()[logged_before..].to_string();
    let warned: Vec<&str> = restart_log
        .lines()
        .filter(|l| l.contains("interrupted persist or upload"))
        .collect();
    assert_eq!(warned.len(), 1, "{restart_log}");
    assert!(warned[0].contains("-99-99.parquet"), "{restart_log}");
    // Replaced files within their grace period are kept for readers, beside the output.
    assert_eq!(common::parquet_files(&data).len(), before + 1);
    assert_eq!(count(&s), 3);
}

#[test]
fn every_request_is_logged_once_with_its_id_and_a_5xx_with_its_cause() {
    let dir = tempdir();
    let data = dir.path().join("d");
    let s = Server::start(&data, &["--fault-injection"]);
    s.create_compute_events();
    let r = s.request(
        "GET",
        "/rawmetrics/compute_events",
        Some(&s.key),
        &[("x-request-id", "req-from-client-1")],
        None,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-request-id"), Some("req-from-client-1"));
    let generated = s.get("/rawmetrics");
    assert!(
        generated
            .header("x-request-id")
            .is_some_and(|id| id.len() >= 32),
        "an id is made up when the client sends none"
    );
    let r = s.request(
        "POST",
        "/admin/faults",
        None,
        &[
            ("authorization", &format!("Bearer {}", common::ADMIN_TOKEN)),
            ("content-type", "application/json"),
        ],
        Some(br#"{"wal_sync_failures": 1}"#),
    );
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s.request(
        "POST",
        "/usage/compute_events",
        Some(&s.key),
        &[("x-request-id", "req-that-fails"), ("content-type", "application/json")],
        Some(br#"{"customer_id":"a","timestamp":"2025-01-01T00:00:00Z","data":{"cpu_hours_consumed":1,"region":"x"}}"#),
    );
    assert_eq!(r.status, 500, "{}", r.text);
    let log = std::fs::read_to_string(data.with_extension("log")).unwrap();
    let lines_of = |id: &str| -> Vec<&str> { log.lines().filter(|l| l.contains(id)).collect() };
    let ok = lines_of("req-from-client-1");
    assert_eq!(ok.len(), 1, "{log}");
    for part in ["INFO", "GET", "/rawmetrics/{slug}", "status=200", "ms="] {
        assert!(ok[0].contains(part), "{part} missing: {}", ok[0]);
    }
    let failed = lines_of("req-that-fails");
    assert_eq!(failed.len(), 1, "{log}");
    for part in ["ERROR", "/usage/{slug}", "status=500", "write-ahead log"] {
        assert!(failed[0].contains(part), "{part} missing: {}", failed[0]);
    }
}

#[test]
fn metrics_have_latency_histograms_request_counts_and_the_process() {
    let dir = tempdir();
    let s = Server::start(&dir.path().join("d"), &[]);
    s.create_compute_events();
    ingest_two(&s);
    s.sql("SELECT count(*) FROM compute_events");
    let m = s.request("GET", "/metrics", None, &[], None).text;
    for series in [
        "meterbase_ingest_ack_seconds_bucket{le=",
        "meterbase_query_duration_seconds_bucket{kind=\"sql\",le=",
        "meterbase_wal_sync_seconds_bucket{le=",
        "meterbase_requests_total{method=\"POST\",route=\"/usage/{slug}\",status=\"200\"} 1",
        "meterbase_queries_running{kind=\"sql\"} 0",
        "meterbase_compactions_total",
        "meterbase_build_info{version=",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_cpu_seconds_total",
    ] {
        assert!(m.contains(series), "{series} missing in\n{m}");
    }
    let seconds = m
        .lines()
        .find_map(|l| l.strip_prefix("meterbase_query_seconds_total{kind=\"sql\"} "))
        .expect("query seconds by kind");
    assert!(seconds.parse::<f64>().unwrap() > 0.0, "{seconds}");
}
