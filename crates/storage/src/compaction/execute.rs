//! Carrying out a compaction plan: each group's files read, merged (`merge`), written as
//! one sorted file, and all the swaps of a pass published by one manifest commit. The
//! inputs stay on disk until no snapshot taken before the swap is alive and the grace period
//! has passed (`gc`), so a running query never sees a file vanish. A crash before the
//! commit leaves unlisted outputs, a crash after it unlisted inputs: the next start
//! deletes both.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use meterbase_schema::{CUSTOMER_ID_COLUMN, EventTypeDef};
use object_store::path::Path;
use tracing::{info, warn};

use crate::adapt::adapt_batch;
use crate::commit::commit_manifest;
use crate::compaction::merge::{settle_arrival, surviving_rows};
use crate::compaction::plan::{CompactionPlan, PlanInput, SeqSpan, deletions_to_keep, plan};
use crate::compaction::worker::at_low_priority;
use crate::config::CompactionMode;
use crate::context::Ctx;
use crate::error::StorageError;
use crate::format::manifest::{FileMeta, Manifest, RetiredFile};
use crate::format::parquet::{EncodedFile, Layout, encode_batches, read_file};
use crate::mask::Masker;
use crate::overlap::{file_overlaps, mark_overlaps_with_live};
use crate::stats::CompactionStats;
use crate::table::Table;
use crate::vectors::{delete_unused, retire_released};

/// Rows of live files outside a pass's groups read to compare with its outputs: all of them.
/// A pass runs in the background at low priority and lets keys go day by day; a file it left
/// flagged would be deduplicated by every query until a later pass happened to merge it, and
/// the pass a persist wakes for corrections it could not compare (1% of 20M events spread
/// over a month, say: every outside file) exists to compare exactly those. A budget of 4M
/// rows left 19 of 23 month files flagged at 20M events.
const OUTSIDE_KEY_ROWS: u64 = u64::MAX;

/// Compacted files are sorted by customer first: billing asks "customer X in period P",
/// and with the customer leading, page statistics (and the page index) narrow such a query
/// to that customer's pages of each day instead of the whole day. Within a customer the
/// table's own `column_order` still applies.
fn compacted_order(def: &EventTypeDef) -> Vec<String> {
    let mut order = vec![CUSTOMER_ID_COLUMN.to_string()];
    order.extend(
        def.column_order
            .iter()
            .filter(|c| *c != CUSTOMER_ID_COLUMN)
            .cloned(),
    );
    order
}

