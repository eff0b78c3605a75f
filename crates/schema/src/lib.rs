//! meterbase-schema owns the shape of usage events: the field types of the contract, event
//! type definitions (slugs, `column_order`, `unique_key`), the Arrow schema of a stored table,
//! and the decoder that turns untrusted JSON bytes into validated Arrow columns.
//!
//! It must not touch the disk, the network or any other crate of the workspace: everything
//! here is pure and deterministic so the parsers can be property-tested and fuzzed in
//! isolation.
//!
//! Module map: `field_type` (the contract's types → Arrow), `definition` (event types, the
//! stored table's schema, reserved names), `scalar` (one JSON value → one typed value),
//! `timestamp` (every accepted time format, civil dates), `decode` (JSON/NDJSON → Arrow,
//! every bad event listed), `columns` (column names → fields, `map.FIELD=COLUMN`, shared by
//! CSV and columnar bodies), `csv_lines` + `csv_input` (CSV split into records with their line
//! numbers, then decoded in chunks), `columnar` (Arrow IPC streams, Parquet files and record
//! batches → one validated batch), `parquet_framing` (a Parquet body's Thrift footer and page
//! headers walked before parquet-rs reads them), `zuora` (the bulk shape → NDJSON), `digest` (the
//! reconciliation digest of events: canonical bytes, per-event hash, order-independent sum),
//! `error`, `fuzzing` (the properties fuzz targets and corpus tests check).

mod columnar;
mod columns;
mod csv_input;
mod csv_lines;
mod decode;
mod definition;
pub mod digest;
mod error;
mod field_type;
pub mod fuzzing;
mod parquet_framing;
pub mod scalar;
pub mod timestamp;
pub mod zuora;

pub use columnar::{
    check_framing as check_ipc_framing, decode_arrow_stream, decode_batches, decode_parquet,
};
pub use columns::CsvOptions;
pub use csv_input::{CsvChunk, CsvStream, CsvStreamError};
pub use csv_lines::{CsvLines, Unterminated};
pub use decode::{
    DecodeLimits, DecodeOutcome, EventDecoder, EventError, InputFormat, split_ndjson,
};
pub use definition::{
    CUSTOMER_ID_COLUMN, EventTypeDef, EventTypeSpec, INGESTED_AT_COLUMN, RESERVED_EVENT_SLUGS,
    SEQ_COLUMN, TIMESTAMP_COLUMN, derive_slug, validate_field_name, validate_slug,
};
pub use error::SchemaError;
pub use field_type::{BaseType, FieldType};
