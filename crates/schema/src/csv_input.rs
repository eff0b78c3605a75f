//! CSV input: a header row, cells matched to fields by column name (or `map.FIELD=COLUMN`),
//! read in chunks so a file of any size streams through bounded memory. Cells go through the
//! same `BatchBuilder` as JSON values, so CSV is exactly as strict as the JSON paths.

use std::borrow::Cow;
use std::io::Read;

use crate::columns::{CsvOptions, Layout, Target, header_error};
use crate::csv_lines::CsvLines;
use crate::decode::{BatchBuilder, RawValueKind};
use crate::{DecodeLimits, DecodeOutcome, EventDecoder, EventError};

/// One record's cells into the batch, each to its column's target.
fn push(layout: &Layout, b: &mut BatchBuilder<'_>, record: &::csv::ByteRecord) {
    for (j, target) in layout.targets.iter().enumerate() {
        if *target == Target::Ignore {
            continue;
        }
        let cell = record.get(j).unwrap_or_default();
        let value = match std::str::from_utf8(cell) {
            Err(_) => RawValueKind::Nested("bytes that are not valid UTF-8"),
            Ok("") => RawValueKind::Null,
            Ok(text) => {
                let instants = matches!(target, Target::Timestamp | Target::Field(_, true));
                if instants && looks_like_epoch(text) {
                    RawValueKind::Num(text)
                } else {
                    RawValueKind::Str(Cow::Borrowed(text))
                }
            }
        };
        match target {
            Target::Customer => b.customer_id("/customer_id", value),
            Target::Timestamp => b.timestamp("/timestamp", value),
            Target::Field(i, _) => b.field(*i, value),
            Target::Ignore => {}
        }
    }
}

/// Epoch seconds (`1718000000`, `1718000000.5`) as opposed to a date-time text.
fn looks_like_epoch(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    !digits.is_empty()
        && digits.bytes().all(|c| c.is_ascii_digit() || c == b'.')
        && digits.bytes().any(|c| c.is_ascii_digit())
}

/// One chunk of rows: the batch when all were valid, else every error (up to the limit).
#[derive(Debug)]
pub struct CsvChunk {
    pub outcome: DecodeOutcome,
    pub rows: usize,
}

/// Why a CSV stream cannot be read at all.
#[derive(Debug)]
pub enum CsvStreamError {
    /// The header row does not fit the event type.
    Header(Vec<EventError>),
    /// The bytes could not be read (a client that went away, a broken compressed stream).
    Io(std::io::Error),
}

/// Reads a CSV body chunk by chunk.
pub struct CsvStream<R: Read> {
    reader: ::csv::Reader<CsvLines<R>>,
    layout: Layout,
    columns: usize,
    record: ::csv::ByteRecord,
    /// Records read so far, the header included.
    records: u64,
}

/// The error for a record whose quoted field never closes: everything after the quote,
/// later rows included, would otherwise have been read as one cell.
fn unterminated_message(quote_line: u64) -> String {
    format!(
        "the quoted field opened on line {quote_line} is never closed: the rest of the file would be one cell (close the quote, or double a quote inside the field)"
    )
}

impl<R: Read> CsvStream<R> {
    /// Reads and checks the header row.
    pub fn open(
        dec: &EventDecoder,
        input: R,
        opts: &CsvOptions,
    ) -> Result<CsvStream<R>, CsvStreamError> {
        let mut reader = ::csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .buffer_capacity(256 << 10)
            .from_reader(CsvLines::new(input));
        let mut record = ::csv::ByteRecord::new();
        let has_header = reader
            .read_byte_record(&mut record)
            .map_err(|e| match e.into_kind() {
                ::csv::ErrorKind::Io(io) => CsvStreamError::Io(io),
                other => {
                    CsvStreamError::Header(vec![header_error(Some(1), "", format!("{other:?}"))])
                }
            })?;
        if !has_header {
            return Err(CsvStreamError::Header(vec![header_error(
                Some(1),
                "",
                "the body is empty: a header row is required".into(),
            )]));
        }
        let header_line = reader.get_mut().next_record_line().unwrap_or(1);
        if let Some(open) = reader.get_ref().unterminated() {
            return Err(CsvStreamError::Header(vec![EventError {
                line: Some(header_line as usize),
                ..header_error(Some(1), "", unterminated_message(open.line))
            }]));
        }
        let mut header = Vec::with_capacity(record.len());
        let mut errors = Vec::new();
        for (j, cell) in record.iter().enumerate() {
            let cell = if j == 0 {
                cell.strip_prefix(b"\xef\xbb\xbf").unwrap_or(cell)
            } else {
                cell
            };
            match std::str::from_utf8(cell) {
                Ok(name) => header.push(name.trim().to_string()),
                Err(_) => {
                    errors.push(header_error(
                        Some(1),
                        "",
                        format!("header column {} is not valid UTF-8", j + 1),
                    ));
                    header.push(String::new());
                }
            }
        }
        if !errors.is_empty() {
            return Err(CsvStreamError::Header(errors));
        }
        let layout = Layout::new(dec, &header, opts, Some(1)).map_err(CsvStreamError::Header)?;
        Ok(CsvStream {
            reader,
            layout,
            columns: header.len(),
            record,
            records: 1,
        })
    }

