#![no_main]
//! The JSON event decoder on arbitrary bytes: it must never panic, and an accepted body must
//! produce exactly as many rows as it has events.
use libfuzzer_sys::fuzz_target;
use meterbase_schema::{DecodeOutcome, InputFormat};

mod common;

fuzz_target!(|data: &[u8]| {
    let dec = common::decoder();
    if let DecodeOutcome::Valid(batch) = dec.decode(data, InputFormat::Json, common::limits()) {
        assert_eq!(batch.num_columns(), dec.schema().fields().len());
    }
});
