//! Columnar bodies against the real binary: `POST /usage/{slug}` with an Arrow IPC stream or a
//! Parquet file stores the rows (read back through `/sql`), answers as a JSON ingest does,
//! refuses an invalid body whole with `line` (row) and `pointer` (column), and
//! `meterbase import` sends a Parquet file in batches.

mod common;

use std::io::Write;
use std::process::Command;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{Field, Schema};
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;
use common::{Server, num, tempdir};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const ARROW: &str = "application/vnd.apache.arrow.stream";
const PARQUET: &str = "application/vnd.apache.parquet";
/// 2025-01-01T00:00:00Z in milliseconds.
const JAN_2025_MS: i64 = 1_735_689_600_000;

struct Rows {
    customers: Vec<String>,
    millis: Vec<i64>,
    cpu: Vec<f64>,
    regions: Vec<String>,
}

impl Rows {
    fn random(n: usize, seed: u64) -> Rows {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        Rows {
            customers: (0..n)
                .map(|_| format!("cus_{}", rng.random_range(0..20)))
                .collect(),
            // Distinct instants: each row is its own unique key.
            millis: (0..n as i64)
                .map(|i| JAN_2025_MS + i * 1_000 + rng.random_range(0..1_000))
                .collect(),
            cpu: (0..n)
                .map(|_| rng.random_range(-1e6..1e6_f64).round() / 8.0)
                .collect(),
            regions: (0..n)
                .map(|_| format!("eu-west-{}", rng.random_range(1..4)))
                .collect(),
        }
    }

    /// `cpu_column` names the column holding cpu_hours_consumed.
    fn batch(&self, cpu_column: &str) -> RecordBatch {
        let columns: Vec<(&str, ArrayRef)> = vec![
            (
                "customer_id",
                Arc::new(StringArray::from_iter_values(&self.customers)),
            ),
            (
                "timestamp",
                Arc::new(TimestampMillisecondArray::from(self.millis.clone()).with_timezone("UTC")),
            ),
            (cpu_column, Arc::new(Float64Array::from(self.cpu.clone()))),
            (
                "region",
                Arc::new(StringArray::from_iter_values(&self.regions)),
            ),
        ];
        let schema = Schema::new(
            columns
                .iter()
                .map(|(n, a)| Field::new(*n, a.data_type().clone(), false))
                .collect::<Vec<_>>(),
        );
        RecordBatch::try_new(
            Arc::new(schema),
            columns.into_iter().map(|(_, a)| a).collect(),
        )
        .unwrap()
    }

    fn ndjson(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..self.customers.len() {
            let event = json!({
                "customer_id": self.customers[i],
                "timestamp": chrono::DateTime::from_timestamp_millis(self.millis[i])
                    .unwrap()
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "data": {"cpu_hours_consumed": self.cpu[i], "region": self.regions[i]},
            });
            writeln!(out, "{event}").unwrap();
        }
        out
    }
}

/// An Arrow IPC stream of `batch`, written in slices of `slice` rows.
fn arrow_stream(batch: &RecordBatch, slice: usize) -> Vec<u8> {
    let mut w = StreamWriter::try_new(Vec::new(), &batch.schema()).unwrap();
    let mut at = 0;
    while at < batch.num_rows() {
        let n = slice.min(batch.num_rows() - at);
        w.write(&batch.slice(at, n)).unwrap();
        at += n;
    }
    w.into_inner().unwrap()
}

/// A Parquet file as pandas writes them by default (Snappy), small row groups.
fn parquet_file(batch: &RecordBatch, out: impl Write + Send) {
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(4_000))
        .build();
    let mut w = ArrowWriter::try_new(out, batch.schema(), Some(props)).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
}

fn parquet_bytes(batch: &RecordBatch) -> Vec<u8> {
    let mut out = Vec::new();
    parquet_file(batch, &mut out);
    out
}

fn post(s: &Server, path: &str, headers: &[(&str, &str)], body: &[u8]) -> common::Reply {
    s.request("POST", path, Some(&s.key), headers, Some(body))
}

fn create(s: &Server, slug: &str) {
    let mut def = common::compute_events_definition();
    def["api_slug"] = json!(slug);
    def["name"] = json!(slug);
    let r = s.post_json("/rawmetrics", &def);
    assert_eq!(r.status, 201, "{}", r.text);
}

fn count(s: &Server, table: &str) -> u64 {
    s.sql(&format!("SELECT count(*) AS n FROM {table}"))[0]["n"]
        .as_u64()
        .unwrap()
}

