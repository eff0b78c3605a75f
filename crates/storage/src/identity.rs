//! Row identity: every stored row carries `_ingested_at` (when its log record was
//! acknowledged) and `_seq` (its record's log sequence shifted left by `ROW_BITS`, plus its
//! place in the record), which orders versions of one unique key; and unique keys hash to
//! 64 bits for the cheap "may two rows share a key" checks.

use std::hash::BuildHasher;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, TimestampMicrosecondArray, UInt64Array, new_null_array};
use arrow::compute::kernels::aggregate::{max, min};
use arrow::datatypes::{Int64Type, SchemaRef, TimestampMicrosecondType};
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};
use meterbase_schema::TIMESTAMP_COLUMN;
use meterbase_wal::{Ack, Seq};

use crate::error::StorageError;

/// Rows of one write-ahead log record carry `_seq = record_seq << ROW_BITS | row`.
pub const ROW_BITS: u32 = 20;
pub const MAX_ROWS_PER_RECORD: usize = 1 << ROW_BITS;

/// The stored form of validated input rows: `schema`'s columns (absent fields null), the
/// arrival instant and one `_seq` per row from the log record `ack`.
pub(crate) fn stamp_batch(
    input: &RecordBatch,
    schema: &SchemaRef,
    ack: Ack,
) -> Result<RecordBatch, StorageError> {
    let rows = input.num_rows();
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for f in schema.fields().iter().take(schema.fields().len() - 2) {
        cols.push(match input.column_by_name(f.name()) {
            Some(c) => c.clone(),
            None => new_null_array(f.data_type(), rows),
        });
    }
    cols.push(Arc::new(
        TimestampMicrosecondArray::from(vec![ack.ingested_at; rows]).with_timezone("UTC"),
    ));
    let base = ack.seq << ROW_BITS;
    cols.push(Arc::new(UInt64Array::from_iter_values(
        (0..rows as u64).map(|i| base + i),
    )));
    Ok(RecordBatch::try_new(schema.clone(), cols)?)
}

/// The `unique_key` columns of `batch` as comparable rows (equal keys, equal rows).
pub(crate) fn key_rows(
    batch: &RecordBatch,
    unique_key: &[String],
) -> Result<arrow::row::Rows, StorageError> {
    let cols: Vec<ArrayRef> = unique_key
        .iter()
        .filter_map(|k| batch.column_by_name(k).cloned())
        .collect();
    let converter = RowConverter::new(
        cols.iter()
            .map(|c| SortField::new(c.data_type().clone()))
            .collect(),
    )?;
    Ok(converter.convert_columns(&cols)?)
}

/// Key hashes stay in this process's memory (never on disk) and only decide whether rows
/// may share a key: a collision costs a deduplication at query time, never an answer. So a
/// fast hash; SipHash here was ~2% of ingest CPU.
pub type KeySet = std::collections::HashSet<u64, foldhash::fast::FixedState>;

/// One hash per row of the `unique_key` columns present in `batch`.
pub fn key_hashes(batch: &RecordBatch, unique_key: &[String]) -> Result<Vec<u64>, StorageError> {
    let cols: Vec<&ArrayRef> = unique_key
        .iter()
        .filter_map(|k| batch.column_by_name(k))
        .collect();
    if let Some(hashes) = hash_values(&cols, batch.num_rows()) {
        return Ok(hashes);
    }
    let rows = key_rows(batch, unique_key)?;
    let state = foldhash::fast::FixedState::default();
    Ok(rows.iter().map(|r| state.hash_one(r.as_ref())).collect())
}

/// Key hashes straight from the values, for the key column types billing tables use
/// (strings, timestamps, 64-bit integers); `None` for any other, which go through the row
/// format. Building a row converter per request was a tenth of a single-event POST's CPU.
/// The choice depends only on the column types, so equal keys always hash alike.
fn hash_values(cols: &[&ArrayRef], rows: usize) -> Option<Vec<u64>> {
    fn mix<T: std::hash::Hash>(hashes: &mut [u64], values: impl Iterator<Item = T>) {
        let state = foldhash::fast::FixedState::default();
        for (h, v) in hashes.iter_mut().zip(values) {
            *h = state.hash_one((*h, v));
        }
    }
    let mut hashes = vec![0u64; rows];
    for col in cols {
        if let Some(values) = col.as_string_opt::<i32>() {
            mix(&mut hashes, values.iter());
        } else if let Some(values) = col.as_primitive_opt::<TimestampMicrosecondType>() {
            mix(&mut hashes, values.iter());
        } else if let Some(values) = col.as_primitive_opt::<Int64Type>() {
            mix(&mut hashes, values.iter());
        } else {
            return None;
        }
    }
    Some(hashes)
}

/// Sequence of the write-ahead log record a row came from.
pub fn record_seq(row_seq: u64) -> Seq {
    row_seq >> ROW_BITS
}

/// The time range of a batch's `timestamp` column (by name: columns are never found by
/// position).
pub fn ts_range(batch: &RecordBatch) -> Option<(i64, i64)> {
    let ts = batch
        .column_by_name(TIMESTAMP_COLUMN)?
        .as_primitive_opt::<TimestampMicrosecondType>()?;
    if ts.is_empty() {
        return None;
    }
    Some((min(ts)?, max(ts)?))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Rows of (customer, timestamp, amount), for tests of keys and buffers.
    pub(crate) fn keyed(customers: &[Option<&str>], ts: &[i64], amounts: &[f64]) -> RecordBatch {
        use arrow::array::{Float64Array, StringArray};
        use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
        let schema = Arc::new(Schema::new(vec![
            Field::new("customer_id", DataType::Utf8, true),
            Field::new(
                "timestamp",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("amount", DataType::Float64, false),
        ]));
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(customers.to_vec())),
            Arc::new(TimestampMicrosecondArray::from(ts.to_vec()).with_timezone("UTC")),
            Arc::new(Float64Array::from(amounts.to_vec())),
        ];
        RecordBatch::try_new(schema, cols).expect("valid batch")
    }

    #[test]
    fn equal_keys_hash_alike_in_any_batch_and_different_keys_apart() {
        let key = ["customer_id".to_string(), "timestamp".to_string()];
        let a = keyed(
            &[Some("c1"), Some("c2"), None, Some("c1")],
            &[1, 1, 1, 2],
            &[0.0; 4],
        );
        let b = keyed(&[Some("c2"), Some("c1")], &[1, 2], &[5.0, 6.0]);
        let ha = key_hashes(&a, &key).expect("hashes");
        let hb = key_hashes(&b, &key).expect("hashes");
        assert_eq!((hb[0], hb[1]), (ha[1], ha[3]));
        assert_eq!(key_hashes(&a.slice(1, 3), &key).expect("hashes"), ha[1..]);
        let distinct: KeySet = ha.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            4,
            "a null customer and each other key apart"
        );
        // A key type without a direct hash goes through the row format, consistently.
        let key = ["amount".to_string()];
        let hb = key_hashes(&b, &key).expect("hashes");
        assert_ne!(hb[0], hb[1]);
        assert_eq!(key_hashes(&b.slice(1, 1), &key).expect("hashes"), hb[1..]);
    }
}