    /// The next chunk of at most `max_rows` rows, `None` at the end of the body.
    /// `limits.max_errors` bounds the errors listed for this chunk.
    pub fn next_chunk(
        &mut self,
        dec: &EventDecoder,
        max_rows: usize,
        limits: DecodeLimits,
    ) -> Result<Option<CsvChunk>, std::io::Error> {
        let limits = DecodeLimits {
            max_events: usize::MAX,
            ..limits
        };
        let mut b = dec.batch_builder(max_rows.min(1 << 16), limits);
        let mut rows = 0;
        while rows < max_rows {
            let more = match self.reader.read_byte_record(&mut self.record) {
                Ok(more) => more,
                Err(e) => {
                    let line = self.reader.get_mut().next_record_line().map(|l| l as usize);
                    match e.into_kind() {
                        ::csv::ErrorKind::Io(io) => return Err(io),
                        other => {
                            rows += 1;
                            self.records += 1;
                            b.reject_event(
                                None,
                                line,
                                "",
                                format!("unreadable CSV row: {other:?}"),
                            );
                            continue;
                        }
                    }
                }
            };
            if !more {
                break;
            }
            rows += 1;
            let index = self.records;
            self.records += 1;
            let lines = self.reader.get_mut();
            let line = lines.next_record_line().map(|l| l as usize);
            if let Some(open) = lines.unterminated().filter(|u| u.record == index) {
                b.reject_event(None, line, "", unterminated_message(open.line));
            } else if self.record.len() != self.columns {
                let why = format!(
                    "the row has {} cells, the header has {}",
                    self.record.len(),
                    self.columns
                );
                b.reject_event(None, line, "", why);
            } else {
                b.begin_event(None, line);
                push(&self.layout, &mut b, &self.record);
                b.end_event();
            }
        }
        if rows == 0 {
            return Ok(None);
        }
        let outcome = match b.finish() {
            DecodeOutcome::Invalid {
                mut errors,
                invalid_events,
                events,
            } => {
                self.layout.rename(&mut errors);
                DecodeOutcome::Invalid {
                    errors,
                    invalid_events,
                    events,
                }
            }
            other => other,
        };
        Ok(Some(CsvChunk { outcome, rows }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EventTypeDef, EventTypeSpec};
    use arrow::array::AsArray;

    fn decoder() -> EventDecoder {
        let spec: EventTypeSpec = serde_json::from_str(
            r#"{"name":"compute","dataschema":{"data":{"cpu":"Float64","region":"Nullable(String)","at":"Nullable(DateTime)"}}}"#,
        )
        .unwrap();
        let def = EventTypeDef::from_spec(spec, "t".into(), chrono::DateTime::UNIX_EPOCH).unwrap();
        EventDecoder::new(&def).unwrap()
    }

    fn read_all(body: &str, opts: &CsvOptions) -> Result<Vec<CsvChunk>, CsvStreamError> {
        let dec = decoder();
        let mut s = CsvStream::open(&dec, body.as_bytes(), opts)?;
        let mut out = Vec::new();
        while let Some(c) = s
            .next_chunk(&dec, 2, DecodeLimits::default())
            .map_err(CsvStreamError::Io)?
        {
            out.push(c);
        }
        Ok(out)
    }

    fn errors(chunks: &[CsvChunk]) -> Vec<(usize, String)> {
        chunks
            .iter()
            .flat_map(|c| match &c.outcome {
                DecodeOutcome::Invalid { errors, .. } => errors
                    .iter()
                    .map(|e| (e.line.unwrap_or(0), e.pointer.clone()))
                    .collect(),
                _ => vec![],
            })
            .collect()
    }

    #[test]
    fn bom_crlf_quotes_and_embedded_newlines() {
        let body = "\u{feff}customer_id,timestamp,cpu,region\r\n\"c,1\",2025-01-01T00:00:00Z,1.5,\"us\r\neast\"\r\nc2,1735689600,2,\r\n";
        let chunks = read_all(body, &CsvOptions::default()).unwrap();
        assert_eq!(chunks.len(), 1);
        let DecodeOutcome::Valid(batch) = &chunks[0].outcome else {
            panic!("{:?}", chunks[0].outcome)
        };
        assert_eq!(batch.column(0).as_string::<i32>().value(0), "c,1");
        assert_eq!(batch.column(3).as_string::<i32>().value(0), "us\r\neast");
        assert!(batch.column(3).is_null(1));
    }

    #[test]
    fn errors_carry_line_and_column() {
        let body = "customer_id,timestamp,cpu\nc,2025-01-01T00:00:00Z,1\nc,2025-01-01T00:00:00Z,abc\nc,2025-01-01T00:00:00Z,2\n,2025-01-01T00:00:00Z,3\nc,2025-01-01\n";
        let chunks = read_all(body, &CsvOptions::default()).unwrap();
        assert_eq!(
            errors(&chunks),
            vec![
                (3, "cpu".to_string()),
                (5, "customer_id".to_string()),
                (6, "".to_string())
            ]
        );
    }

    #[test]
    fn crlf_rows_report_the_same_lines_as_lf_rows() {
        let lf = "customer_id,timestamp,cpu\nc,2025-01-01T00:00:00Z,x\nc,2025-01-01T00:00:00Z,1\n\nc,2025-01-01T00:00:00Z,y\n";
        let crlf = lf.replace('\n', "\r\n");
        let expected = vec![(2, "cpu".to_string()), (5, "cpu".to_string())];
        assert_eq!(
            errors(&read_all(lf, &CsvOptions::default()).unwrap()),
            expected
        );
        assert_eq!(
            errors(&read_all(&crlf, &CsvOptions::default()).unwrap()),
            expected
        );
    }

    #[test]
    fn an_unterminated_quote_is_an_error_on_its_row() {
        let body = "customer_id,timestamp,cpu,region\nc_unterm,2025-06-17T14:03:12Z,1,\"oops\nc_next,2025-06-17T14:03:12Z,1,x\n";
        let chunks = read_all(body, &CsvOptions::default()).unwrap();
        assert_eq!(chunks.iter().map(|c| c.rows).sum::<usize>(), 1);
        let DecodeOutcome::Invalid { errors, .. } = &chunks[0].outcome else {
            panic!("{:?}", chunks[0].outcome)
        };
        assert_eq!(errors[0].line, Some(2));
        assert!(
            errors[0].message.contains("opened on line 2"),
            "{}",
            errors[0].message
        );
        let Err(CsvStreamError::Header(e)) =
            read_all("customer_id,\"timestamp\n", &CsvOptions::default())
        else {
            panic!("an open quote in the header was accepted")
        };
        assert!(e[0].message.contains("never closed"));
    }

    #[test]
    fn mapping_and_unknown_columns() {
        let opts = CsvOptions {
            field_columns: vec![
                ("customer_id".into(), "Customer".into()),
                ("cpu".into(), "CPU hours".into()),
            ],
            ignore_unknown_columns: false,
        };
        let body = "Customer,timestamp,CPU hours,extra\nc,2025-01-01T00:00:00Z,1,x\n";
        let Err(CsvStreamError::Header(e)) = read_all(body, &opts) else {
            panic!("unknown column accepted")
        };
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].pointer, "extra");
        let opts = CsvOptions {
            ignore_unknown_columns: true,
            ..opts
        };
        let chunks = read_all(body, &opts).unwrap();
        assert!(matches!(chunks[0].outcome, DecodeOutcome::Valid(_)));
    }

    #[test]
    fn missing_required_column_is_a_header_error() {
        let Err(CsvStreamError::Header(e)) = read_all(
            "customer_id,timestamp\nc,2025-01-01T00:00:00Z\n",
            &CsvOptions::default(),
        ) else {
            panic!("missing column accepted")
        };
        assert_eq!(e[0].pointer, "cpu");
    }

    #[test]
    fn epoch_only_for_instants() {
        assert!(looks_like_epoch("1718000000"));
        assert!(looks_like_epoch("-5.5"));
        assert!(!looks_like_epoch("2025-01-01"));
        assert!(!looks_like_epoch("."));
    }
}
