//! Billable metrics through the HTTP API: golden files, the cookbook in docs/metrics.md, the
//! seed scenario, injection attempts, and a differential test of every builder aggregation
//! (and of SQL metrics' windows, in one query and one per window).

mod common;

use std::collections::BTreeMap;

use common::{Server, load_metrics_dataset, num, repo, tempdir};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};

/// JSON equality with numbers compared numerically (1e-9 relative).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

fn create_and_check(s: &Server, metric: &Value, query: &str, expected: &Value) {
    let r = s.post_json("/billable_metrics", metric);
    assert_eq!(r.status, 201, "{metric}: {}", r.text);
    let slug = r.body["slug"].as_str().unwrap();
    assert!(
        r.body["sql"].as_str().is_some_and(|q| !q.is_empty()),
        "the stored metric shows its SQL"
    );
    let got = s.get(&format!("/billable_metrics/{slug}/usage?{query}"));
    assert_eq!(got.status, 200, "{}", got.text);
    assert!(
        same(&got.body, expected),
        "{slug}?{query}\n got: {}\nwant: {expected}",
        got.body
    );
}

#[test]
fn golden_files_and_cookbook() {
    let dir = tempdir();
    let s = Server::start(&dir.path().join("d"), &[]);
    load_metrics_dataset(&s);
    let mut ran = 0;
    let mut files: Vec<_> = std::fs::read_dir(repo().join("testdata/metrics"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files.iter().filter(|p| {
        p.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("golden_")
    }) {
        let g: Value = serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap();
        create_and_check(
            &s,
            &g["metric"],
            g["query"].as_str().unwrap(),
            &g["expected"],
        );
        ran += 1;
    }
    // Every example of docs/metrics.md: a ```json metric block, the GET line, a ```json expected block.
    let doc = std::fs::read_to_string(repo().join("docs/metrics.md")).unwrap();
    let mut pending: Option<Value> = None;
    let mut query: Option<String> = None;
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        if line.starts_with("```json metric") || line.starts_with("```json expected") {
            let mut block = String::new();
            for l in lines.by_ref() {
                if l.starts_with("```") {
                    break;
                }
                block.push_str(l);
                block.push('\n');
            }
            let v: Value = serde_json::from_str(&block).unwrap_or_else(|e| panic!("{e}: {block}"));
            if line.contains("metric") {
                pending = Some(v);
            } else {
                create_and_check(
                    &s,
                    &pending.take().unwrap(),
                    query.take().as_deref().unwrap(),
                    &v,
                );
                ran += 1;
            }
        } else if let Some(rest) = line.strip_prefix("`GET /billable_metrics/") {
            query = Some(
                rest.split_once('?')
                    .unwrap()
                    .1
                    .trim_end_matches('`')
                    .to_string(),
            );
        }
    }
    assert!(ran >= 12, "only {ran} examples ran");
}

#[test]
fn seed_scenario_and_lifecycle() {
    let dir = tempdir();
    let s = Server::start(&dir.path().join("d"), &["--flush-age-ms", "100"]);
    load_metrics_dataset(&s);
    // The contract's SQL example and a storage GB-month metric.
    let cpu = json!({"name": "CPU hours", "slug": "cpu_hours",
        "sql": "SELECT customer_id, sum(cpu_hours_consumed) AS value FROM compute_events WHERE timestamp >= {{start_date}} AND timestamp < {{end_date}} GROUP BY customer_id"});
    assert_eq!(s.post_json("/billable_metrics", &cpu).status, 201);
    assert_eq!(s.post_json("/billable_metrics", &cpu).status, 409);
    let gb_month = json!({"name": "Storage GB-months", "slug": "storage_gb_months",
        "sql": "SELECT customer_id, value / 744.0 AS value FROM (SELECT customer_id, sum(storage_gb) AS value FROM storage_events WHERE timestamp >= {{start_date}} AND timestamp < {{end_date}} GROUP BY customer_id)"});
    assert_eq!(s.post_json("/billable_metrics", &gb_month).status, 201);
    let tw = json!({"name": "Storage", "slug": "storage_tw", "usage_event": "storage_events", "aggregation": "time_weighted_sum", "field": "storage_gb"});
    assert_eq!(s.post_json("/billable_metrics", &tw).status, 201);
    s.wait_flushed();
    let r = s.get("/billable_metrics/cpu_hours/usage?start_date=2025-07-01T00:00:00Z&end_date=2025-08-01T00:00:00Z&customer_id=acme");
    assert_eq!(
        r.body["rows"].as_array().map(Vec::len),
        Some(1),
        "{}",
        r.text
    );
    assert_eq!(
        (
            r.body["rows"][0]["customer_id"].as_str(),
            num(&r.body["rows"][0]["value"])
        ),
        (Some("acme"), 15.0)
    );
    let r = s.get("/billable_metrics/storage_tw/usage?start_date=2025-07-01&end_date=2025-08-01&customer_id=acme");
    assert_eq!(num(&r.body["rows"][0]["value"]) / 744.0, 85200.0 / 744.0);
    // A period with no usage: customers are absent, not zero.
    let r = s.get("/billable_metrics/cpu_hours/usage?start_date=2024-01-01&end_date=2024-02-01");
    assert_eq!(r.body["rows"], json!([]));
    assert_eq!(
        s.get("/billable_metrics").body["items"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(s.get("/billable_metrics/cpu_hours").body["sql"], cpu["sql"]);

    // Creation checks: unknown table or column, missing value, not a query, bad builder.
    for bad in [
        json!({"name": "a", "sql": "SELECT customer_id, 1 AS value FROM nope"}),
        json!({"name": "b", "sql": "SELECT customer_id, sum(nope) AS value FROM compute_events GROUP BY customer_id"}),
        json!({"name": "c", "sql": "SELECT customer_id FROM compute_events"}),
        json!({"name": "d", "sql": "DROP TABLE compute_events"}),
        json!({"name": "e", "sql": "SELECT customer_id, 1 AS value FROM compute_events WHERE x = {{bogus}}"}),
        json!({"name": "f", "usage_event": "compute_events", "aggregation": "sum"}),
        json!({"name": "g", "usage_event": "compute_events", "aggregation": "sum", "field": "nope"}),
        json!({"name": "h", "usage_event": "nope", "aggregation": "count"}),
        json!({"name": "i", "usage_event": "compute_events", "aggregation": "median", "field": "cpu_hours_consumed"}),
    ] {
        let r = s.post_json("/billable_metrics", &bad);
        assert_eq!(r.status, 400, "{bad}: {}", r.text);
    }
    // An event type a metric reads cannot be deleted; the metric is named.
    let r = s.delete("/rawmetrics/compute_events?force=true");
    assert_eq!(r.status, 409);
    assert!(r.text.contains("cpu_hours"), "{}", r.text);
    // A new field on the event type does not break the metric.
    let mut def = s.get("/rawmetrics/compute_events").body;
    def["dataschema"]["data"]["zone"] = json!("Nullable(String)");
    let patch = json!({"dataschema": {"data": def["dataschema"]["data"]}}).to_string();
    let r = s.request(
        "PATCH",
        "/rawmetrics/compute_events",
        Some(&s.key),
        &[("content-type", "application/json")],
        Some(patch.as_bytes()),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.get("/billable_metrics/cpu_hours/usage?start_date=2025-07-01&end_date=2025-08-01");
    assert_eq!(r.body["rows"].as_array().unwrap().len(), 2, "{}", r.text);
    assert_eq!(s.delete("/billable_metrics/cpu_hours").status, 204);
    assert_eq!(s.get("/billable_metrics/cpu_hours").status, 404);
    // Bad usage parameters.
    for q in [
        "start_date=2025-07-01",
        "start_date=x&end_date=2025-08-01",
        "start_date=2025-08-01&end_date=2025-07-01",
        "start_date=2025-07-01&end_date=2025-08-01&tz=Mars/Base",
        "start_date=2025-07-01&end_date=2025-08-01&window=week",
    ] {
        assert_eq!(
            s.get(&format!("/billable_metrics/storage_tw/usage?{q}"))
                .status,
            400,
            "{q}"
        );
    }
}

#[test]
fn injection_through_placeholders_and_customer_id() {
    let dir = tempdir();
    let s = Server::start(&dir.path().join("d"), &[]);
    load_metrics_dataset(&s);
    let per_customer = json!({"name": "Per customer", "slug": "per_customer",
        "sql": "SELECT customer_id, count(*) AS value FROM api_calls WHERE customer_id = {{customer.external_id}} AND timestamp >= {{start_date}} AND timestamp < {{end_date}} GROUP BY customer_id"});
    assert_eq!(s.post_json("/billable_metrics", &per_customer).status, 201);
    let all = json!({"name": "All", "slug": "all_calls", "usage_event": "api_calls", "aggregation": "count",
        "filters": [{"field": "user_id", "op": "ne", "value": "x' OR '1'='1"}]});
    let r = s.post_json("/billable_metrics", &all);
    assert_eq!(r.status, 201, "{}", r.text);
    for attack in [
        "x' OR '1'='1",
        "acme' --",
        "acme'; DROP TABLE api_calls; --",
        "$start_date",
        "{{end_date}}",
        "acme\\",
    ] {
        let enc: String = url::form_urlencoded::byte_serialize(attack.as_bytes()).collect();
        for slug in ["per_customer", "all_calls"] {
            let r = s.get(&format!("/billable_metrics/{slug}/usage?start_date=2025-01-01&end_date=2026-01-01&customer_id={enc}"));
            assert_eq!(r.status, 200, "{attack}: {}", r.text);
            assert_eq!(r.body["rows"], json!([]), "{slug} with {attack:?}");
        }
    }
    // The SQL metric needs a customer; without one it says so instead of guessing.
    assert_eq!(
        s.get("/billable_metrics/per_customer/usage?start_date=2025-01-01&end_date=2026-01-01")
            .status,
        400
    );
    let r = s.get("/billable_metrics/per_customer/usage?start_date=2025-01-01&end_date=2026-01-01&customer_id=acme");
    assert_eq!(r.body["rows"], json!([{"customer_id": "acme", "value": 3}]));
    // Placeholder text in the period parameters is just a bad date.
    assert_eq!(
        s.get("/billable_metrics/all_calls/usage?start_date={{end_date}}&end_date=2026-01-01")
            .status,
        400
    );
    assert_eq!(s.sql("SELECT count(*) AS n FROM api_calls")[0]["n"], 4);
}

// ---- differential test ----------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Ev {
    customer: u8,
    dim: u8,
    /// Seconds from 2025-03-29T00:00:00Z (the Berlin DST weekend) in a 4-day span.
    at: u32,
    /// Hundredths; `None` for null.
    amount: Option<i64>,
}

const T0: i64 = 1_743_206_400; // 2025-03-29T00:00:00Z

fn events() -> impl Strategy<Value = Vec<Ev>> {
    proptest::collection::vec(
        (
            0u8..4,
            0u8..3,
            0u32..4 * 86_400,
            proptest::option::weighted(0.9, -50_000i64..100_000),
        )
            .prop_map(|(customer, dim, at, amount)| Ev {
                customer,
                dim,
                at,
                amount,
            }),
        1..60,
    )
}

/// The reference: last arrival per (customer, timestamp) wins; then per (customer, dim).
fn reference(evs: &[Ev], agg: &str, start: i64, end: i64) -> BTreeMap<(u8, u8), Option<f64>> {
    let mut latest: BTreeMap<(u8, u32), &Ev> = BTreeMap::new();
    for e in evs {
        latest.insert((e.customer, e.at), e);
    }
    let live: Vec<&Ev> = latest.values().copied().collect();
    let mut out = BTreeMap::new();
    let keys: std::collections::BTreeSet<(u8, u8)> =
        live.iter().map(|e| (e.customer, e.dim)).collect();
    for (c, d) in keys {
        let mut group: Vec<&Ev> = live
            .iter()
            .copied()
            .filter(|e| e.customer == c && e.dim == d)
            .collect();
        group.sort_by_key(|e| e.at);
        let inside: Vec<&Ev> = group
            .iter()
            .copied()
            .filter(|e| (start..end).contains(&(T0 + e.at as i64)))
            .collect();
        let vals: Vec<f64> = inside
            .iter()
            .filter_map(|e| e.amount)
            .map(|a| a as f64 / 100.0)
            .collect();
        // Outer None: no row for the group; inner None: a row whose value is null.
        let present = !inside.is_empty();
        let row = |v: Option<f64>| present.then_some(v);
        let v: Option<Option<f64>> = match agg {
            "count" => row(Some(inside.len() as f64)),
            "sum" => row((!vals.is_empty()).then(|| vals.iter().sum::<f64>())),
            "min" => row(vals.iter().copied().reduce(f64::min)),
            "max" => row(vals.iter().copied().reduce(f64::max)),
            "avg" => row((!vals.is_empty()).then(|| vals.iter().sum::<f64>() / vals.len() as f64)),
            "unique_count" => {
                let mut u: Vec<i64> = inside.iter().filter_map(|e| e.amount).collect();
                u.sort();
                u.dedup();
                row(Some(u.len() as f64))
            }
            "latest" => inside.last().map(|e| e.amount.map(|a| a as f64 / 100.0)),
            "earliest" => inside.first().map(|e| e.amount.map(|a| a as f64 / 100.0)),
            "time_weighted_sum" => {
                let mut points: Vec<(i64, Option<f64>)> = Vec::new();
                if let Some(before) = group.iter().rev().find(|e| T0 + (e.at as i64) < start) {
                    points.push((start, before.amount.map(|a| a as f64 / 100.0)));
                }
                points.extend(
                    inside
                        .iter()
                        .map(|e| (T0 + e.at as i64, e.amount.map(|a| a as f64 / 100.0))),
                );
                let mut total = 0.0;
                let mut any = false;
                for (i, (t, v)) in points.iter().enumerate() {
                    let next = points.get(i + 1).map_or(end, |p| p.0);
                    if let Some(v) = v {
                        total += v * (next - t) as f64 / 3600.0;
                        any = true;
                    }
                }
                any.then_some(Some(total))
            }
            _ => unreachable!(),
        };
        if let Some(v) = v {
            out.insert((c, d), v);
        }
    }
    out
}

#[test]
fn every_builder_aggregation_matches_an_independent_reference() {
    let dir = tempdir();
    let s = Server::start(&dir.path().join("d"), &["--flush-age-ms", "20"]);
    let mut runner = TestRunner::new(Config {
        cases: 6,
        ..Config::default()
    });
    let case = std::sync::atomic::AtomicUsize::new(0);
    runner
        .run(&(events(), 0u32..86_400 * 2, 1u32..86_400 * 2), |(evs, a, len)| {
            let slug = format!("diff{}", case.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
            let r = s.post_json("/rawmetrics", &json!({"name": slug, "dataschema": {"data": {"amount": "Nullable(Decimal(12,2))", "dim": "String"}}}));
            assert_eq!(r.status, 201, "{}", r.text);
            // Arrive in two requests with a flush between, so replacements cross buffer and files.
            let body: Vec<Value> = evs
                .iter()
                .map(|e| json!({"customer_id": format!("c{}", e.customer), "timestamp": T0 + e.at as i64,
                                "data": {"amount": e.amount.map(decimal_text), "dim": format!("d{}", e.dim)}}))
                .collect();
            let half = body.len() / 2;
            for part in [&body[..half], &body[half..]] {
                if part.is_empty() {
                    continue;
                }
                let r = s.post_json(&format!("/usage/{slug}"), &json!(part));
                assert_eq!(r.status, 200, "{}", r.text);
                s.wait_flushed();
            }
            let start = T0 + a as i64;
            let end = start + len as i64;
            let fmt = |t: i64| meterbase_schema_format(t);
            for agg in ["count", "sum", "min", "max", "avg", "unique_count", "latest", "earliest", "time_weighted_sum"] {
                let mut m = json!({"name": format!("{slug} {agg}"), "usage_event": slug, "aggregation": agg, "group_by": ["dim"]});
                if agg != "count" {
                    m["field"] = json!("amount");
                }
                let r = s.post_json("/billable_metrics", &m);
                assert_eq!(r.status, 201, "{}", r.text);
                let mslug = r.body["slug"].as_str().unwrap().to_string();
                let r = s.get(&format!("/billable_metrics/{mslug}/usage?start_date={}&end_date={}", fmt(start), fmt(end)));
                assert_eq!(r.status, 200, "{}", r.text);
                let got = by_customer_and_dim(&r.body);
                let want = reference(&evs, agg, start, end);
                prop_assert!(close(&got, &want), "{agg} over [{start}, {end}): got {got:?}, want {want:?}, events {evs:?}");
                // Hour windows (Berlin's hours are UTC's), answered in one query: every
                // window's value is the reference's for that window alone.
                let (got, how) = hourly(&s, &mslug, start, end);
                prop_assert_eq!(how.as_deref(), Some("one-query"));
                let want = hourly_reference(&evs, agg, start, end);
                prop_assert!(close(&got, &want), "{agg} by hour over [{start}, {end}): got {got:?}, want {want:?}, events {evs:?}");
                // On hour and day edges an aggregation that splits answers from per-file
                // partial aggregates (the first answer computes them, the next ones merge
                // those kept) and the raw rest; every answer is the reference's.
                let (hs, he) = (start - start.rem_euclid(3600), end + (3600 - end.rem_euclid(3600)) % 3600);
                let splits = ["count", "sum", "min", "max"].contains(&agg);
                // Its two files may hold one group's events interleaved in time: then the
                // time-weighted sum reads events (`time_weighted_sum_from_partials` has it
                // answer from partials).
                let may_split = agg == "time_weighted_sum";
                for (ps, pe) in [(hs, he), (T0 - 86_400, T0 + 4 * 86_400), (hs, he)] {
                    let r = s.get(&format!("/billable_metrics/{mslug}/usage?start_date={}&end_date={}", fmt(ps), fmt(pe)));
                    prop_assert_eq!(r.status, 200, "{}", r.text);
                    let served = r.header("x-meterbase-partials").map(str::to_string);
                    prop_assert!(may_split || served.is_some() == splits, "{} {:?}", agg, served);
                    let got = by_customer_and_dim(&r.body);
                    let want = reference(&evs, agg, ps, pe);
                    prop_assert!(close(&got, &want), "{agg} over [{ps}, {pe}) ({served:?}): got {got:?}, want {want:?}, events {evs:?}");
                }
                let (got, how) = hourly(&s, &mslug, hs, he);
                prop_assert_eq!(how.as_deref(), Some("one-query"));
                let want = hourly_reference(&evs, agg, hs, he);
                prop_assert!(close(&got, &want), "{agg} by hour over [{hs}, {he}): got {got:?}, want {want:?}, events {evs:?}");
            }
            // SQL metrics by hour: in one query where the shape allows (a grouped aggregate
            // over the half-open period), one per window where it does not (the same
            // statement with a LIMIT); both are the reference's per window.
            for (agg, expr, tail, how) in [
                ("sum", "sum(amount)", "", "one-query"),
                ("count", "count(*)", "", "one-query"),
                ("unique_count", "count(DISTINCT amount)", "", "one-query"),
                ("max", "max(amount)", "", "one-query"),
                ("sum", "sum(amount)", " LIMIT 1000000", "per-window"),
            ] {
                let sql = format!(
                    "SELECT customer_id, dim, {expr} AS value FROM \"{slug}\" \
                     WHERE timestamp >= '{{{{start_date}}}}' AND timestamp < '{{{{end_date}}}}' \
                     GROUP BY customer_id, dim{tail}"
                );
                let r = s.post_json("/billable_metrics", &json!({"name": format!("{slug} sql {agg}{tail}"), "sql": sql}));
                assert_eq!(r.status, 201, "{}", r.text);
                let mslug = r.body["slug"].as_str().unwrap().to_string();
                let (got, answered) = hourly(&s, &mslug, start, end);
                // A period within one hour is one window: one query either way.
                let windows = (end - 1).div_euclid(3600) - start.div_euclid(3600) + 1;
                let how = if windows > 1 { how } else { "one-query" };
                prop_assert_eq!(answered.as_deref(), Some(how), "{}", sql);
                let want = hourly_reference(&evs, agg, start, end);
                prop_assert!(close(&got, &want), "{sql} by hour over [{start}, {end}): got {got:?}, want {want:?}, events {evs:?}");
            }
            // DST-crossing day windows in Berlin: the windows partition the period.
            let m = json!({"name": format!("{slug} daily"), "usage_event": slug, "aggregation": "count"});
            let mslug = s.post_json("/billable_metrics", &m).body["slug"].as_str().unwrap().to_string();
            let total = s.get(&format!("/billable_metrics/{mslug}/usage?start_date={}&end_date={}", fmt(T0), fmt(T0 + 4 * 86_400)));
            let daily = s.get(&format!("/billable_metrics/{mslug}/usage?start_date={}&end_date={}&window=day&tz=Europe/Berlin", fmt(T0), fmt(T0 + 4 * 86_400)));
            let sum_daily: f64 = daily.body["rows"].as_array().unwrap().iter().map(|r| num(&r["value"])).sum();
            let sum_total: f64 = total.body["rows"].as_array().unwrap().iter().map(|r| num(&r["value"])).sum();
            prop_assert_eq!(sum_daily, sum_total);
            let starts: std::collections::BTreeSet<String> = daily.body["rows"].as_array().unwrap().iter().map(|r| r["window_start"].as_str().unwrap().to_string()).collect();
            prop_assert!(starts.iter().all(|w| w.ends_with("T23:00:00Z") || w.ends_with("T22:00:00Z") || w == "2025-03-29T00:00:00Z"), "{starts:?}");
            Ok(())
        })
        .unwrap();
}

/// The time-weighted sum from partial aggregates, against the reference: events arrive day
/// by day (each day's file apart in time from the others), are compacted, and periods on hour
/// and day edges answer from the files' partials, the value held into a period from the last
/// event before it; a late event inside a group's run of events of one file lands in a file
/// read together with that one, so answers still come from partials, still the reference's.
#[test]
fn time_weighted_sum_from_partials() {
    let dir = tempdir();
    let s = Server::start(&dir.path().join("d"), &["--flush-age-ms", "20"]);
    let mut runner = TestRunner::new(Config {
        cases: 4,
        ..Config::default()
    });
    let case = std::sync::atomic::AtomicUsize::new(0);
    let fmt = meterbase_schema_format;
    runner
        .run(&(events(), 0u32..86_400 * 3, 1u32..86_400 * 2), |(mut evs, a, len)| {
            let slug = format!("tw{}", case.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
            let r = s.post_json("/rawmetrics", &json!({"name": slug, "dataschema": {"data": {"amount": "Nullable(Decimal(12,2))", "dim": "String"}}}));
            assert_eq!(r.status, 201, "{}", r.text);
            let m = json!({"name": format!("{slug} tw"), "usage_event": slug, "aggregation": "time_weighted_sum", "field": "amount", "group_by": ["dim"]});
            let r = s.post_json("/billable_metrics", &m);
            assert_eq!(r.status, 201, "{}", r.text);
            let mslug = r.body["slug"].as_str().unwrap().to_string();
            let body = |e: &Ev| json!({"customer_id": format!("c{}", e.customer), "timestamp": T0 + e.at as i64,
                                       "data": {"amount": e.amount.map(decimal_text), "dim": format!("d{}", e.dim)}});
            for day in 0..4 {
                let part: Vec<Value> = evs.iter().filter(|e| e.at / 86_400 == day).map(body).collect();
                if !part.is_empty() {
                    let r = s.post_json(&format!("/usage/{slug}"), &json!(part));
                    assert_eq!(r.status, 200, "{}", r.text);
                    s.wait_flushed();
                }
            }
            let ask = |evs: &[Ev], ps: i64, pe: i64| -> Result<Option<String>, TestCaseError> {
                let r = s.get(&format!("/billable_metrics/{mslug}/usage?start_date={}&end_date={}", fmt(ps), fmt(pe)));
                prop_assert_eq!(r.status, 200, "{}", r.text);
                let served = r.header("x-meterbase-partials").map(str::to_string);
                let got = by_customer_and_dim(&r.body);
                let want = reference(evs, "time_weighted_sum", ps, pe);
                prop_assert!(close(&got, &want), "over [{ps}, {pe}) ({served:?}): got {got:?}, want {want:?}, events {evs:?}");
                Ok(served)
            };
            let (hs, he) = (T0 + (a as i64 / 3600) * 3600, T0 + i64::from((a + len).div_ceil(3600)) * 3600);
            let periods = [(hs, he), (T0, T0 + 86_400), (T0 + 86_400, T0 + 3 * 86_400), (T0 - 86_400, T0 + 5 * 86_400)];
            for compacted in [false, true] {
                if compacted {
                    common::compact(&s);
                }
                for (ps, pe) in periods {
                    for _ in 0..2 {
                        let served = ask(&evs, ps, pe)?;
                        prop_assert!(served.is_some(), "over [{ps}, {pe}) (compacted: {compacted}) no partials");
                    }
                }
            }
            // A late event between two of one group's events of one day: its file overlaps the
            // day's in time, so the two are read as one source and the answer still comes from
            // partials.
            let mut late = None;
            for day in 0..4u32 {
                let mut runs: BTreeMap<(u8, u8), Vec<u32>> = BTreeMap::new();
                for e in evs.iter().filter(|e| e.at / 86_400 == day) {
                    runs.entry((e.customer, e.dim)).or_default().push(e.at);
                }
                late = runs.into_iter().find_map(|((c, d), ats)| {
                    let (lo, hi) = (*ats.iter().min()?, *ats.iter().max()?);
                    (hi > lo + 1).then_some(Ev { customer: c, dim: d, at: lo + 1, amount: Some(777) })
                }).filter(|e| !evs.iter().any(|x| x.customer == e.customer && x.at == e.at));
                if late.is_some() {
                    break;
                }
            }
            if let Some(e) = late {
                let r = s.post_json(&format!("/usage/{slug}"), &json!([body(&e)]));
                assert_eq!(r.status, 200, "{}", r.text);
                s.wait_flushed();
                evs.push(e);
                let served = ask(&evs, T0 - 86_400, T0 + 5 * 86_400)?;
                prop_assert!(served.is_some(), "a late file read events: {served:?}");
                common::compact(&s);
                let served = ask(&evs, T0 - 86_400, T0 + 5 * 86_400)?;
                prop_assert!(served.is_some(), "after compaction no partials");
            }
            Ok(())
        })
        .unwrap();
}

/// A usage answer's values by (customer, dim) number.
fn by_customer_and_dim(body: &Value) -> BTreeMap<(u8, u8), Option<f64>> {
    body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let c: u8 = row["customer_id"].as_str().unwrap()[1..].parse().unwrap();
            let d: u8 = row["dim"].as_str().unwrap()[1..].parse().unwrap();
            let v = (!row["value"].is_null()).then(|| num(&row["value"]));
            ((c, d), v)
        })
        .collect()
}

type Hourly = BTreeMap<(i64, u8, u8), Option<f64>>;

/// A metric's usage by hour (Berlin), and how the server says it answered the windows.
fn hourly(s: &Server, mslug: &str, start: i64, end: i64) -> (Hourly, Option<String>) {
    let fmt = meterbase_schema_format;
    let r = s.get(&format!(
        "/billable_metrics/{mslug}/usage?start_date={}&end_date={}&window=hour&tz=Europe/Berlin",
        fmt(start),
        fmt(end)
    ));
    assert_eq!(r.status, 200, "{}", r.text);
    let mut got = Hourly::new();
    for row in r.body["rows"].as_array().unwrap() {
        let ws = chrono::DateTime::parse_from_rfc3339(row["window_start"].as_str().unwrap())
            .unwrap()
            .timestamp();
        let c: u8 = row["customer_id"].as_str().unwrap()[1..].parse().unwrap();
        let d: u8 = row["dim"].as_str().unwrap()[1..].parse().unwrap();
        let v = if row["value"].is_null() {
            None
        } else {
            Some(num(&row["value"]))
        };
        got.insert((ws, c, d), v);
    }
    (got, r.header("x-meterbase-windows").map(str::to_string))
}

/// The reference for each hour window of `[start, end)` on its own.
fn hourly_reference(evs: &[Ev], agg: &str, start: i64, end: i64) -> Hourly {
    let mut want = Hourly::new();
    let mut ws = start;
    while ws < end {
        let we = ((ws.div_euclid(3600) + 1) * 3600).min(end);
        for ((c, d), v) in reference(evs, agg, ws, we) {
            want.insert((ws, c, d), v);
        }
        ws = we;
    }
    want
}

fn close<K: PartialEq>(got: &BTreeMap<K, Option<f64>>, want: &BTreeMap<K, Option<f64>>) -> bool {
    got.len() == want.len()
        && got.iter().zip(want).all(|((gk, gv), (wk, wv))| {
            gk == wk
                && match (gv, wv) {
                    (Some(g), Some(w)) => (g - w).abs() <= 1e-6 * w.abs().max(1.0),
                    (None, None) => true,
                    _ => false,
                }
        })
}

fn decimal_text(hundredths: i64) -> String {
    let sign = if hundredths < 0 { "-" } else { "" };
    format!(
        "{sign}{}.{:02}",
        hundredths.abs() / 100,
        hundredths.abs() % 100
    )
}

fn meterbase_schema_format(epoch_secs: i64) -> String {
    chrono::DateTime::from_timestamp(epoch_secs, 0)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}
