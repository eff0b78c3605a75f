//! Staged uploads: rows too many to hold in memory (a multi-GiB CSV) are written straight to
//! Parquet files chunk by chunk, and published by one manifest commit at the end. Until that
//! commit no query can see them; a crash before it leaves only unlisted files, which the next
//! start deletes. Each chunk takes a sequence number from the log, so the rows order with
//! logged rows for replacement (`_seq`), and the commit takes another, whose instant is when
//! the whole upload became visible (`as_of`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use arrow::record_batch::RecordBatch;
use meterbase_wal::{Ack, Seq};

use crate::commit::commit_manifest;
use crate::context::Ctx;
use crate::error::StorageError;
use crate::format::manifest::{FileMeta, Manifest};
use crate::format::parquet::{Layout, encode_batches};
use crate::identity::{MAX_ROWS_PER_RECORD, stamp_batch};
use crate::overlap::mark_time_overlaps;
use crate::table::Table;

/// An upload in progress: files written, not yet listed by any manifest.
pub struct Upload {
    table: Arc<Table>,
    files: Vec<FileMeta>,
    pub rows: usize,
    /// The sequence of the first chunk staged: where the upload's range in the log begins.
    first_seq: Option<Seq>,
    _staging: Staging,
}

/// What a committed upload made visible: its rows and, when it had any, the log sequences
/// from its first staged chunk to its commit (an ingest receipt's range).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadCommit {
    pub rows: usize,
    pub seqs: Option<(Seq, Seq)>,
}

/// Counts an upload among its table's `uploads` while it lives: its chunks hold sequence
/// numbers no manifest lists yet, which compaction must not collapse a range over.
pub(crate) struct Staging(Arc<Table>);

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

impl Upload {
    pub(crate) fn new(table: &Arc<Table>) -> Upload {
        Upload {
            table: table.clone(),
            files: Vec::new(),
            rows: 0,
            first_seq: None,
            _staging: Staging::new(table),
        }
    }

    pub(crate) fn table(&self) -> &Arc<Table> {
        &self.table
    }

    pub(crate) fn files(&self) -> &[FileMeta] {
        &self.files
    }

    pub(crate) fn first_seq(&self) -> Option<Seq> {
        self.first_seq
    }

    /// The table, its staged files and rows, and the guard that keeps it counted as staging
    /// until dropped.
    pub(crate) fn into_parts(self) -> (Arc<Table>, Vec<FileMeta>, usize, Staging) {
        (self.table, self.files, self.rows, self._staging)
    }
}

/// Writes one chunk of validated input rows as durable, unlisted files, their rows stamped
/// with `ack` (a sequence reserved in the log).
pub(crate) async fn stage(
    ctx: &Ctx,
    upload: &mut Upload,
    batch: RecordBatch,
    ack: Ack,
) -> Result<(), StorageError> {
    upload.first_seq.get_or_insert(ack.seq);
    let table = upload.table.clone();
    let def = table.def();
    let schema = table.schema();
    let paths = table.paths();
    let rows = batch.num_rows();
    let encoded = tokio::task::spawn_blocking(move || {
        let stamped = stamp_batch(&batch, &schema, ack)?;
        encode_batches(
            &paths,
            &def,
            &schema,
            &[stamped],
            (ack.seq, ack.seq),
            &Layout::arrival(&def.column_order),
        )
    })
    .await
    .map_err(|e| StorageError::TaskFailed {
        task: "staging",
        reason: e.to_string(),
    })??;
    for f in encoded {
        // Record the file before writing it so an abort removes a half-written one too.
        upload.files.push(f.meta);
        ctx.put_file(&f.path, f.bytes).await?;
    }
    upload.rows += rows;
    Ok(())
}

/// A chunk staged in one piece may hold at most this many rows (a `_seq` per row).
pub(crate) fn check_chunk(batch: &RecordBatch) -> Result<(), StorageError> {
    if batch.num_rows() > MAX_ROWS_PER_RECORD {
        return Err(StorageError::TooManyRows {
            rows: batch.num_rows(),
            max: MAX_ROWS_PER_RECORD,
        });
    }
    Ok(())
}

/// Lists every staged file in one manifest commit, visible from `commit` (a sequence
/// reserved in the log for the instant the upload became visible). The caller holds the
/// table's `flush_lock`.
pub(crate) async fn publish(
    ctx: &Ctx,
    table: &Arc<Table>,
    mut files: Vec<FileMeta>,
    commit: Ack,
) -> Result<(), StorageError> {
    for f in &mut files {
        f.visible_from = Some(commit.ingested_at);
    }
    let first = files[0].path.clone();
    let committed = commit_manifest(ctx, table, |current| {
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
        if table.def().key_has_time() && next.files.iter().any(|f| !f.clean_now()) {
            ctx.resolve_wanted.notify_one();
        }
        table.publish_manifest(next);
    }
    Ok(())
}
