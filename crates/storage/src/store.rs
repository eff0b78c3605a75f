//! The storage engine: tables, the write-ahead log that feeds them, and the persister.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use futures::TryStreamExt;
use meterbase_catalog::StoredEventType;
use meterbase_schema::EventTypeDef;
use meterbase_wal::{Ack, Apply, Seq, Wal, WalConfig, WalError};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use tracing::{debug, info, warn};

use crate::manifest::manifest_dir;
use crate::persist::encode_chunk;
use crate::table::{BufferGauge, MAX_ROWS_PER_RECORD, PersistJob};
use crate::upload::mark_time_overlaps;
use crate::{Manifest, ObjectStoreHandle, StorageError, Table, WalRecord};

/// A table's buffer is persisted once it holds this much.
pub const DEFAULT_FLUSH_BYTES: usize = 32 << 20;
/// Writes are refused (503) beyond this much buffered, and flushes hurry from half of it.
/// With the persister's working copies and the allocator's slack, the process peaks at
/// about three times this under sustained ingest; 256 MiB keeps it under 1 GiB.
pub const DEFAULT_MAX_BUFFER_BYTES: usize = 256 << 20;
/// Long enough to span a persist under load (a few hundred ms), short next to a client's
/// request timeout.
pub const DEFAULT_BUFFER_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub wal: WalConfig,
    /// A table's active chunk is persisted once it holds this many bytes...
    pub flush_bytes: usize,
    /// ...or once its oldest row has waited this long.
    pub flush_age: Duration,
    /// Above this many buffered bytes in all, writes wait for persists to catch up...
    pub max_buffer_bytes: usize,
    /// ...at most this long, then are refused (503). Zero refuses at once.
    pub buffer_wait: Duration,
    /// Start of every retry back-off after a failed persist.
    pub retry_base: Duration,
    pub skip_wal_corruption: bool,
    pub compaction: crate::CompactionConfig,
}

impl StorageConfig {
    pub fn new(wal_dir: impl Into<PathBuf>) -> StorageConfig {
        StorageConfig {
            wal: WalConfig::new(wal_dir),
            flush_bytes: DEFAULT_FLUSH_BYTES,
            flush_age: Duration::from_secs(10),
            max_buffer_bytes: DEFAULT_MAX_BUFFER_BYTES,
            buffer_wait: DEFAULT_BUFFER_WAIT,
            retry_base: Duration::from_millis(200),
            skip_wal_corruption: false,
            compaction: crate::CompactionConfig::default(),
        }
    }
}

fn tombstone(ack: Ack, filter: crate::EventRange) -> crate::Tombstone {
    crate::Tombstone {
        seq: ack.seq,
        at: ack.ingested_at,
        customer_id: filter.customer_id,
        from: filter.from,
        to: filter.to,
    }
}

/// Deletes the table's data files that its manifest does not list: files of a persist or a
/// staged upload whose manifest commit never happened. Runs before anything can write.
/// Deletes data files no manifest lists: leftovers of a persist or upload that a crash cut
/// short (reported one by one), and files compaction replaced whose grace period has passed
/// (expected after any restart, so only counted). Replaced files still within their grace
/// period are handed to garbage collection.
async fn remove_unreferenced_files(
    handle: &ObjectStoreHandle,
    table: &Table,
    grace: Duration,
) -> Result<(), StorageError> {
    let manifest = table.manifest();
    let live: std::collections::HashSet<&str> =
        manifest.files.iter().map(|f| f.path.as_str()).collect();
    let retired: HashMap<&str, i64> = manifest
        .retired
        .iter()
        .map(|r| (r.path.as_str(), r.at))
        .collect();
    let prefix = Path::from(format!("{}/{}", table.org_id, table.slug));
    let objects: Vec<_> = handle
        .store
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|e| StorageError::store(&prefix, e))?;
    let own = format!("{}-", table.type_id);
    let now = meterbase_wal::now_micros();
    let mut replaced_removed = 0;
    let mut still_in_grace = Vec::new();
    for o in objects {
        let name = o.location.filename().unwrap_or_default();
        let is_data = name.starts_with(&own) && name.ends_with(".parquet");
        if !is_data || live.contains(o.location.as_ref()) {
            continue;
        }
        match retired.get(o.location.as_ref()) {
            Some(&at) => {
                let age = Duration::from_micros(now.saturating_sub(at).max(0) as u64);
                if age < grace {
                    still_in_grace.push((o.location.to_string(), grace - age));
                    continue;
                }
                debug!(path = %o.location, "removing a file replaced by compaction, past its grace period");
                replaced_removed += 1;
            }
            None => {
                warn!(path = %o.location, "removing a data file no manifest lists (an interrupted persist or upload)");
            }
        }
        handle
            .store
            .delete(&o.location)
            .await
            .map_err(|e| StorageError::store(&o.location, e))?;
    }
    if replaced_removed > 0 {
        info!(table = %table.slug, files = replaced_removed, "removed files replaced by compaction, past their grace period");
    }
    table.retire_after_restart(still_in_grace, grace);
    Ok(())
}

