//! Replays the committed corpus of the storage fuzz targets (`wal_record`, `manifest`).

#[path = "../../../testdata/fuzz/replay.rs"]
mod replay;

use meterbase_storage::fuzzing::{check_manifest, check_wal_record};
use replay::corpus;

#[test]
fn wal_record_corpus() {
    corpus("wal_record")
        .iter()
        .for_each(|input| check_wal_record(input));
}

#[test]
fn manifest_corpus() {
    corpus("manifest")
        .iter()
        .for_each(|input| check_manifest(input));
}
