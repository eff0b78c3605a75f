//! The compaction planner: which files of a table to merge, and how, decided from the
//! manifest, the deletions and the settings alone. No I/O: `plan` is a pure function whose
//! answer `execute` carries out, so every choice is unit-tested here on plain values.

use std::collections::BTreeMap;
use std::time::Duration;

use meterbase_schema::timestamp::{MICROS_PER_DAY, civil_from_days};

use crate::config::CompactionMode;
use crate::format::manifest::{FileLayout, FileMeta, Manifest, Tombstone};
use crate::overlap::{deletion_covers, file_overlaps};

/// What a plan is made from: one table's state when the pass begins, and the settings.
pub(crate) struct PlanInput<'a> {
    pub manifest: &'a Manifest,
    /// Every deletion, committed or only logged (the commit carries the logged ones).
    pub tombstones: &'a [Tombstone],
    pub mode: CompactionMode,
    pub max_rows: usize,
    pub history_retention: Duration,
    /// Now, µs since the epoch.
    pub now: i64,
    /// The table's unique key includes the timestamp.
    pub key_has_time: bool,
    /// An upload is staging files no manifest lists yet.
    pub uploads_staging: bool,
    /// Lowest log sequence of a row only in memory.
    pub min_buffered_seq: Option<u64>,
}

/// One table's compaction pass.
#[derive(Debug)]
pub(crate) struct CompactionPlan {
    /// Versions replaced, and rows deleted, before this instant are dropped for good.
    pub horizon: i64,
    /// Deletions older than the horizon: applied to the rows as they merge.
    pub expired: Vec<Tombstone>,
    /// The latest expired deletion; outputs have applied every deletion up to it.
    pub deletions_applied: u64,
    pub groups: Vec<PlannedGroup>,
}

/// Files merged into one output (or several, when versions of a key keep it apart).
#[derive(Debug)]
pub(crate) struct PlannedGroup {
    pub files: Vec<FileMeta>,
    pub span: SeqSpan,
    /// Every row may take the group's latest `_seq` (`may_share_one_seq`).
    pub one_seq: bool,
    /// Output names end with this: the manifest version that will list them and the group
    /// number keep two groups of one day apart even when their sequence ranges coincide.
    pub name_suffix: String,
}

/// The plan for one pass over a table.
pub(crate) fn plan(input: &PlanInput<'_>) -> CompactionPlan {
    let horizon = input.now - input.history_retention.as_micros() as i64;
    let expired: Vec<Tombstone> = input
        .tombstones
        .iter()
        .filter(|t| t.at < horizon)
        .cloned()
        .collect();
    let groups = group_files(
        input.manifest,
        &expired,
        input.max_rows,
        input.mode,
        input.now,
    )
    .into_iter()
    .enumerate()
    .map(|(no, files)| {
        let span = SeqSpan::of(&files);
        let one_seq = may_share_one_seq(
            &files,
            &span,
            &input.manifest.files,
            input.tombstones,
            input.key_has_time,
            input.uploads_staging,
            input.min_buffered_seq,
        );
        PlannedGroup {
            files,
            span,
            one_seq,
            name_suffix: format!("-c{}_{no}", input.manifest.version + 1),
        }
    })
    .collect();
    CompactionPlan {
        horizon,
        deletions_applied: expired.iter().map(|t| t.seq).max().unwrap_or(0),
        expired,
        groups,
    }
}

/// The deletions a manifest listing `files` must keep: an expired one is forgotten once no
/// file (nor the buffer, whose rows all come at `unpersisted` or later) can still hold a row
/// it covers.
pub(crate) fn deletions_to_keep(
    logged: Vec<Tombstone>,
    files: &[FileMeta],
    horizon: i64,
    unpersisted: Option<u64>,
) -> Vec<Tombstone> {
    let unpersisted = unpersisted.unwrap_or(u64::MAX);
    logged
        .into_iter()
        .filter(|t| {
            let spent = t.at < horizon
                && unpersisted > t.seq
                && files.iter().all(|f| {
                    f.min_seq > t.seq
                        || f.deletions_applied >= t.seq
                        || !deletion_covers(t, f.min_ts, f.max_ts)
                });
            !spent
        })
        .collect()
}

