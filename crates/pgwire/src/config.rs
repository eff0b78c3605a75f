//! What the Postgres listener is started with, and what it asks of the server it is part of
//! (`Tenants`): keys, snapshots, the query engine and the `as_of` rule, the same ones `/sql`
//! uses.

use std::path::PathBuf;
use std::sync::Arc;

use meterbase_catalog::Organisation;
use meterbase_query::QueryEngine;
use meterbase_storage::TableSnapshot;

#[derive(Debug, Clone)]
pub struct PgConfig {
    /// `host:port`; port 0 picks a free one (written to `<data-dir>/pg-listen-addr`).
    pub listen: String,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Cleartext passwords on a non-loopback address without TLS: an explicit waiver.
    pub allow_cleartext: bool,
    pub max_connections: usize,
}

impl PgConfig {
    pub fn new(listen: impl Into<String>) -> PgConfig {
        PgConfig {
            listen: listen.into(),
            tls_cert: None,
            tls_key: None,
            allow_cleartext: false,
            max_connections: 256,
        }
    }
}

/// The server's side of a connection: whose key it is and what that organisation may read.
pub trait Tenants: Send + Sync + 'static {
    /// The organisation of an API key (the connection's password).
    fn authenticate(&self, key: &str) -> Option<Arc<Organisation>>;
    /// One consistent snapshot of each of the organisation's tables.
    fn snapshots(&self, org: &Organisation) -> Result<Vec<TableSnapshot>, String>;
    fn engine(&self) -> &QueryEngine;
    /// An `as_of` instant in microseconds, with the rules of `/sql` (history kept).
    fn parse_as_of(&self, text: &str) -> Result<i64, String>;
}