#[derive(Debug, Default)]
pub struct StorageStats {
    pub flushes: AtomicU64,
    pub flush_failures: AtomicU64,
    pub files_written: AtomicU64,
    pub rows_persisted: AtomicU64,
    pub wal_segments_retired: AtomicU64,
    /// Writes that found the buffer full and waited for room (accepted or not).
    pub buffer_waits: AtomicU64,
    /// Compactions committed (one per table and pass that merged anything).
    pub compactions: AtomicU64,
    pub compaction_bytes_read: AtomicU64,
    pub compaction_bytes_written: AtomicU64,
}

type TableKey = (String, String);

/// The shared table map; also the write-ahead log's apply hook.
struct Tables {
    map: RwLock<HashMap<TableKey, Arc<Table>>>,
}

pub(crate) enum Pending {
    Rows {
        table: Arc<Table>,
        batch: RecordBatch,
        key_hashes: Vec<u64>,
    },
    Marker,
    Delete {
        table: Arc<Table>,
        filter: crate::EventRange,
    },
}

impl Apply<Pending> for Tables {
    fn apply(&self, ack: Ack, item: Pending) {
        let (table, batch, key_hashes) = match item {
            Pending::Rows {
                table,
                batch,
                key_hashes,
            } => (table, batch, key_hashes),
            Pending::Marker => return,
            Pending::Delete { table, filter } => {
                table.add_tombstone(tombstone(ack, filter));
                return;
            }
        };
        if let Err(e) = table.push(ack, batch, Some(key_hashes)) {
            // Cannot happen for batches built against the table's schema; the rows are still
            // in the log and come back on replay.
            warn!(seq = ack.seq, "could not buffer a durable record: {e}");
        }
    }
}

pub struct Store {
    pub handle: ObjectStoreHandle,
    pub(crate) config: StorageConfig,
    tables: Arc<Tables>,
    buffered_bytes: Arc<BufferGauge>,
    wal: OnceLock<Wal<Pending>>,
    pub stats: StorageStats,
    pub replay: OnceLock<meterbase_wal::ReplayStats>,
    /// Written into every manifest this process commits.
    writer_id: String,
    /// Set on shutdown: a compaction pass stops after the group it is merging.
    pub(crate) stopping: AtomicBool,
}

impl Store {
    /// Loads every table's manifest, replays the write-ahead log into the buffers and starts
    /// the log writer. Nothing is accepted before this returns.
    pub async fn open(
        handle: ObjectStoreHandle,
        config: StorageConfig,
        event_types: Vec<StoredEventType>,
    ) -> Result<Arc<Store>, StorageError> {
        let buffered_bytes = Arc::new(BufferGauge::default());
        let mut map = HashMap::new();
        for t in event_types {
            let dir = manifest_dir(&t.org_id, &t.def.api_slug, &t.def.id);
            let manifest = Manifest::load_latest(&handle, &dir).await?;
            let key = (t.org_id.clone(), t.def.id.clone());
            map.insert(
                key,
                Arc::new(Table::new(
                    &t.org_id,
                    t.def,
                    manifest,
                    buffered_bytes.clone(),
                )?),
            );
        }
        for table in map.values() {
            remove_unreferenced_files(&handle, table, config.compaction.grace).await?;
        }
        let store = Arc::new(Store {
            handle,
            tables: Arc::new(Tables {
                map: RwLock::new(map),
            }),
            buffered_bytes,
            wal: OnceLock::new(),
            stats: StorageStats::default(),
            replay: OnceLock::new(),
            stopping: AtomicBool::new(false),
            writer_id: format!(
                "{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0)
            ),
            config,
        });
        let started = Instant::now();
        let replay_store = store.clone();
        let stats = tokio::task::spawn_blocking(move || replay_store.replay_wal())
            .await
            .map_err(|e| StorageError::BadRecord(format!("replay task failed: {e}")))??;
        info!(
            records = stats.records,
            bytes = stats.bytes,
            segments = stats.segments,
            last_seq = stats.last_seq,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "write-ahead log replayed"
        );
        // Sequences continue after every one a manifest already covers, whatever the log
        // still holds: one handed out twice would be skipped by the next replay as persisted.
        let last_seq = store
            .tables()
            .iter()
            .map(|t| t.manifest().persisted_seq)
            .fold(stats.last_seq, u64::max);
        let sink: Arc<dyn Apply<Pending>> = store.tables.clone();
        let wal = Wal::start(
            store.config.wal.clone(),
            last_seq,
            stats.last_ingested_at,
            sink,
        )?;
        let _ = store.wal.set(wal);
        let _ = store.replay.set(stats);
        Ok(store)
    }

