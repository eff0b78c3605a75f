//! Replays the committed fuzzing corpus (`testdata/fuzz/<target>/*`) through the same checks
//! the fuzz targets in `fuzz/` make, so `make test` guards every input that ever mattered
//! without needing a fuzzing toolchain.

use std::path::PathBuf;

use chrono::Utc;
use meterbase_schema::timestamp::{
    format_micros, parse_date, parse_epoch_seconds, parse_timestamp,
};
use meterbase_schema::{
    DecodeLimits, DecodeOutcome, EventDecoder, EventTypeDef, EventTypeSpec, InputFormat,
    split_ndjson,
};

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/fuzz")
        .join(target);
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

fn decoder() -> EventDecoder {
    let spec: EventTypeSpec = serde_json::from_str(
        r#"{"name":"fuzz","dataschema":{"data":{
            "f":"Float64","d":"Nullable(Decimal(12,3))","i":"Nullable(Int16)","u":"Nullable(UInt64)",
            "s":"Nullable(String)","b":"Nullable(Bool)","day":"Nullable(Date)","at":"Nullable(DateTime64)",
            "id":"Nullable(UUID)"}}}"#,
    )
    .unwrap();
    EventDecoder::new(&EventTypeDef::from_spec(spec, "fuzz".into(), Utc::now()).unwrap()).unwrap()
}

fn limits() -> DecodeLimits {
    DecodeLimits {
        max_events: 1000,
        now: 1_750_000_000_000_000,
        ..DecodeLimits::default()
    }
}

#[test]
fn json_events_corpus() {
    let dec = decoder();
    for input in corpus("json_events") {
        if let DecodeOutcome::Valid(batch) = dec.decode(&input, InputFormat::Json, limits()) {
            assert_eq!(batch.num_columns(), dec.schema().fields().len());
        }
    }
}

#[test]
fn ndjson_events_corpus() {
    let dec = decoder();
    for input in corpus("ndjson_events") {
        let lines = input.split(|b| *b == b'\n').count();
        let non_blank = split_ndjson(&input).count();
        match dec.decode(&input, InputFormat::Ndjson, limits()) {
            DecodeOutcome::Valid(batch) => assert_eq!(batch.num_rows(), non_blank),
            DecodeOutcome::Invalid { errors, .. } => {
                assert!(
                    errors
                        .iter()
                        .all(|e| e.line.is_some_and(|l| l >= 1 && l <= lines))
                )
            }
            DecodeOutcome::TooManyEvents { .. } => {}
        }
    }
}

#[test]
fn timestamp_corpus() {
    for input in corpus("timestamp") {
        let Ok(text) = std::str::from_utf8(&input) else {
            continue;
        };
        if let Ok(us) = parse_timestamp(text) {
            assert_eq!(parse_timestamp(&format_micros(us)), Ok(us));
        }
        let _ = parse_date(text);
        let _ = parse_epoch_seconds(text);
    }
}
