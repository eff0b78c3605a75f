//! Compaction through the real server: it never changes an answer, it drops only what no
//! allowed `as_of` can see, it survives being killed at any moment, and it never pulls a file
//! from under a running query.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    ADMIN_TOKEN, Server, compact, customer_totals, manifest_paths, metric, num, parquet_files,
    tempdir,
};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const T0: i64 = 1_735_689_600; // 2025-01-01T00:00:00Z

fn answer(s: &Server, as_of: Option<&str>) -> Value {
    Value::Array(customer_totals(s, as_of))
}

fn put(s: &Server, events: Vec<Value>) {
    let r = s.post_json("/usage/compute_events", &Value::Array(events));
    assert_eq!(r.status, 200, "{}", r.text);
}

fn ev(c: &str, ts: i64, v: i64) -> Value {
    json!({"customer_id": c, "timestamp": ts, "data": {"cpu_hours_consumed": v, "region": "r"}})
}

fn parquet_count(dir: &Path) -> usize {
    parquet_files(dir).len()
}

/// A server that compacts only when asked and deletes replaced files at once. Without open
/// tables: a Delta version would keep replaced files for its retention
/// (`open_tables.rs` tests that).
fn start(data: &Path, extra: &[&str]) -> Server {
    let mut args = vec![
        "--compaction-interval-secs",
        "0",
        "--compaction-grace-secs",
        "0",
        "--flush-age-ms",
        "100",
        "--open-tables",
        "off",
    ];
    args.extend_from_slice(extra);
    Server::start(data, &args)
}

fn live_files(s: &Server) -> usize {
    metric(s, "meterbase_live_files") as usize
}

#[test]
fn expired_history_is_dropped_and_answers_do_not_change() {
    let dir = tempdir();
    let data = dir.path().join("d");
    // No history kept: every replaced version and every deletion is expired at once.
    let s = start(&data, &["--history-retention-days", "0"]);
    s.create_compute_events();
    for round in 0..3 {
        put(
            &s,
            (0..100).map(|i| ev("a", T0 + i * 60, round + 1)).collect(),
        );
        s.wait_flushed();
    }
    put(&s, (0..50).map(|i| ev("b", T0 + i * 60, 5)).collect());
    s.wait_flushed();
    let r = s.delete("/usage/compute_events/events?customer_id=b&from=2025-01-01T00:00:00Z&to=2025-01-01T00:20:00Z");
    assert_eq!(r.body["deleted"], 20, "{}", r.text);
    s.wait_flushed();
    let before = answer(&s, None);
    assert_eq!(before[0]["n"], 100);
    assert_eq!(num(&before[0]["v"]), 300.0);
    assert_eq!(before[1]["n"], 30);
    let r = compact(&s);
    assert_eq!(
        (
            r["files_in"].as_u64(),
            r["rows_in"].as_u64(),
            r["rows_out"].as_u64()
        ),
        (Some(4), Some(350), Some(130)),
        "{r}"
    );
    assert_eq!(answer(&s, None), before);
    assert_eq!(live_files(&s), 1);
    // The deletion is applied to the file, so the manifest forgets it; replaced files are gone.
    let manifests = walk_json(&data);
    let latest = manifests.last().unwrap();
    assert!(latest["tombstones"].is_null(), "{latest}");
    assert_eq!(latest["files"][0]["has_duplicate_keys"], false);
    assert_eq!(parquet_count(&data), 1);
}

/// Manifest versions on disk, oldest first.
fn walk_json(dir: &Path) -> Vec<Value> {
    manifest_paths(dir)
        .iter()
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect()
}

#[test]
fn killed_during_compaction_at_random_moments_answers_stay_the_same() {
    let dir = tempdir();
    let data = dir.path().join("d");
    let mut s = start(&data, &["--flush-bytes", "100000"]);
    s.create_compute_events();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut expected_rows = 0u64;
    let mut expected_sum = 0i64;
    let mut next_ts = T0;
    let mut history: Vec<(String, Value)> = Vec::new();
    for cycle in 0..8 {
        // New rows over several days, and replacements of the previous cycle's rows.
        for _ in 0..3 {
            let events: Vec<Value> = (0..2000)
                .map(|i| ev(&format!("c{}", i % 5), next_ts + i * 97, 2))
                .collect();
            next_ts += 2000 * 97;
            expected_rows += 2000;
            expected_sum += 4000;
            put(&s, events);
            s.wait_flushed();
        }
        let replaced: Vec<Value> = (0..500)
            .map(|i| ev(&format!("c{}", i % 5), T0 + i * 97, 3))
            .collect();
        put(&s, replaced);
        if cycle == 0 {
            expected_sum += 500;
        }
        s.wait_flushed();
        std::thread::sleep(Duration::from_millis(3));
        let t = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        std::thread::sleep(Duration::from_millis(3));
        history.push((t, answer(&s, None)));
        // Compaction in the background, a kill at a random moment of it.
        let addr = s.addr.clone();
        let runner = std::thread::spawn(move || {
            let _ = ureq::post(format!("{addr}/admin/compact"))
                .header("authorization", &format!("Bearer {ADMIN_TOKEN}"))
                .send_empty();
        });
        std::thread::sleep(Duration::from_millis(rng.random_range(0..400)));
        s.kill9();
        let _ = runner.join();
        s.spawn();
        let now = answer(&s, None);
        let n: u64 = now
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["n"].as_u64().unwrap())
            .sum();
        let v: f64 = now.as_array().unwrap().iter().map(|r| num(&r["v"])).sum();
        assert_eq!(
            (n, v as i64),
            (expected_rows, expected_sum),
            "cycle {cycle}"
        );
        for (t, then) in &history {
            assert_eq!(&answer(&s, Some(t)), then, "cycle {cycle}, as_of {t}");
        }
        // Nothing left over: the files on disk are exactly the ones the manifest lists.
        assert_eq!(parquet_count(&data), live_files(&s), "cycle {cycle}");
    }
    compact(&s);
    for (t, then) in &history {
        assert_eq!(&answer(&s, Some(t)), then);
    }
}

