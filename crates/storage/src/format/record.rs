//! The payload of a write-ahead log record: which table, which schema version, and the
//! validated rows, self-described (so replay never re-validates against a clock or a schema
//! that has moved on): as an Arrow IPC stream, or for a few rows in `columns`' compact form.
//!
//! The first byte is the record's kind, which doubles as its format version: a new form is a
//! new kind and every kind ever written stays readable (`testdata/formats/wal/` pins them).
//! 1 = rows as IPC (every build), 2 = sequence marker, 3 = range deletion, 4 = rows in the
//! compact column form (added for single events; builds before it wrote 1 for any size).

use std::io::Cursor;

use arrow::datatypes::DataType;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;

use crate::StorageError;

const KIND_EVENTS: u8 = 1;
const KIND_MARKER: u8 = 2;
const KIND_DELETE: u8 = 3;
const KIND_COLUMNS: u8 = 4;

/// Batches of fewer rows than this are logged in `columns`' form when their types allow: an
/// IPC stream of one event is ~1.1 KB, mostly its schema message, and encoding that schema
/// was a tenth of the server's CPU per single-event request.
const COMPACT_BELOW_ROWS: usize = 64;

#[derive(Debug)]
pub enum WalRecord {
    Events {
        org_id: String,
        type_id: String,
        schema_version: u32,
        batch: RecordBatch,
    },
    /// Carries no rows: it takes a sequence number (and an arrival instant) from the log for
    /// rows written straight to files by a staged upload, so they order with logged rows.
    Marker { org_id: String, type_id: String },
    /// `DELETE /usage/{slug}/events`: its sequence and instant come from the log frame.
    Delete {
        org_id: String,
        type_id: String,
        range: EventRange,
    },
}

/// Events of one customer, in `[from, to)` (µs), or both: which rows a deletion removes, or a
/// listing shows. `None` matches everything on that axis.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EventRange {
    pub customer_id: Option<String>,
    pub from: Option<i64>,
    pub to: Option<i64>,
}

fn put_opt_i64(out: &mut Vec<u8>, v: Option<i64>) {
    match v {
        Some(x) => {
            out.push(1);
            out.extend_from_slice(&x.to_le_bytes());
        }
        None => out.push(0),
    }
}

