//! The current data of one manifest version as a reader outside this process must see it:
//! every live file, with the positions of its rows that are not current: replaced by a newer
//! version of their key (in any live file), or under a range deletion the file's rows do not
//! reflect yet. Our own queries get there at scan time (deduplicating files nobody compared
//! key by key, filtering by tombstones); a reader of an open table format can only skip
//! positions, so they are computed here, once per published version.

use std::collections::HashMap;

use arrow::array::AsArray;
use arrow::datatypes::{TimestampMicrosecondType, UInt64Type};
use arrow::record_batch::RecordBatch;
use meterbase_schema::{EventTypeDef, SEQ_COLUMN};
use object_store::path::Path;
use roaring::RoaringTreemap;

use crate::error::StorageError;
use crate::format::manifest::{FileMeta, Manifest, Tombstone};
use crate::format::parquet::{file_columns, file_key_columns};
use crate::format::paths::TablePaths;
use crate::identity::ROW_BITS;
use crate::overlap::{deletion_covers, file_overlaps};
use crate::resolve::{Participant, resolve};
use crate::url::ObjectStoreHandle;
use crate::vectors::read_mask;

/// One live file and the positions of its rows that are not current.
#[derive(Debug, Clone)]
pub struct LiveFile {
    pub meta: FileMeta,
    /// `None`: every row is current.
    pub mask: Option<RoaringTreemap>,
    /// `mask` is exactly the file's stored deletion vector (`meta.deletion_vector`), so a
    /// reader can be pointed at that object instead of a copy.
    pub mask_is_stored: bool,
}

/// Columns of immutable files read for earlier versions, so a version that only adds files
/// does not read the old ones again. Bounded by bytes; emptied when full.
#[derive(Default)]
pub struct LiveSetCache {
    keys: HashMap<String, RecordBatch>,
    deletion_columns: HashMap<String, RecordBatch>,
    bytes: usize,
}

/// Key and deletion columns held between versions, per table: about a million rows. The
/// server's memory budget (1 GiB under full ingest) has room for this, not for more.
const CACHED_BYTES: usize = 48 << 20;

impl LiveSetCache {
    fn hold(&mut self, batch: &RecordBatch) {
        let bytes = batch.get_array_memory_size();
        if self.bytes + bytes > CACHED_BYTES {
            self.keys.clear();
            self.deletion_columns.clear();
            self.bytes = 0;
        }
        self.bytes += bytes;
    }

    /// Forgets files no longer live.
    fn keep_only(&mut self, live: &[FileMeta]) {
        let live: std::collections::HashSet<&str> = live.iter().map(|f| f.path.as_str()).collect();
        self.keys.retain(|p, _| live.contains(p.as_str()));
        self.deletion_columns
            .retain(|p, _| live.contains(p.as_str()));
        self.bytes = self
            .keys
            .values()
            .chain(self.deletion_columns.values())
            .map(RecordBatch::get_array_memory_size)
            .sum();
    }
}

/// The live files of `manifest` with the rows a reader must skip.
pub async fn live_set(
    handle: &ObjectStoreHandle,
    paths: &TablePaths,
    def: &EventTypeDef,
    manifest: &Manifest,
    cache: &mut LiveSetCache,
) -> Result<Vec<LiveFile>, StorageError> {
    cache.keep_only(&manifest.files);
    let mut stored = Vec::with_capacity(manifest.files.len());
    for f in &manifest.files {
        stored.push(read_mask(handle, paths, f).await?);
    }
    let mut masks = stored.clone();
    resolve_unresolved(handle, def, manifest, &mut masks, cache).await?;
    for (i, f) in manifest.files.iter().enumerate() {
        let deletions: Vec<&Tombstone> = manifest
            .tombstones
            .iter()
            .filter(|t| deletion_may_cover(t, f))
            .collect();
        if deletions.is_empty() {
            continue;
        }
        let columns = match cache.deletion_columns.get(&f.path) {
            Some(c) => c.clone(),
            None => {
                let bytes = handle.get_bytes(&Path::from(f.path.as_str())).await?;
                let c = file_columns(bytes, &["customer_id", "timestamp", SEQ_COLUMN])?;
                cache.hold(&c);
                cache.deletion_columns.insert(f.path.clone(), c.clone());
                c
            }
        };
        let deleted = deleted_positions(&columns, &deletions)?;
        if !deleted.is_empty() {
            *masks[i].get_or_insert_with(RoaringTreemap::new) |= deleted;
        }
    }
    Ok(manifest
        .files
        .iter()
        .zip(masks)
        .zip(stored)
        .map(|((meta, mask), stored)| {
            let mask = mask.filter(|m| !m.is_empty());
            LiveFile {
                meta: meta.clone(),
                mask_is_stored: mask.is_some() && mask == stored,
                mask,
            }
        })
        .collect())
}

/// A deletion the file's rows may not reflect yet: made after rows of the file were written,
/// not applied by compaction, and over the file's time range.
fn deletion_may_cover(t: &Tombstone, f: &FileMeta) -> bool {
    t.seq > f.deletions_applied && t.seq > f.min_seq && deletion_covers(t, f.min_ts, f.max_ts)
}

