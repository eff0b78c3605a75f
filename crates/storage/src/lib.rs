//! meterbase-storage owns everything between a validated batch and a durable, queryable row:
//! the in-memory buffer per (organisation, event type), the write-ahead log records that carry
//! it (rows, range deletions, sequence markers), the persister that turns frozen buffer chunks
//! into sorted Parquet files in the object store (local or S3), staged uploads, compaction,
//! and the per-table manifest that publishes them all. It hands the query layer one
//! consistent `TableSnapshot` (files + buffer + deletions) per table.
//!
//! It must not parse HTTP or SQL, and must not know about organisations beyond their ids.
//!
//! # Module map
//! An event's way through, top to bottom; each module imports only ones listed before it,
//! never the other way (`make imports` checks there is no circle).
//!
//! | module | stage |
//! |---|---|
//! | `error`, `config`, `stats` | the crate's error type, settings, counters |
//! | `identity` | row identity: `_seq`, `_ingested_at` stamping, unique-key hashing, time range |
//! | `adapt` | batches of an older definition read under the current one |
//! | `format::{record, manifest, parquet, paths, deletion_vector}` | every persisted format, versioned and pinned by `testdata/formats/` |
//! | `local_store`, `url`, `faults` | object stores: the local one, from a URL, fault injection |
//! | `overlap` | which files, buffers and deletions may meet in time (one definition) |
//! | `versions` | which rows newer versions of their key replace |
//! | `resolve` | deletion vectors computed: which rows of which files newer versions replace |
//! | `gauge` | buffer memory accounting and the wait for room |
//! | `chunk`, `table` | the buffer of one table, its manifest and its snapshot |
//! | `registry` | the tables by id, and the log's apply hook |
//! | `replay` | start-up: the log back into the buffers |
//! | `context`, `commit` | what every stage works with; manifest commits |
//! | `vectors` | deletion vector files in the object store: written, read, retired |
//! | `mask` | files being added compared with the live files they overlap (or flagged) |
//! | `persister` | a frozen chunk → Parquet files → next manifest |
//! | `upload` | staged uploads: files first, one commit at the end |
//! | `compaction::{plan, merge, worker, execute}` | pure planner, version merging, execution |
//! | `gc` | deleting files no reader needs |
//! | `live_set` | a manifest version's current rows as positions an outside reader skips |
//! | `store` | the engine's face, driving all of the above |

mod adapt;
mod chunk;
mod commit;
mod compaction;
mod config;
mod context;
mod error;
mod faults;
pub mod format;
pub mod fuzzing;
mod gauge;
mod gc;
mod identity;
mod live_set;
mod local_store;
mod mask;
mod overlap;
mod persister;
mod registry;
mod replay;
mod resolve;
mod stats;
mod store;
mod table;
mod upload;
mod url;
mod vectors;
mod versions;

pub use adapt::adapt_batch;
pub use config::{
    CompactionConfig, CompactionMode, DEFAULT_BUFFER_WAIT, DEFAULT_COMPACTION_MAX_ROWS,
    DEFAULT_FLUSH_BYTES, DEFAULT_MAX_BUFFER_BYTES, DEFAULT_PERSIST_COMPARE_ROWS, StorageConfig,
};
pub use error::StorageError;
pub use faults::{Faults, FaultyStore};
pub use format::manifest::{FileLayout, FileMeta, Manifest, Tombstone};
pub use format::paths::TablePaths;
pub use format::record::{EventRange, WalRecord};
pub use gc::OutsideReaders;
pub use identity::{ROW_BITS, record_seq, ts_range as batch_ts_range};
pub use live_set::{LiveFile, LiveSetCache, live_set};
pub use local_store::LocalStore;
pub use overlap::{file_overlaps, overlaps_until, time_ranges_overlap};
pub use stats::{CompactionStats, StorageStats};
pub use store::Store;
pub use table::{Table, TableSnapshot};
pub use upload::{Upload, UploadCommit};
pub use url::{ObjectStoreHandle, parse_object_store_url};
