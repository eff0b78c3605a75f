//! Golden fixtures of every persisted format, under `testdata/formats/`: today's code reads
//! each version ever written to the values pinned beside it, and writes the same input to
//! the same bytes (Parquet files carry their writer's version string, so for them the same
//! rows and the same layout: sort order, codecs, pages, bloom filters, metadata).
//!
//! `METERBASE_BLESS=1` writes a fixture that is missing and nothing else: an existing
//! fixture is never overwritten, so changing a format without a new version (and a new
//! fixture) fails here. See `testdata/formats/README.md`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use meterbase_schema::EventTypeDef;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::file::metadata::PageIndexPolicy;
use serde_json::{Value, json};

use crate::format::deletion_vector::DeletionVector;
use crate::format::manifest::{
    FileLayout, FileMeta, MANIFEST_FORMAT, Manifest, RetiredFile, Tombstone,
};
use crate::format::parquet::{DATA_FILE_FORMAT, Layout, encode_batches, read_file};
use crate::format::paths::TablePaths;
use crate::format::record::{EventRange, WalRecord};

fn root() -> PathBuf {
    // Read at run time: a build cache shared by two checkouts may run this test binary
    // compiled in the other one.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .join("../../testdata/formats")
}

fn blessing() -> bool {
    std::env::var_os("METERBASE_BLESS").is_some()
}

/// The pinned bytes at `rel`; when blessing and missing, `fresh` is written there first.
fn pinned(rel: &str, fresh: impl FnOnce() -> Vec<u8>) -> Vec<u8> {
    let path = root().join(rel);
    match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(_) if blessing() => {
            let bytes = fresh();
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
            eprintln!("blessed {}", path.display());
            bytes
        }
        Err(e) => panic!(
            "fixture {} is missing ({e}): a format changed without a new fixture? \
             Bump its version, then run with METERBASE_BLESS=1 (testdata/formats/README.md)",
            path.display()
        ),
    }
}

/// `value` equals the pinned JSON at `rel` (written when blessing and missing).
fn assert_pinned_json(rel: &str, value: &Value) {
    let bytes = pinned(rel, || {
        let mut b = serde_json::to_vec_pretty(value).unwrap();
        b.push(b'\n');
        b
    });
    let expected: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        &expected, value,
        "{rel}: what today's code reads differs from what is pinned"
    );
}

/// The data directory the pre-versioning build (commit 8606a31) wrote: catalog, log,
/// manifests and data files of one event type.
fn v0_data() -> PathBuf {
    root().join("v0-data")
}

fn v0_table_dir() -> PathBuf {
    v0_data().join("store/ad3b755a-98c6-41d2-8c34-f81124a54e37/golden")
}

fn golden_def() -> EventTypeDef {
    let catalog: Value =
        serde_json::from_slice(&std::fs::read(v0_data().join("catalog.json")).unwrap()).unwrap();
    serde_json::from_value(catalog["event_types"][0]["def"].clone()).unwrap()
}

fn golden_paths() -> TablePaths {
    TablePaths::new(
        "ad3b755a-98c6-41d2-8c34-f81124a54e37",
        "golden",
        "a5298066bd094dd084f2ae2b38a46d5c",
    )
}

/// Rows as JSON objects, every column named with its type, nulls explicit, instants as the
/// stored microseconds and decimals as text.
fn rows_json(batches: &[RecordBatch]) -> Value {
    let mut out = Vec::new();
    let mut types = serde_json::Map::new();
    for b in batches {
        let b = &exact_columns(b);
        for f in b.schema().fields() {
            types.insert(f.name().clone(), json!(f.data_type().to_string()));
        }
        let mut buf = Vec::new();
        let mut w = arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow::json::writer::JsonArray>(&mut buf);
        w.write(b).unwrap();
        w.finish().unwrap();
        drop(w);
        if let Value::Array(rows) = serde_json::from_slice(&buf).unwrap_or(Value::Array(vec![])) {
            out.extend(rows);
        }
    }
    json!({"columns": types, "rows": out})
}