pub(crate) fn day_of(f: &FileMeta) -> i64 {
    f.min_ts.div_euclid(MICROS_PER_DAY)
}

/// Files compaction wrote are already customer-first: alone, they need no rewrite.
fn written_by_compaction(f: &FileMeta) -> bool {
    f.layout == FileLayout::Compacted
}

fn touched_by(f: &FileMeta, expired: &[Tombstone]) -> bool {
    expired.iter().any(|t| {
        f.deletions_applied < t.seq && f.min_seq < t.seq && deletion_covers(t, f.min_ts, f.max_ts)
    })
}

/// `files`, in arrival order, cut into groups of at most `max_rows` rows.
fn cut(mut files: Vec<FileMeta>, max_rows: usize, groups: &mut Vec<Vec<FileMeta>>) {
    files.sort_by_key(|f| f.min_seq);
    let mut group: Vec<FileMeta> = Vec::new();
    let mut rows = 0usize;
    for f in files {
        if !group.is_empty() && rows + f.rows as usize > max_rows {
            groups.push(std::mem::take(&mut group));
            rows = 0;
        }
        rows += f.rows as usize;
        group.push(f);
    }
    if !group.is_empty() {
        groups.push(group);
    }
}

/// The tiered choice for one day (see `CompactionMode::Tiered`): its fresh files, then
/// compacted files, smallest first, while each is at most twice the rows gathered so far;
/// compacted files left out but holding rows of an expired deletion go alone.
fn tiered(files: Vec<FileMeta>, expired: &[Tombstone], max_rows: usize) -> Vec<Vec<FileMeta>> {
    let mut groups = Vec::new();
    let (mut chosen, mut compacted): (Vec<FileMeta>, Vec<FileMeta>) =
        files.into_iter().partition(|f| !written_by_compaction(f));
    compacted.sort_by_key(|f| f.rows);
    let mut rest = compacted.into_iter().peekable();
    let mut rows: usize = chosen.iter().map(|f| f.rows as usize).sum();
    while let Some(next) =
        rest.next_if(|f| f.rows as usize <= 2 * rows.max(1) && rows + f.rows as usize <= max_rows)
    {
        rows += next.rows as usize;
        chosen.push(next);
    }
    cut(chosen, max_rows, &mut groups);
    groups.extend(rest.filter(|f| touched_by(f, expired)).map(|f| vec![f]));
    groups
}

/// A day is merged with its neighbours of the month once it ended this long ago: events of a
/// day still arriving would otherwise rewrite a multi-day file again and again.
const SPAN_AFTER_MICROS: i64 = MICROS_PER_DAY;

/// The (year, month) of an instant, UTC.
fn month_of(micros: i64) -> (i64, u32) {
    let (y, m, _) = civil_from_days(micros.div_euclid(MICROS_PER_DAY));
    (y, m)
}

/// Consecutive settled days of one UTC month gathered into one group while their rows fit
/// in `max_rows`. A billing query asks for a customer's month: over one file per few days
/// it reads a few pages from each, where over day files it paid each file's opening, page
/// index and dictionary pages once per day (Q2 on the benchmark: 29 day files 16.8 ms, 8
/// four-day files 6.8 ms). Longer runs of a customer also compress better.
#[derive(Default)]
struct Span {
    files: Vec<FileMeta>,
    rows: usize,
    month: Option<(i64, u32)>,
}

