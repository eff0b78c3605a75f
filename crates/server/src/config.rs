//! What the server is started with (`meterbase serve` flags and their defaults).

use std::path::PathBuf;
use std::time::Duration;

use meterbase_query::QueryConfig;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub listen: String,
    /// `None` means `file://<data-dir>/store`.
    pub object_store: Option<String>,
    pub admin_token: Option<String>,
    pub max_body_bytes: usize,
    pub max_events: usize,
    /// Largest CSV upload after decompression; CSV bodies stream, so this is about disk.
    pub max_csv_bytes: u64,
    /// Rows per chunk of a CSV upload: a body of more rows is staged to files chunk by chunk.
    pub csv_chunk_rows: usize,
    pub max_future: Duration,
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub flush_bytes: usize,
    pub flush_age: Duration,
    pub max_buffer_bytes: usize,
    pub buffer_wait: Duration,
    pub query: QueryConfig,
    pub compaction: meterbase_storage::CompactionConfig,
    /// Wraps the object store in `FaultyStore` and enables `POST /admin/faults` (tests).
    pub fault_injection: bool,
    pub sync: bool,
    /// Zero-fill the next log segment ahead of use (`WalConfig::preallocate`).
    pub wal_preallocate: bool,
    pub skip_wal_corruption: bool,
    /// The Postgres wire protocol (`--pg-listen`); off when `None`.
    pub pg: Option<meterbase_pgwire::PgConfig>,
    /// Open tables: every event type also a Delta table (`--open-tables delta`, the
    /// default); off when `None`.
    pub open_tables: Option<meterbase_delta::DeltaConfig>,
}

impl ServerConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> ServerConfig {
        ServerConfig {
            data_dir: data_dir.into(),
            listen: "127.0.0.1:8080".into(),
            object_store: None,
            admin_token: None,
            max_body_bytes: 32 << 20,
            max_events: 100_000,
            max_csv_bytes: 64 << 30,
            csv_chunk_rows: 100_000,
            max_future: Duration::from_secs(24 * 3600),
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(10),
            flush_bytes: meterbase_storage::DEFAULT_FLUSH_BYTES,
            flush_age: Duration::from_secs(10),
            max_buffer_bytes: meterbase_storage::DEFAULT_MAX_BUFFER_BYTES,
            buffer_wait: meterbase_storage::DEFAULT_BUFFER_WAIT,
            query: QueryConfig::default(),
            compaction: meterbase_storage::CompactionConfig::default(),
            fault_injection: false,
            sync: true,
            wal_preallocate: true,
            skip_wal_corruption: false,
            pg: None,
            open_tables: Some(meterbase_delta::DeltaConfig::default()),
        }
    }
}
