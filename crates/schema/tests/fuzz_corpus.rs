//! Replays the committed fuzzing corpus (`testdata/fuzz/<target>/*`) through the checks the
//! fuzz targets in `fuzz/` make, so `make test` guards every input that ever mattered without
//! a fuzzing toolchain.

#[path = "../../../testdata/fuzz/replay.rs"]
mod replay;

use meterbase_schema::fuzzing::{
    check_arrow_stream, check_csv, check_json, check_ndjson, check_parquet, check_timestamp,
    check_zuora, decoder,
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

#[test]
fn parquet_body_corpus() {
    let dec = decoder();
    corpus("parquet_body")
        .iter()
        .for_each(|input| check_parquet(&dec, input));
}

/// The valid seeds decode, whatever their codec: a Parquet body written by pyarrow, DuckDB or
/// Spark (snappy by default; zstd, gzip, lz4 often) is read, not refused for its compression.
#[test]
fn parquet_seeds_of_every_codec_decode() {
    let dec = decoder();
    for name in [
        "seed-minimal-snappy.parquet",
        "seed-all-fields-zstd.parquet",
        "seed-all-fields-none-dict.parquet",
        "seed-lz4-v1-pages.parquet",
        "seed-gzip-rowgroups.parquet",
    ] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../testdata/fuzz/parquet_body")
            .join(name);
        let body = bytes::Bytes::from(std::fs::read(&path).unwrap());
        let outcome = meterbase_schema::decode_parquet(
            &dec,
            body,
            &meterbase_schema::CsvOptions::default(),
            meterbase_schema::fuzzing::limits(),
        );
        assert!(
            matches!(outcome, meterbase_schema::DecodeOutcome::Valid(_)),
            "{name}: {outcome:?}"
        );
    }
}

/// The fuzz target's findings: footers declaring lists or maps of booleans that parquet-rs 59
/// skips without reading a byte per element (138 ms of a release server's CPU for 1.8 KB; a
/// 32 MiB body of such lists could take hours). The first is refused by the walk by wire
/// types, naming the list; the second (parquet-rs reads a known field by its schema type and
/// meets the map from another byte) by parquet 60's reading of the footer. The third is a page
/// header whose statistics hold an unknown field, a list of six booleans: parquet-rs 59 skips
/// them without reading their six bytes, reads the rest from the wrong place and skips nested
/// lists of doubles past the body's end, each element an empty `io::copy` (1.3 s of a release
/// server for 2.7 KB). Collections of booleans, which no Parquet structure holds, are refused.
#[test]
fn footers_declaring_more_elements_than_bytes_are_refused() {
    for (name, says) in [
        (
            "finding-bool-list-spin",
            "its footer holds a collection of booleans",
        ),
        (
            "finding-type-confused-map-spin",
            "not a readable Parquet file: its footer: ",
        ),
        (
            "finding-page-header-bool-list-skip",
            "holds a collection of booleans",
        ),
    ] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../testdata/fuzz/parquet_body")
            .join(name);
        let body = bytes::Bytes::from(std::fs::read(&path).unwrap());
        let outcome = meterbase_schema::decode_parquet(
            &decoder(),
            body,
            &meterbase_schema::CsvOptions::default(),
            meterbase_schema::fuzzing::limits(),
        );
        let meterbase_schema::DecodeOutcome::Invalid { errors, .. } = &outcome else {
            panic!("{name}: {outcome:?}");
        };
        assert!(errors[0].message.contains(says), "{name}: {errors:?}");
        eprintln!("{name}: {}", errors[0].message);
    }
}
