//! Calendar windows in an IANA time zone: days and months begin at local midnight, across
//! DST transitions.

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;
use meterbase_schema::timestamp::parse_timestamp;

use crate::error::MetricError;

/// The most windows one request may ask for (a year of hours is 8,784).
pub const MAX_WINDOWS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Hour,
    Day,
    Month,
}

impl std::str::FromStr for Window {
    type Err = MetricError;
    fn from_str(s: &str) -> Result<Window, MetricError> {
        match s {
            "hour" => Ok(Window::Hour),
            "day" => Ok(Window::Day),
            "month" => Ok(Window::Month),
            other => Err(MetricError::Invalid(format!(
                "window must be hour, day or month, not {other:?}"
            ))),
        }
    }
}

/// The instant a local wall-clock time names; a time skipped by a DST jump resolves to the
/// first instant after the gap.
fn resolve(tz: Tz, local: NaiveDateTime) -> i64 {
    let mut probe = local;
    for _ in 0..4 {
        match tz.from_local_datetime(&probe) {
            LocalResult::Single(t) => return t.timestamp_micros(),
            LocalResult::Ambiguous(first, _) => return first.timestamp_micros(),
            LocalResult::None => probe += Duration::minutes(30),
        }
    }
    tz.from_utc_datetime(&local).timestamp_micros()
}

fn local(tz: Tz, us: i64) -> NaiveDateTime {
    let utc = DateTime::<Utc>::from_timestamp_micros(us).unwrap_or_default();
    utc.with_timezone(&tz).naive_local()
}

fn bucket_start(us: i64, w: Window, tz: Tz) -> i64 {
    let l = local(tz, us);
    let floored = match w {
        Window::Hour => l.date().and_hms_opt(l.hour(), 0, 0),
        Window::Day => l.date().and_hms_opt(0, 0, 0),
        Window::Month => {
            NaiveDate::from_ymd_opt(l.year(), l.month(), 1).and_then(|d| d.and_hms_opt(0, 0, 0))
        }
    };
    floored.map_or(us, |f| resolve(tz, f))
}

fn next_bucket(start: i64, w: Window, tz: Tz) -> i64 {
    match w {
        // Hours are absolute: a repeated local hour is its own window.
        Window::Hour => {
            // The floor of a repeated local hour resolves to its first occurrence: then the
            // window is simply the next absolute hour.
            let n = bucket_start(start + 3_600_000_000, w, tz);
            if n <= start { start + 3_600_000_000 } else { n }
        }
        Window::Day => {
            let d = local(tz, start).date() + Duration::days(1);
            d.and_hms_opt(0, 0, 0)
                .map_or(start + 86_400_000_000, |n| resolve(tz, n))
        }
        Window::Month => {
            let l = local(tz, start).date();
            let (y, m) = if l.month() == 12 {
                (l.year() + 1, 1)
            } else {
                (l.year(), l.month() + 1)
            };
            NaiveDate::from_ymd_opt(y, m, 1)
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map_or(start + 28 * 86_400_000_000, |n| resolve(tz, n))
        }
    }
}

/// `[start, end)` cut at every window boundary of `tz`; the first and last pieces may be
/// partial windows.
pub fn windows(start: i64, end: i64, w: Window, tz: Tz) -> Result<Vec<(i64, i64)>, MetricError> {
    let mut out = Vec::new();
    let mut b = bucket_start(start, w, tz);
    while b < end {
        let next = next_bucket(b, w, tz);
        if next <= b {
            return Err(MetricError::Invalid(
                "could not compute windows in that time zone".into(),
            ));
        }
        let (ws, we) = (b.max(start), next.min(end));
        if ws < we {
            out.push((ws, we));
        }
        if out.len() > MAX_WINDOWS {
            break;
        }
        b = next;
    }
    Ok(out)
}

/// An instant from a query parameter: any timestamp form of the contract, or a plain
/// `YYYY-MM-DD` meaning local midnight in `tz`.
pub fn parse_instant(text: &str, tz: Tz) -> Result<i64, MetricError> {
    if text.len() == 10 {
        let d = NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .map_err(|e| MetricError::Invalid(format!("{text:?}: {e}")))?;
        return Ok(resolve(tz, d.and_hms_opt(0, 0, 0).unwrap_or_default()));
    }
    parse_timestamp(text).map_err(|e| MetricError::Invalid(format!("{text:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        parse_timestamp(s).unwrap()
    }

    #[test]
    fn berlin_days_across_the_spring_dst_jump() {
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        let w = windows(
            at("2025-03-29T23:00:00Z"),
            at("2025-04-01T22:00:00Z"),
            Window::Day,
            tz,
        )
        .unwrap();
        assert_eq!(
            w,
            vec![
                (at("2025-03-29T23:00:00Z"), at("2025-03-30T22:00:00Z")), // 23 hours
                (at("2025-03-30T22:00:00Z"), at("2025-03-31T22:00:00Z")),
                (at("2025-03-31T22:00:00Z"), at("2025-04-01T22:00:00Z")),
            ]
        );
    }

    #[test]
    fn months_and_partial_edges() {
        let tz: Tz = "UTC".parse().unwrap();
        let w = windows(
            at("2025-01-15T00:00:00Z"),
            at("2025-03-10T00:00:00Z"),
            Window::Month,
            tz,
        )
        .unwrap();
        assert_eq!(
            w,
            vec![
                (at("2025-01-15T00:00:00Z"), at("2025-02-01T00:00:00Z")),
                (at("2025-02-01T00:00:00Z"), at("2025-03-01T00:00:00Z")),
                (at("2025-03-01T00:00:00Z"), at("2025-03-10T00:00:00Z")),
            ]
        );
        let ny: Tz = "America/New_York".parse().unwrap();
        let hours = windows(
            at("2025-11-02T04:00:00Z"),
            at("2025-11-02T08:00:00Z"),
            Window::Hour,
            ny,
        )
        .unwrap();
        assert_eq!(hours.len(), 4, "the repeated 01:00 hour is its own window");
        assert_eq!(
            parse_instant("2025-07-01", ny).unwrap(),
            at("2025-07-01T04:00:00Z")
        );
    }
}
