//! Compaction: the files of one (table, UTC day) merged into one sorted file, and days that
//! have settled merged with their neighbours of the same UTC month into files of up to
//! `max_rows`, published by one manifest commit that swaps inputs for outputs.
//!
//! It never changes an answer a query may still ask for. Versions replaced, and rows deleted,
//! longer ago than the history retention are dropped (no allowed `as_of` can see them);
//! everything younger is kept, so `as_of` within retention answers exactly as before. The
//! inputs stay on disk until no snapshot taken before the swap is alive and the grace period
//! (for readers outside this process) has passed, so a running query never sees a file
//! vanish. A crash before the commit leaves unlisted outputs, a crash after it unlisted
//! inputs: `Store::open` deletes both.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, AsArray, BooleanArray, TimestampMicrosecondArray, UInt64Array};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{TimestampMicrosecondType, UInt64Type};
use arrow::record_batch::RecordBatch;
use meterbase_schema::timestamp::{MICROS_PER_DAY, civil_from_days};
use meterbase_schema::{EventTypeDef, INGESTED_AT_COLUMN, SEQ_COLUMN};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use tracing::{info, warn};

use crate::persist::{EncodedFile, Layout, encode_batches};
use crate::table::KeySet;
use crate::table::{ROW_BITS, adapt_batch, key_hashes, key_rows};
use crate::upload::mark_overlaps_with_live;
use crate::{FileMeta, Manifest, StorageError, Store, Table, Tombstone};

/// Rows per compacted file: a merge holds its group in memory two or three times over
/// (read, sorted copy, encoded), so this bounds compaction's memory at a few hundred MiB.
pub const DEFAULT_COMPACTION_MAX_ROWS: usize = 1_000_000;

#[derive(Debug, Clone)]
pub struct CompactionConfig {
    /// How often the background pass runs; zero turns it off (`POST /admin/compact` still works).
    pub interval: Duration,
    /// Most rows merged into one output file.
    pub max_rows: usize,
    /// How long a replaced file stays after no snapshot needs it (readers outside the server).
    pub grace: Duration,
    /// Versions replaced or deleted longer ago than this are dropped for good.
    pub history_retention: Duration,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            interval: Duration::from_secs(60),
            max_rows: DEFAULT_COMPACTION_MAX_ROWS,
            grace: Duration::from_secs(300),
            history_retention: Duration::from_secs(400 * 86_400),
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CompactionStats {
    pub files_in: usize,
    pub files_out: usize,
    pub rows_in: usize,
    pub rows_out: usize,
    /// Outputs whose rows all took the group's latest `_seq` (`may_share_one_seq`).
    pub files_one_seq: usize,
}

impl std::ops::AddAssign for CompactionStats {
    fn add_assign(&mut self, o: Self) {
        self.files_in += o.files_in;
        self.files_out += o.files_out;
        self.rows_in += o.rows_in;
        self.rows_out += o.rows_out;
        self.files_one_seq += o.files_one_seq;
    }
}

/// Key sets of the outputs written so far that later outputs may overlap in time, so that
/// outputs overlapping each other (a day cut at `max_rows`, or a multi-day file next to one
/// that took a late day of its range) are flagged as sharing keys only when they do:
/// flagging by time would make queries deduplicate every such day for good. Groups come in
/// day order and an output starts on its group's first day, so an output that ended before
/// the new one's day began cannot overlap any later output and is let go. Past
/// `SIBLING_KEY_ROWS` held rows it stops holding keys and flags by time instead (always
/// correct, just slower to query).
#[derive(Default)]
struct SiblingKeys {
    /// Index into the outputs and its keys.
    held: Vec<(usize, KeySet)>,
    rows: usize,
    /// Outputs whose keys were not kept.
    unheld: Vec<usize>,
}

const SIBLING_KEY_ROWS: usize = 4_000_000;

impl SiblingKeys {
    /// Takes note of `outputs`' last file, whose keys are `keys`.
    fn add(&mut self, outputs: &mut [FileMeta], keys: KeySet) {
        let Some(new) = outputs.len().checked_sub(1) else {
            return;
        };
        let day_start = day_of(&outputs[new]) * MICROS_PER_DAY;
        self.held.retain(|(i, _)| outputs[*i].max_ts >= day_start);
        self.unheld.retain(|&i| outputs[i].max_ts >= day_start);
        self.rows = self.held.iter().map(|(_, k)| k.len()).sum();
        let overlaps = |i: usize| {
            outputs[i].max_ts >= outputs[new].min_ts && outputs[i].min_ts <= outputs[new].max_ts
        };
        let mut shared: Vec<usize> = self
            .held
            .iter()
            .filter(|(i, held)| overlaps(*i) && !held.is_disjoint(&keys))
            .map(|(i, _)| *i)
            .collect();
        shared.extend(self.unheld.iter().copied().filter(|&i| overlaps(i)));
        for &i in &shared {
            outputs[i].shares_keys = true;
        }
        outputs[new].shares_keys |= !shared.is_empty();
        if self.rows + keys.len() <= SIBLING_KEY_ROWS {
            self.rows += keys.len();
            self.held.push((new, keys));
        } else {
            // Its keys are not kept: later outputs overlapping it count as sharing keys.
            self.unheld.push(new);
        }
    }
}

/// Files a compaction replaced, waiting until no reader can need them.
pub(crate) struct Retired {
    pub paths: Vec<String>,
    /// Manifests published before the swap; while any is alive a snapshot may read the files.
    pub readers: Vec<Weak<Manifest>>,
    pub since: Instant,
}

fn day_of(f: &FileMeta) -> i64 {
    f.min_ts.div_euclid(MICROS_PER_DAY)
}

fn overlaps(f: &FileMeta, t: &Tombstone) -> bool {
    covers_time(t, f.min_ts, f.max_ts)
}

/// Whether deletion `t` may cover a row timed within `[min_ts, max_ts]`.
fn covers_time(t: &Tombstone, min_ts: i64, max_ts: i64) -> bool {
    t.from.is_none_or(|from| max_ts >= from) && t.to.is_none_or(|to| min_ts < to)
}

/// Compacted day files are sorted by customer first: billing asks "customer X in period P",
/// and with the customer leading, page statistics (and the page index) narrow such a query
/// to that customer's pages of each day instead of the whole day. Within a customer the
/// table's own `column_order` still applies.
fn compacted_order(def: &EventTypeDef) -> Vec<String> {
    let mut order = vec!["customer_id".to_string()];
    order.extend(
        def.column_order
            .iter()
            .filter(|c| *c != "customer_id")
            .cloned(),
    );
    order
}

/// Files compaction wrote are named `…-c<version>_<group>.parquet` (`…-c<version>` before
/// groups were numbered) and are already customer-first.
fn written_by_compaction(f: &FileMeta) -> bool {
    f.path.rsplit_once("-c").is_some_and(|(_, v)| {
        v.trim_end_matches(".parquet")
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'_')
    })
}

