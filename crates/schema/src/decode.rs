//! JSON and NDJSON events → one validated Arrow `RecordBatch`, in one pass, straight into
//! column builders (no `serde_json::Value` per event). A request is all or nothing, so once an
//! event fails the builders are abandoned and decoding only goes on to report every error.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder, Float64Builder,
    Int8Builder, Int16Builder, Int32Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder, UInt8Builder, UInt16Builder, UInt32Builder, UInt64Builder,
};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::scalar::{parse_decimal, parse_float, parse_integer};
use crate::timestamp::{
    Micros, check_micros, format_micros, parse_date, parse_epoch_seconds, parse_timestamp,
};
use crate::{BaseType, EventTypeDef, FieldType, SchemaError};

pub const MAX_CUSTOMER_ID_BYTES: usize = 256;
pub const MAX_STRING_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// One event object or an array of them.
    Json,
    /// One event per line; blank lines are skipped.
    Ndjson,
}

#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    pub max_events: usize,
    /// How many errors a response lists (every invalid event is still counted).
    pub max_errors: usize,
    /// Events later than `now + max_future` are refused.
    pub now: Micros,
    pub max_future: Micros,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_events: 100_000,
            max_errors: 100,
            now: i64::MAX / 2,
            max_future: 24 * 3600 * 1_000_000,
        }
    }
}

/// One problem with one event. `index` is 0-based (JSON), `line` 1-based (NDJSON, CSV).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventError {
    pub index: Option<usize>,
    pub line: Option<usize>,
    pub pointer: String,
    pub message: String,
}

#[derive(Debug)]
pub enum DecodeOutcome {
    Valid(RecordBatch),
    Invalid {
        errors: Vec<EventError>,
        invalid_events: usize,
        events: usize,
    },
    /// More events than `max_events`; decoding stopped there.
    TooManyEvents {
        limit: usize,
    },
}

impl DecodeOutcome {
    /// The whole body refused before any event (unreadable, empty, a column that cannot
    /// fit): one error naming no event.
    pub fn body_error(message: String) -> DecodeOutcome {
        DecodeOutcome::Invalid {
            errors: vec![EventError {
                index: None,
                line: None,
                pointer: String::new(),
                message,
            }],
            invalid_events: 0,
            events: 0,
        }
    }
}

/// A reusable decoder for one version of one event type.
pub struct EventDecoder {
    schema: SchemaRef,
    fields: Vec<(String, FieldType)>,
    by_name: HashMap<String, usize>,
}

impl EventDecoder {
    pub fn new(def: &EventTypeDef) -> Result<EventDecoder, SchemaError> {
        let fields = def.fields()?;
        let by_name = fields
            .iter()
            .enumerate()
            .map(|(i, (n, _))| (n.clone(), i))
            .collect();
        Ok(EventDecoder {
            schema: def.input_schema()?,
            fields,
            by_name,
        })
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    pub fn fields(&self) -> &[(String, FieldType)] {
        &self.fields
    }

    pub fn field_index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// Starts a column-by-column batch, for callers with their own framing (CSV).
    pub fn batch_builder(&self, capacity: usize, limits: DecodeLimits) -> BatchBuilder<'_> {
        BatchBuilder::new(self, capacity, limits)
    }

