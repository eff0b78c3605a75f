//! Every format meterbase persists, each versioned and pinned by golden fixtures under
//! `testdata/formats/` (`golden.rs`):
//! - `record`: a write-ahead log record's payload (rows, deletions, sequence markers);
//! - `manifest`: a table's manifest (its live files, deletions, replaced files), JSON;
//! - `parquet`: data files (sort order, compression, statistics, naming);
//! - `paths`: where a table's objects live;
//! - `deletion_vector`: which rows of a data file newer versions replaced (Delta's format).

pub mod deletion_vector;
pub mod manifest;
pub mod parquet;
pub mod paths;
pub mod record;

#[cfg(test)]
mod golden;
