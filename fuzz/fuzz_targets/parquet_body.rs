#![no_main]
//! A Parquet body of `POST /usage/{slug}` (footer, page headers, every codec the build reads →
//! schema matching → cells through the JSON rules) on arbitrary bytes.
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use meterbase_schema::EventDecoder;
use meterbase_schema::fuzzing::{check_parquet, decoder};

static DECODER: LazyLock<EventDecoder> = LazyLock::new(decoder);

fuzz_target!(|data: &[u8]| check_parquet(&DECODER, data));
