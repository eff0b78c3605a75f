#![no_main]
//! `POST /usage/bulk/{slug}` bodies: the Zuora shape rewritten to NDJSON, then decoded.
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use meterbase_schema::EventDecoder;
use meterbase_schema::fuzzing::{check_zuora, decoder};

static DECODER: LazyLock<EventDecoder> = LazyLock::new(decoder);

fuzz_target!(|data: &[u8]| check_zuora(&DECODER, data));