    pub fn decode(&self, body: &[u8], format: InputFormat, limits: DecodeLimits) -> DecodeOutcome {
        // Validated once here; parsing the text as `str` then skips serde_json's second
        // check of every string (about 2% of ingest CPU).
        let text = match std::str::from_utf8(body) {
            Ok(text) => text,
            Err(e) => {
                return DecodeOutcome::Invalid {
                    errors: vec![EventError {
                        index: None,
                        line: Some(
                            1 + body[..e.valid_up_to()]
                                .iter()
                                .filter(|b| **b == b'\n')
                                .count(),
                        ),
                        pointer: String::new(),
                        message: format!("body is not valid UTF-8 (byte {})", e.valid_up_to()),
                    }],
                    invalid_events: 1,
                    events: 0,
                };
            }
        };
        let mut b = BatchBuilder::new(self, estimate_events(body), limits);
        match format {
            InputFormat::Json => {
                let mut de = serde_json::Deserializer::from_str(text);
                let res = (TopSeed { b: &mut b })
                    .deserialize(&mut de)
                    .and_then(|()| de.end());
                if let Err(e) = res
                    && !b.too_many
                {
                    b.syntax_error(None, &e);
                }
            }
            InputFormat::Ndjson => {
                for (line_no, line) in split_ndjson(body) {
                    if b.events == limits.max_events {
                        b.too_many = true;
                        break;
                    }
                    b.begin_event(None, Some(line_no));
                    // Lines end at ASCII bytes, so their offsets are char boundaries.
                    let start = line.as_ptr() as usize - body.as_ptr() as usize;
                    let Some(line) = text.get(start..start + line.len()) else {
                        let e = <serde_json::Error as serde::de::Error>::custom(
                            "line does not split on a character boundary",
                        );
                        b.syntax_error(Some(line_no), &e);
                        continue;
                    };
                    let mut de = serde_json::Deserializer::from_str(line);
                    let res = (EventSeed { b: &mut b })
                        .deserialize(&mut de)
                        .and_then(|()| de.end());
                    match res {
                        Ok(()) => b.end_event(),
                        Err(e) => {
                            b.syntax_error(Some(line_no), &e);
                        }
                    }
                }
            }
        }
        b.finish()
    }
}

fn estimate_events(body: &[u8]) -> usize {
    (body.len() / 96).clamp(1, 1 << 16)
}

/// Non-blank lines with their 1-based numbers; `\r\n` line ends are accepted.
pub fn split_ndjson(body: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    // memchr finds line ends a vector at a time; a byte-by-byte split was a fifth of
    // decoding a 1000-event body.
    let mut start = 0;
    memchr::memchr_iter(b'\n', body)
        .chain(std::iter::once(body.len()))
        .enumerate()
        .filter_map(move |(i, end)| {
            let line = &body[start..end];
            start = end + 1;
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(u8::is_ascii_whitespace) {
                None
            } else {
                Some((i + 1, line))
            }
        })
}

/// Shared by every timestamp builder: a decode of one event would otherwise allocate the
/// zone's name once per timestamp column.
static UTC: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("UTC"));

enum Column {
    Str(StringBuilder),
    I8(Int8Builder),
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    U8(UInt8Builder),
    U16(UInt16Builder),
    U32(UInt32Builder),
    U64(UInt64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Dec(Decimal128Builder),
    Bool(BooleanBuilder),
    Date(Date32Builder),
    Ts(TimestampMicrosecondBuilder),
}

impl Column {
    fn new(t: &FieldType, cap: usize) -> Column {
        match t.base {
            BaseType::String | BaseType::Uuid => {
                Column::Str(StringBuilder::with_capacity(cap, cap * 8))
            }
            BaseType::Int8 => Column::I8(Int8Builder::with_capacity(cap)),
            BaseType::Int16 => Column::I16(Int16Builder::with_capacity(cap)),
            BaseType::Int32 => Column::I32(Int32Builder::with_capacity(cap)),
            BaseType::Int64 => Column::I64(Int64Builder::with_capacity(cap)),
            BaseType::UInt8 => Column::U8(UInt8Builder::with_capacity(cap)),
            BaseType::UInt16 => Column::U16(UInt16Builder::with_capacity(cap)),
            BaseType::UInt32 => Column::U32(UInt32Builder::with_capacity(cap)),
            BaseType::UInt64 => Column::U64(UInt64Builder::with_capacity(cap)),
            BaseType::Float32 => Column::F32(Float32Builder::with_capacity(cap)),
            BaseType::Float64 => Column::F64(Float64Builder::with_capacity(cap)),
            BaseType::Decimal { precision, scale } => Column::Dec(
                Decimal128Builder::with_capacity(cap)
                    .with_precision_and_scale(precision, scale)
                    .unwrap_or_else(|_| Decimal128Builder::with_capacity(cap)),
            ),
            BaseType::Bool => Column::Bool(BooleanBuilder::with_capacity(cap)),
            BaseType::Date => Column::Date(Date32Builder::with_capacity(cap)),
            BaseType::DateTime | BaseType::DateTime64 { .. } => Column::Ts(
                TimestampMicrosecondBuilder::with_capacity(cap).with_timezone(UTC.clone()),
            ),
        }
    }