impl Span {
    /// Adds the files of a day merged whole; false (nothing added) when they do not fit.
    fn add(&mut self, files: &[FileMeta], max_rows: usize, now: i64) -> bool {
        let rows: usize = files.iter().map(|f| f.rows as usize).sum();
        let (Some(lo), Some(hi)) = (
            files.iter().map(|f| f.min_ts).min(),
            files.iter().map(|f| f.max_ts).max(),
        ) else {
            return false;
        };
        let month = month_of(lo);
        let last_day_ended = (hi.div_euclid(MICROS_PER_DAY) + 1) * MICROS_PER_DAY;
        let fits = month_of(hi) == month
            && last_day_ended + SPAN_AFTER_MICROS <= now
            && self.rows + rows <= max_rows
            && self.month.is_none_or(|m| m == month);
        if fits {
            self.files.extend_from_slice(files);
            self.rows += rows;
            self.month = Some(month);
        }
        fits
    }

    fn close(&mut self, groups: &mut Vec<Vec<FileMeta>>) {
        let span = std::mem::take(self);
        if !span.files.is_empty() {
            groups.push(span.files);
        }
    }
}

/// Groups of files worth merging, per day (see `CompactionMode`), and settled days of a
/// month together (`Span`); a lone file is worth it when it is fresh from a flush (to put it
/// in customer order) or still holds rows of an expired deletion.
pub(crate) fn group_files(
    manifest: &Manifest,
    expired: &[Tombstone],
    max_rows: usize,
    mode: CompactionMode,
    now: i64,
) -> Vec<Vec<FileMeta>> {
    let mut days: BTreeMap<i64, Vec<FileMeta>> = BTreeMap::new();
    for f in &manifest.files {
        days.entry(day_of(f)).or_default().push(f.clone());
    }
    let mut groups = Vec::new();
    let mut span = Span::default();
    for (_, files) in days {
        let settled = files.iter().all(written_by_compaction);
        if mode == CompactionMode::Full || settled {
            if span.add(&files, max_rows, now) {
                continue;
            }
            span.close(&mut groups);
            if span.add(&files, max_rows, now) {
                continue;
            }
            cut(files, max_rows, &mut groups);
        } else {
            span.close(&mut groups);
            groups.extend(tiered(files, expired, max_rows));
        }
    }
    span.close(&mut groups);
    groups.retain(|g| g.len() > 1 || !written_by_compaction(&g[0]) || touched_by(&g[0], expired));
    groups
}

/// A group's sequence range and time range: the rows `_seq` values may be collapsed over.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SeqSpan {
    pub lo: u64,
    pub hi: u64,
    pub min_ts: i64,
    pub max_ts: i64,
}

impl SeqSpan {
    pub(crate) fn of(group: &[FileMeta]) -> SeqSpan {
        SeqSpan {
            lo: group.iter().map(|f| f.min_seq).min().unwrap_or(0),
            hi: group.iter().map(|f| f.max_seq).max().unwrap_or(0),
            min_ts: group.iter().map(|f| f.min_ts).min().unwrap_or(0),
            max_ts: group.iter().map(|f| f.max_ts).max().unwrap_or(0),
        }
    }

    /// Nothing else falls inside the range: none of `others` (files of the table outside the
    /// group) may hold a key of these rows and a sequence in it; no deletion that may cover
    /// these rows was made in it (it removes the rows that arrived before it, which one shared
    /// sequence could no longer tell apart); every buffered row is later.
    pub(crate) fn clear_of<'a>(
        &self,
        mut others: impl Iterator<Item = &'a FileMeta>,
        tombstones: &[Tombstone],
        min_buffered_seq: Option<u64>,
    ) -> bool {
        let inside = |lo: u64, hi: u64| hi >= self.lo && lo <= self.hi;
        min_buffered_seq.is_none_or(|s| s > self.hi)
            && !tombstones
                .iter()
                .any(|t| inside(t.seq, t.seq) && deletion_covers(t, self.min_ts, self.max_ts))
            && !others
                .any(|f| inside(f.min_seq, f.max_seq) && file_overlaps(f, self.min_ts, self.max_ts))
    }
}

