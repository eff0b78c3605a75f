//! Columnar bodies: Arrow record batches (an Arrow IPC stream or a Parquet file)
//! → one validated batch of the event type. Column names are matched to fields by
//! `columns::Layout`, exactly as a CSV header is, and every cell goes through the same
//! `BatchBuilder` as a JSON value, so the rules (types, required fields, limits, timestamps)
//! are the JSON path's and an error names the 1-based row as `line` and the column as
//! `pointer`. Input batches are read one at a time where they lie: only the cells' values are
//! copied, into the builders.

use std::borrow::Cow;
use std::fmt::Write;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Date32Array, Decimal128Array, Float32Array,
    Float64Array, LargeStringArray, PrimitiveArray, StringArray, StringViewArray,
};
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Int8Type, Int16Type, Int32Type, Int64Type, Schema, TimeUnit,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

use crate::columns::{CsvOptions, Layout, Target, header_error};
use crate::decode::{BatchBuilder, RawValueKind};
use crate::scalar::format_decimal;
use crate::timestamp::format_date;
use crate::{BaseType, DecodeLimits, DecodeOutcome, EventDecoder, EventError};

/// What kind of values a column holds, as far as the event type's fields care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Arrow's `Null` type: every value is null.
    Null,
    Text,
    Bool,
    Int,
    Float,
    Decimal,
    Date,
    Instant,
}

fn kind(t: &DataType) -> Option<Kind> {
    Some(match t {
        DataType::Null => Kind::Null,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Kind::Text,
        DataType::Boolean => Kind::Bool,
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => Kind::Int,
        DataType::Float32 | DataType::Float64 => Kind::Float,
        DataType::Decimal128(..) => Kind::Decimal,
        DataType::Date32 => Kind::Date,
        DataType::Timestamp(..) => Kind::Instant,
        // pandas and pyarrow write categorical strings as dictionaries.
        DataType::Dictionary(_, values) => return kind(values),
        _ => return None,
    })
}

/// The column kinds a target takes: those a JSON value of the same content would pass as.
fn accepts(target: Target, dec: &EventDecoder) -> (&'static [Kind], &'static str) {
    const INSTANT: &[Kind] = &[
        Kind::Null,
        Kind::Text,
        Kind::Int,
        Kind::Float,
        Kind::Instant,
    ];
    const INSTANT_TEXT: &str =
        "Timestamp, integer or floating-point (epoch seconds), or string (RFC 3339)";
    let base = match target {
        Target::Customer => return (&[Kind::Null, Kind::Text], "string"),
        Target::Timestamp => return (INSTANT, INSTANT_TEXT),
        Target::Field(i, _) => dec.fields()[i].1.base,
        Target::Ignore => return (&[], ""),
    };
    match base {
        BaseType::String | BaseType::Uuid => (&[Kind::Null, Kind::Text], "string"),
        BaseType::Int8
        | BaseType::Int16
        | BaseType::Int32
        | BaseType::Int64
        | BaseType::UInt8
        | BaseType::UInt16
        | BaseType::UInt32
        | BaseType::UInt64
        | BaseType::Float32
        | BaseType::Float64
        | BaseType::Decimal { .. } => (
            &[
                Kind::Null,
                Kind::Text,
                Kind::Int,
                Kind::Float,
                Kind::Decimal,
            ],
            "integer, floating-point, Decimal128 or string",
        ),
        BaseType::Bool => (&[Kind::Null, Kind::Text, Kind::Bool], "Boolean or string"),
        BaseType::Date => (&[Kind::Null, Kind::Text, Kind::Date], "Date32 or string"),
        BaseType::DateTime | BaseType::DateTime64 { .. } => (INSTANT, INSTANT_TEXT),
    }
}

/// The columns of a body's schema resolved against the event type, types checked.
struct Columns {
    layout: Layout,
    types: Vec<DataType>,
}

