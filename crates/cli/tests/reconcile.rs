//! Reconciliation through the real server: ingest receipts (JSON, NDJSON, Zuora bulk, CSV),
//! `GET /usage/{slug}/reconcile` after replacements and deletions, the digest recomputed by
//! an independent Python implementation of docs/api.md, and `meterbase reconcile` naming a
//! missing and a different event.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::{Server, digest_reference, reconcile_buckets, tempdir};
use serde_json::{Value, json};

fn types() -> Value {
    json!({"cpu": "Float64", "region": "String", "amount": "Decimal(12,3)",
           "units": "Int64", "note": "Nullable(String)"})
}

fn define(s: &Server) {
    let r = s.post_json(
        "/rawmetrics",
        &json!({"name": "Ledger", "api_slug": "ledger", "dataschema": {"data": types()}}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
}

fn event(c: &str, ts: Value, cpu: f64, amount: &str, units: i64, note: Option<&str>) -> Value {
    let mut data = json!({"cpu": cpu, "region": "eu-west-1", "amount": amount, "units": units});
    if let Some(n) = note {
        data["note"] = json!(n);
    }
    json!({"customer_id": c, "timestamp": ts, "data": data})
}

/// The Python reference's buckets for `events` (as sent).
fn python_reference(dir: &std::path::Path, events: &[Value]) -> BTreeMap<String, (u64, String)> {
    digest_reference(dir, &types(), events)
}

fn reconcile(s: &Server, query: &str) -> Value {
    let r = s.get(&format!("/usage/ledger/reconcile?{query}"));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["algorithm"], "sha256-sum64-v1");
    r.body
}

fn digest_sum(digests: impl IntoIterator<Item = String>) -> String {
    let sum = digests
        .into_iter()
        .map(|d| u64::from_str_radix(&d, 16).unwrap())
        .fold(0u64, u64::wrapping_add);
    format!("{sum:016x}")
}

const RANGE: &str = "from=2025-07-01&to=2025-07-04";

#[test]
fn receipts_reconcile_and_the_python_reference_agree() {
    let dir = tempdir();
    let s = Server::start(&dir.path().join("d"), &["--flush-age-ms", "200"]);
    define(&s);
    // Values chosen for the canonical form's edges: a float that is not what it looks like,
    // a decimal written with fewer digits than its scale, an offset timestamp, epoch seconds,
    // a null field.
    let mut sent = vec![
        event(
            "a",
            json!("2025-07-01T10:00:00Z"),
            0.1,
            "10.5",
            3,
            Some("first"),
        ),
        event(
            "a",
            json!("2025-07-01T12:30:00.250+02:00"),
            1e-7,
            "-0.005",
            -2,
            None,
        ),
        event(
            "b",
            json!(1_751_414_400.5),
            12345.678,
            "0",
            9_000_000_000,
            None,
        ),
        event(
            "a",
            json!("2025-07-02T01:00:00Z"),
            2.0,
            "1.000",
            1,
            Some("naïve"),
        ),
    ];
    let r = s.post_json("/usage/ledger", &Value::Array(sent.clone()));
    assert_eq!(r.status, 200, "{}", r.text);
    let receipt = &r.body["receipt"];
    assert_eq!(receipt["count"], 4);
    assert_eq!(receipt["first_seq"], receipt["last_seq"]);
    assert!(receipt["first_seq"].as_u64().unwrap() > 0);

    // Everything was accepted in one request: the receipt's digest is the sum of the
    // reconcile buckets' digests, and both equal the Python reference.
    let body = reconcile(&s, RANGE);
    let buckets = reconcile_buckets(&body);
    assert_eq!(buckets, python_reference(dir.path(), &sent));
    assert_eq!(
        receipt["digest"].as_str().unwrap(),
        digest_sum(buckets.values().map(|(_, d)| d.clone()))
    );
    // Sums: integers as integers, decimals as exact strings, floats as numbers.
    let a1 = &body["buckets"][0];
    assert_eq!(a1["customer_id"], "a");
    assert_eq!(a1["bucket_start"], "2025-07-01T00:00:00Z");
    assert_eq!(a1["sums"]["units"], 1);
    assert_eq!(a1["sums"]["amount"], "10.495");
    // Float sums are binary floating point (the SQL engine's `sum`): close, not exact.
    assert!((a1["sums"]["cpu"].as_f64().unwrap() - 0.1000001).abs() < 1e-12);
    let b = &body["buckets"][2];
    assert_eq!(b["sums"]["units"], 9_000_000_000u64);

    // A single event, NDJSON, the Zuora shape and CSV each carry a receipt whose digest is
    // what reconcile then shows for that bucket alone.
    let one = event("c", json!("2025-07-03T00:00:00Z"), 1.5, "2", 7, None);
    let r = s.post_json("/usage/ledger", &one);
    assert_eq!(r.body["receipt"]["count"], 1, "{}", r.text);
    let c_bucket = reconcile_buckets(&reconcile(&s, &format!("{RANGE}&customer_id=c")));
    assert_eq!(
        c_bucket["c|2025-07-03T00:00:00Z"].1,
        r.body["receipt"]["digest"].as_str().unwrap()
    );
    sent.push(one);

    let nd = event(
        "d",
        json!("2025-07-03T05:00:00Z"),
        3.25,
        "4.5",
        1,
        Some("x"),
    );
    let r = s.request(
        "POST",
        "/usage/ledger",
        Some(&s.key),
        &[("content-type", "application/x-ndjson")],
        Some(format!("{nd}\n").as_bytes()),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let d_digest = r.body["receipt"]["digest"].as_str().unwrap().to_string();
    sent.push(nd);

    let zuora = json!([{"CustomerId": "e", "UsageDate": "2025-07-03T06:00:00Z", "Cpu": 1,
                        "Region": "us", "Amount": "1.25", "Units": 5}]);
    let r = s.post_json("/usage/bulk/ledger", &zuora);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["success"], true);
    assert_eq!(r.body["receipt"]["count"], 1);
    let e_digest = r.body["receipt"]["digest"].as_str().unwrap().to_string();
    sent.push(event(
        "e",
        json!("2025-07-03T06:00:00Z"),
        1.0,
        "1.25",
        5,
        None,
    ));
    sent.last_mut().unwrap()["data"]["region"] = json!("us");

    let csv = "customer_id,timestamp,cpu,region,amount,units,note\nf,2025-07-03T07:00:00Z,0.3,eu,7.125,2,\n";
    let r = s.request(
        "POST",
        "/usage/ledger/csv",
        Some(&s.key),
        &[("content-type", "text/csv")],
        Some(csv.as_bytes()),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["receipt"]["count"], 1);
    let f_digest = r.body["receipt"]["digest"].as_str().unwrap().to_string();
    sent.push(event(
        "f",
        json!("2025-07-03T07:00:00Z"),
        0.3,
        "7.125",
        2,
        None,
    ));
    sent.last_mut().unwrap()["data"]["region"] = json!("eu");
    // A dry run stores nothing and has no receipt.
    let r = s.request(
        "POST",
        "/usage/ledger/csv?dry_run=true",
        Some(&s.key),
        &[("content-type", "text/csv")],
        Some(csv.as_bytes()),
    );
    assert_eq!(r.status, 200);
    assert!(r.body.get("receipt").is_none(), "{}", r.text);

    let buckets = reconcile_buckets(&reconcile(&s, RANGE));
    assert_eq!(buckets["d|2025-07-03T00:00:00Z"].1, d_digest);
    assert_eq!(buckets["e|2025-07-03T00:00:00Z"].1, e_digest);
    assert_eq!(buckets["f|2025-07-03T00:00:00Z"].1, f_digest);
    assert_eq!(buckets, python_reference(dir.path(), &sent));

    // A replacement (same key, new values) changes the digest, not the count; a deletion
    // removes the bucket. Both as the reference computes from the corrected ledger, across
    // a persist to Parquet.
    s.wait_flushed();
    let fixed = event(
        "a",
        json!("2025-07-01T10:00:00Z"),
        0.2,
        "10.5",
        3,
        Some("first"),
    );
    assert_eq!(s.post_json("/usage/ledger", &fixed).status, 200);
    sent[0] = fixed;
    let r = s.delete("/usage/ledger/events?customer_id=b");
    assert_eq!(r.body["deleted"], 1, "{}", r.text);
    sent.retain(|e| e["customer_id"] != "b");
    let after = reconcile_buckets(&reconcile(&s, RANGE));
    assert_eq!(after, python_reference(dir.path(), &sent));
    assert_eq!(
        after["a|2025-07-01T00:00:00Z"].0,
        buckets["a|2025-07-01T00:00:00Z"].0
    );
    assert_ne!(
        after["a|2025-07-01T00:00:00Z"].1,
        buckets["a|2025-07-01T00:00:00Z"].1
    );
    assert!(!after.contains_key("b|2025-07-02T00:00:00Z"));
    // Hours split the day; the same events, so the same total.
    let hours = reconcile_buckets(&reconcile(&s, &format!("{RANGE}&by=hour")));
    // a's 10:00 and 10:30 share an hour.
    assert_eq!(hours.len(), sent.len() - 1);
    assert_eq!(
        digest_sum(hours.values().map(|(_, d)| d.clone())),
        digest_sum(after.values().map(|(_, d)| d.clone()))
    );

    // Bad requests say which parameter and why.
    for (q, word) in [
        ("to=2025-07-04", "from"),
        ("from=2025-07-04&to=2025-07-01", "from must be before to"),
        ("from=2025-07-01&to=2025-07-04&by=week", "by"),
        ("from=2025-07-01&to=2025-07-04&customer=a", "customer"),
        ("from=yesterday&to=2025-07-04", "from"),
    ] {
        let r = s.get(&format!("/usage/ledger/reconcile?{q}"));
        assert_eq!(r.status, 400, "{q}");
        assert_eq!(
            r.header("content-type"),
            Some("application/problem+json"),
            "{q}"
        );
        assert!(
            r.body["detail"].as_str().unwrap().contains(word),
            "{q}: {}",
            r.text
        );
    }

    // `meterbase reconcile`: the ledger as stored matches; then one event the server never
    // got and one whose value differs are named.
    let ledger = dir.path().join("ledger.ndjson");
    let write = |events: &[Value]| {
        let text: String = events.iter().map(|e| format!("{e}\n")).collect();
        std::fs::write(&ledger, text).unwrap();
    };
    let run = || {
        let out = Command::new(env!("CARGO_BIN_EXE_meterbase"))
            .args(["reconcile", "--url", &s.addr, "--api-key", &s.key])
            .args(["--event", "ledger"])
            .arg(&ledger)
            .output()
            .expect("meterbase reconcile");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    write(&sent);
    let (code, report, err) = run();
    assert_eq!(code, Some(0), "{report}{err}");
    assert!(report.contains("0 differing"), "{report}");

    let mut ledger_events = sent.clone();
    ledger_events.push(event("a", json!("2025-07-02T09:00:00Z"), 5.0, "1", 1, None));
    ledger_events[1]["data"]["units"] = json!(40);
    write(&ledger_events);
    let (code, report, err) = run();
    assert_eq!(code, Some(1), "{report}{err}");
    assert!(
        report.contains("missing    customer_id=a timestamp=2025-07-02T09:00:00.000000Z"),
        "{report}"
    );
    assert!(
        report.contains(
            "different  customer_id=a timestamp=2025-07-01T10:30:00.250000Z: units: file 40, server -2"
        ),
        "{report}"
    );
    assert!(report.contains("1 missing on the server"), "{report}");
    println!("{report}");
}
