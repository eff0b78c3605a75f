//! Which rows may meet: files (or a buffer) whose time ranges overlap, and deletions whose
//! range may cover a file's rows. With the timestamp in the unique key, two versions of a key
//! can only sit in files whose time ranges overlap, so this is where storage and queries
//! decide which files need deduplicating; one definition, used everywhere.

use crate::format::manifest::{FileMeta, Tombstone};

/// Whether `[a_min, a_max]` and `[b_min, b_max]` (inclusive, µs) share an instant.
pub fn time_ranges_overlap(a_min: i64, a_max: i64, b_min: i64, b_max: i64) -> bool {
    a_max >= b_min && a_min <= b_max
}

/// Whether `[min, max]` (inclusive) holds an instant of the half-open `[lo, hi)` (a query's
/// time filter); an empty `[lo, hi)` holds none.
pub fn overlaps_until(min: i64, max: i64, lo: i64, hi: i64) -> bool {
    lo < hi && time_ranges_overlap(min, max, lo, hi - 1)
}

/// Whether `f` may hold a row timed within `[min_ts, max_ts]`.
pub fn file_overlaps(f: &FileMeta, min_ts: i64, max_ts: i64) -> bool {
    time_ranges_overlap(f.min_ts, f.max_ts, min_ts, max_ts)
}

/// Whether deletion `t` may cover a row timed within `[min_ts, max_ts]`.
pub(crate) fn deletion_covers(t: &Tombstone, min_ts: i64, max_ts: i64) -> bool {
    t.from.is_none_or(|from| max_ts >= from) && t.to.is_none_or(|to| min_ts < to)
}

/// Rows of the files overlapping `[lo, hi]` in time.
pub(crate) fn overlapping_rows(files: &[FileMeta], lo: i64, hi: i64) -> u64 {
    files
        .iter()
        .filter(|f| file_overlaps(f, lo, hi))
        .map(|f| f.rows)
        .sum()
}

/// An upload's files are not compared key by key (that would hold every key of a file of any
/// size in memory): any file overlapping another in time, staged or live, is flagged for
/// deduplication, which is always correct and only costs query time on those days.
pub(crate) fn mark_time_overlaps(live: &mut [FileMeta], staged: &mut [FileMeta]) {
    for i in 0..staged.len() {
        for j in 0..staged.len() {
            if i != j && file_overlaps(&staged[i], staged[j].min_ts, staged[j].max_ts) {
                staged[i].share_unresolved();
            }
        }
    }
    mark_overlaps_with_live(live, staged);
}

/// `mark_time_overlaps` between `new` and `live` only, for new files whose sharing among
/// themselves is already decided.
pub(crate) fn mark_overlaps_with_live(live: &mut [FileMeta], new: &mut [FileMeta]) {
    for n in new.iter_mut() {
        for old in live.iter_mut() {
            if file_overlaps(old, n.min_ts, n.max_ts) {
                old.share_unresolved();
                n.share_unresolved();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_meet_at_their_ends_too() {
        assert!(time_ranges_overlap(0, 10, 10, 20));
        assert!(time_ranges_overlap(5, 6, 0, 100));
        assert!(!time_ranges_overlap(0, 9, 10, 20));
        assert!(overlaps_until(0, 10, 10, 11));
        assert!(!overlaps_until(0, 10, 11, i64::MAX));
        assert!(!overlaps_until(0, 10, -5, 0), "hi is exclusive");
        assert!(overlaps_until(i64::MIN, i64::MAX, i64::MIN, i64::MIN + 1));
        let t = Tombstone {
            seq: 1,
            at: 0,
            customer_id: None,
            from: Some(10),
            to: Some(20),
        };
        assert!(deletion_covers(&t, 0, 10));
        assert!(!deletion_covers(&t, 20, 30), "to is exclusive");
    }
}
