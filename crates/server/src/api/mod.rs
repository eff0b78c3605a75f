//! One module per area of the HTTP API; `routes` maps paths to their handlers.

pub(crate) mod admin;
pub(crate) mod billable_metrics;
pub(crate) mod console;
pub(crate) mod csv;
pub(crate) mod discovery;
pub(crate) mod event_types;
pub(crate) mod events;
pub(crate) mod explain;
pub(crate) mod ingest;
pub(crate) mod operations;
pub(crate) mod organisation;
pub(crate) mod reconcile;
pub(crate) mod sql;
