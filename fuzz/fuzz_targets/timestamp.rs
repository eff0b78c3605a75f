#![no_main]
//! Timestamp and date parsers: never panic; whatever parses formats back to the same instant.
use libfuzzer_sys::fuzz_target;
use meterbase_schema::timestamp::{
    format_micros, parse_date, parse_epoch_seconds, parse_timestamp,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(us) = parse_timestamp(text) {
        assert_eq!(parse_timestamp(&format_micros(us)), Ok(us));
    }
    let _ = parse_date(text);
    let _ = parse_epoch_seconds(text);
});
