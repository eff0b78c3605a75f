//! The `meterbase` command: `serve` runs the server; `sql`, `import` and `reconcile` are its
//! clients. It owns argument parsing, logging set-up and the clients; everything else lives
//! in the library crates.
//!
//! Module map: `args` (the server, event type and events file `import` and `reconcile` share),
//! `log_sink` (the server's log lines, buffered and written in batches),
//! `client` (server URLs and the HTTP client the commands use), `import` (the `import`
//! command: a reader thread cuts the file into batches, the main thread posts them; its
//! readers are shared), `reconcile` (the `reconcile` command: a file's counts, sums and digests
//! per customer and bucket against the server's, differing events named).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

mod args;
mod client;
mod import;
mod log_sink;
mod reconcile;

use clap::{Parser, Subcommand};
use meterbase_server::{ServerConfig, run};

#[derive(Parser)]
#[command(
    name = "meterbase",
    version,
    about = "Usage-metering store for usage-based billing"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server.
    Serve(Box<ServeArgs>),
    /// Run a SQL query against a server and print the result as a table.
    Sql(SqlArgs),
    /// Send a CSV or NDJSON file (plain or .gz) to a server in batches.
    Import(import::ImportArgs),
    /// Compare a CSV or NDJSON file with the events the server holds, per customer and UTC
    /// day or hour: exit 0 when they match, 1 when they differ, 2 on an error.
    Reconcile(reconcile::ReconcileArgs),
}

#[derive(clap::Args)]
struct SqlArgs {
    /// Server address.
    #[arg(long, env = "METERBASE_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// API key (see <data-dir>/default-api-key).
    #[arg(long, env = "METERBASE_API_KEY", hide_env_values = true)]
    api_key: String,
    /// Evaluate as of this instant (RFC 3339).
    #[arg(long)]
    as_of: Option<String>,
    /// The query.
    sql: String,
}

