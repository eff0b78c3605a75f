//! `meterbase reconcile`: compares a CSV, NDJSON, Arrow or Parquet file (read as `import`
//! reads it) with what
//! the server holds. Per customer and UTC day or hour it computes the count, numeric sums and
//! digest of the file's events (the last event of each unique key, as the server keeps),
//! asks the server's `GET /usage/{slug}/reconcile` for the file's time range, and for every
//! bucket whose digests differ lists the server's events of that bucket to name the events
//! missing from the server, extra on it, and different.
//!
//! Memory grows with the file's distinct events (each is held with its canonical values to
//! be named in the report).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Cursor;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::TimestampMicrosecondType;
use arrow::record_batch::RecordBatch;
use meterbase_schema::digest::{DIGEST_ALGORITHM, EventDigester, digest_hex};
use meterbase_schema::scalar::{format_decimal, parse_decimal};
use meterbase_schema::timestamp::{MICROS_PER_SECOND, format_micros};
use meterbase_schema::{
    BaseType, CsvOptions, CsvStream, CsvStreamError, DecodeLimits, DecodeOutcome, EventDecoder,
    EventError, EventTypeDef, InputFormat, decode_arrow_stream,
};
use serde_json::Value;

use crate::args::{Source, Target};
use crate::import::{Batch, Format, columnar_batches, csv_batches, ndjson_batches, open};

#[derive(clap::Args)]
pub struct ReconcileArgs {
    #[command(flatten)]
    target: Target,
    /// Bucket size: UTC days or hours of the event timestamp.
    #[arg(long, default_value = "day", value_parser = ["day", "hour"])]
    by: String,
    /// Example events named per kind of difference and bucket.
    #[arg(long, default_value_t = 5)]
    examples: usize,
    /// The file to compare, read as `import` reads it.
    #[command(flatten)]
    source: Source,
}

/// How the comparison ended, for the exit code.
pub enum Outcome {
    Same(String),
    Differs(String),
}

/// One event of the file or of the server, as the report names it.
#[derive(Clone)]
struct Event {
    hash: u64,
    /// (name, canonical text), nulls left out.
    values: Vec<(String, String)>,
}

type BucketId = (String, i64);

#[derive(Default)]
struct Tally {
    count: u64,
    digest: u64,
    /// In definition order, as the server lists them.
    sums: Vec<(String, Sum)>,
}

#[derive(Clone, Copy)]
enum Sum {
    Integer(i128),
    Decimal(i128, i8),
    Float(f64),
}

impl Sum {
    fn text(self) -> String {
        match self {
            Sum::Integer(v) => v.to_string(),
            Sum::Decimal(v, s) => format_decimal(v, s),
            // As the server's JSON writes it, so equal sums read equal.
            Sum::Float(v) => {
                serde_json::Number::from_f64(v).map_or(v.to_string(), |n| n.to_string())
            }
        }
    }
}

/// What is read from one event type: its decoder and digest, numeric fields, unique key.
struct Reader {
    decoder: EventDecoder,
    digester: EventDigester,
    unique_key: Vec<String>,
    bucket_micros: i64,
}

impl Reader {
    fn new(def: &EventTypeDef, by: &str) -> Result<Reader, String> {
        let decoder = EventDecoder::new(def)
            .map_err(|e| format!("the server's definition of {}: {e}", def.api_slug))?;
        let digester = EventDigester::new(decoder.fields());
        Ok(Reader {
            digester,
            decoder,
            unique_key: def.unique_key.clone(),
            bucket_micros: if by == "hour" { 3600 } else { 86_400 } * MICROS_PER_SECOND,
        })
    }

    fn limits() -> DecodeLimits {
        // No refusal of future events: the server judged those when it took them.
        DecodeLimits {
            max_events: usize::MAX,
            max_errors: 20,
            ..DecodeLimits::default()
        }
    }