fn all_rows(s: &Server, table: &str) -> Vec<Value> {
    s.sql(&format!(
        "SELECT customer_id, timestamp, cpu_hours_consumed, region FROM {table} ORDER BY timestamp"
    ))
}

/// Member names of a JSON object, sorted.
fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

#[test]
fn arrow_and_parquet_bodies_store_the_rows_ndjson_would() {
    let dir = tempdir();
    let s = Server::start(&dir.path().join("d"), &[]);
    for slug in ["from_arrow", "from_parquet", "from_ndjson"] {
        create(&s, slug);
    }
    let rows = Rows::random(3_000, 7);

    let r = post(
        &s,
        "/usage/from_arrow",
        &[("content-type", ARROW)],
        &arrow_stream(&rows.batch("cpu_hours_consumed"), 700),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["accepted"], 3_000, "{}", r.text);
    assert_eq!(r.body["receipt"]["count"], 3_000, "{}", r.text);

    // A mapped column, gzip on the wire, as a migration would send a pandas file.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&parquet_bytes(&rows.batch("CPU hours")))
        .unwrap();
    let r = post(
        &s,
        "/usage/from_parquet?map.cpu_hours_consumed=CPU%20hours",
        &[("content-type", PARQUET), ("content-encoding", "gzip")],
        &gz.finish().unwrap(),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let parquet_reply = r.body;

    let r = post(
        &s,
        "/usage/from_ndjson",
        &[("content-type", "application/x-ndjson")],
        &rows.ndjson(),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    // The same answer, member for member, receipt digest included (same events).
    assert_eq!(keys(&parquet_reply), keys(&r.body));
    assert_eq!(keys(&parquet_reply["receipt"]), keys(&r.body["receipt"]));
    assert_eq!(parquet_reply["accepted"], r.body["accepted"]);
    assert_eq!(
        parquet_reply["receipt"]["digest"],
        r.body["receipt"]["digest"]
    );

    let expected = all_rows(&s, "from_ndjson");
    assert_eq!(expected.len(), 3_000);
    assert_eq!(all_rows(&s, "from_arrow"), expected);
    assert_eq!(all_rows(&s, "from_parquet"), expected);
    let sum: f64 = rows.cpu.iter().sum();
    let got = num(&s.sql("SELECT sum(cpu_hours_consumed) AS v FROM from_parquet")[0]["v"]);
    assert!((got - sum).abs() < 1e-6, "{got} vs {sum}");
}

#[test]
fn an_invalid_columnar_body_stores_nothing_and_names_row_and_column() {
    let dir = tempdir();
    let s = Server::start(&dir.path().join("d"), &[]);
    s.create_compute_events();
    let mut rows = Rows::random(10, 1);
    rows.customers[6] = String::new();
    let r = post(
        &s,
        "/usage/compute_events",
        &[("content-type", ARROW)],
        &arrow_stream(&rows.batch("cpu_hours_consumed"), 4),
    );
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(r.body["errors"][0]["line"], 7, "{}", r.text);
    assert_eq!(r.body["errors"][0]["pointer"], "customer_id", "{}", r.text);
    assert_eq!(r.body["invalid_events"], 1, "{}", r.text);

    // A column of the wrong type: refused before any row, named by its column.
    let wrong = RecordBatch::try_from_iter(vec![
        (
            "customer_id",
            Arc::new(StringArray::from(vec!["c"])) as ArrayRef,
        ),
        ("timestamp", Arc::new(Int64Array::from(vec![1_735_689_600]))),
        (
            "cpu_hours_consumed",
            Arc::new(Float64Array::from(vec![1.0])),
        ),
        ("region", Arc::new(Int64Array::from(vec![1]))),
    ])
    .unwrap();
    let r = post(
        &s,
        "/usage/compute_events",
        &[("content-type", PARQUET)],
        &parquet_bytes(&wrong),
    );
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["errors"][0]["pointer"], "region", "{}", r.text);
    assert!(r.body["errors"][0].get("line").is_none(), "{}", r.text);

    // A stream on which arrow-ipc itself panics (a buffer slice past the body's end; found by
    // the arrow_stream fuzz target): the body's fault, 400.
    let panics_arrow =
        std::fs::read(common::repo().join("testdata/fuzz/arrow_stream/arrow-ipc-buffer-past-end"))
            .expect("the fuzz finding");
    // 50 bytes whose message declares 32 GiB of data: arrow-ipc would allocate that first and
    // abort the process; refused by its framing.
    let declares_32_gib =
        std::fs::read(common::repo().join("testdata/fuzz/arrow_stream/arrow-ipc-declares-32-gib"))
            .expect("the fuzz finding");
    // 1.8 KB whose footer declares lists of booleans parquet-rs would skip without reading
    // (138 ms of CPU each on a release build before; found by the parquet_body target).
    let spins_parquet =
        std::fs::read(common::repo().join("testdata/fuzz/parquet_body/finding-bool-list-spin"))
            .expect("the fuzz finding");
    let r = post(
        &s,
        "/usage/compute_events",
        &[("content-type", PARQUET)],
        &spins_parquet,
    );
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(
        r.text.contains("its footer holds a collection of booleans"),
        "{}",
        r.text
    );
    // The same map of booleans, reached only by reading a field by its schema type.
    let confuses_parquet = std::fs::read(
        common::repo().join("testdata/fuzz/parquet_body/finding-type-confused-map-spin"),
    )
    .expect("the fuzz finding");
    let r = post(
        &s,
        "/usage/compute_events",
        &[("content-type", PARQUET)],
        &confuses_parquet,
    );
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("its footer: "), "{}", r.text);
    // A page header whose statistics hold six booleans parquet-rs 59 skips without reading,
    // so it reads on from the wrong byte into lists of doubles past the end (1.3 s of a
    // release server for 2.7 KB before).
    let skips_parquet = std::fs::read(
        common::repo().join("testdata/fuzz/parquet_body/finding-page-header-bool-list-skip"),
    )
    .expect("the fuzz finding");
    let r = post(
        &s,
        "/usage/compute_events",
        &[("content-type", PARQUET)],
        &skips_parquet,
    );
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(
        r.text
            .contains("the page header at byte 215 holds a collection of booleans"),
        "{}",
        r.text
    );
    for (content_type, body) in [
        (ARROW, &b""[..]),
        (PARQUET, b"PAR1 but not really"),
        (ARROW, &panics_arrow[..]),
        (ARROW, &declares_32_gib[..]),
    ] {
        let r = post(
            &s,
            "/usage/compute_events",
            &[("content-type", content_type)],
            body,
        );
        assert_eq!(r.status, 400, "{content_type}: {}", r.text);
    }
    let r = post(
        &s,
        "/usage/compute_events?dry_run=true",
        &[("content-type", ARROW)],
        &arrow_stream(&wrong, 1),
    );
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("map.FIELD=COLUMN"), "{}", r.text);
    assert_eq!(count(&s, "compute_events"), 0);
    assert_eq!(
        s.get("/healthz").status,
        200,
        "the server survived every body"
    );
}

