//! meterbase-query owns SQL: it turns storage snapshots into DataFusion tables (one logical
//! view per event type that deduplicates unique keys only where sources overlap), runs
//! tenant SQL in a read-only sandbox with memory and time caps on its own runtime, and
//! renders results as JSON, NDJSON, CSV, Arrow IPC or Parquet.
//!
//! It must not write anything: no storage mutation, no catalog change, no file or URL access.

mod admission;
mod cancel;
mod engine;
pub mod events;
pub mod format;
mod provider;
mod utc_trunc;
mod view;

pub use admission::Load;
pub use engine::{
    Caller, QueryConfig, QueryEngine, QueryError, QueryKind, QueryObserver, QueryOutput, STORE_URL,
};
pub use view::table_view;
