//! The log's objects: commits `_delta_log/<version, 20 digits>.json`, created with
//! `PutMode::Create` so a version is committed once whoever tries; and our state snapshots
//! `_meterbase_delta/<version, 20 digits>.json` beside it (outside `_delta_log`, which
//! readers list and parse, and starting with `_`, which Delta's VACUUM leaves alone).

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::actions::{Action, decode_commit, encode_commit};
use crate::error::DeltaError;
use crate::state::{LogState, STATE_FORMAT};

pub const LOG_DIR: &str = "_delta_log";
pub const STATE_DIR: &str = "_meterbase_delta";

pub fn commit_path(root: &Path, version: i64) -> Path {
    root.clone()
        .join(LOG_DIR)
        .join(format!("{version:020}.json"))
}

fn state_path(root: &Path, version: i64) -> Path {
    root.clone()
        .join(STATE_DIR)
        .join(format!("{version:020}.json"))
}

/// The numbered `.json` objects directly in `dir` (commits, or state snapshots).
async fn versions_in(store: &dyn ObjectStore, dir: &Path) -> Result<Vec<i64>, DeltaError> {
    let objects: Vec<_> = store
        .list(Some(dir))
        .try_collect()
        .await
        .map_err(|e| DeltaError::store(dir, e))?;
    let mut out: Vec<i64> = objects
        .iter()
        .filter(|o| {
            o.location
                .prefix_match(dir)
                .is_some_and(|mut p| p.nth(1).is_none())
        })
        .filter_map(|o| {
            let name = o.location.filename()?;
            let digits = name.strip_suffix(".json")?;
            (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| digits.parse().ok())?
        })
        .collect();
    out.sort_unstable();
    Ok(out)
}

async fn get(store: &dyn ObjectStore, path: &Path) -> Result<Bytes, DeltaError> {
    store
        .get(path)
        .await
        .map_err(|e| DeltaError::store(path, e))?
        .bytes()
        .await
        .map_err(|e| DeltaError::store(path, e))
}

/// Commits `actions` as `version`; `Conflict` when that version exists already.
pub async fn put_commit(
    store: &dyn ObjectStore,
    root: &Path,
    version: i64,
    actions: &[Action],
) -> Result<(), DeltaError> {
    let path = commit_path(root, version);
    let opts = PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    match store
        .put_opts(&path, PutPayload::from(encode_commit(actions)?), opts)
        .await
    {
        Ok(_) => Ok(()),
        Err(object_store::Error::AlreadyExists { .. }) => Err(DeltaError::Conflict(version)),
        Err(e) => Err(DeltaError::store(&path, e)),
    }
}

/// Snapshots `state` (at its version) so a restart replays only the commits after it.
pub async fn save_state(
    store: &dyn ObjectStore,
    root: &Path,
    state: &LogState,
) -> Result<(), DeltaError> {
    let Some(version) = state.version else {
        return Ok(());
    };
    let path = state_path(root, version);
    let bytes = serde_json::to_vec(state).map_err(DeltaError::Encode)?;
    store
        .put(&path, PutPayload::from(bytes))
        .await
        .map_err(|e| DeltaError::store(&path, e))?;
    Ok(())
}

/// The table's log as it stands: the newest readable snapshot, then every commit after it.
pub async fn load(store: &dyn ObjectStore, root: &Path) -> Result<LogState, DeltaError> {
    let commits = versions_in(store, &root.clone().join(LOG_DIR)).await?;
    let Some(&last) = commits.last() else {
        return Ok(LogState::empty());
    };
    let mut state = LogState::empty();
    for v in versions_in(store, &root.clone().join(STATE_DIR))
        .await?
        .into_iter()
        .rev()
        .filter(|&v| v <= last)
    {
        let bytes = get(store, &state_path(root, v)).await?;
        match serde_json::from_slice::<LogState>(&bytes) {
            Ok(s) if s.format == STATE_FORMAT && s.version == Some(v) => {
                state = s;
                break;
            }
            // Unreadable or of another build: an older one, or the log from its start.
            _ => continue,
        }
    }
    let from = state.version.map_or(0, |v| v + 1);
    for v in from..=last {
        let path = commit_path(root, v);
        let bytes = match get(store, &path).await {
            Ok(b) => b,
            Err(DeltaError::Store {
                source: object_store::Error::NotFound { .. },
                ..
            }) => {
                return Err(DeltaError::CorruptLog {
                    file: path.to_string(),
                    reason: format!("commit {v} is missing (the log holds up to {last})"),
                });
            }
            Err(e) => return Err(e),
        };
        let actions = decode_commit(&bytes, path.as_ref())?;
        state.apply(v, &actions);
    }
    Ok(state)
}

/// Deletes the log and our snapshots: the table they describe was dropped.
pub async fn delete_log(store: &dyn ObjectStore, root: &Path) -> Result<(), DeltaError> {
    for dir in [LOG_DIR, STATE_DIR] {
        let dir = root.clone().join(dir);
        let objects: Vec<_> = store
            .list(Some(&dir))
            .try_collect()
            .await
            .map_err(|e| DeltaError::store(&dir, e))?;
        for o in objects {
            match store.delete(&o.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(DeltaError::store(&o.location, e)),
            }
        }
    }
    Ok(())
}
