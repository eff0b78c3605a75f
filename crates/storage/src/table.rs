//! One table = one event type of one organisation: its buffer (an active chunk taking new
//! rows, frozen chunks being persisted) and its manifest, behind one short lock so a query's
//! snapshot always sees each row exactly once, in the buffer or in a file.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use arrow::array::{ArrayRef, AsArray, TimestampMicrosecondArray, UInt64Array, new_null_array};
use arrow::compute::kernels::aggregate::{max, min};
use arrow::datatypes::{Int64Type, SchemaRef, TimestampMicrosecondType};
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};
use meterbase_schema::EventTypeDef;
use meterbase_wal::{Ack, Seq};

use crate::{Manifest, StorageError, Tombstone};

/// Rows of one write-ahead log record carry `_seq = record_seq << ROW_BITS | row`.
pub const ROW_BITS: u32 = 20;
pub const MAX_ROWS_PER_RECORD: usize = 1 << ROW_BITS;

/// Writes of fewer rows than this (single events, small requests) are not kept as batches of
/// their own: a 1-row `RecordBatch` costs ~1 KiB of buffers and arrays, which made a stream
/// of single events flush a file per day every second and made every persist and query
/// walk one batch per event. They wait in `Chunk::small` and are merged by `concat_batches`.
const SMALL_BATCH_ROWS: usize = 64;
/// How many rows of small writes are merged into one batch.
const MERGED_ROWS: usize = 1024;

#[derive(Debug, Default)]
pub(crate) struct Chunk {
    /// In log order; `small` holds writes later than all of these.
    batches: Vec<RecordBatch>,
    small: Vec<RecordBatch>,
    small_rows: usize,
    small_bytes: usize,
    /// Hashes of the unique keys of the rows, to tell whether the buffer can hold two
    /// versions of a key (equal keys have equal hashes; a collision only costs a dedup).
    pub keys: KeySet,
    /// Two rows of this chunk may share a unique key (a hash repeated). Keys shared with
    /// the frozen chunk are `TableState::shares_with_frozen`'s.
    pub has_duplicates: bool,
    pub rows: usize,
    pub bytes: usize,
    pub min_seq: Seq,
    pub max_seq: Seq,
    pub min_ts: i64,
    pub max_ts: i64,
}

impl Chunk {
    fn push(&mut self, seq: Seq, batch: RecordBatch, bytes: usize, min_ts: i64, max_ts: i64) {
        if self.is_empty() {
            self.min_seq = seq;
            self.min_ts = min_ts;
            self.max_ts = max_ts;
        } else {
            self.min_ts = self.min_ts.min(min_ts);
            self.max_ts = self.max_ts.max(max_ts);
        }
        self.max_seq = seq;
        self.rows += batch.num_rows();
        self.bytes += bytes;
        let small = batch.num_rows() < SMALL_BATCH_ROWS;
        // A schema change (a field added to the event type) starts a new merge: the batches
        // `concat_batches` joins must share one schema.
        if !small
            || self
                .small
                .first()
                .is_some_and(|b| b.schema() != batch.schema())
        {
            self.merge_small();
        }
        if small {
            self.small_rows += batch.num_rows();
            self.small_bytes += bytes;
            self.small.push(batch);
            if self.small_rows >= MERGED_ROWS {
                self.merge_small();
            }
        } else {
            self.batches.push(batch);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.batches.is_empty() && self.small.is_empty()
    }

    /// Every batch, in log order.
    pub(crate) fn all_batches(&self) -> impl Iterator<Item = &RecordBatch> {
        self.batches.iter().chain(&self.small)
    }

    /// Moves the small writes into `batches` as one batch (as they are, should the merge
    /// fail: it only saves memory and time, it decides nothing).
    fn merge_small(&mut self) {
        match self.small.len() {
            0 => return,
            1 => self.batches.append(&mut self.small),
            _ => match arrow::compute::concat_batches(&self.small[0].schema(), &self.small) {
                Ok(merged) => {
                    let merged_bytes = merged.get_array_memory_size();
                    self.bytes = self.bytes - self.small_bytes + merged_bytes;
                    self.batches.push(merged);
                    self.small.clear();
                }
                Err(_) => self.batches.append(&mut self.small),
            },
        }
        self.small_rows = 0;
        self.small_bytes = 0;
    }
}

/// What the persister needs to write one chunk, taken under the table lock.
pub(crate) struct PersistJob {
    pub chunk: Arc<Chunk>,
    pub def: Arc<EventTypeDef>,
    pub schema: SchemaRef,
    pub manifest: Arc<Manifest>,
    /// True when this call froze the active chunk (false for a retry of a frozen one).
    pub froze_active: bool,
}

pub(crate) struct TableState {
    pub def: Arc<EventTypeDef>,
    pub schema: SchemaRef,
    pub manifest: Arc<Manifest>,
    pub frozen: Vec<Arc<Chunk>>,
    pub active: Chunk,
    pub active_since: Option<Instant>,
    /// Deletions acknowledged but not yet in a committed manifest (only in the log).
    pub pending_tombstones: Vec<Tombstone>,
    /// Key hashes of active rows written while a chunk was frozen and not yet looked up in
    /// its keys. Only a query needs that answer (whether the buffer needs deduplicating), so
    /// writes leave the lookups to the next snapshot (`may_share_with_frozen`): done per
    /// write they were ~4% of batched-ingest CPU, on the log writer thread. Never longer than the active chunk,
    /// which the buffer limit bounds.
    unchecked_keys: Vec<u64>,
    /// Some active row shares a key with a frozen one.
    shares_with_frozen: bool,
}

/// Most unchecked hashes a snapshot looks up (~1 ms): the lookups hold the table lock, which
/// the log writer needs for every acknowledgement.
const MAX_KEYS_CHECKED_UNDER_LOCK: usize = 1 << 16;

impl TableState {
    /// Whether an active row may share a key with a frozen one: the unchecked hashes looked
    /// up in the frozen chunks' keys, or, past `MAX_KEYS_CHECKED_UNDER_LOCK` of them, "maybe"
    /// (the query then deduplicates the buffer, which a busy table's buffer usually needs
    /// anyway: it overlaps the files just flushed in time). Either answer is correct.
    fn may_share_with_frozen(&mut self) -> bool {
        if self.unchecked_keys.len() > MAX_KEYS_CHECKED_UNDER_LOCK {
            return true;
        }
        let frozen = &self.frozen;
        self.shares_with_frozen |= self
            .unchecked_keys
            .iter()
            .any(|h| frozen.iter().any(|c| c.keys.contains(h)));
        self.unchecked_keys.clear();
        self.shares_with_frozen
    }

