#![no_main]
//! A table manifest as read back from the object store.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| meterbase_storage::fuzzing::check_manifest(data));
