//! The fault suite through the real server: an object store that is down, slow, failing or
//! losing replies; a failing fsync; corrupted files and manifests. Every acknowledged event
//! ends up visible exactly once; nothing unacknowledged does; corruption fails loudly.

mod common;

use std::time::{Duration, Instant};

use common::{
    Server, compact, customer_totals, manifest_paths, metric, num, parquet_files, tempdir,
};
use serde_json::{Value, json};

const T0: i64 = 1_735_689_600;

fn faults(s: &Server, body: Value) {
    let r = s.admin("POST", "/admin/faults", Some(&body));
    assert_eq!(r.status, 204, "{}", r.text);
}

fn batch(from: i64, n: i64) -> Value {
    Value::Array(
        (from..from + n)
            .map(|i| json!({"customer_id": format!("c{}", i % 7), "timestamp": T0 + i, "data": {"cpu_hours_consumed": 1, "region": "r"}}))
            .collect(),
    )
}

fn count(s: &Server) -> u64 {
    customer_totals(s, None)
        .iter()
        .map(|r| r["n"].as_u64().unwrap())
        .sum()
}

#[test]
fn a_store_outage_keeps_acknowledging_then_refuses_then_catches_up_exactly_once() {
    let dir = tempdir();
    let mut s = Server::start(
        &dir.path().join("d"),
        &[
            "--fault-injection",
            "--flush-age-ms",
            "100",
            "--max-buffer-bytes",
            "3000000",
        ],
    );
    s.create_compute_events();
    faults(&s, json!({"outage": true}));
    let mut acked = 0i64;
    let mut refused = None;
    for i in 0..200 {
        let r = s.post_json("/usage/compute_events", &batch(i * 1000, 1000));
        match r.status {
            200 => acked += 1000,
            503 => {
                assert!(r.header("retry-after").is_some(), "503 without Retry-After");
                assert!(
                    r.header("content-type")
                        .is_some_and(|c| c.starts_with("application/problem+json"))
                );
                refused = Some(i);
                break;
            }
            other => panic!("{other}: {}", r.text),
        }
    }
    let refused = refused.expect("the buffer never filled while the store was down");
    assert!(acked > 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&s, "meterbase_flush_failures_total") < 1.0 {
        assert!(Instant::now() < deadline, "no persist was attempted");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Everything acknowledged is already visible, from memory.
    assert_eq!(count(&s), acked as u64);
    faults(&s, json!({"outage": false}));
    s.wait_flushed();
    assert_eq!(count(&s), acked as u64);
    // Writes are accepted again.
    let r = s.post_json("/usage/compute_events", &batch(refused * 1000, 1000));
    assert_eq!(r.status, 200, "{}", r.text);
    acked += 1000;
    s.restart();
    assert_eq!(count(&s), acked as u64);
}

#[test]
fn failed_puts_lost_replies_and_a_slow_store_never_lose_or_duplicate() {
    let dir = tempdir();
    let mut s = Server::start(
        &dir.path().join("d"),
        &[
            "--fault-injection",
            "--flush-age-ms",
            "50",
            "--compaction-interval-secs",
            "0",
            "--compaction-grace-secs",
            "0",
        ],
    );
    s.create_compute_events();
    let mut acked = 0;
    for (round, fault) in [
        json!({"fail_puts": 2}),
        json!({"lose_put_responses": 1}),
        json!({"lose_put_responses": 2}),
        json!({"latency_ms": 100}),
        json!({"latency_ms": 0, "timeout_puts": 2, "timeout_ms": 300}),
        json!({"latency_ms": 0, "lose_put_responses": 3}),
    ]
    .into_iter()
    .enumerate()
    {
        faults(&s, fault);
        for k in 0..3 {
            let from = (round as i64 * 3 + k) * 500;
            let r = s.post_json("/usage/compute_events", &batch(from, 500));
            assert_eq!(r.status, 200, "{}", r.text);
            acked += 500;
        }
        s.wait_flushed();
        assert_eq!(count(&s), acked, "round {round}");
    }
    // A compaction whose manifest reply is lost is adopted, not repeated.
    let before = customer_totals(&s, None);
    faults(&s, json!({"lose_put_responses": 2}));
    let _ = s.admin("POST", "/admin/compact", None);
    faults(&s, json!({"lose_put_responses": 0}));
    compact(&s);
    assert_eq!(customer_totals(&s, None), before);
    s.restart();
    assert_eq!(customer_totals(&s, None), before);
    assert_eq!(count(&s), acked);
}

#[test]
fn a_failed_fsync_acknowledges_nothing_more_and_restart_replays_cleanly() {
    let dir = tempdir();
    let mut s = Server::start(&dir.path().join("d"), &["--fault-injection"]);
    s.create_compute_events();
    assert_eq!(
        s.post_json("/usage/compute_events", &batch(0, 100)).status,
        200
    );
    faults(&s, json!({"wal_sync_failures": 1}));
    let r = s.post_json("/usage/compute_events", &batch(100, 100));
    assert_eq!(r.status, 500, "{}", r.text);
    // The log refuses everything after a failed sync, even once syncs would work again.
    let r = s.post_json("/usage/compute_events", &batch(200, 100));
    assert_eq!(r.status, 500, "{}", r.text);
    assert!(
        r.body["detail"].as_str().unwrap().contains("restart"),
        "{}",
        r.text
    );
    assert_eq!(metric(&s, "meterbase_wal_poisoned"), 1.0);
    s.restart();
    // The failed group was written but never acknowledged: replay may keep it (it is in the
    // log) but never anything the client was not told about beyond it.
    let n = count(&s);
    assert!(n == 100 || n == 200, "{n} rows after replay");
    let r = s.post_json("/usage/compute_events", &batch(300, 100));
    assert_eq!(r.status, 200, "{}", r.text);
}

#[test]
fn corrupted_files_and_manifests_fail_loudly_naming_the_file() {
    let dir = tempdir();
    let data = dir.path().join("d");
    let mut s = Server::start(&data, &["--flush-age-ms", "50"]);
    s.create_compute_events();
    assert_eq!(
        s.post_json("/usage/compute_events", &batch(0, 5000)).status,
        200
    );
    s.wait_flushed();
    let total = count(&s);
    s.terminate();
    // One flipped byte in the middle of the Parquet file.
    let files = parquet_files(&data);
    assert_eq!(files.len(), 1);
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&files[0], &bytes).unwrap();
    s.spawn();
    let r = s.post_json(
        "/sql",
        &json!({"sql": "SELECT sum(cpu_hours_consumed) AS v FROM compute_events"}),
    );
    assert!(r.status >= 500, "{}: {}", r.status, r.text);
    let name = files[0].file_name().unwrap().to_string_lossy().to_string();
    assert!(r.text.contains(&name), "{}", r.text);
    // Repaired, the same query answers again.
    bytes[mid] ^= 0x01;
    std::fs::write(&files[0], &bytes).unwrap();
    s.restart();
    assert_eq!(count(&s), total);
    s.terminate();
    // A flipped digit in the newest manifest: the server refuses to start, naming it.
    let manifests = manifest_paths(&data);
    let newest = manifests.last().unwrap().clone();
    let text = std::fs::read_to_string(&newest).unwrap();
    let at = text.find("\"rows\":").unwrap() + 7;
    let mut b = text.into_bytes();
    b[at] = if b[at] == b'9' { b'8' } else { b'9' };
    std::fs::write(&newest, &b).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meterbase"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let manifest_name = newest.file_name().unwrap().to_string_lossy().to_string();
    assert!(
        stderr.contains(&manifest_name) && stderr.contains("checksum"),
        "{stderr}"
    );
}

