//! Columnar bodies of `POST /usage/{slug}`: an Arrow IPC stream or a Parquet file, read batch
//! by batch into `meterbase_schema::decode_batches`, which matches columns to fields as CSV
//! does and checks every cell by the JSON rules. The body is already whole in memory, under
//! the same `max_body_bytes` as a JSON body: Parquet needs that anyway (its footer, which says
//! where everything is, comes last), and only one input batch is decoded at a time besides.

use std::panic::AssertUnwindSafe;

use bytes::Bytes;
use meterbase_schema::{
    CsvOptions, DecodeLimits, DecodeOutcome, EventDecoder, decode_arrow_stream, decode_batches,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

pub(crate) const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";
pub(crate) const PARQUET: &str = "application/vnd.apache.parquet";

/// Rows per batch read from a Parquet body: large enough to keep per-batch costs small,
/// small enough that a batch of wide rows stays a few MiB.
const PARQUET_BATCH_ROWS: usize = 8192;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Columnar {
    ArrowStream,
    Parquet,
}

impl Columnar {
    fn name(self) -> &'static str {
        match self {
            Columnar::ArrowStream => "Arrow IPC stream",
            Columnar::Parquet => "Parquet file",
        }
    }

    /// The columnar format a `Content-Type` (parameters dropped, lower case) names, if any.
    pub(crate) fn from_mime(mime: &str) -> Option<Columnar> {
        match mime {
            ARROW_STREAM => Some(Columnar::ArrowStream),
            PARQUET | "application/x-parquet" => Some(Columnar::Parquet),
            _ => None,
        }
    }
}

/// Decodes one (inflated) body, all or nothing.
pub(crate) fn decode(
    decoder: &EventDecoder,
    format: Columnar,
    body: Bytes,
    options: &CsvOptions,
    limits: DecodeLimits,
) -> DecodeOutcome {
    // The Arrow and Parquet readers are large third-party parsers fed untrusted bytes: should
    // one panic on a malformed body, that is the body's fault (400), not the server's (500).
    let read = AssertUnwindSafe(|| read(decoder, format, body, options, limits));
    std::panic::catch_unwind(read).unwrap_or_else(|_| {
        DecodeOutcome::body_error(format!("the body is not a readable {}", format.name()))
    })
}

fn read(
    decoder: &EventDecoder,
    format: Columnar,
    body: Bytes,
    options: &CsvOptions,
    limits: DecodeLimits,
) -> DecodeOutcome {
    match format {
        Columnar::ArrowStream => decode_arrow_stream(decoder, &body, options, limits),
        Columnar::Parquet => {
            if body.is_empty() {
                return DecodeOutcome::body_error("the body is empty: send a Parquet file".into());
            }
            // `Bytes` reads its column chunks in place: no copy of the body.
            let builder = match ParquetRecordBatchReaderBuilder::try_new(body) {
                Ok(b) => b,
                Err(e) => {
                    return DecodeOutcome::body_error(format!("not a readable Parquet file: {e}"));
                }
            };
            // The footer counts the rows: a body of too many is refused before any is read.
            let rows = builder.metadata().file_metadata().num_rows();
            if usize::try_from(rows).map_or(true, |r| r > limits.max_events) {
                return DecodeOutcome::TooManyEvents {
                    limit: limits.max_events,
                };
            }
            let schema = builder.schema().clone();
            match builder.with_batch_size(PARQUET_BATCH_ROWS).build() {
                Ok(reader) => decode_batches(decoder, &schema, reader, options, limits),
                Err(e) => DecodeOutcome::body_error(format!("not a readable Parquet file: {e}")),
            }
        }
    }
}
