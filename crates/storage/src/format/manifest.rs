//! The per-table manifest: which Parquet files are live and up to which write-ahead log
//! sequence the table is persisted. Each version is a new immutable object created with
//! `PutMode::Create`, so two writers can never both commit the same version.

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::{ObjectStoreHandle, StorageError};

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
}

impl FileMeta {
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

pub(crate) fn manifest_dir(org_id: &str, slug: &str, type_id: &str) -> Path {
    Path::from(format!("{org_id}/{slug}/_manifest/{type_id}"))
}

impl Manifest {
    /// The newest version under `dir`, or an empty manifest when there is none.
    pub(crate) async fn load_latest(
        store: &ObjectStoreHandle,
        dir: &Path,
    ) -> Result<Manifest, StorageError> {
        let metas: Vec<_> = store
            .store
            .list(Some(dir))
            .try_collect()
            .await
            .map_err(|e| StorageError::store(dir, e))?;
        let latest = metas
            .iter()
            .filter_map(|m| {
                let name = m.location.filename()?;
                let v: u64 = name.strip_suffix(".json")?.parse().ok()?;
                Some((v, m.location.clone()))
            })
            .max_by_key(|(v, _)| *v);
        let Some((_, path)) = latest else {
            return Ok(Manifest::default());
        };
        let bytes = store.get_bytes(&path).await?;
        Manifest::decode(&path, &bytes)
    }

    fn without_checksum(&self) -> Manifest {
        Manifest {
            checksum: None,
            ..self.clone()
        }
    }

    pub(crate) fn encode(&self) -> Result<Vec<u8>, StorageError> {
        let bare = self.without_checksum();
        let body = serde_json::to_vec(&bare).map_err(|e| StorageError::BadRecord(e.to_string()))?;
        let sealed = Manifest {
            checksum: Some(crc32c::crc32c(&body)),
            ..bare
        };
        serde_json::to_vec(&sealed).map_err(|e| StorageError::BadRecord(e.to_string()))
    }

    pub(crate) fn decode(path: &Path, bytes: &[u8]) -> Result<Manifest, StorageError> {
        let corrupt = |reason: String| StorageError::CorruptManifest {
            path: path.to_string(),
            reason,
        };
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        if let Some(expected) = m.checksum {
            let body =
                serde_json::to_vec(&m.without_checksum()).map_err(|e| corrupt(e.to_string()))?;
            if crc32c::crc32c(&body) != expected {
                return Err(corrupt(format!(
                    "checksum mismatch (CRC-32C {:08x}, recorded {expected:08x})",
                    crc32c::crc32c(&body)
                )));
            }
        }
        Ok(m.without_checksum())
    }

    /// Publishes this manifest as version `self.version`. If that version exists already it
    /// is read back: identical means an earlier attempt of this very commit landed (fine);
    /// anything else is `ManifestTaken` with what is there.
    pub(crate) async fn commit(
        &self,
        store: &ObjectStoreHandle,
        dir: &Path,
    ) -> Result<(), StorageError> {
        let path = dir.clone().join(format!("{:020}.json", self.version));
        let bytes = self.encode()?;
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match store
            .store
            .put_opts(&path, PutPayload::from(bytes), opts)
            .await
        {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. }) => {
                let existing = store.get_bytes(&path).await?;
                let landed = Manifest::decode(&path, &existing)?;
                if landed != self.without_checksum() {
                    return Err(StorageError::ManifestTaken {
                        path: path.to_string(),
                        landed: Box::new(landed),
                    });
                }
            }
            Err(e) => return Err(StorageError::store(&path, e)),
        }
        // Older versions are no longer needed once this one is durable; keep a few for
        // inspection. Failing to delete them is harmless.
        if self.version > 3 {
            let old = dir.clone().join(format!("{:020}.json", self.version - 3));
            let _ = store.store.delete(&old).await;
        }
        Ok(())
    }
}
