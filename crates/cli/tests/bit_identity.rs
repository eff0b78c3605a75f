//! An invoice recomputed later must carry the same number, to the last bit: the same usage,
//! asked 20 times `as_of` one instant, across flushes into several files, a compaction and a
//! restart, answers byte-identical bodies, and its sums and means equal the correctly rounded
//! exact results computed independently (Python's `fractions`).

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::{Server, compact, tempdir};
use serde_json::{Value, json};

const JULY: i64 = 1_751_328_000; // 2025-07-01T00:00:00Z

/// Values whose float sum depends on the order of addition.
const VALUES: [f64; 10] = [
    0.1,
    1e16,
    -1e16,
    1.0 / 3.0,
    2.5e-7,
    123_456.789,
    -0.3,
    1e-300,
    7.000_000_000_000_001,
    0.7,
];

fn now_rfc3339() -> String {
    std::thread::sleep(std::time::Duration::from_millis(5));
    let t = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    std::thread::sleep(std::time::Duration::from_millis(5));
    t
}

/// Exact sum and mean per customer, correctly rounded, by Python's `fractions`.
fn reference(live: &BTreeMap<(String, i64), f64>) -> BTreeMap<String, (f64, f64)> {
    let mut per: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for ((c, _), v) in live {
        per.entry(c.clone()).or_default().push(*v);
    }
    let input = json!(
        per.iter()
            .map(|(c, vs)| (
                c.clone(),
                vs.iter().map(|v| format!("{v:e}")).collect::<Vec<_>>()
            ))
            .collect::<BTreeMap<_, _>>()
    );
    let script = "import json, sys\nfrom fractions import Fraction\n\
        d = json.load(sys.stdin)\n\
        out = {c: [repr(float(sum(Fraction(v) for v in vs))), repr(float(sum(Fraction(v) for v in vs) / len(vs)))] for c, vs in d.items()}\n\
        print(json.dumps(out))";
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let parsed: BTreeMap<String, Vec<String>> = serde_json::from_slice(&out.stdout).unwrap();
    parsed
        .into_iter()
        .map(|(c, v)| (c, (v[0].parse().unwrap(), v[1].parse().unwrap())))
        .collect()
}

#[test]
fn the_same_usage_twenty_times_across_compaction_and_restart_is_bit_identical() {
    let tmp = tempdir();
    let dir = tmp.path().join("data");
    let mut s = Server::start(
        &dir,
        &[
            "--compaction-interval-secs",
            "0",
            "--flush-age-ms",
            "100",
            "--query-threads",
            "2",
        ],
    );
    s.create_compute_events();
    for (name, aggregation) in [
        ("total", "sum"),
        ("mean", "avg"),
        ("held", "time_weighted_sum"),
    ] {
        let r = s.post_json(
            "/billable_metrics",
            &json!({"name": name, "slug": name, "usage_event": "compute_events",
                    "aggregation": aggregation, "field": "cpu_hours_consumed"}),
        );
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let mut live: BTreeMap<(String, i64), f64> = BTreeMap::new();
    // Six batches, each flushed to its own file, the last two replacing earlier keys.
    for batch in 0..6i64 {
        let events: Vec<Value> = (0..200i64)
            .map(|i| {
                let k = if batch < 4 { batch * 200 + i } else { (batch - 4) * 300 + i * 3 };
                let customer = format!("c{}", k % 3);
                let ts = JULY + k * 60;
                let v = VALUES[((k + batch) % 10) as usize] * if batch >= 4 { -1.5 } else { 1.0 };
                live.insert((customer.clone(), ts), v);
                json!({"customer_id": customer, "timestamp": ts, "data": {"cpu_hours_consumed": v, "region": "eu"}})
            })
            .collect();
        let r = s.post_json("/usage/compute_events", &json!(events));
        assert_eq!(r.status, 200, "{}", r.text);
        s.wait_flushed();
    }
    let as_of = now_rfc3339();
    let period = "start_date=2025-07-01T00:00:00Z&end_date=2025-08-01T00:00:00Z";
    let ask = |s: &Server| -> Vec<String> {
        let mut answers: Vec<String> = ["total", "mean", "held"]
            .iter()
            .map(|m| {
                let r = s.get(&format!(
                    "/billable_metrics/{m}/usage?{period}&as_of={as_of}"
                ));
                assert_eq!(r.status, 200, "{}", r.text);
                r.text
            })
            .collect();
        let r = s.post_json(
            "/sql",
            &json!({"sql": "SELECT customer_id, sum(data.cpu_hours_consumed) AS s, avg(data.cpu_hours_consumed) AS a FROM compute_events GROUP BY customer_id ORDER BY customer_id", "as_of": as_of}),
        );
        assert_eq!(r.status, 200, "{}", r.text);
        answers.push(r.body["rows"].to_string());
        answers
    };
    let first = ask(&s);
    for round in 1..20 {
        if round == 7 {
            compact(&s);
        }
        if round == 14 {
            s.restart();
        }
        assert_eq!(
            ask(&s),
            first,
            "round {round} differs from the first answer"
        );
    }
    // And the bits are the exact results, rounded once.
    let expected = reference(&live);
    let rows: Vec<Value> = serde_json::from_str(&first[3]).unwrap();
    assert_eq!(rows.len(), expected.len());
    for row in rows {
        let c = row["customer_id"].as_str().unwrap();
        let (sum, mean) = expected[c];
        assert_eq!(
            row["s"].as_f64().unwrap().to_bits(),
            sum.to_bits(),
            "{c}: sum"
        );
        assert_eq!(
            row["a"].as_f64().unwrap().to_bits(),
            mean.to_bits(),
            "{c}: avg"
        );
    }
    let usage: Value = serde_json::from_str(&first[0]).unwrap();
    for row in usage["rows"].as_array().unwrap() {
        let c = row["customer_id"].as_str().unwrap();
        assert_eq!(
            row["value"].as_f64().unwrap().to_bits(),
            expected[c].0.to_bits()
        );
    }
}
