#![no_main]
//! Timestamp and date parsers on arbitrary bytes.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| meterbase_schema::fuzzing::check_timestamp(data));
