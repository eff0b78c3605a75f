//! Timestamp and date parsing for the forms the contract accepts. Hand-written because it sits
//! on the ingest hot path and must reject everything it does not name (no locale, no guessing).

/// Microseconds since the Unix epoch.
pub type Micros = i64;

pub const MICROS_PER_SECOND: i64 = 1_000_000;
pub const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

/// Years accepted anywhere an instant is parsed. Billing events before the epoch are a
/// mistake, and the upper bound keeps every value inside the text forms.
const MIN_YEAR: i64 = 1970;
const MAX_YEAR: i64 = 9999;
/// The first instant past the accepted years, in microseconds.
const END_MICROS: Micros = days_from_civil(MAX_YEAR + 1, 1, 1) * MICROS_PER_DAY;

/// Days since 1970-01-01 of a proleptic Gregorian civil date (Howard Hinnant's algorithm).
pub const fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day number (inverse of `days_from_civil`).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

fn digits(b: &[u8], at: usize, n: usize) -> Option<i64> {
    let s = b.get(at..at + n)?;
    let mut v = 0i64;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + (c - b'0') as i64;
    }
    Some(v)
}

fn parse_date_prefix(b: &[u8]) -> Result<i64, &'static str> {
    let (y, m, d) = match (
        digits(b, 0, 4),
        b.get(4),
        digits(b, 5, 2),
        b.get(7),
        digits(b, 8, 2),
    ) {
        (Some(y), Some(b'-'), Some(m), Some(b'-'), Some(d)) => (y, m as u32, d as u32),
        _ => return Err("expected YYYY-MM-DD"),
    };
    if !(MIN_YEAR..=MAX_YEAR).contains(&y) {
        return Err("year must be between 1970 and 9999");
    }
    if !(1..=12).contains(&m) {
        return Err("month must be 01-12");
    }
    if d == 0 || d > days_in_month(y, m) {
        return Err("day is not in that month");
    }
    Ok(days_from_civil(y, m, d))
}

/// `YYYY-MM-DD` as days since the epoch.
pub fn parse_date(text: &str) -> Result<i32, &'static str> {
    let b = text.as_bytes();
    if b.len() != 10 {
        return Err("expected YYYY-MM-DD");
    }
    parse_date_prefix(b).map(|d| d as i32)
}

/// RFC 3339 (`Z` or `±HH:MM`), or `YYYY-MM-DD[ T]HH:MM:SS[.f{1,9}]` read as UTC.
/// Fractions beyond microseconds are truncated: instants are stored in microseconds.
pub fn parse_timestamp(text: &str) -> Result<Micros, &'static str> {
    let b = text.as_bytes();
    if b.len() < 19 {
        return Err("expected YYYY-MM-DDTHH:MM:SS with optional fraction and offset");
    }
    let days = parse_date_prefix(b)?;
    if b[10] != b'T' && b[10] != b' ' && b[10] != b't' {
        return Err("expected 'T' or ' ' between date and time");
    }
    let (h, mi, s) = match (
        digits(b, 11, 2),
        b.get(13),
        digits(b, 14, 2),
        b.get(16),
        digits(b, 17, 2),
    ) {
        (Some(h), Some(b':'), Some(mi), Some(b':'), Some(s)) => (h, mi, s),
        _ => return Err("expected HH:MM:SS"),
    };
    if h > 23 || mi > 59 || s > 59 {
        return Err("time of day out of range");
    }
    let mut pos = 19;
    let mut micros = 0i64;
    if b.get(pos) == Some(&b'.') {
        pos += 1;
        let start = pos;
        while pos < b.len() && b[pos].is_ascii_digit() {
            if pos - start < 6 {
                micros = micros * 10 + (b[pos] - b'0') as i64;
            }
            pos += 1;
        }
        let n = pos - start;
        if n == 0 || n > 9 {
            return Err("fraction must have 1 to 9 digits");
        }
        for _ in n..6 {
            micros *= 10;
        }
    }
    let offset_secs = match &b[pos..] {
        [] => 0,
        [b'Z'] | [b'z'] => 0,
        [sign @ (b'+' | b'-'), rest @ ..] => {
            let (oh, om) = match rest {
                [_, _, b':', _, _] => (digits(rest, 0, 2), digits(rest, 3, 2)),
                [_, _, _, _] => (digits(rest, 0, 2), digits(rest, 2, 2)),
                _ => (None, None),
            };
            match (oh, om) {
                (Some(oh), Some(om)) if oh <= 23 && om <= 59 => {
                    let o = oh * 3600 + om * 60;
                    if *sign == b'-' { -o } else { o }
                }
                _ => return Err("offset must be Z or +HH:MM / -HH:MM"),
            }
        }
        _ => return Err("unexpected characters after the time"),
    };
    let secs = days * 86_400 + h * 3600 + mi * 60 + s - offset_secs;
    // A negative offset on 9999-12-31 names an instant in the year 10000, which no text form
    // can write back (found by the `timestamp` fuzz target).
    check_micros(secs * MICROS_PER_SECOND + micros)
}

