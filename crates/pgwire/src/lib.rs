//! meterbase-pgwire owns the PostgreSQL wire protocol: psql, Grafana, Metabase, DBeaver and
//! drivers such as psycopg read an organisation's event types as tables, with an API key as
//! the password. Protocol by `pgwire`, values by `arrow-pg`, `pg_catalog` and the SQL
//! rewrites clients need by `datafusion-pg-catalog`; queries by `meterbase_query`'s
//! `QueryEngine`, so the sandbox, tables, caps and admission are those of `/sql`.
//!
//! It must not touch storage or the catalog beyond reading through `Tenants`, must not run
//! SQL outside `QueryEngine` (no session of its own that would bypass the sandbox), and
//! knows nothing of HTTP: the server wires it in.
//!
//! Module map (each imports only modules above it):
//! - `error`: `PgError` (why the listener cannot start); query failures as SQLSTATEs.
//! - `config`: `PgConfig` and `Tenants`, what the server provides.
//! - `tls`: the certificate, and no cleartext password off loopback unless waived.
//! - `auth`: startup, API key as password → the connection's organisation.
//! - `catalog`: `pg_catalog` and information_schema of the organisation's tables.
//! - `session`: `SET meterbase.as_of`, accepted client settings, `SHOW`, transactions.
//! - `handler`: simple and extended queries, rows streamed as they come.
//! - `listener`: bind, accept, serve until shutdown.

mod auth;
mod catalog;
mod config;
mod error;
mod handler;
mod listener;
mod session;
mod tls;

pub use config::{PgConfig, Tenants};
pub use error::PgError;
pub use listener::{PgListener, bind};
