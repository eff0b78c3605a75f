//! Replays the committed fuzzing corpus (`testdata/fuzz/<target>/*`) through the checks the
//! fuzz targets in `fuzz/` make, so `make test` guards every input that ever mattered without
//! a fuzzing toolchain.

use std::path::PathBuf;

use meterbase_schema::fuzzing::{check_csv, check_json, check_ndjson, check_timestamp, decoder};

fn corpus(target: &str) -> Vec<Vec<u8>> {
    // Read at run time (cargo sets it for tests): a build cache shared by two checkouts
    // may run a binary compiled in the other one.
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let dir = manifest_dir.join("../../testdata/fuzz").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus {}", dir.display());
    files
        .into_iter()
        .map(|f| std::fs::read(f).unwrap())
        .collect()
}

#[test]
fn json_events_corpus() {
    let dec = decoder();
    corpus("json_events")
        .iter()
        .for_each(|input| check_json(&dec, input));
}

#[test]
fn ndjson_events_corpus() {
    let dec = decoder();
    corpus("ndjson_events")
        .iter()
        .for_each(|input| check_ndjson(&dec, input));
}

#[test]
fn timestamp_corpus() {
    corpus("timestamp")
        .iter()
        .for_each(|input| check_timestamp(input));
}

#[test]
fn csv_rows_corpus() {
    let dec = decoder();
    corpus("csv_rows")
        .iter()
        .for_each(|input| check_csv(&dec, input));
}
