//! Garbage collection: files compaction replaced, and deletion vector files no longer
//! referenced, are deleted once no snapshot can read them and the grace period (for readers
//! outside this process) has passed; at start, files no manifest lists (an interrupted
//! persist, upload or compaction) are deleted.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStoreExt;
use object_store::path::Path;
use tracing::{debug, info, warn};

use crate::context::Ctx;
use crate::error::StorageError;
use crate::format::paths::TablePaths;
use crate::table::Table;
use crate::url::ObjectStoreHandle;
use crate::vectors::referenced;

/// Readers outside this process that follow another log of our files (the open tables'
/// Delta log): a replaced file stays while one of its retained versions lists it.
pub trait OutsideReaders: Send + Sync {
    fn still_read(&self, table: &TablePaths, path: &str) -> bool;
}

/// Deletes replaced files nobody can read any more. Returns how many were deleted. With an
/// outside log configured (`outside_retention`), nothing is deleted until its readers are
/// known (`outside`), and then only what none of their retained versions lists.
pub(crate) async fn collect_garbage(
    ctx: &Ctx,
    tables: &[Arc<Table>],
    outside: Option<&dyn OutsideReaders>,
) -> usize {
    if ctx.config.compaction.outside_retention.is_some() && outside.is_none() {
        return 0;
    }
    let mut deleted = 0;
    for t in tables {
        let paths = t.paths();
        let due: Vec<String> = {
            let mut retired = t.retired.lock().unwrap_or_else(|p| p.into_inner());
            let mut due = Vec::new();
            for mut r in std::mem::take(&mut *retired) {
                if r.since.elapsed() >= ctx.config.compaction.grace
                    && r.readers.iter().all(|w| w.strong_count() == 0)
                {
                    let (held, free): (Vec<_>, Vec<_>) = r
                        .paths
                        .into_iter()
                        .partition(|p| outside.is_some_and(|o| o.still_read(&paths, p)));
                    due.extend(free);
                    r.paths = held;
                }
                if !r.paths.is_empty() {
                    retired.push(r);
                }
            }
            due
        };
        {
            for p in due {
                let path = Path::from(p.as_str());
                match ctx.handle.store.delete(&path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => deleted += 1,
                    // Left for the next start's clean-up.
                    Err(e) => warn!(%path, "could not delete a compacted file: {e}"),
                }
            }
        }
    }
    deleted
}

/// Deletes data files no manifest lists: leftovers of a persist or upload that a crash cut
/// short (reported one by one), and files compaction replaced whose grace period has passed
/// (expected after any restart, so only counted). Replaced files still within their grace
/// period, or that an outside log may still list (`outside_retention`), are handed to
/// `collect_garbage`. Runs before anything can write.
pub(crate) async fn remove_unreferenced_files(
    handle: &ObjectStoreHandle,
    table: &Table,
    grace: Duration,
    outside_retention: Option<Duration>,
) -> Result<(), StorageError> {
    let manifest = table.manifest();
    let live: HashSet<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    let retired: HashMap<&str, i64> = manifest
        .retired
        .iter()
        .map(|r| (r.path.as_str(), r.at))
        .collect();
    let paths = table.paths();
    let prefix = paths.root();
    let objects = handle.list_all(&prefix).await?;
    let now = meterbase_wal::now_micros();
    let mut replaced_removed = 0;
    let mut still_in_grace = Vec::new();
    let vectors: HashSet<String> = referenced(&manifest)
        .into_iter()
        .map(|u| paths.deletion_vector(u).to_string())
        .collect();
    for o in objects {
        let name = o.location.filename().unwrap_or_default();
        let ours = paths.is_data_file(name) || paths.is_deletion_vector(o.location.as_ref());
        if !ours || live.contains(o.location.as_ref()) || vectors.contains(o.location.as_ref()) {
            continue;
        }
        match retired.get(o.location.as_ref()) {
            Some(&at) => {
                let age = Duration::from_micros(now.saturating_sub(at).max(0) as u64);
                if age < grace || outside_retention.is_some() {
                    still_in_grace.push((o.location.to_string(), grace.saturating_sub(age)));
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
