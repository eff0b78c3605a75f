//! The per-table manifest: which Parquet files are live and up to which write-ahead log
//! sequence the table is persisted. Each version is a new immutable object created with
//! `PutMode::Create`, so two writers can never both commit the same version.

use object_store::path::Path;
use serde::{Deserialize, Serialize};

use crate::error::StorageError;
use crate::format::deletion_vector::DeletionVector;

/// The manifest format this build writes. 0: before manifests carried a format (files' layouts
/// were told by their names); 1: `format` and `FileMeta::layout` present; 2: files may carry
/// a deletion vector (`FileMeta::deletion_vector`, `live_resolved`). A build that reads an
/// older format refuses a newer one: ignoring a deletion vector would count replaced rows.
pub const MANIFEST_FORMAT: u32 = 2;

/// How a data file's rows were written.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FileLayout {
    /// A flush or an upload: one UTC day, sorted by the table's `column_order` then arrival
    /// (`_seq`), LZ4 in 4k-row pages, a bloom filter on `customer_id`.
    #[default]
    Arrival,
    /// Compaction's output: sorted by `customer_id` then `column_order`, zstd in 16k-row
    /// pages, a day or settled days of one month.
    Compacted,
}

/// Compaction outputs were named `…-c<version>[_<group>].parquet` before the layout was a
/// manifest field: how a format-0 manifest's files are told apart.
fn layout_from_name(path: &str) -> FileLayout {
    let compacted = path.rsplit_once("-c").is_some_and(|(_, v)| {
        v.trim_end_matches(".parquet")
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'_')
    });
    if compacted {
        FileLayout::Compacted
    } else {
        FileLayout::Arrival
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileMeta {
    /// Object path relative to the store root.
    pub path: String,
    pub size: u64,
    pub rows: u64,
    pub min_ts: i64,
    pub max_ts: i64,
    pub min_seq: u64,
    pub max_seq: u64,
    pub schema_version: u32,
    /// True when two rows of this file may share a unique key (an in-file replacement).
    pub has_duplicate_keys: bool,
    /// True when another live file may hold one of this file's unique keys. Files with both
    /// flags false are read without deduplication.
    #[serde(default)]
    pub shares_keys: bool,
    /// For files of a staged upload: the instant the upload committed. Its rows arrived
    /// earlier (`_ingested_at`) but became visible only then, so `as_of` before it hides
    /// the whole file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visible_from: Option<i64>,
    /// Deletions up to this log sequence are applied to the file's rows (by compaction).
    #[serde(default)]
    pub deletions_applied: u64,
    /// CRC-32C of the whole file: Parquet as written here has no page checksums, and a
    /// flipped bit in a value must fail a query, not change a total.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc32c: Option<u32>,
    #[serde(default)]
    pub layout: FileLayout,
    /// The columns the rows are sorted by, in order (`_seq` last for arrival files).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sorted_by: Vec<String>,
    /// Rows of this file that a newer version in a live file replaced: masked when reading the
    /// current data (an `as_of` query reads every version and deduplicates instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_vector: Option<DeletionVector>,
    /// Every row of this file that a newer version in a live file (itself included) replaces
    /// is in `deletion_vector`, so with it applied the file is read without deduplication
    /// whatever `has_duplicate_keys` and `shares_keys` say. Cleared as soon as a file that
    /// may share keys with it is added without being compared key by key.
    #[serde(default, skip_serializing_if = "is_false")]
    pub live_resolved: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl FileMeta {
    /// This file may share a unique key with another live file, and nobody compared them key
    /// by key: it must be deduplicated until someone does.
    pub(crate) fn share_unresolved(&mut self) {
        self.shares_keys = true;
        self.live_resolved = false;
    }

    /// Read without deduplication when reading the current data (its deletion vector
    /// applied).
    pub fn clean_now(&self) -> bool {
        self.live_resolved || (!self.has_duplicate_keys && !self.shares_keys)
    }

    /// Read without deduplication at any `as_of` (no version of any of its keys elsewhere).
    pub fn clean_at_any_time(&self) -> bool {
        !self.has_duplicate_keys && !self.shares_keys
    }

    /// Fails, naming the file, when `bytes` are not what was written.
    pub fn verify(&self, bytes: &[u8]) -> Result<(), StorageError> {
        match self.crc32c {
            Some(expected) if crc32c::crc32c(bytes) != expected => Err(StorageError::CorruptFile {
                path: self.path.clone(),
                reason: format!(
                    "checksum mismatch ({} bytes, CRC-32C {:08x}, manifest says {expected:08x})",
                    bytes.len(),
                    crc32c::crc32c(bytes)
                ),
            }),
            _ if bytes.len() as u64 != self.size => Err(StorageError::CorruptFile {
                path: self.path.clone(),
                reason: format!("{} bytes, manifest says {}", bytes.len(), self.size),
            }),
            _ => Ok(()),
        }
    }
}

/// A range deletion: every row version written before it (`_seq < seq << ROW_BITS`) that
/// matches it is gone from `at` on. Kept (not applied to files) so `as_of` earlier than `at`
/// still sees the rows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Tombstone {
    /// Write-ahead log sequence of the deletion.
    pub seq: u64,
    /// When it was acknowledged (µs since the epoch, the log's clock).
    pub at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    /// Inclusive lower bound on `timestamp` (µs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<i64>,
    /// Exclusive upper bound on `timestamp` (µs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<i64>,
}

/// A file compaction took out of `files`, kept on disk for readers that may still need it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RetiredFile {
    pub path: String,
    /// When the compaction that replaced it committed (µs since the epoch).
    pub at: i64,
}