    /// Once no chunk is frozen, active rows can share a key with a file only, which queries
    /// find by time overlap. Also gives back what a table that went quiet while its last
    /// chunk was persisted no longer needs: the active key set was sized like that chunk
    /// (`Table::chunk_to_persist`), and an idle table must not hold it for good.
    fn forget_frozen_if_none(&mut self) {
        if !self.frozen.is_empty() {
            return;
        }
        let trim = |capacity: usize, used: usize| capacity > 4 * used.max(1024);
        let used = self.unchecked_keys.len();
        self.unchecked_keys.clear();
        if trim(self.unchecked_keys.capacity(), used) {
            self.unchecked_keys.shrink_to(used);
        }
        self.shares_with_frozen = false;
        if trim(self.active.keys.capacity(), self.active.keys.len()) {
            self.active.keys.shrink_to_fit();
        }
    }
}

pub struct Table {
    pub org_id: String,
    pub type_id: String,
    pub slug: String,
    state: Mutex<TableState>,
    pub(crate) flush_lock: tokio::sync::Mutex<()>,
    pub(crate) compact_lock: tokio::sync::Mutex<()>,
    pub(crate) retired: Mutex<Vec<crate::compact::Retired>>,
    /// Every manifest that was current once and may still be held by a snapshot.
    published: Mutex<Vec<std::sync::Weak<Manifest>>>,
    buffered_bytes: Arc<BufferGauge>,
    /// Uploads begun and not yet committed or dropped (see `compact::may_share_one_seq`).
    pub(crate) uploads: AtomicUsize,
    pub(crate) next_attempt: Mutex<Option<(Instant, u32)>>,
}

/// Bytes buffered in all tables, with a wake-up for writes waiting for room: a write that
/// finds the buffer full waits (bounded) for a persist to free some instead of being refused
/// at once, so a client under load is slowed, not bounced for a whole `Retry-After`.
#[derive(Debug, Default)]
pub(crate) struct BufferGauge {
    bytes: AtomicUsize,
    /// Bytes of writes waiting for room (held in memory outside the buffer).
    waiting: AtomicUsize,
    room: tokio::sync::Notify,
}

/// A write's place among those waiting for room; gives it back when dropped.
pub(crate) struct Waiting<'a> {
    gauge: &'a BufferGauge,
    bytes: usize,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.gauge.waiting.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

impl BufferGauge {
    pub(crate) fn get(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    fn add(&self, n: usize) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// Follows a chunk whose size went from `before` to `after` bytes (a merge of small
    /// writes can shrink it).
    fn resize(&self, before: usize, after: usize) {
        if after >= before {
            self.add(after - before);
        } else {
            self.release(before - after);
        }
    }

    fn release(&self, n: usize) {
        self.bytes.fetch_sub(n, Ordering::Relaxed);
        self.room.notify_waiters();
    }

    /// Joins the writes waiting for room unless `limit` bytes already wait.
    pub(crate) fn wait_in_line(&self, bytes: usize, limit: usize) -> Option<Waiting<'_>> {
        self.waiting
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
                (w == 0 || w + bytes <= limit).then_some(w + bytes)
            })
            .ok()
            .map(|_| Waiting { gauge: self, bytes })
    }

    /// Resolves once the buffer holds fewer than `limit` bytes.
    pub(crate) async fn room_below(&self, limit: usize) {
        loop {
            let mut notified = std::pin::pin!(self.room.notified());
            // Registered before the check, so a release between the check and the wait
            // still wakes it.
            notified.as_mut().enable();
            if self.get() < limit {
                return;
            }
            notified.await;
        }
    }
}