/// Asks for Arrow IPC so types survive the trip, then prints with Arrow's table printer.
fn run_sql(a: SqlArgs) -> Result<String, String> {
    let base = client::base_url(&a.url)?;
    let agent = client::agent(None);
    let mut body = serde_json::json!({ "sql": a.sql });
    if let Some(t) = a.as_of {
        body["as_of"] = serde_json::json!(t);
    }
    let mut resp = agent
        .post(format!("{base}/sql"))
        .header("x-api-key", &a.api_key)
        .header("accept", "application/vnd.apache.arrow.stream")
        .send_json(body)
        .map_err(|e| format!("cannot reach {base}: {e}"))?;
    let status = resp.status().as_u16();
    let bytes = resp
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_vec()
        .map_err(|e| format!("reading the response: {e}"))?;
    if status != 200 {
        let problem: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        return Err(format!(
            "{status} {}: {}",
            problem["title"].as_str().unwrap_or(""),
            problem["detail"]
                .as_str()
                .unwrap_or(&String::from_utf8_lossy(&bytes))
        ));
    }
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
        .map_err(|e| format!("unreadable result: {e}"))?;
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("unreadable result: {e}"))?;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let table = arrow::util::pretty::pretty_format_batches(&batches).map_err(|e| e.to_string())?;
    Ok(format!("{table}\n({rows} rows)"))
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Where the write-ahead log, catalog and (by default) the Parquet files live.
    #[arg(long, env = "METERBASE_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// Address to listen on; port 0 picks a free port (written to <data-dir>/listen-addr).
    #[arg(long, env = "METERBASE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// Object store for Parquet files and manifests: file:///abs/path (default <data-dir>/store).
    #[arg(long, env = "METERBASE_OBJECT_STORE")]
    object_store: Option<String>,
    /// Token for the /admin endpoints (Authorization: Bearer TOKEN). Admin API is off without it.
    #[arg(long, env = "METERBASE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Largest request body after decompression, in bytes.
    #[arg(long, env = "METERBASE_MAX_BODY_BYTES", default_value_t = 32 << 20)]
    max_body_bytes: usize,
    /// Most events in one request.
    #[arg(long, env = "METERBASE_MAX_EVENTS", default_value_t = 100_000)]
    max_events: usize,
    /// Largest CSV upload after decompression, in bytes.
    #[arg(long, env = "METERBASE_MAX_CSV_BYTES", default_value_t = 64 << 30)]
    max_csv_bytes: u64,
    /// Rows per chunk of a CSV upload; larger uploads are staged to files chunk by chunk.
    #[arg(long, env = "METERBASE_CSV_CHUNK_ROWS", default_value_t = 100_000)]
    csv_chunk_rows: usize,
    /// How far in the future an event timestamp may be, in seconds.
    #[arg(long, env = "METERBASE_MAX_FUTURE_SECS", default_value_t = 86_400)]
    max_future_secs: u64,
    /// Persist a table's buffer to Parquet once it holds this many bytes.
    #[arg(long, env = "METERBASE_FLUSH_BYTES", default_value_t = meterbase_server::DEFAULT_FLUSH_BYTES)]
    flush_bytes: usize,
    /// Persist a table's buffer once its oldest event has waited this many milliseconds.
    #[arg(long, env = "METERBASE_FLUSH_AGE_MS", default_value_t = 10_000)]
    flush_age_ms: u64,
    /// Once this many bytes wait in memory for the object store, writes wait for room...
    #[arg(long, env = "METERBASE_MAX_BUFFER_BYTES", default_value_t = meterbase_server::DEFAULT_MAX_BUFFER_BYTES)]
    max_buffer_bytes: usize,
    /// ...at most this many milliseconds, then are refused (503 with Retry-After); 0 refuses
    /// at once.
    #[arg(long, env = "METERBASE_BUFFER_WAIT_MS", default_value_t = meterbase_server::DEFAULT_BUFFER_WAIT.as_millis() as u64)]
    buffer_wait_ms: u64,
    /// Memory cap per SQL query, in bytes.
    #[arg(long, env = "METERBASE_QUERY_MEMORY_BYTES", default_value_t = 512 << 20)]
    query_memory_bytes: usize,
    /// Bytes of Parquet data kept in memory after queries read it from the object store, so
    /// warm queries on S3 make no requests; 0 turns the cache off.
    #[arg(long, env = "METERBASE_CACHE_BYTES", default_value_t = meterbase_server::DEFAULT_CACHE_BYTES)]
    cache_bytes: u64,
    /// Bytes of per-file partial aggregates of billable metrics kept in memory, so a usage
    /// answer merges a few rows per customer and day of each file instead of reading its
    /// events again; 0 keeps none (every usage answer reads raw rows).
    #[arg(long, env = "METERBASE_PARTIALS_BYTES", default_value_t = meterbase_server::DEFAULT_PARTIALS_BYTES)]
    partials_bytes: u64,
    /// Time cap per SQL query, in milliseconds.
    #[arg(long, env = "METERBASE_QUERY_TIMEOUT_MS", default_value_t = 60_000)]
    query_timeout_ms: u64,
    /// How many days back `as_of` may look (replaced and deleted rows are kept that long).
    #[arg(long, env = "METERBASE_HISTORY_RETENTION_DAYS", default_value_t = 400)]
    history_retention_days: u64,
    /// Seconds between background compaction passes; 0 turns them off.
    #[arg(long, env = "METERBASE_COMPACTION_INTERVAL_SECS", default_value_t = 60)]
    compaction_interval_secs: u64,
    /// Most rows compaction merges into one file.
    #[arg(
        long,
        env = "METERBASE_COMPACTION_MAX_ROWS",
        default_value_t = meterbase_server::DEFAULT_COMPACTION_MAX_ROWS
    )]
    compaction_max_rows: usize,
    /// A compaction pass also runs this many milliseconds after a persist that left files
    /// every query must deduplicate (corrections of older days it did not compare itself),
    /// and five times this long after the previous pass at the soonest.
    #[arg(
        long,
        env = "METERBASE_COMPACTION_RESOLVE_DELAY_MS",
        default_value_t = 2_000
    )]
    compaction_resolve_delay_ms: u64,
    /// Older rows a persist always may read to compare their keys with its own (and mask
    /// the versions it replaces); past this and twice its own rows, the pass above does it.
    #[arg(long, env = "METERBASE_PERSIST_COMPARE_ROWS", default_value_t = meterbase_server::DEFAULT_PERSIST_COMPARE_ROWS)]
    persist_compare_rows: u64,
    /// Seconds a file replaced by compaction stays once no query needs it (for outside readers).
    #[arg(long, env = "METERBASE_COMPACTION_GRACE_SECS", default_value_t = 300)]
    compaction_grace_secs: u64,
    /// Threads for SQL queries.
    #[arg(long, env = "METERBASE_QUERY_THREADS", default_value_t = 2)]
    query_threads: usize,
    /// Queries running at once (SQL, metric usage, event listings); more wait for a slot, at
    /// most their time cap, then are refused with 503.
    #[arg(long, env = "METERBASE_QUERY_CONCURRENCY", default_value_t = 4)]
    query_concurrency: usize,
    /// Queries of one organisation running at once; keep it below --query-concurrency so
    /// another tenant always finds room.
    #[arg(long, env = "METERBASE_QUERY_CONCURRENCY_PER_ORG", default_value_t = 3)]
    query_concurrency_per_org: usize,
    /// `data` (default) syncs the write-ahead log before every acknowledgement; `none` does
    /// not and may lose acknowledged events on a crash (benchmarks of the rest only).
    #[arg(long, env = "METERBASE_SYNC", default_value = "data", value_parser = ["data", "none"])]
    sync: String,
    /// Zero-fill the next write-ahead log segment (64 MiB) ahead of use, so a sync writes the
    /// records alone and no file-size change: about half the sync latency on ext4/xfs. `false`
    /// for copy-on-write file systems (btrfs, ZFS), where writing zeros ahead gains nothing.
    #[arg(long, env = "METERBASE_WAL_PREALLOCATE", default_value_t = true, action = clap::ArgAction::Set)]
    wal_preallocate: bool,
    /// Start even if the write-ahead log is corrupted mid-log, discarding the damaged records.
    #[arg(long, env = "METERBASE_WAL_SKIP_CORRUPTION")]
    wal_skip_corruption: bool,
    /// Tests only: wrap the object store in a fault injector driven by POST /admin/faults.
    #[arg(long, hide = true)]
    fault_injection: bool,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "METERBASE_LOG_JSON")]
    log_json: bool,
    /// Also speak the PostgreSQL wire protocol on this address (psql, Grafana, BI tools; the
    /// password is an API key); off by default. Port 0 picks one (<data-dir>/pg-listen-addr).
    #[arg(long, env = "METERBASE_PG_LISTEN")]
    pg_listen: Option<String>,
    /// TLS certificate chain (PEM) for --pg-listen; with --pg-tls-key.
    #[arg(long, env = "METERBASE_PG_TLS_CERT")]
    pg_tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) for --pg-listen; with --pg-tls-cert.
    #[arg(long, env = "METERBASE_PG_TLS_KEY")]
    pg_tls_key: Option<PathBuf>,
    /// Allow --pg-listen on a non-loopback address without TLS (API keys in clear text).
    #[arg(long, env = "METERBASE_PG_ALLOW_CLEARTEXT")]
    pg_allow_cleartext: bool,
    /// `delta` (default): every event type is also a Delta Lake table under its prefix in the
    /// object store (`<org id>/<slug>/_delta_log/`), read directly by Spark, Trino, DuckDB,
    /// ClickHouse; `off`: no Delta log is written.
    #[arg(long, env = "METERBASE_OPEN_TABLES", default_value = "delta", value_parser = ["delta", "off"])]
    open_tables: String,
    /// At most one Delta commit per table this often (10s, 500ms, 1m).
    #[arg(long, env = "METERBASE_DELTA_COMMIT_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    delta_commit_interval: Duration,
    /// How long a superseded Delta version stays readable: files it lists are kept this long
    /// after a later version stops listing them (7d, 12h).
    #[arg(long, env = "METERBASE_DELTA_RETENTION", default_value = "7d", value_parser = humantime::parse_duration)]
    delta_retention: Duration,
    /// A Delta checkpoint every this many commits (readers replay at most this many).
    #[arg(long, env = "METERBASE_DELTA_CHECKPOINT_EVERY", default_value_t = meterbase_server::DELTA_CHECKPOINT_EVERY)]
    delta_checkpoint_every: u32,
}

