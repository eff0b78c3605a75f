//! meterbase-query owns SQL: it turns storage snapshots into DataFusion tables (one logical
//! view per event type that deduplicates unique keys only where sources overlap), runs
//! tenant SQL in a read-only sandbox with memory and time caps on its own runtime, and
//! renders results as JSON, NDJSON, CSV, Arrow IPC or Parquet.
//!
//! It must not write anything: no storage mutation, no catalog change, no file or URL access.
//!
//! Module map: `time_filter` (the time range a query's filters allow), `provider`
//! (`RawSource`: one snapshot's files and buffer as a table, every version), `read_cache` (the
//! Parquet bytes queries read, kept in memory in front of the object store), `view` (the
//! deduplicated, `as_of`-aware view of one event type over its raw sources), `versions`
//! (every stored version of one event type, to explain what the view leaves out), `utc_trunc`
//! (`date_trunc` for UTC timestamps), `exact_sum` (an exact, order-independent float sum),
//! `exact_aggregates` (`sum`, `avg` and the time-weighted sum on it), `partial_states` (the
//! exact float sum as a state to keep and its merge), `partials_plan` (which files of a
//! snapshot answer from per-file partial aggregates, and their keys), `partials` (those
//! partials kept in memory), `cancel` (deadlines
//! and caller cancellation in every operator), `admission` (how many queries run,
//! organisations taking turns), `engine` (`QueryEngine`: sessions, sandbox, execution),
//! `decomposed` (a metric answered from per-file partials plus the raw rest), `statement` (a
//! wire-protocol client's parsed statement: described, or run with its rows streamed batch by
//! batch), `events` (the SQL of the events listing and deletion counts),
//! `reconcile` (counts, sums and digests per customer and bucket, with the per-event hash
//! as a SQL function), `format` (results as JSON, NDJSON, CSV, Arrow IPC, Parquet).

mod admission;
mod cancel;
mod decomposed;
mod engine;
pub mod events;
mod exact_aggregates;
mod exact_sum;
pub mod format;
mod partial_states;
mod partials;
mod partials_plan;
mod provider;
mod read_cache;
pub mod reconcile;
pub mod statement;
mod time_filter;
mod utc_trunc;
mod versions;
mod view;

pub use admission::Load;
pub use decomposed::{Decomposed, PARTIALS_TABLE, Served};
pub use engine::{
    Caller, DEFAULT_CACHE_BYTES, DEFAULT_PARTIALS_BYTES, QueryConfig, QueryEngine, QueryError,
    QueryKind, QueryObserver, QueryOutput,
};
pub use exact_aggregates::exact_aggregates;
pub use exact_sum::ExactSum;
pub use provider::STORE_URL;
pub use read_cache::{CacheStats, ReadCache};
pub use versions::{Versions, versions_table};
pub use view::table_view;