/// How much of a day one pass rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompactionMode {
    /// The background pass. A day that received files since the last pass merges them with
    /// compacted files at most twice their size: a row is then rewritten about
    /// log2(day rows / flush rows) times while the day keeps receiving events, not once per
    /// pass. A day that received nothing since (it has settled) is merged whole, as `Full`:
    /// files of one day overlap in time, so until then queries deduplicate across them.
    Tiered,
    /// Every file of a day into as few files as `max_rows` allows (`POST /admin/compact`).
    Full,
}

fn touched_by(f: &FileMeta, expired: &[Tombstone]) -> bool {
    expired
        .iter()
        .any(|t| f.deletions_applied < t.seq && f.min_seq < t.seq && overlaps(f, t))
}

/// `files`, in arrival order, cut into groups of at most `max_rows` rows.
fn cut(mut files: Vec<FileMeta>, max_rows: usize, groups: &mut Vec<Vec<FileMeta>>) {
    files.sort_by_key(|f| f.min_seq);
    let mut group: Vec<FileMeta> = Vec::new();
    let mut rows = 0usize;
    for f in files {
        if !group.is_empty() && rows + f.rows as usize > max_rows {
            groups.push(std::mem::take(&mut group));
            rows = 0;
        }
        rows += f.rows as usize;
        group.push(f);
    }
    if !group.is_empty() {
        groups.push(group);
    }
}

/// The tiered choice for one day (see `CompactionMode::Tiered`): its fresh files, then
/// compacted files, smallest first, while each is at most twice the rows gathered so far;
/// compacted files left out but holding rows of an expired deletion go alone.
fn tiered(files: Vec<FileMeta>, expired: &[Tombstone], max_rows: usize) -> Vec<Vec<FileMeta>> {
    let mut groups = Vec::new();
    let (mut chosen, mut compacted): (Vec<FileMeta>, Vec<FileMeta>) =
        files.into_iter().partition(|f| !written_by_compaction(f));
    compacted.sort_by_key(|f| f.rows);
    let mut rest = compacted.into_iter().peekable();
    let mut rows: usize = chosen.iter().map(|f| f.rows as usize).sum();
    while let Some(next) =
        rest.next_if(|f| f.rows as usize <= 2 * rows.max(1) && rows + f.rows as usize <= max_rows)
    {
        rows += next.rows as usize;
        chosen.push(next);
    }
    cut(chosen, max_rows, &mut groups);
    groups.extend(rest.filter(|f| touched_by(f, expired)).map(|f| vec![f]));
    groups
}

/// A day is merged with its neighbours of the month once it ended this long ago: events of a
/// day still arriving would otherwise rewrite a multi-day file again and again.
const SPAN_AFTER_MICROS: i64 = MICROS_PER_DAY;

/// The (year, month) of an instant, UTC.
fn month_of(micros: i64) -> (i64, u32) {
    let (y, m, _) = civil_from_days(micros.div_euclid(MICROS_PER_DAY));
    (y, m)
}

/// Consecutive settled days of one UTC month gathered into one group while their rows fit
/// in `max_rows`. A billing query asks for a customer's month: over one file per few days
/// it reads a few pages from each, where over day files it paid each file's opening, page
/// index and dictionary pages once per day (Q2 on the benchmark: 29 day files 16.8 ms, 8
/// four-day files 6.8 ms). Longer runs of a customer also compress better.
#[derive(Default)]
struct Span {
    files: Vec<FileMeta>,
    rows: usize,
    month: Option<(i64, u32)>,
}

impl Span {
    /// Adds the files of a day merged whole; false (nothing added) when they do not fit.
    fn add(&mut self, files: &[FileMeta], max_rows: usize, now: i64) -> bool {
        let rows: usize = files.iter().map(|f| f.rows as usize).sum();
        let (Some(lo), Some(hi)) = (
            files.iter().map(|f| f.min_ts).min(),
            files.iter().map(|f| f.max_ts).max(),
        ) else {
            return false;
        };
        let month = month_of(lo);
        let last_day_ended = (hi.div_euclid(MICROS_PER_DAY) + 1) * MICROS_PER_DAY;
        let fits = month_of(hi) == month
            && last_day_ended + SPAN_AFTER_MICROS <= now
            && self.rows + rows <= max_rows
            && self.month.is_none_or(|m| m == month);
        if fits {
            self.files.extend_from_slice(files);
            self.rows += rows;
            self.month = Some(month);
        }
        fits
    }

