//! `GET /metrics`: what the server counts (requests, ingest, queries, storage, the log's
//! syncs, the process), in the Prometheus text format.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use meterbase_query::{CacheStats, Load, QueryError, QueryKind, QueryObserver};
use meterbase_storage::Store;
use prometheus::{
    CounterVec, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets (seconds) for requests, acknowledgements and queries: 0.5 ms to 60 s.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 15.0, 60.0,
];

pub struct Metrics {
    registry: Registry,
    pub events_ingested: IntCounter,
    pub bytes_ingested: IntCounter,
    pub events_rejected: IntCounter,
    pub overload_rejections: IntCounter,
    /// From receiving a validated body to its acknowledgement (log sync and buffer).
    pub ingest_ack_seconds: Histogram,
    requests: IntCounterVec,
    request_seconds: HistogramVec,
    queries: IntCounterVec,
    query_errors: IntCounterVec,
    query_seconds: HistogramVec,
    query_seconds_total: CounterVec,
    queries_running: IntGaugeVec,
    queries_cancelled: IntCounterVec,
    /// Kept for dashboards made before the histogram: every query's time in µs.
    query_micros: AtomicU64,
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("a valid counter name");
    registry
        .register(Box::new(c.clone()))
        .expect("registered once");
    c
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let r = &registry;
        let vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid");
            r.register(Box::new(c.clone())).expect("registered once");
            c
        };
        let histograms = |name: &str, help: &str, labels: &[&str]| {
            let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
            let h = HistogramVec::new(opts, labels).expect("valid");
            r.register(Box::new(h.clone())).expect("registered once");
            h
        };
        let ingest_ack_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "meterbase_ingest_ack_seconds",
                "Time from a validated ingest body to its acknowledgement (log sync included).",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("valid");
        r.register(Box::new(ingest_ack_seconds.clone()))
            .expect("registered once");
        let query_seconds_total = CounterVec::new(
            Opts::new(
                "meterbase_query_seconds_total",
                "Time spent in queries, whole queries, by kind.",
            ),
            &["kind"],
        )
        .expect("valid");
        r.register(Box::new(query_seconds_total.clone()))
            .expect("registered once");
        let queries_running = IntGaugeVec::new(
            Opts::new("meterbase_queries_running", "Queries running now, by kind."),
            &["kind"],
        )
        .expect("valid");
        r.register(Box::new(queries_running.clone()))
            .expect("registered once");
        let build = IntGauge::with_opts(
            Opts::new("meterbase_build_info", "The running build (always 1).")
                .const_label("version", env!("CARGO_PKG_VERSION")),
        )
        .expect("valid");
        build.set(1);
        r.register(Box::new(build)).expect("registered once");
        #[cfg(target_os = "linux")]
        {
            // RSS, CPU seconds, open file descriptors, start time: process_* series.
            let process = prometheus::process_collector::ProcessCollector::for_self();
            r.register(Box::new(process)).expect("registered once");
        }
        Metrics {
            events_ingested: counter(
                r,
                "meterbase_events_ingested_total",
                "Events acknowledged (durable).",
            ),
            bytes_ingested: counter(
                r,
                "meterbase_bytes_ingested_total",
                "Request body bytes of acknowledged requests.",
            ),
            events_rejected: counter(
                r,
                "meterbase_events_rejected_total",
                "Events refused by validation.",
            ),
            overload_rejections: counter(
                r,
                "meterbase_overload_rejections_total",
                "Requests refused with 503 because a queue or buffer was full.",
            ),
            ingest_ack_seconds,
            requests: vec(
                "meterbase_requests_total",
                "HTTP requests answered, by route template, method and status.",
                &["route", "method", "status"],
            ),
            request_seconds: histograms(
                "meterbase_request_seconds",
                "HTTP request latency, by route template.",
                &["route"],
            ),
            queries: vec(
                "meterbase_queries_total",
                "Queries run, by kind.",
                &["kind"],
            ),
            query_errors: vec(
                "meterbase_query_errors_total",
                "Queries that failed, by kind.",
                &["kind"],
            ),
            query_seconds: histograms(
                "meterbase_query_duration_seconds",
                "Query latency, by kind.",
                &["kind"],
            ),
            query_seconds_total,
            queries_running,
            queries_cancelled: vec(
                "meterbase_queries_cancelled_total",
                "Queries stopped before their end: over their time cap, or their client went away.",
                &["kind"],
            ),
            query_micros: AtomicU64::new(0),
            registry,
        }
    }

    pub(crate) fn record_request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        // 429/503: a queue, buffer or pool was full (the health check's 503 while replaying
        // is not a refusal of work).
        if matches!(status, 429 | 503) && route != "/healthz" {
            self.overload_rejections.inc();
        }
        self.requests
            .with_label_values(&[route, method, &status.to_string()])
            .inc();
        self.request_seconds
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
    }

    /// Queries stopped before their end so far, of every kind.
    pub(crate) fn queries_cancelled_total(&self) -> u64 {
        QueryKind::ALL
            .iter()
            .map(|k| self.queries_cancelled.with_label_values(&[k.label()]).get())
            .sum()
    }

    /// The Prometheus text: the server's own series, then the query engine's, the store's and
    /// the log's.
    pub(crate) fn render(
        &self,
        load: Option<Load>,
        cache: Option<CacheStats>,
        partials_bytes: Option<u64>,
        store: Option<&Store>,
    ) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        let mut out = String::from_utf8(out).unwrap_or_default();
        legacy_counter(
            &mut out,
            "meterbase_query_microseconds_total",
            "Time spent in queries, microseconds (see meterbase_query_seconds_total).",
            self.query_micros.load(Ordering::Relaxed),
        );
        if let Some(load) = load {
            gauge(
                &mut out,
                "meterbase_queries_queued",
                "Queries waiting for a slot to start (see --query-concurrency).",
                load.queued as u64,
            );
            legacy_counter(
                &mut out,
                "meterbase_queries_refused_total",
                "Queries that could not start within their time cap (answered 503).",
                load.refused,
            );
        }
        if let Some(cache) = cache {
            render_cache(&mut out, cache);
        }
        if let Some(bytes) = partials_bytes {
            gauge(
                &mut out,
                "meterbase_partials_bytes",
                "Bytes of per-file partial aggregates of billable metrics held now (--partials-bytes).",
                bytes,
            );
        }
        if let Some(store) = store {
            render_store(&mut out, store);
        }
        out
    }
}