fn get_opt_i64(buf: &mut &[u8]) -> Result<Option<i64>, StorageError> {
    if take(buf, 1)?[0] == 0 {
        return Ok(None);
    }
    let b = take(buf, 8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Ok(Some(i64::from_le_bytes(a)))
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], StorageError> {
    if buf.len() < n {
        return Err(StorageError::BadRecord("truncated".into()));
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

fn get_str(buf: &mut &[u8]) -> Result<String, StorageError> {
    let len = take(buf, 2)?;
    let len = u16::from_le_bytes([len[0], len[1]]) as usize;
    let bytes = take(buf, len)?;
    String::from_utf8(bytes.to_vec()).map_err(|e| StorageError::BadRecord(e.to_string()))
}

fn events_header(
    kind: u8,
    org_id: &str,
    type_id: &str,
    schema_version: u32,
    capacity: usize,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity);
    out.push(kind);
    put_str(&mut out, org_id);
    put_str(&mut out, type_id);
    out.extend_from_slice(&schema_version.to_le_bytes());
    out
}

impl WalRecord {
    /// The payload of a batch of validated rows: `columns`' compact form for a few rows of
    /// types it covers, an Arrow IPC stream otherwise.
    pub fn encode_events(
        org_id: &str,
        type_id: &str,
        schema_version: u32,
        batch: &RecordBatch,
    ) -> Result<Vec<u8>, StorageError> {
        if batch.num_rows() < COMPACT_BELOW_ROWS {
            let mut out = events_header(KIND_COLUMNS, org_id, type_id, schema_version, 256);
            if columns::encode(&mut out, batch) {
                return Ok(out);
            }
        }
        Self::encode_events_ipc(org_id, type_id, schema_version, batch)
    }

    /// `encode_events` as an Arrow IPC stream whatever the batch's size: the only form
    /// builds before the compact one wrote, still read.
    pub(crate) fn encode_events_ipc(
        org_id: &str,
        type_id: &str,
        schema_version: u32,
        batch: &RecordBatch,
    ) -> Result<Vec<u8>, StorageError> {
        let capacity = batch.get_array_memory_size() + 256;
        let mut out = events_header(KIND_EVENTS, org_id, type_id, schema_version, capacity);
        let mut w = StreamWriter::try_new(&mut out, batch.schema_ref())?;
        w.write(batch)?;
        w.finish()?;
        drop(w);
        Ok(out)
    }

    pub fn encode_marker(org_id: &str, type_id: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(5 + org_id.len() + type_id.len());
        out.push(KIND_MARKER);
        put_str(&mut out, org_id);
        put_str(&mut out, type_id);
        out
    }

    pub fn encode_delete(org_id: &str, type_id: &str, range: &EventRange) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.push(KIND_DELETE);
        put_str(&mut out, org_id);
        put_str(&mut out, type_id);
        match &range.customer_id {
            Some(c) => {
                out.push(1);
                put_str(&mut out, c);
            }
            None => out.push(0),
        }
        put_opt_i64(&mut out, range.from);
        put_opt_i64(&mut out, range.to);
        out
    }

    pub fn decode(payload: &[u8]) -> Result<WalRecord, StorageError> {
        let mut buf = payload;
        let kind = take(&mut buf, 1)?[0];
        match kind {
            KIND_EVENTS | KIND_COLUMNS => {
                let org_id = get_str(&mut buf)?;
                let type_id = get_str(&mut buf)?;
                let v = take(&mut buf, 4)?;
                let schema_version = u32::from_le_bytes([v[0], v[1], v[2], v[3]]);
                let batch = if kind == KIND_COLUMNS {
                    columns::decode(&mut buf)?
                } else {
                    // arrow-ipc allocates a message's declared length before reading it: a
                    // corrupt length must be a bad record, not an aborted replay.
                    meterbase_schema::check_ipc_framing(buf).map_err(|why| {
                        StorageError::BadRecord(format!("not an Arrow IPC stream: {why}"))
                    })?;
                    // arrow-ipc 59 panics on some malformed schemas (an unknown type tag,
                    // found by the `wal_record` fuzz target): that too is a bad record.
                    let read = || {
                        StreamReader::try_new(Cursor::new(buf), None)?
                            .next()
                            .ok_or_else(|| StorageError::BadRecord("no rows in record".into()))?
                            .map_err(StorageError::from)
                    };
                    let batch = std::panic::catch_unwind(std::panic::AssertUnwindSafe(read))
                        .unwrap_or_else(|_| {
                            Err(StorageError::BadRecord(
                                "not a readable Arrow IPC stream".into(),
                            ))
                        })?;
                    // Arrow calls an empty zone name zone-naive, but arrow-ipc writes it back
                    // as no zone: a record meterbase never writes (found by the `wal_record`
                    // fuzz target, as a decoded record that did not encode back the same).
                    if batch
                        .schema_ref()
                        .fields()
                        .iter()
                        .any(|f| names_an_empty_zone(f.data_type()))
                    {
                        return Err(StorageError::BadRecord(
                            "a timestamp column with an empty time zone name".into(),
                        ));
                    }
                    batch
                };
                Ok(WalRecord::Events {
                    org_id,
                    type_id,
                    schema_version,
                    batch,
                })
            }
            KIND_MARKER => Ok(WalRecord::Marker {
                org_id: get_str(&mut buf)?,
                type_id: get_str(&mut buf)?,
            }),
            KIND_DELETE => {
                let org_id = get_str(&mut buf)?;
                let type_id = get_str(&mut buf)?;
                let customer_id = if take(&mut buf, 1)?[0] == 0 {
                    None
                } else {
                    Some(get_str(&mut buf)?)
                };
                let from = get_opt_i64(&mut buf)?;
                let to = get_opt_i64(&mut buf)?;
                Ok(WalRecord::Delete {
                    org_id,
                    type_id,
                    range: EventRange {
                        customer_id,
                        from,
                        to,
                    },
                })
            }
            other => Err(StorageError::BadRecord(format!(
                "unknown record kind {other}"
            ))),
        }
    }
}

/// Whether `dt`, or a type nested in it, is a timestamp whose zone name is empty.
fn names_an_empty_zone(dt: &DataType) -> bool {
    match dt {
        DataType::Timestamp(_, Some(zone)) => zone.is_empty(),
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::ListView(f)
        | DataType::LargeListView(f)
        | DataType::FixedSizeList(f, _)
        | DataType::Map(f, _)
        | DataType::RunEndEncoded(_, f) => names_an_empty_zone(f.data_type()),
        DataType::Struct(fields) => fields.iter().any(|f| names_an_empty_zone(f.data_type())),
        DataType::Union(fields, _) => fields
            .iter()
            .any(|(_, f)| names_an_empty_zone(f.data_type())),
        DataType::Dictionary(_, value) => names_an_empty_zone(value),
        _ => false,
    }
}

/// A few rows, column by column, with the schema as (name, nullable, type tag) triples:
/// `rows u32, columns u16`, then per column `name, nullable u8, type, has_nulls u8,
/// [validity bitmap], values` where values are little-endian fixed-width slots, a bitmap for
/// booleans, or `u32` lengths followed by the bytes for strings. Only the types an event
/// schema produces are covered; anything else (or metadata) is logged as IPC instead.
mod columns {
    use std::sync::Arc;

    use arrow::array::{
        Array, ArrayData, ArrayRef, AsArray, BooleanArray, StringArray, make_array,
    };
    use arrow::buffer::{BooleanBuffer, Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use arrow::record_batch::{RecordBatch, RecordBatchOptions};

    use super::{get_str, put_str, take};
    use crate::StorageError;

    /// Tags of the parameterless types; 14 is `Decimal128(precision, scale)` and 15 is
    /// `Timestamp(Microsecond, zone)`, which carry their parameters after the tag.
    const PLAIN_TYPES: [(u8, DataType); 13] = [
        (1, DataType::Utf8),
        (2, DataType::Boolean),
        (3, DataType::Int8),
        (4, DataType::Int16),
        (5, DataType::Int32),
        (6, DataType::Int64),
        (7, DataType::UInt8),
        (8, DataType::UInt16),
        (9, DataType::UInt32),
        (10, DataType::UInt64),
        (11, DataType::Float32),
        (12, DataType::Float64),
        (13, DataType::Date32),
    ];

    fn put_type(out: &mut Vec<u8>, dt: &DataType) -> bool {
        match dt {
            DataType::Decimal128(p, s) => out.extend_from_slice(&[14, *p, *s as u8]),
            DataType::Timestamp(TimeUnit::Microsecond, tz) => {
                out.push(15);
                put_str(out, tz.as_deref().unwrap_or(""));
            }
            _ => match PLAIN_TYPES.iter().find(|(_, t)| t == dt) {
                Some((tag, _)) => out.push(*tag),
                None => return false,
            },
        }
        true
    }

    fn get_type(buf: &mut &[u8]) -> Result<DataType, StorageError> {
        Ok(match take(buf, 1)?[0] {
            14 => {
                let ps = take(buf, 2)?;
                DataType::Decimal128(ps[0], ps[1] as i8)
            }
            15 => {
                let tz = get_str(buf)?;
                DataType::Timestamp(TimeUnit::Microsecond, (!tz.is_empty()).then(|| tz.into()))
            }
            tag => PLAIN_TYPES
                .iter()
                .find(|(t, _)| *t == tag)
                .map(|(_, dt)| dt.clone())
                .ok_or_else(|| StorageError::BadRecord(format!("unknown column type {tag}")))?,
        })
    }

    fn put_bits(out: &mut Vec<u8>, rows: usize, bit: impl Fn(usize) -> bool) {
        for start in (0..rows).step_by(8) {
            let mut byte = 0u8;
            for i in start..(start + 8).min(rows) {
                byte |= (bit(i) as u8) << (i - start);
            }
            out.push(byte);
        }
    }

    fn get_bits(buf: &mut &[u8], rows: usize) -> Result<BooleanBuffer, StorageError> {
        let bytes = take(buf, rows.div_ceil(8))?;
        Ok(BooleanBuffer::new(Buffer::from(bytes), 0, rows))
    }

    /// Appends the batch; false (with `out` to be discarded) if a type or metadata is not
    /// covered.
    pub(super) fn encode(out: &mut Vec<u8>, batch: &RecordBatch) -> bool {
        let schema = batch.schema_ref();
        if !schema.metadata().is_empty() {
            return false;
        }
        let rows = batch.num_rows();
        out.extend_from_slice(&(rows as u32).to_le_bytes());
        out.extend_from_slice(&(schema.fields().len() as u16).to_le_bytes());
        for (field, col) in schema.fields().iter().zip(batch.columns()) {
            if !field.metadata().is_empty() {
                return false;
            }
            put_str(out, field.name());
            out.push(field.is_nullable() as u8);
            if !put_type(out, field.data_type()) {
                return false;
            }
            match col.logical_nulls() {
                Some(nulls) if nulls.null_count() > 0 => {
                    out.push(1);
                    put_bits(out, rows, |i| nulls.is_valid(i));
                }
                _ => out.push(0),
            }
            match field.data_type() {
                DataType::Utf8 => {
                    let strings = col.as_string::<i32>();
                    for i in 0..rows {
                        out.extend_from_slice(&(strings.value(i).len() as u32).to_le_bytes());
                    }
                    for i in 0..rows {
                        out.extend_from_slice(strings.value(i).as_bytes());
                    }
                }
                DataType::Boolean => {
                    let bools = col.as_boolean();
                    put_bits(out, rows, |i| bools.value(i));
                }
                dt => {
                    let Some(width) = dt.primitive_width() else {
                        return false;
                    };
                    let data = col.to_data();
                    let start = data.offset() * width;
                    match data.buffers().first() {
                        Some(values) if values.len() >= start + rows * width => {
                            out.extend_from_slice(&values.as_slice()[start..start + rows * width])
                        }
                        _ => return false,
                    }
                }
            }
        }
        true
    }

    pub(super) fn decode(buf: &mut &[u8]) -> Result<RecordBatch, StorageError> {
        let n = take(buf, 4)?;
        let rows = u32::from_le_bytes([n[0], n[1], n[2], n[3]]) as usize;
        let n = take(buf, 2)?;
        let ncols = u16::from_le_bytes([n[0], n[1]]) as usize;
        let mut fields = Vec::with_capacity(ncols);
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(ncols);
        for _ in 0..ncols {
            let name = get_str(buf)?;
            let nullable = take(buf, 1)?[0] != 0;
            let dt = get_type(buf)?;
            let nulls = match take(buf, 1)?[0] {
                0 => None,
                _ => Some(NullBuffer::new(get_bits(buf, rows)?)),
            };
            let array: ArrayRef = match &dt {
                DataType::Utf8 => {
                    // Each row's length takes 4 bytes: a damaged row count cannot make this
                    // reserve more than the record holds.
                    let mut offsets = Vec::with_capacity(rows.min(buf.len() / 4) + 1);
                    offsets.push(0i32);
                    let mut end = 0usize;
                    for _ in 0..rows {
                        let l = take(buf, 4)?;
                        end += u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize;
                        let end = i32::try_from(end)
                            .map_err(|_| StorageError::BadRecord("string too long".into()))?;
                        offsets.push(end);
                    }
                    let values = take(buf, end)?;
                    Arc::new(StringArray::try_new(
                        OffsetBuffer::new(ScalarBuffer::from(offsets)),
                        Buffer::from(values),
                        nulls,
                    )?)
                }
                DataType::Boolean => Arc::new(BooleanArray::new(get_bits(buf, rows)?, nulls)),
                dt => {
                    let width = dt.primitive_width().ok_or_else(|| {
                        StorageError::BadRecord(format!("no fixed width for {dt}"))
                    })?;
                    let values = take(buf, rows * width)?;
                    make_array(ArrayData::try_new(
                        dt.clone(),
                        rows,
                        nulls.map(|n| n.into_inner().into_inner()),
                        0,
                        vec![Buffer::from(values)],
                        vec![],
                    )?)
                }
            };
            fields.push(Field::new(name, dt, nullable));
            arrays.push(array);
        }
        if !buf.is_empty() {
            return Err(StorageError::BadRecord(
                "bytes after the last column".into(),
            ));
        }
        Ok(RecordBatch::try_new_with_options(
            Arc::new(Schema::new(fields)),
            arrays,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Arc;

    use arrow::array::AsArray;
    use arrow::array::{
        ArrayRef, BooleanArray, Date32Array, Decimal128Array, Float32Array, Float64Array,
        Int8Array, Int16Array, Int32Array, Int64Array, StringArray, TimestampMicrosecondArray,
        UInt8Array, UInt16Array, UInt32Array, UInt64Array,
    };
    use arrow::datatypes::{DataType, Field, Schema};

    /// One column of every type an event schema produces, with nulls, sliced so the arrays
    /// start at an offset.
    fn every_type(rows: usize) -> RecordBatch {
        let n = rows + 2;
        let opt = |i: usize| i % 3 != 1;
        let cols: Vec<(&str, ArrayRef)> = vec![
            (
                "customer_id",
                Arc::new(StringArray::from_iter_values(
                    (0..n).map(|i| format!("cus_{i}é")),
                )),
            ),
            (
                "s",
                Arc::new(StringArray::from_iter(
                    (0..n).map(|i| opt(i).then(|| "x".repeat(i))),
                )),
            ),
            (
                "b",
                Arc::new(BooleanArray::from_iter(
                    (0..n).map(|i| opt(i).then_some(i % 2 == 0)),
                )),
            ),
            (
                "i8",
                Arc::new(Int8Array::from_iter(
                    (0..n).map(|i| opt(i).then_some(-(i as i8))),
                )),
            ),
            (
                "i16",
                Arc::new(Int16Array::from_iter(
                    (0..n).map(|i| opt(i).then_some(i as i16 * -300)),
                )),
            ),
            (
                "i32",
                Arc::new(Int32Array::from_iter(
                    (0..n).map(|i| opt(i).then_some(i as i32 * 70_000)),
                )),
            ),
            (
                "i64",
                Arc::new(Int64Array::from_iter(
                    (0..n).map(|i| opt(i).then_some(i as i64 * -(1 << 40))),
                )),
            ),
            (
                "u8",
                Arc::new(UInt8Array::from_iter(
                    (0..n).map(|i| opt(i).then_some(i as u8)),
                )),
            ),
            (
                "u16",
                Arc::new(UInt16Array::from_iter(
                    (0..n).map(|i| opt(i).then_some(i as u16 * 999)),
                )),
            ),
            (
                "u32",
                Arc::new(UInt32Array::from_iter(
                    (0..n).map(|i| opt(i).then_some(i as u32 * 99_999)),
                )),
            ),
            (
                "u64",
                Arc::new(UInt64Array::from_iter(
                    (0..n).map(|i| opt(i).then_some(u64::MAX - i as u64)),
                )),
            ),
            (
                "f32",
                Arc::new(Float32Array::from_iter(
                    (0..n).map(|i| opt(i).then_some(i as f32 / 3.0)),
                )),
            ),
            (
                "f64",
                Arc::new(Float64Array::from_iter(
                    (0..n).map(|i| opt(i).then_some(i as f64 / 7.0)),
                )),
            ),
            (
                "d",
                Arc::new(Date32Array::from_iter(
                    (0..n).map(|i| opt(i).then_some(20_000 + i as i32)),
                )),
            ),
            (
                "dec",
                Arc::new(
                    Decimal128Array::from_iter(
                        (0..n).map(|i| opt(i).then_some(i as i128 * -1_000_000_007)),
                    )
                    .with_precision_and_scale(38, 10)
                    .unwrap(),
                ),
            ),
            (
                "timestamp",
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(
                        (0..n).map(|i| i as i64 * 1_000_003),
                    )
                    .with_timezone("UTC"),
                ),
            ),
            (
                "ts_naive",
                Arc::new(TimestampMicrosecondArray::from_iter(
                    (0..n).map(|i| opt(i).then_some(i as i64)),
                )),
            ),
        ];
        let schema = Schema::new(
            cols.iter()
                .map(|(name, a)| Field::new(*name, a.data_type().clone(), a.null_count() > 0))
                .collect::<Vec<_>>(),
        );
        let batch =
            RecordBatch::try_new(Arc::new(schema), cols.into_iter().map(|(_, a)| a).collect())
                .unwrap();
        batch.slice(1, rows)
    }

    fn round_trip(batch: &RecordBatch) -> (u8, RecordBatch) {
        let bytes = WalRecord::encode_events("org", "type", 7, batch).unwrap();
        match WalRecord::decode(&bytes).unwrap() {
            WalRecord::Events {
                org_id,
                type_id,
                schema_version,
                batch,
            } => {
                assert_eq!(
                    (org_id.as_str(), type_id.as_str(), schema_version),
                    ("org", "type", 7)
                );
                (bytes[0], batch)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn small_batches_are_logged_compactly_and_come_back_equal() {
        for rows in [1, 2, 9, COMPACT_BELOW_ROWS - 1] {
            let batch = every_type(rows);
            let (kind, back) = round_trip(&batch);
            assert_eq!(kind, KIND_COLUMNS, "{rows} rows");
            assert_eq!(back, batch, "{rows} rows");
        }
        let one = every_type(1);
        let compact = WalRecord::encode_events("org", "type", 7, &one.project(&[0, 15]).unwrap());
        assert!(
            compact.unwrap().len() < 80,
            "an event's id and time cost a few bytes"
        );
    }

    #[test]
    fn large_batches_and_metadata_take_the_ipc_form() {
        let batch = every_type(COMPACT_BELOW_ROWS);
        let (kind, back) = round_trip(&batch);
        assert_eq!((kind, back), (KIND_EVENTS, batch));
        let small = every_type(3);
        let with_meta = RecordBatch::try_new(
            Arc::new(
                small
                    .schema()
                    .as_ref()
                    .clone()
                    .with_metadata([("k".to_string(), "v".to_string())].into()),
            ),
            small.columns().to_vec(),
        )
        .unwrap();
        let (kind, back) = round_trip(&with_meta);
        assert_eq!((kind, back), (KIND_EVENTS, with_meta));
    }

    /// arrow-ipc's writer cannot write an empty zone name (it writes none), so the record
    /// that has one is the fuzz target's, replayed from `testdata/fuzz/wal_record`.
    #[test]
    fn empty_zone_names_are_found_where_they_nest() {
        let nested = DataType::List(Arc::new(Field::new(
            "item",
            DataType::Timestamp(arrow::datatypes::TimeUnit::Second, Some("".into())),
            true,
        )));
        assert!(names_an_empty_zone(&nested));
        assert!(!names_an_empty_zone(&DataType::Utf8));
    }

    #[test]
    fn a_truncated_compact_record_is_an_error_not_a_panic() {
        let bytes = WalRecord::encode_events("org", "type", 7, &every_type(5)).unwrap();
        for cut in 0..bytes.len() {
            assert!(WalRecord::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    proptest::proptest! {
        /// Any few rows of an event schema's types, nulls anywhere, any text: logged compactly
        /// and read back equal.
        #[test]
        fn compact_records_round_trip(
            rows in proptest::collection::vec(
                (
                    "\\PC{0,12}",
                    proptest::option::of(proptest::num::f64::ANY),
                    proptest::option::of(proptest::num::i64::ANY),
                    proptest::option::of(proptest::bool::ANY),
                    proptest::option::of("\\PC{0,5}"),
                ),
                1..COMPACT_BELOW_ROWS,
            ),
            ts in proptest::num::i64::ANY,
        ) {
            let cols: Vec<(&str, ArrayRef)> = vec![
                ("customer_id", Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0.as_str())))),
                ("timestamp", Arc::new(TimestampMicrosecondArray::from(vec![ts; rows.len()]).with_timezone("UTC"))),
                ("f", Arc::new(Float64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>()))),
                ("i", Arc::new(Int64Array::from(rows.iter().map(|r| r.2).collect::<Vec<_>>()))),
                ("b", Arc::new(BooleanArray::from(rows.iter().map(|r| r.3).collect::<Vec<_>>()))),
                ("s", Arc::new(StringArray::from(rows.iter().map(|r| r.4.clone()).collect::<Vec<_>>()))),
            ];
            let schema = Schema::new(
                cols.iter()
                    .map(|(name, a)| Field::new(*name, a.data_type().clone(), true))
                    .collect::<Vec<_>>(),
            );
            let batch = RecordBatch::try_new(Arc::new(schema), cols.into_iter().map(|(_, a)| a).collect()).unwrap();
            let (kind, back) = round_trip(&batch);
            proptest::prop_assert_eq!(kind, KIND_COLUMNS);
            proptest::prop_assert_eq!(back, batch);
        }

        /// Whatever bytes follow the compact kind, decoding returns an error or a batch; it
        /// never panics.
        #[test]
        fn compact_decoding_never_panics(tail in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let mut bytes = vec![KIND_COLUMNS, 1, 0, b'o', 1, 0, b't', 1, 0, 0, 0];
            bytes.extend_from_slice(&tail);
            let _ = WalRecord::decode(&bytes);
        }
    }

    #[test]
    fn nan_payloads_survive_the_compact_form() {
        let nan = f64::from_bits(0x7ff8_dead_beef_0001);
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("f", DataType::Float64, false)])),
            vec![Arc::new(Float64Array::from(vec![nan, f64::NEG_INFINITY]))],
        )
        .unwrap();
        let (_, back) = round_trip(&batch);
        let bits = |b: &RecordBatch| {
            let f = b.column(0).as_primitive::<arrow::datatypes::Float64Type>();
            f.values().iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        };
        assert_eq!(bits(&back), bits(&batch));
    }

    #[test]
    fn delete_records_round_trip() {
        for range in [
            EventRange::default(),
            EventRange {
                customer_id: Some("c'1".into()),
                from: Some(-5),
                to: Some(i64::MAX),
            },
        ] {
            let bytes = WalRecord::encode_delete("org", "type", &range);
            match WalRecord::decode(&bytes).unwrap() {
                WalRecord::Delete {
                    org_id,
                    type_id,
                    range: back,
                } => assert_eq!(
                    (org_id.as_str(), type_id.as_str(), back),
                    ("org", "type", range)
                ),
                other => panic!("{other:?}"),
            }
        }
    }
}