    /// (unique key text, bucket, event) of every row.
    fn events(&self, batch: &RecordBatch) -> Result<Vec<(String, BucketId, Event)>, String> {
        let columns = self
            .digester
            .normalize(batch.columns())
            .map_err(|e| e.to_string())?;
        let hashes = self
            .digester
            .row_hashes(&columns)
            .map_err(|e| e.to_string())?;
        let ts = columns[1]
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or("the decoder's timestamp column is not a timestamp")?;
        let customers = columns[0]
            .as_string_opt::<i32>()
            .ok_or("the decoder's customer_id column is not text")?;
        let mut out = Vec::with_capacity(batch.num_rows());
        for (row, hash) in hashes.into_iter().enumerate() {
            let values = self
                .digester
                .row_values(&columns, row)
                .map_err(|e| e.to_string())?;
            // Each key part framed by its length, so no two keys write the same text.
            let key = self
                .unique_key
                .iter()
                .map(|k| match values.iter().find(|(n, _)| n == k) {
                    Some((_, v)) => format!("{}:{v}", v.len()),
                    None => "-".to_string(),
                })
                .collect::<Vec<_>>()
                .join(",");
            let t = ts.value(row);
            let bucket = (
                customers.value(row).to_string(),
                t - t.rem_euclid(self.bucket_micros),
            );
            out.push((key, bucket, Event { hash, values }));
        }
        Ok(out)
    }

    fn sums(&self, events: &[&Event]) -> Vec<(String, Sum)> {
        let mut sums = Vec::new();
        for (name, ty) in self.decoder.fields() {
            let zero = match ty.base {
                BaseType::Int8
                | BaseType::Int16
                | BaseType::Int32
                | BaseType::Int64
                | BaseType::UInt8
                | BaseType::UInt16
                | BaseType::UInt32
                | BaseType::UInt64 => Sum::Integer(0),
                BaseType::Decimal { scale, .. } => Sum::Decimal(0, scale),
                BaseType::Float32 | BaseType::Float64 => Sum::Float(0.0),
                _ => continue,
            };
            let mut acc = zero;
            for e in events {
                let Some((_, text)) = e.values.iter().find(|(n, _)| n == name) else {
                    continue;
                };
                // Canonical texts read back exactly: integers, plain decimals, and floats
                // in their shortest round-trip form.
                acc = match acc {
                    Sum::Integer(a) => Sum::Integer(a + text.parse::<i128>().unwrap_or(0)),
                    Sum::Decimal(a, s) => {
                        Sum::Decimal(a + parse_decimal(text, 38, s).unwrap_or(0), s)
                    }
                    Sum::Float(a) => Sum::Float(a + text.parse::<f64>().unwrap_or(0.0)),
                };
            }
            sums.push((name.clone(), acc));
        }
        sums
    }
}

fn get_json(agent: &ureq::Agent, url: &str, key: &str) -> Result<Value, String> {
    let mut resp = agent
        .get(url)
        .header("x-api-key", key)
        .call()
        .map_err(|e| format!("cannot reach the server: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_vec()
        .map_err(|e| format!("reading the server's answer: {e}"))?;
    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
    if status != 200 {
        return Err(format!(
            "{url}: {status} {}: {}",
            v["title"].as_str().unwrap_or(""),
            v["detail"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned())
        ));
    }
    Ok(v)
}

fn query(pairs: &[(&str, &str)]) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        q.append_pair(k, v);
    }
    q.finish()
}

fn decode_errors(errors: &[EventError], batch: &Batch, format: Format) -> String {
    let mut text = String::from("the file holds events the server would refuse:");
    for e in errors {
        let at = match e.line {
            Some(l) => format!("line {}", batch.file_line(format, l as u64)),
            None => "body".into(),
        };
        text.push_str(&format!("\n  {at}, {}: {}", e.pointer, e.message));
    }
    text
}

