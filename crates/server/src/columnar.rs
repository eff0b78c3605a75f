//! Columnar bodies of `POST /usage/{slug}`: an Arrow IPC stream or a Parquet file, read batch
//! by batch by `meterbase_schema` (`decode_arrow_stream`, `decode_parquet`), which matches
//! columns to fields as CSV does and checks every cell by the JSON rules. The body is already whole in memory, under
//! the same `max_body_bytes` as a JSON body: Parquet needs that anyway (its footer, which says
//! where everything is, comes last), and only one input batch is decoded at a time besides.

use std::panic::AssertUnwindSafe;

use bytes::Bytes;
use meterbase_schema::{
    CsvOptions, DecodeLimits, DecodeOutcome, EventDecoder, decode_arrow_stream, decode_parquet,
};

pub(crate) const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";
pub(crate) const PARQUET: &str = "application/vnd.apache.parquet";

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
        Columnar::Parquet => decode_parquet(decoder, body, options, limits),
    }
}
