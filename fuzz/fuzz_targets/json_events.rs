#![no_main]
//! The JSON event decoder on arbitrary bytes.
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use meterbase_schema::EventDecoder;
use meterbase_schema::fuzzing::{check_json, decoder};

static DECODER: LazyLock<EventDecoder> = LazyLock::new(decoder);

fuzz_target!(|data: &[u8]| check_json(&DECODER, data));
