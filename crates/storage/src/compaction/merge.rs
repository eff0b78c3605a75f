//! Version merging: which rows of a compaction group survive it. Rows deleted, and versions
//! replaced, before the history horizon are dropped (no allowed `as_of` can see them);
//! everything younger is kept, so `as_of` within retention answers exactly as before.

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, BooleanArray, TimestampMicrosecondArray};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{TimestampMicrosecondType, UInt64Type};
use arrow::record_batch::RecordBatch;
use meterbase_schema::{
    CUSTOMER_ID_COLUMN, EventTypeDef, INGESTED_AT_COLUMN, SEQ_COLUMN, TIMESTAMP_COLUMN,
};

use crate::error::StorageError;
use crate::format::manifest::Tombstone;
use crate::identity::{ROW_BITS, key_hashes};
use crate::versions::Versions;

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
            arrived: Some((at, horizon)),
            replaced_by: None,
        };
        versions.drop_replaced(&key_hashes(batch, &def.unique_key)?, &mut keep)?;
    }
    if keep.iter().all(|k| *k) {
        return Ok(batch.clone());
    }
    Ok(filter_record_batch(batch, &BooleanArray::from(keep))?)
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
