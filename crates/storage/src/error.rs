//! `StorageError`: one variant per kind of failure, so the server maps each to its status.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum StorageError {
    #[error("object store error on {path}: {source}")]
    ObjectStore {
        path: String,
        #[source]
        source: object_store::Error,
    },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("manifest {path} is unreadable: {reason}")]
    CorruptManifest { path: String, reason: String },
    #[error("data file {path} is corrupted: {reason}")]
    CorruptFile { path: String, reason: String },
    #[error("Arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("Parquet error: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error(transparent)]
    Wal(#[from] meterbase_wal::WalError),
    #[error(transparent)]
    Schema(#[from] meterbase_schema::SchemaError),
    #[error("write-ahead log record is malformed: {0}")]
    BadRecord(String),
    #[error("stored rows have no {0} column")]
    MissingColumn(&'static str),
    #[error("stored rows have no {0} column, part of the unique key")]
    MissingKeyColumn(String),
    #[error("{rows} rows in one write; at most {max}")]
    TooManyRows { rows: usize, max: usize },
    #[error("the {task} task failed: {reason}")]
    TaskFailed { task: &'static str, reason: String },
    #[error("a compaction was abandoned: rows arrived inside the sequence range it collapsed")]
    CompactionAbandoned,
    #[error("an internal invariant failed: {0}")]
    Invariant(&'static str),
    #[error("manifest does not encode: {0}")]
    ManifestEncoding(#[source] serde_json::Error),
    #[error("buffer is full ({used} of {limit} bytes waiting for the object store)")]
    BufferFull { used: usize, limit: usize },
    #[error("invalid object store URL {0:?}: {1}")]
    BadUrl(String, String),
    #[error("event type not found")]
    UnknownTable,
    #[error(
        "buffered rows up to log sequence {chunk_max_seq} are at or below the table's persisted sequence {persisted_seq}: the write-ahead log numbered records twice"
    )]
    SequenceReused {
        chunk_max_seq: u64,
        persisted_seq: u64,
    },
    #[error(
        "manifest version {path} was committed by another writer (writer {writer:?}); is a second server using this object store?"
    )]
    ManifestTaken { path: String, writer: String },
}

impl StorageError {
    pub(crate) fn store(path: impl ToString, source: object_store::Error) -> StorageError {
        StorageError::ObjectStore {
            path: path.to_string(),
            source,
        }
    }
}