    fn append_null(&mut self) {
        match self {
            Column::Str(b) => b.append_null(),
            Column::I8(b) => b.append_null(),
            Column::I16(b) => b.append_null(),
            Column::I32(b) => b.append_null(),
            Column::I64(b) => b.append_null(),
            Column::U8(b) => b.append_null(),
            Column::U16(b) => b.append_null(),
            Column::U32(b) => b.append_null(),
            Column::U64(b) => b.append_null(),
            Column::F32(b) => b.append_null(),
            Column::F64(b) => b.append_null(),
            Column::Dec(b) => b.append_null(),
            Column::Bool(b) => b.append_null(),
            Column::Date(b) => b.append_null(),
            Column::Ts(b) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Column::Str(b) => Arc::new(b.finish()),
            Column::I8(b) => Arc::new(b.finish()),
            Column::I16(b) => Arc::new(b.finish()),
            Column::I32(b) => Arc::new(b.finish()),
            Column::I64(b) => Arc::new(b.finish()),
            Column::U8(b) => Arc::new(b.finish()),
            Column::U16(b) => Arc::new(b.finish()),
            Column::U32(b) => Arc::new(b.finish()),
            Column::U64(b) => Arc::new(b.finish()),
            Column::F32(b) => Arc::new(b.finish()),
            Column::F64(b) => Arc::new(b.finish()),
            Column::Dec(b) => Arc::new(b.finish()),
            Column::Bool(b) => Arc::new(b.finish()),
            Column::Date(b) => Arc::new(b.finish()),
            Column::Ts(b) => Arc::new(b.finish()),
        }
    }
}

/// A JSON value as found in an event, or a CSV cell.
#[derive(Debug)]
pub enum RawValueKind<'a> {
    Str(Cow<'a, str>),
    Num(&'a str),
    Bool(bool),
    Null,
    Nested(&'static str),
    /// An instant that arrived as a number of a known unit (an Arrow timestamp column), in
    /// microseconds; held to the same years as the text forms.
    Instant(Micros),
}

impl<'a> RawValueKind<'a> {
    fn from_json(raw: &'a str) -> RawValueKind<'a> {
        match raw.as_bytes().first() {
            Some(b'"') => {
                let inner = &raw[1..raw.len() - 1];
                if inner.contains('\\') {
                    match serde_json::from_str::<String>(raw) {
                        Ok(s) => RawValueKind::Str(Cow::Owned(s)),
                        Err(_) => RawValueKind::Nested("invalid string"),
                    }
                } else {
                    RawValueKind::Str(Cow::Borrowed(inner))
                }
            }
            Some(b'{') => RawValueKind::Nested("object"),
            Some(b'[') => RawValueKind::Nested("array"),
            Some(b't') => RawValueKind::Bool(true),
            Some(b'f') => RawValueKind::Bool(false),
            Some(b'n') => RawValueKind::Null,
            _ => RawValueKind::Num(raw),
        }
    }
}

impl fmt::Display for RawValueKind<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RawValueKind::Str(s) => {
                let shown: String = s.chars().take(64).collect();
                if shown.len() < s.len() {
                    write!(f, "{shown:?}…")
                } else {
                    write!(f, "{shown:?}")
                }
            }
            RawValueKind::Num(n) => write!(f, "number {}", n.chars().take(64).collect::<String>()),
            RawValueKind::Bool(b) => write!(f, "{b}"),
            RawValueKind::Null => f.write_str("null"),
            RawValueKind::Nested(what) => f.write_str(what),
            RawValueKind::Instant(us) => match check_micros(*us) {
                Ok(us) => write!(f, "timestamp {}", format_micros(us)),
                Err(_) => write!(f, "timestamp of {us} µs since the epoch"),
            },
        }
    }
}

/// Column builders for one batch plus the error list. Shared by the JSON paths and CSV.
pub struct BatchBuilder<'d> {
    dec: &'d EventDecoder,
    limits: DecodeLimits,
    customer_id: StringBuilder,
    timestamp: TimestampMicrosecondBuilder,
    columns: Vec<Column>,
    /// Per event: which of customer_id, timestamp, fields... were seen.
    seen: Vec<bool>,
    cur_index: Option<usize>,
    cur_line: Option<usize>,
    cur_failed: bool,
    /// Set once any event failed: builders are no longer consistent and are never finished.
    failed: bool,
    too_many: bool,
    events: usize,
    invalid_events: usize,
    errors: Vec<EventError>,
}

