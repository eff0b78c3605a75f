#![no_main]
//! The NDJSON splitter and decoder on arbitrary bytes.
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use meterbase_schema::EventDecoder;
use meterbase_schema::fuzzing::{check_ndjson, decoder};

static DECODER: LazyLock<EventDecoder> = LazyLock::new(decoder);

fuzz_target!(|data: &[u8]| check_ndjson(&DECODER, data));
