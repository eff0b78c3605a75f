//! Staged uploads: rows too many to hold in memory (a multi-GiB CSV) are written straight to
//! Parquet files chunk by chunk, and published by one manifest commit at the end. Until that
//! commit no query can see them; a crash before it leaves only unlisted files, which the next
//! start deletes. Each chunk takes a sequence number from the log, so the rows order with
//! logged rows for replacement (`_seq`), and the commit takes another, whose instant is when
//! the whole upload became visible (`as_of`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use arrow::record_batch::RecordBatch;
use object_store::ObjectStoreExt;
use tracing::warn;

use crate::persist::{Layout, encode_batches};
use crate::table::{MAX_ROWS_PER_RECORD, stamp_batch};
use crate::{FileMeta, Manifest, StorageError, Store, Table};

/// An upload in progress: files written, not yet listed by any manifest.
pub struct Upload {
    table: Arc<Table>,
    files: Vec<FileMeta>,
    pub rows: usize,
    _staging: Staging,
}

/// Counts an upload among its table's `uploads` while it lives: its chunks hold sequence
/// numbers no manifest lists yet, which compaction must not collapse a range over.
struct Staging(Arc<Table>);

impl Staging {
    fn new(table: &Arc<Table>) -> Staging {
        table.uploads.fetch_add(1, Ordering::SeqCst);
        Staging(table.clone())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        self.0.uploads.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Store {
    pub fn begin_upload(&self, table: &Arc<Table>) -> Upload {
        Upload {
            table: table.clone(),
            files: Vec::new(),
            rows: 0,
            _staging: Staging::new(table),
        }
    }

    /// Writes one chunk of validated input rows as durable, unlisted files.
    pub async fn stage(&self, upload: &mut Upload, batch: RecordBatch) -> Result<(), StorageError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if batch.num_rows() > MAX_ROWS_PER_RECORD {
            return Err(StorageError::BadRecord(format!(
                "{} rows in one staged chunk; at most {MAX_ROWS_PER_RECORD}",
                batch.num_rows()
            )));
        }
        let table = upload.table.clone();
        let ack = self.reserve_seq(&table).await?;
        let def = table.def();
        let schema = table.schema();
        let org_id = table.org_id.clone();
        let rows = batch.num_rows();
        let encoded = tokio::task::spawn_blocking(move || {
            let stamped = stamp_batch(&batch, &schema, ack)?;
            encode_batches(
                &org_id,
                &def,
                &schema,
                &[stamped],
                (ack.seq, ack.seq),
                &Layout::arrival(&def.column_order),
            )
        })
        .await
        .map_err(|e| StorageError::BadRecord(format!("staging task failed: {e}")))??;
        for f in encoded {
            // Record the file before writing it so an abort removes a half-written one too.
            upload.files.push(f.meta);
            self.put_file(&f.path, f.bytes).await?;
        }
        upload.rows += rows;
        Ok(())
    }

    /// Publishes every staged file in one manifest commit; returns the rows made visible.
    pub async fn commit_upload(&self, upload: Upload) -> Result<usize, StorageError> {
        // `_staging` lives to the end: the upload counts as staging until it is listed.
        let Upload {
            table,
            mut files,
            rows,
            _staging,
        } = upload;
        if files.is_empty() {
            return Ok(0);
        }
        let _guard = table.flush_lock.lock().await;
        let still_there = self
            .table(&table.org_id, &table.type_id)
            .is_some_and(|t| Arc::ptr_eq(&t, &table));
        if !still_there {
            drop(_guard);
            self.delete_unlisted(&files).await;
            return Err(StorageError::UnknownTable);
        }
        let commit = self.reserve_seq(&table).await?;
        for f in &mut files {
            f.visible_from = Some(commit.ingested_at);
        }
        let first = files[0].path.clone();
        let committed = self
            .commit_manifest(&table, |current| {
                if current.files.iter().any(|f| f.path == first) {
                    // An earlier attempt of this commit landed and was adopted.
                    return None;
                }
                let mut live = current.files.clone();
                let mut staged = files.clone();
                mark_time_overlaps(&mut live, &mut staged);
                live.extend(staged);
                Some(Manifest {
                    files: live,
                    tombstones: table.tombstones_to_commit(),
                    ..current.clone()
                })
            })
            .await;
        // On failure the files stay: the commit may have landed after all (they are then
        // live), and if not, the next start removes them as unlisted.
        if let Some(next) = committed? {
            table.publish_manifest(next);
        }
        Ok(rows)
    }

    /// Deletes what an upload staged (best effort: the next start removes leftovers).
    pub async fn abort_upload(&self, upload: Upload) {
        self.delete_unlisted(&upload.files).await;
    }

    /// Deletes files no manifest lists (best effort: the next start removes leftovers).
    pub(crate) async fn delete_unlisted(&self, files: &[FileMeta]) {
        for f in files {
            let path = object_store::path::Path::from(f.path.as_str());
            match self.handle.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => warn!(%path, "could not delete an unlisted file: {e}"),
            }
        }
    }
}

/// An upload's files are not compared key by key (that would hold every key of a file of any
/// size in memory): any file overlapping another in time, staged or live, is flagged for
/// deduplication, which is always correct and only costs query time on those days.
pub(crate) fn mark_time_overlaps(live: &mut [FileMeta], staged: &mut [FileMeta]) {
    for i in 0..staged.len() {
        for j in 0..staged.len() {
            if i != j && time_overlap(&staged[i], &staged[j]) {
                staged[i].shares_keys = true;
            }
        }
    }
    mark_overlaps_with_live(live, staged);
}

/// `mark_time_overlaps` between `new` and `live` only, for new files whose sharing among
/// themselves is already decided.
pub(crate) fn mark_overlaps_with_live(live: &mut [FileMeta], new: &mut [FileMeta]) {
    for n in new.iter_mut() {
        for old in live.iter_mut() {
            if time_overlap(old, n) {
                old.shares_keys = true;
                n.shares_keys = true;
            }
        }
    }
}

fn time_overlap(a: &FileMeta, b: &FileMeta) -> bool {
    a.max_ts >= b.min_ts && a.min_ts <= b.max_ts
}