/// The file's events, the last of each unique key kept.
fn read_file(
    a: &ReconcileArgs,
    reader: &Reader,
) -> Result<HashMap<String, (BucketId, Event)>, String> {
    let format = a.source.checked_format()?;
    let mut field_columns = Vec::new();
    for m in &a.source.map {
        let (field, column) = m
            .split_once('=')
            .ok_or_else(|| format!("--map {m:?}: use FIELD=COLUMN"))?;
        field_columns.push((field.to_string(), column.to_string()));
    }
    let options = CsvOptions {
        field_columns,
        ignore_unknown_columns: a.source.ignore_unknown_columns,
    };
    let read = Arc::new(AtomicU64::new(0));
    let batches: Box<dyn Iterator<Item = Result<Batch, String>>> = match format {
        Format::Csv => Box::new(csv_batches(open(&a.source.file, read)?, 50_000)),
        Format::Ndjson => Box::new(ndjson_batches(open(&a.source.file, read)?, 50_000)),
        Format::Arrow | Format::Parquet => columnar_batches(&a.source.file, format, read, 50_000)?,
    };
    let mut events = HashMap::new();
    let limits = Reader::limits();
    for batch in batches {
        let batch = batch?;
        let mut decoded = Vec::new();
        match format {
            Format::Ndjson => {
                decoded.push(
                    reader
                        .decoder
                        .decode(&batch.body, InputFormat::Ndjson, limits),
                );
            }
            Format::Arrow | Format::Parquet => {
                decoded.push(decode_arrow_stream(
                    &reader.decoder,
                    &batch.body,
                    &options,
                    limits,
                ));
            }
            Format::Csv => {
                let mut stream = match CsvStream::open(
                    &reader.decoder,
                    Cursor::new(&batch.body[..]),
                    &options,
                ) {
                    Ok(s) => s,
                    Err(CsvStreamError::Header(e)) => {
                        return Err(decode_errors(&e, &batch, format));
                    }
                    Err(CsvStreamError::Io(e)) => return Err(format!("reading the file: {e}")),
                };
                while let Some(chunk) = stream
                    .next_chunk(&reader.decoder, usize::MAX, limits)
                    .map_err(|e| format!("reading the file: {e}"))?
                {
                    decoded.push(chunk.outcome);
                }
            }
        }
        for outcome in decoded {
            match outcome {
                DecodeOutcome::Valid(b) => {
                    for (key, bucket, event) in reader.events(&b)? {
                        events.insert(key, (bucket, event));
                    }
                }
                DecodeOutcome::Invalid { errors, .. } => {
                    return Err(decode_errors(&errors, &batch, format));
                }
                DecodeOutcome::TooManyEvents { .. } => {
                    return Err("the file's batch is too large to decode".into());
                }
            }
        }
    }
    Ok(events)
}

/// Every event the server lists for one bucket, by unique key.
fn server_events(
    agent: &ureq::Agent,
    base: &str,
    a: &ReconcileArgs,
    reader: &Reader,
    bucket: &BucketId,
) -> Result<HashMap<String, Event>, String> {
    let from = format_micros(bucket.1);
    let to = format_micros(bucket.1 + reader.bucket_micros);
    let mut out = HashMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut pairs = vec![
            ("customer_id", bucket.0.as_str()),
            ("from", from.as_str()),
            ("to", to.as_str()),
            ("limit", "1000"),
        ];
        if let Some(c) = &cursor {
            pairs.push(("cursor", c.as_str()));
        }
        let page = get_json(
            agent,
            &format!("{base}/usage/{}/events?{}", a.target.event, query(&pairs)),
            &a.target.api_key,
        )?;
        // The listing's items are events as sent, plus their arrival time.
        let mut ndjson = Vec::new();
        for item in page["items"].as_array().into_iter().flatten() {
            let mut item = item.clone();
            if let Some(m) = item.as_object_mut() {
                m.remove("ingested_at");
            }
            ndjson.extend_from_slice(item.to_string().as_bytes());
            ndjson.push(b'\n');
        }
        match reader
            .decoder
            .decode(&ndjson, InputFormat::Ndjson, Reader::limits())
        {
            DecodeOutcome::Valid(b) => {
                for (key, _, event) in reader.events(&b)? {
                    out.insert(key, event);
                }
            }
            DecodeOutcome::Invalid { errors, .. } => {
                return Err(format!(
                    "the server's events could not be read back: {}",
                    errors
                        .first()
                        .map(|e| e.message.as_str())
                        .unwrap_or("invalid")
                ));
            }
            DecodeOutcome::TooManyEvents { .. } => return Err("too many events in a page".into()),
        }
        cursor = page["next_cursor"].as_str().map(str::to_string);
        if cursor.is_none() {
            return Ok(out);
        }
    }
}

