//! Publication: each table's manifest, once it moved, becomes the next Delta commit (at most
//! one per table per tick), and garbage collection learns which replaced files a retained
//! Delta version still lists. Nothing here blocks ingest or queries: it reads published
//! manifests and immutable files, and a failure is logged and retried at the next tick.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meterbase_storage::{
    FileLayout, LiveSetCache, OutsideReaders, Store, Table, TablePaths, live_set,
};
use object_store::path::Path;
use tracing::{debug, info, warn};

use crate::actions::{Action, Add, CommitInfo, Format, Metadata, Protocol, Txn, encode_path};
use crate::checkpoint::write_checkpoint;
use crate::error::DeltaError;
use crate::log::{delete_log, load, put_commit, save_state};
use crate::plan::{Wanted, plan};
use crate::schema::{published_columns, schema_string};
use crate::state::LogState;
use crate::stats::{file_stats, read_footer};
use crate::vectors;

/// A checkpoint (and a snapshot of our state) every this many commits by default: readers
/// then replay at most this many JSON commits, as Delta's own writers do.
pub const CHECKPOINT_EVERY: u32 = 100;

#[derive(Debug, Clone)]
pub struct DeltaConfig {
    /// At most one commit per table this often.
    pub commit_interval: Duration,
    /// A Delta version stays readable (its files kept) this long after it is superseded.
    pub retention: Duration,
    /// A checkpoint every this many commits.
    pub checkpoint_every: u32,
}

impl Default for DeltaConfig {
    fn default() -> Self {
        DeltaConfig {
            commit_interval: Duration::from_secs(10),
            retention: Duration::from_secs(7 * 86_400),
            checkpoint_every: CHECKPOINT_EVERY,
        }
    }
}

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// The transaction id in every commit: the table's own id, so a reader can tell which
/// meterbase table (and which incarnation of a slug) a log belongs to.
fn app_id(type_id: &str) -> String {
    format!("meterbase-{type_id}")
}

/// Where one table's log stands after a tick.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TableStatus {
    #[serde(rename = "organisation_id")]
    pub org_id: String,
    pub slug: String,
    /// The table's Delta version (`None`: nothing published yet).
    pub version: Option<i64>,
    /// The manifest version it holds.
    pub manifest_version: Option<u64>,
    /// Live files.
    pub files: usize,
    /// Why this tick could not publish (it is retried at the next).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One table's log, as loaded and kept current by its publisher.
struct TableLog {
    state: LogState,
    /// When the manifest last published was read (µs): files compaction retired after it
    /// were never seen by the log.
    looked_at: i64,
    cache: LiveSetCache,
}

/// The logs of every table, shared with garbage collection.
#[derive(Default)]
struct Logs {
    tables: HashMap<(String, String), Arc<tokio::sync::Mutex<TableLog>>>,
    /// Copies of each table's state for `still_read` (a blocking lock, never held long).
    listed: HashMap<(String, String), LogState>,
}

/// Publishes every table of a store as a Delta table and answers garbage collection.
pub struct Publisher {
    store: Arc<Store>,
    config: DeltaConfig,
    logs: Mutex<Logs>,
}

impl Publisher {
    pub fn new(store: Arc<Store>, config: DeltaConfig) -> Arc<Publisher> {
        Arc::new(Publisher {
            store,
            config,
            logs: Mutex::new(Logs::default()),
        })
    }

    fn logs(&self) -> std::sync::MutexGuard<'_, Logs> {
        self.logs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes until `stop` fires, then once more (after the store's final flush, when
    /// the caller awaits it after shutdown).
    pub async fn run(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            self.publish_all().await;
            tokio::select! {
                _ = tokio::time::sleep(self.config.commit_interval) => {}
                _ = stop.changed() => break,
            }
        }
    }

