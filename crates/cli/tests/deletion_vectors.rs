//! Corrections cost almost nothing: versions replaced by a later one are masked in their
//! files' deletion vectors when the new version is persisted (and again when compaction
//! merges), so a query of the current data reads those files straight, without the
//! deduplication that otherwise sorts every row of every day holding a correction; `as_of`
//! still sees every version.

mod common;

use std::collections::BTreeMap;

use common::{Server, compact, manifest_paths, num, tempdir};
use serde_json::{Value, json};

const DAY: i64 = 86_400;
const BASE: i64 = 1_735_689_600; // 2025-01-01T00:00:00Z

fn post(s: &Server, events: &[Value]) {
    let r = s.post_json("/usage/compute_events", &json!(events));
    assert_eq!(r.status, 200, "{}", r.text);
}

fn event(customer: usize, ts: i64, v: f64) -> Value {
    json!({"customer_id": format!("c{customer}"), "timestamp": ts, "data": {"cpu_hours_consumed": v, "region": "eu"}})
}

fn totals(s: &Server, as_of: Option<&str>) -> BTreeMap<String, (u64, f64)> {
    common::customer_totals(s, as_of)
        .iter()
        .map(|r| {
            (
                r["customer_id"].as_str().unwrap_or_default().to_string(),
                (r["n"].as_u64().unwrap_or(0), num(&r["v"])),
            )
        })
        .collect()
}

