#![no_main]
//! The usage endpoint's period parameters: start, end, window and time zone.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| meterbase_metrics::fuzzing::check_usage_params(data));