/// Logging to stderr through `log_sink`'s buffer; the guard writes what is left at exit.
fn init_logging(json: bool) -> log_sink::FlushOnDrop {
    let filter = tracing_subscriber::EnvFilter::try_from_env("METERBASE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (sink, guard) = log_sink::LogSink::start();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(sink);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
    guard
}

// glibc's allocator kept freed buffer memory resident (peak RSS climbed to 3 GiB under
// sustained ingest with ~150 MiB buffered); mimalloc returns it, once told not to wait.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Option number in mimalloc.h (v3); the bindings do not name it (they predate the rename of
/// `reset_delay`).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Sets what the operator did not set (`MIMALLOC_<NAME>`; mimalloc reads those itself).
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // Its default (1 s) kept ~300 MiB of freed persist buffers resident under sustained
        // ingest.
        // SAFETY: sets one integer option before any other thread exists; mimalloc reads
        // options atomically, and reads this one at every purge.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 10) };
    }
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        disable_transparent_huge_pages();
    }
}

/// Transparent huge pages: a first touch of freshly purged memory zeroed 2 MiB at a time and
/// a region stayed resident while any 4 KiB of it was in use. Batched ingest without them:
/// peak RSS 574 → 470 MiB, throughput +1%. mimalloc's own switch (`allow_thp`) is read
/// once, before `main`, so setting it here came too late and huge pages stayed on; the
/// process-wide switch applies to every mapping from now on, mimalloc's arenas included.
#[cfg(target_os = "linux")]
fn disable_transparent_huge_pages() {
    // Failure (a kernel without the switch) leaves huge pages as they were.
    let _ = rustix::thread::disable_transparent_huge_pages(true);
}