fn plan(s: &Server) -> String {
    let r = s.post_json(
        "/sql",
        &json!({"sql": "EXPLAIN SELECT customer_id, sum(cpu_hours_consumed) FROM compute_events GROUP BY customer_id"}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    r.text
}

/// The latest manifest's files.
fn files(dir: &std::path::Path) -> Vec<Value> {
    let last = manifest_paths(dir).pop().expect("a manifest");
    let m: Value = serde_json::from_slice(&std::fs::read(last).unwrap()).unwrap();
    m["files"].as_array().cloned().unwrap_or_default()
}

/// The value each (customer, timestamp) key holds now.
type Expected = BTreeMap<(usize, i64), f64>;

/// Four days of events, each key once.
fn four_days(s: &Server) -> Expected {
    let mut expected = Expected::new();
    for day in 0..4 {
        let batch: Vec<Value> = (0..500)
            .map(|i| {
                let (c, ts) = (i % 7, BASE + day * DAY + i as i64);
                expected.insert((c, ts), i as f64);
                event(c, ts, i as f64)
            })
            .collect();
        post(s, &batch);
    }
    s.wait_flushed();
    expected
}

/// 1% of the keys (0.5% in round 1) sent again with a new value, spread over every day.
fn correct(s: &Server, expected: &mut Expected, round: usize) {
    let fixes: Vec<Value> = expected
        .keys()
        .copied()
        .enumerate()
        .filter(|(n, _)| n % (100 * (round + 1)) == 3)
        .map(|(n, (c, ts))| event(c, ts, 1000.0 + n as f64 + round as f64))
        .collect();
    for f in &fixes {
        let ts = f["timestamp"].as_i64().unwrap();
        let c: usize = f["customer_id"].as_str().unwrap()[1..].parse().unwrap();
        expected.insert((c, ts), f["data"]["cpu_hours_consumed"].as_f64().unwrap());
    }
    post(s, &fixes);
    s.wait_flushed();
}

/// Each customer's count and sum through `/sql` equal the expected values.
fn check(s: &Server, expected: &Expected, when: &str) {
    let mut want: BTreeMap<String, (u64, f64)> = BTreeMap::new();
    for ((c, _), v) in expected {
        let e = want.entry(format!("c{c}")).or_default();
        e.0 += 1;
        e.1 += v;
    }
    let got = totals(s, None);
    assert_eq!(got.len(), want.len(), "{when}");
    for (c, (n, v)) in &want {
        assert_eq!(got[c].0, *n, "{when}: {c}");
        assert!(
            (got[c].1 - v).abs() < 1e-6,
            "{when}: {c} {} vs {v}",
            got[c].1
        );
    }
}

#[test]
fn replaced_versions_are_masked_and_the_current_data_needs_no_deduplication() {
    let tmp = tempdir();
    let dir = tmp.path().join("data");
    let s = Server::start(
        &dir,
        &["--compaction-interval-secs", "0", "--flush-age-ms", "200"],
    );
    s.create_compute_events();
    let mut expected = four_days(&s);
    let before_corrections = chrono_now();
    for round in 0..2 {
        correct(&s, &mut expected, round);
    }
    let check = |s: &Server, when: &str| check(s, &expected, when);
    check(&s, "after the corrections were persisted");
    // The day files that held the replaced versions carry deletion vectors, and every file
    // is read straight.
    let with_vectors = files(&dir)
        .iter()
        .filter(|f| f.get("deletion_vector").is_some())
        .count();
    assert!(with_vectors >= 4, "{:#}", json!(files(&dir)));
    assert!(
        files(&dir).iter().all(|f| f["live_resolved"] == json!(true)
            || (f["has_duplicate_keys"] == json!(false) && f["shares_keys"] == json!(false))),
        "{:#}",
        json!(files(&dir))
    );
    let p = plan(&s);
    assert!(!p.contains("row_number"), "no deduplication: {p}");
    // `as_of` before the corrections sees the original values (every version read).
    let original = totals(&s, Some(&before_corrections));
    assert_eq!(original.values().map(|(n, _)| n).sum::<u64>(), 2000);
    let sum: f64 = original.values().map(|(_, v)| v).sum();
    assert!(
        (sum - 4.0 * (0..500).sum::<i64>() as f64).abs() < 1e-6,
        "{sum}"
    );
    // Compaction merges each day's versions and masks the replaced ones again; so does a
    // restart change nothing.
    compact(&s);
    check(&s, "after compaction");
    assert!(!plan(&s).contains("row_number"));
    let mut s = s;
    s.terminate();
    s.spawn();
    check(&s, "after a restart");
    assert!(!plan(&s).contains("row_number"));
    assert_eq!(totals(&s, Some(&before_corrections)), original);
}

/// Corrections a persist does not compare itself (here it may read no older rows at all;
/// in production, more than a million) are compared by the compaction pass the persist
/// wakes, a moment later, not at the next interval (an hour here): first into compacted
/// files the pass leaves as they are (it rewrites only the corrections, and the older files
/// become clean by their masks), then into the day files the first pass wrote.
#[test]
fn corrections_a_persist_leaves_are_compared_by_the_pass_it_wakes() {
    let tmp = tempdir();
    let dir = tmp.path().join("data");
    let s = Server::start(
        &dir,
        &[
            "--compaction-interval-secs",
            "3600",
            "--compaction-resolve-delay-ms",
            "100",
            "--persist-compare-rows",
            "0",
            "--flush-age-ms",
            "200",
        ],
    );
    s.create_compute_events();
    let mut expected = four_days(&s);
    compact(&s);
    for round in 0..2 {
        correct(&s, &mut expected, round);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while plan(&s).contains("row_number") {
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: no pass compared the corrections: {:#}",
                json!(
                    files(&dir)
                        .iter()
                        .map(|f| json!([
                            f["path"].as_str().unwrap_or("").rsplit('/').next(),
                            f["rows"],
                            f["min_ts"],
                            f["max_ts"],
                            f["has_duplicate_keys"],
                            f["shares_keys"],
                            f["live_resolved"],
                            f["deletion_vector"]["cardinality"]
                        ]))
                        .collect::<Vec<_>>()
                )
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        check(
            &s,
            &expected,
            &format!("round {round}: after the woken pass"),
        );
    }
}

fn chrono_now() -> String {
    std::thread::sleep(std::time::Duration::from_millis(5));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let t = chrono::DateTime::from_timestamp(now.as_secs() as i64, now.subsec_nanos()).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}
