//! Version merging: which rows of a compaction group survive it. Rows deleted, and versions
//! replaced, before the history horizon are dropped (no allowed `as_of` can see them);
//! everything younger is kept, so `as_of` within retention answers exactly as before.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, BooleanArray, TimestampMicrosecondArray, UInt64Array};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{TimestampMicrosecondType, UInt64Type};
use arrow::record_batch::RecordBatch;
use meterbase_schema::{
    CUSTOMER_ID_COLUMN, EventTypeDef, INGESTED_AT_COLUMN, SEQ_COLUMN, TIMESTAMP_COLUMN,
};

use crate::error::StorageError;
use crate::format::manifest::Tombstone;
use crate::identity::{ROW_BITS, key_hashes, key_rows};

/// The rows of `batch` that some allowed `as_of` can still see (see the module comment).
pub(crate) fn surviving_rows(
    batch: &RecordBatch,
    def: &EventTypeDef,
    expired: &[Tombstone],
    horizon: i64,
) -> Result<RecordBatch, StorageError> {
    let n = batch.num_rows();
    let seq = batch
        .column_by_name(SEQ_COLUMN)
        .and_then(|c| c.as_primitive_opt::<UInt64Type>())
        .ok_or(StorageError::MissingColumn(SEQ_COLUMN))?;
    let ts = batch
        .column_by_name(TIMESTAMP_COLUMN)
        .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
        .ok_or(StorageError::MissingColumn(TIMESTAMP_COLUMN))?;
    let at = batch
        .column_by_name(INGESTED_AT_COLUMN)
        .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
        .ok_or(StorageError::MissingColumn(INGESTED_AT_COLUMN))?;
    let customers = batch
        .column_by_name(CUSTOMER_ID_COLUMN)
        .and_then(|c| c.as_string_opt::<i32>())
        .ok_or(StorageError::MissingColumn(CUSTOMER_ID_COLUMN))?;
    let mut keep = vec![true; n];
    for t in expired {
        for (i, k) in keep.iter_mut().enumerate() {
            if *k
                && seq.value(i) < t.seq << ROW_BITS
                && t.customer_id
                    .as_deref()
                    .is_none_or(|c| customers.value(i) == c)
                && t.from.is_none_or(|f| ts.value(i) >= f)
                && t.to.is_none_or(|to| ts.value(i) < to)
            {
                *k = false;
            }
        }
    }
    // A version replaced by one that arrived before the horizon is invisible to every
    // allowed `as_of`. Only the inputs are compared (a newer version elsewhere just means
    // the older one is kept a while longer).
    if def.key_has_time() {
        let versions = Versions {
            batch,
            unique_key: &def.unique_key,
            seq,
            at,
            horizon,
        };
        versions.drop_replaced(&key_hashes(batch, &def.unique_key)?, &mut keep)?;
    }
    if keep.iter().all(|k| *k) {
        return Ok(batch.clone());
    }
    Ok(filter_record_batch(batch, &BooleanArray::from(keep))?)
}

/// The rows of one merge, for finding versions that replace each other.
struct Versions<'a> {
    batch: &'a RecordBatch,
    unique_key: &'a [String],
    seq: &'a UInt64Array,
    at: &'a TimestampMicrosecondArray,
    horizon: i64,
}

impl Versions<'_> {
    /// Clears `keep` for every version replaced by a later one that arrived before the
    /// horizon. Rows are matched by their key hash (`hashes`) and confirmed by comparing
    /// the keys themselves; the first two different keys sharing a hash (about never with
    /// 64 bits) send the whole batch through `drop_replaced_exact`. Keying a map by the
    /// row-format keys instead was 43% of a compaction pass's CPU.
    fn drop_replaced(&self, hashes: &[u64], keep: &mut [bool]) -> Result<(), StorageError> {
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
    fn drop_replaced_exact(&self, keep: &mut [bool]) -> Result<(), StorageError> {
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
        if self.seq.value(j) > self.seq.value(i) {
            if self.at.value(j) < self.horizon {
                keep[i] = false;
            }
            false
        } else {
            if self.at.value(i) < self.horizon {
                keep[j] = false;
            }
            true
        }
    }
}

/// Rows of an upload arrived when the upload committed: the merged file has no per-file
/// `visible_from`, so the instant moves into the rows.
pub(crate) fn settle_arrival(
    batch: RecordBatch,
    visible_from: Option<i64>,
) -> Result<RecordBatch, StorageError> {
    let Some(v) = visible_from else {
        return Ok(batch);
    };
    let idx = batch
        .schema_ref()
        .index_of(INGESTED_AT_COLUMN)
        .map_err(|_| StorageError::MissingColumn(INGESTED_AT_COLUMN))?;
    let at = batch.column(idx).as_primitive::<TimestampMicrosecondType>();
    let moved: TimestampMicrosecondArray = at.unary(|x| x.max(v));
    let moved: ArrayRef = Arc::new(moved.with_timezone("UTC"));
    let mut cols = batch.columns().to_vec();
    cols[idx] = moved;
    Ok(RecordBatch::try_new(batch.schema(), cols)?)
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let versions = Versions { batch: &batch, unique_key: &unique_key, seq: &seq, at: &at, horizon: 100 };
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
