//! Counters for `GET /metrics` (Prometheus text format).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    pub events_ingested: AtomicU64,
    pub bytes_ingested: AtomicU64,
    pub events_rejected: AtomicU64,
    pub requests_rejected_overload: AtomicU64,
    pub queries: AtomicU64,
    pub query_errors: AtomicU64,
    pub query_micros: AtomicU64,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

pub(crate) fn render(app: &crate::App) -> String {
    let m = &app.metrics;
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, v: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
        );
    };
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    counter(
        "meterbase_events_ingested_total",
        "Events acknowledged (durable).",
        get(&m.events_ingested),
    );
    counter(
        "meterbase_bytes_ingested_total",
        "Request body bytes of acknowledged requests.",
        get(&m.bytes_ingested),
    );
    counter(
        "meterbase_events_rejected_total",
        "Events refused by validation.",
        get(&m.events_rejected),
    );
    counter(
        "meterbase_overload_rejections_total",
        "Requests refused with 503 because a queue or buffer was full.",
        get(&m.requests_rejected_overload),
    );
    counter(
        "meterbase_queries_total",
        "SQL queries run.",
        get(&m.queries),
    );
    counter(
        "meterbase_query_errors_total",
        "SQL queries that failed.",
        get(&m.query_errors),
    );
    counter(
        "meterbase_query_seconds_total",
        "Time spent in SQL queries (integer seconds are coarse; see micros).",
        get(&m.query_micros) / 1_000_000,
    );
    counter(
        "meterbase_query_microseconds_total",
        "Time spent in SQL queries, microseconds.",
        get(&m.query_micros),
    );
    let (syncs, sync_us, wal_bytes, synced_seq, poisoned) = app.store.wal_stats();
    counter(
        "meterbase_wal_syncs_total",
        "fdatasync calls of the write-ahead log (one per group commit).",
        syncs,
    );
    counter(
        "meterbase_wal_sync_microseconds_total",
        "Time spent in write-ahead log syncs.",
        sync_us,
    );
    counter(
        "meterbase_wal_bytes_total",
        "Bytes written to the write-ahead log.",
        wal_bytes,
    );
    let s = &app.store.stats;
    counter(
        "meterbase_flushes_total",
        "Buffer chunks persisted to Parquet.",
        get(&s.flushes),
    );
    counter(
        "meterbase_flush_failures_total",
        "Persist attempts that failed (retried with back-off).",
        get(&s.flush_failures),
    );
    counter(
        "meterbase_files_written_total",
        "Parquet files written.",
        get(&s.files_written),
    );
    counter(
        "meterbase_rows_persisted_total",
        "Rows persisted to Parquet.",
        get(&s.rows_persisted),
    );
    counter(
        "meterbase_buffer_waits_total",
        "Writes that found the buffer full and waited for a persist to make room.",
        get(&s.buffer_waits),
    );
    let mut gauge = |name: &str, help: &str, v: u64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    };
    gauge(
        "meterbase_buffer_bytes",
        "Bytes of events buffered in memory, not yet in Parquet.",
        app.store.buffered_bytes() as u64,
    );
    gauge(
        "meterbase_wal_synced_sequence",
        "Last durable write-ahead log sequence number.",
        synced_seq,
    );
    gauge(
        "meterbase_wal_poisoned",
        "1 when a failed write or sync stopped all writes until restart.",
        poisoned as u64,
    );
    let files: usize = app
        .store
        .tables()
        .iter()
        .map(|t| t.manifest().files.len())
        .sum();
    gauge(
        "meterbase_live_files",
        "Parquet files referenced by manifests.",
        files as u64,
    );
    out
}
