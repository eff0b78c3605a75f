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

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub version: u64,
    /// Every write-ahead log record of this table with a sequence up to here is in `files`
    /// (rows) or `tombstones` (deletions).
    pub persisted_seq: u64,
    pub files: Vec<FileMeta>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tombstones: Vec<Tombstone>,
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
        serde_json::from_slice(&bytes).map_err(|e| StorageError::CorruptManifest {
            path: path.to_string(),
            reason: e.to_string(),
        })
    }

    /// Publishes this manifest as version `self.version`; fails if that version exists.
    pub(crate) async fn commit(
        &self,
        store: &ObjectStoreHandle,
        dir: &Path,
    ) -> Result<(), StorageError> {
        let path = dir.clone().join(format!("{:020}.json", self.version));
        let bytes = serde_json::to_vec(self).map_err(|e| StorageError::BadRecord(e.to_string()))?;
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        store
            .store
            .put_opts(&path, PutPayload::from(bytes), opts)
            .await
            .map_err(|e| StorageError::store(&path, e))?;
        store.sync_object(&path)?;
        // Older versions are no longer needed once this one is durable; keep a few for
        // inspection. Failing to delete them is harmless.
        if self.version > 3 {
            let old = dir.clone().join(format!("{:020}.json", self.version - 3));
            let _ = store.store.delete(&old).await;
        }
        Ok(())
    }
}