/// Whether the rows of `group` may all take its latest `_seq` (see `Layout::one_seq`).
/// `_seq` does two things: the latest version of a key wins, and a deletion removes the rows
/// that arrived before it. One value for the group keeps both answers when nothing outside
/// the group falls inside its sequence range: no other file of overlapping time (sibling
/// groups of this pass included) holds a sequence in it, no deletion covering it was made
/// within it, no upload is staging (its chunks take sequences as they go and are listed
/// only at the end), the buffer holds only later rows, and the key includes the timestamp
/// (otherwise a version of a key may sit on any day). Versions within the group are checked
/// when it is encoded: a file holding two versions of a key keeps every row's own sequence.
/// Later arrivals take later sequences, so what holds now keeps holding.
fn may_share_one_seq(
    group: &[FileMeta],
    span: &SeqSpan,
    live: &[FileMeta],
    tombstones: &[Tombstone],
    key_has_time: bool,
    uploads_staging: bool,
    min_buffered_seq: Option<u64>,
) -> bool {
    let others = live
        .iter()
        .filter(|f| !group.iter().any(|g| g.path == f.path));
    key_has_time && !uploads_staging && span.clear_of(others, tombstones, min_buffered_seq)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fresh file of `rows` rows on `day` (days since the epoch), logged at `min_seq`.
    pub(crate) fn file(day: i64, rows: u64, min_seq: u64) -> FileMeta {
        FileMeta {
            path: format!("f{day}-{min_seq}"),
            size: 1,
            rows,
            min_ts: day * MICROS_PER_DAY,
            max_ts: day * MICROS_PER_DAY + 10,
            min_seq,
            max_seq: min_seq,
            schema_version: 1,
            has_duplicate_keys: false,
            shares_keys: false,
            visible_from: None,
            deletions_applied: 0,
            crc32c: None,
            layout: FileLayout::Arrival,
            sorted_by: Vec::new(),
            deletion_vector: None,
            live_resolved: false,
        }
    }

    fn compacted(rows: u64, min_seq: u64) -> FileMeta {
        FileMeta {
            path: format!("x/t-{min_seq}-{min_seq}-c3.parquet"),
            layout: FileLayout::Compacted,
            ..file(1, rows, min_seq)
        }
    }

    /// A deletion of everything, logged at `seq`.
    fn delete_all(seq: u64) -> Tombstone {
        Tombstone {
            seq,
            at: 0,
            customer_id: None,
            from: None,
            to: None,
        }
    }

    #[test]
    fn plans_days_with_several_files_cut_at_max_rows() {
        let m = Manifest {
            files: vec![
                file(1, 10, 1),
                file(1, 10, 2),
                file(1, 10, 3),
                file(2, 10, 4),
            ],
            ..Manifest::default()
        };
        let g = group_files(&m, &[], 25, CompactionMode::Full, 0);
        // Day 1 cut into two groups at 25 rows, and day 2's lone fresh file.
        assert_eq!(g.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 1, 1]);
        let lone = Manifest {
            files: vec![compacted(10, 1)],
            ..Manifest::default()
        };
        for mode in [CompactionMode::Full, CompactionMode::Tiered] {
            assert!(group_files(&lone, &[], 25, mode, 0).is_empty());
        }
        let t = delete_all(9);
        for mode in [CompactionMode::Full, CompactionMode::Tiered] {
            assert_eq!(
                group_files(&lone, std::slice::from_ref(&t), 100, mode, 0).len(),
                1
            );
        }
    }

    #[test]
    fn tiered_plans_leave_big_compacted_files_alone() {
        let paths = |g: &[Vec<FileMeta>]| -> Vec<Vec<String>> {
            g.iter()
                .map(|g| g.iter().map(|f| f.path.clone()).collect())
                .collect()
        };
        let m = Manifest {
            files: vec![
                compacted(1000, 1),
                compacted(10, 50),
                file(1, 5, 60),
                file(1, 6, 70),
            ],
            ..Manifest::default()
        };
        let g = group_files(&m, &[], 10_000, CompactionMode::Tiered, 0);
        // Fresh rows (11) take the 10-row compacted file along, not the 1000-row one.
        assert_eq!(
            paths(&g),
            vec![vec!["x/t-50-50-c3.parquet", "f1-60", "f1-70"]]
        );
        // A big file holding rows of an expired deletion is rewritten on its own.
        let g = group_files(&m, &[delete_all(9)], 10_000, CompactionMode::Tiered, 0);
        assert_eq!(g.len(), 2);
        assert_eq!(paths(&g)[1], vec!["x/t-1-1-c3.parquet"]);
        // A day that received nothing since the last pass has settled: merged whole.
        let m = Manifest {
            files: vec![compacted(1000, 1), compacted(10, 50), compacted(12, 80)],
            ..Manifest::default()
        };
        assert_eq!(
            group_files(&m, &[], 10_000, CompactionMode::Tiered, 0)[0].len(),
            3
        );
        // The manifest says which files compaction wrote (names of format-0 manifests are
        // read in `format::manifest`).
        assert!(written_by_compaction(&compacted(1, 1)));
        assert!(!written_by_compaction(&file(1, 1, 1)));
        // Full mode merges the whole day.
        assert_eq!(
            group_files(&m, &[], 10_000, CompactionMode::Full, 0)[0].len(),
            3
        );
    }

    #[test]
    fn settled_days_of_a_month_merge_while_their_rows_fit() {
        use meterbase_schema::timestamp::days_from_civil;
        let day = |m: u32, d: u32| days_from_civil(2025, m, d);
        let settled = |d: i64, rows: u64| FileMeta {
            path: format!("x/t-{d}-{d}-c3.parquet"),
            layout: FileLayout::Compacted,
            ..file(d, rows, d as u64)
        };
        let names = |g: &[Vec<FileMeta>]| -> Vec<Vec<String>> {
            g.iter()
                .map(|g| g.iter().map(|f| f.path.clone()).collect())
                .collect()
        };
        let later = (day(6, 1)) * MICROS_PER_DAY;
        let m = Manifest {
            files: vec![
                settled(day(1, 30), 10),
                settled(day(1, 31), 10),
                settled(day(2, 1), 10),
                settled(day(2, 2), 10),
                settled(day(2, 3), 10),
            ],
            ..Manifest::default()
        };
        // Not across the month's end, and not past max_rows: 2 February stands alone.
        let g = group_files(&m, &[], 25, CompactionMode::Tiered, later);
        let (jan30, jan31, feb1, feb2, feb3) = (
            day(1, 30).to_string(),
            day(1, 31).to_string(),
            day(2, 1).to_string(),
            day(2, 2).to_string(),
            day(2, 3).to_string(),
        );
        let path = |d: &str| format!("x/t-{d}-{d}-c3.parquet");
        assert_eq!(
            names(&g),
            vec![
                vec![path(&jan30), path(&jan31)],
                vec![path(&feb1), path(&feb2)]
            ]
        );
        // A day that ended less than a day ago is still merged on its own.
        let soon = (day(2, 3) + 1) * MICROS_PER_DAY + MICROS_PER_DAY / 2;
        let g = group_files(&m, &[], 100, CompactionMode::Tiered, soon);
        assert_eq!(
            names(&g),
            vec![
                vec![path(&jan30), path(&jan31)],
                vec![path(&feb1), path(&feb2)]
            ]
        );
        // A day still taking fresh files breaks the run (its fresh file is merged the tiered
        // way, alone here); in Full mode it joins it.
        let mut busy = m.clone();
        busy.files.push(file(day(2, 2), 1, 99));
        let g = group_files(&busy, &[], 100, CompactionMode::Tiered, later);
        assert_eq!(
            names(&g),
            vec![
                vec![path(&jan30), path(&jan31)],
                vec![format!("f{feb2}-99")]
            ]
        );
        let g = group_files(&busy, &[], 100, CompactionMode::Full, later);
        assert_eq!(g.len(), 2);
        assert_eq!(g[1].len(), 4);
        assert!(g[1].iter().any(|f| f.path == path(&feb3)));
    }

    #[test]
    fn rows_share_one_seq_only_when_nothing_else_falls_in_their_range() {
        let mut a = file(1, 10, 5);
        a.max_seq = 8;
        let b = FileMeta {
            max_seq: 12,
            ..file(1, 10, 10)
        };
        let group = vec![a, b];
        let span = SeqSpan::of(&group);
        let ok = |live: &[FileMeta], tombstones: &[Tombstone], buffered: Option<u64>| {
            may_share_one_seq(&group, &span, live, tombstones, true, false, buffered)
        };
        assert!(ok(&group, &[], None));
        // A file of the same time whose sequences fall inside [5, 12]: say, a version
        // that arrived between the group's rows.
        let between = FileMeta {
            path: "between".into(),
            ..file(1, 1, 9)
        };
        assert!(!ok(
            &[group.clone(), vec![between.clone()]].concat(),
            &[],
            None
        ));
        // The same sequences on another day, or later ones on this day, are fine.
        let other_day = FileMeta {
            path: "other".into(),
            ..file(2, 1, 9)
        };
        let later = FileMeta {
            path: "later".into(),
            ..file(1, 1, 13)
        };
        assert!(ok(
            &[group.clone(), vec![other_day, later]].concat(),
            &[],
            None
        ));
        // A deletion made inside the range, unless it covers other times only.
        assert!(!ok(&group, &[delete_all(7)], None));
        assert!(ok(&group, &[delete_all(4), delete_all(13)], None));
        let elsewhere = Tombstone {
            from: Some(5 * MICROS_PER_DAY),
            ..delete_all(7)
        };
        assert!(ok(&group, &[elsewhere], None));
        // Buffered rows must all be later; no upload may be staging; the key needs time.
        assert!(!ok(&group, &[], Some(12)));
        assert!(ok(&group, &[], Some(13)));
        assert!(!may_share_one_seq(
            &group,
            &span,
            &group,
            &[],
            true,
            true,
            None
        ));
        assert!(!may_share_one_seq(
            &group,
            &span,
            &group,
            &[],
            false,
            false,
            None
        ));
    }

    #[test]
    fn a_plan_names_its_groups_and_applies_expired_deletions_only() {
        let m = Manifest {
            version: 6,
            files: vec![file(1, 10, 1), file(1, 10, 2), file(3, 10, 3)],
            ..Manifest::default()
        };
        let day = 86_400_000_000;
        let old = Tombstone {
            at: 10,
            ..delete_all(2)
        };
        let recent = Tombstone {
            at: 50 * day,
            ..delete_all(3)
        };
        let tombstones = [old.clone(), recent];
        let input = PlanInput {
            manifest: &m,
            tombstones: &tombstones,
            mode: CompactionMode::Tiered,
            max_rows: 100,
            history_retention: Duration::from_secs(30 * 86_400),
            now: 60 * day,
            key_has_time: true,
            uploads_staging: false,
            min_buffered_seq: None,
        };
        let p = plan(&input);
        assert_eq!(p.horizon, 30 * day);
        assert_eq!(p.expired, vec![old]);
        assert_eq!(p.deletions_applied, 2);
        let suffixes: Vec<&str> = p.groups.iter().map(|g| g.name_suffix.as_str()).collect();
        assert_eq!(suffixes, vec!["-c7_0", "-c7_1"]);
        // Day 1's pair spans sequences [1, 2] and a deletion was made at 2: rows keep
        // their own sequences.
        assert!(!p.groups[0].one_seq);
        assert_eq!((p.groups[0].span.lo, p.groups[0].span.hi), (1, 2));
        // A deletion no file can hold rows of any more is dropped from the next manifest.
        let kept = deletions_to_keep(tombstones.to_vec(), &[file(3, 10, 9)], p.horizon, None);
        assert_eq!(kept.len(), 1);
    }
}