    fn replay_wal(&self) -> Result<meterbase_wal::ReplayStats, StorageError> {
        let mut skipped_unknown = 0u64;
        let stats = meterbase_wal::replay(
            self.config.wal.fs.as_ref(),
            &self.config.wal.dir,
            self.config.skip_wal_corruption,
            |seq, ingested_at, payload| {
                let record = WalRecord::decode(payload).map_err(|e| WalError::Corrupt {
                    segment: self.config.wal.dir.clone(),
                    offset: 0,
                    reason: format!("record {seq} passed its checksum but does not decode: {e}"),
                })?;
                match record {
                    WalRecord::Events {
                        org_id,
                        type_id,
                        batch,
                        ..
                    } => {
                        let Some(table) = self.table(&org_id, &type_id) else {
                            skipped_unknown += 1;
                            return Ok(());
                        };
                        if seq <= table.manifest().persisted_seq {
                            return Ok(());
                        }
                        table
                            .push(Ack { seq, ingested_at }, batch, None)
                            .map_err(|e| WalError::Corrupt {
                                segment: self.config.wal.dir.clone(),
                                offset: 0,
                                reason: format!("record {seq} does not fit its table: {e}"),
                            })?;
                    }
                    WalRecord::Marker { .. } => {}
                    WalRecord::Delete {
                        org_id,
                        type_id,
                        filter,
                    } => {
                        if let Some(table) = self.table(&org_id, &type_id) {
                            table.add_tombstone(tombstone(Ack { seq, ingested_at }, filter));
                        }
                    }
                }
                Ok(())
            },
        )?;
        if skipped_unknown > 0 {
            info!(
                records = skipped_unknown,
                "skipped log records of deleted event types"
            );
        }
        Ok(stats)
    }

    fn wal(&self) -> Result<&Wal<Pending>, StorageError> {
        self.wal.get().ok_or(StorageError::Wal(WalError::Closed))
    }

