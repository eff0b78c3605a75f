//! An HTTP/1.1 load generator: one blocking thread per connection, keep-alive, request bytes
//! rendered before the clock starts, a latency sample per request. Minimal on purpose: the
//! client must cost far less than the server it measures.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::BenchError;

#[derive(Clone)]
pub struct LoadConfig {
    /// `host:port`.
    pub addr: String,
    pub path: String,
    pub api_key: String,
    pub content_type: String,
    pub gzip: bool,
    /// Request bodies, used in turn; each holds `events_per_body` events.
    pub bodies: Arc<Vec<Vec<u8>>>,
    pub events_per_body: u64,
    pub connections: usize,
    pub duration: Duration,
    /// Requests per second for all connections together; `None` means as fast as possible.
    pub rate: Option<f64>,
}

#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub requests: u64,
    pub events: u64,
    pub refused: u64,
    pub seconds: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
}

impl LoadReport {
    pub fn requests_per_sec(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.seconds
    }
}

fn read_response(r: &mut BufReader<TcpStream>, line: &mut String) -> Result<u16, BenchError> {
    line.clear();
    if r.read_line(line)? == 0 {
        return Err(BenchError::Other("connection closed".into()));
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| BenchError::Other(format!("bad status line {line:?}")))?;
    let mut length = 0usize;
    loop {
        line.clear();
        r.read_line(line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    r.read_exact(&mut body)?;
    Ok(status)
}

fn connection(
    cfg: &LoadConfig,
    id: usize,
    deadline: Instant,
) -> Result<(Vec<u32>, u64), BenchError> {
    let stream = TcpStream::connect(&cfg.addr)?;
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::with_capacity(64 << 10, stream);
    let head = format!(
        "POST {} HTTP/1.1\r\nhost: {}\r\nx-api-key: {}\r\ncontent-type: {}\r\n{}",
        cfg.path,
        cfg.addr,
        cfg.api_key,
        cfg.content_type,
        if cfg.gzip {
            "content-encoding: gzip\r\n"
        } else {
            ""
        }
    );
    let requests: Vec<Vec<u8>> = cfg
        .bodies
        .iter()
        .map(|b| {
            let mut r = format!("{head}content-length: {}\r\n\r\n", b.len()).into_bytes();
            r.extend_from_slice(b);
            r
        })
        .collect();
    let interval = cfg
        .rate
        .map(|r| Duration::from_secs_f64(cfg.connections as f64 / r));
    let mut latencies = Vec::with_capacity(1 << 16);
    let mut refused = 0;
    let mut line = String::new();
    let mut next = Instant::now();
    let mut i = id;
    while Instant::now() < deadline {
        if let Some(iv) = interval {
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
            next += iv;
        }
        let req = &requests[i % requests.len()];
        i += cfg.connections;
        let started = Instant::now();
        writer.write_all(req)?;
        let status = read_response(&mut reader, &mut line)?;
        let us = started.elapsed().as_micros().min(u32::MAX as u128) as u32;
        if status == 200 {
            latencies.push(us);
        } else {
            refused += 1;
        }
    }
    Ok((latencies, refused))
}

pub fn run(cfg: &LoadConfig) -> Result<LoadReport, BenchError> {
    let started = Instant::now();
    let deadline = started + cfg.duration;
    let handles: Vec<_> = (0..cfg.connections)
        .map(|id| {
            let cfg = cfg.clone();
            std::thread::spawn(move || connection(&cfg, id, deadline))
        })
        .collect();
    let mut all: Vec<u32> = Vec::new();
    let mut refused = 0;
    for h in handles {
        let (l, r) = h
            .join()
            .map_err(|_| BenchError::Other("a load thread panicked".into()))??;
        all.extend(l);
        refused += r;
    }
    let seconds = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| -> u64 {
        if all.is_empty() {
            return 0;
        }
        all[((all.len() as f64 * p) as usize).min(all.len() - 1)] as u64
    };
    Ok(LoadReport {
        requests: all.len() as u64,
        events: all.len() as u64 * cfg.events_per_body,
        refused,
        seconds,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        p999_us: pct(0.999),
    })
}