    fn close(&mut self, groups: &mut Vec<Vec<FileMeta>>) {
        let span = std::mem::take(self);
        if !span.files.is_empty() {
            groups.push(span.files);
        }
    }
}

/// Groups of files worth merging, per day (see `CompactionMode`), and settled days of a
/// month together (`Span`); a lone file is worth it when it is fresh from a flush (to put it
/// in customer order) or still holds rows of an expired deletion.
fn plan(
    manifest: &Manifest,
    expired: &[Tombstone],
    max_rows: usize,
    mode: CompactionMode,
    now: i64,
) -> Vec<Vec<FileMeta>> {
    let mut days: BTreeMap<i64, Vec<FileMeta>> = BTreeMap::new();
    for f in &manifest.files {
        days.entry(day_of(f)).or_default().push(f.clone());
    }
    let mut groups = Vec::new();
    let mut span = Span::default();
    for (_, files) in days {
        let settled = files.iter().all(written_by_compaction);
        if mode == CompactionMode::Full || settled {
            if span.add(&files, max_rows, now) {
                continue;
            }
            span.close(&mut groups);
            if span.add(&files, max_rows, now) {
                continue;
            }
            cut(files, max_rows, &mut groups);
        } else {
            span.close(&mut groups);
            groups.extend(tiered(files, expired, max_rows));
        }
    }
    span.close(&mut groups);
    groups.retain(|g| g.len() > 1 || !written_by_compaction(&g[0]) || touched_by(&g[0], expired));
    groups
}

/// A group's sequence range and time range: the rows `_seq` values may be collapsed over.
#[derive(Debug, Clone, Copy)]
struct SeqSpan {
    lo: u64,
    hi: u64,
    min_ts: i64,
    max_ts: i64,
}

impl SeqSpan {
    fn of(group: &[FileMeta]) -> SeqSpan {
        SeqSpan {
            lo: group.iter().map(|f| f.min_seq).min().unwrap_or(0),
            hi: group.iter().map(|f| f.max_seq).max().unwrap_or(0),
            min_ts: group.iter().map(|f| f.min_ts).min().unwrap_or(0),
            max_ts: group.iter().map(|f| f.max_ts).max().unwrap_or(0),
        }
    }

    /// Nothing else falls inside the range: none of `others` (files of the table outside the
    /// group) may hold a key of these rows and a sequence in it; no deletion that may cover
    /// these rows was made in it (it removes the rows that arrived before it, which one shared
    /// sequence could no longer tell apart); every buffered row is later.
    fn clear_of<'a>(
        &self,
        mut others: impl Iterator<Item = &'a FileMeta>,
        tombstones: &[Tombstone],
        min_buffered_seq: Option<u64>,
    ) -> bool {
        let inside = |lo: u64, hi: u64| hi >= self.lo && lo <= self.hi;
        min_buffered_seq.is_none_or(|s| s > self.hi)
            && !tombstones
                .iter()
                .any(|t| inside(t.seq, t.seq) && covers_time(t, self.min_ts, self.max_ts))
            && !others.any(|f| {
                inside(f.min_seq, f.max_seq) && f.max_ts >= self.min_ts && f.min_ts <= self.max_ts
            })
    }
}

/// Whether the rows of `group` may all take its latest `_seq` (see `Layout::one_seq`).
/// `_seq` does two things: the latest version of a key wins, and a deletion removes the rows
/// that arrived before it. One value for the group keeps both answers when nothing outside
/// the group falls inside its sequence range: no other file of overlapping time (sibling
/// groups of this pass included) holds a sequence in it, no deletion covering it was made
/// within it, no upload is staging (its chunks take sequences as they go and are listed
/// only at the end), the buffer holds only later rows, and the key includes the timestamp
/// (otherwise a version of a key may sit on any day). Versions within the group are checked
/// when it is encoded: a file holding two versions of a key keeps every row's own sequence.
/// Later arrivals take later sequences, so what holds now keeps holding.
fn may_share_one_seq(
    group: &[FileMeta],
    span: &SeqSpan,
    live: &[FileMeta],
    tombstones: &[Tombstone],
    key_has_time: bool,
    uploads_staging: bool,
    min_buffered_seq: Option<u64>,
) -> bool {
    let others = live
        .iter()
        .filter(|f| !group.iter().any(|g| g.path == f.path));
    key_has_time && !uploads_staging && span.clear_of(others, tombstones, min_buffered_seq)
}

