//! One table = one event type of one organisation: its buffer (an active chunk taking new
//! rows, frozen chunks being persisted) and its manifest, behind one short lock so a query's
//! snapshot always sees each row exactly once, in the buffer or in a file.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use meterbase_schema::EventTypeDef;
use meterbase_wal::{Ack, Seq};

use crate::adapt::adapt_batch;
use crate::chunk::Chunk;
use crate::error::StorageError;
use crate::format::manifest::{Manifest, Tombstone};
use crate::format::paths::TablePaths;
use crate::gauge::BufferGauge;
use crate::identity::{KeySet, key_hashes, stamp_batch, ts_range};

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

/// Files a compaction replaced, waiting until no reader can need them (`gc`).
pub(crate) struct Retired {
    pub paths: Vec<String>,
    /// Manifests published before the swap; while any is alive a snapshot may read the files.
    pub readers: Vec<Weak<Manifest>>,
    pub since: Instant,
}

pub struct Table {
    pub org_id: String,
    pub type_id: String,
    pub slug: String,
    state: Mutex<TableState>,
    pub(crate) flush_lock: tokio::sync::Mutex<()>,
    pub(crate) compact_lock: tokio::sync::Mutex<()>,
    pub(crate) retired: Mutex<Vec<Retired>>,
    /// Every manifest that was current once and may still be held by a snapshot.
    published: Mutex<Vec<Weak<Manifest>>>,
    buffered_bytes: Arc<BufferGauge>,
    /// Uploads begun and not yet committed or dropped (see `compaction::plan::may_share_one_seq`).
    pub(crate) uploads: AtomicUsize,
    pub(crate) next_attempt: Mutex<Option<(Instant, u32)>>,
}

/// What one query sees of one table: files and buffered rows, taken under one lock.
#[derive(Clone, Debug)]
pub struct TableSnapshot {
    pub slug: String,
    /// Where the table's objects live (its deletion vector files among them).
    pub paths: TablePaths,
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

    /// Where the table's objects live.
    pub fn paths(&self) -> TablePaths {
        TablePaths::new(&self.org_id, &self.slug, &self.type_id)
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
        let (lo, hi) = ts_range(&batch).unwrap_or((0, 0));
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
            paths: self.paths(),
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
    pub(crate) fn publish_manifest_tracking(&self, manifest: Manifest) -> Vec<Weak<Manifest>> {
        let mut st = self.lock();
        self.replace_manifest(&mut st, manifest);
        drop(st);
        self.published_readers()
    }

    /// Every earlier manifest a snapshot may still hold.
    pub(crate) fn published_readers(&self) -> Vec<Weak<Manifest>> {
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

    /// Files a commit stopped listing, deleted by `gc` once no snapshot taken before it is
    /// alive and the grace period has passed.
    pub(crate) fn retire(&self, paths: Vec<String>, readers: Vec<Weak<Manifest>>) {
        if paths.is_empty() {
            return;
        }
        self.retired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Retired {
                paths,
                readers,
                since: Instant::now(),
            });
    }

    /// Files compaction replaced before a restart and whose grace period has not passed:
    /// no reader of this process can hold them, so only the rest of the period is waited.
    pub(crate) fn retire_after_restart(&self, files: Vec<(String, Duration)>, grace: Duration) {
        let mut retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
        for (path, left) in files {
            let since = Instant::now()
                .checked_sub(grace.saturating_sub(left))
                .unwrap_or_else(Instant::now);
            retired.push(Retired {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::SMALL_BATCH_ROWS;
    use crate::identity::tests::keyed;

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
}