impl Columns {
    fn new(
        dec: &EventDecoder,
        schema: &Schema,
        opts: &CsvOptions,
    ) -> Result<Columns, Vec<EventError>> {
        let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        let layout = Layout::new(dec, &names, opts, None)?;
        let mut errors = Vec::new();
        for ((name, t), target) in names
            .iter()
            .zip(schema.fields().iter().map(|f| f.data_type()))
            .zip(&layout.targets)
        {
            if *target == Target::Ignore {
                continue;
            }
            let (kinds, wanted) = accepts(*target, dec);
            if !kind(t).is_some_and(|k| kinds.contains(&k)) {
                let what = match target {
                    Target::Field(i, _) => {
                        let (field, ty) = &dec.fields()[*i];
                        format!("field {field:?} ({})", ty.base)
                    }
                    Target::Customer => "customer_id".to_string(),
                    _ => "timestamp".to_string(),
                };
                errors.push(header_error(
                    None,
                    name,
                    format!("column {name:?} is of Arrow type {t}; {what} takes a {wanted} column"),
                ));
            }
        }
        if errors.is_empty() {
            Ok(Columns {
                layout,
                types: schema
                    .fields()
                    .iter()
                    .map(|f| f.data_type().clone())
                    .collect(),
            })
        } else {
            Err(errors)
        }
    }
}

