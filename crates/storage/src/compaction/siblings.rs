//! Compaction outputs that overlap each other in time (a day cut at `max_rows`, or a
//! multi-day file next to one that took a late day of its range) are compared by key, so
//! only those that really share a key are flagged for deduplication.

use meterbase_schema::timestamp::MICROS_PER_DAY;

use crate::compaction::plan::day_of;
use crate::format::manifest::FileMeta;
use crate::identity::KeySet;
use crate::overlap::file_overlaps;

/// Key sets of the outputs written so far that later outputs may overlap in time, so that
/// outputs overlapping each other (a day cut at `max_rows`, or a multi-day file next to one
/// that took a late day of its range) are flagged as sharing keys only when they do:
/// flagging by time would make queries deduplicate every such day for good. Groups come in
/// day order and an output starts on its group's first day, so an output that ended before
/// the new one's day began cannot overlap any later output and is let go. Past
/// `SIBLING_KEY_ROWS` held rows it stops holding keys and flags by time instead (always
/// correct, just slower to query).
#[derive(Default)]
pub(crate) struct SiblingKeys {
    /// Index into the outputs and its keys.
    held: Vec<(usize, KeySet)>,
    rows: usize,
    /// Outputs whose keys were not kept.
    unheld: Vec<usize>,
}

const SIBLING_KEY_ROWS: usize = 4_000_000;

impl SiblingKeys {
    /// Takes note of `outputs`' last file, whose keys are `keys`.
    pub(crate) fn add(&mut self, outputs: &mut [FileMeta], keys: KeySet) {
        let Some(new) = outputs.len().checked_sub(1) else {
            return;
        };
        let day_start = day_of(&outputs[new]) * MICROS_PER_DAY;
        self.held.retain(|(i, _)| outputs[*i].max_ts >= day_start);
        self.unheld.retain(|&i| outputs[i].max_ts >= day_start);
        self.rows = self.held.iter().map(|(_, k)| k.len()).sum();
        let overlaps =
            |i: usize| file_overlaps(&outputs[i], outputs[new].min_ts, outputs[new].max_ts);
        let mut shared: Vec<usize> = self
            .held
            .iter()
            .filter(|(i, held)| overlaps(*i) && !held.is_disjoint(&keys))
            .map(|(i, _)| *i)
            .collect();
        shared.extend(self.unheld.iter().copied().filter(|&i| overlaps(i)));
        for &i in &shared {
            outputs[i].shares_keys = true;
        }
        outputs[new].shares_keys |= !shared.is_empty();
        if self.rows + keys.len() <= SIBLING_KEY_ROWS {
            self.rows += keys.len();
            self.held.push((new, keys));
        } else {
            // Its keys are not kept: later outputs overlapping it count as sharing keys.
            self.unheld.push(new);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compaction::plan::tests::file;

    #[test]
    fn outputs_overlapping_in_time_are_compared_by_key_whatever_their_first_day() {
        let span = |from: i64, to: i64, seq: u64| FileMeta {
            max_ts: to * MICROS_PER_DAY,
            ..file(from, 10, seq)
        };
        let keys = |k: &[u64]| k.iter().copied().collect::<KeySet>();
        let mut siblings = SiblingKeys::default();
        let mut outputs = Vec::new();
        // Days 1-4, then a file that starts on day 3 holding a version of one of its keys.
        outputs.push(span(1, 4, 1));
        siblings.add(&mut outputs, keys(&[1, 2]));
        outputs.push(span(3, 6, 2));
        siblings.add(&mut outputs, keys(&[2, 3]));
        assert!(outputs[0].shares_keys && outputs[1].shares_keys);
        // The same hash on days that do not overlap is another key (the key holds the time).
        outputs.push(span(8, 9, 3));
        siblings.add(&mut outputs, keys(&[3]));
        assert!(!outputs[2].shares_keys);
        // Overlapping without a shared key: not flagged.
        outputs.push(span(9, 9, 4));
        siblings.add(&mut outputs, keys(&[7]));
        assert!(!outputs[3].shares_keys && !outputs[2].shares_keys);
    }
}
