//! Micro-benchmarks of the hot paths: the event decoder (alone, and with the ingest receipt's
//! digest), a write-ahead log group commit, and a buffer chunk persisted to Parquet. `make test` runs each once (test mode) so they never
//! rot; `make bench` measures them.

use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use meterbase_bench::generate::{self, EVENT_TYPE};
use meterbase_catalog::StoredEventType;
use meterbase_schema::digest::EventDigester;
use meterbase_schema::{DecodeLimits, DecodeOutcome, EventDecoder, EventTypeDef, InputFormat};
use meterbase_storage::{StorageConfig, Store, parse_object_store_url};

fn def() -> EventTypeDef {
    let spec = serde_json::from_str(EVENT_TYPE).expect("event type");
    EventTypeDef::from_spec(spec, "bench".into(), chrono::Utc::now()).expect("definition")
}

fn limits() -> DecodeLimits {
    DecodeLimits {
        now: i64::MAX / 4,
        ..DecodeLimits::default()
    }
}

fn decode(c: &mut Criterion) {
    let dec = EventDecoder::new(&def()).expect("decoder");
    let rows = |body: &str, format| match dec.decode(body.as_bytes(), format, limits()) {
        DecodeOutcome::Valid(batch) => batch.num_rows(),
        _ => 0,
    };
    let body = generate::ndjson_body(1, 0, 1000, 1000);
    let mut g = c.benchmark_group("decoder");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("ndjson_1000_events", |b| {
        b.iter(|| rows(&body, InputFormat::Ndjson))
    });
    // The single-event POST: one JSON object, where building the batch's columns costs more
    // than parsing the event.
    let one = generate::ndjson_body(1, 0, 1, 1);
    g.throughput(Throughput::Elements(1));
    g.bench_function("json_1_event", |b| {
        b.iter(|| rows(one.trim_end(), InputFormat::Json))
    });
    g.finish();
}

/// What an ingest receipt adds to a request: the digest of the decoded batch.
fn receipt_digest(c: &mut Criterion) {
    let dec = EventDecoder::new(&def()).expect("decoder");
    let digest = |body: &str, format| match dec.decode(body.as_bytes(), format, limits()) {
        DecodeOutcome::Valid(batch) => EventDigester::new(dec.fields())
            .sum(batch.columns())
            .expect("digest"),
        _ => 0,
    };
    let body = generate::ndjson_body(1, 0, 1000, 1000);
    let one = generate::ndjson_body(1, 0, 1, 1);
    let mut g = c.benchmark_group("receipt");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("ndjson_1000_events_decode_and_digest", |b| {
        b.iter(|| digest(&body, InputFormat::Ndjson))
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("json_1_event_decode_and_digest", |b| {
        b.iter(|| digest(one.trim_end(), InputFormat::Json))
    });
    g.finish();
}

fn batch(n: u64) -> arrow::record_batch::RecordBatch {
    let dec = EventDecoder::new(&def()).expect("decoder");
    match dec.decode(
        generate::ndjson_body(1, 0, n, n).as_bytes(),
        InputFormat::Ndjson,
        limits(),
    ) {
        DecodeOutcome::Valid(b) => b,
        other => panic!("{other:?}"),
    }
}

fn store_ops(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let handle =
        parse_object_store_url(dir.path().join("store").to_str().expect("path")).expect("store");
    let store: Arc<Store> = rt
        .block_on(Store::open(
            handle,
            StorageConfig::new(dir.path().join("wal")),
            vec![StoredEventType {
                org_id: "org".into(),
                def: def(),
            }],
        ))
        .expect("open");
    let table = store.table("org", "bench").expect("table");
    let rows = batch(1000);
    let mut g = c.benchmark_group("storage");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("wal_append_sync_1000_events", |b| {
        b.iter(|| {
            rt.block_on(store.append(&table, rows.clone()))
                .expect("append")
        })
    });
    // A buffer as HTTP ingest leaves it, about one flush's worth: one batch per 1000-event
    // request, so the flush gathers rows from many batches into time order, then one file
    // per day of the 90. Only the flush is timed.
    const EVENTS: u64 = 1_000_000;
    let dec = EventDecoder::new(&def()).expect("decoder");
    let requests: Vec<_> = (0..EVENTS / 1000)
        .map(|i| {
            let body = generate::ndjson_body(1, i * 1000, (i + 1) * 1000, EVENTS);
            match dec.decode(body.as_bytes(), InputFormat::Ndjson, limits()) {
                DecodeOutcome::Valid(b) => b,
                other => panic!("{other:?}"),
            }
        })
        .collect();
    g.throughput(Throughput::Elements(EVENTS));
    g.sample_size(10);
    g.bench_function("buffer_to_parquet_1m_events", |b| {
        b.iter_batched(
            || {
                for r in &requests {
                    rt.block_on(store.append(&table, r.clone()))
                        .expect("append");
                }
            },
            |()| rt.block_on(store.flush_table(&table)).expect("flush"),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, decode, receipt_digest, store_ops);
criterion_main!(benches);
