//! Which sources of one table a decomposed metric reads from per-file partial aggregates, and
//! which it must read raw; and what a file's partials are keyed by. Pure: nothing is read here.
//!
//! A file's partials are exact only for a file the current view reads straight (no other
//! source may hold a version of its keys: see `view::split_sources`), with its deletion vector
//! applied and the deletions in force filtered out. Every other source (files that may share
//! keys, files the buffer overlaps, the buffer itself) goes through the view's deduplication,
//! which needs all of them together: they are the raw rest. `as_of` and `before_seq`
//! snapshots read every version, so they never use partials.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use meterbase_storage::{FileMeta, TableSnapshot, file_overlaps, overlaps_until};

use crate::view::split_sources;

/// The split of one snapshot for a period.
pub(crate) struct PartialsPlan {
    /// Files read straight and overlapping the period: answered from their partials.
    pub from_partials: Vec<FileMeta>,
    /// Everything else, with the buffer: read raw through the view.
    pub rest: TableSnapshot,
    /// Files of `rest` overlapping the period.
    pub raw_files: usize,
}

/// Splits `snap` for a period `[start, end)`, or `None` when the snapshot reads history
/// (`before_seq`), where every source is raw.
pub(crate) fn plan(snap: &TableSnapshot, start: i64, end: i64) -> Option<PartialsPlan> {
    if snap.before_seq.is_some() {
        return None;
    }
    let split = split_sources(snap, None);
    let in_period = |f: &FileMeta| overlaps_until(f.min_ts, f.max_ts, start, end);
    let from_partials: Vec<FileMeta> = split.clean.into_iter().filter(in_period).collect();
    let kept: std::collections::HashSet<&str> =
        from_partials.iter().map(|f| f.path.as_str()).collect();
    let rest_files: Vec<FileMeta> = snap
        .manifest
        .files
        .iter()
        .filter(|f| !kept.contains(f.path.as_str()))
        .cloned()
        .collect();
    let raw_files = rest_files.iter().filter(|f| in_period(f)).count();
    Some(PartialsPlan {
        from_partials,
        rest: with_files(snap, rest_files, true),
        raw_files,
    })
}

/// `files` in groups whose time ranges touch or overlap, each group apart in time from the
/// others. A value held from one row into the next (the time-weighted sum) is stitched in
/// time order across groups, which holds only where the groups' rows of one customer never
/// interleave: a group is read as one source, so a late file and the file it lands inside
/// give one sequence.
pub(crate) fn apart_in_time(mut files: Vec<FileMeta>) -> Vec<Vec<FileMeta>> {
    files.sort_by_key(|f| (f.min_ts, f.max_ts));
    let mut groups: Vec<Vec<FileMeta>> = Vec::new();
    let mut reach = i64::MIN;
    for f in files {
        match groups.last_mut() {
            Some(group) if f.min_ts <= reach => {
                reach = reach.max(f.max_ts);
                group.push(f);
            }
            _ => {
                reach = f.max_ts;
                groups.push(vec![f]);
            }
        }
    }
    groups
}

/// `snap` with only `files`, and its buffer only when `keep_buffer`.
pub(crate) fn with_files(
    snap: &TableSnapshot,
    files: Vec<FileMeta>,
    keep_buffer: bool,
) -> TableSnapshot {
    let mut manifest = (*snap.manifest).clone();
    manifest.files = files;
    let mut out = snap.clone();
    out.manifest = Arc::new(manifest);
    if !keep_buffer {
        out.buffer = Vec::new();
        out.buffer_ts_range = None;
        out.buffer_has_duplicates = false;
    }
    out
}

/// What a file's partials depend on besides its bytes: the file (its path never names other
/// bytes), the rows its deletion vector masks, the deletions that may remove its rows, the
/// table schema it is read under and the statement computing them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PartialKey {
    pub path: String,
    digest: u64,
}

pub(crate) fn key(snap: &TableSnapshot, file: &FileMeta, sql: &str) -> PartialKey {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    sql.hash(&mut h);
    snap.schema.hash(&mut h);
    if let Some(dv) = &file.deletion_vector {
        (&dv.uuid, dv.offset, dv.cardinality).hash(&mut h);
    }
    for t in snap
        .tombstones
        .iter()
        .filter(|t| file_overlaps(file, t.from.unwrap_or(i64::MIN), t.to.unwrap_or(i64::MAX)))
    {
        (t.seq, &t.customer_id, t.from, t.to).hash(&mut h);
    }
    PartialKey {
        path: file.path.clone(),
        digest: h.finish(),
    }
}