/// Plans one pass over `table`, merges each group into one file and swaps them in one
/// manifest commit.
pub(crate) async fn compact_table(
    ctx: &Ctx,
    table: &Arc<Table>,
    mode: CompactionMode,
) -> Result<CompactionStats, StorageError> {
    let _one_at_a_time = table.compact_lock.lock().await;
    let manifest = table.manifest();
    let def = table.def();
    // Logged deletions not yet in a manifest count too: the commit below carries them.
    let tombstones = table.tombstones_to_commit();
    let plan = plan(&PlanInput {
        manifest: &manifest,
        tombstones: &tombstones,
        mode,
        max_rows: ctx.config.compaction.max_rows,
        history_retention: ctx.config.compaction.history_retention,
        now: meterbase_wal::now_micros(),
        key_has_time: def.key_has_time(),
        uploads_staging: table.uploads_staging(),
        min_buffered_seq: table.min_buffered_seq(),
    });
    if plan.groups.is_empty() {
        return Ok(CompactionStats::default());
    }
    let CompactionPlan {
        horizon,
        expired,
        deletions_applied,
        groups,
    } = plan;
    let schema = table.schema();
    let order = compacted_order(&def);
    let mut stats = CompactionStats::default();
    let mut replaced: Vec<FileMeta> = Vec::new();
    // Groups whose rows took one sequence, to check again when the swap commits.
    let mut one_seq_spans: Vec<SeqSpan> = Vec::new();
    let paths = table.paths();
    // Outputs are compared key by key with each other and with the live files outside every
    // group that they overlap (deletion vectors).
    let in_groups: HashSet<&str> = groups
        .iter()
        .flat_map(|g| g.files.iter().map(|f| f.path.as_str()))
        .collect();
    let outside: Vec<FileMeta> = manifest
        .files
        .iter()
        .filter(|f| !in_groups.contains(f.path.as_str()))
        .cloned()
        .collect();
    let mut masker = Masker::new(ctx, paths.clone(), &def, outside.clone(), OUTSIDE_KEY_ROWS);
    for group in groups {
        if ctx.stopping.load(Ordering::Relaxed) {
            // Shutting down: publish the groups already merged, leave the rest.
            break;
        }
        let mut batches = Vec::new();
        for f in &group.files {
            let bytes = ctx.handle.get_bytes(&Path::from(f.path.as_str())).await?;
            f.verify(&bytes)?;
            let (schema, visible_from) = (schema.clone(), f.visible_from);
            let read = at_low_priority(move || -> Result<_, StorageError> {
                read_file(bytes)?
                    .iter()
                    .map(|b| settle_arrival(adapt_batch(b, &schema)?, visible_from))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await??;
            batches.extend(read);
            stats.rows_in += f.rows as usize;
        }
        let (d, s, ex, o, p) = (
            def.clone(),
            schema.clone(),
            expired.clone(),
            order.clone(),
            paths.clone(),
        );
        let (span, one_seq, suffix) = (group.span, group.one_seq, group.name_suffix.clone());
        let encoded = at_low_priority(move || -> Result<_, StorageError> {
            let merged = arrow::compute::concat_batches(&s, &batches)?;
            drop(batches);
            let kept = surviving_rows(&merged, &d, &ex, horizon)?;
            if kept.num_rows() == 0 {
                return Ok(Vec::new());
            }
            encode_batches(
                &p,
                &d,
                &s,
                &[kept],
                (span.lo, span.hi),
                &Layout {
                    order: &o,
                    name_suffix: &suffix,
                    one_seq,
                    compacted: true,
                    rows_unique: false,
                    key_rows: true,
                },
            )
        })
        .await??;
        for EncodedFile {
            path,
            bytes,
            mut meta,
            key_rows,
        } in encoded
        {
            ctx.put_file(&path, bytes).await?;
            meta.deletions_applied = deletions_applied.max(
                group
                    .files
                    .iter()
                    .map(|g| g.deletions_applied)
                    .min()
                    .unwrap_or(0),
            );
            stats.rows_out += meta.rows as usize;
            if one_seq && !meta.has_duplicate_keys {
                one_seq_spans.push(span);
            }
            masker.add(meta, key_rows).await?;
        }
        stats.files_in += group.files.len();
        replaced.extend(group.files);
    }
    stats.files_one_seq = one_seq_spans.len();
    if replaced.is_empty() {
        return Ok(stats);
    }
    let (outputs, outside_after, vectors) = masker.finish().store(ctx, &paths).await?;
    stats.files_out = outputs.len();
    let bytes_in: u64 = replaced.iter().map(|f| f.size).sum();
    let bytes_out: u64 = outputs.iter().map(|f| f.size).sum();
    let swap = Swap {
        replaced,
        outputs,
        outside_before: outside,
        outside_after,
    };
    match commit_swap(ctx, table, swap, &one_seq_spans, horizon).await {
        // Vectors of files the commit did not take as compared (they changed meanwhile).
        Ok(()) => delete_unused(ctx, &paths, &vectors, &table.manifest()).await,
        // Abandoned before any commit: nothing lists them.
        Err(StorageError::CompactionAbandoned) => {
            delete_unused(ctx, &paths, &vectors, &table.manifest()).await;
            return Err(StorageError::CompactionAbandoned);
        }
        // The commit may have landed: a start removes whatever no manifest lists.
        Err(e) => return Err(e),
    }
    let counters = &ctx.stats;
    counters.compactions.fetch_add(1, Ordering::Relaxed);
    counters
        .compaction_bytes_read
        .fetch_add(bytes_in, Ordering::Relaxed);
    counters
        .compaction_bytes_written
        .fetch_add(bytes_out, Ordering::Relaxed);
    info!(table = %table.slug, org = %table.org_id, files_in = stats.files_in, files_out = stats.files_out, rows_in = stats.rows_in, rows_out = stats.rows_out, files_one_seq = stats.files_one_seq, "compacted");
    Ok(stats)
}

/// What a pass swaps: its inputs for its outputs, and the outside files as the comparison
/// with the outputs left them.
struct Swap {
    replaced: Vec<FileMeta>,
    outputs: Vec<FileMeta>,
    /// The live files outside every group when the pass began...
    outside_before: Vec<FileMeta>,
    /// ...and as comparing them with the outputs left them (flags, deletion vectors).
    outside_after: Vec<FileMeta>,
}

/// Swaps the inputs for the outputs in one manifest commit, unless something now falls inside
/// a range whose rows took one sequence (then nothing is swapped and the outputs go).
async fn commit_swap(
    ctx: &Ctx,
    table: &Arc<Table>,
    swap: Swap,
    one_seq_spans: &[SeqSpan],
    horizon: i64,
) -> Result<(), StorageError> {
    let Swap {
        replaced,
        outputs,
        outside_before,
        outside_after,
    } = swap;
    let _guard = table.flush_lock.lock().await;
    let gone: HashSet<&str> = replaced.iter().map(|f| f.path.as_str()).collect();
    let before: HashMap<&str, (&FileMeta, &FileMeta)> = outside_before
        .iter()
        .zip(&outside_after)
        .map(|(b, a)| (b.path.as_str(), (b, a)))
        .collect();
    let crossed = AtomicBool::new(false);
    let paths = table.paths();
    let mut released = Vec::new();
    let committed = commit_manifest(ctx, table, |current| {
        if !current.files.iter().any(|f| gone.contains(f.path.as_str())) {
            // An earlier attempt of this swap landed and was adopted.
            return None;
        }
        // What `may_share_one_seq` ruled out when the pass began must still be out: if
        // anything now falls inside a collapsed range, the swap does not happen.
        let (logged, buffered) = (table.tombstones_to_commit(), table.min_buffered_seq());
        let staying = current
            .files
            .iter()
            .filter(|f| !gone.contains(f.path.as_str()));
        if !one_seq_spans
            .iter()
            .all(|s| s.clear_of(staying.clone(), &logged, buffered))
        {
            crossed.store(true, Ordering::Relaxed);
            return None;
        }
        let mut added = outputs.clone();
        let mut files: Vec<FileMeta> = Vec::new();
        // Files a persist or an upload added while the pass ran: nobody compared them with
        // what the pass compared.
        let arrived: Vec<&FileMeta> = staying
            .clone()
            .filter(|f| !before.contains_key(f.path.as_str()))
            .collect();
        for f in staying {
            match before.get(f.path.as_str()) {
                // Unchanged since the pass compared it with the outputs: as that left it,
                // except that a file the pass found clean is not if a file arrived since
                // overlaps it (flagging by time left it as it was, already flagged).
                Some((was, now)) if *was == f => {
                    let mut kept = (*now).clone();
                    if kept.live_resolved
                        && !was.live_resolved
                        && arrived
                            .iter()
                            .any(|a| file_overlaps(a, kept.min_ts, kept.max_ts))
                    {
                        kept.live_resolved = false;
                    }
                    files.push(kept);
                }
                // Added or changed since (a persist compared it with files that are now
                // outputs' inputs): flagged against the outputs it overlaps.
                _ => {
                    let mut f = f.clone();
                    mark_overlaps_with_live(std::slice::from_mut(&mut f), &mut added);
                    files.push(f);
                }
            }
        }
        files.extend(added);
        let tombstones = deletions_to_keep(logged, &files, horizon, buffered);
        let now = meterbase_wal::now_micros();
        let memory = ctx.config.compaction.retired_memory().as_micros() as i64;
        let retired = current
            .retired
            .iter()
            .filter(|r| r.at > now - memory)
            .cloned()
            .chain(replaced.iter().map(|f| RetiredFile {
                path: f.path.clone(),
                at: now,
            }))
            .collect();
        let next = Manifest {
            files,
            tombstones,
            retired,
            ..current.clone()
        };
        let (next, gone_vectors) = retire_released(current, next, &paths, now);
        released = gone_vectors;
        Some(next)
    })
    .await?;
    if crossed.load(Ordering::Relaxed) {
        // Nothing was swapped: the inputs stay live and the outputs were never listed.
        warn!(table = %table.slug, org = %table.org_id, "a compaction's sequence range was crossed before it committed; not swapped");
        ctx.delete_unlisted(&outputs).await;
        return Err(StorageError::CompactionAbandoned);
    }
    let readers = match committed {
        Some(next) => table.publish_manifest_tracking(next),
        None => table.published_readers(),
    };
    table.retire(
        replaced
            .into_iter()
            .map(|f| f.path)
            .chain(released)
            .collect(),
        readers,
    );
    Ok(())
}