impl QueryObserver for Metrics {
    fn started(&self, kind: QueryKind) {
        self.queries_running
            .with_label_values(&[kind.label()])
            .inc();
    }

    fn finished(&self, kind: QueryKind, elapsed: Duration, result: Result<(), &QueryError>) {
        let k = [kind.label()];
        self.queries_running.with_label_values(&k).dec();
        self.queries.with_label_values(&k).inc();
        self.query_seconds
            .with_label_values(&k)
            .observe(elapsed.as_secs_f64());
        self.query_seconds_total
            .with_label_values(&k)
            .inc_by(elapsed.as_secs_f64());
        self.query_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        match result {
            Ok(()) => {}
            Err(QueryError::Timeout(_) | QueryError::Cancelled) => {
                self.query_errors.with_label_values(&k).inc();
                self.queries_cancelled.with_label_values(&k).inc();
            }
            Err(_) => self.query_errors.with_label_values(&k).inc(),
        }
    }
}

fn legacy_counter(out: &mut String, name: &str, help: &str, v: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
    );
}

fn gauge(out: &mut String, name: &str, help: &str, v: u64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
}

/// The query layer's cache of data file bytes (`--cache-bytes`).
fn render_cache(out: &mut String, cache: CacheStats) {
    legacy_counter(
        out,
        "meterbase_read_cache_hits_total",
        "Blocks of data files queries read from the memory cache.",
        cache.hits,
    );
    legacy_counter(
        out,
        "meterbase_read_cache_misses_total",
        "Blocks of data files queries fetched from the object store.",
        cache.misses,
    );
    legacy_counter(
        out,
        "meterbase_read_cache_fetched_bytes_total",
        "Bytes the cache fetched from the object store.",
        cache.fetched_bytes,
    );
    gauge(
        out,
        "meterbase_read_cache_bytes",
        "Bytes of data files held in the cache now.",
        cache.held_bytes,
    );
    gauge(
        out,
        "meterbase_read_cache_capacity_bytes",
        "The cache's bound (--cache-bytes).",
        cache.capacity_bytes,
    );
}