#[test]
fn a_running_query_never_loses_its_files_to_compaction() {
    let dir = tempdir();
    let data = dir.path().join("d");
    let s = start(&data, &["--flush-bytes", "50000"]);
    s.create_compute_events();
    for round in 0..6 {
        put(
            &s,
            (0..3000)
                .map(|i| ev(&format!("c{}", i % 3), T0 + round * 3000 + i, 1))
                .collect(),
        );
        s.wait_flushed();
    }
    let files_before = live_files(&s);
    assert!(files_before > 1);
    // A deliberately slow query: a self-join over each customer's rows.
    let slow = "SELECT count(*) AS n FROM compute_events a JOIN compute_events b ON a.customer_id = b.customer_id";
    let mut per_customer = [6000u64, 6000, 6000];
    let mut overlapped = false;
    for _ in 0..5 {
        let addr = s.addr.clone();
        let key = s.key.clone();
        let started = Instant::now();
        let query = std::thread::spawn(move || {
            let mut r = ureq::post(format!("{addr}/sql"))
                .header("x-api-key", &key)
                .config()
                .http_status_as_error(false)
                .build()
                .send_json(json!({ "sql": slow }))
                .unwrap();
            let status = r.status().as_u16();
            let body: Value = r.body_mut().read_json().unwrap_or_default();
            (status, body, started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(300));
        let compacted_at = started.elapsed();
        compact(&s);
        let (status, body, took) = query.join().unwrap();
        assert_eq!(status, 200, "{body}");
        let pairs: u64 = per_customer.iter().map(|n| n * n).sum();
        assert_eq!(body["rows"][0]["n"], pairs, "{body}");
        if took > compacted_at {
            overlapped = true;
            break;
        }
        // The query was too quick to overlap: write more files and try again.
        put(
            &s,
            (0..3000).map(|i| ev("c0", T0 + 100_000 + i, 1)).collect(),
        );
        per_customer[0] += 3000;
        s.wait_flushed();
    }
    assert!(overlapped, "no query ran across a compaction");
    // Once the query is done, nothing keeps the replaced files. The server drops the query's
    // snapshot a moment after the reply has left (a loaded machine can run the next pass
    // first), so the files go at the first pass after that.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let _ = compact(&s);
        if parquet_count(&data) == live_files(&s) || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(parquet_count(&data), live_files(&s));
}

/// The newest manifest's live files.
fn live_manifest_files(data: &Path) -> Vec<Value> {
    let newest = manifest_paths(data).pop().expect("a manifest");
    let m: Value = serde_json::from_slice(&std::fs::read(newest).unwrap()).unwrap();
    m["files"].as_array().cloned().unwrap_or_default()
}

#[test]
fn a_day_cut_into_several_files_is_deduplicated_only_where_keys_repeat() {
    let dir = tempdir();
    let data = dir.path().join("d");
    let s = start(&data, &["--compaction-max-rows", "100"]);
    s.create_compute_events();
    // 300 events of one day in three flushes: compaction writes three files of that day,
    // which overlap in time but share no key.
    for part in 0..3 {
        put(
            &s,
            (0..100).map(|i| ev("a", T0 + part * 100 + i, 1)).collect(),
        );
        s.wait_flushed();
    }
    compact(&s);
    let files = live_manifest_files(&data);
    assert_eq!(files.len(), 3, "{files:?}");
    assert!(
        files.iter().all(|f| f["shares_keys"] == false),
        "files flagged without a shared key: {files:?}"
    );
    assert_eq!(answer(&s, None)[0]["n"], 300);
    // A replacement of the first event: after the next compaction its two versions sit in
    // different files of the day, which must then be flagged, and it counts once.
    put(&s, vec![ev("a", T0, 5)]);
    s.wait_flushed();
    compact(&s);
    let files = live_manifest_files(&data);
    assert!(
        files.iter().filter(|f| f["shares_keys"] == true).count() >= 2
            || files.iter().any(|f| f["has_duplicate_keys"] == true),
        "{files:?}"
    );
    let totals = answer(&s, None);
    assert_eq!(totals[0]["n"], 300);
    assert_eq!(num(&totals[0]["v"]), 299.0 + 5.0);
    // The next day, a replacement merged in the same pass as its original but into another
    // file of the day: those two files are flagged by their keys, the third is not.
    let day2 = T0 + 86_400;
    for part in 0..3 {
        let mut batch: Vec<Value> = (0..99).map(|i| ev("b", day2 + part * 100 + i, 1)).collect();
        batch.push(if part == 2 {
            ev("b", day2, 7)
        } else {
            ev("b", day2 + part * 100 + 99, 1)
        });
        put(&s, batch);
        s.wait_flushed();
    }
    compact(&s);
    let day2_files: Vec<Value> = live_manifest_files(&data)
        .into_iter()
        .filter(|f| f["path"].as_str().unwrap_or("").contains("date=2025-01-02"))
        .collect();
    assert_eq!(day2_files.len(), 3, "{day2_files:?}");
    let flagged = day2_files
        .iter()
        .filter(|f| f["shares_keys"] == true)
        .count();
    assert_eq!(flagged, 2, "{day2_files:?}");
    let b = answer(&s, None)
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["customer_id"] == "b")
        .cloned()
        .unwrap();
    assert_eq!(b["n"], 298 + 1, "b's 299 distinct events");
    assert_eq!(num(&b["v"]), 298.0 + 7.0);
}