#[cfg(not(target_os = "linux"))]
fn disable_transparent_huge_pages() {}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    match cli.command {
        Command::Sql(a) => match run_sql(a) {
            Ok(table) => {
                println!("{table}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("meterbase sql: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Import(a) => match import::run(a) {
            Ok(summary) => {
                eprintln!("{summary}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("meterbase import: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Reconcile(a) => match reconcile::run(a) {
            Ok(reconcile::Outcome::Same(report)) => {
                println!("{report}");
                ExitCode::SUCCESS
            }
            Ok(reconcile::Outcome::Differs(report)) => {
                println!("{report}");
                ExitCode::from(1)
            }
            Err(e) => {
                eprintln!("meterbase reconcile: {e}");
                ExitCode::from(2)
            }
        },
        Command::Serve(a) => {
            let a = *a;
            let _log_flush = init_logging(a.log_json);
            let mut config = ServerConfig::new(a.data_dir);
            config.listen = a.listen;
            config.object_store = a.object_store;
            config.admin_token = a.admin_token.filter(|t| !t.is_empty());
            config.max_body_bytes = a.max_body_bytes;
            config.max_events = a.max_events;
            config.max_csv_bytes = a.max_csv_bytes;
            config.csv_chunk_rows = a.csv_chunk_rows.clamp(1, 1 << 20);
            config.max_future = Duration::from_secs(a.max_future_secs);
            config.flush_bytes = a.flush_bytes;
            config.flush_age = Duration::from_millis(a.flush_age_ms);
            config.max_buffer_bytes = a.max_buffer_bytes;
            config.buffer_wait = Duration::from_millis(a.buffer_wait_ms);
            config.query.memory_limit = a.query_memory_bytes;
            config.query.cache_bytes = a.cache_bytes;
            config.query.partials_bytes = a.partials_bytes;
            config.query.timeout = Duration::from_millis(a.query_timeout_ms);
            config.query.threads = a.query_threads;
            config.query.concurrency = a.query_concurrency;
            config.query.concurrency_per_org = a.query_concurrency_per_org;
            config.compaction.history_retention =
                Duration::from_secs(a.history_retention_days * 86_400);
            config.compaction.interval = Duration::from_secs(a.compaction_interval_secs);
            config.compaction.max_rows = a.compaction_max_rows.max(1);
            config.compaction.grace = Duration::from_secs(a.compaction_grace_secs);
            config.compaction.resolve_delay = Duration::from_millis(a.compaction_resolve_delay_ms);
            config.compaction.persist_compare_rows = a.persist_compare_rows;
            config.sync = a.sync == "data";
            config.wal_preallocate = a.wal_preallocate;
            config.skip_wal_corruption = a.wal_skip_corruption;
            config.fault_injection = a.fault_injection;
            config.open_tables =
                (a.open_tables == "delta").then(|| meterbase_server::DeltaConfig {
                    commit_interval: a.delta_commit_interval.max(Duration::from_millis(10)),
                    retention: a.delta_retention,
                    checkpoint_every: a.delta_checkpoint_every.max(1),
                });
            config.pg = a.pg_listen.filter(|l| !l.is_empty()).map(|listen| {
                let mut pg = meterbase_server::PgConfig::new(listen);
                pg.tls_cert = a.pg_tls_cert;
                pg.tls_key = a.pg_tls_key;
                pg.allow_cleartext = a.pg_allow_cleartext;
                pg
            });
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("meterbase: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    // Logging writes to stderr already: printing it as well said it twice.
                    tracing::error!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
