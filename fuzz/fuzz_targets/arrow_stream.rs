#![no_main]
//! The columnar decoder (Arrow IPC stream → schema matching → cells through the JSON rules) on
//! arbitrary bytes.
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use meterbase_schema::EventDecoder;
use meterbase_schema::fuzzing::{check_arrow_stream, decoder};

static DECODER: LazyLock<EventDecoder> = LazyLock::new(decoder);

fuzz_target!(|data: &[u8]| check_arrow_stream(&DECODER, data));