/// How long a retired file is remembered: well past any grace period, so a restart can still
/// tell a replaced file from the leftover of an interrupted write.
pub(crate) const RETIRED_MEMORY_MICROS: i64 = 7 * 86_400_000_000;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// `MANIFEST_FORMAT` when written by this build; absent (0) in older manifests.
    #[serde(default)]
    pub format: u32,
    pub version: u64,
    /// Every write-ahead log record of this table with a sequence up to here is in `files`
    /// (rows) or `tombstones` (deletions).
    pub persisted_seq: u64,
    pub files: Vec<FileMeta>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tombstones: Vec<Tombstone>,
    /// Files replaced by compaction, not yet known to be deleted: garbage collection waits a
    /// grace period for readers, and a restart in between must neither keep them forever nor
    /// report them as leftovers of an interrupted write.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired: Vec<RetiredFile>,
    /// Which server process committed this version (a random id per start): a version found
    /// already taken by our own process is an earlier attempt whose reply was lost.
    #[serde(default)]
    pub writer: String,
    /// CRC-32C of this manifest serialized without this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<u32>,
}

impl Manifest {
    fn without_checksum(&self) -> Manifest {
        Manifest {
            checksum: None,
            ..self.clone()
        }
    }

    /// What `encode` stores and `decode` gives back: this build's format, no checksum.
    pub(crate) fn as_stored(&self) -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT,
            ..self.without_checksum()
        }
    }

    /// The manifest as stored: in this build's format, sealed with a checksum of the rest.
    pub(crate) fn encode(&self) -> Result<Vec<u8>, StorageError> {
        let bare = self.as_stored();
        let body = serde_json::to_vec(&bare).map_err(StorageError::ManifestEncoding)?;
        let sealed = Manifest {
            checksum: Some(crc32c::crc32c(&body)),
            ..bare
        };
        serde_json::to_vec(&sealed).map_err(StorageError::ManifestEncoding)
    }

    pub(crate) fn decode(path: &Path, bytes: &[u8]) -> Result<Manifest, StorageError> {
        let corrupt = |reason: String| StorageError::CorruptManifest {
            path: path.to_string(),
            reason,
        };
        let mut m: Manifest = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        if m.format > MANIFEST_FORMAT {
            return Err(corrupt(format!(
                "written in manifest format {}, this build reads up to {MANIFEST_FORMAT}: upgrade meterbase",
                m.format
            )));
        }
        if let Some(expected) = m.checksum {
            // Checked over the document as written, minus its checksum: re-serializing the
            // struct would add the fields later formats introduced and never match.
            let mut doc: serde_json::Value =
                serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
            if let Some(o) = doc.as_object_mut() {
                o.shift_remove("checksum");
            }
            let body = serde_json::to_vec(&doc).map_err(|e| corrupt(e.to_string()))?;
            if crc32c::crc32c(&body) != expected {
                return Err(corrupt(format!(
                    "checksum mismatch (CRC-32C {:08x}, recorded {expected:08x})",
                    crc32c::crc32c(&body)
                )));
            }
        }
        if m.format == 0 {
            for f in &mut m.files {
                f.layout = layout_from_name(&f.path);
            }
        }
        Ok(m.without_checksum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_0_layouts_are_read_from_compaction_output_names() {
        // Outputs are numbered per group; names from before the numbering still count.
        for name in ["x/t-1-3-c7_2.parquet", "x/t-1-3-c7.parquet"] {
            assert_eq!(layout_from_name(name), FileLayout::Compacted);
        }
        assert_eq!(
            layout_from_name(
                "o/s/date=2025-01-01/t-00000000000000000001-00000000000000000003.parquet"
            ),
            FileLayout::Arrival
        );
    }
}
