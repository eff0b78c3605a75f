#![no_main]
//! The CSV reader (header matching, chunking, cell parsing) on arbitrary bytes.
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use meterbase_schema::EventDecoder;
use meterbase_schema::fuzzing::{check_csv, decoder};

static DECODER: LazyLock<EventDecoder> = LazyLock::new(decoder);

fuzz_target!(|data: &[u8]| check_csv(&DECODER, data));
