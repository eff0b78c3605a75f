//! The storage engine's face: opening (manifests, clean-up, log replay), writes (`append`,
//! `delete`), the table registry, staged uploads, and the background persister and
//! compactor. Each stage's work lives in its own module (`persister`, `upload`,
//! `compaction`, `gc`, `replay`); this file only drives them.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use meterbase_catalog::StoredEventType;
use meterbase_schema::EventTypeDef;
use meterbase_wal::{Ack, Apply, ReplayStats, Seq, SyncFailpoint, SyncStats, Wal, WalError};
use object_store::ObjectStoreExt;
use tracing::{info, warn};

use crate::commit::load_latest;
use crate::compaction::execute::compact_table;
use crate::config::{CompactionConfig, CompactionMode, StorageConfig};
use crate::context::Ctx;
use crate::error::StorageError;
use crate::format::manifest::Manifest;
use crate::format::paths::TablePaths;
use crate::format::record::{EventRange, WalRecord};
use crate::gauge::BufferGauge;
use crate::gc::{OutsideReaders, collect_garbage, remove_unreferenced_files};
use crate::identity::{MAX_ROWS_PER_RECORD, key_hashes};
use crate::persister::flush_table;
use crate::registry::{Pending, Tables};
use crate::replay::replay_wal;
use crate::stats::{CompactionStats, StorageStats};
use crate::table::Table;
use crate::upload::{self, Upload, UploadCommit};
use crate::url::ObjectStoreHandle;

pub struct Store {
    ctx: Ctx,
    tables: Arc<Tables>,
    buffered_bytes: Arc<BufferGauge>,
    wal: OnceLock<Wal<Pending>>,
    replay: OnceLock<ReplayStats>,
    outside: OnceLock<Arc<dyn OutsideReaders>>,
}

/// This process's name in the manifests it commits.
fn writer_id() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    )
}

