//! Why publishing a table's Delta log failed. Every failure is retried at the next tick;
//! none of them touches ingest or queries.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum DeltaError {
    #[error("object store: {path}: {source}")]
    Store {
        path: String,
        #[source]
        source: object_store::Error,
    },
    #[error("reading {path}: {reason}")]
    Parquet { path: String, reason: String },
    #[error(transparent)]
    Storage(#[from] meterbase_storage::StorageError),
    #[error("encoding a Delta action: {0}")]
    Encode(serde_json::Error),
    #[error("the Delta log is not as written: {file}: {reason}")]
    CorruptLog { file: String, reason: String },
    #[error("a column of type {0} has no Delta type")]
    UnsupportedType(String),
    #[error("writing a checkpoint: {0}")]
    Checkpoint(String),
    #[error("deletion vector {0}")]
    DeletionVector(String),
    #[error("Delta version {0} was committed by someone else meanwhile")]
    Conflict(i64),
}

impl DeltaError {
    pub(crate) fn store(path: &object_store::path::Path, source: object_store::Error) -> Self {
        DeltaError::Store {
            path: path.to_string(),
            source,
        }
    }
}
