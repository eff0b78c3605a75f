//! The property the `usage_params` fuzz target checks of the usage endpoint's period
//! parameters (`start_date`, `end_date`, `window`, `tz`, as a client sends them), shared
//! with the test that replays the committed corpus.

use crate::{MAX_WINDOWS, Window, parse_instant, windows};

/// `start\nend\nwindow\ntz` from arbitrary bytes: never panics; windows of a valid period
/// are in order, inside it, at most `MAX_WINDOWS + 1` (the caller refuses more), and cover
/// it without gaps unless they were cut off.
pub fn check_usage_params(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(4, '\n');
    let (start, end, window, tz) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or("UTC"),
    );
    let Ok(tz) = tz.parse::<chrono_tz::Tz>() else {
        return;
    };
    let (Ok(start), Ok(end)) = (parse_instant(start, tz), parse_instant(end, tz)) else {
        return;
    };
    let Ok(window) = window.parse::<Window>() else {
        return;
    };
    if start >= end {
        return;
    }
    let Ok(cut) = windows(start, end, window, tz) else {
        return;
    };
    assert!(cut.len() <= MAX_WINDOWS + 1);
    let mut at = start;
    for (i, (ws, we)) in cut.iter().enumerate() {
        assert!(ws < we, "window {i} is empty: {cut:?}");
        assert!(*ws >= start && *we <= end, "window {i} leaves the period");
        assert_eq!(*ws, at, "a gap before window {i}");
        at = *we;
    }
    if cut.len() <= MAX_WINDOWS {
        assert_eq!(at, end, "the windows stop short of the period's end");
    }
}