impl Store {
    /// Loads every table's manifest, deletes files none lists, replays the write-ahead log
    /// into the buffers and starts the log writer. Nothing is accepted before this returns.
    pub async fn open(
        handle: ObjectStoreHandle,
        config: StorageConfig,
        event_types: Vec<StoredEventType>,
    ) -> Result<Arc<Store>, StorageError> {
        let buffered_bytes = Arc::new(BufferGauge::default());
        let tables = Arc::new(Tables::default());
        for t in event_types {
            let paths = TablePaths::new(&t.org_id, &t.def.api_slug, &t.def.id);
            let manifest = load_latest(&handle, &paths).await?;
            let table = Table::new(&t.org_id, t.def, manifest, buffered_bytes.clone())?;
            remove_unreferenced_files(
                &handle,
                &table,
                config.compaction.grace,
                config.compaction.outside_retention,
            )
            .await?;
            tables.insert(Arc::new(table));
        }
        let store = Arc::new(Store {
            ctx: Ctx {
                handle,
                config,
                stats: StorageStats::default(),
                writer_id: writer_id(),
                stopping: Default::default(),
                resolve_wanted: Default::default(),
            },
            tables,
            buffered_bytes,
            wal: OnceLock::new(),
            replay: OnceLock::new(),
            outside: OnceLock::new(),
        });
        let started = Instant::now();
        let replaying = store.clone();
        let stats = tokio::task::spawn_blocking(move || {
            replay_wal(&replaying.ctx.config, &replaying.tables)
        })
        .await
        .map_err(|e| StorageError::TaskFailed {
            task: "replay",
            reason: e.to_string(),
        })??;
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
            store.ctx.config.wal.clone(),
            last_seq,
            stats.last_ingested_at,
            sink,
        )?;
        let _ = store.wal.set(wal);
        let _ = store.replay.set(stats);
        Ok(store)
    }

    fn wal(&self) -> Result<&Wal<Pending>, StorageError> {
        self.wal.get().ok_or(StorageError::Wal(WalError::Closed))
    }

    /// What storage did so far (for `/metrics`).
    pub fn stats(&self) -> &StorageStats {
        &self.ctx.stats
    }

    /// What the start-up replay found.
    pub fn replay_stats(&self) -> Option<&ReplayStats> {
        self.replay.get()
    }

    pub fn table(&self, org_id: &str, type_id: &str) -> Option<Arc<Table>> {
        self.tables.get(org_id, type_id)
    }

    pub fn tables(&self) -> Vec<Arc<Table>> {
        self.tables.all()
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
        self.tables.insert(table.clone());
        Ok(table)
    }

    /// Forgets a table and deletes its files and manifests.
    pub async fn drop_table(
        &self,
        org_id: &str,
        type_id: &str,
        slug: &str,
    ) -> Result<(), StorageError> {
        if let Some(t) = self.tables.remove(org_id, type_id) {
            let _flush = t.flush_lock.lock().await;
            t.drop_buffer();
        }
        let paths = TablePaths::new(org_id, slug, type_id);
        let prefix = paths.root();
        let handle = &self.ctx.handle;
        let objects = handle.list_all(&prefix).await?;
        for o in objects {
            if o.location.as_ref().contains(type_id) {
                handle
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
        let config = &self.ctx.config;
        let limit = config.max_buffer_bytes;
        let full = || StorageError::BufferFull {
            used: self.buffered_bytes(),
            limit,
        };
        if self.buffered_bytes() < limit {
            return Ok(());
        }
        if config.buffer_wait.is_zero() {
            return Err(full());
        }
        let bytes = batch.get_array_memory_size();
        let Some(_in_line) = self.buffered_bytes.wait_in_line(bytes, limit / 4) else {
            return Err(full());
        };
        self.ctx.stats.buffer_waits.fetch_add(1, Ordering::Relaxed);
        tokio::time::timeout(config.buffer_wait, self.buffered_bytes.room_below(limit))
            .await
            .map_err(|_| full())
    }

    /// Makes `batch` durable in the write-ahead log and visible in the table's buffer: when
    /// this returns, the rows survive a crash and the next snapshot holds them.
    pub async fn append(
        &self,
        table: &Arc<Table>,
        batch: RecordBatch,
    ) -> Result<Ack, StorageError> {
        self.wait_for_room(&batch).await?;
        if batch.num_rows() > MAX_ROWS_PER_RECORD {
            return Err(StorageError::TooManyRows {
                rows: batch.num_rows(),
                max: MAX_ROWS_PER_RECORD,
            });
        }
        let def = table.def();
        let payload =
            WalRecord::encode_events(&table.org_id, &table.type_id, def.schema_version, &batch)?;
        // Hashed here, on the request's task, to keep the log writer's thread light.
        let key_hashes = key_hashes(&batch, &def.unique_key)?;
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
    pub async fn delete(&self, table: &Arc<Table>, range: EventRange) -> Result<Ack, StorageError> {
        let payload = WalRecord::encode_delete(&table.org_id, &table.type_id, &range);
        Ok(self
            .wal()?
            .append(
                payload,
                Pending::Delete {
                    table: table.clone(),
                    range,
                },
            )
            .await?)
    }

    /// A durable sequence number and arrival instant for rows that bypass the log.
    async fn reserve_seq(&self, table: &Table) -> Result<Ack, StorageError> {
        let payload = WalRecord::encode_marker(&table.org_id, &table.type_id);
        Ok(self.wal()?.append(payload, Pending::Marker).await?)
    }

    /// Starts a staged upload into `table` (see `upload`).
    pub fn begin_upload(&self, table: &Arc<Table>) -> Upload {
        Upload::new(table)
    }

    /// Writes one chunk of validated input rows as durable files no query sees yet.
    pub async fn stage(&self, upload: &mut Upload, batch: RecordBatch) -> Result<(), StorageError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        upload::check_chunk(&batch)?;
        let ack = self.reserve_seq(upload.table()).await?;
        upload::stage(&self.ctx, upload, batch, ack).await
    }

    /// Publishes every staged file in one manifest commit; returns the rows made visible and
    /// the log sequences they span.
    pub async fn commit_upload(&self, upload: Upload) -> Result<UploadCommit, StorageError> {
        let first_seq = upload.first_seq();
        // `_staging` lives to the end: the upload counts as staging until it is listed.
        let (table, files, rows, _staging) = upload.into_parts();
        if files.is_empty() {
            return Ok(UploadCommit {
                rows: 0,
                seqs: None,
            });
        }
        let _guard = table.flush_lock.lock().await;
        let still_there = self
            .table(&table.org_id, &table.type_id)
            .is_some_and(|t| Arc::ptr_eq(&t, &table));
        if !still_there {
            drop(_guard);
            self.ctx.delete_unlisted(&files).await;
            return Err(StorageError::UnknownTable);
        }
        let commit = self.reserve_seq(&table).await?;
        upload::publish(&self.ctx, &table, files, commit).await?;
        Ok(UploadCommit {
            rows,
            seqs: Some((first_seq.unwrap_or(commit.seq), commit.seq)),
        })
    }

    /// Deletes what an upload staged (best effort: the next start removes leftovers).
    pub async fn abort_upload(&self, upload: Upload) {
        self.ctx.delete_unlisted(upload.files()).await;
    }

    /// The log's sync costs, its last durable sequence, and whether a failure stopped it.
    pub fn wal_stats(&self) -> (SyncStats, Seq, bool) {
        match self.wal.get() {
            Some(w) => (w.sync_stats(), w.synced_seq(), w.is_poisoned()),
            None => (SyncStats::default(), 0, false),
        }
    }

    pub fn wal_failpoint(&self) -> Option<Arc<SyncFailpoint>> {
        self.wal.get().map(|w| w.failpoint.clone())
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
        self.ctx
            .stats
            .wal_segments_retired
            .fetch_add(removed as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Persists everything buffered in `table` now. Returns the number of files written.
    pub async fn flush_table(&self, table: &Arc<Table>) -> Result<usize, StorageError> {
        flush_table(&self.ctx, table).await
    }

    /// One pass of the background persister: flush what is big, old, or needed to relieve
    /// memory; back off tables whose last attempt failed.
    pub async fn flush_due(&self, force: bool) -> Result<(), StorageError> {
        let config = &self.ctx.config;
        let pressure = self.buffered_bytes() > config.max_buffer_bytes / 2;
        let mut last_err = None;
        for t in self.tables() {
            let (rows, bytes, since) = t.buffered();
            if rows == 0 && !t.has_pending_tombstones() {
                continue;
            }
            let due = force
                || pressure
                || bytes >= config.flush_bytes
                || since.is_none()
                || since.is_some_and(|s| s.elapsed() >= config.flush_age);
            if !due {
                continue;
            }
            if !force {
                let backoff = *t.next_attempt.lock().unwrap_or_else(|p| p.into_inner());
                if backoff.is_some_and(|(at, _)| Instant::now() < at) {
                    continue;
                }
            }
            match flush_table(&self.ctx, &t).await {
                Ok(_) => *t.next_attempt.lock().unwrap_or_else(|p| p.into_inner()) = None,
                Err(e) => {
                    self.ctx
                        .stats
                        .flush_failures
                        .fetch_add(1, Ordering::Relaxed);
                    let mut slot = t.next_attempt.lock().unwrap_or_else(|p| p.into_inner());
                    let failures = slot.map_or(0, |(_, n)| n) + 1;
                    let delay = config.retry_base * 2u32.saturating_pow(failures.min(6));
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

    /// Compacts one table once (see `compaction`).
    pub async fn compact_table(
        &self,
        table: &Arc<Table>,
        mode: CompactionMode,
    ) -> Result<CompactionStats, StorageError> {
        compact_table(&self.ctx, table, mode).await
    }

    /// Compacts every table once, then deletes what no reader needs any more.
    pub async fn compact_all(&self, mode: CompactionMode) -> Result<CompactionStats, StorageError> {
        let mut total = CompactionStats::default();
        for t in self.tables() {
            total += compact_table(&self.ctx, &t, mode).await?;
        }
        self.collect_garbage().await;
        Ok(total)
    }

    /// Deletes replaced files nobody can read any more. Returns how many were deleted.
    pub async fn collect_garbage(&self) -> usize {
        collect_garbage(
            &self.ctx,
            &self.tables(),
            self.outside.get().map(|o| o.as_ref()),
        )
        .await
    }

    /// Who else reads our files through another log (the open tables): garbage collection
    /// asks them before deleting a replaced file. Set once, after opening.
    pub fn set_outside_readers(&self, readers: Arc<dyn OutsideReaders>) {
        let _ = self.outside.set(readers);
    }

    /// The object store the tables live in.
    pub fn object_store(&self) -> &ObjectStoreHandle {
        &self.ctx.handle
    }

    /// Settings the store was opened with.
    pub fn config(&self) -> &StorageConfig {
        &self.ctx.config
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
    ///
    /// A pass runs every `interval`, and also `resolve_delay` after a persist or upload that
    /// left files every query must deduplicate: until a pass compares their keys, a
    /// month-by-customer sum over a table that received corrections deduplicates every row
    /// it reads. Such early passes start at least five `resolve_delay`s after the previous
    /// pass ended, so that a busy table whose flushes overlap in time (every one of them
    /// asks) is compacted every ten seconds or so, not back to back.
    pub async fn run_compactor(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let CompactionConfig {
            interval,
            resolve_delay,
            ..
        } = self.ctx.config.compaction;
        if interval.is_zero() {
            return;
        }
        let mut last_pass_ended = tokio::time::Instant::now();
        loop {
            let asked = async {
                self.ctx.resolve_wanted.notified().await;
                // A burst of persists (a correction file spans several chunks) is one pass.
                let soonest = (tokio::time::Instant::now() + resolve_delay)
                    .max(last_pass_ended + resolve_delay * 5);
                tokio::time::sleep_until(soonest).await;
            };
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = asked => {}
                _ = stop.changed() => break,
            }
            let pass = self.compact_all(CompactionMode::Tiered);
            tokio::pin!(pass);
            let result = tokio::select! {
                r = &mut pass => r,
                _ = stop.changed() => {
                    self.ctx.stopping.store(true, Ordering::Relaxed);
                    let _ = pass.await;
                    break;
                }
            };
            if let Err(e) = result {
                warn!("compaction pass failed (it is retried; no data is affected): {e}");
            }
            last_pass_ended = tokio::time::Instant::now();
        }
    }

    /// Persists every buffer (SIGTERM path). The log writer stops when the store is dropped.
    pub async fn shutdown(&self) -> Result<(), StorageError> {
        self.flush_due(true).await
    }
}
