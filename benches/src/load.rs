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
    /// Round stamped into the first pass over `bodies` (ignored for gzip bodies).
    pub first_round: u64,
}

/// Offsets of the last three digits of every `"timestamp":"…ffffffZ"` in `request`.
fn stamp_offsets(request: &[u8]) -> Vec<usize> {
    const KEY: &[u8] = b"\"timestamp\":\"";
    // YYYY-MM-DDTHH:MM:SS.fff then the three digits this rewrites.
    const DIGITS_AT: usize = 23;
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(p) = request[at..].windows(KEY.len()).position(|w| w == KEY) {
        let digits = at + p + KEY.len() + DIGITS_AT;
        if request.get(digits + 3) == Some(&b'Z') {
            out.push(digits);
        }
        at = digits;
    }
    out
}

/// Writes `round % 1000` into the stamped digits: the generator's timestamps are whole
/// milliseconds, so each round's keys differ from every other round's.
fn stamp(request: &mut [u8], offsets: &[usize], round: u64) {
    let r = (round % 1000) as u8;
    let digits = [b'0' + r / 100, b'0' + r / 10 % 10, b'0' + r % 10];
    for &o in offsets {
        request[o..o + 3].copy_from_slice(&digits);
    }
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

/// The status and, for a refusal, how long the server asked the client to wait.
pub(crate) fn read_response(
    r: &mut BufReader<TcpStream>,
    line: &mut String,
) -> Result<(u16, Option<Duration>), BenchError> {
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
    let mut retry_after = None;
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
        } else if let Some((k, v)) = l.split_once(':')
            && k.eq_ignore_ascii_case("retry-after")
        {
            retry_after = v.trim().parse().ok().map(Duration::from_secs);
        }
    }
    let mut body = vec![0u8; length];
    r.read_exact(&mut body)?;
    Ok((status, retry_after))
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
    let mut requests: Vec<Vec<u8>> = cfg
        .bodies
        .iter()
        .map(|b| {
            let mut r = format!("{head}content-length: {}\r\n\r\n", b.len()).into_bytes();
            r.extend_from_slice(b);
            r
        })
        .collect();
    let offsets: Vec<Vec<usize>> = if cfg.gzip {
        vec![Vec::new(); requests.len()]
    } else {
        requests.iter().map(|r| stamp_offsets(r)).collect()
    };
    let mut stamped = vec![u64::MAX; requests.len()];
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
        let k = i % requests.len();
        let round = cfg.first_round + (i / requests.len()) as u64;
        if stamped[k] != round {
            stamp(&mut requests[k], &offsets[k], round);
            stamped[k] = round;
        }
        let req = &requests[k];
        i += cfg.connections;
        let started = Instant::now();
        writer.write_all(req)?;
        let (status, retry_after) = read_response(&mut reader, &mut line)?;
        let us = started.elapsed().as_micros().min(u32::MAX as u128) as u32;
        if status == 200 {
            latencies.push(us);
        } else {
            refused += 1;
            // As a well-behaved client does: a refused request waits as told, instead of
            // hammering a server that is catching up.
            if let Some(wait) = retry_after {
                std::thread::sleep(wait.min(deadline.saturating_duration_since(Instant::now())));
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_rounds_into_every_timestamp() {
        let mut body = crate::generate::ndjson_body(1, 0, 5, 5).into_bytes();
        let offsets = stamp_offsets(&body);
        assert_eq!(offsets.len(), 5);
        stamp(&mut body, &offsets, 1042);
        let text = String::from_utf8(body).unwrap();
        assert_eq!(text.matches("042Z\"").count(), 5, "{text}");
    }
}