/// One column of one input batch, typed once so each cell is a plain read.
enum Cells<'a> {
    Null,
    Utf8(&'a StringArray),
    LargeUtf8(&'a LargeStringArray),
    Utf8View(&'a StringViewArray),
    Bool(&'a BooleanArray),
    Int(Box<dyn Fn(usize) -> i128 + 'a>),
    F32(&'a Float32Array),
    F64(&'a Float64Array),
    Decimal(&'a Decimal128Array, i8),
    Date(&'a Date32Array),
    /// Microseconds; a value that does not fit saturates, which `check_micros` refuses.
    Instant(Box<dyn Fn(usize) -> i64 + 'a>),
}

fn ints<'a, T>(a: &'a dyn Array) -> Cells<'a>
where
    T: ArrowPrimitiveType,
    T::Native: Into<i128>,
{
    let a: &PrimitiveArray<T> = a.as_primitive::<T>();
    Cells::Int(Box::new(move |r| a.value(r).into()))
}

fn instants<'a, T>(a: &'a dyn Array, to_micros: fn(i64) -> i64) -> Cells<'a>
where
    T: ArrowPrimitiveType<Native = i64>,
{
    let a: &PrimitiveArray<T> = a.as_primitive::<T>();
    Cells::Instant(Box::new(move |r| to_micros(a.value(r))))
}

impl<'a> Cells<'a> {
    /// `None` for a type `Columns::new` refuses (never reached).
    fn new(a: &'a dyn Array) -> Option<Cells<'a>> {
        Some(match a.data_type() {
            DataType::Null => Cells::Null,
            DataType::Utf8 => Cells::Utf8(a.as_string::<i32>()),
            DataType::LargeUtf8 => Cells::LargeUtf8(a.as_string::<i64>()),
            DataType::Utf8View => Cells::Utf8View(a.as_string_view()),
            DataType::Boolean => Cells::Bool(a.as_boolean()),
            DataType::Int8 => ints::<Int8Type>(a),
            DataType::Int16 => ints::<Int16Type>(a),
            DataType::Int32 => ints::<Int32Type>(a),
            DataType::Int64 => ints::<Int64Type>(a),
            DataType::UInt8 => ints::<UInt8Type>(a),
            DataType::UInt16 => ints::<UInt16Type>(a),
            DataType::UInt32 => ints::<UInt32Type>(a),
            DataType::UInt64 => ints::<UInt64Type>(a),
            DataType::Float32 => Cells::F32(a.as_primitive()),
            DataType::Float64 => Cells::F64(a.as_primitive()),
            DataType::Decimal128(_, scale) => Cells::Decimal(a.as_primitive(), *scale),
            DataType::Date32 => Cells::Date(a.as_primitive()),
            // Arrow stores every timestamp as an instant since the epoch in UTC whatever its
            // zone, so the zone (or its absence: UTC) changes nothing here. Finer units are
            // truncated to microseconds, as the text forms' extra fraction digits are.
            DataType::Timestamp(TimeUnit::Second, _) => {
                instants::<TimestampSecondType>(a, |v| v.saturating_mul(1_000_000))
            }
            DataType::Timestamp(TimeUnit::Millisecond, _) => {
                instants::<TimestampMillisecondType>(a, |v| v.saturating_mul(1_000))
            }
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                instants::<TimestampMicrosecondType>(a, |v| v)
            }
            DataType::Timestamp(TimeUnit::Nanosecond, _) => {
                instants::<TimestampNanosecondType>(a, |v| v.div_euclid(1_000))
            }
            _ => return None,
        })
    }

    /// Row `r` as the JSON decoder would have seen it; numbers are written into `scratch`
    /// and read back by the same parsers, so ranges, integrality and decimal digits are
    /// checked exactly as for JSON.
    fn value<'s>(
        &'s self,
        array: &dyn Array,
        r: usize,
        scratch: &'s mut String,
    ) -> RawValueKind<'s> {
        if matches!(self, Cells::Null) || array.is_null(r) {
            return RawValueKind::Null;
        }
        scratch.clear();
        // Writing into a String cannot fail.
        let _ = match self {
            Cells::Null => return RawValueKind::Null,
            Cells::Utf8(a) => return RawValueKind::Str(Cow::Borrowed(a.value(r))),
            Cells::LargeUtf8(a) => return RawValueKind::Str(Cow::Borrowed(a.value(r))),
            Cells::Utf8View(a) => return RawValueKind::Str(Cow::Borrowed(a.value(r))),
            Cells::Bool(a) => return RawValueKind::Bool(a.value(r)),
            Cells::Date(a) => return RawValueKind::Str(Cow::Owned(format_date(a.value(r)))),
            Cells::Instant(f) => return RawValueKind::Instant(f(r)),
            Cells::Int(f) => write!(scratch, "{}", f(r)),
            // Debug writes the shortest text that reads back as the same value (and NaN or
            // inf, which the parsers refuse as JSON cannot carry them).
            Cells::F32(a) => write!(scratch, "{:?}", a.value(r)),
            Cells::F64(a) => write!(scratch, "{:?}", a.value(r)),
            Cells::Decimal(a, scale) => {
                scratch.push_str(&format_decimal(a.value(r), *scale));
                Ok(())
            }
        };
        RawValueKind::Num(scratch.as_str())
    }
}

/// Decodes `batches` of `schema` (one body) into one batch of the event type, all or nothing.
/// `limits.max_events` bounds the rows; an unreadable batch refuses the whole body.
pub fn decode_batches<I>(
    dec: &EventDecoder,
    schema: &Schema,
    batches: I,
    opts: &CsvOptions,
    limits: DecodeLimits,
) -> DecodeOutcome
where
    I: IntoIterator<Item = Result<RecordBatch, ArrowError>>,
{
    let columns = match Columns::new(dec, schema, opts) {
        Ok(c) => c,
        Err(errors) => {
            return DecodeOutcome::Invalid {
                errors,
                invalid_events: 0,
                events: 0,
            };
        }
    };
    let mut b: Option<BatchBuilder<'_>> = None;
    let mut rows = 0usize;
    let mut scratch = String::with_capacity(64);
    for batch in batches {
        let batch = match batch {
            Ok(batch) => batch,
            Err(e) => {
                return DecodeOutcome::body_error(format!(
                    "the body is unreadable after row {rows}: {e}"
                ));
            }
        };
        let n = batch.num_rows();
        if rows + n > limits.max_events {
            return DecodeOutcome::TooManyEvents {
                limit: limits.max_events,
            };
        }
        let types_match = batch.num_columns() == columns.types.len()
            && batch
                .columns()
                .iter()
                .zip(&columns.types)
                .all(|(a, t)| a.data_type() == t);
        if !types_match {
            return DecodeOutcome::body_error(format!(
                "the batch after row {rows} has other columns than the body's schema"
            ));
        }
        let b = b.get_or_insert_with(|| dec.batch_builder(n.max(1), limits));
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
        for (a, target) in batch.columns().iter().zip(&columns.layout.targets) {
            arrays.push(match (a.data_type(), target) {
                (_, Target::Ignore) => a.clone(),
                // One copy of a dictionary column's values per batch, to read it like the
                // plain column it stands for.
                (DataType::Dictionary(_, values), _) => match arrow::compute::cast(a, values) {
                    Ok(plain) => plain,
                    Err(e) => {
                        return DecodeOutcome::body_error(format!(
                            "unreadable dictionary column: {e}"
                        ));
                    }
                },
                _ => a.clone(),
            });
        }
        let mut cells = Vec::with_capacity(arrays.len());
        for (a, target) in arrays.iter().zip(&columns.layout.targets) {
            if *target == Target::Ignore {
                continue;
            }
            match Cells::new(a.as_ref()) {
                Some(c) => cells.push((a.as_ref(), c, *target)),
                None => {
                    return DecodeOutcome::body_error(format!(
                        "column of Arrow type {} cannot be read",
                        a.data_type()
                    ));
                }
            }
        }
        for r in 0..n {
            rows += 1;
            b.begin_event(None, Some(rows));
            for (array, c, target) in &cells {
                let v = c.value(*array, r, &mut scratch);
                match target {
                    Target::Customer => b.customer_id("/customer_id", v),
                    Target::Timestamp => b.timestamp("/timestamp", v),
                    Target::Field(i, _) => b.field(*i, v),
                    Target::Ignore => {}
                }
            }
            b.end_event();
        }
    }
    let b = b.unwrap_or_else(|| dec.batch_builder(1, limits));
    match b.finish() {
        DecodeOutcome::Invalid {
            mut errors,
            invalid_events,
            events,
        } => {
            columns.layout.rename(&mut errors);
            DecodeOutcome::Invalid {
                errors,
                invalid_events,
                events,
            }
        }
        other => other,
    }
}

/// An Arrow IPC stream body (`application/vnd.apache.arrow.stream`): read batch by batch.
pub fn decode_arrow_stream(
    dec: &EventDecoder,
    body: &[u8],
    opts: &CsvOptions,
    limits: DecodeLimits,
) -> DecodeOutcome {
    if body.is_empty() {
        return DecodeOutcome::body_error(
            "the body is empty: an Arrow IPC stream starts with its schema".into(),
        );
    }
    if let Err(why) = check_framing(body) {
        return DecodeOutcome::body_error(format!("not an Arrow IPC stream: {why}"));
    }
    let reader = match arrow::ipc::reader::StreamReader::try_new(body, None) {
        Ok(r) => r,
        Err(e) => return DecodeOutcome::body_error(format!("not an Arrow IPC stream: {e}")),
    };
    let schema = reader.schema();
    decode_batches(dec, &schema, reader, opts, limits)
}

/// Rows per batch read from a Parquet body: large enough to keep per-batch costs small,
/// small enough that a batch of wide rows stays a few MiB.
const PARQUET_BATCH_ROWS: usize = 8192;

/// A Parquet file body (`application/vnd.apache.parquet`): its footer says where everything
/// is, so the body is whole in memory; row groups are decoded a batch at a time, in place.
pub fn decode_parquet(
    dec: &EventDecoder,
    body: bytes::Bytes,
    opts: &CsvOptions,
    limits: DecodeLimits,
) -> DecodeOutcome {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    if body.is_empty() {
        return DecodeOutcome::body_error("the body is empty: send a Parquet file".into());
    }
    if let Err(why) = crate::parquet_framing::check_footer(&body) {
        return DecodeOutcome::body_error(format!("not a readable Parquet file: {why}"));
    }
    if let Err(why) = crate::parquet_framing::check_with_parquet_60(&body) {
        return DecodeOutcome::body_error(format!("not a readable Parquet file: {why}"));
    }
    let builder = match ParquetRecordBatchReaderBuilder::try_new(body.clone()) {
        Ok(b) => b,
        Err(e) => return DecodeOutcome::body_error(format!("not a readable Parquet file: {e}")),
    };
    if let Err(why) = crate::parquet_framing::check_pages(&body, builder.metadata()) {
        return DecodeOutcome::body_error(format!("not a readable Parquet file: {why}"));
    }
    // The footer counts the rows: a body of too many is refused before any is read.
    let rows = builder.metadata().file_metadata().num_rows();
    if usize::try_from(rows).map_or(true, |r| r > limits.max_events) {
        return DecodeOutcome::TooManyEvents {
            limit: limits.max_events,
        };
    }
    let schema = builder.schema().clone();
    match builder.with_batch_size(PARQUET_BATCH_ROWS).build() {
        Ok(reader) => decode_batches(dec, &schema, reader, opts, limits),
        Err(e) => DecodeOutcome::body_error(format!("not a readable Parquet file: {e}")),
    }
}

/// Walks the stream's messages (length-prefixed metadata, then `bodyLength` bytes) without
/// decoding them, refusing one that claims more bytes than the body has. arrow-ipc 59
/// allocates each message's declared body length before reading it: 50 bytes declaring
/// 32 GiB made the allocation fail and abort the process (found by the `arrow_stream` fuzz
/// target). The write-ahead log's older record form is such a stream too, and replay checks
/// it the same way (found by the `wal_record` target).
pub fn check_framing(body: &[u8]) -> Result<(), String> {
    let word = |at: usize| -> Result<i32, String> {
        body.get(at..at + 4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| format!("truncated at byte {at}"))
    };
    let mut at = 0;
    while at < body.len() {
        let mut len = word(at)?;
        at += 4;
        if len == -1 {
            // The continuation marker, then the metadata's length.
            len = word(at)?;
            at += 4;
        }
        if len == 0 {
            return Ok(()); // end of stream
        }
        let len =
            usize::try_from(len).map_err(|_| format!("negative length at byte {}", at - 4))?;
        let meta = body
            .get(at..at + len)
            .ok_or_else(|| format!("message at byte {at} claims {len} bytes of metadata"))?;
        let message =
            arrow::ipc::root_as_message(meta).map_err(|e| format!("message at byte {at}: {e}"))?;
        at += len;
        let declared = message.bodyLength();
        let fits = usize::try_from(declared)
            .ok()
            .filter(|&n| n <= body.len() - at);
        let Some(n) = fits else {
            return Err(format!(
                "a message declares {declared} bytes of data, {} remain",
                body.len() - at
            ));
        };
        at += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{
        ArrayRef, AsArray, BooleanArray, DictionaryArray, Float64Array, Int64Array,
        LargeStringArray, NullArray, StringArray, TimestampNanosecondArray, TimestampSecondArray,
    };
    use arrow::datatypes::{Field, Float64Type, Int32Type, Schema, TimestampMicrosecondType};
    use arrow::ipc::writer::StreamWriter;
    use arrow::record_batch::RecordBatch;
    use proptest::prelude::*;

    use super::*;
    use crate::{EventTypeDef, EventTypeSpec, InputFormat};

    fn decoder() -> EventDecoder {
        let spec: EventTypeSpec = serde_json::from_str(
            r#"{"name":"compute","dataschema":{"data":{"cpu":"Float64","count":"Int32","region":"Nullable(String)","ok":"Nullable(Bool)","at":"Nullable(DateTime)","price":"Nullable(Decimal(10,2))"}}}"#,
        )
        .unwrap();
        let def = EventTypeDef::from_spec(spec, "t".into(), chrono::DateTime::UNIX_EPOCH).unwrap();
        EventDecoder::new(&def).unwrap()
    }

    const JAN_2025: i64 = 1_735_689_600;

    fn limits() -> DecodeLimits {
        DecodeLimits {
            now: (JAN_2025 + 86_400) * 1_000_000,
            ..DecodeLimits::default()
        }
    }

    fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
        let fields: Vec<Field> = columns
            .iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect();
        RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns.into_iter().map(|(_, a)| a).collect(),
        )
        .unwrap()
    }

    fn stream(batches: &[RecordBatch]) -> Vec<u8> {
        let mut w = StreamWriter::try_new(Vec::new(), &batches[0].schema()).unwrap();
        for b in batches {
            w.write(b).unwrap();
        }
        w.into_inner().unwrap()
    }

    fn decode(batches: &[RecordBatch], opts: &CsvOptions) -> DecodeOutcome {
        decode_arrow_stream(&decoder(), &stream(batches), opts, limits())
    }

    /// (line, pointer) of every error.
    fn errors(outcome: &DecodeOutcome) -> Vec<(Option<usize>, String)> {
        match outcome {
            DecodeOutcome::Invalid { errors, .. } => {
                errors.iter().map(|e| (e.line, e.pointer.clone())).collect()
            }
            other => panic!("expected errors, got {other:?}"),
        }
    }

    fn strings(v: &[&str]) -> ArrayRef {
        Arc::new(StringArray::from(v.to_vec()))
    }

    fn basic(customers: &[&str], seconds: &[i64], cpu: &[f64], count: &[i64]) -> RecordBatch {
        batch(vec![
            ("customer_id", strings(customers)),
            (
                "timestamp",
                Arc::new(TimestampSecondArray::from(seconds.to_vec())),
            ),
            ("cpu", Arc::new(Float64Array::from(cpu.to_vec()))),
            ("count", Arc::new(Int64Array::from(count.to_vec()))),
        ])
    }

    #[test]
    fn a_valid_stream_of_two_batches_decodes_every_type() {
        let first = batch(vec![
            (
                "customer_id",
                Arc::new(LargeStringArray::from(vec!["c1", "c2"])),
            ),
            // Nanoseconds without a zone: read as UTC, truncated to microseconds.
            (
                "timestamp",
                Arc::new(TimestampNanosecondArray::from(vec![
                    JAN_2025 * 1_000_000_000 + 1_999,
                    JAN_2025 * 1_000_000_000,
                ])),
            ),
            ("cpu", Arc::new(Int64Array::from(vec![2, 3]))),
            ("count", Arc::new(Float64Array::from(vec![4.0, 5.0]))),
            (
                "region",
                Arc::new(
                    vec![Some("eu"), None]
                        .into_iter()
                        .collect::<DictionaryArray<Int32Type>>(),
                ),
            ),
            ("ok", Arc::new(BooleanArray::from(vec![Some(true), None]))),
            (
                "at",
                Arc::new(
                    TimestampSecondArray::from(vec![Some(JAN_2025), None]).with_timezone("+02:00"),
                ),
            ),
            ("price", strings(&["1.25", "3"])),
        ]);
        let second = first.slice(0, 1);
        let DecodeOutcome::Valid(out) = decode(&[first, second], &CsvOptions::default()) else {
            panic!("refused")
        };
        assert_eq!(out.num_rows(), 3);
        assert_eq!(out.column(0).as_string::<i32>().value(1), "c2");
        let ts = out.column(1).as_primitive::<TimestampMicrosecondType>();
        assert_eq!(ts.value(0), JAN_2025 * 1_000_000 + 1);
        let cpu = out.column(2).as_primitive::<Float64Type>();
        assert_eq!(cpu.values().to_vec(), vec![2.0, 3.0, 2.0]);
        assert_eq!(out.column(3).as_primitive::<Int32Type>().value(1), 5);
        assert_eq!(out.column(4).as_string::<i32>().value(0), "eu");
        assert!(out.column(4).is_null(1));
        assert!(out.column(5).as_boolean().value(0));
        // A zone changes the display, not the instant.
        let at = out.column(6).as_primitive::<TimestampMicrosecondType>();
        assert_eq!(at.value(0), JAN_2025 * 1_000_000);
        assert!(at.is_null(1));
        assert_eq!(
            out.column(7)
                .as_primitive::<arrow::datatypes::Decimal128Type>()
                .value(0),
            125
        );
    }

    #[test]
    fn timestamps_as_epoch_seconds_and_rfc_3339_text() {
        let epoch = batch(vec![
            ("customer_id", strings(&["c"])),
            ("timestamp", Arc::new(Int64Array::from(vec![JAN_2025]))),
            ("cpu", Arc::new(Float64Array::from(vec![1.0]))),
            ("count", Arc::new(Int64Array::from(vec![1]))),
        ]);
        let text = batch(vec![
            ("customer_id", strings(&["c"])),
            ("timestamp", strings(&["2025-01-01T02:00:00+02:00"])),
            ("cpu", Arc::new(Float64Array::from(vec![1.0]))),
            ("count", Arc::new(Int64Array::from(vec![1]))),
        ]);
        for b in [epoch, text] {
            let DecodeOutcome::Valid(out) = decode(&[b], &CsvOptions::default()) else {
                panic!("refused")
            };
            let ts = out.column(1).as_primitive::<TimestampMicrosecondType>();
            assert_eq!(ts.value(0), JAN_2025 * 1_000_000);
        }
    }

    #[test]
    fn every_invalid_value_is_named_by_row_and_column() {
        let good = basic(&["c"], &[JAN_2025], &[1.0], &[1]);
        let bad = batch(vec![
            ("customer_id", strings(&["c", "", "c", "c", "c", "c", "c"])),
            (
                "timestamp",
                Arc::new(TimestampSecondArray::from(vec![
                    Some(JAN_2025),
                    Some(JAN_2025),
                    Some(-1),
                    Some(JAN_2025 + 10 * 86_400),
                    None,
                    Some(JAN_2025),
                    Some(JAN_2025),
                ])),
            ),
            (
                "cpu",
                Arc::new(Float64Array::from(vec![
                    Some(f64::NAN),
                    Some(1.0),
                    Some(1.0),
                    Some(1.0),
                    Some(1.0),
                    None,
                    Some(1.0),
                ])),
            ),
            (
                "count",
                Arc::new(Int64Array::from(vec![1, 1, 1, 1, 1, 1, 3_000_000_000])),
            ),
        ]);
        let out = decode(&[good, bad], &CsvOptions::default());
        let got = errors(&out);
        let expected: Vec<(Option<usize>, String)> = [
            (2, "cpu"),
            (3, "customer_id"),
            (4, "timestamp"),
            (5, "timestamp"),
            (6, "timestamp"),
            (7, "cpu"),
            (8, "count"),
        ]
        .iter()
        .map(|(l, p)| (Some(*l), p.to_string()))
        .collect();
        assert_eq!(got, expected);
        let DecodeOutcome::Invalid {
            errors,
            invalid_events,
            events,
        } = out
        else {
            unreachable!()
        };
        assert_eq!((invalid_events, events), (7, 8));
        let message = |line| {
            errors
                .iter()
                .find(|e| e.line == Some(line))
                .map(|e| e.message.clone())
                .unwrap()
        };
        assert!(message(2).contains("NaN"), "{}", message(2));
        assert!(message(4).contains("before 1970"), "{}", message(4));
        assert!(message(5).contains("future"), "{}", message(5));
        assert!(message(7).contains("required"), "{}", message(7));
        assert!(message(8).contains("out of range"), "{}", message(8));
    }

    #[test]
    fn text_cells_follow_the_json_rules() {
        let b = batch(vec![
            ("customer_id", strings(&["c", "c", "c"])),
            (
                "timestamp",
                strings(&["2025-01-01T00:00:00Z", "1735689600", "2025-01-01T00:00:00Z"]),
            ),
            ("cpu", strings(&["1.5", "2", "abc"])),
            ("count", Arc::new(Float64Array::from(vec![1.0, 1.0, 1.5]))),
        ]);
        // Epoch seconds as text are not a timestamp (as in JSON); 1.5 is not an Int32.
        assert_eq!(
            errors(&decode(&[b], &CsvOptions::default())),
            vec![
                (Some(2), "timestamp".to_string()),
                (Some(3), "cpu".to_string()),
                (Some(3), "count".to_string())
            ]
        );
    }

    #[test]
    fn map_overrides_and_unknown_columns_as_for_csv() {
        let b = batch(vec![
            ("Customer", strings(&["c"])),
            ("timestamp", Arc::new(Int64Array::from(vec![JAN_2025]))),
            (
                "CPU hours",
                Arc::new(Float64Array::from(vec![f64::INFINITY])),
            ),
            ("count", Arc::new(Int64Array::from(vec![1]))),
            ("extra", strings(&["x"])),
        ]);
        let mut opts = CsvOptions {
            field_columns: vec![
                ("customer_id".into(), "Customer".into()),
                ("cpu".into(), "CPU hours".into()),
            ],
            ignore_unknown_columns: false,
        };
        assert_eq!(
            errors(&decode(std::slice::from_ref(&b), &opts)),
            vec![(None, "extra".to_string())]
        );
        opts.ignore_unknown_columns = true;
        // Errors name the sender's column, not the field.
        assert_eq!(
            errors(&decode(std::slice::from_ref(&b), &opts)),
            vec![(Some(1), "CPU hours".to_string())]
        );
        let fixed = batch(vec![
            ("Customer", strings(&["c"])),
            ("timestamp", Arc::new(Int64Array::from(vec![JAN_2025]))),
            ("CPU hours", Arc::new(Float64Array::from(vec![2.5]))),
            ("count", Arc::new(Int64Array::from(vec![1]))),
            ("extra", strings(&["x"])),
        ]);
        let DecodeOutcome::Valid(out) = decode(&[fixed], &opts) else {
            panic!("refused")
        };
        assert_eq!(out.column(2).as_primitive::<Float64Type>().value(0), 2.5);
    }

    #[test]
    fn a_column_of_the_wrong_type_is_refused_before_any_row() {
        let b = batch(vec![
            ("customer_id", Arc::new(Int64Array::from(vec![7]))),
            ("timestamp", Arc::new(Int64Array::from(vec![JAN_2025]))),
            ("cpu", Arc::new(BooleanArray::from(vec![true]))),
            ("count", Arc::new(Int64Array::from(vec![1]))),
        ]);
        let out = decode(&[b], &CsvOptions::default());
        assert_eq!(
            errors(&out),
            vec![(None, "customer_id".to_string()), (None, "cpu".to_string())]
        );
        let DecodeOutcome::Invalid { errors, events, .. } = out else {
            unreachable!()
        };
        assert_eq!(events, 0);
        assert!(
            errors[1].message.contains("Boolean"),
            "{}",
            errors[1].message
        );
    }

    #[test]
    fn a_missing_required_column_is_refused_and_a_missing_nullable_one_is_null() {
        let b = batch(vec![
            ("customer_id", strings(&["c"])),
            ("timestamp", Arc::new(Int64Array::from(vec![JAN_2025]))),
            ("count", Arc::new(Int64Array::from(vec![1]))),
        ]);
        assert_eq!(
            errors(&decode(&[b], &CsvOptions::default())),
            vec![(None, "cpu".to_string())]
        );
        let DecodeOutcome::Valid(out) = decode(
            &[basic(&["c"], &[JAN_2025], &[1.0], &[1])],
            &CsvOptions::default(),
        ) else {
            panic!("refused")
        };
        assert!(out.column(4).is_null(0));
    }

    #[test]
    fn an_all_null_column_is_null_in_every_row() {
        let b = batch(vec![
            ("customer_id", strings(&["c", "d"])),
            (
                "timestamp",
                Arc::new(Int64Array::from(vec![JAN_2025, JAN_2025])),
            ),
            ("cpu", Arc::new(Float64Array::from(vec![1.0, 2.0]))),
            ("count", Arc::new(NullArray::new(2))),
            ("region", Arc::new(NullArray::new(2))),
        ]);
        assert_eq!(
            errors(&decode(&[b], &CsvOptions::default())),
            vec![
                (Some(1), "count".to_string()),
                (Some(2), "count".to_string())
            ]
        );
    }

    #[test]
    fn empty_unreadable_and_row_less_bodies() {
        let dec = decoder();
        let opts = CsvOptions::default();
        for body in [&b""[..], b"not arrow at all"] {
            let out = decode_arrow_stream(&dec, body, &opts, limits());
            assert_eq!(errors(&out), vec![(None, String::new())]);
        }
        let full = stream(&[basic(&["c"], &[JAN_2025], &[1.0], &[1])]);
        let out = decode_arrow_stream(&dec, &full[..full.len() - 20], &opts, limits());
        assert_eq!(errors(&out), vec![(None, String::new())]);
        let schema_only = {
            let b = basic(&["c"], &[JAN_2025], &[1.0], &[1]);
            let w = StreamWriter::try_new(Vec::new(), &b.schema()).unwrap();
            w.into_inner().unwrap()
        };
        let DecodeOutcome::Valid(out) = decode_arrow_stream(&dec, &schema_only, &opts, limits())
        else {
            panic!("refused")
        };
        assert_eq!(out.num_rows(), 0);
    }

    #[test]
    fn more_rows_than_the_limit_are_refused() {
        let b = basic(&["c", "c", "c"], &[JAN_2025; 3], &[1.0; 3], &[1; 3]);
        let small = DecodeLimits {
            max_events: 5,
            ..limits()
        };
        let out = decode_arrow_stream(
            &decoder(),
            &stream(&[b.clone(), b]),
            &CsvOptions::default(),
            small,
        );
        assert!(matches!(out, DecodeOutcome::TooManyEvents { limit: 5 }));
    }

    fn ndjson(rows: &[(String, i64, f64, i32, Option<String>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (c, t, cpu, count, region) in rows {
            let line = serde_json::json!({
                "customer_id": c,
                "timestamp": t,
                "data": {"cpu": cpu, "count": count, "region": region},
            });
            out.extend_from_slice(line.to_string().as_bytes());
            out.push(b'\n');
        }
        out
    }

    proptest! {
        /// Random valid rows decode to the same batch as Arrow as they do as NDJSON.
        #[test]
        fn arrow_rows_decode_as_their_ndjson_does(
            rows in proptest::collection::vec(
                (
                    "[a-z0-9_]{1,12}",
                    JAN_2025..JAN_2025 + 86_400,
                    -1e12f64..1e12,
                    any::<i32>(),
                    proptest::option::of("[ -~]{0,20}"),
                ),
                1..60,
            ),
            split in 0usize..60,
        ) {
            let dec = decoder();
            let n = rows.len();
            let arrow = batch(vec![
                ("customer_id", Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0.as_str())))),
                ("timestamp", Arc::new(TimestampSecondArray::from_iter_values(rows.iter().map(|r| r.1)))),
                ("cpu", Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.2)))),
                ("count", Arc::new(arrow::array::Int32Array::from_iter_values(rows.iter().map(|r| r.3)))),
                ("region", Arc::new(StringArray::from_iter(rows.iter().map(|r| r.4.as_deref())))),
            ]);
            let at = split.min(n);
            let body = stream(&[arrow.slice(0, at), arrow.slice(at, n - at)]);
            let from_arrow = decode_arrow_stream(&dec, &body, &CsvOptions::default(), limits());
            let from_json = dec.decode(&ndjson(&rows), InputFormat::Ndjson, limits());
            match (from_arrow, from_json) {
                (DecodeOutcome::Valid(a), DecodeOutcome::Valid(j)) => prop_assert_eq!(a, j),
                (a, j) => prop_assert!(false, "arrow {:?}, json {:?}", a, j),
            }
        }
    }
}
