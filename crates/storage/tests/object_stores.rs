//! The storage layer against every object store it supports: the local filesystem always,
//! and a real S3-compatible server when `METERBASE_TEST_S3_URL` is set (`make test` starts
//! SeaweedFS on loopback and sets it; see `scripts/test-env.sh`).

use std::sync::Arc;

use futures::TryStreamExt;
use meterbase_catalog::StoredEventType;
use meterbase_schema::{DecodeLimits, DecodeOutcome, EventDecoder, EventTypeDef, InputFormat};
use meterbase_storage::{
    EventRange, ObjectStoreHandle, StorageConfig, Store, parse_object_store_url,
};
use object_store::path::Path;
use object_store::{PutMode, PutOptions, PutPayload};

fn def() -> EventTypeDef {
    let spec = serde_json::from_str(
        r#"{"name":"compute","api_slug":"compute","dataschema":{"data":{"cpu":"Float64"}}}"#,
    )
    .unwrap();
    EventTypeDef::from_spec(spec, "t1".into(), chrono::Utc::now()).unwrap()
}

fn batch(def: &EventTypeDef, from: i64, n: i64, v: f64) -> arrow::record_batch::RecordBatch {
    let body: String = (from..from + n)
        .map(|i| {
            format!(
                "{{\"customer_id\":\"c{}\",\"timestamp\":{},\"data\":{{\"cpu\":{v}}}}}\n",
                i % 3,
                1_735_689_600 + i * 60
            )
        })
        .collect();
    match EventDecoder::new(def).unwrap().decode(
        body.as_bytes(),
        InputFormat::Ndjson,
        DecodeLimits::default(),
    ) {
        DecodeOutcome::Valid(b) => b,
        other => panic!("{other:?}"),
    }
}

/// Every store this run can reach, each under a fresh prefix.
fn stores(tag: &str) -> Vec<(String, ObjectStoreHandle, tempfile::TempDir)> {
    let mut out = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    let local = parse_object_store_url(dir.path().join("store").to_str().unwrap()).unwrap();
    out.push(("local".to_string(), local, dir));
    match std::env::var("METERBASE_TEST_S3_URL") {
        Ok(base) => {
            let url = format!(
                "{}/{tag}-{}",
                base.trim_end_matches('/'),
                std::process::id()
            );
            let s3 = parse_object_store_url(&url).unwrap();
            out.push((url, s3, tempfile::tempdir().unwrap()));
        }
        Err(_) => {
            eprintln!("METERBASE_TEST_S3_URL is not set: S3 not tested here (make test sets it)")
        }
    }
    out
}

async fn open(handle: &ObjectStoreHandle, wal: &std::path::Path) -> Arc<Store> {
    let event_types = vec![StoredEventType {
        org_id: "org".into(),
        def: def(),
    }];
    let mut config = StorageConfig::new(wal);
    // Files compaction replaced are gone after a reopen only once their grace period has
    // passed; this suite checks the clean-up, not the wait.
    config.compaction.grace = std::time::Duration::ZERO;
    Store::open(handle.clone(), config, event_types)
        .await
        .unwrap()
}

async fn objects(handle: &ObjectStoreHandle) -> Vec<String> {
    let mut names: Vec<String> = handle
        .store
        .list(None)
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    names.sort();
    names
}

async fn live_rows(store: &Store) -> u64 {
    let table = store.table("org", "t1").unwrap();
    table.manifest().files.iter().map(|f| f.rows).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persist_upload_delete_compact_and_reopen_on_every_store() {
    for (name, handle, dir) in stores("lifecycle") {
        eprintln!("lifecycle on {name}");
        let wal = dir.path().join("wal");
        let store = open(&handle, &wal).await;
        let table = store.table("org", "t1").unwrap();
        let d = def();
        store.append(&table, batch(&d, 0, 300, 1.0)).await.unwrap();
        assert!(store.flush_table(&table).await.unwrap() >= 1, "{name}");
        store.append(&table, batch(&d, 0, 100, 2.0)).await.unwrap();
        store.flush_table(&table).await.unwrap();
        // A staged upload of two chunks, published in one commit.
        let mut up = store.begin_upload(&table);
        store
            .stage(&mut up, batch(&d, 1000, 50, 3.0))
            .await
            .unwrap();
        store
            .stage(&mut up, batch(&d, 1050, 50, 3.0))
            .await
            .unwrap();
        assert_eq!(store.commit_upload(up).await.unwrap().rows, 100, "{name}");
        // An aborted one leaves nothing behind.
        let mut up = store.begin_upload(&table);
        store
            .stage(&mut up, batch(&d, 5000, 50, 9.0))
            .await
            .unwrap();
        store.abort_upload(up).await;
        store
            .delete(
                &table,
                EventRange {
                    customer_id: Some("c0".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        store.flush_table(&table).await.unwrap();
        let manifest = table.manifest();
        assert_eq!(manifest.tombstones.len(), 1, "{name}");
        assert_eq!(live_rows(&store).await, 500, "{name}");
        let stats = store
            .compact_table(&table, meterbase_storage::CompactionMode::Full)
            .await
            .unwrap();
        assert!(stats.files_in >= 2, "{name}: {stats:?}");
        assert_eq!(stats.rows_in, stats.rows_out, "{name}: history is kept");
        let before = table.manifest();
        drop(table);
        drop(store);
        // Reopen: the same manifest, and exactly the listed files (plus manifests) exist.
        let store = open(&handle, &wal).await;
        let table = store.table("org", "t1").unwrap();
        let after = table.manifest();
        assert_eq!(after.files, before.files, "{name}");
        assert_eq!(after.tombstones, before.tombstones, "{name}");
        let data: Vec<String> = objects(&handle)
            .await
            .into_iter()
            .filter(|o| o.ends_with(".parquet"))
            .collect();
        let mut listed: Vec<String> = after.files.iter().map(|f| f.path.clone()).collect();
        listed.sort();
        assert_eq!(data, listed, "{name}");
        // Every listed file reads back and matches its checksum.
        for f in &after.files {
            let bytes = handle
                .get_bytes(&Path::from(f.path.as_str()))
                .await
                .unwrap();
            f.verify(&bytes).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_creates_have_exactly_one_winner() {
    for (name, handle, _dir) in stores("create") {
        for round in 0..20 {
            let path = Path::from(format!("race/{round}.json"));
            let attempts = (0..4).map(|i| {
                let store = handle.store.clone();
                let path = path.clone();
                tokio::spawn(async move {
                    let opts = PutOptions {
                        mode: PutMode::Create,
                        ..Default::default()
                    };
                    store
                        .put_opts(&path, PutPayload::from(format!("writer {i}")), opts)
                        .await
                })
            });
            let mut won = 0;
            for a in attempts {
                match a.await.unwrap() {
                    Ok(_) => won += 1,
                    Err(object_store::Error::AlreadyExists { .. }) => {}
                    Err(e) => panic!("{name}: {e}"),
                }
            }
            assert_eq!(won, 1, "{name}: round {round}");
        }
    }
}
