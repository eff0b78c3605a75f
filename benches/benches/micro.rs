//! Micro-benchmarks of the hot paths: the event decoder, a write-ahead log group commit, and
//! a buffer chunk persisted to Parquet. `make test` runs each once (test mode) so they never
//! rot; `make bench` measures them.

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use meterbase_bench::generate::{self, EVENT_TYPE};
use meterbase_catalog::StoredEventType;
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
    let body = generate::ndjson_body(1, 0, 1000, 1000);
    let mut g = c.benchmark_group("decoder");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("ndjson_1000_events", |b| {
        b.iter(
            || match dec.decode(body.as_bytes(), InputFormat::Ndjson, limits()) {
                DecodeOutcome::Valid(batch) => batch.num_rows(),
                _ => 0,
            },
        )
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
    let big = batch(100_000);
    g.throughput(Throughput::Elements(100_000));
    g.sample_size(10);
    g.bench_function("buffer_to_parquet_100k_events", |b| {
        b.iter(|| {
            rt.block_on(store.append(&table, big.clone()))
                .expect("append");
            rt.block_on(store.flush_table(&table)).expect("flush")
        })
    });
    g.finish();
}

criterion_group!(benches, decode, store_ops);
criterion_main!(benches);
