//! Batches written under an older definition of their event type, read under the current
//! one: columns are matched by name, and ones added since come back as nulls.

use arrow::array::{ArrayRef, new_null_array};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use crate::error::StorageError;

/// Gives `batch` exactly the columns of `schema`, by name: columns added to the event type
/// after the batch was written become nulls.
pub fn adapt_batch(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, StorageError> {
    if batch.schema_ref() == schema {
        return Ok(batch.clone());
    }
    let cols: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) => c.clone(),
            None => new_null_array(f.data_type(), batch.num_rows()),
        })
        .collect();
    Ok(RecordBatch::try_new(schema.clone(), cols)?)
}