    pub fn table(&self, org_id: &str, type_id: &str) -> Option<Arc<Table>> {
        self.tables
            .map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(org_id.to_string(), type_id.to_string()))
            .cloned()
    }

    pub fn tables(&self) -> Vec<Arc<Table>> {
        self.tables
            .map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn org_tables(&self, org_id: &str) -> Vec<Arc<Table>> {
        self.tables()
            .into_iter()
            .filter(|t| t.org_id == org_id)
            .collect()
    }

    pub fn create_table(
        &self,
        org_id: &str,
        def: EventTypeDef,
    ) -> Result<Arc<Table>, StorageError> {
        let table = Arc::new(Table::new(
            org_id,
            def,
            Manifest::default(),
            self.buffered_bytes.clone(),
        )?);
        self.tables
            .map
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert((org_id.to_string(), table.type_id.clone()), table.clone());
        Ok(table)
    }

    /// Forgets a table and deletes its files and manifests.
    pub async fn drop_table(
        &self,
        org_id: &str,
        type_id: &str,
        slug: &str,
    ) -> Result<(), StorageError> {
        let removed = self
            .tables
            .map
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(org_id.to_string(), type_id.to_string()));
        if let Some(t) = removed {
            let _flush = t.flush_lock.lock().await;
            t.drop_buffer();
        }
        let prefix = Path::from(format!("{org_id}/{slug}"));
        let objects: Vec<_> = self
            .handle
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| StorageError::store(&prefix, e))?;
        for o in objects {
            if o.location.as_ref().contains(type_id) {
                self.handle
                    .store
                    .delete(&o.location)
                    .await
                    .map_err(|e| StorageError::store(&o.location, e))?;
            }
        }
        Ok(())
    }

    pub fn buffered_bytes(&self) -> usize {
        self.buffered_bytes.get()
    }

    /// Waits (up to `buffer_wait`) while the buffer is full. Writes waiting hold their rows
    /// outside the buffer, so at most a quarter of the cap of them wait; the rest, and any
    /// still waiting at the deadline, are refused.
    async fn wait_for_room(&self, batch: &RecordBatch) -> Result<(), StorageError> {
        let limit = self.config.max_buffer_bytes;
        let full = || StorageError::BufferFull {
            used: self.buffered_bytes(),
            limit,
        };
        if self.buffered_bytes() < limit {
            return Ok(());
        }
        if self.config.buffer_wait.is_zero() {
            return Err(full());
        }
        let bytes = batch.get_array_memory_size();
        let Some(_in_line) = self.buffered_bytes.wait_in_line(bytes, limit / 4) else {
            return Err(full());
        };
        self.stats.buffer_waits.fetch_add(1, Ordering::Relaxed);
        tokio::time::timeout(
            self.config.buffer_wait,
            self.buffered_bytes.room_below(limit),
        )
        .await
        .map_err(|_| full())
    }

    /// Makes `batch` durable in the write-ahead log and visible in the table's buffer.
    pub async fn append(
        &self,
        table: &Arc<Table>,
        batch: RecordBatch,
    ) -> Result<Ack, StorageError> {
        self.wait_for_room(&batch).await?;
        if batch.num_rows() > MAX_ROWS_PER_RECORD {
            return Err(StorageError::BadRecord(format!(
                "{} rows in one record; at most {MAX_ROWS_PER_RECORD}",
                batch.num_rows()
            )));
        }
        let def = table.def();
        let payload =
            WalRecord::encode_events(&table.org_id, &table.type_id, def.schema_version, &batch)?;
        // Hashed here, on the request's task, to keep the log writer's thread light.
        let key_hashes = crate::table::key_hashes(&batch, &def.unique_key)?;
        Ok(self
            .wal()?
            .append(
                payload,
                Pending::Rows {
                    table: table.clone(),
                    batch,
                    key_hashes,
                },
            )
            .await?)
    }

    /// Makes a range deletion durable and effective for the next query; its `Ack` says which
    /// rows it covers (those written before `ack.seq`).
    pub async fn delete(
        &self,
        table: &Arc<Table>,
        filter: crate::EventRange,
    ) -> Result<Ack, StorageError> {
        let payload = WalRecord::encode_delete(&table.org_id, &table.type_id, &filter);
        Ok(self
            .wal()?
            .append(
                payload,
                Pending::Delete {
                    table: table.clone(),
                    filter,
                },
            )
            .await?)
    }

    /// A durable sequence number and arrival instant for rows that bypass the log.
    pub(crate) async fn reserve_seq(&self, table: &Table) -> Result<Ack, StorageError> {
        let payload = WalRecord::encode_marker(&table.org_id, &table.type_id);
        Ok(self.wal()?.append(payload, Pending::Marker).await?)
    }

    /// The log's sync costs, its last durable sequence, and whether a failure stopped it.
    pub fn wal_stats(&self) -> (meterbase_wal::SyncStats, Seq, bool) {
        match self.wal.get() {
            Some(w) => (w.sync_stats(), w.synced_seq(), w.is_poisoned()),
            None => (meterbase_wal::SyncStats::default(), 0, false),
        }
    }

    pub fn wal_failpoint(&self) -> Option<Arc<meterbase_wal::SyncFailpoint>> {
        self.wal.get().map(|w| w.failpoint.clone())
    }

    /// Persists everything buffered in `table` now. Returns the number of files written.
    pub async fn flush_table(&self, table: &Arc<Table>) -> Result<usize, StorageError> {
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
            let org_id = table.org_id.clone();
            let c = chunk.clone();
            let d = def.clone();
            // Decided before encoding, from the whole chunk's time range (a superset of its
            // day files' overlaps, so never a read `mark_shared_keys` would refuse).
            let old_rows = overlapping_rows(&manifest.files, chunk.min_ts, chunk.max_ts);
            let key_sets =
                def.key_has_time() && old_keys_worth_reading(old_rows, chunk.rows as u64);
            let encoded = tokio::task::spawn_blocking(move || {
                encode_chunk(&org_id, &d, &schema, &c, key_sets)
            })
            .await
            .map_err(|e| StorageError::BadRecord(format!("persist task failed: {e}")))??;
            let mut marked = manifest.files.clone();
            let mut encoded = encoded;
            self.mark_shared_keys(&def, &mut marked, &mut encoded)
                .await?;
            let mut new_files = Vec::with_capacity(encoded.len());
            for f in encoded {
                self.put_file(&f.path, f.bytes).await?;
                new_files.push(f.meta);
                chunk_files += 1;
            }
            files += chunk_files as usize;
            let committed = self
                .commit_manifest(table, |current| {
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
                        version: 0,
                        persisted_seq: chunk.max_seq,
                        files: next_files,
                        tombstones: table.tombstones_to_commit(),
                        retired: current.retired.clone(),
                        writer: String::new(),
                        checksum: None,
                    })
                })
                .await?;
            self.stats
                .files_written
                .fetch_add(chunk_files, Ordering::Relaxed);
            self.stats
                .rows_persisted
                .fetch_add(chunk.rows as u64, Ordering::Relaxed);
            self.stats.flushes.fetch_add(1, Ordering::Relaxed);
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
            if let Some(next) = self
                .commit_manifest(table, |current| {
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

    /// Commits the manifest `build` makes from the current one, as the next version. An
    /// ambiguous failure (the store may or may not have taken it) is retried; a version found
    /// taken by an earlier attempt of this process is adopted and `build` asked again (it
    /// returns `None` when the adopted version already holds its change). The caller holds
    /// the table's `flush_lock`, so no other commit of this process races it.
    pub(crate) async fn commit_manifest(
        &self,
        table: &Table,
        mut build: impl FnMut(&Manifest) -> Option<Manifest>,
    ) -> Result<Option<Manifest>, StorageError> {
        let dir = manifest_dir(&table.org_id, &table.slug, &table.type_id);
        let mut failures = 0u32;
        loop {
            let current = table.manifest();
            let Some(mut next) = build(&current) else {
                return Ok(None);
            };
            next.version = current.version + 1;
            next.writer = self.writer_id.clone();
            match next.commit(&self.handle, &dir).await {
                Ok(()) => return Ok(Some(next)),
                Err(StorageError::ManifestTaken { landed, .. })
                    if landed.writer == self.writer_id =>
                {
                    info!(table = %table.slug, version = landed.version, "a manifest commit whose reply was lost had landed; adopting it");
                    table.adopt(*landed);
                }
                Err(e @ StorageError::ManifestTaken { .. }) => return Err(e),
                Err(e) if failures < 3 => {
                    failures += 1;
                    warn!(table = %table.slug, "manifest commit failed, retrying: {e}");
                    tokio::time::sleep(Duration::from_millis(50 << failures)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Flags new files, and the live files they share a unique key with, as needing
    /// deduplication. With the timestamp in the key only files overlapping in time can share
    /// a key, and only those are read (their key columns); without it every file is assumed to.
    async fn mark_shared_keys(
        &self,
        def: &EventTypeDef,
        live: &mut [crate::FileMeta],
        new: &mut [crate::persist::EncodedFile],
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
        let overlaps = |old: &crate::FileMeta, f: &crate::persist::EncodedFile| {
            old.max_ts >= f.meta.min_ts && old.min_ts <= f.meta.max_ts
        };
        let old_rows: u64 = live
            .iter()
            .filter(|old| new.iter().any(|f| overlaps(old, f)))
            .map(|old| old.rows)
            .sum();
        let read_keys =
            new.iter().all(|f| f.keys.is_some()) && old_keys_worth_reading(old_rows, new_rows);
        for old in live.iter_mut() {
            let overlapping: Vec<usize> =
                (0..new.len()).filter(|&i| overlaps(old, &new[i])).collect();
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
            let bytes = self.handle.get_bytes(&path).await?;
            old.verify(&bytes)?;
            let unique_key = def.unique_key.clone();
            let old_keys = tokio::task::spawn_blocking(move || {
                crate::persist::file_key_hashes(bytes, &unique_key)
            })
            .await
            .map_err(|e| StorageError::BadRecord(format!("key check task failed: {e}")))??;
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
            Ok(_) => {}
            // Same name means the same sequence range of the same table: the same rows,
            // written by an attempt whose manifest commit did not happen.
            Err(object_store::Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(StorageError::store(&path, e)),
        }
        Ok(())
    }

    /// Deletes write-ahead log segments whose every record is persisted.
    pub async fn retire_wal(&self) -> Result<(), StorageError> {
        let wal = self.wal()?;
        // Read the synced point first: everything up to it is already applied to tables, so
        // tables read afterwards account for all of it.
        let mut safe = wal.synced_seq();
        for t in self.tables() {
            if let Some(s) = t.min_unpersisted_seq() {
                safe = safe.min(s.saturating_sub(1));
            }
        }
        let removed = wal.retire_through(safe)?;
        self.stats
            .wal_segments_retired
            .fetch_add(removed as u64, Ordering::Relaxed);
        Ok(())
    }

    /// One pass of the background persister: flush what is big, old, or needed to relieve
    /// memory; back off tables whose last attempt failed.
    pub async fn flush_due(&self, force: bool) -> Result<(), StorageError> {
        let pressure = self.buffered_bytes() > self.config.max_buffer_bytes / 2;
        let mut last_err = None;
        for t in self.tables() {
            let (rows, bytes, since) = t.buffered();
            if rows == 0 && !t.has_pending_tombstones() {
                continue;
            }
            let due = force
                || pressure
                || bytes >= self.config.flush_bytes
                || since.is_none()
                || since.is_some_and(|s| s.elapsed() >= self.config.flush_age);
            if !due {
                continue;
            }
            if !force {
                let backoff = *t.next_attempt.lock().unwrap_or_else(|p| p.into_inner());
                if backoff.is_some_and(|(at, _)| Instant::now() < at) {
                    continue;
                }
            }
            match self.flush_table(&t).await {
                Ok(_) => *t.next_attempt.lock().unwrap_or_else(|p| p.into_inner()) = None,
                Err(e) => {
                    self.stats.flush_failures.fetch_add(1, Ordering::Relaxed);
                    let mut slot = t.next_attempt.lock().unwrap_or_else(|p| p.into_inner());
                    let failures = slot.map_or(0, |(_, n)| n) + 1;
                    let delay = self.config.retry_base * 2u32.saturating_pow(failures.min(6));
                    warn!(table = %t.slug, org = %t.org_id, failures, retry_in_ms = delay.as_millis() as u64, "persist failed, rows stay in the write-ahead log: {e}");
                    *slot = Some((Instant::now() + delay, failures));
                    last_err = Some(e);
                }
            }
        }
        self.retire_wal().await?;
        match last_err {
            Some(e) if force => Err(e),
            _ => Ok(()),
        }
    }

    /// Runs the persister until `stop` fires (the final persist is `shutdown`'s).
    pub async fn run_persister(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            if let Err(e) = self.flush_due(false).await {
                warn!("persister pass failed: {e}");
            }
            self.collect_garbage().await;
        }
    }

    /// Runs background compaction until `stop` fires. A task of its own: a pass can take
    /// long (it runs at low CPU priority) and flushes must never wait for it, or the buffer
    /// fills and writes are refused.
    pub async fn run_compactor(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let interval = self.config.compaction.interval;
        if interval.is_zero() {
            return;
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.changed() => break,
            }
            let pass = self.compact_all(crate::CompactionMode::Tiered);
            tokio::pin!(pass);
            let result = tokio::select! {
                r = &mut pass => r,
                _ = stop.changed() => {
                    self.stopping.store(true, Ordering::Relaxed);
                    let _ = pass.await;
                    break;
                }
            };
            if let Err(e) = result {
                warn!("compaction pass failed (it is retried; no data is affected): {e}");
            }
        }
    }

    /// Persists every buffer and stops the log writer (SIGTERM path).
    pub async fn shutdown(&self) -> Result<(), StorageError> {
        let result = self.flush_due(true).await;
        if let Some(w) = self.wal.get() {
            // `Wal::shutdown` joins the writer thread; it needs `&mut`, so close via the
            // retire path only and let the process exit drop it.
            let _ = w.synced_seq();
        }
        result
    }
}

/// Rows of the files overlapping `[lo, hi]` in time.
fn overlapping_rows(files: &[crate::FileMeta], lo: i64, hi: i64) -> u64 {
    files
        .iter()
        .filter(|f| f.max_ts >= lo && f.min_ts <= hi)
        .map(|f| f.rows)
        .sum()
}

/// Reading old files' keys pays off while they are small next to what is being written; past
/// that (a backfill over days that already hold much more, or a busy table flushing into
/// days it flushed into a moment ago) files are flagged by time overlap alone, which is
/// always correct, and compaction later makes them clean.
fn old_keys_worth_reading(old_rows: u64, new_rows: u64) -> bool {
    old_rows <= new_rows.saturating_mul(2).max(1_000_000)
}
