//! Data files: rows sorted by a layout's order, compressed Parquet with page statistics, the
//! page index and, in arrival-ordered files, a bloom filter on `customer_id`; one file per
//! UTC day for flushes and uploads, one per group for compaction.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, AsArray, UInt32Array, UInt64Array};
use arrow::compute::{
    SortColumn, concat, interleave_record_batch, lexsort_to_indices, take_record_batch,
};
use arrow::datatypes::{SchemaRef, TimestampMicrosecondType, UInt64Type};
use arrow::record_batch::RecordBatch;
use meterbase_schema::timestamp::MICROS_PER_DAY;
use meterbase_schema::{CUSTOMER_ID_COLUMN, EventTypeDef, SEQ_COLUMN, TIMESTAMP_COLUMN};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::{KeyValue, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::adapt::adapt_batch;
use crate::error::StorageError;
use crate::format::manifest::{FileLayout, FileMeta};
use crate::format::paths::TablePaths;
use crate::identity::{KeySet, key_hashes, record_seq, ts_range};

/// The data file layout this build writes, recorded in each file's key-value metadata
/// (`meterbase.file_format`) beside its layout (`meterbase.layout`). Files without them were
/// written before the key existed, in the same layout as format 1; the manifest's
/// `FileMeta::layout` says which layout a listed file has either way.
pub const DATA_FILE_FORMAT: u32 = 1;

pub(crate) struct EncodedFile {
    pub path: String,
    pub bytes: Vec<u8>,
    pub meta: FileMeta,
    /// The file's unique-key columns and `_seq` in file order, to compute deletion vectors;
    /// `None` when the layout did not ask for them (`Layout::key_rows`).
    pub key_rows: Option<RecordBatch>,
}

/// Whether one of `hashes` repeats (two rows may hold one key).
fn repeats(hashes: &[u64]) -> bool {
    let mut seen = KeySet::with_capacity_and_hasher(hashes.len(), Default::default());
    hashes.iter().any(|h| !seen.insert(*h))
}

/// The unique-key columns and `_seq` of `batch`, in its row order: what deletion vectors are
/// computed from (`resolve`).
pub(crate) fn key_columns(
    batch: &RecordBatch,
    unique_key: &[String],
) -> Result<RecordBatch, StorageError> {
    let indices = unique_key
        .iter()
        .map(String::as_str)
        .chain([SEQ_COLUMN])
        .map(|name| {
            batch
                .schema_ref()
                .index_of(name)
                .map_err(|_| StorageError::MissingKeyColumn(name.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(batch.project(&indices)?)
}

/// The unique-key columns and `_seq` of a Parquet file (only they are decoded).
pub(crate) fn file_key_columns(
    bytes: bytes::Bytes,
    unique_key: &[String],
) -> Result<RecordBatch, StorageError> {
    let names: Vec<&str> = unique_key
        .iter()
        .map(String::as_str)
        .chain([SEQ_COLUMN])
        .collect();
    key_columns(&file_columns(bytes, &names)?, unique_key)
}

/// The columns `names` of a Parquet file, in file order, as one batch (only they are
/// decoded).
pub(crate) fn file_columns(
    bytes: bytes::Bytes,
    names: &[&str],
) -> Result<RecordBatch, StorageError> {
    use parquet::arrow::ProjectionMask;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)?;
    let mask = ProjectionMask::columns(builder.parquet_schema(), names.iter().copied());
    let reader = builder
        .with_projection(mask)
        .with_batch_size(1 << 20)
        .build()?;
    let schema = arrow::record_batch::RecordBatchReader::schema(&reader);
    let batches = reader.collect::<Result<Vec<_>, _>>()?;
    Ok(arrow::compute::concat_batches(&schema, &batches)?)
}

/// How `encode_batches` orders, names and stamps a file's rows.
pub(crate) struct Layout<'a> {
    pub order: &'a [String],
    pub name_suffix: &'a str,
    /// Give every row of a file that holds one version per key the file's latest `_seq`.
    /// Only for rows the caller has shown nothing else can be ordered against by their own
    /// sequence (`compact::may_share_one_seq`): a constant column costs nothing on disk,
    /// where arrival order scattered by customer costs ~2 bytes a row.
    pub one_seq: bool,
    /// Compaction's output, written to be kept: one file for all the rows (a group is a day
    /// or settled days of one month), zstd 6 in 16k-row pages. Otherwise (a flush, an
    /// upload) one file per UTC day, LZ4 in 4k-row pages, cheap on the ingest path.
    pub compacted: bool,
    /// The caller knows no two rows share a unique key (a buffer chunk whose key hashes never
    /// repeated), so the files need no check for repeats.
    pub rows_unique: bool,
    /// Hand back each file's key columns (`EncodedFile::key_rows`), for deletion vectors.
    /// With `rows_unique`, leaving them out spares hashing every key: 2.4% of batched-ingest
    /// CPU, for keys a busy table's flushes never compare (`persister::resolve_new_files`
    /// flags by time then).
    pub key_rows: bool,
}

impl<'a> Layout<'a> {
    /// Sorted by `order`, rows keep the sequence they arrived with.
    pub fn arrival(order: &'a [String]) -> Layout<'a> {
        Layout {
            order,
            name_suffix: "",
            one_seq: false,
            compacted: false,
            rows_unique: false,
            key_rows: true,
        }
    }
}

/// `batch` with every `_seq` set to its largest.
fn with_one_seq(batch: &RecordBatch) -> Result<RecordBatch, StorageError> {
    let idx = batch
        .schema_ref()
        .index_of(SEQ_COLUMN)
        .map_err(|_| StorageError::MissingColumn(SEQ_COLUMN))?;
    let Some(latest) = batch
        .column(idx)
        .as_primitive_opt::<UInt64Type>()
        .and_then(arrow::compute::max)
    else {
        return Ok(batch.clone());
    };
    let mut cols = batch.columns().to_vec();
    cols[idx] = Arc::new(UInt64Array::from_value(latest, batch.num_rows()));
    Ok(RecordBatch::try_new(batch.schema(), cols)?)
}

/// `encode_chunk` for any batches, laid out by `layout`; `(min_seq, max_seq)` and the
/// layout's `name_suffix` name the files, so together they must be unique to these rows.
pub(crate) fn encode_batches(
    paths: &TablePaths,
    def: &EventTypeDef,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    (min_seq, max_seq): (u64, u64),
    layout: &Layout<'_>,
) -> Result<Vec<EncodedFile>, StorageError> {
    let Layout {
        order,
        name_suffix,
        one_seq,
        compacted,
        rows_unique,
        key_rows,
    } = *layout;
    let adapted = batches
        .iter()
        .map(|b| adapt_batch(b, schema))
        .collect::<Result<Vec<_>, _>>()?;
    let sorted = sort_batches(&adapted, order)?;
    let parts = if !compacted {
        split_by_day(&sorted)?
    } else {
        match ts_range(&sorted) {
            Some((min_ts, _)) => vec![(min_ts.div_euclid(MICROS_PER_DAY) as i32, sorted)],
            None => Vec::new(),
        }
    };
    let mut out = Vec::new();
    for (day, part) in parts {
        let path = paths.data_file(day, min_seq, max_seq, name_suffix);
        let has_duplicate_keys = !rows_unique && repeats(&key_hashes(&part, &def.unique_key)?);
        let part = if one_seq && !has_duplicate_keys {
            with_one_seq(&part)?
        } else {
            part
        };
        let bytes = write_parquet(&part, def, schema, order, compacted)?;
        let (min_ts, max_ts) = ts_range(&part).unwrap_or((0, 0));
        let seqs = part
            .column_by_name(SEQ_COLUMN)
            .and_then(|c| c.as_primitive_opt::<UInt64Type>())
            .ok_or(StorageError::MissingColumn(SEQ_COLUMN))?;
        let min_seq = arrow::compute::min(seqs).map(record_seq).unwrap_or(0);
        let max_seq = arrow::compute::max(seqs).map(record_seq).unwrap_or(0);
        out.push(EncodedFile {
            meta: FileMeta {
                path: path.clone(),
                size: bytes.len() as u64,
                rows: part.num_rows() as u64,
                min_ts,
                max_ts,
                min_seq,
                max_seq,
                schema_version: def.schema_version,
                has_duplicate_keys,
                shares_keys: false,
                visible_from: None,
                deletions_applied: 0,
                crc32c: Some(crc32c::crc32c(&bytes)),
                layout: if compacted {
                    FileLayout::Compacted
                } else {
                    FileLayout::Arrival
                },
                sorted_by: order
                    .iter()
                    .cloned()
                    .chain((!one_seq || has_duplicate_keys).then(|| SEQ_COLUMN.to_string()))
                    .collect(),
                deletion_vector: None,
                live_resolved: false,
            },
            key_rows: if key_rows {
                Some(key_columns(&part, &def.unique_key)?)
            } else {
                None
            },
            path,
            bytes,
        });
    }
    Ok(out)
}

/// The rows of `batches` in `column_order`, then arrival order, in one batch. Only the sort
/// columns are concatenated; the rows are copied once, straight into sorted order.
fn sort_batches(batches: &[RecordBatch], order: &[String]) -> Result<RecordBatch, StorageError> {
    let Some(first) = batches.first() else {
        return Err(StorageError::Invariant(
            "a file was to be written from no rows",
        ));
    };
    if let Some(pairs) = time_order(batches, order) {
        let refs: Vec<&RecordBatch> = batches.iter().collect();
        return Ok(interleave_record_batch(&refs, &pairs)?);
    }
    let idx = match customer_time_order(batches, order) {
        Some(idx) => idx,
        None => generic_order(first, batches, order)?,
    };
    gather(first, batches, &idx)
}

fn generic_order(
    first: &RecordBatch,
    batches: &[RecordBatch],
    order: &[String],
) -> Result<UInt32Array, StorageError> {
    let mut cols: Vec<SortColumn> = Vec::new();
    for name in order.iter().map(String::as_str).chain([SEQ_COLUMN]) {
        let Ok(i) = first.schema_ref().index_of(name) else {
            continue;
        };
        let parts: Vec<&dyn Array> = batches.iter().map(|b| b.column(i).as_ref()).collect();
        cols.push(SortColumn {
            values: concat(&parts)?,
            options: None,
        });
    }
    Ok(lexsort_to_indices(&cols, None)?)
}

/// The default layout (time, then arrival) as a sort of plain integers: each row's
/// timestamp packed with its place (batch, then row), which follows `_seq` when the batches
/// arrive in log order (checked). A fraction of the generic comparator's cost on the persist
/// path, and the sorted keys unpack straight into the (batch, row) pairs the gather takes,
/// where positions had to be searched for their batch (1.9% of batched-ingest CPU). `None`
/// when it does not apply.
fn time_order(batches: &[RecordBatch], order: &[String]) -> Option<Vec<(usize, usize)>> {
    if order.len() != 1 || order[0] != TIMESTAMP_COLUMN {
        return None;
    }
    let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
    // Bounds a place to 62 bits: batches and their widest row count fit in `total`.
    if total > u32::MAX as usize {
        return None;
    }
    let widest = batches.iter().map(RecordBatch::num_rows).max()?;
    let mut last_seq = None;
    let (mut min_ts, mut max_ts) = (i64::MAX, i64::MIN);
    for b in batches {
        let (ts, seq) = time_and_seq(b)?;
        for (&t, &s) in ts.iter().zip(seq.iter()) {
            if last_seq.is_some_and(|l| s <= l) {
                return None;
            }
            last_seq = Some(s);
            min_ts = min_ts.min(t);
            max_ts = max_ts.max(t);
        }
    }
    let bits = |n: usize| usize::BITS - n.leading_zeros();
    let row_bits = bits(widest.saturating_sub(1));
    let place_bits = bits(batches.len() - 1) + row_bits;
    let places = || {
        batches.iter().enumerate().flat_map(move |(b, batch)| {
            let ts = time_and_seq(batch).map_or(&[][..], |(ts, _)| ts);
            ts.iter()
                .enumerate()
                .map(move |(r, &t)| (t, ((b as u64) << row_bits) | r as u64))
        })
    };
    let row_mask = (1u64 << row_bits) - 1;
    let unpack = |place: u64| ((place >> row_bits) as usize, (place & row_mask) as usize);
    // A flush spans days, not decades: the offset from the earliest time and the place
    // usually share one u64, cheaper to sort than a u128 (this function went from 4.5% to
    // 3.0% of batched-ingest CPU samples).
    let span = max_ts.abs_diff(min_ts);
    if (u64::BITS - span.leading_zeros()) + place_bits <= u64::BITS {
        let mut keys: Vec<u64> = Vec::with_capacity(total);
        keys.extend(places().map(|(t, p)| (t.abs_diff(min_ts) << place_bits) | p));
        keys.sort_unstable();
        let place_mask = (1u64 << place_bits) - 1;
        return Some(keys.iter().map(|&k| unpack(k & place_mask)).collect());
    }
    let mut keys: Vec<u128> = Vec::with_capacity(total);
    keys.extend(
        // Flipping the sign bit makes the signed order an unsigned one.
        places().map(|(t, p)| ((((t as u64) ^ (1 << 63)) as u128) << 64) | p as u128),
    );
    keys.sort_unstable();
    Some(keys.iter().map(|&k| unpack(k as u64)).collect())
}

/// A batch's times and sequences as plain slices, `None` if either column is missing or
/// holds a null (the integer sorts then leave the order to the generic one).
fn time_and_seq(b: &RecordBatch) -> Option<(&[i64], &[u64])> {
    let ts = b
        .column_by_name(TIMESTAMP_COLUMN)?
        .as_primitive_opt::<TimestampMicrosecondType>()?;
    let seq = b
        .column_by_name(SEQ_COLUMN)?
        .as_primitive_opt::<UInt64Type>()?;
    (ts.null_count() == 0 && seq.null_count() == 0).then(|| (&ts.values()[..], &seq.values()[..]))
}

/// Compaction's layout (customer, time, then `_seq`) as a sort of plain integers: each
/// customer replaced by its rank among the distinct customers, so the comparator never
/// touches a string or an `Array` (a third of a compaction pass went to the generic one).
/// `None` when it does not apply (another order, nulls, more rows than `u32` positions).
fn customer_time_order(batches: &[RecordBatch], order: &[String]) -> Option<UInt32Array> {
    if order != [CUSTOMER_ID_COLUMN, TIMESTAMP_COLUMN] {
        return None;
    }
    let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if total > u32::MAX as usize {
        return None;
    }
    let mut columns = Vec::with_capacity(batches.len());
    let mut ranks: HashMap<&str, u32, foldhash::fast::FixedState> = HashMap::default();
    for b in batches {
        let customers = b
            .column_by_name(CUSTOMER_ID_COLUMN)?
            .as_string_opt::<i32>()?;
        let (ts, seq) = time_and_seq(b)?;
        if customers.null_count() > 0 {
            return None;
        }
        for c in customers.iter().flatten() {
            ranks.entry(c).or_insert(0);
        }
        columns.push((customers, ts, seq));
    }
    let mut distinct: Vec<&str> = ranks.keys().copied().collect();
    distinct.sort_unstable();
    for (rank, c) in distinct.iter().enumerate() {
        ranks.insert(c, rank as u32);
    }
    let mut keys: Vec<(u32, i64, u64, u32)> = Vec::with_capacity(total);
    for (customers, ts, seq) in columns {
        for ((c, &t), &s) in customers.iter().zip(ts).zip(seq) {
            let rank = c.and_then(|c| ranks.get(c).copied())?;
            keys.push((rank, t, s, keys.len() as u32));
        }
    }
    keys.sort_unstable();
    Some(UInt32Array::from_iter_values(keys.iter().map(|k| k.3)))
}

/// Rows `idx` (positions across all of `batches`, in turn) as one batch.
fn gather(
    first: &RecordBatch,
    batches: &[RecordBatch],
    idx: &UInt32Array,
) -> Result<RecordBatch, StorageError> {
    if batches.len() == 1 {
        return Ok(take_record_batch(first, idx)?);
    }
    let mut starts = Vec::with_capacity(batches.len());
    let mut total = 0usize;
    for b in batches {
        starts.push(total);
        total += b.num_rows();
    }
    let pairs: Vec<(usize, usize)> = idx
        .values()
        .iter()
        .map(|&i| {
            let i = i as usize;
            let batch = starts.partition_point(|&s| s <= i) - 1;
            (batch, i - starts[batch])
        })
        .collect();
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    Ok(interleave_record_batch(&refs, &pairs)?)
}

/// Rows grouped by UTC day. Sorted by time (the default layout) each day is a contiguous
/// range and costs no copy; otherwise each day's rows are gathered.
fn split_by_day(batch: &RecordBatch) -> Result<Vec<(i32, RecordBatch)>, StorageError> {
    let ts = batch
        .column_by_name(TIMESTAMP_COLUMN)
        .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
        .ok_or(StorageError::MissingColumn(TIMESTAMP_COLUMN))?;
    let day = |i: usize| ts.value(i).div_euclid(MICROS_PER_DAY) as i32;
    let n = batch.num_rows();
    if n == 0 {
        return Ok(vec![]);
    }
    if (1..n).all(|i| day(i - 1) <= day(i)) {
        let mut out = Vec::new();
        let mut start = 0;
        for i in 1..=n {
            if i == n || day(i) != day(start) {
                out.push((day(start), batch.slice(start, i - start)));
                start = i;
            }
        }
        return Ok(out);
    }
    let mut groups: BTreeMap<i32, Vec<u32>> = BTreeMap::new();
    for i in 0..n {
        groups.entry(day(i)).or_default().push(i as u32);
    }
    groups
        .into_iter()
        .map(|(d, idx)| Ok((d, take_record_batch(batch, &UInt32Array::from(idx))?)))
        .collect()
}

/// Every row of a data file (as written: the caller adapts them to the table's schema).
pub(crate) fn read_file(bytes: bytes::Bytes) -> Result<Vec<RecordBatch>, StorageError> {
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)?
        .with_batch_size(64 * 1024)
        .build()?;
    Ok(reader.collect::<Result<Vec<_>, _>>()?)
}

fn write_parquet(
    batch: &RecordBatch,
    def: &EventTypeDef,
    schema: &SchemaRef,
    order: &[String],
    compacted: bool,
) -> Result<Vec<u8>, StorageError> {
    let sorting: Vec<SortingColumn> = order
        .iter()
        .filter_map(|c| schema.index_of(c).ok())
        .map(|i| SortingColumn {
            column_idx: i as i32,
            descending: false,
            nulls_first: false,
        })
        .collect();
    // Compacted files are written once and read for months: zstd 6 over 16k-row pages gives
    // each frame a customer's longer run (5.96 -> 5.67 bytes/event on the benchmark, level 3
    // with 4k pages; a one-customer month still reads a page or two per file). Flush files
    // live minutes and sit on the ingest path: parquet-rs sets up a new zstd context for
    // every page, which cost more than compressing did, so they take LZ4 (flush of 1M
    // events: 338 -> 297 ms).
    let (compression, page_rows) = if compacted {
        (Compression::ZSTD(ZstdLevel::try_new(6)?), 16 * 1024)
    } else {
        (Compression::LZ4_RAW, 4 * 1024)
    };
    let mut props = WriterProperties::builder()
        .set_compression(compression)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(1_000_000))
        .set_data_page_row_count_limit(page_rows)
        .set_sorting_columns(Some(sorting))
        .set_key_value_metadata(Some(vec![
            KeyValue::new("meterbase.file_format".into(), DATA_FILE_FORMAT.to_string()),
            KeyValue::new(
                "meterbase.layout".into(),
                if compacted { "compacted" } else { "arrival" }.to_string(),
            ),
            KeyValue::new("meterbase.event_type".into(), def.id.clone()),
            KeyValue::new(
                "meterbase.schema_version".into(),
                def.schema_version.to_string(),
            ),
        ]));
    // Arrival instants repeat (one per log group), so they keep the dictionary; times and
    // sequences are mostly increasing, which delta encoding packs best.
    for c in [TIMESTAMP_COLUMN, SEQ_COLUMN] {
        props = props
            .set_column_dictionary_enabled(ColumnPath::from(c), false)
            .set_column_encoding(ColumnPath::from(c), Encoding::DELTA_BINARY_PACKED);
    }
    // In customer order the page index narrows a read of one customer to that customer's
    // pages, so a bloom filter would only cost a read per file (Q2 over 29 day files: 18.5
    // -> 16.8 ms). In arrival order every page holds every customer and only the bloom filter
    // can say one is absent from the file.
    if order.first().map(String::as_str) != Some(CUSTOMER_ID_COLUMN) {
        // Sized by the distinct count, with a fast hash: SipHash was ~2% of ingest CPU.
        let distinct = batch
            .column_by_name(CUSTOMER_ID_COLUMN)
            .and_then(|c| c.as_string_opt::<i32>())
            .ok_or(StorageError::MissingColumn(CUSTOMER_ID_COLUMN))?
            .iter()
            .flatten()
            .collect::<HashSet<&str, foldhash::fast::FixedState>>()
            .len() as u64;
        let customer = ColumnPath::from(CUSTOMER_ID_COLUMN);
        props = props
            .set_column_bloom_filter_enabled(customer.clone(), true)
            .set_column_bloom_filter_fpp(customer.clone(), 0.01)
            .set_column_bloom_filter_max_ndv(customer, distinct.max(16));
    }
    let mut buf = Vec::with_capacity(batch.get_array_memory_size() / 4);
    let mut writer = ArrowWriter::try_new(&mut buf, Arc::clone(schema), Some(props.build()))?;
    writer.write(batch)?;
    writer.close()?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, TimestampMicrosecondArray, UInt64Array};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    fn batch(ts: &[i64], seq: &[u64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "timestamp",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new(SEQ_COLUMN, DataType::UInt64, false),
        ]));
        let cols: Vec<ArrayRef> = vec![
            Arc::new(TimestampMicrosecondArray::from(ts.to_vec()).with_timezone("UTC")),
            Arc::new(UInt64Array::from(seq.to_vec())),
        ];
        RecordBatch::try_new(schema, cols).unwrap()
    }

    #[test]
    fn repeats_are_found_wherever_they_are() {
        assert!(repeats(&[1, 2, 1, 3, 4]));
        assert!(repeats(&[1, 2, 3, 4, 4]));
        assert!(!repeats(&[5, 6]));
    }

    /// `time_order`'s (batch, row) pairs as positions in the batches laid end to end.
    fn time_positions(batches: &[RecordBatch], order: &[String]) -> Option<UInt32Array> {
        let starts: Vec<usize> = batches
            .iter()
            .scan(0, |at, b| {
                let start = *at;
                *at += b.num_rows();
                Some(start)
            })
            .collect();
        let pairs = time_order(batches, order)?;
        Some(UInt32Array::from_iter_values(
            pairs.iter().map(|&(b, r)| (starts[b] + r) as u32),
        ))
    }

    #[test]
    fn the_integer_time_sort_equals_the_generic_one() {
        let order = vec!["timestamp".to_string()];
        // Ties (5, -3) across batches, negative times, and a batch in reverse time order.
        let batches = vec![
            batch(
                &[5, -3, 9, 5],
                &[1 << 20, (1 << 20) + 1, (1 << 20) + 2, (1 << 20) + 3],
            ),
            batch(&[i64::MIN, 5, -3], &[2 << 20, (2 << 20) + 1, (2 << 20) + 2]),
            batch(&[100, 50, 0], &[3 << 20, (3 << 20) + 1, (3 << 20) + 2]),
        ];
        let fast = time_positions(&batches, &order).unwrap();
        let generic = generic_order(&batches[0], &batches, &order).unwrap();
        assert_eq!(fast, generic);
        // Out of log order, or another layout: the generic sort decides.
        let shuffled = vec![batches[1].clone(), batches[0].clone()];
        assert!(time_order(&shuffled, &order).is_none());
        assert!(time_order(&batches, &["customer_id".to_string()]).is_none());
    }

    proptest::proptest! {
        /// Both packings (offset and place in one u64 when the span allows, else a u128)
        /// order rows exactly as the generic sort does, ties in arrival order.
        #[test]
        fn the_integer_time_sort_equals_the_generic_one_for_any_times(
            parts in proptest::collection::vec(
                proptest::collection::vec(
                    proptest::prop_oneof![0i64..50, -(1i64 << 40)..(1i64 << 40), proptest::num::i64::ANY],
                    1..40,
                ),
                1..6,
            )
        ) {
            let order = vec!["timestamp".to_string()];
            let mut seq = 0u64;
            let batches: Vec<RecordBatch> = parts
                .iter()
                .map(|ts| {
                    let seqs: Vec<u64> = ts.iter().map(|_| { seq += 1; seq }).collect();
                    batch(ts, &seqs)
                })
                .collect();
            let fast = time_positions(&batches, &order).unwrap();
            let generic = generic_order(&batches[0], &batches, &order).unwrap();
            proptest::prop_assert_eq!(fast, generic);
        }
    }

    proptest::proptest! {
        /// Compaction's integer sort orders rows as the generic sort does: customer, time,
        /// then `_seq`, with inputs out of log order, times of any span and (customer,
        /// time) pairs repeated.
        #[test]
        fn the_integer_customer_sort_equals_the_generic_one_for_any_rows(
            rows in proptest::collection::vec(
                (
                    0u8..5,
                    proptest::prop_oneof![0i64..6, proptest::num::i64::ANY],
                    proptest::num::u32::ANY,
                ),
                1..60,
            ),
            split in 0usize..60,
        ) {
            use arrow::array::StringArray;
            let order = vec!["customer_id".to_string(), "timestamp".to_string()];
            // Distinct sequences in random order, as rows of several files arrive.
            let seqs: Vec<u64> = rows.iter().enumerate().map(|(i, r)| ((r.2 as u64) << 8) | i as u64).collect();
            let make = |range: std::ops::Range<usize>| {
                let b = batch(
                    &rows[range.clone()].iter().map(|r| r.1).collect::<Vec<_>>(),
                    &seqs[range.clone()],
                );
                let customers: Vec<String> = rows[range].iter().map(|r| format!("c{}", r.0)).collect();
                let mut fields = vec![Arc::new(Field::new("customer_id", DataType::Utf8, false))];
                fields.extend(b.schema().fields().iter().cloned());
                let mut cols: Vec<ArrayRef> = vec![Arc::new(StringArray::from(customers))];
                cols.extend(b.columns().iter().cloned());
                RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap()
            };
            let cut = split.min(rows.len());
            let batches = vec![make(0..cut), make(cut..rows.len())];
            let fast = customer_time_order(&batches, &order).unwrap();
            let generic = generic_order(&batches[0], &batches, &order).unwrap();
            proptest::prop_assert_eq!(fast, generic);
        }
    }

    #[test]
    fn the_integer_customer_sort_equals_the_generic_one() {
        use arrow::array::StringArray;
        let order = vec!["customer_id".to_string(), "timestamp".to_string()];
        let with_customers = |customers: &[&str], ts: &[i64], seq: &[u64]| {
            let b = batch(ts, seq);
            let mut fields = vec![Arc::new(Field::new("customer_id", DataType::Utf8, false))];
            fields.extend(b.schema().fields().iter().cloned());
            let mut cols: Vec<ArrayRef> = vec![Arc::new(StringArray::from(customers.to_vec()))];
            cols.extend(b.columns().iter().cloned());
            RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap()
        };
        // Batches out of log order (compaction's inputs), customers whose byte order differs
        // from their first appearance, equal (customer, time) pairs told apart by `_seq`.
        let batches = vec![
            with_customers(&["b", "a", "é", "b"], &[5, 9, -3, 5], &[30, 31, 32, 33]),
            with_customers(
                &["a", "b", "Z", "a"],
                &[9, 5, 0, i64::MIN],
                &[10, 11, 12, 13],
            ),
        ];
        let fast = customer_time_order(&batches, &order).unwrap();
        let generic = generic_order(&batches[0], &batches, &order).unwrap();
        assert_eq!(fast, generic);
        assert!(customer_time_order(&batches, &order[..1]).is_none());
    }
}
