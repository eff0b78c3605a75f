//! The persister: a frozen buffer chunk becomes sorted Parquet files, one per UTC day, listed
//! by the next manifest version together with the table's logged deletions; only then is
//! the chunk dropped from memory (the write-ahead log keeps the rows until a manifest
//! covers them).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use meterbase_schema::EventTypeDef;
use object_store::path::Path;

use crate::chunk::Chunk;
use crate::commit::commit_manifest;
use crate::context::Ctx;
use crate::error::StorageError;
use crate::format::manifest::{FileMeta, Manifest};
use crate::format::parquet::{EncodedFile, Layout, encode_batches, file_key_hashes};
use crate::format::paths::TablePaths;
use crate::overlap::{file_overlaps, mark_time_overlaps, overlapping_rows};
use crate::table::{PersistJob, Table};

/// Sorts the chunk by the table's `column_order` (then arrival), splits it by UTC day and
/// encodes each day. CPU-bound: run it off the async workers.
pub(crate) fn encode_chunk(
    paths: &TablePaths,
    def: &EventTypeDef,
    schema: &SchemaRef,
    chunk: &Chunk,
    key_sets: bool,
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
            key_sets,
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
        let c = chunk.clone();
        let d = def.clone();
        // Decided before encoding, from the whole chunk's time range (a superset of its
        // day files' overlaps, so never a read `mark_shared_keys` would refuse).
        let old_rows = overlapping_rows(&manifest.files, chunk.min_ts, chunk.max_ts);
        let key_sets = def.key_has_time() && old_keys_worth_reading(old_rows, chunk.rows as u64);
        let encoded =
            tokio::task::spawn_blocking(move || encode_chunk(&paths, &d, &schema, &c, key_sets))
                .await
                .map_err(|e| StorageError::TaskFailed {
                    task: "persist",
                    reason: e.to_string(),
                })??;
        let mut marked = manifest.files.clone();
        let mut encoded = encoded;
        mark_shared_keys(ctx, &def, &mut marked, &mut encoded).await?;
        let mut new_files = Vec::with_capacity(encoded.len());
        for f in encoded {
            ctx.put_file(&f.path, f.bytes).await?;
            new_files.push(f.meta);
            chunk_files += 1;
        }
        files += chunk_files as usize;
        let committed = commit_manifest(ctx, table, |current| {
            if current.persisted_seq >= chunk.max_seq {
                // An earlier attempt of this persist landed and was adopted.
                return None;
            }
            let mut next_files = if current.version == manifest.version {
                marked.clone()
            } else {
                current.files.clone()
            };
            let mut added = new_files.clone();
            if current.version != manifest.version {
                mark_time_overlaps(&mut next_files, &mut added);
            }
            next_files.extend(added);
            Some(Manifest {
                persisted_seq: chunk.max_seq,
                files: next_files,
                tombstones: table.tombstones_to_commit(),
                ..current.clone()
            })
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
            Some(next) => table.complete_persist(&chunk, next),
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

/// Flags new files, and the live files they share a unique key with, as needing
/// deduplication. With the timestamp in the key only files overlapping in time can share
/// a key, and only those are read (their key columns); without it every file is assumed to.
async fn mark_shared_keys(
    ctx: &Ctx,
    def: &EventTypeDef,
    live: &mut [FileMeta],
    new: &mut [EncodedFile],
) -> Result<(), StorageError> {
    if !def.key_has_time() {
        for f in new.iter_mut() {
            f.meta.shares_keys = true;
        }
        for f in live.iter_mut() {
            f.shares_keys = true;
        }
        return Ok(());
    }
    let new_rows: u64 = new.iter().map(|f| f.meta.rows).sum();
    let overlaps =
        |old: &FileMeta, f: &EncodedFile| file_overlaps(old, f.meta.min_ts, f.meta.max_ts);
    let old_rows: u64 = live
        .iter()
        .filter(|old| new.iter().any(|f| overlaps(old, f)))
        .map(|old| old.rows)
        .sum();
    let read_keys =
        new.iter().all(|f| f.keys.is_some()) && old_keys_worth_reading(old_rows, new_rows);
    for old in live.iter_mut() {
        let overlapping: Vec<usize> = (0..new.len()).filter(|&i| overlaps(old, &new[i])).collect();
        if overlapping.is_empty() {
            continue;
        }
        if !read_keys {
            old.shares_keys = true;
            for i in overlapping {
                new[i].meta.shares_keys = true;
            }
            continue;
        }
        let path = Path::from(old.path.as_str());
        let bytes = ctx.handle.get_bytes(&path).await?;
        old.verify(&bytes)?;
        let unique_key = def.unique_key.clone();
        let old_keys = tokio::task::spawn_blocking(move || file_key_hashes(bytes, &unique_key))
            .await
            .map_err(|e| StorageError::TaskFailed {
                task: "key check",
                reason: e.to_string(),
            })??;
        for i in overlapping {
            if new[i]
                .keys
                .as_ref()
                .is_none_or(|k| !k.is_disjoint(&old_keys))
            {
                new[i].meta.shares_keys = true;
                old.shares_keys = true;
            }
        }
    }
    Ok(())
}

/// Reading old files' keys pays off while they are small next to what is being written; past
/// that (a backfill over days that already hold much more, or a busy table flushing into
/// days it flushed into a moment ago) files are flagged by time overlap alone, which is
/// always correct, and compaction later makes them clean.
fn old_keys_worth_reading(old_rows: u64, new_rows: u64) -> bool {
    old_rows <= new_rows.saturating_mul(2).max(1_000_000)
}
