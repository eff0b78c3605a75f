//! meterbase-storage owns everything between a validated batch and a durable, queryable row:
//! the in-memory buffer per (organisation, event type), the write-ahead log records that carry
//! it (rows, range deletions, sequence markers), the persister that turns frozen buffer chunks
//! into sorted Parquet files in the object store (local or S3), staged uploads, compaction,
//! and the per-table manifest that publishes them all. It hands the query layer one
//! consistent `TableSnapshot` (files + buffer + deletions) per table.
//!
//! It must not parse HTTP or SQL, and must not know about organisations beyond their ids.

mod compact;
mod faults;
pub mod fuzzing;
mod local_store;
mod manifest;
mod persist;
mod record;
mod store;
mod table;
mod upload;
mod url;

pub use compact::{CompactionConfig, CompactionMode, CompactionStats, DEFAULT_COMPACTION_MAX_ROWS};
pub use faults::{Faults, FaultyStore};
pub use local_store::LocalStore;
pub use manifest::{FileMeta, Manifest, Tombstone};
pub use record::{EventRange, WalRecord};
pub use store::{
    DEFAULT_BUFFER_WAIT, DEFAULT_FLUSH_BYTES, DEFAULT_MAX_BUFFER_BYTES, StorageConfig,
    StorageStats, Store,
};
pub use table::{
    ROW_BITS, Table, TableSnapshot, adapt_batch, record_seq, ts_range as batch_ts_range,
};
pub use upload::Upload;
pub use url::{ObjectStoreHandle, parse_object_store_url};

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
    #[error("manifest version {path} was committed by another writer (writer {:?}); is a second server using this object store?", landed.writer)]
    ManifestTaken { path: String, landed: Box<Manifest> },
}

impl StorageError {
    pub(crate) fn store(path: impl ToString, source: object_store::Error) -> StorageError {
        StorageError::ObjectStore {
            path: path.to_string(),
            source,
        }
    }
}
