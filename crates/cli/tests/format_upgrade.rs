//! A data directory written by the build before formats were versioned (commit 8606a31:
//! catalog, write-ahead log, manifests and Parquet files under `testdata/formats/v0-data`)
//! is served by today's binary with the very answer the old build gave, also after today's
//! compaction rewrites it and after a restart.

mod common;

use std::path::Path;

use common::{Server, compact, tempdir};
use serde_json::Value;

const QUERY: &str = "select customer_id, timestamp, cpu, region, calls, flag, amount, day, seen \
                     from golden order by customer_id, timestamp";

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[test]
fn an_old_data_directory_answers_as_the_old_build_did() {
    let fixture = common::repo().join("testdata/formats/v0-data");
    let old_answer: Vec<Value> = std::fs::read_to_string(fixture.join("answer.ndjson"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(old_answer.len(), 122);
    let tmp = tempdir();
    let dir = tmp.path().join("data");
    copy_dir(&fixture, &dir);
    std::fs::remove_file(dir.join("answer.ndjson")).unwrap();
    let mut s = Server::start(&dir, &["--compaction-interval-secs", "0"]);
    assert_eq!(s.sql(QUERY), old_answer, "as the old build answered");
    // The first event again, unchanged: a new version of its key that a merge with the old
    // compacted file must settle.
    let again = serde_json::json!({"customer_id": "c1", "timestamp": "2025-01-01T00:00:00Z",
        "data": {"cpu": 0.0, "region": "eu", "calls": 0, "flag": true, "amount": "0.0000",
                 "day": "2025-01-01", "seen": "2025-01-01T00:00:00Z"}});
    let r = s.post_json("/usage/golden", &again);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(s.sql(QUERY), old_answer, "with a new version of a key");
    s.wait_flushed();
    let c = compact(&s);
    assert!(c["files_in"].as_u64().unwrap() >= 2, "{c}");
    assert_eq!(s.sql(QUERY), old_answer, "after today's compaction");
    s.terminate();
    s.spawn();
    assert_eq!(s.sql(QUERY), old_answer, "after a restart");
}
