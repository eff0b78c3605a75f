//! What a table's Delta log says now: its last version, the manifest version it reflects,
//! its metadata and live files, and the files it stopped listing (with when, for retention).
//! Rebuilt at start from our last state snapshot plus the commits after it; kept current by
//! applying each commit we write.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::actions::{Action, Add, Metadata, Txn};

/// The snapshot format (`_meterbase_delta/<version>.json`); a newer one is ignored and the
/// log replayed from its start instead.
pub const STATE_FORMAT: u32 = 1;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LogState {
    pub format: u32,
    /// The last committed Delta version; `None` before the first.
    pub version: Option<i64>,
    /// The manifest version the last commit reflects (`txn.version`).
    pub manifest_version: Option<u64>,
    /// The table's `metaData` (its id is the event type id) and last `txn`, as a checkpoint
    /// must repeat them.
    pub metadata: Option<Metadata>,
    pub txn: Option<Txn>,
    /// Live files by path (relative to the table root, as in `add.path`).
    pub files: BTreeMap<String, Add>,
    /// Paths the log stopped listing, with the deletion timestamp (ms), including the vector
    /// files those entries pointed at: readers of a retained version may still open them.
    pub removed: BTreeMap<String, i64>,
    /// Commits since the last checkpoint.
    pub since_checkpoint: u32,
}

impl LogState {
    pub fn empty() -> LogState {
        LogState {
            format: STATE_FORMAT,
            ..LogState::default()
        }
    }

    /// The state after commit `version` with `actions`.
    pub fn apply(&mut self, version: i64, actions: &[Action]) {
        for a in actions {
            match a {
                Action::MetaData(m) => self.metadata = Some(m.clone()),
                Action::Txn(t) => {
                    self.manifest_version = u64::try_from(t.version).ok();
                    self.txn = Some(t.clone());
                }
                Action::Remove(r) => {
                    if let Some(old) = self.files.remove(&r.path) {
                        self.note_removed(&old, r.deletion_timestamp);
                    }
                }
                Action::Add(add) => {
                    self.removed.remove(&add.path);
                    self.files.insert(add.path.clone(), add.clone());
                }
                Action::Protocol(_) | Action::CommitInfo(_) => {}
            }
        }
        self.version = Some(version);
        self.since_checkpoint += 1;
    }

    /// A file (and the vector file its entry named) left the log at `at`.
    fn note_removed(&mut self, add: &Add, at: i64) {
        self.removed.insert(add.path.clone(), at);
        if let Some(dv) = add
            .deletion_vector
            .as_ref()
            .and_then(crate::vectors::file_of)
        {
            self.removed.insert(dv, at);
        }
    }

    pub fn table_id(&self) -> Option<&str> {
        self.metadata.as_ref().map(|m| m.id.as_str())
    }

    pub fn schema_string(&self) -> Option<&str> {
        self.metadata.as_ref().map(|m| m.schema_string.as_str())
    }

    /// Forgets removals older than `horizon` (ms): no retained version lists them.
    pub fn expire(&mut self, horizon: i64) {
        self.removed.retain(|_, at| *at >= horizon);
    }

    /// Whether a retained version may list `relative` (a data or vector file).
    pub fn lists(&self, relative: &str, horizon: i64) -> bool {
        if self.files.contains_key(relative) {
            return true;
        }
        if self
            .files
            .values()
            .filter_map(|a| a.deletion_vector.as_ref())
            .filter_map(crate::vectors::file_of)
            .any(|f| f == relative)
        {
            return true;
        }
        self.removed.get(relative).is_some_and(|at| *at >= horizon)
    }
}
