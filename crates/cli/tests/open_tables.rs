//! Open tables: every event type is also a Delta Lake table that outside engines read with
//! the same answer as `/sql`. Three independent readers (chDB `deltaLakeLocal`, DuckDB 1.5.5
//! `delta_scan`, Python `deltalake`; `scripts/delta_read.py`) read the table after every phase
//! of a random history (replacements across files, late events, range deletions, compaction,
//! a SIGKILL), and every earlier Delta version again at the end (time travel, with garbage
//! collection running): per-customer counts and sums must equal the server's and the
//! reference's, with zero mismatches.

mod common;

use std::path::{Path, PathBuf};

use common::delta::{History, T0, Totals, compare, publish, server_totals};
use common::{Server, compact, tempdir};
use serde_json::{Value, json};

const DAYS: i64 = 20;
const CUSTOMERS: usize = 8;

/// The table's root in the local store: `<data>/store/<org id>/compute_events`.
fn table_root(data: &Path) -> PathBuf {
    let store = data.join("store");
    for org in std::fs::read_dir(&store).expect("store").flatten() {
        let root = org.path().join("compute_events");
        if root.join("_delta_log").is_dir() {
            return root;
        }
    }
    panic!("no Delta log under {}", store.display());
}

#[test]
fn outside_readers_see_what_the_server_answers_at_every_version() {
    let dir = tempdir();
    let data = dir.path().join("d");
    let mut s = Server::start(
        &data,
        &[
            "--flush-bytes",
            "200000",
            "--flush-age-ms",
            "200",
            "--compaction-interval-secs",
            "0",
            // Replaced files go as soon as nothing of ours needs them: only the Delta
            // versions' retention keeps them, which the time travel below proves.
            "--compaction-grace-secs",
            "0",
            "--delta-commit-interval",
            "1h",
            // Checkpoints often: readers start from them, and a restart from our snapshot.
            "--delta-checkpoint-every",
            "3",
        ],
    );
    s.create_compute_events();
    let mut history = History::new(0x64_656c_7461, CUSTOMERS, DAYS);
    let mut versions: Vec<(i64, Totals)> = Vec::new();
    let mut wrong = Vec::new();
    let mut root = None;
    let phases = std::env::var("OPEN_TABLES_PHASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    for phase in 0..phases {
        history.puts(&s, 4..10, 100..600, 0.4);
        if phase % 2 == 1 {
            history.delete(&s, 96);
        }
        match phase {
            2 | 5 => {
                compact(&s);
            }
            4 => {
                // Everything acknowledged survives; the log resumes from its last commit.
                s.kill9();
                s.restart();
            }
            _ => {}
        }
        s.wait_flushed();
        let version = publish(&s);
        let want = history.totals();
        assert_eq!(server_totals(&s), want, "phase {phase}: the server itself");
        let r = root.get_or_insert_with(|| table_root(&data)).clone();
        wrong.extend(compare(
            &r,
            None,
            &want,
            &format!("phase {phase}, version {version}"),
        ));
        versions.push((version, want));
    }
    // Every version read again after the later compactions and garbage collection.
    s.admin("POST", "/admin/compact", None);
    let root = root.expect("a table root");
    for (version, want) in &versions {
        wrong.extend(compare(
            &root,
            Some(*version),
            want,
            &format!("time travel to {version}"),
        ));
    }
    if !wrong.is_empty() && std::env::var_os("OPEN_TABLES_KEEP").is_some() {
        eprintln!("kept {}", data.display());
        std::mem::forget(s);
        std::mem::forget(dir);
    }
    assert!(
        wrong.is_empty(),
        "{} mismatches:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn existing_data_is_published_when_open_tables_are_turned_on() {
    let dir = tempdir();
    let data = dir.path().join("d");
    let mut s = Server::start(&data, &["--open-tables", "off"]);
    s.create_compute_events();
    let events: Vec<Value> = (0..500)
        .map(|i| {
            json!({"customer_id": format!("c{}", i % 7), "timestamp": T0 + i * 60,
                        "data": {"cpu_hours_consumed": i % 13, "region": "r"}})
        })
        .collect();
    let r = s.post_json("/usage/compute_events", &Value::Array(events));
    assert_eq!(r.status, 200, "{}", r.text);
    s.wait_flushed();
    let r = s.admin("POST", "/admin/open_tables/publish", None);
    assert_eq!(r.status, 404, "{}", r.text);
    let org = std::fs::read_dir(data.join("store"))
        .unwrap()
        .flatten()
        .next()
        .unwrap();
    assert!(!org.path().join("compute_events/_delta_log").exists());
    let want = server_totals(&s);
    s.terminate();
    let mut s = Server::start(&data, &["--delta-commit-interval", "1h"]);
    publish(&s);
    let wrong = compare(
        &table_root(&data),
        None,
        &want,
        "after turning open tables on",
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    s.terminate();
}

#[test]
fn an_object_store_outage_delays_publication_and_it_catches_up() {
    let dir = tempdir();
    let data = dir.path().join("d");
    let s = Server::start(
        &data,
        &["--fault-injection", "--delta-commit-interval", "1h"],
    );
    s.create_compute_events();
    let events: Vec<Value> = (0..300)
        .map(|i| {
            json!({"customer_id": format!("c{}", i % 5), "timestamp": T0 + i,
                        "data": {"cpu_hours_consumed": 2, "region": "r"}})
        })
        .collect();
    let r = s.post_json("/usage/compute_events", &Value::Array(events));
    assert_eq!(r.status, 200, "{}", r.text);
    s.wait_flushed();
    let want = server_totals(&s);
    let r = s.admin("POST", "/admin/faults", Some(&json!({"outage": true})));
    assert!(r.status < 300, "{}", r.text);
    let r = s.admin("POST", "/admin/open_tables/publish", None);
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.body["tables"][0]["error"].is_string(), "{}", r.text);
    let r = s.admin("POST", "/admin/faults", Some(&json!({"outage": false})));
    assert!(r.status < 300, "{}", r.text);
    publish(&s);
    let wrong = compare(&table_root(&data), None, &want, "after the outage");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Files a retained Delta version lists outlive the grace period, and go once the retention
/// has passed too: the open tables must not keep replaced files forever.
#[test]
fn replaced_files_go_once_no_retained_version_lists_them() {
    let dir = tempdir();
    let data = dir.path().join("d");
    let s = Server::start(
        &data,
        &[
            "--compaction-interval-secs",
            "0",
            "--compaction-grace-secs",
            "0",
            "--delta-commit-interval",
            "1h",
            "--delta-retention",
            "3s",
            "--flush-age-ms",
            "200",
        ],
    );
    s.create_compute_events();
    for round in 0..3 {
        let events: Vec<Value> = (0..200)
            .map(|i| {
                json!({"customer_id": format!("c{}", i % 4), "timestamp": T0 + round * 1000 + i,
                            "data": {"cpu_hours_consumed": 1, "region": "r"}})
            })
            .collect();
        let r = s.post_json("/usage/compute_events", &Value::Array(events));
        assert_eq!(r.status, 200, "{}", r.text);
        s.wait_flushed();
    }
    publish(&s);
    let before: Vec<PathBuf> = common::parquet_files(&data.join("store"))
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("date="))
        .collect();
    assert!(before.len() >= 3, "{before:?}");
    compact(&s);
    publish(&s);
    // Within the retention the version before the compaction is readable: its files stay.
    compact(&s);
    let present = |files: &[PathBuf]| files.iter().filter(|f| f.exists()).count();
    assert_eq!(
        present(&before),
        before.len(),
        "deleted within the retention"
    );
    std::thread::sleep(std::time::Duration::from_secs(4));
    // The next garbage collection (after a compaction pass) deletes them.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while present(&before) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "replaced files kept past the retention"
        );
        compact(&s);
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let want = server_totals(&s);
    let wrong = compare(
        &table_root(&data),
        None,
        &want,
        "after the replaced files went",
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
