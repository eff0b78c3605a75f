//! Versions of a unique key: among rows with equal keys, the one with the highest `_seq` is
//! the current one and every other is replaced. Used by compaction (which replaced versions it
//! may drop) and by deletion vectors (which rows of which files are no longer live).

use std::collections::HashMap;

use arrow::array::{TimestampMicrosecondArray, UInt64Array};
use arrow::record_batch::RecordBatch;

use crate::error::StorageError;
use crate::identity::key_rows;

/// Rows of one or more files side by side, for finding versions that replace each other:
/// of two rows with equal unique keys the one with the higher `_seq` is the newer.
pub(crate) struct Versions<'a> {
    pub batch: &'a RecordBatch,
    pub unique_key: &'a [String],
    pub seq: &'a UInt64Array,
    /// `(_ingested_at, horizon)`: an older version goes only when its replacement arrived
    /// before the horizon (compaction keeps what `as_of` may still see). `None`: every
    /// replaced version goes.
    pub arrived: Option<(&'a TimestampMicrosecondArray, i64)>,
    /// Called with `(replaced, replacing)` for every version found replaced.
    pub replaced_by: Option<&'a dyn Fn(usize, usize)>,
}

impl Versions<'_> {
    /// Clears `keep` for every version replaced by a later one that arrived before the
    /// horizon. Rows are matched by their key hash (`hashes`) and confirmed by comparing
    /// the keys themselves; the first two different keys sharing a hash (about never with
    /// 64 bits) send the whole batch through `drop_replaced_exact`. Keying a map by the
    /// row-format keys instead was 43% of a compaction pass's CPU.
    pub(crate) fn drop_replaced(
        &self,
        hashes: &[u64],
        keep: &mut [bool],
    ) -> Result<(), StorageError> {
        use std::collections::hash_map::Entry;
        let mut decided = keep.to_vec();
        let mut rows: Option<arrow::row::Rows> = None;
        let mut newest: HashMap<u64, usize, foldhash::fast::FixedState> =
            HashMap::with_capacity_and_hasher(keep.len(), Default::default());
        for (i, &hash) in hashes.iter().enumerate() {
            if !decided[i] {
                continue;
            }
            match newest.entry(hash) {
                Entry::Vacant(e) => {
                    e.insert(i);
                }
                Entry::Occupied(mut e) => {
                    let j = *e.get();
                    let rows = match &mut rows {
                        Some(rows) => rows,
                        None => rows.insert(key_rows(self.batch, self.unique_key)?),
                    };
                    if rows.row(i) != rows.row(j) {
                        return self.drop_replaced_exact(keep);
                    }
                    if self.supersede(i, j, &mut decided) {
                        e.insert(i);
                    }
                }
            }
        }
        keep.copy_from_slice(&decided);
        Ok(())
    }

    /// `drop_replaced` keyed by the keys themselves.
    pub(crate) fn drop_replaced_exact(&self, keep: &mut [bool]) -> Result<(), StorageError> {
        let rows = key_rows(self.batch, self.unique_key)?;
        let mut newest: HashMap<arrow::row::Row<'_>, usize, foldhash::fast::FixedState> =
            HashMap::with_capacity_and_hasher(keep.len(), Default::default());
        for i in 0..keep.len() {
            if !keep[i] {
                continue;
            }
            let key = rows.row(i);
            match newest.get(&key) {
                Some(&j) => {
                    if self.supersede(i, j, keep) {
                        newest.insert(key, i);
                    }
                }
                None => {
                    newest.insert(key, i);
                }
            }
        }
        Ok(())
    }

    /// Rows `i` and `j` (the newest seen so far) hold one key: the older one is dropped if
    /// the newer arrived before the horizon. True when `i` is the newer.
    fn supersede(&self, i: usize, j: usize, keep: &mut [bool]) -> bool {
        let (older, newer) = if self.seq.value(j) > self.seq.value(i) {
            (i, j)
        } else {
            (j, i)
        };
        if self
            .arrived
            .is_none_or(|(at, horizon)| at.value(newer) < horizon)
        {
            keep[older] = false;
            if let Some(f) = self.replaced_by {
                f(older, newer);
            }
        }
        newer == i
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::identity::key_hashes;

    proptest::proptest! {
        /// Matching versions by key hash finds exactly what keying by the keys does, also
        /// when every hash collides (the fallback) and with rows already dropped.
        #[test]
        fn replaced_versions_found_by_hash_are_the_exact_ones(
            rows in proptest::collection::vec(
                (0u8..4, 0i64..4, proptest::num::u32::ANY, proptest::bool::ANY, proptest::bool::weighted(0.9)),
                1..80,
            ),
            colliding in proptest::bool::ANY,
        ) {
            use arrow::array::StringArray;
            use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
            let stamp = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
            let schema = Arc::new(Schema::new(vec![
                Field::new("customer_id", DataType::Utf8, false),
                Field::new("timestamp", stamp(), false),
            ]));
            let customers: Vec<String> = rows.iter().map(|r| format!("c{}", r.0)).collect();
            let batch = RecordBatch::try_new(
                schema,
                vec![
                    Arc::new(StringArray::from(customers)),
                    Arc::new(TimestampMicrosecondArray::from(rows.iter().map(|r| r.1).collect::<Vec<_>>()).with_timezone("UTC")),
                ],
            )
            .unwrap();
            // Distinct sequences in no particular order, as rows of several files merge.
            let seq = UInt64Array::from_iter_values(
                rows.iter().enumerate().map(|(i, r)| ((r.2 as u64) << 8) | i as u64),
            );
            let at = TimestampMicrosecondArray::from_iter_values(
                rows.iter().map(|r| if r.3 { 50 } else { 150 }),
            );
            let unique_key = vec!["customer_id".to_string(), "timestamp".to_string()];
            let versions = Versions { batch: &batch, unique_key: &unique_key, seq: &seq, arrived: Some((&at, 100)), replaced_by: None };
            let start: Vec<bool> = rows.iter().map(|r| r.4).collect();
            let mut exact = start.clone();
            versions.drop_replaced_exact(&mut exact).unwrap();
            let hashes = if colliding {
                vec![7; rows.len()]
            } else {
                key_hashes(&batch, &unique_key).unwrap()
            };
            let mut by_hash = start;
            versions.drop_replaced(&hashes, &mut by_hash).unwrap();
            proptest::prop_assert_eq!(by_hash, exact);
        }
    }
}