fn exact_columns(batch: &RecordBatch) -> RecordBatch {
    use arrow::datatypes::{DataType, Field, Schema};
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
        let exact = match f.data_type() {
            DataType::Timestamp(..) => Some(DataType::Int64),
            // JSON numbers would round them through a float.
            DataType::Decimal128(..) => Some(DataType::Utf8),
            _ => None,
        };
        if let Some(exact) = exact {
            fields.push(Field::new(
                format!("{} ({})", f.name(), f.data_type()),
                exact.clone(),
                f.is_nullable(),
            ));
            columns.push(arrow::compute::cast(c, &exact).unwrap());
        } else {
            fields.push(f.as_ref().clone());
            columns.push(c.clone());
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
}

fn record_json(seq: u64, ingested_at: i64, record: &WalRecord) -> Value {
    match record {
        WalRecord::Events {
            org_id,
            type_id,
            schema_version,
            batch,
        } => json!({
            "seq": seq, "ingested_at": ingested_at, "kind": "events",
            "org_id": org_id, "type_id": type_id, "schema_version": schema_version,
            "batch": rows_json(std::slice::from_ref(batch)),
        }),
        WalRecord::Marker { org_id, type_id } => json!({
            "seq": seq, "ingested_at": ingested_at, "kind": "marker",
            "org_id": org_id, "type_id": type_id,
        }),
        WalRecord::Delete {
            org_id,
            type_id,
            range,
        } => json!({
            "seq": seq, "ingested_at": ingested_at, "kind": "delete",
            "org_id": org_id, "type_id": type_id,
            "customer_id": range.customer_id, "from": range.from, "to": range.to,
        }),
    }
}

/// Every record of the log in `dir`: sequence, arrival instant, payload.
fn replay_dir(dir: &Path) -> Vec<(u64, i64, Vec<u8>)> {
    let mut out = Vec::new();
    meterbase_wal::replay(
        meterbase_fs::real().as_ref(),
        dir,
        false,
        |seq, at, payload| {
            out.push((seq, at, payload.to_vec()));
            Ok(())
        },
    )
    .unwrap();
    out
}

/// A log written in the form builds before the compact one wrote (IPC for any size), framed
/// as the log frames records, so the fixture is a real segment.
fn ipc_only_segment() -> Vec<u8> {
    let def = golden_def();
    let rows = read_file(Bytes::from(
        std::fs::read(v0_table_dir().join(
            "date=2025-01-01/a5298066bd094dd084f2ae2b38a46d5c-00000000000000000001-00000000000000000005.parquet",
        ))
        .unwrap(),
    ))
    .unwrap();
    let input = strip_stamps(&rows[0].slice(0, 2));
    let paths = golden_paths();
    let one = WalRecord::encode_events_ipc(
        &paths.org_id,
        &paths.type_id,
        def.schema_version,
        &input.slice(0, 1),
    )
    .unwrap();
    let two = WalRecord::encode_events_ipc(&paths.org_id, &paths.type_id, 1, &input).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = meterbase_wal::WalConfig::new(dir.path());
    config.preallocate = false;
    struct Ignore;
    impl meterbase_wal::Apply<()> for Ignore {
        fn apply(&self, _: meterbase_wal::Ack, _: ()) {}
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut wal = meterbase_wal::Wal::start(config, 0, 0, Arc::new(Ignore)).unwrap();
    runtime.block_on(async {
        wal.append(one, ()).await.unwrap();
        wal.append(two, ()).await.unwrap();
    });
    wal.shutdown();
    std::fs::read(dir.path().join("00000000000000000001.wal")).unwrap()
}

/// Input rows as a request hands them to storage: without `_ingested_at` and `_seq`.
fn strip_stamps(batch: &RecordBatch) -> RecordBatch {
    let keep: Vec<usize> = (0..batch.num_columns())
        .filter(|&i| !batch.schema().field(i).name().starts_with('_'))
        .collect();
    batch.project(&keep).unwrap()
}

#[test]
fn every_log_record_form_replays_to_the_pinned_records() {
    let ipc_only = root().join("wal/ipc-only");
    pinned("wal/ipc-only/00000000000000000001.wal", ipc_only_segment);
    for (dir, pinned_as) in [
        (root().join("wal/v0"), "wal/v0.decoded.json"),
        (ipc_only, "wal/ipc-only.decoded.json"),
    ] {
        let records: Vec<Value> = replay_dir(&dir)
            .iter()
            .map(|(seq, at, payload)| record_json(*seq, *at, &WalRecord::decode(payload).unwrap()))
            .collect();
        assert!(!records.is_empty(), "{}", dir.display());
        assert_pinned_json(pinned_as, &Value::Array(records));
    }
}

#[test]
fn log_records_encode_to_the_bytes_they_were_written_as() {
    let mut kinds = std::collections::BTreeSet::new();
    for (seq, _, payload) in replay_dir(&root().join("wal/v0")) {
        kinds.insert(payload[0]);
        let again = match WalRecord::decode(&payload).unwrap() {
            WalRecord::Events {
                org_id,
                type_id,
                schema_version,
                batch,
            } => WalRecord::encode_events(&org_id, &type_id, schema_version, &batch).unwrap(),
            WalRecord::Marker { org_id, type_id } => WalRecord::encode_marker(&org_id, &type_id),
            WalRecord::Delete {
                org_id,
                type_id,
                range,
            } => WalRecord::encode_delete(&org_id, &type_id, &range),
        };
        assert_eq!(again, payload, "record {seq} is written differently today");
    }
    // Rows in both forms, a marker and a deletion.
    assert_eq!(kinds.into_iter().collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    // The IPC-only form of small batches is still read to the same rows today's compact
    // form holds.
    for (_, _, payload) in replay_dir(&root().join("wal/ipc-only")) {
        let WalRecord::Events {
            org_id,
            type_id,
            schema_version,
            batch,
        } = WalRecord::decode(&payload).unwrap()
        else {
            panic!("rows expected");
        };
        let today = WalRecord::encode_events(&org_id, &type_id, schema_version, &batch).unwrap();
        assert_eq!(today[0], 4, "small batches are logged in the compact form");
        let WalRecord::Events { batch: back, .. } = WalRecord::decode(&today).unwrap() else {
            panic!("rows expected");
        };
        assert_eq!(back, batch);
    }
    let range = EventRange {
        customer_id: Some("c3".into()),
        from: Some(1_735_689_600_000_000),
        to: Some(1_735_732_800_000_000),
    };
    assert!(matches!(
        WalRecord::decode(&WalRecord::encode_delete("o", "t", &range)).unwrap(),
        WalRecord::Delete { range: r, .. } if r == range
    ));
}

fn v0_manifests() -> Vec<(String, Vec<u8>)> {
    let dir = v0_table_dir().join("_manifest/a5298066bd094dd084f2ae2b38a46d5c");
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_manifest_version_decodes_to_the_pinned_manifest() {
    let path = object_store::path::Path::from("golden/_manifest/t/1.json");
    let mut decoded = Vec::new();
    for (name, bytes) in v0_manifests() {
        let m = Manifest::decode(&path, &bytes).unwrap();
        assert_eq!(m.format, 0, "{name}");
        // Format 0 told compaction outputs by their names; the manifest says it now.
        for f in &m.files {
            let by_name = f.path.contains("-c3_");
            assert_eq!(f.layout == FileLayout::Compacted, by_name, "{}", f.path);
        }
        // Read once, written in today's format, read back the same.
        let again = Manifest::decode(&path, &m.encode().unwrap()).unwrap();
        assert_eq!(again, m.as_stored(), "{name}");
        decoded.push(serde_json::to_value(&m).unwrap());
    }
    assert_eq!(decoded.len(), 3);
    assert_pinned_json("manifest/v0.decoded.json", &Value::Array(decoded));
    // Every later format's fixture still decodes, to what is pinned.
    for v in 1..MANIFEST_FORMAT {
        let rel = format!("manifest/v{v}.json");
        let bytes = std::fs::read(root().join(&rel)).unwrap();
        let m = Manifest::decode(&path, &bytes).unwrap();
        assert_eq!(m.format, v);
        assert_pinned_json(
            &format!("manifest/v{v}.decoded.json"),
            &serde_json::to_value(&m).unwrap(),
        );
    }
}

/// A manifest using every field of the current format.
fn canonical_manifest() -> Manifest {
    let file = |path: &str, layout: FileLayout, sorted_by: &[&str]| FileMeta {
        path: path.into(),
        size: 4096,
        rows: 100,
        min_ts: 1_735_689_600_000_000,
        max_ts: 1_735_775_999_999_999,
        min_seq: 3,
        max_seq: 9,
        schema_version: 2,
        has_duplicate_keys: false,
        shares_keys: true,
        visible_from: Some(1_796_596_566_000_000),
        deletions_applied: 4,
        crc32c: Some(0xdead_beef),
        layout,
        sorted_by: sorted_by.iter().map(|s| s.to_string()).collect(),
        deletion_vector: None,
        live_resolved: false,
    };
    Manifest {
        format: MANIFEST_FORMAT,
        version: 7,
        persisted_seq: 42,
        files: vec![
            file(
                "o/golden/date=2025-01-01/t-00000000000000000003-00000000000000000009.parquet",
                FileLayout::Arrival,
                &["timestamp", "_seq"],
            ),
            FileMeta {
                deletion_vector: Some(DeletionVector {
                    uuid: "61d16c75-6994-46b7-a15b-8b538852e50e".into(),
                    offset: 1,
                    size_in_bytes: 36,
                    cardinality: 2,
                }),
                live_resolved: true,
                ..file(
                    "o/golden/date=2025-01-01/t-00000000000000000003-00000000000000000009-c8_0.parquet",
                    FileLayout::Compacted,
                    &["customer_id", "timestamp"],
                )
            },
        ],
        tombstones: vec![Tombstone {
            seq: 4,
            at: 1_796_596_560_000_000,
            customer_id: Some("c3".into()),
            from: Some(1_735_689_600_000_000),
            to: None,
        }],
        retired: vec![RetiredFile {
            path: "o/golden/date=2025-01-01/t-00000000000000000001-00000000000000000002.parquet"
                .into(),
            at: 1_796_596_561_000_000,
        }],
        writer: "golden-writer".into(),
        checksum: None,
    }
}

#[test]
fn the_current_manifest_format_is_pinned_byte_for_byte() {
    let m = canonical_manifest();
    let encoded = m.encode().unwrap();
    let rel = format!("manifest/v{MANIFEST_FORMAT}.json");
    let fixture = pinned(&rel, || encoded.clone());
    assert_eq!(
        String::from_utf8_lossy(&fixture),
        String::from_utf8_lossy(&encoded),
        "the manifest is written differently: bump MANIFEST_FORMAT and add {rel}'s successor"
    );
    let path = object_store::path::Path::from(rel.as_str());
    assert_eq!(Manifest::decode(&path, &fixture).unwrap(), m);
}

/// What a data file's layout is: everything but the bytes the writer's version changes.
fn layout_summary(bytes: &Bytes) -> Value {
    let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(
        bytes.clone(),
        ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional),
    )
    .unwrap();
    let md = builder.metadata();
    let schema = md.file_metadata().schema_descr();
    let rg = md.row_group(0);
    let sorting: Vec<Value> = rg
        .sorting_columns()
        .into_iter()
        .flatten()
        .map(|s| {
            json!({
                "column": schema.column(s.column_idx as usize).path().string(),
                "descending": s.descending,
                "nulls_first": s.nulls_first,
            })
        })
        .collect();
    let pages = md.offset_index().map(|idx| {
        idx[0]
            .iter()
            .map(|c| c.page_locations().len())
            .collect::<Vec<_>>()
    });
    let columns: Vec<Value> = rg
        .columns()
        .iter()
        .map(|c| {
            json!({
                "column": c.column_path().string(),
                "compression": format!("{:?}", c.compression()),
                "encodings": format!("{:?}", c.encodings().collect::<Vec<_>>()),
                "statistics": c.statistics().is_some(),
                "bloom_filter": c.bloom_filter_offset().is_some(),
                "dictionary": c.dictionary_page_offset().is_some(),
            })
        })
        .collect();
    let key_values: Vec<Value> = md
        .file_metadata()
        .key_value_metadata()
        .into_iter()
        .flatten()
        .filter(|kv| kv.key.starts_with("meterbase."))
        .map(|kv| json!([kv.key, kv.value]))
        .collect();
    json!({
        "row_groups": md.num_row_groups(),
        "rows": md.file_metadata().num_rows(),
        "sorting": sorting,
        "pages_per_column": pages,
        "column_index": md.column_index().is_some(),
        "columns": columns,
        "key_values": key_values,
    })
}

#[test]
fn data_files_of_every_layout_read_to_the_pinned_rows() {
    let mut v0_files = Vec::new();
    for day in ["date=2025-01-01", "date=2025-01-02"] {
        for e in std::fs::read_dir(v0_table_dir().join(day)).unwrap() {
            v0_files.push(e.unwrap().path());
        }
    }
    v0_files.sort();
    assert_eq!(v0_files.len(), 6);
    for path in v0_files {
        let day = path
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy();
        let name = format!("{day}/{}", path.file_name().unwrap().to_string_lossy());
        let bytes = Bytes::from(std::fs::read(&path).unwrap());
        assert_pinned_json(
            &format!("parquet/v0/{name}.rows.json"),
            &rows_json(&read_file(bytes.clone()).unwrap()),
        );
        assert_pinned_json(
            &format!("parquet/v0/{name}.layout.json"),
            &layout_summary(&bytes),
        );
    }
}

#[test]
fn the_current_data_file_layouts_are_pinned() {
    let def = golden_def();
    let schema = def.table_schema().unwrap();
    // The input: the stamped rows of the old build's compacted file, both days.
    let input = read_file(Bytes::from(
        std::fs::read(v0_table_dir().join(
            "date=2025-01-01/a5298066bd094dd084f2ae2b38a46d5c-00000000000000000001-00000000000000000009-c3_0.parquet",
        ))
        .unwrap(),
    ))
    .unwrap();
    let customer_first = vec!["customer_id".to_string(), "timestamp".to_string()];
    for (name, layout) in [
        ("arrival", Layout::arrival(&def.column_order)),
        (
            "compacted",
            Layout {
                order: &customer_first,
                name_suffix: "-c4_0",
                one_seq: false,
                compacted: true,
                rows_unique: false,
                key_rows: true,
            },
        ),
    ] {
        let files =
            encode_batches(&golden_paths(), &def, &schema, &input, (1, 9), &layout).unwrap();
        let rel =
            |day: usize, what: &str| format!("parquet/v{DATA_FILE_FORMAT}/{name}.{day}.{what}");
        for (day, f) in files.iter().enumerate() {
            let bytes = Bytes::from(f.bytes.clone());
            let fixture = Bytes::from(pinned(&rel(day, "parquet"), || f.bytes.clone()));
            // Same rows, same layout as the pinned file of this format...
            assert_eq!(
                rows_json(&read_file(fixture.clone()).unwrap()),
                rows_json(&read_file(bytes.clone()).unwrap()),
                "{name} file {day}: rows"
            );
            assert_eq!(
                layout_summary(&fixture),
                layout_summary(&bytes),
                "{name} file {day}: layout changed; bump DATA_FILE_FORMAT"
            );
            // ...and its file metadata.
            let mut meta = serde_json::to_value(&f.meta).unwrap();
            meta["crc32c"] = Value::Null;
            meta["size"] = Value::Null;
            assert_pinned_json(&rel(day, "meta.json"), &meta);
        }
        assert_eq!(files.len(), if name == "arrival" { 2 } else { 1 });
    }
}

#[test]
fn the_deletion_vector_file_format_is_pinned_byte_for_byte() {
    use crate::format::deletion_vector::{DV_FILE_FORMAT, decode, encode_file};
    let a: roaring::RoaringTreemap = [0u64, 9].into_iter().collect();
    let b: roaring::RoaringTreemap = (100u64..5000).chain([1 << 33]).collect();
    let (bytes, places) = encode_file(&[&a, &b]).unwrap();
    let rel = format!("deletion_vector/v{DV_FILE_FORMAT}.bin");
    let fixture = pinned(&rel, || bytes.clone());
    assert_eq!(fixture, bytes, "deletion vectors are written differently");
    assert_eq!(decode(&fixture, places[0].0, places[0].1, &rel).unwrap(), a);
    assert_eq!(decode(&fixture, places[1].0, places[1].1, &rel).unwrap(), b);
}