    /// One tick: every table whose manifest moved gets a commit.
    pub async fn publish_all(&self) -> Vec<TableStatus> {
        let mut out = Vec::new();
        for table in self.store.tables() {
            let result = self.publish(&table).await;
            if let Err(e) = &result {
                warn!(table = %table.slug, "Delta publication failed, retrying at the next tick: {e}");
            }
            let log = self.log_of(&table);
            let log = log.lock().await;
            out.push(TableStatus {
                org_id: table.org_id.clone(),
                slug: table.slug.clone(),
                version: log.state.version,
                manifest_version: log.state.manifest_version,
                files: log.state.files.len(),
                error: result.err().map(|e| e.to_string()),
            });
        }
        out
    }

    fn log_of(&self, table: &Table) -> Arc<tokio::sync::Mutex<TableLog>> {
        let key = (table.org_id.clone(), table.type_id.clone());
        self.logs()
            .tables
            .entry(key)
            .or_insert_with(|| {
                Arc::new(tokio::sync::Mutex::new(TableLog {
                    state: LogState::empty(),
                    looked_at: i64::MIN,
                    cache: LiveSetCache::default(),
                }))
            })
            .clone()
    }

    /// Brings `table`'s log up to its current manifest. `Ok(true)`: a commit was written.
    pub async fn publish(&self, table: &Arc<Table>) -> Result<bool, DeltaError> {
        let log = self.log_of(table);
        let mut log = log.lock().await;
        let store = self.store.object_store().store.clone();
        let paths = table.paths();
        let root = paths.root();
        let def = table.def();
        if log.state.version.is_none() || log.looked_at == i64::MIN {
            log.state = load(store.as_ref(), &root).await?;
            if log.state.table_id().is_some_and(|id| id != def.id) {
                info!(table = %table.slug, "the Delta log belongs to a dropped table of the same name; starting a new one");
                delete_log(store.as_ref(), &root).await?;
                log.state = LogState::empty();
            }
            log.looked_at = i64::MIN + 1;
            self.share(table, &log.state);
        }
        let looked_at = now_micros();
        let manifest = table.manifest();
        let schema = schema_string(&def)?;
        let schema_changed = log.state.schema_string() != Some(schema.as_str());
        if !schema_changed && log.state.manifest_version == Some(manifest.version) {
            return Ok(false);
        }
        let columns = published_columns(&def)?;
        let live = live_set(
            self.store.object_store(),
            &paths,
            &def,
            &manifest,
            &mut log.cache,
        )
        .await?;
        let prefix = format!("{}/", root.as_ref());
        let relative = |p: &str| encode_path(p.strip_prefix(&prefix).unwrap_or(p));
        let mut wanted = Vec::with_capacity(live.len());
        for f in &live {
            let path = relative(&f.meta.path);
            let deletion_vector = match (&f.mask, &f.meta.deletion_vector) {
                (None, _) => None,
                (Some(_), Some(dv)) if f.mask_is_stored => {
                    Some(vectors::stored(&paths.type_id, dv)?)
                }
                (Some(mask), _) => Some(vectors::inline(mask)?),
            };
            let stats = match log.state.files.get(&path) {
                Some(old)
                    if old.size == f.meta.size as i64
                        && old.deletion_vector.is_some() == deletion_vector.is_some() =>
                {
                    old.stats.clone()
                }
                _ => {
                    let footer = read_footer(
                        store.clone(),
                        &Path::from(f.meta.path.as_str()),
                        f.meta.size,
                    )
                    .await?;
                    Some(file_stats(&columns, &footer, deletion_vector.is_some()))
                }
            };
            wanted.push(Wanted {
                add: Add {
                    path,
                    partition_values: Default::default(),
                    size: f.meta.size as i64,
                    modification_time: looked_at / 1000,
                    data_change: true,
                    stats,
                    deletion_vector,
                },
                compacted: f.meta.layout == FileLayout::Compacted,
            });
        }
        let retired: BTreeSet<String> = manifest
            .retired
            .iter()
            .filter(|r| r.at > log.looked_at || log.state.files.contains_key(&relative(&r.path)))
            .map(|r| relative(&r.path))
            .collect();
        let now_ms = looked_at / 1000;
        let changes = plan(&log.state.files, &wanted, &retired, now_ms);
        if changes.is_empty() && !schema_changed {
            log.state.manifest_version = Some(manifest.version);
            log.looked_at = looked_at;
            return Ok(false);
        }
        let first = log.state.version.is_none();
        let mut actions = Vec::with_capacity(changes.len() + 4);
        actions.push(Action::CommitInfo(CommitInfo {
            timestamp: now_ms,
            operation: operation(first, &changes),
            engine_info: concat!("meterbase/", env!("CARGO_PKG_VERSION")).into(),
            meterbase_manifest_version: Some(manifest.version),
        }));
        if first {
            actions.push(Action::Protocol(Protocol::with_deletion_vectors()));
        }
        if first || schema_changed {
            actions.push(Action::MetaData(Metadata {
                id: def.id.clone(),
                name: Some(def.api_slug.clone()),
                format: Format {
                    provider: "parquet".into(),
                    options: Default::default(),
                },
                schema_string: schema,
                partition_columns: Vec::new(),
                configuration: [
                    (
                        "delta.enableDeletionVectors".to_string(),
                        "true".to_string(),
                    ),
                    (
                        "delta.deletedFileRetentionDuration".to_string(),
                        format!("interval {} seconds", self.config.retention.as_secs()),
                    ),
                ]
                .into(),
                created_time: Some(def.created_at.timestamp_millis()),
            }));
        }
        actions.push(Action::Txn(Txn {
            app_id: app_id(&def.id),
            version: manifest.version as i64,
            last_updated: Some(now_ms),
        }));
        actions.extend(changes);
        let version = log.state.version.map_or(0, |v| v + 1);
        if let Err(e) = put_commit(store.as_ref(), &root, version, &actions).await {
            if matches!(e, DeltaError::Conflict(_)) {
                // Another attempt of ours (a reply lost) or another writer: read the log again.
                log.looked_at = i64::MIN;
            }
            return Err(e);
        }
        log.state.apply(version, &actions);
        log.looked_at = looked_at;
        let horizon = now_ms - self.config.retention.as_millis() as i64;
        log.state.expire(horizon);
        if log.state.since_checkpoint >= self.config.checkpoint_every.max(1) {
            // Readers' checkpoint first: our snapshot only saves us replaying the commits.
            let saved = match write_checkpoint(store.as_ref(), &root, &log.state).await {
                Ok(()) => save_state(store.as_ref(), &root, &log.state).await,
                Err(e) => Err(e),
            };
            match saved {
                Ok(()) => log.state.since_checkpoint = 0,
                Err(e) => warn!(table = %table.slug, "could not snapshot the Delta log state: {e}"),
            }
        }
        debug!(table = %table.slug, version, manifest = manifest.version, "Delta commit");
        self.share(table, &log.state);
        Ok(true)
    }

    fn share(&self, table: &Table, state: &LogState) {
        self.logs()
            .listed
            .insert((table.org_id.clone(), table.type_id.clone()), state.clone());
    }
}

/// The commit's `operation`, as Delta's own writers name theirs.
fn operation(first: bool, changes: &[Action]) -> String {
    let rewrite = changes.iter().all(|a| match a {
        Action::Add(a) => !a.data_change,
        Action::Remove(r) => !r.data_change,
        _ => true,
    });
    if first {
        "CREATE TABLE"
    } else if !changes.is_empty() && rewrite {
        "OPTIMIZE"
    } else {
        "WRITE"
    }
    .into()
}

impl OutsideReaders for Publisher {
    fn still_read(&self, table: &TablePaths, path: &str) -> bool {
        let logs = self.logs();
        let Some(state) = logs
            .listed
            .get(&(table.org_id.clone(), table.type_id.clone()))
        else {
            // Not loaded yet: the log may list anything.
            return true;
        };
        let prefix = format!("{}/", table.root().as_ref());
        let relative = encode_path(path.strip_prefix(&prefix).unwrap_or(path));
        let horizon = now_micros() / 1000 - self.config.retention.as_millis() as i64;
        state.lists(&relative, horizon)
    }
}
