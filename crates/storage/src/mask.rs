//! Files being added to a table (a persist's day files, a compaction pass's outputs) compared
//! key by key with the live files they overlap in time, and with each other: every row a
//! newer version replaces is masked in its file's deletion vector, and a file compared with
//! everything it overlaps is `live_resolved` (read without deduplication). Where comparing
//! would cost too much (keys not kept, or more old rows than the budget allows), the files
//! are flagged to be deduplicated instead, as before deletion vectors, which is always
//! correct; a later compaction compares them.
//!
//! Files come in day order (a persist's days ascending, a compaction's groups by first day),
//! so a file that ended before the next one's day began cannot overlap it or any later one
//! and its keys are let go.

use std::collections::{HashMap, HashSet};

use arrow::record_batch::RecordBatch;
use meterbase_schema::EventTypeDef;
use meterbase_schema::timestamp::MICROS_PER_DAY;
use object_store::path::Path;
use roaring::RoaringTreemap;

use crate::context::Ctx;
use crate::error::StorageError;
use crate::format::deletion_vector::DeletionVector;
use crate::format::manifest::FileMeta;
use crate::format::parquet::file_key_columns;
use crate::format::paths::TablePaths;
use crate::overlap::file_overlaps;
use crate::resolve::{Participant, resolve};
use crate::vectors::{read_mask, write_vectors};

/// Most key rows of added files held for comparison with later ones.
const HELD_ROWS: usize = 4_000_000;

/// What comparing found, to be written (`vectors::write_vectors`) and committed.
pub(crate) struct Masked {
    /// The added files, flags set, in the order added.
    pub added: Vec<FileMeta>,
    /// Their masks (`None`: nothing masked).
    pub added_masks: Vec<Option<RoaringTreemap>>,
    /// The live files, flags updated.
    pub live: Vec<FileMeta>,
    /// Live files whose mask grew, by index into `live`, with the full new mask.
    pub live_masks: HashMap<usize, RoaringTreemap>,
}

/// A live file's key columns and its mask, once read.
struct LiveKeys {
    keys: RecordBatch,
    mask: Option<RoaringTreemap>,
}

pub(crate) struct Masker<'a> {
    ctx: &'a Ctx,
    paths: TablePaths,
    def: &'a EventTypeDef,
    live: Vec<FileMeta>,
    /// Whether each live file needed no deduplication before this (flags as they were).
    live_was_clean: Vec<bool>,
    live_keys: HashMap<usize, LiveKeys>,
    /// Live files whose keys were not read (over the budget).
    live_unread: Vec<bool>,
    /// Live files flagged as sharing keys with an added file nobody compared them with.
    live_revoked: Vec<bool>,
    /// Live files whose every row took part in a comparison (their keys were read).
    live_compared: Vec<bool>,
    /// Pairs of live files `(a, b)`, `a < b`, that took part in one comparison: every row of
    /// each was compared with every row of the other.
    live_pairs: HashSet<(usize, usize)>,
    /// Old rows that may still be read.
    budget: u64,
    added: Vec<FileMeta>,
    added_masks: Vec<Option<RoaringTreemap>>,
    /// Added files whose key columns are held, by index into `added`.
    held: Vec<(usize, RecordBatch)>,
    held_rows: usize,
    live_masks: HashMap<usize, RoaringTreemap>,
}