fn import(s: &Server, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_meterbase"))
        .arg("import")
        .args([
            "--url",
            &s.addr,
            "--api-key",
            &s.key,
            "--event",
            "compute_events",
        ])
        .args(args)
        .output()
        .expect("run meterbase import");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn import_sends_a_parquet_file_in_batches() {
    let dir = tempdir();
    let s = Server::start(&dir.path().join("d"), &[]);
    s.create_compute_events();
    let rows = Rows::random(25_000, 3);
    let path = dir.path().join("usage.parquet");
    parquet_file(
        &rows.batch("cpu_hours_consumed"),
        std::fs::File::create(&path).unwrap(),
    );
    let (ok, err) = import(&s, &["--batch-rows", "10000", path.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(err.contains("25000 rows in 3 batches"), "{err}");
    assert_eq!(count(&s, "compute_events"), 25_000);
    let sum: f64 = rows.cpu.iter().sum();
    let got = num(&s.sql("SELECT sum(cpu_hours_consumed) AS v FROM compute_events")[0]["v"]);
    assert!((got - sum).abs() < 1e-6, "{got} vs {sum}");

    // An Arrow stream file with a bad row: the failure names the file's row.
    let mut bad = Rows::random(12_000, 4);
    bad.customers[11_000] = String::new();
    let path = dir.path().join("bad.arrows");
    std::fs::write(&path, arrow_stream(&bad.batch("cpu_hours_consumed"), 3_000)).unwrap();
    let (ok, err) = import(&s, &["--batch-rows", "5000", path.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("line 11001, customer_id"), "{err}");
    assert!(err.contains("10000 rows in 2 earlier batches"), "{err}");
}