/// The key of the partials of several files combined by `combine_sql`: every member's key.
pub(crate) fn set_key(members: &[PartialKey], combine_sql: &str) -> PartialKey {
    let mut sorted: Vec<&PartialKey> = members.iter().collect();
    sorted.sort_by(|a, b| (&a.path, a.digest).cmp(&(&b.path, b.digest)));
    let mut h = std::collections::hash_map::DefaultHasher::new();
    combine_sql.hash(&mut h);
    sorted.hash(&mut h);
    PartialKey {
        path: format!("{} files combined", members.len()),
        digest: h.finish(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meterbase_storage::Tombstone;

    fn file(path: &str, min_ts: i64, max_ts: i64) -> FileMeta {
        serde_json::from_value(serde_json::json!({
            "path": path, "size": 1, "rows": 1, "min_ts": min_ts, "max_ts": max_ts,
            "min_seq": 1, "max_seq": 1, "schema_version": 1, "has_duplicate_keys": false
        }))
        .unwrap()
    }

    fn snapshot(files: Vec<FileMeta>) -> TableSnapshot {
        let def: meterbase_schema::EventTypeDef = serde_json::from_value(serde_json::json!({
            "id": "t", "name": "T", "api_slug": "t",
            "dataschema": {"data": {"n": "UInt64"}},
            "column_order": ["timestamp"], "unique_key": ["customer_id", "timestamp"],
            "created_at": "2025-01-01T00:00:00Z", "schema_version": 1
        }))
        .unwrap();
        TableSnapshot {
            slug: "t".into(),
            paths: meterbase_storage::TablePaths::new("o", "t", "t"),
            schema: def.table_schema().unwrap(),
            def: Arc::new(def),
            manifest: Arc::new(meterbase_storage::Manifest {
                files,
                ..Default::default()
            }),
            buffer: Vec::new(),
            buffer_ts_range: None,
            buffer_has_duplicates: false,
            tombstones: Vec::new(),
            before_seq: None,
        }
    }

    #[test]
    fn a_deletion_over_a_file_changes_its_key_and_one_elsewhere_does_not() {
        let snap = snapshot(vec![file("a", 0, 100), file("b", 200, 300)]);
        let a = snap.manifest.files[0].clone();
        let before = key(&snap, &a, "q");
        let mut later = snap.clone();
        later.tombstones.push(Tombstone {
            seq: 9,
            at: 0,
            customer_id: None,
            from: Some(150),
            to: Some(250),
        });
        assert_eq!(key(&later, &a, "q"), before);
        later.tombstones.push(Tombstone {
            seq: 10,
            at: 0,
            customer_id: Some("c".into()),
            from: None,
            to: None,
        });
        assert_ne!(key(&later, &a, "q"), before);
        assert_ne!(key(&snap, &a, "other statement"), before);
    }

    #[test]
    fn files_whose_times_touch_or_overlap_are_one_group() {
        let groups = apart_in_time(vec![
            file("late", 40, 45),
            file("b", 100, 200),
            file("a", 0, 50),
            file("c", 200, 210),
            file("d", 211, 300),
        ]);
        let names: Vec<Vec<&str>> = groups
            .iter()
            .map(|g| g.iter().map(|f| f.path.as_str()).collect())
            .collect();
        assert_eq!(names, vec![vec!["a", "late"], vec!["b", "c"], vec!["d"]]);
    }

    #[test]
    fn clean_files_in_the_period_are_partials_and_the_rest_keeps_the_buffer() {
        let mut shared = file("c", 50, 60);
        shared.shares_keys = true;
        let snap = snapshot(vec![file("a", 0, 100), file("b", 200, 300), shared]);
        let p = plan(&snap, 0, 150).unwrap();
        let names: Vec<&str> = p.from_partials.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(names, vec!["a"]);
        let rest: Vec<&str> = p
            .rest
            .manifest
            .files
            .iter()
            .map(|f| f.path.as_str())
            .collect();
        assert_eq!(rest, vec!["b", "c"]);
        assert_eq!(p.raw_files, 1);
        let mut history = snap.clone();
        history.before_seq = Some(3);
        assert!(plan(&history, 0, 150).is_none());
    }
}
