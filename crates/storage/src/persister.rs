//! The persister: a frozen buffer chunk becomes sorted Parquet files, one per UTC day,
//! compared with the live files of their days (`mask`: deletion vectors), listed by the next
//! manifest version together with the table's logged deletions; only then is the chunk
//! dropped from memory (the write-ahead log keeps the rows until a manifest covers them).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use meterbase_schema::EventTypeDef;

use crate::chunk::Chunk;
use crate::commit::commit_manifest;
use crate::context::Ctx;
use crate::error::StorageError;
use crate::format::manifest::Manifest;
use crate::format::parquet::{EncodedFile, Layout, encode_batches};
use crate::format::paths::TablePaths;
use crate::mask::Masker;
use crate::overlap::{mark_time_overlaps, overlapping_rows};
use crate::table::{PersistJob, Table};
use crate::vectors::{delete_unused, retire_released};

/// Sorts the chunk by the table's `column_order` (then arrival), splits it by UTC day and
/// encodes each day. CPU-bound: run it off the async workers.
pub(crate) fn encode_chunk(
    paths: &TablePaths,
    def: &EventTypeDef,
    schema: &SchemaRef,
    chunk: &Chunk,
    key_rows: bool,
) -> Result<Vec<EncodedFile>, StorageError> {
    let batches: Vec<RecordBatch> = chunk.all_batches().cloned().collect();
    encode_batches(
        paths,
        def,
        schema,
        &batches,
        (chunk.min_seq, chunk.max_seq),
        &Layout {
            rows_unique: !chunk.has_duplicates,
            key_rows,
            ..Layout::arrival(&def.column_order)
        },
    )
}

/// Persists everything buffered in `table` now. Returns the number of files written.
pub(crate) async fn flush_table(ctx: &Ctx, table: &Arc<Table>) -> Result<usize, StorageError> {
    let _guard = table.flush_lock.lock().await;
    let mut files = 0;
    // Retries of frozen chunks first, then the active chunk frozen once: under steady load
    // the active chunk refills at once, and chasing it would cut it into tiny files.
    let mut froze = false;
    while let Some(PersistJob {
        chunk,
        def,
        schema,
        manifest,
        froze_active,
    }) = table.chunk_to_persist(!froze)
    {
        froze |= froze_active;
        let mut chunk_files = 0u64;
        let paths = table.paths();
        let (c, d, p) = (chunk.clone(), def.clone(), paths.clone());
        // Decided before encoding, from the whole chunk's time range (a superset of its
        // day files' overlaps, so never more than the masker's budget).
        let old_rows = overlapping_rows(&manifest.files, chunk.min_ts, chunk.max_ts);
        let key_rows = def.key_has_time()
            && old_keys_worth_reading(
                old_rows,
                chunk.rows as u64,
                ctx.config.compaction.persist_compare_rows,
            );
        let encoded =
            tokio::task::spawn_blocking(move || encode_chunk(&p, &d, &schema, &c, key_rows))
                .await
                .map_err(|e| StorageError::TaskFailed {
                    task: "persist",
                    reason: e.to_string(),
                })??;
        // Each day file compared with the live files of its day, key by key, when that is
        // worth it (`key_rows`); otherwise they are flagged to be deduplicated.
        let budget = if key_rows { old_rows } else { 0 };
        let mut masker = Masker::new(ctx, paths.clone(), &def, manifest.files.clone(), budget);
        let mut encoded = encoded;
        for f in &mut encoded {
            masker.add(f.meta.clone(), f.key_rows.take()).await?;
        }
        for f in encoded {
            ctx.put_file(&f.path, f.bytes).await?;
            chunk_files += 1;
        }
        let (new_files, live_files, vectors) = masker.finish().store(ctx, &paths).await?;
        files += chunk_files as usize;
        let mut released = Vec::new();
        let committed = commit_manifest(ctx, table, |current| {
            if current.persisted_seq >= chunk.max_seq {
                // An earlier attempt of this persist landed and was adopted.
                return None;
            }
            let (next_files, added) = if current.version == manifest.version {
                (live_files.clone(), new_files.clone())
            } else {
                // Not what was compared with: flag by time instead (the added files' own
                // vectors stay right, they mask only rows replaced by live rows).
                let mut next_files = current.files.clone();
                let mut added = new_files.clone();
                for f in &mut added {
                    f.live_resolved = false;
                }
                mark_time_overlaps(&mut next_files, &mut added);
                (next_files, added)
            };
            let next = Manifest {
                persisted_seq: chunk.max_seq,
                files: next_files.into_iter().chain(added).collect(),
                tombstones: table.tombstones_to_commit(),
                ..current.clone()
            };
            let (next, gone) = retire_released(current, next, &paths, meterbase_wal::now_micros());
            released = gone;
            Some(next)
        })
        .await?;
        ctx.stats
            .files_written
            .fetch_add(chunk_files, Ordering::Relaxed);
        ctx.stats
            .rows_persisted
            .fetch_add(chunk.rows as u64, Ordering::Relaxed);
        ctx.stats.flushes.fetch_add(1, Ordering::Relaxed);
        match committed {
            Some(next) => {
                // Without the timestamp in the key no pass short of a whole-table merge
                // compares them: the interval's passes are enough.
                if def.key_has_time() && next.files.iter().any(|f| !f.clean_now()) {
                    ctx.resolve_wanted.notify_one();
                }
                table.complete_persist(&chunk, next);
                table.retire(released, table.published_readers());
            }
            // An earlier attempt landed and its adoption dropped the chunk; a chunk still
            // here would be persisted again and again (a log that numbered records twice).
            None if table.is_frozen(&chunk) => {
                return Err(StorageError::SequenceReused {
                    chunk_max_seq: chunk.max_seq,
                    persisted_seq: table.manifest().persisted_seq,
                });
            }
            None => {}
        }
        // Vectors written for a commit that did not take them (an adopted earlier attempt).
        delete_unused(ctx, &paths, &vectors, &table.manifest()).await;
    }
    if table.has_pending_tombstones() {
        // Deletions with no rows to persist alongside: commit them on their own so the
        // log segments holding them can retire.
        if let Some(next) = commit_manifest(ctx, table, |current| {
            let tombstones = table.tombstones_to_commit();
            (tombstones.len() > current.tombstones.len()).then(|| Manifest {
                files: current.files.clone(),
                tombstones,
                ..current.clone()
            })
        })
        .await?
        {
            table.publish_manifest(next);
        }
    }
    Ok(files)
}

/// Reading old files' keys pays off while they are small next to what is being written; past
/// that (a backfill over days that already hold much more, corrections spread over a large
/// table, or a busy table flushing into days it flushed into a moment ago) files are flagged
/// by time overlap alone, which is always correct, and the compaction pass this persist
/// wakes (`Store::run_compactor`) compares them off the write path.
fn old_keys_worth_reading(old_rows: u64, new_rows: u64, always: u64) -> bool {
    old_rows <= new_rows.saturating_mul(2).max(always)
}