const SEEN_CUSTOMER: usize = 0;
const SEEN_TIMESTAMP: usize = 1;

impl<'d> BatchBuilder<'d> {
    fn new(dec: &'d EventDecoder, cap: usize, limits: DecodeLimits) -> BatchBuilder<'d> {
        BatchBuilder {
            dec,
            limits,
            customer_id: StringBuilder::with_capacity(cap, cap * 16),
            timestamp: TimestampMicrosecondBuilder::with_capacity(cap).with_timezone(UTC.clone()),
            columns: dec
                .fields
                .iter()
                .map(|(_, t)| Column::new(t, cap))
                .collect(),
            seen: vec![false; dec.fields.len() + 2],
            cur_index: None,
            cur_line: None,
            cur_failed: false,
            failed: false,
            too_many: false,
            events: 0,
            invalid_events: 0,
            errors: Vec::new(),
        }
    }

    pub fn events(&self) -> usize {
        self.events
    }

    pub fn has_failed(&self) -> bool {
        self.failed
    }

    pub fn begin_event(&mut self, index: Option<usize>, line: Option<usize>) {
        self.cur_index = index;
        self.cur_line = line;
        self.cur_failed = false;
        self.seen.iter_mut().for_each(|s| *s = false);
    }

    pub fn error(&mut self, pointer: impl Into<String>, message: impl Into<String>) {
        if !self.cur_failed {
            self.cur_failed = true;
            self.failed = true;
            self.invalid_events += 1;
        }
        if self.errors.len() < self.limits.max_errors {
            self.errors.push(EventError {
                index: self.cur_index,
                line: self.cur_line,
                pointer: pointer.into(),
                message: message.into(),
            });
        }
    }

    fn syntax_error(&mut self, line: Option<usize>, e: &serde_json::Error) {
        let message = if e.to_string().contains("recursion limit") {
            "JSON nested too deeply".to_string()
        } else {
            format!("invalid JSON: {e}")
        };
        if line.is_none() {
            // A JSON body that does not parse cannot be attributed to one event.
            self.cur_index = None;
            self.cur_line = Some(e.line());
        }
        self.error("", message);
        if line.is_some() {
            self.events += 1;
        }
    }

    /// Counts an event that cannot be read field by field (a CSV row with the wrong number
    /// of cells) as invalid, with one error.
    pub fn reject_event(
        &mut self,
        index: Option<usize>,
        line: Option<usize>,
        pointer: &str,
        message: String,
    ) {
        self.begin_event(index, line);
        self.error(pointer, message);
        self.events += 1;
    }

    /// Checks that every required column was given, and fills absent nullable ones.
    pub fn end_event(&mut self) {
        self.events += 1;
        if !self.seen[SEEN_CUSTOMER] {
            self.error("/customer_id", "required field is missing");
        }
        if !self.seen[SEEN_TIMESTAMP] {
            self.error("/timestamp", "required field is missing");
        }
        for i in 0..self.dec.fields.len() {
            if !self.seen[i + 2] {
                if self.dec.fields[i].1.nullable {
                    if !self.failed {
                        self.columns[i].append_null();
                    }
                } else {
                    let name = &self.dec.fields[i].0;
                    self.error(format!("/data/{name}"), "required field is missing");
                }
            }
        }
    }

    pub fn customer_id(&mut self, pointer: &str, v: RawValueKind<'_>) {
        if std::mem::replace(&mut self.seen[SEEN_CUSTOMER], true) {
            return self.error(pointer, "duplicate key");
        }
        match v {
            RawValueKind::Str(s) if s.is_empty() => self.error(pointer, "must not be empty"),
            RawValueKind::Str(s) if s.len() > MAX_CUSTOMER_ID_BYTES => {
                self.error(pointer, "longer than 256 bytes")
            }
            RawValueKind::Str(s) => {
                if !self.failed {
                    self.customer_id.append_value(s);
                }
            }
            other => self.error(pointer, format!("expected a non-empty string, got {other}")),
        }
    }

    pub fn timestamp(&mut self, pointer: &str, v: RawValueKind<'_>) {
        if std::mem::replace(&mut self.seen[SEEN_TIMESTAMP], true) {
            return self.error(pointer, "duplicate key");
        }
        match self.instant(&v) {
            Ok(us) => {
                if !self.failed {
                    self.timestamp.append_value(us);
                }
            }
            Err(why) => self.error(pointer, format!("expected a timestamp, got {v}: {why}")),
        }
    }

    fn instant(&self, v: &RawValueKind<'_>) -> Result<Micros, String> {
        let us = match v {
            RawValueKind::Str(s) => parse_timestamp(s)?,
            RawValueKind::Num(n) => parse_epoch_seconds(n)?,
            RawValueKind::Instant(us) => check_micros(*us)?,
            _ => return Err("use RFC 3339, 'YYYY-MM-DD HH:MM:SS' or epoch seconds".into()),
        };
        if us > self.limits.now.saturating_add(self.limits.max_future) {
            return Err(format!(
                "more than {} hours in the future",
                self.limits.max_future / 3_600_000_000
            ));
        }
        Ok(us)
    }

    /// `seen` bookkeeping plus the typed append for data field `i`.
    pub fn field(&mut self, i: usize, v: RawValueKind<'_>) {
        if std::mem::replace(&mut self.seen[i + 2], true) {
            let name = &self.dec.fields[i].0;
            return self.error(format!("/data/{name}"), "duplicate key");
        }
        let ty = self.dec.fields[i].1;
        if let Err(why) = self.push_field(i, ty, &v) {
            let name = &self.dec.fields[i].0;
            let msg = match why {
                Some(why) => format!("expected {}, got {v}: {why}", ty.base),
                None => format!("expected {}, got {v}", ty.base),
            };
            self.error(format!("/data/{name}"), msg);
        }
    }

    fn push_field(
        &mut self,
        i: usize,
        ty: FieldType,
        v: &RawValueKind<'_>,
    ) -> Result<(), Option<String>> {
        if let RawValueKind::Null = v {
            if !ty.nullable {
                return Err(Some(
                    "the field is required (declare it Nullable(...) to allow null)".into(),
                ));
            }
            if !self.failed {
                self.columns[i].append_null();
            }
            return Ok(());
        }
        let number_text: Option<&str> = match v {
            RawValueKind::Num(n) => Some(n),
            RawValueKind::Str(s) => Some(s),
            _ => None,
        };
        let skip = self.failed;
        macro_rules! int {
            ($b:expr, $t:ty) => {{
                let text = number_text.ok_or(None)?;
                let wide = parse_integer(text).map_err(Some)?;
                let value = <$t>::try_from(wide).map_err(|_| Some("out of range".to_string()))?;
                if !skip {
                    $b.append_value(value);
                }
            }};
        }
        match &mut self.columns[i] {
            Column::Str(b) => {
                let RawValueKind::Str(s) = v else {
                    return Err(None);
                };
                if ty.base == BaseType::Uuid {
                    let canon = canonical_uuid(s).ok_or(Some("not a canonical UUID".into()))?;
                    if !skip {
                        b.append_value(canon);
                    }
                } else {
                    if s.len() > MAX_STRING_BYTES {
                        return Err(Some("longer than 64 KiB".into()));
                    }
                    if !skip {
                        b.append_value(s);
                    }
                }
            }
            Column::I8(b) => int!(b, i8),
            Column::I16(b) => int!(b, i16),
            Column::I32(b) => int!(b, i32),
            Column::I64(b) => int!(b, i64),
            Column::U8(b) => int!(b, u8),
            Column::U16(b) => int!(b, u16),
            Column::U32(b) => int!(b, u32),
            Column::U64(b) => int!(b, u64),
            Column::F32(b) => {
                let f = parse_float(number_text.ok_or(None)?).map_err(Some)?;
                let narrow = f as f32;
                if !narrow.is_finite() {
                    return Err(Some("out of Float32 range".into()));
                }
                if !skip {
                    b.append_value(narrow);
                }
            }
            Column::F64(b) => {
                let f = parse_float(number_text.ok_or(None)?).map_err(Some)?;
                if !skip {
                    b.append_value(f);
                }
            }
            Column::Dec(b) => {
                let BaseType::Decimal { precision, scale } = ty.base else {
                    return Err(None);
                };
                let d = parse_decimal(number_text.ok_or(None)?, precision, scale).map_err(Some)?;
                if !skip {
                    b.append_value(d);
                }
            }
            Column::Bool(b) => {
                let value = match v {
                    RawValueKind::Bool(x) => *x,
                    RawValueKind::Str(s) if s == "true" => true,
                    RawValueKind::Str(s) if s == "false" => false,
                    _ => return Err(None),
                };
                if !skip {
                    b.append_value(value);
                }
            }
            Column::Date(b) => {
                let RawValueKind::Str(s) = v else {
                    return Err(None);
                };
                let d = parse_date(s).map_err(|e| Some(e.to_string()))?;
                if !skip {
                    b.append_value(d);
                }
            }
            Column::Ts(b) => {
                let us = match v {
                    RawValueKind::Str(s) => parse_timestamp(s).map_err(|e| Some(e.to_string()))?,
                    RawValueKind::Num(n) => {
                        parse_epoch_seconds(n).map_err(|e| Some(e.to_string()))?
                    }
                    RawValueKind::Instant(us) => {
                        check_micros(*us).map_err(|e| Some(e.to_string()))?
                    }
                    _ => return Err(None),
                };
                if !skip {
                    b.append_value(us);
                }
            }
        }
        Ok(())
    }

    /// The batch when every event was valid, or every error found.
    pub fn finish(mut self) -> DecodeOutcome {
        if self.too_many {
            return DecodeOutcome::TooManyEvents {
                limit: self.limits.max_events,
            };
        }
        if self.failed {
            return DecodeOutcome::Invalid {
                errors: self.errors,
                invalid_events: self.invalid_events,
                events: self.events,
            };
        }
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.columns.len() + 2);
        arrays.push(Arc::new(self.customer_id.finish()));
        arrays.push(Arc::new(self.timestamp.finish()));
        for c in &mut self.columns {
            arrays.push(c.finish());
        }
        match RecordBatch::try_new(self.dec.schema.clone(), arrays) {
            Ok(batch) => DecodeOutcome::Valid(batch),
            Err(e) => DecodeOutcome::Invalid {
                errors: vec![EventError {
                    index: None,
                    line: None,
                    pointer: String::new(),
                    message: format!("internal: inconsistent columns: {e}"),
                }],
                invalid_events: self.events,
                events: self.events,
            },
        }
    }
}

