//! Deletion vectors computed: given the rows of files that may hold versions of the same
//! unique keys, which rows of each a newer version (in any of them) replaces. A file whose
//! replaced rows are all masked this way is read without deduplication when a query asks for
//! the current data: the whole point of deletion vectors.

use std::cell::RefCell;
use std::collections::BTreeSet;

use arrow::array::AsArray;
use arrow::datatypes::UInt64Type;
use arrow::record_batch::RecordBatch;
use meterbase_schema::SEQ_COLUMN;
use roaring::RoaringTreemap;

use crate::error::StorageError;
use crate::identity::key_hashes;
use crate::versions::Versions;

/// One file taking part: its unique-key columns and `_seq` in file order
/// (`format::parquet::key_columns`), and the rows its deletion vector already masks.
pub(crate) struct Participant<'a> {
    pub keys: &'a RecordBatch,
    pub masked: Option<&'a RoaringTreemap>,
}

/// What a resolution found.
#[derive(Debug, Default)]
pub(crate) struct Resolution {
    /// Per participant, in order: the rows no longer live (those already masked included).
    pub masks: Vec<RoaringTreemap>,
    /// Participants `(a, b)`, `a < b`, that hold versions of a common key.
    pub shared: BTreeSet<(usize, usize)>,
    /// Participants holding two versions of one of their own keys.
    pub repeats: BTreeSet<usize>,
}

/// Compares every row of every participant by unique key: of equal keys the highest `_seq`
/// stays live, every other version is masked. Rows already masked take part too: they are
/// older than their replacement, so they mask nothing new, but they tell which files hold
/// versions of one key (`shared`), which an `as_of` query, reading every version, needs.
pub(crate) fn resolve(
    parts: &[Participant<'_>],
    unique_key: &[String],
) -> Result<Resolution, StorageError> {
    let Some(first) = parts.first() else {
        return Ok(Resolution::default());
    };
    let mut starts = Vec::with_capacity(parts.len());
    let mut total = 0usize;
    for p in parts {
        starts.push(total);
        total += p.keys.num_rows();
    }
    let batches: Vec<&RecordBatch> = parts.iter().map(|p| p.keys).collect();
    let all = arrow::compute::concat_batches(first.keys.schema_ref(), batches)?;
    let seq = all
        .column_by_name(SEQ_COLUMN)
        .and_then(|c| c.as_primitive_opt::<UInt64Type>())
        .ok_or(StorageError::MissingColumn(SEQ_COLUMN))?;
    let mut live = vec![true; total];
    let part_of = |row: usize| starts.partition_point(|&s| s <= row) - 1;
    let replaced = RefCell::new(Vec::new());
    let note = |older: usize, newer: usize| replaced.borrow_mut().push((older, newer));
    let versions = Versions {
        batch: &all,
        unique_key,
        seq,
        arrived: None,
        replaced_by: Some(&note),
    };
    versions.drop_replaced(&key_hashes(&all, unique_key)?, &mut live)?;
    let mut out = Resolution {
        masks: parts
            .iter()
            .map(|p| p.masked.cloned().unwrap_or_default())
            .collect(),
        ..Resolution::default()
    };
    for (row, is) in live.iter().enumerate() {
        if !*is {
            let p = part_of(row);
            out.masks[p].insert((row - starts[p]) as u64);
        }
    }
    for (older, newer) in replaced.into_inner() {
        let (a, b) = (part_of(older), part_of(newer));
        if a == b {
            out.repeats.insert(a);
        } else {
            out.shared.insert((a.min(b), a.max(b)));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow::array::{StringArray, TimestampMicrosecondArray, UInt64Array};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    fn keys(rows: &[(&str, i64, u64)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("customer_id", DataType::Utf8, false),
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
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.1))
                        .with_timezone("UTC"),
                ),
                Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.2))),
            ],
        )
        .unwrap()
    }

    fn set(rows: &[u64]) -> RoaringTreemap {
        rows.iter().copied().collect()
    }

    #[test]
    fn the_newest_version_of_each_key_stays_live_in_whichever_file() {
        let key = ["customer_id".to_string(), "timestamp".to_string()];
        // An old file, a new one replacing two of its rows, one of them twice.
        let old = keys(&[("a", 1, 10), ("b", 1, 11), ("c", 1, 12)]);
        let new = keys(&[("b", 1, 20), ("a", 1, 21), ("b", 1, 22)]);
        // A file written later holding an older version (an upload's rows): it loses.
        let late = keys(&[("c", 1, 5), ("d", 1, 6)]);
        let r = resolve(
            &[
                Participant {
                    keys: &old,
                    masked: None,
                },
                Participant {
                    keys: &new,
                    masked: None,
                },
                Participant {
                    keys: &late,
                    masked: None,
                },
            ],
            &key,
        )
        .unwrap();
        assert_eq!(r.masks, vec![set(&[0, 1]), set(&[0]), set(&[0])]);
        assert_eq!(r.shared, [(0, 1), (0, 2)].into_iter().collect());
        assert_eq!(r.repeats, [1].into_iter().collect());
        // Rows already masked stay masked, and still tell which files share a key.
        let r = resolve(
            &[
                Participant {
                    keys: &old,
                    masked: Some(&set(&[2])),
                },
                Participant {
                    keys: &late,
                    masked: None,
                },
            ],
            &key,
        )
        .unwrap();
        assert_eq!(r.masks, vec![set(&[2]), set(&[0])]);
        assert_eq!(r.shared, [(0, 1)].into_iter().collect());
    }
}