/// Rows of `columns` (customer_id, timestamp, `_seq`) that one of `deletions` removes: the
/// same condition `/sql` applies (`query::view::deleted_rows`).
fn deleted_positions(
    columns: &RecordBatch,
    deletions: &[&Tombstone],
) -> Result<RoaringTreemap, StorageError> {
    let customer = columns
        .column_by_name("customer_id")
        .and_then(|c| c.as_string_opt::<i32>())
        .ok_or(StorageError::MissingColumn("customer_id"))?;
    let ts = columns
        .column_by_name("timestamp")
        .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
        .ok_or(StorageError::MissingColumn("timestamp"))?;
    let seq = columns
        .column_by_name(SEQ_COLUMN)
        .and_then(|c| c.as_primitive_opt::<UInt64Type>())
        .ok_or(StorageError::MissingColumn(SEQ_COLUMN))?;
    let mut out = RoaringTreemap::new();
    for row in 0..columns.num_rows() {
        let (c, t, s) = (customer.value(row), ts.value(row), seq.value(row));
        let gone = deletions.iter().any(|d| {
            s < d.seq << ROW_BITS
                && d.customer_id.as_deref().is_none_or(|want| want == c)
                && d.from.is_none_or(|from| t >= from)
                && d.to.is_none_or(|to| t < to)
        });
        if gone {
            out.insert(row as u64);
        }
    }
    Ok(out)
}

/// Files nobody compared key by key (`FileMeta::clean_now` false) are compared here with
/// every live file that may hold a version of one of their keys; the rows a newer version
/// replaces join `masks`.
async fn resolve_unresolved(
    handle: &ObjectStoreHandle,
    def: &EventTypeDef,
    manifest: &Manifest,
    masks: &mut [Option<RoaringTreemap>],
    cache: &mut LiveSetCache,
) -> Result<(), StorageError> {
    let files = &manifest.files;
    let unresolved: Vec<usize> = (0..files.len())
        .filter(|&i| !files[i].clean_now())
        .collect();
    if unresolved.is_empty() {
        return Ok(());
    }
    let may_share = |f: &FileMeta| {
        unresolved.iter().any(|&u| {
            let u = &files[u];
            if def.key_has_time() {
                file_overlaps(f, u.min_ts, u.max_ts)
            } else {
                !f.clean_at_any_time()
            }
        })
    };
    let taking: Vec<usize> = (0..files.len()).filter(|&i| may_share(&files[i])).collect();
    for &i in &taking {
        let f = &files[i];
        if !cache.keys.contains_key(&f.path) {
            let bytes = handle.get_bytes(&Path::from(f.path.as_str())).await?;
            let keys = file_key_columns(bytes, &def.unique_key)?;
            cache.hold(&keys);
            cache.keys.insert(f.path.clone(), keys);
        }
    }
    let resolution = {
        let parts: Vec<Participant<'_>> = taking
            .iter()
            .map(|&i| {
                Ok(Participant {
                    keys: cache
                        .keys
                        .get(&files[i].path)
                        .ok_or(StorageError::Invariant("key columns read just above"))?,
                    masked: masks[i].as_ref(),
                })
            })
            .collect::<Result<_, StorageError>>()?;
        resolve(&parts, &def.unique_key)?
    };
    for (&i, mask) in taking.iter().zip(resolution.masks) {
        if !mask.is_empty() {
            masks[i] = Some(mask);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow::array::{StringArray, TimestampMicrosecondArray, UInt64Array};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    fn columns(rows: &[(Option<&str>, i64, u64)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("customer_id", DataType::Utf8, true),
            Field::new(
                "timestamp",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new(SEQ_COLUMN, DataType::UInt64, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from_iter(rows.iter().map(|r| r.0))),
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.1))
                        .with_timezone("UTC"),
                ),
                Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.2))),
            ],
        )
        .unwrap()
    }

    fn deletion(seq: u64, customer: Option<&str>, from: Option<i64>, to: Option<i64>) -> Tombstone {
        Tombstone {
            seq,
            at: 0,
            customer_id: customer.map(str::to_string),
            from,
            to,
        }
    }

    #[test]
    fn a_deletion_removes_earlier_versions_in_its_range_only() {
        let s = |log: u64, row: u64| (log << ROW_BITS) | row;
        let c = columns(&[
            (Some("a"), 10, s(1, 0)),
            (Some("a"), 20, s(1, 1)),
            (Some("b"), 10, s(1, 2)),
            // Written after the deletion: stays.
            (Some("a"), 10, s(5, 0)),
        ]);
        let d = deletion(3, Some("a"), Some(5), Some(20));
        let gone = deleted_positions(&c, &[&d]).unwrap();
        assert_eq!(gone.iter().collect::<Vec<_>>(), vec![0]);
        let all = deletion(3, None, None, None);
        let gone = deleted_positions(&c, &[&all]).unwrap();
        assert_eq!(gone.iter().collect::<Vec<_>>(), vec![0, 1, 2]);
    }

    #[test]
    fn applied_or_earlier_deletions_do_not_count() {
        let mut f = FileMeta {
            path: "p".into(),
            size: 1,
            rows: 1,
            min_ts: 0,
            max_ts: 100,
            min_seq: 5,
            max_seq: 9,
            schema_version: 1,
            has_duplicate_keys: false,
            shares_keys: false,
            visible_from: None,
            deletions_applied: 0,
            crc32c: None,
            layout: Default::default(),
            sorted_by: vec![],
            deletion_vector: None,
            live_resolved: false,
        };
        assert!(deletion_may_cover(&deletion(7, None, None, None), &f));
        assert!(
            !deletion_may_cover(&deletion(4, None, None, None), &f),
            "before every row"
        );
        assert!(
            !deletion_may_cover(&deletion(7, None, Some(101), None), &f),
            "outside"
        );
        f.deletions_applied = 7;
        assert!(
            !deletion_may_cover(&deletion(7, None, None, None), &f),
            "applied"
        );
    }
}