impl<'a> Masker<'a> {
    /// Compares added files with `live` (the table's live files that stay), reading at most
    /// `budget` rows of them.
    pub(crate) fn new(
        ctx: &'a Ctx,
        paths: TablePaths,
        def: &'a EventTypeDef,
        live: Vec<FileMeta>,
        budget: u64,
    ) -> Masker<'a> {
        Masker {
            ctx,
            paths,
            def,
            live_was_clean: live.iter().map(FileMeta::clean_now).collect(),
            live_unread: vec![false; live.len()],
            live_revoked: vec![false; live.len()],
            live_compared: vec![false; live.len()],
            live_pairs: HashSet::new(),
            live,
            live_keys: HashMap::new(),
            budget,
            added: Vec::new(),
            added_masks: Vec::new(),
            held: Vec::new(),
            held_rows: 0,
            live_masks: HashMap::new(),
        }
    }

    /// Adds one file, its key columns (`format::parquet::key_columns`) when they were kept.
    pub(crate) async fn add(
        &mut self,
        mut meta: FileMeta,
        keys: Option<RecordBatch>,
    ) -> Result<(), StorageError> {
        let new = self.added.len();
        meta.live_resolved = false;
        if !self.def.key_has_time() {
            // A version of a key may sit on any day: only a compaction of the whole table
            // could compare them all. Flag everything.
            meta.share_unresolved();
            for (f, revoked) in self.live.iter_mut().zip(&mut self.live_revoked) {
                f.share_unresolved();
                *revoked = true;
            }
            for f in &mut self.added {
                f.share_unresolved();
            }
            self.added.push(meta);
            self.added_masks.push(None);
            return Ok(());
        }
        let day_start = meta.min_ts.div_euclid(MICROS_PER_DAY) * MICROS_PER_DAY;
        self.held
            .retain(|(i, _)| self.added[*i].max_ts >= day_start);
        self.held_rows = self.held.iter().map(|(_, k)| k.num_rows()).sum();
        let live = &self.live;
        self.live_keys.retain(|i, _| live[*i].max_ts >= day_start);
        let overlaps = |f: &FileMeta| file_overlaps(f, meta.min_ts, meta.max_ts);
        let live_overlapping: Vec<usize> = (0..self.live.len())
            .filter(|&i| overlaps(&self.live[i]))
            .collect();
        let added_overlapping: Vec<usize> =
            (0..new).filter(|&i| overlaps(&self.added[i])).collect();
        let mut unresolved_live = Vec::new();
        let mut unresolved_added = Vec::new();
        let Some(keys) = keys else {
            self.push_unresolved(meta, &live_overlapping, &added_overlapping);
            return Ok(());
        };
        // Read what is not read yet, while the budget lasts.
        for &i in &live_overlapping {
            if self.live_keys.contains_key(&i) || self.live_unread[i] {
                continue;
            }
            let rows = self.live[i].rows;
            if rows > self.budget {
                self.live_unread[i] = true;
                continue;
            }
            self.budget -= rows;
            let read = self.read_live(i).await?;
            self.live_keys.insert(i, read);
        }
        let mut parts: Vec<(Side, usize)> = vec![(Side::Added, new)];
        for &i in &added_overlapping {
            if self.held.iter().any(|(h, _)| *h == i) {
                parts.push((Side::Added, i));
            } else {
                unresolved_added.push(i);
            }
        }
        for &i in &live_overlapping {
            if self.live_keys.contains_key(&i) {
                parts.push((Side::Live, i));
            } else {
                unresolved_live.push(i);
            }
        }
        let resolution = {
            let masks_of_added: Vec<Option<RoaringTreemap>> = parts
                .iter()
                .map(|(side, i)| match side {
                    Side::Added if *i == new => None,
                    Side::Added => self.added_masks[*i].clone(),
                    Side::Live => self
                        .live_masks
                        .get(i)
                        .cloned()
                        .or_else(|| self.live_keys[i].mask.clone()),
                })
                .collect();
            let participants: Vec<Participant<'_>> = parts
                .iter()
                .zip(&masks_of_added)
                .map(|((side, i), mask)| Participant {
                    keys: match side {
                        Side::Added if *i == new => &keys,
                        Side::Added => self
                            .held
                            .iter()
                            .find(|(h, _)| h == i)
                            .map(|(_, k)| k)
                            .unwrap_or(&keys),
                        Side::Live => &self.live_keys[i].keys,
                    },
                    masked: mask.as_ref(),
                })
                .collect();
            resolve(&participants, &self.def.unique_key)?
        };
        self.added.push(meta);
        self.added_masks.push(None);
        for (p, mask) in resolution.masks.into_iter().enumerate() {
            let (side, i) = parts[p];
            let mask = (!mask.is_empty()).then_some(mask);
            match side {
                Side::Added => self.added_masks[i] = mask,
                Side::Live => {
                    let before = self.live_masks.get(&i).or(self.live_keys[&i].mask.as_ref());
                    if let Some(m) = mask
                        && Some(&m) != before
                    {
                        self.live_masks.insert(i, m);
                    }
                }
            }
        }
        for (a, b) in resolution.shared {
            for p in [a, b] {
                match parts[p] {
                    (Side::Added, i) => self.added[i].shares_keys = true,
                    (Side::Live, i) => self.live[i].shares_keys = true,
                }
            }
        }
        for p in resolution.repeats {
            match parts[p] {
                (Side::Added, i) => self.added[i].has_duplicate_keys = true,
                (Side::Live, i) => self.live[i].has_duplicate_keys = true,
            }
        }
        // Compared with everything it overlaps: read without deduplication from now on.
        self.added[new].live_resolved = unresolved_live.is_empty() && unresolved_added.is_empty();
        let compared_live: Vec<usize> = parts
            .iter()
            .filter_map(|(side, i)| matches!(side, Side::Live).then_some(*i))
            .collect();
        for (n, &a) in compared_live.iter().enumerate() {
            for &b in &compared_live[n + 1..] {
                self.live_pairs.insert((a.min(b), a.max(b)));
            }
        }
        for (side, i) in &parts[1..] {
            if let Side::Live = side {
                self.live_compared[*i] = true;
                // Compared with this file; clean before, so with nothing else to compare.
                let f = &mut self.live[*i];
                f.live_resolved =
                    !self.live_revoked[*i] && (f.live_resolved || self.live_was_clean[*i]);
            }
        }
        for i in unresolved_live {
            self.live[i].share_unresolved();
            self.live_revoked[i] = true;
            self.added[new].share_unresolved();
        }
        for i in unresolved_added {
            self.added[i].share_unresolved();
            self.added[new].share_unresolved();
        }
        if self.held_rows + keys.num_rows() <= HELD_ROWS {
            self.held_rows += keys.num_rows();
            self.held.push((new, keys));
        }
        Ok(())
    }

    fn push_unresolved(&mut self, mut meta: FileMeta, live: &[usize], added: &[usize]) {
        for &i in live {
            self.live[i].share_unresolved();
            self.live_revoked[i] = true;
            meta.share_unresolved();
        }
        for &i in added {
            self.added[i].share_unresolved();
            meta.share_unresolved();
        }
        self.added.push(meta);
        self.added_masks.push(None);
    }

    /// A live file flagged before (an earlier persist overlapped it without comparing keys)
    /// becomes `live_resolved` once comparisons covered everything it overlaps: every added
    /// file overlapping it was compared with it (it is not revoked), and every other live
    /// file overlapping it either took part in one comparison with it here or is clean (it
    /// was compared with this one when it became so: a file added later without comparison
    /// would have revoked that). Both masks then hold every row a newer version in the other
    /// replaces. This is what lets a compaction pass, woken by corrections a persist left
    /// unresolved, make the older files clean without rewriting them.
    fn resolve_compared_live(&mut self) {
        let live = &self.live;
        let clean_other = |i: usize| {
            (0..live.len())
                .filter(|&j| j != i && file_overlaps(&live[j], live[i].min_ts, live[i].max_ts))
                .all(|j| {
                    (self.live_was_clean[j] && !self.live_revoked[j])
                        || self.live_pairs.contains(&(i.min(j), i.max(j)))
                })
        };
        let upgraded: Vec<usize> = (0..live.len())
            .filter(|&i| self.live_compared[i] && !self.live_revoked[i] && !live[i].clean_now())
            .filter(|&i| clean_other(i))
            .collect();
        for i in upgraded {
            self.live[i].live_resolved = true;
        }
    }

    async fn read_live(&self, i: usize) -> Result<LiveKeys, StorageError> {
        let f = &self.live[i];
        let bytes = self
            .ctx
            .handle
            .get_bytes(&Path::from(f.path.as_str()))
            .await?;
        f.verify(&bytes)?;
        let mask = read_mask(&self.ctx.handle, &self.paths, f).await?;
        let unique_key = self.def.unique_key.clone();
        let keys = tokio::task::spawn_blocking(move || file_key_columns(bytes, &unique_key))
            .await
            .map_err(|e| StorageError::TaskFailed {
                task: "key read",
                reason: e.to_string(),
            })??;
        Ok(LiveKeys { keys, mask })
    }

    pub(crate) fn finish(mut self) -> Masked {
        self.resolve_compared_live();
        Masked {
            added: self.added,
            added_masks: self.added_masks,
            live: self.live,
            live_masks: self.live_masks,
        }
    }
}