/// The rows of `batch` that some allowed `as_of` can still see (see the module comment).
fn surviving_rows(
    batch: &RecordBatch,
    def: &EventTypeDef,
    expired: &[Tombstone],
    horizon: i64,
) -> Result<RecordBatch, StorageError> {
    let n = batch.num_rows();
    let seq = batch
        .column_by_name(SEQ_COLUMN)
        .and_then(|c| c.as_primitive_opt::<UInt64Type>())
        .ok_or_else(|| StorageError::BadRecord("file without _seq".into()))?;
    let ts = batch.column(1).as_primitive::<TimestampMicrosecondType>();
    let at = batch
        .column_by_name(INGESTED_AT_COLUMN)
        .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
        .ok_or_else(|| StorageError::BadRecord("file without _ingested_at".into()))?;
    let customers = batch.column(0).as_string::<i32>();
    let mut keep = vec![true; n];
    for t in expired {
        for (i, k) in keep.iter_mut().enumerate() {
            if *k
                && seq.value(i) < t.seq << ROW_BITS
                && t.customer_id
                    .as_deref()
                    .is_none_or(|c| customers.value(i) == c)
                && t.from.is_none_or(|f| ts.value(i) >= f)
                && t.to.is_none_or(|to| ts.value(i) < to)
            {
                *k = false;
            }
        }
    }
    // A version replaced by one that arrived before the horizon is invisible to every
    // allowed `as_of`. Only the inputs are compared (a newer version elsewhere just means
    // the older one is kept a while longer).
    if def.key_has_time() {
        let versions = Versions {
            batch,
            unique_key: &def.unique_key,
            seq,
            at,
            horizon,
        };
        versions.drop_replaced(&key_hashes(batch, &def.unique_key)?, &mut keep)?;
    }
    if keep.iter().all(|k| *k) {
        return Ok(batch.clone());
    }
    Ok(filter_record_batch(batch, &BooleanArray::from(keep))?)
}

/// The rows of one merge, for finding versions that replace each other.
struct Versions<'a> {
    batch: &'a RecordBatch,
    unique_key: &'a [String],
    seq: &'a UInt64Array,
    at: &'a TimestampMicrosecondArray,
    horizon: i64,
}

impl Versions<'_> {
    /// Clears `keep` for every version replaced by a later one that arrived before the
    /// horizon. Rows are matched by their key hash (`hashes`) and confirmed by comparing
    /// the keys themselves; the first two different keys sharing a hash (about never with
    /// 64 bits) send the whole batch through `drop_replaced_exact`. Keying a map by the
    /// row-format keys instead was 43% of a compaction pass's CPU.
    fn drop_replaced(&self, hashes: &[u64], keep: &mut [bool]) -> Result<(), StorageError> {
        use std::collections::hash_map::Entry;
        let mut decided = keep.to_vec();
        let mut rows: Option<arrow::row::Rows> = None;
        let mut newest: HashMap<u64, usize, foldhash::fast::FixedState> =
            HashMap::with_capacity_and_hasher(keep.len(), Default::default());
        for (i, &hash) in hashes.iter().enumerate() {
            if !decided[i] {
                continue;
            }
            match newest.entry(hash) {
                Entry::Vacant(e) => {
                    e.insert(i);
                }
                Entry::Occupied(mut e) => {
                    let j = *e.get();
                    let rows = match &mut rows {
                        Some(rows) => rows,
                        None => rows.insert(key_rows(self.batch, self.unique_key)?),
                    };
                    if rows.row(i) != rows.row(j) {
                        return self.drop_replaced_exact(keep);
                    }
                    if self.supersede(i, j, &mut decided) {
                        e.insert(i);
                    }
                }
            }
        }
        keep.copy_from_slice(&decided);
        Ok(())
    }

    /// `drop_replaced` keyed by the keys themselves.
    fn drop_replaced_exact(&self, keep: &mut [bool]) -> Result<(), StorageError> {
        let rows = key_rows(self.batch, self.unique_key)?;
        let mut newest: HashMap<arrow::row::Row<'_>, usize, foldhash::fast::FixedState> =
            HashMap::with_capacity_and_hasher(keep.len(), Default::default());
        for i in 0..keep.len() {
            if !keep[i] {
                continue;
            }
            let key = rows.row(i);
            match newest.get(&key) {
                Some(&j) => {
                    if self.supersede(i, j, keep) {
                        newest.insert(key, i);
                    }
                }
                None => {
                    newest.insert(key, i);
                }
            }
        }
        Ok(())
    }

    /// Rows `i` and `j` (the newest seen so far) hold one key: the older one is dropped if
    /// the newer arrived before the horizon. True when `i` is the newer.
    fn supersede(&self, i: usize, j: usize, keep: &mut [bool]) -> bool {
        if self.seq.value(j) > self.seq.value(i) {
            if self.at.value(j) < self.horizon {
                keep[i] = false;
            }
            false
        } else {
            if self.at.value(i) < self.horizon {
                keep[j] = false;
            }
            true
        }
    }
}

/// Rows of an upload arrived when the upload committed: the merged file has no per-file
/// `visible_from`, so the instant moves into the rows.
fn settle_arrival(
    batch: RecordBatch,
    visible_from: Option<i64>,
) -> Result<RecordBatch, StorageError> {
    let Some(v) = visible_from else {
        return Ok(batch);
    };
    let idx = batch
        .schema_ref()
        .index_of(INGESTED_AT_COLUMN)
        .map_err(|e| StorageError::BadRecord(e.to_string()))?;
    let at = batch.column(idx).as_primitive::<TimestampMicrosecondType>();
    let moved: TimestampMicrosecondArray = at.unary(|x| x.max(v));
    let moved: ArrayRef = Arc::new(moved.with_timezone("UTC"));
    let mut cols = batch.columns().to_vec();
    cols[idx] = moved;
    Ok(RecordBatch::try_new(batch.schema(), cols)?)
}

type Job = Box<dyn FnOnce() + Send>;

