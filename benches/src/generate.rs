//! Deterministic usage events for the seed's `compute_events` schema: 10,000 customers with a
//! skewed (zipf-like) share of events, 8 regions, 90 days, float CPU hours. Event `i` of a
//! run is a pure function of (seed, i), so any slice can be made on any thread, and
//! timestamps rise with `i` (every key is unique: one event per microsecond slot).

use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Float64Builder, StringBuilder, TimestampMicrosecondBuilder};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::BenchError;

pub const CUSTOMERS: u64 = 10_000;
pub const REGIONS: [&str; 8] = [
    "us-east-1",
    "us-west-2",
    "eu-west-1",
    "eu-central-1",
    "ap-south-1",
    "ap-northeast-1",
    "sa-east-1",
    "ca-central-1",
];
/// 2025-01-01T00:00:00Z.
pub const START_MICROS: i64 = 1_735_689_600_000_000;
pub const SPAN_MICROS: i64 = 90 * 86_400 * 1_000_000;

/// The event type definition the generated events fit (the seed's example).
pub const EVENT_TYPE: &str = include_str!("../event_type.json");

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub customer: u64,
    pub timestamp_micros: i64,
    pub cpu_hours: f64,
    pub region: &'static str,
}

/// Event `i` of `n`.
pub fn event(seed: u64, i: u64, n: u64) -> Event {
    let mut rng = SmallRng::seed_from_u64(seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    // CUSTOMERS^u - 1 for uniform u: customer 0 gets the most events, the tail the fewest.
    let u: f64 = rng.random();
    let customer = ((CUSTOMERS as f64).powf(u) - 1.0).floor() as u64 % CUSTOMERS;
    let timestamp_micros =
        START_MICROS + ((i as i128 * SPAN_MICROS as i128) / n.max(1) as i128) as i64;
    // Exponential with mean 2.5 h, to the millihour.
    let x: f64 = rng.random::<f64>().max(1e-12);
    let cpu_hours = ((-x.ln() * 2.5) * 1000.0).round() / 1000.0;
    let region = REGIONS[rng.random_range(0..REGIONS.len())];
    Event {
        customer,
        timestamp_micros,
        cpu_hours,
        region,
    }
}

pub fn customer_id(c: u64) -> String {
    format!("cus_{c:05}")
}

fn rfc3339(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
        .unwrap_or_default()
}

/// One NDJSON line (with its newline) for `e`.
pub fn ndjson_line(out: &mut String, e: &Event) {
    let _ = writeln!(
        out,
        r#"{{"customer_id":"{}","timestamp":"{}","data":{{"cpu_hours_consumed":{},"region":"{}"}}}}"#,
        customer_id(e.customer),
        rfc3339(e.timestamp_micros),
        e.cpu_hours,
        e.region
    );
}

/// Events `from..to` of `n` as one NDJSON body.
pub fn ndjson_body(seed: u64, from: u64, to: u64, n: u64) -> String {
    let mut s = String::with_capacity(((to - from) * 120) as usize);
    for i in from..to {
        ndjson_line(&mut s, &event(seed, i, n));
    }
    s
}

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("customer_id", DataType::Utf8, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("cpu_hours_consumed", DataType::Float64, false),
        Field::new("region", DataType::Utf8, false),
    ]))
}

/// Writes `n` events as `events.parquet` (sorted by time, zstd) under `dir`, one million at
/// a time, and with `text` also as `events.ndjson` and `events.csv`.
pub fn write_all(dir: &Path, seed: u64, n: u64, text: bool) -> Result<(), BenchError> {
    std::fs::create_dir_all(dir)?;
    let text_file = |name: &str| -> Result<Option<std::io::BufWriter<std::fs::File>>, BenchError> {
        Ok(match text {
            true => Some(std::io::BufWriter::with_capacity(
                1 << 20,
                std::fs::File::create(dir.join(name))?,
            )),
            false => None,
        })
    };
    let mut nd = text_file("events.ndjson")?;
    let mut csv = text_file("events.csv")?;
    if let Some(csv) = &mut csv {
        writeln!(csv, "customer_id,timestamp,cpu_hours_consumed,region")?;
    }
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .build();
    let mut pq = ArrowWriter::try_new(
        std::fs::File::create(dir.join("events.parquet"))?,
        schema(),
        Some(props),
    )?;
    let chunk = 1_000_000u64;
    let mut from = 0;
    while from < n {
        let to = (from + chunk).min(n);
        let mut c = StringBuilder::new();
        let mut t = TimestampMicrosecondBuilder::new().with_timezone("UTC");
        let mut v = Float64Builder::new();
        let mut r = StringBuilder::new();
        let mut line = String::with_capacity(160);
        for i in from..to {
            let e = event(seed, i, n);
            let id = customer_id(e.customer);
            if let (Some(nd), Some(csv)) = (&mut nd, &mut csv) {
                line.clear();
                ndjson_line(&mut line, &e);
                nd.write_all(line.as_bytes())?;
                let ts = rfc3339(e.timestamp_micros);
                writeln!(csv, "{id},{ts},{},{}", e.cpu_hours, e.region)?;
            }
            c.append_value(&id);
            t.append_value(e.timestamp_micros);
            v.append_value(e.cpu_hours);
            r.append_value(e.region);
        }
        let batch = RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(c.finish()),
                Arc::new(t.finish()),
                Arc::new(v.finish()),
                Arc::new(r.finish()),
            ],
        )?;
        pq.write(&batch)?;
        from = to;
    }
    pq.close()?;
    for file in [nd, csv].iter_mut().flatten() {
        file.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_sorted_and_skewed() {
        assert_eq!(event(7, 123, 1000), event(7, 123, 1000));
        let n = 20_000;
        let events: Vec<Event> = (0..n).map(|i| event(7, i, n)).collect();
        assert!(
            events
                .windows(2)
                .all(|w| w[0].timestamp_micros < w[1].timestamp_micros)
        );
        let top = events.iter().filter(|e| e.customer < 100).count();
        assert!(
            top > events.len() / 3,
            "the first 1% of customers get a big share"
        );
        assert!(
            events
                .iter()
                .all(|e| e.cpu_hours >= 0.0 && e.cpu_hours.is_finite())
        );
        let body = ndjson_body(7, 0, 3, n);
        assert_eq!(body.lines().count(), 3);
        assert!(body.starts_with(r#"{"customer_id":"cus_"#));
    }
}