#[derive(Clone, Copy)]
enum Side {
    Added,
    Live,
}

impl Masked {
    /// Writes every new mask into one vector file and points the files at them: the added
    /// files and the live ones (all of them, for the next manifest), and the vectors written.
    pub(crate) async fn store(
        self,
        ctx: &Ctx,
        paths: &TablePaths,
    ) -> Result<(Vec<FileMeta>, Vec<FileMeta>, Vec<DeletionVector>), StorageError> {
        let Masked {
            mut added,
            added_masks,
            mut live,
            live_masks,
        } = self;
        let mut targets: Vec<(bool, usize)> = Vec::new();
        let mut masks: Vec<&RoaringTreemap> = Vec::new();
        for (i, m) in added_masks.iter().enumerate() {
            if let Some(m) = m {
                targets.push((true, i));
                masks.push(m);
            }
        }
        let mut live_changed: Vec<(&usize, &RoaringTreemap)> = live_masks.iter().collect();
        live_changed.sort_by_key(|(i, _)| **i);
        for (i, m) in live_changed {
            targets.push((false, *i));
            masks.push(m);
        }
        let written = write_vectors(ctx, paths, &masks).await?;
        for ((is_added, i), dv) in targets.into_iter().zip(&written) {
            let f = if is_added {
                &mut added[i]
            } else {
                &mut live[i]
            };
            f.deletion_vector = Some(dv.clone());
        }
        Ok((added, live, written))
    }
}