/// What one query sees of one table: files and buffered rows, taken under one lock.
#[derive(Clone, Debug)]
pub struct TableSnapshot {
    pub slug: String,
    pub def: Arc<EventTypeDef>,
    /// The table schema: input columns, `_ingested_at`, `_seq`.
    pub schema: SchemaRef,
    pub manifest: Arc<Manifest>,
    /// Buffered rows, already adapted to `schema`.
    pub buffer: Vec<RecordBatch>,
    /// Time range of the buffered rows, `None` when the buffer is empty.
    pub buffer_ts_range: Option<(i64, i64)>,
    /// True when two buffered rows may share a unique key.
    pub buffer_has_duplicates: bool,
    /// Every deletion, committed or only logged, oldest first.
    pub tombstones: Vec<Tombstone>,
    /// When set, the snapshot shows the table as it stood just before this log sequence:
    /// later rows and deletions are left out (how a deletion counts what it removed).
    pub before_seq: Option<u64>,
}

/// Gives `batch` exactly the columns of `schema`, by name: columns added to the event type
/// after the batch was written become nulls.
pub fn adapt_batch(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, StorageError> {
    if batch.schema_ref() == schema {
        return Ok(batch.clone());
    }
    let cols: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) => c.clone(),
            None => new_null_array(f.data_type(), batch.num_rows()),
        })
        .collect();
    Ok(RecordBatch::try_new(schema.clone(), cols)?)
}

