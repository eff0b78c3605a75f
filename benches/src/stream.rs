//! Streams a generated data set to a server: events `0..n` of `generate::event` as NDJSON
//! bodies made as they are sent (nothing written to disk), on a few keep-alive connections,
//! a refused body (429/503) sent again after its `Retry-After`. This is how `make bench`
//! loads data sets whose text would not fit the disk (200M events are about 25 GB of NDJSON).
//! With `corrections`, only every `every`-th event (from `offset`) is sent, its value raised
//! by one: the same keys with a changed value, as a billing team's fixes would arrive.

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::BenchError;
use crate::generate::{event, ndjson_line};
use crate::load::read_response;

#[derive(Clone)]
pub struct StreamConfig {
    /// `host:port`.
    pub addr: String,
    pub api_key: String,
    pub slug: String,
    pub seed: u64,
    /// The data set's size: event `i` of `events`.
    pub events: u64,
    /// Events of the data set per body (fewer with `corrections`).
    pub batch: u64,
    pub connections: usize,
    /// `(every, offset)`: send only events with `i % every == offset`, each raised by 1.0.
    pub corrections: Option<(u64, u64)>,
}

pub struct StreamReport {
    pub events: u64,
    pub requests: u64,
    pub refused: u64,
    pub seconds: f64,
}

/// Body `b`: its NDJSON, and how many events it holds.
fn body(cfg: &StreamConfig, b: u64, out: &mut String) -> u64 {
    out.clear();
    let from = b * cfg.batch;
    let to = (from + cfg.batch).min(cfg.events);
    let mut n = 0;
    for i in from..to {
        let mut e = event(cfg.seed, i, cfg.events);
        if let Some((every, offset)) = cfg.corrections {
            if i % every != offset {
                continue;
            }
            e.cpu_hours = ((e.cpu_hours + 1.0) * 1000.0).round() / 1000.0;
        }
        ndjson_line(out, &e);
        n += 1;
    }
    n
}

fn connection(
    cfg: &StreamConfig,
    next_body: &AtomicU64,
    bodies: u64,
) -> Result<(u64, u64, u64), BenchError> {
    let stream = TcpStream::connect(&cfg.addr)?;
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::with_capacity(64 << 10, stream);
    let head = format!(
        "POST /usage/{} HTTP/1.1\r\nhost: {}\r\nx-api-key: {}\r\ncontent-type: application/x-ndjson\r\n",
        cfg.slug, cfg.addr, cfg.api_key
    );
    let (mut events, mut requests, mut refused) = (0, 0, 0);
    let mut text = String::new();
    let mut line = String::new();
    loop {
        // Bodies are taken in order by whichever connection is free, so events arrive
        // roughly in time order, as a live feed does.
        let b = next_body.fetch_add(1, Ordering::Relaxed);
        if b >= bodies {
            return Ok((events, requests, refused));
        }
        let n = body(cfg, b, &mut text);
        if n == 0 {
            continue;
        }
        loop {
            writer.write_all(head.as_bytes())?;
            writer.write_all(format!("content-length: {}\r\n\r\n", text.len()).as_bytes())?;
            writer.write_all(text.as_bytes())?;
            let (status, retry_after) = read_response(&mut reader, &mut line)?;
            requests += 1;
            match status {
                200 => break,
                429 | 503 => {
                    refused += 1;
                    std::thread::sleep(retry_after.unwrap_or(Duration::from_secs(1)));
                }
                other => {
                    return Err(BenchError::Other(format!(
                        "body {b} (events {}..): status {other}",
                        b * cfg.batch
                    )));
                }
            }
        }
        events += n;
    }
}

pub fn run(cfg: &StreamConfig) -> Result<StreamReport, BenchError> {
    let started = Instant::now();
    let bodies = cfg.events.div_ceil(cfg.batch.max(1));
    let next_body = AtomicU64::new(0);
    let totals = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..cfg.connections.max(1))
            .map(|_| scope.spawn(|| connection(cfg, &next_body, bodies)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| BenchError::Other("a streaming thread panicked".into()))?
            })
            .collect::<Result<Vec<_>, BenchError>>()
    })?;
    Ok(StreamReport {
        events: totals.iter().map(|t| t.0).sum(),
        requests: totals.iter().map(|t| t.1).sum(),
        refused: totals.iter().map(|t| t.2).sum(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(corrections: Option<(u64, u64)>) -> StreamConfig {
        StreamConfig {
            addr: String::new(),
            api_key: String::new(),
            slug: String::new(),
            seed: 42,
            events: 1000,
            batch: 300,
            connections: 1,
            corrections,
        }
    }

    #[test]
    fn bodies_cover_the_data_set_once_and_corrections_change_only_values() {
        let all = config(None);
        let mut text = String::new();
        let mut lines = Vec::new();
        for b in 0..all.events.div_ceil(all.batch) {
            body(&all, b, &mut text);
            lines.extend(text.lines().map(str::to_string));
        }
        assert_eq!(lines.len(), 1000);
        let mut whole = String::new();
        for i in 0..1000 {
            ndjson_line(&mut whole, &event(42, i, 1000));
        }
        assert_eq!(lines.join("\n") + "\n", whole);

        let fixes = config(Some((100, 37)));
        let mut fixed = Vec::new();
        for b in 0..4 {
            body(&fixes, b, &mut text);
            fixed.extend(text.lines().map(str::to_string));
        }
        assert_eq!(fixed.len(), 10);
        let value = |l: &str| -> serde_json::Value { serde_json::from_str(l).unwrap() };
        for (k, l) in fixed.iter().enumerate() {
            let (new, old) = (value(l), value(&lines[37 + 100 * k]));
            assert_eq!(new["timestamp"], old["timestamp"]);
            assert_eq!(new["customer_id"], old["customer_id"]);
            let change = new["data"]["cpu_hours_consumed"].as_f64().unwrap()
                - old["data"]["cpu_hours_consumed"].as_f64().unwrap();
            assert!((change - 1.0).abs() < 1e-9, "{l}");
        }
    }
}
