//! Delta file statistics (`numRecords`, `minValues`, `maxValues`, `nullCount`) read from our
//! Parquet footers: one small ranged read per new file, nothing decoded. Bounds are taken
//! from the row groups' statistics, so they hold for every row in the file, masked or not
//! (`tightBounds: false` says so when a deletion vector hides some).

use std::sync::Arc;

use arrow::datatypes::DataType;
use chrono::{DateTime, SecondsFormat};
use object_store::ObjectStore;
use object_store::path::Path;
#[allow(deprecated)]
use parquet::arrow::async_reader::{AsyncFileReader, ParquetObjectReader};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::statistics::Statistics;
use serde_json::{Map, Value, json};

use crate::error::DeltaError;

/// The footer of the Parquet file at `path`.
// `ParquetObjectReader` is deprecated in parquet 59 in favour of a hand-written
// `AsyncFileReader`; one footer read per new file does not justify writing one.
#[allow(deprecated)]
pub async fn read_footer(
    store: Arc<dyn ObjectStore>,
    path: &Path,
    size: u64,
) -> Result<Arc<ParquetMetaData>, DeltaError> {
    let mut reader = ParquetObjectReader::new(store, path.clone()).with_file_size(size);
    reader
        .get_metadata(None)
        .await
        .map_err(|e| DeltaError::Parquet {
            path: path.to_string(),
            reason: e.to_string(),
        })
}

/// A bound as Delta's JSON stats want it, or `None` where we give no bound.
fn bound(t: &DataType, s: &Statistics, max: bool) -> Option<Value> {
    let micros = |v: i64| {
        // Millisecond precision: a minimum rounds down, a maximum up, so the bound holds.
        let floor = v.div_euclid(1000);
        let ms = if max && v.rem_euclid(1000) != 0 {
            floor + 1
        } else {
            floor
        };
        DateTime::from_timestamp_millis(ms)
            .map(|d| json!(d.to_rfc3339_opts(SecondsFormat::Millis, true)))
    };
    match (t, s) {
        (DataType::Utf8, Statistics::ByteArray(v)) => {
            let b = if max { v.max_opt() } else { v.min_opt() }?;
            // A truncated string bound is only a prefix; Delta takes bounds as exact values.
            let exact = if max {
                v.max_is_exact()
            } else {
                v.min_is_exact()
            };
            exact.then(|| std::str::from_utf8(b.data()).ok().map(|s| json!(s)))?
        }
        (DataType::Timestamp(..), Statistics::Int64(v)) => {
            micros(*if max { v.max_opt() } else { v.min_opt() }?)
        }
        (
            DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::UInt8 | DataType::UInt16,
            Statistics::Int32(v),
        ) => Some(json!(*if max { v.max_opt() } else { v.min_opt() }?)),
        (DataType::Int64 | DataType::UInt32, Statistics::Int64(v)) => {
            Some(json!(*if max { v.max_opt() } else { v.min_opt() }?))
        }
        (DataType::Float64, Statistics::Double(v)) => {
            let x = *if max { v.max_opt() } else { v.min_opt() }?;
            x.is_finite().then(|| json!(x))
        }
        (DataType::Float32, Statistics::Float(v)) => {
            let x = *if max { v.max_opt() } else { v.min_opt() }?;
            x.is_finite().then(|| json!(x))
        }
        _ => None,
    }
}

/// The `stats` JSON of a file with `columns` (name, Arrow type) and footer `meta`.
pub fn file_stats(
    columns: &[(String, DataType, bool)],
    meta: &ParquetMetaData,
    masked: bool,
) -> String {
    let schema = meta.file_metadata().schema_descr();
    let rows: i64 = meta.row_groups().iter().map(|rg| rg.num_rows()).sum();
    let (mut mins, mut maxs, mut nulls) = (Map::new(), Map::new(), Map::new());
    for (name, t, _) in columns {
        let Some(idx) =
            (0..schema.num_columns()).find(|&i| schema.column(i).path().string() == *name)
        else {
            // A field added after this file was written: every row is null.
            nulls.insert(name.clone(), json!(rows));
            continue;
        };
        let (mut min, mut max, mut null_count) = (None::<Value>, None::<Value>, Some(0u64));
        let mut complete = true;
        for rg in meta.row_groups() {
            let Some(s) = rg.column(idx).statistics() else {
                complete = false;
                null_count = None;
                break;
            };
            null_count = null_count.zip(s.null_count_opt()).map(|(a, b)| a + b);
            let (lo, hi) = (bound(t, s, false), bound(t, s, true));
            if lo.is_none() || hi.is_none() {
                // A row group of only nulls has no bounds and constrains nothing.
                if s.null_count_opt() == Some(rg.num_rows() as u64) {
                    continue;
                }
                complete = false;
                continue;
            }
            min = Some(match min {
                Some(m) if cmp(&m, lo.as_ref().unwrap_or(&m)).is_le() => m,
                _ => lo.unwrap_or(Value::Null),
            });
            max = Some(match max {
                Some(m) if cmp(&m, hi.as_ref().unwrap_or(&m)).is_ge() => m,
                _ => hi.unwrap_or(Value::Null),
            });
        }
        if complete {
            if let Some(m) = min {
                mins.insert(name.clone(), m);
            }
            if let Some(m) = max {
                maxs.insert(name.clone(), m);
            }
        }
        if let Some(n) = null_count {
            nulls.insert(name.clone(), json!(n));
        }
    }
    json!({
        "numRecords": rows,
        "minValues": mins,
        "maxValues": maxs,
        "nullCount": nulls,
        "tightBounds": !masked,
    })
    .to_string()
}

/// Orders two bounds of one column (numbers by value, strings and ISO instants as text).
fn cmp(a: &Value, b: &Value) -> std::cmp::Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_i64() && y.is_i64() => {
            x.as_i64().cmp(&y.as_i64())
        }
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .unwrap_or(0.0)
            .partial_cmp(&y.as_f64().unwrap_or(0.0))
            .unwrap_or(std::cmp::Ordering::Equal),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        _ => std::cmp::Ordering::Equal,
    }
}