/// A JSON number read as Unix epoch seconds, fraction allowed (microsecond resolution).
pub fn parse_epoch_seconds(text: &str) -> Result<Micros, &'static str> {
    let v: f64 = text.parse().map_err(|_| "not a number")?;
    if !v.is_finite() {
        return Err("epoch seconds must be finite");
    }
    let max = (END_MICROS / MICROS_PER_SECOND) as f64;
    if !(0.0..max).contains(&v) {
        return Err("epoch seconds out of range (1970 to 9999)");
    }
    // Integral seconds are exact; only the fraction goes through f64.
    let (int_part, frac_part) = match text.split_once('.') {
        Some((i, f)) if !text.contains(['e', 'E']) => (i, Some(f)),
        _ => return Ok((v * 1e6).round() as i64),
    };
    let secs: i64 = int_part.parse().map_err(|_| "not a number")?;
    let mut micros = 0i64;
    let fb = frac_part.unwrap_or("").as_bytes();
    for i in 0..6 {
        micros = micros * 10 + fb.get(i).map_or(0, |c| (c - b'0') as i64);
    }
    Ok(secs * MICROS_PER_SECOND + micros)
}

/// An instant that arrived as a number of microseconds (an Arrow timestamp column), held to
/// the years the text forms can name.
pub fn check_micros(us: Micros) -> Result<Micros, &'static str> {
    if us < 0 {
        return Err("instant is before 1970-01-01T00:00:00Z");
    }
    if us >= END_MICROS {
        return Err("instant is after the year 9999");
    }
    Ok(us)
}

/// A query-parameter instant: any timestamp form of the contract, or a plain `YYYY-MM-DD`
/// meaning midnight UTC (as the usage endpoint reads dates without a `tz`).
pub fn parse_instant_utc(text: &str) -> Result<Micros, &'static str> {
    if text.len() == 10
        && let Ok(days) = parse_date(text)
    {
        return Ok(i64::from(days) * 86_400 * MICROS_PER_SECOND);
    }
    parse_timestamp(text)
}

/// RFC 3339 with `Z` and microseconds, the form every response uses.
pub fn format_micros(us: Micros) -> String {
    let secs = us.div_euclid(MICROS_PER_SECOND);
    let frac = us.rem_euclid(MICROS_PER_SECOND);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let base = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    );
    if frac == 0 {
        format!("{base}Z")
    } else {
        format!("{base}.{frac:06}Z")
    }
}

pub fn format_date(days: i32) -> String {
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn query_instants_take_plain_dates_as_utc_midnight() {
        assert_eq!(
            parse_instant_utc("2025-06-18"),
            parse_timestamp("2025-06-18T00:00:00Z")
        );
        assert_eq!(
            parse_instant_utc("2025-06-18T01:02:03Z"),
            parse_timestamp("2025-06-18T01:02:03Z")
        );
        assert!(parse_instant_utc("2025-13-18").is_err());
    }

    #[test]
    fn accepted_forms() {
        let base = 1_750_169_000 * MICROS_PER_SECOND; // 2025-06-17T14:03:20Z
        let cases = [
            ("2025-06-17T14:03:20Z", base),
            ("2025-06-17T14:03:20z", base),
            ("2025-06-17 14:03:20", base),
            ("2025-06-17T14:03:20", base),
            ("2025-06-17T14:03:20.5Z", base + 500_000),
            ("2025-06-17T14:03:20.123456789Z", base + 123_456),
            ("2025-06-17T16:03:20+02:00", base),
            ("2025-06-17T13:03:20-0100", base),
            ("2025-06-17 14:03:20.731", base + 731_000),
        ];
        for (text, want) in cases {
            assert_eq!(parse_timestamp(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn rejected_forms() {
        for bad in [
            "",
            "2025-06-17",
            "2025-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2025-06-17T24:00:00Z",
            "2025-06-17T14:03:60Z",
            "2025-06-17T14:03:20.Z",
            "2025-06-17T14:03:20.1234567890Z",
            "2025-06-17T14:03:20+2:00",
            "2025-06-17T14:03:20 UTC",
            "1969-12-31T23:59:59Z",
            "1970-01-01T00:59:59+01:00",
            "9999-12-31T23:12:12.12025-06:21",
            "17/06/2025 14:03:20",
            "2025-06-17T14:03:20Z ",
        ] {
            assert!(parse_timestamp(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_date("2024-02-29"), Ok(19_782));
        assert!(parse_date("2023-02-29").is_err());
    }

    #[test]
    fn epoch_numbers() {
        assert_eq!(parse_epoch_seconds("1750169000"), Ok(1_750_169_000_000_000));
        assert_eq!(
            parse_epoch_seconds("1750169000.25"),
            Ok(1_750_169_000_250_000)
        );
        assert_eq!(parse_epoch_seconds("1.75e9"), Ok(1_750_000_000_000_000));
        assert!(parse_epoch_seconds("-1").is_err());
        assert!(parse_epoch_seconds("1e400").is_err());
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(us in 0i64..253_402_300_799_000_000) {
            prop_assert_eq!(parse_timestamp(&format_micros(us)), Ok(us));
        }

        #[test]
        fn civil_round_trips(days in 0i64..2_932_896) {
            let (y, m, d) = civil_from_days(days);
            prop_assert_eq!(days_from_civil(y, m, d), days);
        }

        #[test]
        fn never_panics(s in ".{0,40}") {
            let _ = parse_timestamp(&s);
            let _ = parse_date(&s);
            let _ = parse_epoch_seconds(&s);
        }
    }
}