/// Storage and log series, read from their own counters when scraped.
fn render_store(out: &mut String, store: &Store) {
    let (sync, synced_seq, poisoned) = store.wal_stats();
    legacy_counter(
        out,
        "meterbase_wal_syncs_total",
        "fdatasync calls of the write-ahead log (one per group commit).",
        sync.syncs,
    );
    legacy_counter(
        out,
        "meterbase_wal_sync_microseconds_total",
        "Time spent in write-ahead log syncs.",
        sync.sync_micros,
    );
    legacy_counter(
        out,
        "meterbase_wal_bytes_total",
        "Bytes written to the write-ahead log.",
        sync.bytes_written,
    );
    let name = "meterbase_wal_sync_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Write-ahead log sync latency.\n# TYPE {name} histogram"
    );
    let mut cumulative = 0;
    for (i, n) in sync.buckets.iter().enumerate() {
        cumulative += n;
        let le = match meterbase_wal::SYNC_BUCKETS_MICROS.get(i) {
            Some(us) => format!("{}", *us as f64 / 1e6),
            None => "+Inf".to_string(),
        };
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{name}_sum {}", sync.sync_micros as f64 / 1e6);
    let _ = writeln!(out, "{name}_count {}", sync.syncs);
    let s = store.stats();
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    for (name, help, v) in [
        (
            "meterbase_flushes_total",
            "Buffer chunks persisted to Parquet.",
            get(&s.flushes),
        ),
        (
            "meterbase_flush_failures_total",
            "Persist attempts that failed (retried with back-off).",
            get(&s.flush_failures),
        ),
        (
            "meterbase_files_written_total",
            "Parquet files written.",
            get(&s.files_written),
        ),
        (
            "meterbase_rows_persisted_total",
            "Rows persisted to Parquet.",
            get(&s.rows_persisted),
        ),
        (
            "meterbase_buffer_waits_total",
            "Writes that found the buffer full and waited for a persist to make room.",
            get(&s.buffer_waits),
        ),
        (
            "meterbase_compactions_total",
            "Compactions committed (one per table and pass that merged files).",
            get(&s.compactions),
        ),
        (
            "meterbase_compaction_read_bytes_total",
            "Bytes of the files compaction replaced.",
            get(&s.compaction_bytes_read),
        ),
        (
            "meterbase_compaction_written_bytes_total",
            "Bytes of the files compaction wrote.",
            get(&s.compaction_bytes_written),
        ),
    ] {
        legacy_counter(out, name, help, v);
    }
    gauge(
        out,
        "meterbase_buffer_bytes",
        "Bytes of events buffered in memory, not yet in Parquet.",
        store.buffered_bytes() as u64,
    );
    gauge(
        out,
        "meterbase_wal_synced_sequence",
        "Last durable write-ahead log sequence number.",
        synced_seq,
    );
    gauge(
        out,
        "meterbase_wal_poisoned",
        "1 when a failed write or sync stopped all writes until restart.",
        poisoned as u64,
    );
    let files: usize = store
        .tables()
        .iter()
        .map(|t| t.manifest().files.len())
        .sum();
    gauge(
        out,
        "meterbase_live_files",
        "Parquet files referenced by manifests.",
        files as u64,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_counted_by_kind_with_float_seconds() {
        let m = Metrics::new();
        m.started(QueryKind::Sql);
        m.finished(QueryKind::Sql, Duration::from_millis(1500), Ok(()));
        m.started(QueryKind::MetricUsage);
        m.finished(
            QueryKind::MetricUsage,
            Duration::from_millis(10),
            Err(&QueryError::Cancelled),
        );
        m.record_request("/sql", "POST", 200, Duration::from_millis(3));
        let text = m.render(None, None, None, None);
        assert!(
            text.contains("meterbase_query_seconds_total{kind=\"sql\"} 1.5"),
            "{text}"
        );
        assert!(text.contains("meterbase_queries_cancelled_total{kind=\"metric_usage\"} 1"));
        assert!(text.contains("meterbase_queries_running{kind=\"sql\"} 0"));
        assert!(
            text.contains(
                "meterbase_requests_total{method=\"POST\",route=\"/sql\",status=\"200\"} 1"
            )
        );
        assert!(text.contains("meterbase_build_info{version="));
        assert!(text.contains("meterbase_query_microseconds_total 1510000"));
    }
}