fn canonical_uuid(s: &str) -> Option<String> {
    let b = s.as_bytes();
    if b.len() != 36 {
        return None;
    }
    for (i, c) in b.iter().enumerate() {
        let dash = matches!(i, 8 | 13 | 18 | 23);
        if dash != (*c == b'-') || (!dash && !c.is_ascii_hexdigit()) {
            return None;
        }
    }
    Some(s.to_ascii_lowercase())
}

// ---- serde plumbing -------------------------------------------------------------------------

struct TopSeed<'a, 'd> {
    b: &'a mut BatchBuilder<'d>,
}

impl<'de> DeserializeSeed<'de> for TopSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TopSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event object or an array of event objects")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.b.begin_event(Some(0), None);
        EventVisitor { b: &mut *self.b }.visit_map(map)?;
        self.b.end_event();
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        loop {
            if self.b.events == self.b.limits.max_events {
                // Stop reading: the request is refused as a whole.
                self.b.too_many = true;
                return Err(de::Error::custom("too many events"));
            }
            self.b.begin_event(Some(index), None);
            match seq.next_element_seed(EventSeed { b: &mut *self.b })? {
                Some(()) => self.b.end_event(),
                None => return Ok(()),
            }
            index += 1;
        }
    }
}

struct EventSeed<'a, 'd> {
    b: &'a mut BatchBuilder<'d>,
}

