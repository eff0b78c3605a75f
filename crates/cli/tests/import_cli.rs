//! `meterbase import` against the real server: a million-row CSV with the server's peak
//! memory checked, a failing batch reported with file lines, gzip NDJSON.

mod common;

use std::io::Write;
use std::process::Command;

use common::{Server, num, tempdir};

fn import(s: &Server, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_meterbase"))
        .arg("import")
        .args([
            "--url",
            &s.addr,
            "--api-key",
            &s.key,
            "--event",
            "compute_events",
        ])
        .args(args)
        .output()
        .expect("run meterbase import");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Peak resident set of a process, from `/proc/PID/status`.
fn peak_rss_bytes(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

#[test]
fn a_million_row_csv_imports_with_bounded_server_memory() {
    let dir = tempdir();
    let s = Server::start(&dir.path().join("d"), &[]);
    s.create_compute_events();
    let path = dir.path().join("usage.csv");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    writeln!(f, "customer_id,timestamp,cpu_hours_consumed,region").unwrap();
    let rows = 1_000_000u64;
    for i in 0..rows {
        writeln!(
            f,
            "cus_{},{},{}.5,eu-west-{}",
            i % 1000,
            1_735_689_600 + i,
            i % 7,
            i % 3
        )
        .unwrap();
    }
    f.flush().unwrap();
    drop(f);
    let file_bytes = std::fs::metadata(&path).unwrap().len();
    let (ok, stderr) = import(&s, &[path.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("imported 1000000 rows"), "{stderr}");
    s.wait_flushed();
    let after_import = peak_rss_bytes(s.pid());
    let r =
        s.sql("SELECT count(*) AS n, sum(data.cpu_hours_consumed) AS total FROM compute_events");
    assert_eq!(r[0]["n"], rows);
    let expected: f64 = (0..rows).map(|i| (i % 7) as f64 + 0.5).sum();
    assert_eq!(num(&r[0]["total"]), expected);
    let before_upload = peak_rss_bytes(s.pid());
    // The same file once more, in one request: staged chunk by chunk, replacing every row.
    let body = std::fs::read(&path).unwrap();
    let r = s.request(
        "POST",
        "/usage/compute_events/csv",
        Some(&s.key),
        &[("content-type", "text/csv")],
        Some(&body),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    drop(body);
    let after_upload = peak_rss_bytes(s.pid());
    eprintln!(
        "file {:.1} MB; server peak RSS {:.1} MB after the CLI import, {:.1} MB after the single-request upload",
        file_bytes as f64 / 1e6,
        after_import as f64 / 1e6,
        after_upload as f64 / 1e6
    );
    // The CLI's batches pass through the in-memory buffer (flushed at 64 MiB); the upload in
    // one request is held one 100k-row chunk at a time, so it must not raise the peak by
    // anything like the file's size as Arrow columns (~60 MB here).
    assert!(
        after_import < 256 << 20,
        "server peak RSS {after_import} bytes after importing a {file_bytes}-byte file"
    );
    assert!(
        after_upload < before_upload + (32 << 20),
        "the upload raised the server's peak RSS from {before_upload} to {after_upload} bytes"
    );
    // Every row now exists twice (the upload overlaps the imported files), so this query
    // deduplicates two million rows; compaction is what makes such overlaps cheap again.
    let r = s.sql("SELECT count(*) AS n FROM compute_events");
    assert_eq!(r[0]["n"], rows);
}

#[test]
fn a_failed_batch_stops_with_file_lines_and_the_committed_count() {
    let dir = tempdir();
    let s = Server::start(&dir.path().join("d"), &[]);
    s.create_compute_events();
    let path = dir.path().join("bad.csv");
    let mut csv = String::from("customer_id,timestamp,cpu_hours_consumed,region\n");
    for i in 0..5000 {
        if i == 2500 {
            csv.push_str("c,2025-01-01T00:00:00Z,not-a-number,eu\n");
        } else {
            csv.push_str(&format!("c,{},1,eu\n", 1_735_689_600 + i));
        }
    }
    std::fs::write(&path, csv).unwrap();
    let (ok, stderr) = import(&s, &["--batch-rows", "1000", path.to_str().unwrap()]);
    assert!(!ok);
    // Row 2500 (0-based) is file line 2502, in the third batch.
    assert!(stderr.contains("line 2502, cpu_hours_consumed"), "{stderr}");
    assert!(
        stderr.contains("2000 rows in 2 earlier batches were committed"),
        "{stderr}"
    );
    let r = s.sql("SELECT count(*) AS n FROM compute_events");
    assert_eq!(r[0]["n"], 2000);
}

#[test]
fn gzip_ndjson_imports() {
    let dir = tempdir();
    let s = Server::start(&dir.path().join("d"), &[]);
    s.create_compute_events();
    let path = dir.path().join("events.ndjson.gz");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&path).unwrap(),
        flate2::Compression::fast(),
    );
    for i in 0..3000 {
        writeln!(
            gz,
            r#"{{"customer_id":"n{}","timestamp":{},"data":{{"cpu_hours_consumed":2,"region":"x"}}}}"#,
            i % 5,
            1_735_689_600 + i
        )
        .unwrap();
        if i % 1000 == 0 {
            writeln!(gz).unwrap();
        }
    }
    gz.finish().unwrap();
    let (ok, stderr) = import(&s, &["--batch-rows", "700", path.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    let r =
        s.sql("SELECT count(*) AS n, sum(data.cpu_hours_consumed) AS total FROM compute_events");
    assert_eq!(
        (r[0]["n"].as_u64(), num(&r[0]["total"])),
        (Some(3000), 6000.0)
    );
}