/// Runs `work` on the compaction thread, which runs at the lowest CPU priority. Compaction
/// only tidies rows that are already durable and queryable, so under load it should take
/// the cores ingest and queries leave idle, not compete with them. One long-lived thread
/// (not one per job) so its allocations stay in one heap.
async fn at_low_priority<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, StorageError> {
    static WORKER: std::sync::OnceLock<Result<std::sync::mpsc::Sender<Job>, String>> =
        std::sync::OnceLock::new();
    let worker = WORKER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("meterbase-compact".into())
            .spawn(move || {
                lower_this_threads_priority();
                for job in rx {
                    // A panicking job drops its reply sender; the caller sees the error.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                }
            })
            .map(|_| tx)
            .map_err(|e| format!("cannot start the compaction thread: {e}"))
    });
    let worker = worker
        .as_ref()
        .map_err(|e| StorageError::BadRecord(e.clone()))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    worker
        .send(Box::new(move || {
            let _ = tx.send(work());
        }))
        .map_err(|_| StorageError::BadRecord("the compaction thread stopped".into()))?;
    rx.await
        .map_err(|_| StorageError::BadRecord("a compaction job failed".into()))
}

#[cfg(target_os = "linux")]
fn lower_this_threads_priority() {
    // SAFETY: plain syscall on integer arguments. Under Linux the nice value belongs to a
    // thread, so this lowers only the compaction thread. Failure just leaves it at normal
    // priority.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19);
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_this_threads_priority() {}

fn read_file(bytes: bytes::Bytes) -> Result<Vec<RecordBatch>, StorageError> {
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)?
        .with_batch_size(64 * 1024)
        .build()?;
    Ok(reader.collect::<Result<Vec<_>, _>>()?)
}

impl Store {
    /// Compacts every table once.
    pub async fn compact_all(&self, mode: CompactionMode) -> Result<CompactionStats, StorageError> {
        let mut total = CompactionStats::default();
        for t in self.tables() {
            total += self.compact_table(&t, mode).await?;
        }
        self.collect_garbage().await;
        Ok(total)
    }

