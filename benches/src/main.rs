//! `meterbase-bench`: the benchmark driver used by `make bench` (see `scripts/bench.py`).
//! Each subcommand prints one JSON object on stdout.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use meterbase_bench::generate::{self, EVENT_TYPE};
use meterbase_bench::load::{self, LoadConfig};
use meterbase_bench::stream::{self, StreamConfig};
use meterbase_bench::{BenchError, noop, proc_stats};
use meterbase_schema::{DecodeLimits, DecodeOutcome, EventDecoder, EventTypeDef, InputFormat};
use serde_json::json;

#[derive(Parser)]
#[command(name = "meterbase-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The server a load is aimed at.
#[derive(clap::Args)]
struct Target {
    /// `host:port`.
    #[arg(long)]
    addr: String,
    #[arg(long, default_value = "")]
    api_key: String,
    #[arg(long, default_value = "compute_events")]
    slug: String,
}

#[derive(Subcommand)]
enum Command {
    /// Write N events as NDJSON, CSV and sorted Parquet.
    Gen {
        #[arg(long)]
        events: u64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
        /// Only the Parquet file (what the peers read); load meterbase with `stream`.
        #[arg(long)]
        parquet_only: bool,
    },
    /// Send the N events `gen` makes to a server, generated on the fly, and wait for every
    /// acknowledgement.
    Stream {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        events: u64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Events of the data set per request.
        #[arg(long, default_value_t = 100_000)]
        batch: u64,
        #[arg(long, default_value_t = 2)]
        connections: usize,
        /// Send only every EVERY-th event (from --offset), its value raised by one.
        #[arg(long)]
        every: Option<u64>,
        #[arg(long, default_value_t = 0)]
        offset: u64,
        /// The server's pid, to report its peak RSS.
        #[arg(long)]
        server_pid: Option<u32>,
    },
    /// Run the no-op HTTP server (the ceiling for single-event POSTs).
    Noop {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
    /// Drive POST load at a server for a while.
    Ingest {
        #[command(flatten)]
        target: Target,
        /// Events per request: 1 sends one JSON object, more send NDJSON.
        #[arg(long, default_value_t = 1)]
        batch: u64,
        #[arg(long, default_value_t = 64)]
        connections: usize,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Requests per second in all; as fast as possible when absent.
        #[arg(long)]
        rate: Option<f64>,
        #[arg(long)]
        gzip: bool,
        /// The server's pid, to report its CPU seconds and peak RSS.
        #[arg(long)]
        server_pid: Option<u32>,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Round number of the first pass over the bodies. Each pass stamps its round into
        /// the timestamps' last three microsecond digits, so every event of a run is new;
        /// give runs against one server disjoint ranges (a pass is `200k` events batched,
        /// `20k` single) or their events replace each other's.
        #[arg(long, default_value_t = 0)]
        first_round: u64,
    },
    /// The exact float sum against DataFusion's, the same GROUP BY on in-memory batches.
    SumCost {
        #[arg(long, default_value_t = 20_000_000)]
        rows: usize,
        #[arg(long, default_value_t = 10_000)]
        groups: i64,
        #[arg(long, default_value_t = 2)]
        threads: usize,
        #[arg(long, default_value_t = 7)]
        runs: usize,
    },
    /// The decoder alone on one core: NDJSON bytes to Arrow batches.
    Parse {
        #[arg(long, default_value_t = 2_000_000)]
        events: u64,
        #[arg(long, default_value_t = 1000)]
        batch: u64,
    },
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = e.write_all(data);
    e.finish().unwrap_or_default()
}

fn decoder() -> Result<EventDecoder, BenchError> {
    let spec = serde_json::from_str(EVENT_TYPE).map_err(|e| BenchError::Other(e.to_string()))?;
    let def = EventTypeDef::from_spec(spec, "bench".into(), chrono::Utc::now())
        .map_err(|e| BenchError::Other(e.to_string()))?;
    EventDecoder::new(&def).map_err(|e| BenchError::Other(e.to_string()))
}

fn run(cli: Cli) -> Result<serde_json::Value, BenchError> {
    match cli.command {
        Command::Gen {
            events,
            seed,
            out,
            parquet_only,
        } => {
            let started = Instant::now();
            generate::write_all(&out, seed, events, !parquet_only)?;
            Ok(json!({"events": events, "seconds": started.elapsed().as_secs_f64()}))
        }
        Command::Stream {
            target:
                Target {
                    addr,
                    api_key,
                    slug,
                },
            events,
            seed,
            batch,
            connections,
            every,
            offset,
            server_pid,
        } => {
            let cpu_before = server_pid.map(proc_stats::cpu_seconds);
            let report = stream::run(&StreamConfig {
                addr,
                api_key,
                slug,
                seed,
                events,
                batch: batch.max(1),
                connections,
                corrections: every.map(|e| (e.max(1), offset)),
            })?;
            let cpu = match (server_pid, cpu_before) {
                (Some(pid), Some(before)) => proc_stats::cpu_seconds(pid) - before,
                _ => f64::NAN,
            };
            Ok(json!({
                "events": report.events,
                "requests": report.requests,
                "refused": report.refused,
                "seconds": report.seconds,
                "events_per_sec": report.events as f64 / report.seconds,
                "server_cpu_seconds": cpu,
                "server_peak_rss_bytes": server_pid.map(proc_stats::peak_rss_bytes),
            }))
        }
        Command::Noop { listen } => {
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(noop::serve(&listen))?;
            Ok(json!({}))
        }
        Command::Ingest {
            target:
                Target {
                    addr,
                    api_key,
                    slug,
                },
            batch,
            connections,
            seconds,
            rate,
            gzip: gz,
            server_pid,
            seed,
            first_round,
        } => {
            // Enough distinct bodies that the server never sees a hot repeat. Plain bodies
            // get fresh keys on every pass (see `first_round`); gzip bodies cannot be
            // restamped cheaply, so their keys repeat (replacements).
            let bodies_n: u64 = if batch == 1 {
                20_000
            } else {
                (200_000 / batch).max(64)
            };
            let total = bodies_n * batch;
            let bodies: Vec<Vec<u8>> = (0..bodies_n)
                .map(|b| {
                    let body = generate::ndjson_body(seed, b * batch, (b + 1) * batch, total);
                    let body = if batch == 1 {
                        body.trim_end().to_string()
                    } else {
                        body
                    };
                    if gz {
                        gzip(body.as_bytes())
                    } else {
                        body.into_bytes()
                    }
                })
                .collect();
            let cfg = LoadConfig {
                addr,
                path: format!("/usage/{slug}"),
                api_key,
                content_type: if batch == 1 {
                    "application/json".into()
                } else {
                    "application/x-ndjson".into()
                },
                gzip: gz,
                bodies: Arc::new(bodies),
                events_per_body: batch,
                connections,
                duration: Duration::from_secs(seconds),
                rate,
                first_round,
            };
            let cpu_before = server_pid.map(proc_stats::cpu_seconds);
            let report = load::run(&cfg)?;
            let cpu = match (server_pid, cpu_before) {
                (Some(pid), Some(before)) => proc_stats::cpu_seconds(pid) - before,
                _ => f64::NAN,
            };
            Ok(json!({
                "batch": batch,
                "connections": connections,
                "gzip": gz,
                "seconds": report.seconds,
                "requests": report.requests,
                "refused": report.refused,
                "events": report.events,
                "requests_per_sec": report.requests_per_sec(),
                "events_per_sec": report.events_per_sec(),
                "p50_ms": report.p50_us as f64 / 1000.0,
                "p99_ms": report.p99_us as f64 / 1000.0,
                "p999_ms": report.p999_us as f64 / 1000.0,
                "server_cpu_seconds": cpu,
                "server_peak_rss_bytes": server_pid.map(proc_stats::peak_rss_bytes),
            }))
        }
        Command::SumCost {
            rows,
            groups,
            threads,
            runs,
        } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads.max(1))
                .build()?;
            rt.block_on(meterbase_bench::sum_cost::measure(
                rows, groups, threads, runs,
            ))
        }
        Command::Parse { events, batch } => {
            let dec = decoder()?;
            let bodies: Vec<String> = (0..events / batch)
                .map(|b| generate::ndjson_body(42, b * batch, (b + 1) * batch, events))
                .collect();
            let bytes: usize = bodies.iter().map(String::len).sum();
            let limits = DecodeLimits {
                now: i64::MAX / 4,
                ..DecodeLimits::default()
            };
            let started = Instant::now();
            let mut rows = 0;
            for b in &bodies {
                match dec.decode(b.as_bytes(), InputFormat::Ndjson, limits) {
                    DecodeOutcome::Valid(batch) => rows += batch.num_rows(),
                    other => return Err(BenchError::Other(format!("{other:?}"))),
                }
            }
            let secs = started.elapsed().as_secs_f64();
            Ok(json!({
                "events": rows,
                "bytes": bytes,
                "seconds": secs,
                "events_per_sec": rows as f64 / secs,
                "mb_per_sec": bytes as f64 / secs / 1e6,
            }))
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("meterbase-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