impl<'de> DeserializeSeed<'de> for EventSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(EventVisitor { b: self.b })
    }
}

struct EventVisitor<'a, 'd> {
    b: &'a mut BatchBuilder<'d>,
}

enum TopKey {
    CustomerId,
    Timestamp,
    Data,
    Unknown(String),
}

struct TopKeySeed;

impl<'de> DeserializeSeed<'de> for TopKeySeed {
    type Value = TopKey;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<TopKey, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for TopKeySeed {
    type Value = TopKey;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<TopKey, E> {
        Ok(match v {
            "customer_id" => TopKey::CustomerId,
            "timestamp" => TopKey::Timestamp,
            "data" => TopKey::Data,
            other => TopKey::Unknown(other.to_string()),
        })
    }
}

fn not_an_object<'de, A: SeqAccess<'de>>(
    b: &mut BatchBuilder<'_>,
    mut seq: A,
) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    b.error("", "an event must be a JSON object");
    Ok(())
}

impl<'de> Visitor<'de> for EventVisitor<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key_seed(TopKeySeed)? {
            match key {
                TopKey::CustomerId => {
                    let raw: &'de RawValue = map.next_value()?;
                    self.b
                        .customer_id("/customer_id", RawValueKind::from_json(raw.get()));
                }
                TopKey::Timestamp => {
                    let raw: &'de RawValue = map.next_value()?;
                    self.b
                        .timestamp("/timestamp", RawValueKind::from_json(raw.get()));
                }
                TopKey::Data => map.next_value_seed(DataSeed { b: &mut *self.b })?,
                TopKey::Unknown(name) => {
                    map.next_value::<IgnoredAny>()?;
                    self.b.error(
                        format!("/{}", escape_pointer(&name)),
                        "unknown key (an event has customer_id, timestamp and data)",
                    );
                }
            }
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        not_an_object(self.b, seq)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.b.error("", "an event must be a JSON object");
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.visit_str("")
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.visit_str("")
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.visit_str("")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.visit_str("")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.visit_str("")
    }
}