    /// Merges each group of `plan` into one file and swaps them in one manifest commit.
    pub async fn compact_table(
        &self,
        table: &Arc<Table>,
        mode: CompactionMode,
    ) -> Result<CompactionStats, StorageError> {
        let _one_at_a_time = table.compact_lock.lock().await;
        let now = meterbase_wal::now_micros();
        let horizon = now - self.config.compaction.history_retention.as_micros() as i64;
        let manifest = table.manifest();
        // Logged deletions not yet in a manifest count too: the commit below carries them.
        let tombstones = table.tombstones_to_commit();
        let expired: Vec<Tombstone> = tombstones
            .iter()
            .filter(|t| t.at < horizon)
            .cloned()
            .collect();
        let groups = plan(
            &manifest,
            &expired,
            self.config.compaction.max_rows,
            mode,
            now,
        );
        if groups.is_empty() {
            return Ok(CompactionStats::default());
        }
        let def = table.def();
        let schema = table.schema();
        let applied = expired.iter().map(|t| t.seq).max().unwrap_or(0);
        let mut stats = CompactionStats::default();
        let mut replaced: Vec<FileMeta> = Vec::new();
        let mut outputs: Vec<FileMeta> = Vec::new();
        let mut siblings = SiblingKeys::default();
        let key_has_time = def.key_has_time();
        let uploads_staging = table.uploads_staging();
        let min_buffered_seq = table.min_buffered_seq();
        // Groups whose rows took one sequence, to check again when the swap commits.
        let mut one_seq_spans: Vec<SeqSpan> = Vec::new();
        for (group_no, group) in groups.into_iter().enumerate() {
            if self.stopping.load(std::sync::atomic::Ordering::Relaxed) {
                // Shutting down: publish the groups already merged, leave the rest.
                break;
            }
            let mut batches = Vec::new();
            for f in &group {
                let bytes = self.handle.get_bytes(&Path::from(f.path.as_str())).await?;
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
            let (d, s, ex) = (def.clone(), schema.clone(), expired.clone());
            let org_id = table.org_id.clone();
            let span = SeqSpan::of(&group);
            // The group number keeps two groups of one day apart even when their sequence
            // ranges coincide: `put_file` takes an existing name for the same rows.
            let suffix = format!("-c{}_{group_no}", manifest.version + 1);
            let one_seq = may_share_one_seq(
                &group,
                &span,
                &manifest.files,
                &tombstones,
                key_has_time,
                uploads_staging,
                min_buffered_seq,
            );
            let encoded = at_low_priority(move || -> Result<_, StorageError> {
                let merged = arrow::compute::concat_batches(&s, &batches)?;
                drop(batches);
                let kept = surviving_rows(&merged, &d, &ex, horizon)?;
                if kept.num_rows() == 0 {
                    return Ok(Vec::new());
                }
                encode_batches(
                    &org_id,
                    &d,
                    &s,
                    &[kept],
                    (span.lo, span.hi),
                    &Layout {
                        order: &compacted_order(&d),
                        name_suffix: &suffix,
                        one_seq,
                        compacted: true,
                        rows_unique: false,
                        key_sets: true,
                    },
                )
            })
            .await??;
            for EncodedFile {
                path,
                bytes,
                mut meta,
                keys,
            } in encoded
            {
                self.put_file(&path, bytes).await?;
                meta.deletions_applied =
                    applied.max(group.iter().map(|g| g.deletions_applied).min().unwrap_or(0));
                stats.rows_out += meta.rows as usize;
                if one_seq && !meta.has_duplicate_keys {
                    one_seq_spans.push(span);
                }
                outputs.push(meta);
                let keys = keys.ok_or_else(|| {
                    StorageError::BadRecord("a compaction output without its key set".into())
                })?;
                siblings.add(&mut outputs, keys);
            }
            stats.files_in += group.len();
            replaced.extend(group);
        }
        stats.files_out = outputs.len();
        stats.files_one_seq = one_seq_spans.len();
        if replaced.is_empty() {
            return Ok(stats);
        }
        let bytes_in: u64 = replaced.iter().map(|f| f.size).sum();
        let bytes_out: u64 = outputs.iter().map(|f| f.size).sum();
        self.commit_compaction(table, replaced, outputs, &one_seq_spans, horizon)
            .await?;
        let counters = &self.stats;
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

    async fn commit_compaction(
        &self,
        table: &Arc<Table>,
        replaced: Vec<FileMeta>,
        outputs: Vec<FileMeta>,
        one_seq_spans: &[SeqSpan],
        horizon: i64,
    ) -> Result<(), StorageError> {
        let _guard = table.flush_lock.lock().await;
        let gone: std::collections::HashSet<&str> =
            replaced.iter().map(|f| f.path.as_str()).collect();
        let crossed = std::sync::atomic::AtomicBool::new(false);
        let committed = self
            .commit_manifest(table, |current| {
                if !current.files.iter().any(|f| gone.contains(f.path.as_str())) {
                    // An earlier attempt of this swap landed and was adopted.
                    return None;
                }
                let mut files: Vec<FileMeta> = current
                    .files
                    .iter()
                    .filter(|f| !gone.contains(f.path.as_str()))
                    .cloned()
                    .collect();
                // What `may_share_one_seq` ruled out when the pass began must still be out:
                // if anything now falls inside a collapsed range, the swap does not happen.
                let (logged, buffered) = (table.tombstones_to_commit(), table.min_buffered_seq());
                if !one_seq_spans
                    .iter()
                    .all(|s| s.clear_of(files.iter(), &logged, buffered))
                {
                    crossed.store(true, std::sync::atomic::Ordering::Relaxed);
                    return None;
                }
                let mut added = outputs.clone();
                // Outputs among themselves were compared by key (`SiblingKeys`).
                mark_overlaps_with_live(&mut files, &mut added);
                files.extend(added);
                // An expired deletion is forgotten once no file (nor the buffer) can still
                // hold a row it covers.
                let unpersisted = buffered.unwrap_or(u64::MAX);
                let tombstones: Vec<Tombstone> = logged
                    .into_iter()
                    .filter(|t| {
                        let spent = t.at < horizon
                            && unpersisted > t.seq
                            && files.iter().all(|f| {
                                f.min_seq > t.seq || f.deletions_applied >= t.seq || !overlaps(f, t)
                            });
                        !spent
                    })
                    .collect();
                let now = meterbase_wal::now_micros();
                let retired = current
                    .retired
                    .iter()
                    .filter(|r| r.at > now - crate::manifest::RETIRED_MEMORY_MICROS)
                    .cloned()
                    .chain(replaced.iter().map(|f| crate::manifest::RetiredFile {
                        path: f.path.clone(),
                        at: now,
                    }))
                    .collect();
                Some(Manifest {
                    files,
                    tombstones,
                    retired,
                    ..current.clone()
                })
            })
            .await?;
        if crossed.load(std::sync::atomic::Ordering::Relaxed) {
            // Nothing was swapped: the inputs stay live and the outputs were never listed.
            warn!(table = %table.slug, org = %table.org_id, "a compaction's sequence range was crossed before it committed; not swapped");
            self.delete_unlisted(&outputs).await;
            return Err(StorageError::BadRecord(
                "compaction abandoned: its sequence range was crossed".into(),
            ));
        }
        let readers = match committed {
            Some(next) => table.publish_manifest_tracking(next),
            None => table.published_readers(),
        };
        table
            .retired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Retired {
                paths: replaced.into_iter().map(|f| f.path).collect(),
                readers,
                since: Instant::now(),
            });
        Ok(())
    }

    /// Deletes replaced files nobody can read any more. Returns how many were deleted.
    pub async fn collect_garbage(&self) -> usize {
        let mut deleted = 0;
        for t in self.tables() {
            let due: Vec<Retired> = {
                let mut retired = t.retired.lock().unwrap_or_else(|p| p.into_inner());
                let (due, keep): (Vec<_>, Vec<_>) =
                    std::mem::take(&mut *retired).into_iter().partition(|r| {
                        r.since.elapsed() >= self.config.compaction.grace
                            && r.readers.iter().all(|w| w.strong_count() == 0)
                    });
                *retired = keep;
                due
            };
            for r in due {
                for p in r.paths {
                    let path = Path::from(p.as_str());
                    match self.handle.store.delete(&path).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => deleted += 1,
                        // Left for the next start's clean-up.
                        Err(e) => warn!(%path, "could not delete a compacted file: {e}"),
                    }
                }
            }
        }
        deleted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Matching versions by key hash finds exactly what keying by the keys does, also
        /// when every hash collides (the fallback) and with rows already dropped.
        #[test]
        fn replaced_versions_found_by_hash_are_the_exact_ones(
            rows in proptest::collection::vec(
                (0u8..4, 0i64..4, proptest::num::u32::ANY, proptest::bool::ANY, proptest::bool::weighted(0.9)),
                1..80,
            ),
            colliding in proptest::bool::ANY,
        ) {
            use arrow::array::StringArray;
            use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
            let stamp = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
            let schema = Arc::new(Schema::new(vec![
                Field::new("customer_id", DataType::Utf8, false),
                Field::new("timestamp", stamp(), false),
            ]));
            let customers: Vec<String> = rows.iter().map(|r| format!("c{}", r.0)).collect();
            let batch = RecordBatch::try_new(
                schema,
                vec![
                    Arc::new(StringArray::from(customers)),
                    Arc::new(TimestampMicrosecondArray::from(rows.iter().map(|r| r.1).collect::<Vec<_>>()).with_timezone("UTC")),
                ],
            )
            .unwrap();
            // Distinct sequences in no particular order, as rows of several files merge.
            let seq = UInt64Array::from_iter_values(
                rows.iter().enumerate().map(|(i, r)| ((r.2 as u64) << 8) | i as u64),
            );
            let at = TimestampMicrosecondArray::from_iter_values(
                rows.iter().map(|r| if r.3 { 50 } else { 150 }),
            );
            let unique_key = vec!["customer_id".to_string(), "timestamp".to_string()];
            let versions = Versions { batch: &batch, unique_key: &unique_key, seq: &seq, at: &at, horizon: 100 };
            let start: Vec<bool> = rows.iter().map(|r| r.4).collect();
            let mut exact = start.clone();
            versions.drop_replaced_exact(&mut exact).unwrap();
            let hashes = if colliding {
                vec![7; rows.len()]
            } else {
                key_hashes(&batch, &unique_key).unwrap()
            };
            let mut by_hash = start;
            versions.drop_replaced(&hashes, &mut by_hash).unwrap();
            proptest::prop_assert_eq!(by_hash, exact);
        }
    }

