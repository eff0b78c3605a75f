//! The actions that take a table's Delta log from what it lists to what a manifest version
//! holds: pure, so every case is a unit test (publication's I/O is `publish`).
//!
//! - a file the log lacks: `add`;
//! - a file the log lists but the manifest no longer does: `remove`;
//! - a file whose mask changed (a later file or a deletion superseded rows of it): `remove`
//!   naming the old vector and `add` with the new one, in the same commit, as the protocol
//!   requires.
//!
//! Compaction's rewrites carry `dataChange: false` (streaming readers skip them), but only
//! when every file it replaced was published: if a file came and went between two commits,
//! its rows reach the log only through the compacted file, which then is a data change.

use std::collections::{BTreeMap, BTreeSet};

use crate::actions::{Action, Add, Remove};

/// One file of the manifest version being published.
#[derive(Debug, Clone)]
pub struct Wanted {
    pub add: Add,
    /// Written by compaction (a rewrite of rows, no new rows).
    pub compacted: bool,
}

/// The `add`/`remove` actions from `listed` to `wanted`. `retired` are the files the
/// manifests since the last publication say compaction replaced; `now` is in ms.
pub fn plan(
    listed: &BTreeMap<String, Add>,
    wanted: &[Wanted],
    retired: &BTreeSet<String>,
    now: i64,
) -> Vec<Action> {
    let wanted_paths: BTreeSet<&str> = wanted.iter().map(|w| w.add.path.as_str()).collect();
    let gone: Vec<&Add> = listed
        .values()
        .filter(|a| !wanted_paths.contains(a.path.as_str()))
        .collect();
    // Files compaction replaced that the log never listed: their rows are new to readers.
    let unpublished_inputs = retired.iter().any(|r| !listed.contains_key(r));
    let rewrite = !gone.is_empty() && !unpublished_inputs;
    let mut out = Vec::new();
    for old in gone {
        let by_compaction = retired.contains(&old.path);
        out.push(Action::Remove(Remove::of(old, now, !by_compaction)));
    }
    for w in wanted {
        match listed.get(&w.add.path) {
            None => {
                let mut add = w.add.clone();
                add.data_change = !(w.compacted && rewrite);
                out.push(Action::Add(add));
            }
            Some(old) if old.deletion_vector != w.add.deletion_vector => {
                out.push(Action::Remove(Remove::of(old, now, true)));
                let mut add = w.add.clone();
                add.data_change = true;
                // The file itself did not change: keep what readers saw of it.
                add.modification_time = old.modification_time;
                out.push(Action::Add(add));
            }
            Some(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::DeletionVectorDescriptor;

    fn add(path: &str, dv: Option<&str>) -> Add {
        Add {
            path: path.into(),
            partition_values: Default::default(),
            size: 10,
            modification_time: 1,
            data_change: true,
            stats: None,
            deletion_vector: dv.map(|d| DeletionVectorDescriptor {
                storage_type: "i".into(),
                path_or_inline_dv: d.into(),
                offset: None,
                size_in_bytes: 4,
                cardinality: 1,
            }),
        }
    }

    fn listed(adds: &[Add]) -> BTreeMap<String, Add> {
        adds.iter().map(|a| (a.path.clone(), a.clone())).collect()
    }

    fn wanted(path: &str, dv: Option<&str>, compacted: bool) -> Wanted {
        Wanted {
            add: add(path, dv),
            compacted,
        }
    }

    fn names(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .map(|a| match a {
                Action::Add(a) => format!("+{} {}", a.path, a.data_change),
                Action::Remove(r) => format!("-{} {}", r.path, r.data_change),
                _ => "?".into(),
            })
            .collect()
    }

    #[test]
    fn new_files_are_added_and_unchanged_ones_left_alone() {
        let a = plan(
            &listed(&[add("a", None)]),
            &[wanted("a", None, false), wanted("b", None, false)],
            &BTreeSet::new(),
            5,
        );
        assert_eq!(names(&a), ["+b true"]);
    }

    #[test]
    fn a_changed_mask_is_a_remove_and_add_of_the_same_file() {
        let a = plan(
            &listed(&[add("a", Some("x"))]),
            &[wanted("a", Some("y"), false)],
            &BTreeSet::new(),
            5,
        );
        assert_eq!(names(&a), ["-a true", "+a true"]);
        let Action::Remove(r) = &a[0] else { panic!() };
        assert_eq!(r.deletion_vector.as_ref().unwrap().path_or_inline_dv, "x");
    }

    #[test]
    fn compaction_of_published_files_is_no_data_change() {
        let retired: BTreeSet<String> = ["a".to_string(), "b".to_string()].into();
        let a = plan(
            &listed(&[add("a", None), add("b", None)]),
            &[wanted("c", None, true)],
            &retired,
            5,
        );
        assert_eq!(names(&a), ["-a false", "-b false", "+c false"]);
    }

    #[test]
    fn compaction_of_a_file_never_published_is_a_data_change() {
        let retired: BTreeSet<String> = ["a".to_string(), "new".to_string()].into();
        let a = plan(
            &listed(&[add("a", None)]),
            &[wanted("c", None, true)],
            &retired,
            5,
        );
        assert_eq!(names(&a), ["-a false", "+c true"]);
    }
}