struct DataSeed<'a, 'd> {
    b: &'a mut BatchBuilder<'d>,
}

impl<'de> DeserializeSeed<'de> for DataSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

enum DataKey {
    Field(usize),
    Unknown(String),
}

struct DataKeySeed<'a> {
    dec: &'a EventDecoder,
}

impl<'de> DeserializeSeed<'de> for DataKeySeed<'_> {
    type Value = DataKey;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<DataKey, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for DataKeySeed<'_> {
    type Value = DataKey;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<DataKey, E> {
        let found = if self.dec.fields.len() <= 8 {
            self.dec.fields.iter().position(|(n, _)| n == v)
        } else {
            self.dec.by_name.get(v).copied()
        };
        Ok(match found {
            Some(i) => DataKey::Field(i),
            None => DataKey::Unknown(v.to_string()),
        })
    }
}

impl<'de> Visitor<'de> for DataSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("the data object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let dec = self.b.dec;
        while let Some(key) = map.next_key_seed(DataKeySeed { dec })? {
            match key {
                DataKey::Field(i) => {
                    let raw: &'de RawValue = map.next_value()?;
                    self.b.field(i, RawValueKind::from_json(raw.get()));
                }
                DataKey::Unknown(name) => {
                    map.next_value::<IgnoredAny>()?;
                    self.b.error(
                        format!("/data/{}", escape_pointer(&name)),
                        "unknown field (not in the event type's dataschema)",
                    );
                }
            }
        }
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        self.b.error("/data", "data must be a JSON object");
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.b.error("/data", "data must be a JSON object");
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.visit_str("")
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.visit_str("")
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.visit_str("")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.visit_str("")
    }
}

/// RFC 6901 escaping for one reference token.
fn escape_pointer(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::split_ndjson;
    use proptest::prelude::*;

    /// The plain definition: split at every `\n`, drop one trailing `\r`, skip blank lines.
    fn reference(body: &[u8]) -> Vec<(usize, Vec<u8>)> {
        body.split(|b| *b == b'\n')
            .enumerate()
            .filter_map(|(i, line)| {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                (!line.iter().all(u8::is_ascii_whitespace)).then(|| (i + 1, line.to_vec()))
            })
            .collect()
    }

    proptest! {
        #[test]
        fn lines_and_their_numbers_match_a_plain_split(
            body in proptest::collection::vec(
                prop_oneof![Just(b'\n'), Just(b'\r'), Just(b' '), Just(b'{'), any::<u8>()],
                0..300,
            )
        ) {
            let got: Vec<(usize, Vec<u8>)> =
                split_ndjson(&body).map(|(n, l)| (n, l.to_vec())).collect();
            prop_assert_eq!(got, reference(&body));
        }
    }

    #[test]
    fn trailing_newline_crlf_and_blank_lines() {
        let got: Vec<(usize, &[u8])> = split_ndjson(b"{}\r\n\n  \n{\"a\":1}\n").collect();
        assert_eq!(got, vec![(1, &b"{}"[..]), (4, &b"{\"a\":1}"[..])]);
        assert_eq!(split_ndjson(b"").count(), 0);
        assert_eq!(split_ndjson(b"x").collect::<Vec<_>>(), vec![(1, &b"x"[..])]);
    }
}