fn describe(e: &Event) -> String {
    e.values
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The fields whose values differ, as `name: file X, server Y`.
fn differences(local: &Event, server: &Event) -> String {
    let names: BTreeSet<&String> = local
        .values
        .iter()
        .chain(&server.values)
        .map(|(n, _)| n)
        .collect();
    let value = |e: &Event, n: &String| {
        e.values
            .iter()
            .find(|(m, _)| m == n)
            .map_or("null".to_string(), |(_, v)| v.clone())
    };
    names
        .into_iter()
        .filter(|n| value(local, n) != value(server, n))
        .map(|n| format!("{n}: file {}, server {}", value(local, n), value(server, n)))
        .collect::<Vec<_>>()
        .join("; ")
}

fn bucket_label(start: i64, by: &str) -> String {
    let t = format_micros(start);
    if by == "day" {
        t[..10].to_string()
    } else {
        t[..13].to_string() + "h"
    }
}

/// Runs the comparison; the report, and whether anything differed.
pub fn run(a: ReconcileArgs) -> Result<Outcome, String> {
    let base = crate::client::base_url(&a.target.url)?;
    let agent = crate::client::agent(Some(Duration::from_secs(600)));
    let def_json = get_json(
        &agent,
        &format!("{base}/rawmetrics/{}", a.target.event),
        &a.target.api_key,
    )?;
    let def: EventTypeDef = serde_json::from_value(def_json)
        .map_err(|e| format!("unreadable event type definition: {e}"))?;
    let reader = Reader::new(&def, &a.by)?;
    let local = read_file(&a, &reader)?;
    let mut by_bucket: BTreeMap<BucketId, Vec<&String>> = BTreeMap::new();
    for (key, (bucket, _)) in &local {
        by_bucket.entry(bucket.clone()).or_default().push(key);
    }
    let (Some(first), Some(last)) = (
        by_bucket.keys().map(|b| b.1).min(),
        by_bucket.keys().map(|b| b.1).max(),
    ) else {
        return Err(format!("{} holds no events", a.source.file.display()));
    };
    let (from, to) = (
        format_micros(first),
        format_micros(last + reader.bucket_micros),
    );
    let answer = get_json(
        &agent,
        &format!(
            "{base}/usage/{}/reconcile?{}",
            a.target.event,
            query(&[("from", &from), ("to", &to), ("by", &a.by)])
        ),
        &a.target.api_key,
    )?;
    if answer["algorithm"].as_str() != Some(DIGEST_ALGORITHM) {
        return Err(format!(
            "the server digests with {}, this client with {DIGEST_ALGORITHM}: use matching versions",
            answer["algorithm"]
        ));
    }
    let mut remote: BTreeMap<BucketId, (u64, String, Value)> = BTreeMap::new();
    for b in answer["buckets"].as_array().into_iter().flatten() {
        let start = b["bucket_start"]
            .as_str()
            .and_then(|t| meterbase_schema::timestamp::parse_instant_utc(t).ok())
            .ok_or("the server's bucket_start is not an instant")?;
        remote.insert(
            (b["customer_id"].as_str().unwrap_or("").to_string(), start),
            (
                b["count"].as_u64().unwrap_or(0),
                b["digest"].as_str().unwrap_or("").to_string(),
                b["sums"].clone(),
            ),
        );
    }

    let mut report = format!(
        "reconcile {} by {} over [{from}, {to}) ({DIGEST_ALGORITHM}); file {}\n",
        a.target.event,
        a.by,
        a.source.file.display()
    );
    let buckets: BTreeSet<&BucketId> = by_bucket.keys().chain(remote.keys()).collect();
    let (mut same_buckets, mut differing_buckets) = (0u64, 0u64);
    let (mut matching, mut missing, mut extra, mut different) = (0u64, 0u64, 0u64, 0u64);
    for bucket in buckets {
        let label = format!("{} {}", bucket.0, bucket_label(bucket.1, &a.by));
        let mine: Vec<&Event> = by_bucket
            .get(bucket)
            .map(|keys| keys.iter().map(|k| &local[*k].1).collect())
            .unwrap_or_default();
        let tally = Tally {
            count: mine.len() as u64,
            digest: mine.iter().fold(0u64, |d, e| d.wrapping_add(e.hash)),
            sums: reader.sums(&mine),
        };
        let theirs = remote.get(bucket);
        let same =
            theirs.is_some_and(|(n, d, _)| *n == tally.count && *d == digest_hex(tally.digest));
        if same {
            same_buckets += 1;
            matching += tally.count;
            report.push_str(&format!(
                "  {label}  match    {} events, digest {}\n",
                tally.count,
                digest_hex(tally.digest)
            ));
            continue;
        }
        differing_buckets += 1;
        let server = server_events(&agent, &base, &a, &reader, bucket)?;
        let mut lines: Vec<String> = Vec::new();
        let (mut b_missing, mut b_extra, mut b_different) = (Vec::new(), Vec::new(), Vec::new());
        for key in by_bucket.get(bucket).into_iter().flatten() {
            let e = &local[*key].1;
            match server.get(*key) {
                None => b_missing.push(e),
                Some(s) if s.hash != e.hash => b_different.push((e, s)),
                Some(_) => matching += 1,
            }
        }
        for (key, s) in &server {
            if !local.contains_key(key) || local[key].0 != *bucket {
                b_extra.push(s);
            }
        }
        missing += b_missing.len() as u64;
        extra += b_extra.len() as u64;
        different += b_different.len() as u64;
        let (n, d, sums) =
            theirs
                .cloned()
                .unwrap_or((0, digest_hex(0), Value::Object(Default::default())));
        let local_sums = tally
            .sums
            .iter()
            .map(|(k, v)| format!("{k}={}", v.text()))
            .collect::<Vec<_>>()
            .join(" ");
        let server_sums = sums
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        format!("{k}={}", v.as_str().map_or(v.to_string(), str::to_string))
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        report.push_str(&format!(
            "  {label}  DIFFERS  file {} events (digest {}{}), server {n} (digest {d}{}): {} missing, {} extra, {} different\n",
            tally.count,
            digest_hex(tally.digest),
            if local_sums.is_empty() { String::new() } else { format!(", {local_sums}") },
            if server_sums.is_empty() { String::new() } else { format!(", {server_sums}") },
            b_missing.len(),
            b_extra.len(),
            b_different.len(),
        ));
        for e in b_missing.iter().take(a.examples) {
            lines.push(format!("missing    {}", describe(e)));
        }
        for e in b_extra.iter().take(a.examples) {
            lines.push(format!("extra      {}", describe(e)));
        }
        for (l, s) in b_different.iter().take(a.examples) {
            let who: Vec<String> = l
                .values
                .iter()
                .filter(|(n, _)| reader.unique_key.contains(n))
                .map(|(n, v)| format!("{n}={v}"))
                .collect();
            lines.push(format!(
                "different  {}: {}",
                who.join(" "),
                differences(l, s)
            ));
        }
        for l in lines {
            report.push_str(&format!("      {l}\n"));
        }
    }
    report.push_str(&format!(
        "{} buckets: {same_buckets} matching, {differing_buckets} differing; events: {matching} matching, {missing} missing on the server, {extra} extra on the server, {different} different",
        same_buckets + differing_buckets
    ));
    Ok(if differing_buckets == 0 {
        Outcome::Same(report)
    } else {
        Outcome::Differs(report)
    })
}
