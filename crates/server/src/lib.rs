//! meterbase-server owns the HTTP API of the contract: routing, authentication, limits,
//! problem+json errors, content negotiation, the process lifecycle (data-directory lock,
//! first-start organisation, replay before serving, SIGTERM flush) and the Prometheus metrics.
//!
//! It must not contain storage or query logic: it calls the catalog, storage, query and
//! metrics crates.
//!
//! Module map (each imports only modules above it in this list):
//! - `error`: `ServerError`, why the server could not start or stopped.
//! - `problem`: RFC 9457 errors, the one place request failures become statuses.
//! - `config`: `ServerConfig`, what `meterbase serve` is started with.
//! - `prometheus`: `GET /metrics` counters and histograms (`Metrics`).
//! - `http`: the toolkit of responses, query parameters and bodies.
//! - `encoding`: gzip/zstd request bodies, limits counted while inflating.
//! - `columnar`: Arrow IPC stream and Parquet bodies read batch by batch into the decoder.
//! - `app`: `App` (catalog, store, engine) and `Shared` (readiness), decoders.
//! - `auth`: `Tenant` (API key → organisation) and `Admin` (admin token) extractors.
//! - `receipt`: ingest receipts (count, log sequences, digest of what was accepted).
//! - `openapi`: the OpenAPI 3.1 document of the API (`build`, `schemas`, `paths`).
//! - `api::*`: one module per API area (admin, event types, ingest incl. Zuora bulk, CSV,
//!   events, reconcile, SQL, billable metrics, health and metrics, `discovery` for
//!   `/openapi.json`).
//! - `layers`: request log, request metrics, draining refused bodies.
//! - `routes`: the route table (`endpoints`, which the OpenAPI test also reads) and its layers.
//! - `serve`: the process lifecycle (`run`).

// A `Problem` is built at most once per request, on the error path; boxing it would only add
// noise to every handler signature.
#![allow(clippy::result_large_err)]

mod api;
mod app;
mod auth;
mod columnar;
mod config;
mod encoding;
mod error;
mod http;
mod layers;
mod openapi;
mod problem;
mod prometheus;
mod receipt;
mod routes;
mod serve;

pub use self::prometheus::Metrics;
pub use config::ServerConfig;
pub use error::ServerError;
pub use meterbase_delta::{CHECKPOINT_EVERY as DELTA_CHECKPOINT_EVERY, DeltaConfig};
pub use meterbase_pgwire::PgConfig;
pub use meterbase_query::{DEFAULT_CACHE_BYTES, DEFAULT_PARTIALS_BYTES};
pub use meterbase_storage::{
    DEFAULT_BUFFER_WAIT, DEFAULT_COMPACTION_MAX_ROWS, DEFAULT_FLUSH_BYTES,
    DEFAULT_MAX_BUFFER_BYTES, DEFAULT_PERSIST_COMPARE_ROWS,
};
pub use serve::run;
