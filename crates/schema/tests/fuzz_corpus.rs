//! Replays the committed fuzzing corpus (`testdata/fuzz/<target>/*`) through the checks the
//! fuzz targets in `fuzz/` make, so `make test` guards every input that ever mattered without
//! a fuzzing toolchain.

#[path = "../../../testdata/fuzz/replay.rs"]
mod replay;

use meterbase_schema::fuzzing::{
    check_arrow_stream, check_csv, check_json, check_ndjson, check_timestamp, check_zuora, decoder,
};
use replay::corpus;

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

#[test]
fn zuora_bulk_corpus() {
    let dec = decoder();
    corpus("zuora_bulk")
        .iter()
        .for_each(|input| check_zuora(&dec, input));
}

#[test]
fn arrow_stream_corpus() {
    let dec = decoder();
    corpus("arrow_stream")
        .iter()
        .for_each(|input| check_arrow_stream(&dec, input));
}
