//! The Postgres wire protocol (`--pg-listen`) with real clients: psql (`\dt`, `\d`, a
//! parameter, `as_of`, the sandbox, another organisation's tables, a wrong key) and psycopg
//! (prepared statements, a Grafana time series equal to `/sql`'s, a million rows streamed
//! with the server's memory watched), timed against `/sql` with Arrow output.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

fn start(dir: &std::path::Path) -> (Server, u16) {
    let s = Server::start(dir, &["--pg-listen", "127.0.0.1:0"]);
    let addr = std::fs::read_to_string(dir.join("pg-listen-addr")).expect("pg-listen-addr");
    let port = addr
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    (s, port)
}

struct Psql {
    ok: bool,
    out: String,
    err: String,
}

/// Runs a psql script (stdin, so `:'var'` interpolation works) as the holder of `key`.
fn psql(port: u16, key: &str, vars: &[(&str, &str)], script: &str) -> Psql {
    let mut cmd = Command::new("psql");
    cmd.arg(format!(
        "host=127.0.0.1 port={port} user=anyone dbname=meterbase sslmode=disable connect_timeout=10"
    ))
    .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-f", "-"]);
    for (k, v) in vars {
        cmd.arg("-v").arg(format!("{k}={v}"));
    }
    let mut child = cmd
        .env("PGPASSWORD", key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("psql (Debian postgresql-client; scripts/system-deps.sh installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("write script");
    let out = child.wait_with_output().expect("psql");
    Psql {
        ok: out.status.success(),
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn event(customer: &str, ts: &str, v: f64, region: &str) -> Value {
    json!({"customer_id": customer, "timestamp": ts,
           "data": {"cpu_hours_consumed": v, "region": region}})
}

/// Four events on 2025-07-28 for cust_a and cust_b.
fn small_data(s: &Server) {
    s.create_compute_events();
    let r = s.post_json(
        "/usage/compute_events",
        &json!([
            event("cust_a", "2025-07-28T10:00:00Z", 1.5, "us-east-1"),
            event("cust_a", "2025-07-28T10:30:00Z", 2.25, "us-east-1"),
            event("cust_a", "2025-07-28T11:15:00Z", 4.0, "eu-west-1"),
            event("cust_b", "2025-07-28T12:00:00Z", 8.0, "eu-west-1"),
        ]),
    );
    assert_eq!(r.status, 200, "{}", r.text);
}

/// A second organisation with a table of its own; returns its key.
fn other_org(s: &Server) -> String {
    let acme = s.admin(
        "POST",
        "/admin/organisations",
        Some(&json!({"name": "acme"})),
    );
    assert_eq!(acme.status, 201, "{}", acme.text);
    let key = acme.body["api_key"].as_str().expect("key").to_string();
    let def = json!({"name": "API calls", "api_slug": "api_calls",
                     "dataschema": {"customer_id": "String", "timestamp": "DateTime64",
                                    "data": {"calls": "Int64"}}});
    assert_eq!(s.post_as(&key, "/rawmetrics", &def).status, 201);
    let ev = json!({"customer_id": "secret_customer", "timestamp": "2025-07-28T10:00:00Z", "data": {"calls": 7}});
    assert_eq!(s.post_as(&key, "/usage/api_calls", &ev).status, 200);
    key
}

#[test]
fn psql_lists_queries_and_refuses_like_sql() {
    let dir = tempdir();
    let (s, port) = start(&dir.path().join("d"));
    small_data(&s);
    let acme = other_org(&s);

    let dt = psql(port, &s.key, &[], "\\dt\n");
    assert!(dt.ok, "\\dt: {}", dt.err);
    assert!(dt.out.contains("compute_events"), "\\dt: {}", dt.out);
    assert!(
        !dt.out.contains("api_calls"),
        "\\dt shows acme's table: {}",
        dt.out
    );
    let acme_dt = psql(port, &acme, &[], "\\dt\n");
    assert!(acme_dt.out.contains("api_calls") && !acme_dt.out.contains("compute_events"));

    let d = psql(port, &s.key, &[], "\\d compute_events\n");
    assert!(d.ok, "\\d: {}", d.err);
    for column in [
        "customer_id|text",
        "timestamp|timestamp with time zone",
        "cpu_hours_consumed|double precision",
        "region|text",
    ] {
        assert!(d.out.contains(column), "\\d lacks {column}: {}", d.out);
    }

    // A parameter (a psql variable) and as_of through the session setting.
    let before_last = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    std::thread::sleep(Duration::from_millis(20));
    let r = s.post_json(
        "/usage/compute_events",
        &event("cust_a", "2025-07-28T13:00:00Z", 16.0, "us-east-1"),
    );
    assert_eq!(r.status, 200);
    let q = psql(
        port,
        &s.key,
        &[("cust", "cust_a"), ("as_of", &before_last)],
        "SELECT count(*), sum(cpu_hours_consumed) FROM compute_events WHERE customer_id = :'cust';\n\
         SET meterbase.as_of = :'as_of';\n\
         SHOW meterbase.as_of;\n\
         SELECT count(*), sum(cpu_hours_consumed) FROM compute_events WHERE customer_id = :'cust';\n\
         RESET meterbase.as_of;\n\
         SELECT count(*) FROM compute_events;\n",
    );
    assert!(q.ok, "{}", q.err);
    let lines: Vec<&str> = q.out.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(
        lines,
        ["4|23.75", "SET", before_last.as_str(), "3|7.75", "SET", "5"],
        "{}",
        q.out
    );

    // The sandbox of /sql, and another organisation's tables, refused the same way.
    for bad in [
        "CREATE TABLE t (a int)",
        "DROP TABLE compute_events",
        "INSERT INTO compute_events VALUES ('a')",
        "DELETE FROM compute_events",
        "UPDATE compute_events SET region = 'x'",
        "COPY compute_events TO '/tmp/x.csv'",
        "COPY (SELECT 1) TO STDOUT",
        "SET datafusion.execution.batch_size = 1",
        "SET TIME ZONE 'Europe/Berlin'",
        "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
        "SELECT * FROM '/etc/passwd'",
        "SELECT * FROM 'file:///etc/hosts'",
        "SELECT * FROM read_parquet('/etc/passwd')",
        "SELECT * FROM api_calls",
        "SELECT * FROM meterbase.public.api_calls",
        "SELECT nope FROM compute_events",
        "SELEC 1",
    ] {
        let r = psql(port, &s.key, &[], &format!("{bad};\n"));
        assert!(
            !r.ok && r.err.contains("ERROR"),
            "{bad} was not refused: {}{}",
            r.out,
            r.err
        );
    }
    for catalog in [
        "SELECT count(*) FROM pg_catalog.pg_class WHERE relname = 'api_calls'",
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'api_calls'",
        "SELECT count(*) FROM information_schema.columns WHERE column_name = 'calls'",
        "SELECT count(*) FROM pg_catalog.pg_attribute WHERE attname = 'calls'",
    ] {
        let r = psql(port, &s.key, &[], &format!("{catalog};\n"));
        assert!(r.ok, "{catalog}: {}", r.err);
        assert_eq!(r.out.trim(), "0", "{catalog} sees acme's table");
    }

    // A wrong key is an authentication failure (SQLSTATE 28P01).
    let r = psql(port, "not-a-key", &[], "SELECT 1;\n");
    assert!(
        !r.ok
            && r.err
                .to_lowercase()
                .contains("password authentication failed"),
        "{}",
        r.err
    );
}

fn python() -> PathBuf {
    std::env::var_os("METERBASE_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv/bin/python"))
}

const MILLION: usize = 1_000_000;

/// A million events in time order, one CSV upload: each staged file covers its own time
/// range, so the rows are read straight (no deduplication holding them).
fn million_rows(s: &Server) {
    let mut csv = String::with_capacity(MILLION * 60);
    csv.push_str("customer_id,timestamp,cpu_hours_consumed,region\n");
    let start = 1_748_736_000i64; // 2025-06-01T00:00:00Z
    for i in 0..MILLION as i64 {
        let t = chrono::DateTime::from_timestamp(start + i * 2, 0).expect("time");
        csv.push_str(&format!(
            "cust_{:04},{},{}.5,{}\n",
            i % 1000,
            t.format("%Y-%m-%dT%H:%M:%SZ"),
            i % 97,
            if i % 2 == 0 { "us-east-1" } else { "eu-west-1" }
        ));
    }
    let r = s.request(
        "POST",
        "/usage/compute_events/csv",
        Some(&s.key),
        &[("content-type", "text/csv")],
        Some(csv.as_bytes()),
    );
    assert_eq!(r.status, 200, "{}", r.text);
}

#[test]
fn psycopg_prepared_grafana_and_a_million_rows_streamed() {
    let dir = tempdir();
    let (s, port) = start(&dir.path().join("d"));
    small_data(&s);
    million_rows(&s);

    let out = Command::new(python())
        .arg(repo().join("scripts/pg_client_test.py"))
        .args(["--port", &port.to_string(), "--key", &s.key])
        .args(["--wrong-key", "wrong", "--pid", &s.pid().to_string()])
        .args(["--stream-rows", "1"])
        .output()
        .expect("python with psycopg (scripts/venv.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(got["wrong_key_sqlstate"], "28P01");
    assert_eq!(
        got["prepared"],
        json!([[["cust_a", 3, 7.75]], [["cust_b", 1, 8.0]]])
    );
    assert_eq!(got["tables"], json!(["compute_events"]));
    // The view's columns, as /sql sees them. information_schema is DataFusion's, which names
    // Arrow types (pg_catalog has the Postgres ones, checked by psql's \d above).
    let columns: Vec<&str> = got["columns"]
        .as_array()
        .map(|c| c.iter().filter_map(|c| c[0].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        columns,
        [
            "customer_id",
            "timestamp",
            "cpu_hours_consumed",
            "region",
            "_ingested_at",
            "data"
        ],
        "{got}"
    );

    // Grafana's time series equals /sql's answer to the same query.
    let grafana = "SELECT date_trunc('hour', timestamp) AS time, sum(cpu_hours_consumed) AS value \
                   FROM compute_events WHERE timestamp BETWEEN '2025-07-28T00:00:00Z' AND \
                   '2025-07-29T00:00:00Z' GROUP BY 1 ORDER BY 1";
    let via_sql: Vec<Value> = s
        .sql(grafana)
        .iter()
        .map(|r| json!([r["time"], r["value"].as_f64().unwrap_or(f64::NAN)]))
        .collect();
    assert_eq!(got["grafana"], Value::Array(via_sql));
    assert_eq!(
        got["grafana"],
        json!([
            ["2025-07-28T10:00:00Z", 3.75],
            ["2025-07-28T11:00:00Z", 4.0],
            ["2025-07-28T12:00:00Z", 8.0]
        ])
    );

    // A million rows streamed, the server's memory bounded meanwhile.
    let stream = &got["stream"];
    assert_eq!(stream["rows"], json!(MILLION + 4));
    let grew_mib = (stream["rss_peak_kib"].as_f64().unwrap_or(0.0)
        - stream["rss_before_kib"].as_f64().unwrap_or(0.0))
        / 1024.0;
    // Collected whole, the rows would take well over 100 MiB (Arrow ~45 MiB, Postgres
    // rows twice that); streamed, a few batches are in flight.
    assert!(
        grew_mib < 64.0,
        "server grew {grew_mib:.0} MiB while streaming"
    );

    // The same rows from /sql as Arrow, timed in the same run.
    let body = json!({"sql": "SELECT customer_id, timestamp, cpu_hours_consumed, region FROM compute_events"}).to_string();
    let started = Instant::now();
    let mut r = agent_with_timeout(Duration::from_secs(600))
        .post(format!("{}/sql", s.addr))
        .header("x-api-key", &s.key)
        .header("accept", "application/vnd.apache.arrow.stream")
        .header("content-type", "application/json")
        .send(body.as_bytes())
        .expect("POST /sql");
    assert_eq!(r.status().as_u16(), 200);
    let bytes = r
        .body_mut()
        .with_config()
        .limit(1 << 31)
        .read_to_vec()
        .expect("body");
    let arrow_rows: usize =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
            .expect("arrow stream")
            .map(|b| b.expect("batch").num_rows())
            .sum();
    let arrow_secs = started.elapsed().as_secs_f64();
    assert_eq!(arrow_rows, MILLION + 4);
    eprintln!(
        "1M-row fetch: postgres protocol {:.0} rows/s ({:.2} s, server +{grew_mib:.0} MiB); /sql Arrow {:.0} rows/s ({arrow_secs:.2} s)",
        stream["rows_per_sec"].as_f64().unwrap_or(0.0),
        stream["seconds"].as_f64().unwrap_or(0.0),
        arrow_rows as f64 / arrow_secs
    );
}

#[test]
fn tls_and_the_cleartext_rule() {
    let dir = tempdir();
    // Off loopback without TLS the server refuses to start (the port is never opened).
    let out = Command::new(env!("CARGO_BIN_EXE_meterbase"))
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.path().join("refused"))
        .args(["--listen", "127.0.0.1:0", "--pg-listen", "0.0.0.0:0"])
        .output()
        .expect("meterbase");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not a loopback address"),
        "{err}"
    );

    // With a certificate, psql connects over TLS.
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let data = dir.path().join("d");
    let s = Server::start(
        &data,
        &[
            "--pg-listen",
            "127.0.0.1:0",
            "--pg-tls-cert",
            cert.to_str().expect("path"),
            "--pg-tls-key",
            key.to_str().expect("path"),
        ],
    );
    let addr = std::fs::read_to_string(data.join("pg-listen-addr")).expect("pg-listen-addr");
    let port = addr.trim().rsplit(':').next().expect("port");
    let out = Command::new("psql")
        .arg(format!(
            "host=127.0.0.1 port={port} user=anyone dbname=meterbase sslmode=require connect_timeout=10"
        ))
        .args(["-X", "-A", "-t", "-c", "SELECT 1 + 1"])
        .env("PGPASSWORD", &s.key)
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");
}
