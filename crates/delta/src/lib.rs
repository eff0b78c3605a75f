//! meterbase-delta owns the open tables: every event type's files published as a Delta Lake
//! table rooted at the table's prefix (`<org id>/<slug>/_delta_log/`), so Spark, Trino,
//! DuckDB, ClickHouse and others read exactly what `/sql` answers, without copying a row.
//! Our Parquet files are the table's files, our deletion vectors (already in Delta's format)
//! its deletion vectors; rows the manifest hides in other ways (range deletions, files not
//! yet compared key by key) are masked by inline vectors computed from the files.
//!
//! It must not write data files, change a manifest, or make ingest or queries wait: it
//! follows the published manifests (`meterbase_storage::live_set`) and writes only under
//! `_delta_log/` and `_meterbase_delta/`.
//!
//! # Module map
//! | module | stage |
//! |---|---|
//! | `error` | `DeltaError` |
//! | `actions` | the log's actions, encoded and decoded (the persisted format) |
//! | `vectors` | deletion vector descriptors: our files (`u`) or inline (`i`), z85 |
//! | `schema` | an event type's columns as a Delta schema |
//! | `stats` | file statistics from Parquet footers |
//! | `state` | what the log lists now, replayed and kept current |
//! | `plan` | the actions from what the log lists to what a manifest holds (pure) |
//! | `log` | commits and state snapshots in the object store |
//! | `checkpoint` | the state at one version as a Parquet checkpoint, for readers |
//! | `publish` | the loop: manifests → commits; answers garbage collection |

pub mod actions;
mod checkpoint;
mod error;
#[cfg(test)]
mod golden;
mod log;
mod plan;
mod publish;
mod schema;
mod state;
mod stats;
pub mod vectors;

pub use error::DeltaError;
pub use log::{LOG_DIR, STATE_DIR};
pub use publish::{CHECKPOINT_EVERY, DeltaConfig, Publisher, TableStatus};
