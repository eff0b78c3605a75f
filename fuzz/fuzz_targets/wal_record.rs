#![no_main]
//! A write-ahead log record's payload, as replay hands it to the storage decoder.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| meterbase_storage::fuzzing::check_wal_record(data));