#[test]
fn a_full_disk_refuses_writes_with_507_and_recovers_without_a_restart() {
    // Needs a small filesystem of its own: a tmpfs, which needs root (CI runs as root).
    let dir = tempdir();
    let mount = dir.path().join("small");
    std::fs::create_dir_all(&mount).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
        .arg(&mount)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("SKIPPED: cannot mount a tmpfs here (not root?)");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(mount.clone());
    let data = mount.join("d");
    let mut s = Server::start(&data, &["--flush-age-ms", "100"]);
    s.create_compute_events();
    // Fill the disk: a ballast file takes most of it, the log takes the rest.
    let ballast = mount.join("ballast");
    let _ = std::process::Command::new("fallocate")
        .args(["-l", "18m"])
        .arg(&ballast)
        .status();
    let mut acked = 0u64;
    let mut full = false;
    let started = Instant::now();
    let mut i = 0;
    while started.elapsed() < Duration::from_secs(60) {
        let r = s.post_json("/usage/compute_events", &batch(i * 2000, 2000));
        i += 1;
        match r.status {
            200 => acked += 2000,
            507 | 503 => {
                eprintln!("disk full: {} {}", r.status, r.text);
                assert!(
                    r.header("content-type")
                        .is_some_and(|c| c.starts_with("application/problem+json")),
                    "{}",
                    r.text
                );
                assert!(r.header("retry-after").is_some());
                full = true;
                break;
            }
            other => panic!("{other}: {}", r.text),
        }
    }
    assert!(full, "the disk never filled");
    assert_eq!(count(&s), acked);
    // Space comes back: the same server accepts writes again, no restart.
    std::fs::remove_file(&ballast).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = s.post_json("/usage/compute_events", &batch(i * 2000, 2000));
        if r.status == 200 {
            acked += 2000;
            break;
        }
        assert!(Instant::now() < deadline, "never recovered: {}", r.text);
        std::thread::sleep(Duration::from_millis(200));
    }
    s.wait_flushed();
    assert_eq!(count(&s), acked);
    s.restart();
    assert_eq!(count(&s), acked);
    let v: f64 = customer_totals(&s, None).iter().map(|r| num(&r["v"])).sum();
    assert_eq!(v as u64, acked);
}

#[test]
fn a_deletion_whose_count_fails_still_says_it_is_applied() {
    let dir = tempdir();
    // Without the read cache: warm, it would answer the count without the store.
    let s = Server::start(
        &dir.path().join("d"),
        &[
            "--fault-injection",
            "--flush-age-ms",
            "50",
            "--cache-bytes",
            "0",
        ],
    );
    s.create_compute_events();
    let r = s.post_json("/usage/compute_events", &batch(0, 700));
    assert_eq!(r.status, 200, "{}", r.text);
    s.wait_flushed();
    assert_eq!(count(&s), 700);
    // The deletion goes through the log; counting what it covers needs the (down) store.
    faults(&s, json!({"outage": true}));
    let r = s.delete("/usage/compute_events/events?customer_id=c3");
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.body["deleted"].is_null(), "{}", r.text);
    let why = r.body["count_error"].as_str().unwrap_or_default();
    assert!(why.contains("the deletion is applied"), "{}", r.text);
    faults(&s, json!({"outage": false}));
    assert_eq!(count(&s), 600, "customer c3's 100 rows are gone");
}