impl Table {
    pub(crate) fn new(
        org_id: &str,
        def: EventTypeDef,
        manifest: Manifest,
        buffered_bytes: Arc<BufferGauge>,
    ) -> Result<Table, StorageError> {
        let schema = def.table_schema()?;
        Ok(Table {
            org_id: org_id.to_string(),
            type_id: def.id.clone(),
            slug: def.api_slug.clone(),
            state: Mutex::new(TableState {
                def: Arc::new(def),
                schema,
                manifest: Arc::new(manifest),
                frozen: Vec::new(),
                active: Chunk::default(),
                active_since: None,
                pending_tombstones: Vec::new(),
                unchecked_keys: Vec::new(),
                shares_with_frozen: false,
            }),
            flush_lock: tokio::sync::Mutex::new(()),
            compact_lock: tokio::sync::Mutex::new(()),
            retired: Mutex::new(Vec::new()),
            published: Mutex::new(Vec::new()),
            buffered_bytes,
            uploads: AtomicUsize::new(0),
            next_attempt: Mutex::new(None),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, TableState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn def(&self) -> Arc<EventTypeDef> {
        self.lock().def.clone()
    }

    /// A new definition (rename, added nullable fields). Buffered rows are adapted lazily.
    pub fn set_def(&self, def: EventTypeDef) -> Result<(), StorageError> {
        let schema = def.table_schema()?;
        let mut st = self.lock();
        st.schema = schema;
        st.def = Arc::new(def);
        Ok(())
    }

    /// Appends the rows of one durable write-ahead log record. Called in sequence order.
    pub(crate) fn push(
        &self,
        ack: Ack,
        input: RecordBatch,
        hashes: Option<Vec<u64>>,
    ) -> Result<(), StorageError> {
        let rows = input.num_rows();
        if rows == 0 {
            return Ok(());
        }
        let (schema, def) = {
            let st = self.lock();
            (st.schema.clone(), st.def.clone())
        };
        let hashes = match hashes {
            Some(h) => h,
            None => key_hashes(&input, &def.unique_key)?,
        };
        let batch = stamp_batch(&input, &schema, ack)?;
        let ts = batch.column(1).as_primitive::<TimestampMicrosecondType>();
        let (lo, hi) = (min(ts).unwrap_or(0), max(ts).unwrap_or(0));
        let bytes = batch.get_array_memory_size();
        let mut guard = self.lock();
        let st = &mut *guard;
        if st.active.is_empty() {
            st.active_since = Some(Instant::now());
        }
        let mut dup = false;
        for h in &hashes {
            dup |= !st.active.keys.insert(*h);
        }
        st.active.has_duplicates |= dup;
        if !st.frozen.is_empty() {
            st.unchecked_keys.extend_from_slice(&hashes);
        }
        let before = st.active.bytes;
        st.active.push(ack.seq, batch, bytes, lo, hi);
        let after = st.active.bytes;
        drop(guard);
        self.buffered_bytes.resize(before, after);
        Ok(())
    }

    pub fn snapshot(&self) -> Result<TableSnapshot, StorageError> {
        let mut st = self.lock();
        let buffer_has_duplicates = st.may_share_with_frozen()
            || st.active.has_duplicates
            || st.frozen.iter().any(|c| c.has_duplicates);
        let mut raw: Vec<RecordBatch> = Vec::new();
        let mut range: Option<(i64, i64)> = None;
        for c in st
            .frozen
            .iter()
            .map(|c| c.as_ref())
            .chain(std::iter::once(&st.active))
        {
            if c.is_empty() {
                continue;
            }
            raw.extend(c.all_batches().cloned());
            range = Some(match range {
                None => (c.min_ts, c.max_ts),
                Some((a, b)) => (a.min(c.min_ts), b.max(c.max_ts)),
            });
        }
        let snap = TableSnapshot {
            slug: st.def.api_slug.clone(),
            def: st.def.clone(),
            schema: st.schema.clone(),
            manifest: st.manifest.clone(),
            buffer: Vec::new(),
            buffer_ts_range: range,
            buffer_has_duplicates,
            tombstones: st
                .manifest
                .tombstones
                .iter()
                .chain(&st.pending_tombstones)
                .cloned()
                .collect(),
            before_seq: None,
        };
        drop(st);
        let buffer = raw
            .iter()
            .map(|b| adapt_batch(b, &snap.schema))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TableSnapshot { buffer, ..snap })
    }

    /// Rows waiting in memory (active and frozen) and when the active chunk started.
    pub fn buffered(&self) -> (usize, usize, Option<Instant>) {
        let st = self.lock();
        let rows = st.active.rows + st.frozen.iter().map(|c| c.rows).sum::<usize>();
        let bytes = st.active.bytes + st.frozen.iter().map(|c| c.bytes).sum::<usize>();
        (rows, bytes, st.active_since)
    }

    pub(crate) fn uploads_staging(&self) -> bool {
        self.uploads.load(Ordering::SeqCst) > 0
    }

    /// Lowest write-ahead log sequence of a row still only in memory.
    pub(crate) fn min_buffered_seq(&self) -> Option<Seq> {
        let st = self.lock();
        st.frozen
            .first()
            .map(|c| c.min_seq)
            .or((!st.active.is_empty()).then_some(st.active.min_seq))
    }

    /// Records an acknowledged deletion (called in log order, like `push`).
    pub(crate) fn add_tombstone(&self, t: Tombstone) {
        let mut st = self.lock();
        if st.manifest.tombstones.iter().any(|m| m.seq == t.seq) {
            return;
        }
        st.pending_tombstones.push(t);
    }

    /// Deletions a manifest committed now must carry: the committed ones and the pending.
    pub(crate) fn tombstones_to_commit(&self) -> Vec<Tombstone> {
        let st = self.lock();
        st.manifest
            .tombstones
            .iter()
            .chain(&st.pending_tombstones)
            .cloned()
            .collect()
    }

    pub(crate) fn has_pending_tombstones(&self) -> bool {
        !self.lock().pending_tombstones.is_empty()
    }

    pub fn holds_rows(&self) -> bool {
        let st = self.lock();
        st.active.rows > 0 || !st.frozen.is_empty() || st.manifest.files.iter().any(|f| f.rows > 0)
    }

    /// Lowest write-ahead log sequence whose rows are only in memory.
    pub(crate) fn min_unpersisted_seq(&self) -> Option<Seq> {
        let rows = self.min_buffered_seq();
        let st = self.lock();
        let deletions = st.pending_tombstones.iter().map(|t| t.seq).min();
        match (rows, deletions) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The chunk to persist next: the oldest frozen one (a retry), else, if `freeze`, the
    /// active one frozen.
    pub(crate) fn chunk_to_persist(&self, freeze: bool) -> Option<PersistJob> {
        let mut st = self.lock();
        let mut froze_active = false;
        if st.frozen.is_empty() {
            if !freeze || st.active.is_empty() {
                return None;
            }
            let mut active = std::mem::take(&mut st.active);
            let before = active.bytes;
            active.merge_small();
            self.buffered_bytes.resize(before, active.bytes);
            // The next chunk will most likely grow as large: sized now, its key set is
            // not rehashed over and over while the log writer fills it.
            st.active.keys =
                KeySet::with_capacity_and_hasher(active.keys.len(), Default::default());
            let chunk = Arc::new(active);
            st.active_since = None;
            st.frozen.push(chunk);
            froze_active = true;
        }
        Some(PersistJob {
            chunk: st.frozen[0].clone(),
            def: st.def.clone(),
            schema: st.schema.clone(),
            manifest: st.manifest.clone(),
            froze_active,
        })
    }

    /// Whether `chunk` still waits to be persisted.
    pub(crate) fn is_frozen(&self, chunk: &Arc<Chunk>) -> bool {
        self.lock().frozen.iter().any(|c| Arc::ptr_eq(c, chunk))
    }

    /// Publishes a committed manifest and drops the chunk it covers, in one step.
    pub(crate) fn complete_persist(&self, chunk: &Arc<Chunk>, manifest: Manifest) {
        let mut st = self.lock();
        self.replace_manifest(&mut st, manifest);
        st.frozen.retain(|c| !Arc::ptr_eq(c, chunk));
        st.forget_frozen_if_none();
        drop(st);
        self.buffered_bytes.release(chunk.bytes);
    }

    /// Publishes a manifest committed outside the persister (a staged upload).
    pub(crate) fn publish_manifest(&self, manifest: Manifest) {
        let mut st = self.lock();
        self.replace_manifest(&mut st, manifest);
    }

    /// `publish_manifest`, returning every earlier manifest a snapshot may still hold: files
    /// dropped by `manifest` are safe to delete once all of them are gone.
    pub(crate) fn publish_manifest_tracking(
        &self,
        manifest: Manifest,
    ) -> Vec<std::sync::Weak<Manifest>> {
        let mut st = self.lock();
        self.replace_manifest(&mut st, manifest);
        drop(st);
        self.published_readers()
    }

    /// Every earlier manifest a snapshot may still hold.
    pub(crate) fn published_readers(&self) -> Vec<std::sync::Weak<Manifest>> {
        self.published
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Takes a manifest this process committed in an attempt whose reply was lost: publishes
    /// it and forgets frozen chunks it already covers.
    pub(crate) fn adopt(&self, manifest: Manifest) {
        let mut st = self.lock();
        let covered = manifest.persisted_seq;
        let mut freed = 0;
        st.frozen.retain(|c| {
            let done = c.max_seq <= covered;
            if done {
                freed += c.bytes;
            }
            !done
        });
        st.forget_frozen_if_none();
        self.replace_manifest(&mut st, manifest);
        drop(st);
        self.buffered_bytes.release(freed);
    }

    fn replace_manifest(&self, st: &mut TableState, manifest: Manifest) {
        st.pending_tombstones
            .retain(|p| !manifest.tombstones.iter().any(|t| t.seq == p.seq));
        let old = std::mem::replace(&mut st.manifest, Arc::new(manifest));
        let mut published = self.published.lock().unwrap_or_else(|p| p.into_inner());
        published.retain(|w| w.strong_count() > 0);
        published.push(Arc::downgrade(&old));
    }

    /// The table's current schema.
    pub fn schema(&self) -> SchemaRef {
        self.lock().schema.clone()
    }

    /// Files compaction replaced before a restart and whose grace period has not passed:
    /// no reader of this process can hold them, so only the rest of the period is waited.
    pub(crate) fn retire_after_restart(
        &self,
        files: Vec<(String, std::time::Duration)>,
        grace: std::time::Duration,
    ) {
        let mut retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
        for (path, left) in files {
            let since = Instant::now()
                .checked_sub(grace.saturating_sub(left))
                .unwrap_or_else(Instant::now);
            retired.push(crate::compact::Retired {
                paths: vec![path],
                readers: Vec::new(),
                since,
            });
        }
    }

    pub fn manifest(&self) -> Arc<Manifest> {
        self.lock().manifest.clone()
    }

    pub(crate) fn drop_buffer(&self) {
        let mut st = self.lock();
        let bytes = st.active.bytes + st.frozen.iter().map(|c| c.bytes).sum::<usize>();
        st.active = Chunk::default();
        st.frozen.clear();
        st.forget_frozen_if_none();
        drop(st);
        self.buffered_bytes.release(bytes);
    }
}

/// The stored form of validated input rows: `schema`'s columns (absent fields null), the
/// arrival instant and one `_seq` per row from the log record `ack`.
pub(crate) fn stamp_batch(
    input: &RecordBatch,
    schema: &SchemaRef,
    ack: Ack,
) -> Result<RecordBatch, StorageError> {
    let rows = input.num_rows();
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for f in schema.fields().iter().take(schema.fields().len() - 2) {
        cols.push(match input.column_by_name(f.name()) {
            Some(c) => c.clone(),
            None => new_null_array(f.data_type(), rows),
        });
    }
    cols.push(Arc::new(
        TimestampMicrosecondArray::from(vec![ack.ingested_at; rows]).with_timezone("UTC"),
    ));
    let base = ack.seq << ROW_BITS;
    cols.push(Arc::new(UInt64Array::from_iter_values(
        (0..rows as u64).map(|i| base + i),
    )));
    Ok(RecordBatch::try_new(schema.clone(), cols)?)
}

/// The `unique_key` columns of `batch` as comparable rows (equal keys, equal rows).
pub(crate) fn key_rows(
    batch: &RecordBatch,
    unique_key: &[String],
) -> Result<arrow::row::Rows, StorageError> {
    let cols: Vec<ArrayRef> = unique_key
        .iter()
        .filter_map(|k| batch.column_by_name(k).cloned())
        .collect();
    let converter = RowConverter::new(
        cols.iter()
            .map(|c| SortField::new(c.data_type().clone()))
            .collect(),
    )?;
    Ok(converter.convert_columns(&cols)?)
}

/// Key hashes stay in this process's memory (never on disk) and only decide whether rows
/// may share a key: a collision costs a deduplication at query time, never an answer. So a
/// fast hash; SipHash here was ~2% of ingest CPU.
pub type KeySet = std::collections::HashSet<u64, foldhash::fast::FixedState>;

/// One hash per row of the `unique_key` columns present in `batch`.
pub fn key_hashes(batch: &RecordBatch, unique_key: &[String]) -> Result<Vec<u64>, StorageError> {
    let cols: Vec<&ArrayRef> = unique_key
        .iter()
        .filter_map(|k| batch.column_by_name(k))
        .collect();
    if let Some(hashes) = hash_values(&cols, batch.num_rows()) {
        return Ok(hashes);
    }
    let rows = key_rows(batch, unique_key)?;
    let state = foldhash::fast::FixedState::default();
    Ok(rows.iter().map(|r| state.hash_one(r.as_ref())).collect())
}

/// Key hashes straight from the values, for the key column types billing tables use
/// (strings, timestamps, 64-bit integers); `None` for any other, which go through the row
/// format. Building a row converter per request was a tenth of a single-event POST's CPU.
/// The choice depends only on the column types, so equal keys always hash alike.
fn hash_values(cols: &[&ArrayRef], rows: usize) -> Option<Vec<u64>> {
    fn mix<T: std::hash::Hash>(hashes: &mut [u64], values: impl Iterator<Item = T>) {
        let state = foldhash::fast::FixedState::default();
        for (h, v) in hashes.iter_mut().zip(values) {
            *h = state.hash_one((*h, v));
        }
    }
    let mut hashes = vec![0u64; rows];
    for col in cols {
        if let Some(values) = col.as_string_opt::<i32>() {
            mix(&mut hashes, values.iter());
        } else if let Some(values) = col.as_primitive_opt::<TimestampMicrosecondType>() {
            mix(&mut hashes, values.iter());
        } else if let Some(values) = col.as_primitive_opt::<Int64Type>() {
            mix(&mut hashes, values.iter());
        } else {
            return None;
        }
    }
    Some(hashes)
}

/// Sequence of the write-ahead log record a row came from.
pub fn record_seq(row_seq: u64) -> Seq {
    row_seq >> ROW_BITS
}

pub fn ts_range(batch: &RecordBatch) -> Option<(i64, i64)> {
    let ts = batch
        .column(1)
        .as_primitive_opt::<TimestampMicrosecondType>()?;
    if ts.is_empty() {
        return None;
    }
    Some((min(ts)?, max(ts)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_write_waiting_for_room_wakes_when_a_persist_frees_bytes() {
        let gauge = Arc::new(BufferGauge::default());
        gauge.add(100);
        let waiter = tokio::spawn({
            let gauge = gauge.clone();
            async move { gauge.room_below(100).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        gauge.release(1);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken by the release")
            .expect("no panic");
    }

    fn keyed(customers: &[Option<&str>], ts: &[i64], amounts: &[f64]) -> RecordBatch {
        use arrow::array::{Float64Array, StringArray};
        use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
        let schema = Arc::new(Schema::new(vec![
            Field::new("customer_id", DataType::Utf8, true),
            Field::new(
                "timestamp",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("amount", DataType::Float64, false),
        ]));
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(customers.to_vec())),
            Arc::new(TimestampMicrosecondArray::from(ts.to_vec()).with_timezone("UTC")),
            Arc::new(Float64Array::from(amounts.to_vec())),
        ];
        RecordBatch::try_new(schema, cols).expect("valid batch")
    }

    fn events(def: &EventTypeDef, times: &[i64]) -> RecordBatch {
        use meterbase_schema::{DecodeLimits, DecodeOutcome, EventDecoder, InputFormat};
        let body: String = times
            .iter()
            .map(|t| {
                format!("{{\"customer_id\":\"c\",\"timestamp\":{t},\"data\":{{\"cpu\":1}}}}\n")
            })
            .collect();
        match EventDecoder::new(def).expect("decoder").decode(
            body.as_bytes(),
            InputFormat::Ndjson,
            DecodeLimits::default(),
        ) {
            DecodeOutcome::Valid(b) => b,
            other => panic!("{other:?}"),
        }
    }

    /// An event type keyed by (customer, time) and its empty table.
    fn cpu_table() -> (EventTypeDef, Table) {
        let spec = serde_json::from_str(
            r#"{"name":"c","api_slug":"c","dataschema":{"data":{"cpu":"Float64"}}}"#,
        )
        .expect("spec");
        let def = EventTypeDef::from_spec(spec, "t".into(), chrono::DateTime::UNIX_EPOCH)
            .expect("definition");
        let table =
            Table::new("o", def.clone(), Manifest::default(), Arc::default()).expect("table");
        (def, table)
    }

    #[test]
    fn a_key_shared_with_the_frozen_chunk_is_found_by_the_next_snapshot() {
        let (def, table) = cpu_table();
        let mut seq = 0;
        let mut push = |times: &[i64]| {
            seq += 1;
            let ack = Ack {
                seq,
                ingested_at: 1,
            };
            table.push(ack, events(&def, times), None).expect("push");
        };
        push(&[1_700_000_000, 1_700_000_060]);
        let job = table.chunk_to_persist(true).expect("frozen");
        push(&[1_700_000_120]);
        assert!(!table.snapshot().expect("snapshot").buffer_has_duplicates);
        // A later version of a frozen row: only the snapshot's lookups can tell.
        push(&[1_700_000_180, 1_700_000_060]);
        push(&[1_700_000_240]);
        assert!(table.snapshot().expect("snapshot").buffer_has_duplicates);
        assert!(
            table.snapshot().expect("snapshot").buffer_has_duplicates,
            "remembered"
        );
        // Persisted, the frozen rows are a file: the buffer alone holds one version per key
        // (queries compare it with files by time overlap).
        table.complete_persist(&job.chunk, Manifest::default());
        assert!(!table.snapshot().expect("snapshot").buffer_has_duplicates);
        // A repeat inside the active chunk is still seen at once.
        push(&[1_700_000_240]);
        assert!(table.snapshot().expect("snapshot").buffer_has_duplicates);

        // Too many unchecked keys to look up under the lock: "maybe", never a wrong "no".
        let job = table.chunk_to_persist(true).expect("frozen");
        table.complete_persist(&job.chunk, Manifest::default());
        push(&[1_750_000_000]);
        let job = table.chunk_to_persist(true).expect("frozen");
        let many: Vec<i64> = (0..MAX_KEYS_CHECKED_UNDER_LOCK as i64 + 1)
            .map(|i| 1_800_000_000 + i)
            .collect();
        push(&many);
        assert!(table.snapshot().expect("snapshot").buffer_has_duplicates);
        table.complete_persist(&job.chunk, Manifest::default());
        assert!(!table.snapshot().expect("snapshot").buffer_has_duplicates);
    }

    #[test]
    fn the_key_set_sized_for_a_busy_table_is_given_back_once_it_goes_quiet() {
        let (def, table) = cpu_table();
        let times: Vec<i64> = (0..6000).map(|i| 1_700_000_000 + i).collect();
        let ack = Ack {
            seq: 1,
            ingested_at: 1,
        };
        table.push(ack, events(&def, &times), None).expect("push");
        let job = table.chunk_to_persist(true).expect("frozen");
        assert!(
            table.lock().active.keys.capacity() >= 6000,
            "sized for the next burst"
        );
        table.complete_persist(&job.chunk, Manifest::default());
        assert!(
            table.lock().active.keys.capacity() < 6000,
            "nothing came: given back"
        );
    }

    #[test]
    fn single_event_writes_are_merged_in_log_order_and_their_bytes_follow() {
        let one = |i: usize| keyed(&[Some("c")], &[i as i64], &[i as f64]);
        let mut chunk = Chunk::default();
        let mut pushed = Vec::new();
        let mut push = |chunk: &mut Chunk, b: RecordBatch| {
            let bytes = b.get_array_memory_size();
            let n = pushed.len() as u64;
            chunk.push(n, b.clone(), bytes, 0, 0);
            pushed.push(b);
        };
        for i in 0..1500 {
            push(&mut chunk, one(i));
        }
        let big: Vec<usize> = (0..SMALL_BATCH_ROWS).collect();
        push(
            &mut chunk,
            keyed(
                &vec![Some("b"); big.len()],
                &big.iter().map(|i| *i as i64).collect::<Vec<_>>(),
                &vec![0.0; big.len()],
            ),
        );
        for i in 0..10 {
            push(&mut chunk, one(i));
        }
        // A field added to the event type: the next writes carry a column more.
        let wider = |i: usize| {
            let b = one(i);
            let mut fields: Vec<_> = b.schema().fields().iter().cloned().collect();
            fields.push(Arc::new(arrow::datatypes::Field::new(
                "extra",
                arrow::datatypes::DataType::Float64,
                true,
            )));
            let mut cols = b.columns().to_vec();
            cols.push(Arc::new(arrow::array::Float64Array::from(vec![Some(1.5)])));
            RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), cols)
                .expect("valid batch")
        };
        for i in 0..3 {
            push(&mut chunk, wider(i));
        }
        let sizes: Vec<usize> = chunk.all_batches().map(|b| b.num_rows()).collect();
        assert_eq!(sizes, [1024, 476, SMALL_BATCH_ROWS, 10, 1, 1, 1]);
        chunk.merge_small();
        let sizes: Vec<usize> = chunk.all_batches().map(|b| b.num_rows()).collect();
        assert_eq!(sizes, [1024, 476, SMALL_BATCH_ROWS, 10, 3]);
        assert_eq!(chunk.rows, pushed.len() - 1 + SMALL_BATCH_ROWS);
        let held: usize = chunk.all_batches().map(|b| b.get_array_memory_size()).sum();
        assert_eq!(chunk.bytes, held, "bytes describe the merged batches");
        let flat = |bs: Vec<&RecordBatch>| -> Vec<RecordBatch> {
            bs.iter()
                .map(|b| b.project(&[0, 1, 2]).expect("columns"))
                .collect()
        };
        let schema = pushed[0].schema();
        let want = arrow::compute::concat_batches(&schema, &flat(pushed.iter().collect()))
            .expect("concat");
        let got = arrow::compute::concat_batches(&schema, &flat(chunk.all_batches().collect()))
            .expect("concat");
        assert_eq!(got, want, "every row, in the order written");
    }

    #[test]
    fn equal_keys_hash_alike_in_any_batch_and_different_keys_apart() {
        let key = ["customer_id".to_string(), "timestamp".to_string()];
        let a = keyed(
            &[Some("c1"), Some("c2"), None, Some("c1")],
            &[1, 1, 1, 2],
            &[0.0; 4],
        );
        let b = keyed(&[Some("c2"), Some("c1")], &[1, 2], &[5.0, 6.0]);
        let ha = key_hashes(&a, &key).expect("hashes");
        let hb = key_hashes(&b, &key).expect("hashes");
        assert_eq!((hb[0], hb[1]), (ha[1], ha[3]));
        assert_eq!(key_hashes(&a.slice(1, 3), &key).expect("hashes"), ha[1..]);
        let distinct: KeySet = ha.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            4,
            "a null customer and each other key apart"
        );
        // A key type without a direct hash goes through the row format, consistently.
        let key = ["amount".to_string()];
        let hb = key_hashes(&b, &key).expect("hashes");
        assert_ne!(hb[0], hb[1]);
        assert_eq!(key_hashes(&b.slice(1, 1), &key).expect("hashes"), hb[1..]);
    }

    #[test]
    fn writes_waiting_for_room_are_capped_but_one_always_may() {
        let gauge = BufferGauge::default();
        let big = gauge
            .wait_in_line(1_000, 10)
            .expect("the first waits whatever its size");
        assert!(gauge.wait_in_line(1, 10).is_none());
        drop(big);
        let a = gauge.wait_in_line(6, 10).expect("room in line");
        assert!(gauge.wait_in_line(5, 10).is_none());
        let _b = gauge.wait_in_line(4, 10).expect("fits");
        drop(a);
        assert_eq!(gauge.waiting.load(Ordering::Relaxed), 4);
    }
}
