#![no_main]
//! The NDJSON splitter and decoder: never panic; every reported line exists.
use libfuzzer_sys::fuzz_target;
use meterbase_schema::{DecodeOutcome, InputFormat, split_ndjson};

mod common;

fuzz_target!(|data: &[u8]| {
    let lines = data.split(|b| *b == b'\n').count();
    let non_blank = split_ndjson(data).count();
    assert!(non_blank <= lines);
    match common::decoder().decode(data, InputFormat::Ndjson, common::limits()) {
        DecodeOutcome::Valid(batch) => assert_eq!(batch.num_rows(), non_blank),
        DecodeOutcome::Invalid { errors, .. } => {
            assert!(
                errors
                    .iter()
                    .all(|e| e.line.is_some_and(|l| l >= 1 && l <= lines))
            );
        }
        DecodeOutcome::TooManyEvents { .. } => {}
    }
});