    fn file(day: i64, rows: u64, min_seq: u64) -> FileMeta {
        FileMeta {
            path: format!("f{day}-{min_seq}"),
            size: 1,
            rows,
            min_ts: day * MICROS_PER_DAY,
            max_ts: day * MICROS_PER_DAY + 10,
            min_seq,
            max_seq: min_seq,
            schema_version: 1,
            has_duplicate_keys: false,
            shares_keys: false,
            visible_from: None,
            deletions_applied: 0,
            crc32c: None,
        }
    }

    fn compacted(rows: u64, min_seq: u64) -> FileMeta {
        FileMeta {
            path: format!("x/t-{min_seq}-{min_seq}-c3.parquet"),
            ..file(1, rows, min_seq)
        }
    }

    /// A deletion of everything, logged at `seq`.
    fn delete_all(seq: u64) -> Tombstone {
        Tombstone {
            seq,
            at: 0,
            customer_id: None,
            from: None,
            to: None,
        }
    }

    #[test]
    fn plans_days_with_several_files_cut_at_max_rows() {
        let m = Manifest {
            files: vec![
                file(1, 10, 1),
                file(1, 10, 2),
                file(1, 10, 3),
                file(2, 10, 4),
            ],
            ..Manifest::default()
        };
        let g = plan(&m, &[], 25, CompactionMode::Full, 0);
        // Day 1 cut into two groups at 25 rows, and day 2's lone fresh file.
        assert_eq!(g.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 1, 1]);
        let lone = Manifest {
            files: vec![compacted(10, 1)],
            ..Manifest::default()
        };
        for mode in [CompactionMode::Full, CompactionMode::Tiered] {
            assert!(plan(&lone, &[], 25, mode, 0).is_empty());
        }
        let t = delete_all(9);
        for mode in [CompactionMode::Full, CompactionMode::Tiered] {
            assert_eq!(plan(&lone, std::slice::from_ref(&t), 100, mode, 0).len(), 1);
        }
    }

    #[test]
    fn tiered_plans_leave_big_compacted_files_alone() {
        let paths = |g: &[Vec<FileMeta>]| -> Vec<Vec<String>> {
            g.iter()
                .map(|g| g.iter().map(|f| f.path.clone()).collect())
                .collect()
        };
        let m = Manifest {
            files: vec![
                compacted(1000, 1),
                compacted(10, 50),
                file(1, 5, 60),
                file(1, 6, 70),
            ],
            ..Manifest::default()
        };
        let g = plan(&m, &[], 10_000, CompactionMode::Tiered, 0);
        // Fresh rows (11) take the 10-row compacted file along, not the 1000-row one.
        assert_eq!(
            paths(&g),
            vec![vec!["x/t-50-50-c3.parquet", "f1-60", "f1-70"]]
        );
        // A big file holding rows of an expired deletion is rewritten on its own.
        let g = plan(&m, &[delete_all(9)], 10_000, CompactionMode::Tiered, 0);
        assert_eq!(g.len(), 2);
        assert_eq!(paths(&g)[1], vec!["x/t-1-1-c3.parquet"]);
        // A day that received nothing since the last pass has settled: merged whole.
        let m = Manifest {
            files: vec![compacted(1000, 1), compacted(10, 50), compacted(12, 80)],
            ..Manifest::default()
        };
        assert_eq!(plan(&m, &[], 10_000, CompactionMode::Tiered, 0)[0].len(), 3);
        // Outputs are numbered per group; names from before the numbering still count.
        for name in ["x/t-1-3-c7_2.parquet", "x/t-1-3-c7.parquet"] {
            assert!(written_by_compaction(&FileMeta {
                path: name.into(),
                ..file(1, 1, 1)
            }));
        }
        assert!(!written_by_compaction(&file(1, 1, 1)));
        // Full mode merges the whole day.
        assert_eq!(plan(&m, &[], 10_000, CompactionMode::Full, 0)[0].len(), 3);
    }

    #[test]
    fn outputs_overlapping_in_time_are_compared_by_key_whatever_their_first_day() {
        let span = |from: i64, to: i64, seq: u64| FileMeta {
            max_ts: to * MICROS_PER_DAY,
            ..file(from, 10, seq)
        };
        let keys = |k: &[u64]| k.iter().copied().collect::<KeySet>();
        let mut siblings = SiblingKeys::default();
        let mut outputs = Vec::new();
        // Days 1-4, then a file that starts on day 3 holding a version of one of its keys.
        outputs.push(span(1, 4, 1));
        siblings.add(&mut outputs, keys(&[1, 2]));
        outputs.push(span(3, 6, 2));
        siblings.add(&mut outputs, keys(&[2, 3]));
        assert!(outputs[0].shares_keys && outputs[1].shares_keys);
        // The same hash on days that do not overlap is another key (the key holds the time).
        outputs.push(span(8, 9, 3));
        siblings.add(&mut outputs, keys(&[3]));
        assert!(!outputs[2].shares_keys);
        // Overlapping without a shared key: not flagged.
        outputs.push(span(9, 9, 4));
        siblings.add(&mut outputs, keys(&[7]));
        assert!(!outputs[3].shares_keys && !outputs[2].shares_keys);
    }

    #[test]
    fn settled_days_of_a_month_merge_while_their_rows_fit() {
        use meterbase_schema::timestamp::days_from_civil;
        let day = |m: u32, d: u32| days_from_civil(2025, m, d);
        let settled = |d: i64, rows: u64| FileMeta {
            path: format!("x/t-{d}-{d}-c3.parquet"),
            ..file(d, rows, d as u64)
        };
        let names = |g: &[Vec<FileMeta>]| -> Vec<Vec<String>> {
            g.iter()
                .map(|g| g.iter().map(|f| f.path.clone()).collect())
                .collect()
        };
        let later = (day(6, 1)) * MICROS_PER_DAY;
        let m = Manifest {
            files: vec![
                settled(day(1, 30), 10),
                settled(day(1, 31), 10),
                settled(day(2, 1), 10),
                settled(day(2, 2), 10),
                settled(day(2, 3), 10),
            ],
            ..Manifest::default()
        };
        // Not across the month's end, and not past max_rows: 2 February stands alone.
        let g = plan(&m, &[], 25, CompactionMode::Tiered, later);
        let (jan30, jan31, feb1, feb2, feb3) = (
            day(1, 30).to_string(),
            day(1, 31).to_string(),
            day(2, 1).to_string(),
            day(2, 2).to_string(),
            day(2, 3).to_string(),
        );
        let path = |d: &str| format!("x/t-{d}-{d}-c3.parquet");
        assert_eq!(
            names(&g),
            vec![
                vec![path(&jan30), path(&jan31)],
                vec![path(&feb1), path(&feb2)]
            ]
        );
        // A day that ended less than a day ago is still merged on its own.
        let soon = (day(2, 3) + 1) * MICROS_PER_DAY + MICROS_PER_DAY / 2;
        let g = plan(&m, &[], 100, CompactionMode::Tiered, soon);
        assert_eq!(
            names(&g),
            vec![
                vec![path(&jan30), path(&jan31)],
                vec![path(&feb1), path(&feb2)]
            ]
        );
        // A day still taking fresh files breaks the run (its fresh file is merged the tiered
        // way, alone here); in Full mode it joins it.
        let mut busy = m.clone();
        busy.files.push(file(day(2, 2), 1, 99));
        let g = plan(&busy, &[], 100, CompactionMode::Tiered, later);
        assert_eq!(
            names(&g),
            vec![
                vec![path(&jan30), path(&jan31)],
                vec![format!("f{feb2}-99")]
            ]
        );
        let g = plan(&busy, &[], 100, CompactionMode::Full, later);
        assert_eq!(g.len(), 2);
        assert_eq!(g[1].len(), 4);
        assert!(g[1].iter().any(|f| f.path == path(&feb3)));
    }

    #[test]
    fn rows_share_one_seq_only_when_nothing_else_falls_in_their_range() {
        let mut a = file(1, 10, 5);
        a.max_seq = 8;
        let b = FileMeta {
            max_seq: 12,
            ..file(1, 10, 10)
        };
        let group = vec![a, b];
        let span = SeqSpan::of(&group);
        let ok = |live: &[FileMeta], tombstones: &[Tombstone], buffered: Option<u64>| {
            may_share_one_seq(&group, &span, live, tombstones, true, false, buffered)
        };
        assert!(ok(&group, &[], None));
        // A file of the same time whose sequences fall inside [5, 12]: say, a version
        // that arrived between the group's rows.
        let between = FileMeta {
            path: "between".into(),
            ..file(1, 1, 9)
        };
        assert!(!ok(
            &[group.clone(), vec![between.clone()]].concat(),
            &[],
            None
        ));
        // The same sequences on another day, or later ones on this day, are fine.
        let other_day = FileMeta {
            path: "other".into(),
            ..file(2, 1, 9)
        };
        let later = FileMeta {
            path: "later".into(),
            ..file(1, 1, 13)
        };
        assert!(ok(
            &[group.clone(), vec![other_day, later]].concat(),
            &[],
            None
        ));
        // A deletion made inside the range, unless it covers other times only.
        assert!(!ok(&group, &[delete_all(7)], None));
        assert!(ok(&group, &[delete_all(4), delete_all(13)], None));
        let elsewhere = Tombstone {
            from: Some(5 * MICROS_PER_DAY),
            ..delete_all(7)
        };
        assert!(ok(&group, &[elsewhere], None));
        // Buffered rows must all be later; no upload may be staging; the key needs time.
        assert!(!ok(&group, &[], Some(12)));
        assert!(ok(&group, &[], Some(13)));
        assert!(!may_share_one_seq(
            &group,
            &span,
            &group,
            &[],
            true,
            true,
            None
        ));
        assert!(!may_share_one_seq(
            &group,
            &span,
            &group,
            &[],
            false,
            false,
            None
        ));
    }
}
