//! What every stage of storage (persisting, uploads, compaction, garbage collection) works
//! with: the object store, the settings, the counters and this process's writer id. The
//! stages take it instead of the `Store`, so none of them depends on the store that drives
//! them.

use std::sync::atomic::AtomicBool;

use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use tokio::sync::Notify;
use tracing::warn;

use crate::config::StorageConfig;
use crate::error::StorageError;
use crate::format::manifest::FileMeta;
use crate::stats::StorageStats;
use crate::url::ObjectStoreHandle;

pub(crate) struct Ctx {
    pub handle: ObjectStoreHandle,
    pub config: StorageConfig,
    pub stats: StorageStats,
    /// Written into every manifest this process commits: a version found taken by this
    /// very process is an earlier attempt whose reply was lost.
    pub writer_id: String,
    /// Set on shutdown: a compaction pass stops after the group it is merging.
    pub stopping: AtomicBool,
    /// Woken by a persist that left files every query must deduplicate (their keys were
    /// not compared with the older files they overlap, e.g. corrections spread over the
    /// whole history): the compactor compares them soon instead of at its next interval.
    pub resolve_wanted: Notify,
}

impl Ctx {
    /// Puts one encoded file with `PutMode::Create`; durable when it returns (a local store
    /// syncs, S3 acknowledges stored objects).
    pub(crate) async fn put_file(&self, path: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
        let path = Path::from(path);
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .handle
            .store
            .put_opts(&path, PutPayload::from(bytes), opts)
            .await
        {
            Ok(_) => Ok(()),
            // Same name means the same sequence range of the same table: the same rows,
            // written by an attempt whose manifest commit did not happen.
            Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(StorageError::store(&path, e)),
        }
    }

    /// Deletes files no manifest lists (best effort: the next start removes leftovers).
    pub(crate) async fn delete_unlisted(&self, files: &[FileMeta]) {
        for f in files {
            let path = Path::from(f.path.as_str());
            match self.handle.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => warn!(%path, "could not delete an unlisted file: {e}"),
            }
        }
    }
}
