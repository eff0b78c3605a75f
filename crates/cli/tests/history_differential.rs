//! A random history of 200k operations — inserts, replacements of old keys, late events,
//! range deletions — with flushes, compactions, crashes and clean restarts in between, checked
//! after every phase against a reference kept here: counts and sums per customer now and
//! `as_of` earlier phases; for one customer, explain's included events and contributions
//! (adding up to the usage value) and the reconcile digests against an independent Python
//! implementation. Zero mismatches allowed.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{
    Reply, Server, compact, customer_totals, digest_reference, num, reconcile_buckets, tempdir,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const T0: i64 = 1_735_689_600; // 2025-01-01T00:00:00Z
const DAYS: i64 = 30;
const CUSTOMERS: usize = 12;

type Key = (String, i64);

#[derive(Clone)]
enum Op {
    Put(Key, i64),
    Delete {
        customer: Option<String>,
        from: i64,
        to: i64,
    },
}

fn apply(rows: &mut BTreeMap<Key, i64>, op: &Op) -> u64 {
    match op {
        Op::Put(k, v) => {
            rows.insert(k.clone(), *v);
            0
        }
        Op::Delete { customer, from, to } => {
            let before = rows.len();
            rows.retain(|(c, ts), _| {
                !(customer.as_ref().is_none_or(|x| x == c) && *ts >= *from && *ts < *to)
            });
            (before - rows.len()) as u64
        }
    }
}

/// The reference rows as of the end of `phase`, rebuilt from the plain list of operations.
fn rows_after(ops: &[(usize, Op)], phase: usize) -> BTreeMap<Key, i64> {
    let mut rows: BTreeMap<Key, i64> = BTreeMap::new();
    for (p, op) in ops {
        if *p > phase {
            break;
        }
        apply(&mut rows, op);
    }
    rows
}

fn state_after(ops: &[(usize, Op)], phase: usize) -> BTreeMap<String, (u64, i64)> {
    totals(&rows_after(ops, phase))
}

/// The Python reference's `(count, digest)` per `customer|day` for `rows`.
fn reference_digests(
    dir: &std::path::Path,
    rows: &[(&Key, &i64)],
) -> BTreeMap<String, (u64, String)> {
    let events: Vec<Value> = rows
        .iter()
        .map(|((c, ts), v)| json!({"customer_id": c, "timestamp": ts, "data": {"cpu_hours_consumed": v, "region": "r"}}))
        .collect();
    digest_reference(
        dir,
        &json!({"cpu_hours_consumed": "Float64", "region": "String"}),
        &events,
    )
}

/// One customer over a period, `as_of` an instant or now: explain's included events and
/// their contributions, the usage value and the reconcile buckets, against the reference.
fn check_explain_and_reconcile(
    s: &Server,
    dir: &std::path::Path,
    rows: &BTreeMap<Key, i64>,
    customer: &str,
    (from, to): (i64, i64),
    as_of: Option<&str>,
) -> Vec<String> {
    let mut wrong = Vec::new();
    let at = as_of.map_or(String::new(), |t| format!("&as_of={t}"));
    let label = format!("{customer} [{}, {}){at}", iso(from), iso(to));
    let live: Vec<(&Key, &i64)> = rows
        .iter()
        .filter(|((c, ts), _)| c == customer && *ts >= from && *ts < to)
        .collect();
    let mut items = Vec::new();
    let mut cursor = String::new();
    let mut head = Value::Null;
    loop {
        let r = s.get(&format!(
            "/billable_metrics/cpu/usage/explain?customer_id={customer}&start_date={}&end_date={}{at}&limit=1000{cursor}",
            iso(from),
            iso(to)
        ));
        assert_eq!(r.status, 200, "{label}: {}", r.text);
        items.extend(r.body["items"].as_array().cloned().unwrap_or_default());
        if head.is_null() {
            head = r.body.clone();
        }
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    let got: BTreeMap<i64, i64> = items
        .iter()
        .map(|i| {
            let ts = chrono::DateTime::parse_from_rfc3339(i["timestamp"].as_str().unwrap())
                .unwrap()
                .timestamp();
            (ts, num(&i["contribution"]) as i64)
        })
        .collect();
    let want: BTreeMap<i64, i64> = live.iter().map(|((_, ts), v)| (*ts, **v)).collect();
    if got != want || items.len() != live.len() {
        wrong.push(format!(
            "{label}: explain lists {got:?}, the reference {want:?}"
        ));
    }
    let total: i64 = want.values().sum();
    let value = if live.is_empty() { None } else { Some(total) };
    if head["value"].as_f64().map(|v| v as i64) != value {
        wrong.push(format!(
            "{label}: explain's value {} against the reference {value:?}",
            head["value"]
        ));
    }
    let contributions: i64 = got.values().sum();
    if value.is_some_and(|v| v != contributions) {
        wrong.push(format!(
            "{label}: contributions add up to {contributions}, not {total}"
        ));
    }
    let r = s.get(&format!(
        "/usage/compute_events/reconcile?from={}&to={}&customer_id={customer}&by=day{at}",
        iso(from),
        iso(to)
    ));
    assert_eq!(r.status, 200, "{label}: {}", r.text);
    let buckets = reconcile_buckets(&r.body);
    let reference = reference_digests(dir, &live);
    if buckets != reference {
        wrong.push(format!(
            "{label}: reconcile {buckets:?}\n reference {reference:?}"
        ));
    }
    wrong
}

fn totals(rows: &BTreeMap<Key, i64>) -> BTreeMap<String, (u64, i64)> {
    let mut out = BTreeMap::new();
    for ((c, _), v) in rows.iter() {
        let (c, v) = (c.clone(), *v);
        let e = out.entry(c).or_insert((0u64, 0i64));
        e.0 += 1;
        e.1 += v;
    }
    out
}

fn server_state(s: &Server, as_of: Option<&str>) -> BTreeMap<String, (u64, i64)> {
    customer_totals(s, as_of)
        .iter()
        .map(|r| {
            (
                r["customer_id"].as_str().unwrap().to_string(),
                (r["n"].as_u64().unwrap(), num(&r["v"]) as i64),
            )
        })
        .collect()
}

/// The time-weighted sum per customer over `[start, end)` (each value held until the
/// customer's next event or the end; the last value before `start` held into it), in hours,
/// from the exact Σ value × seconds divided once: the bits the server's exact sum gives.
fn time_weighted(rows: &BTreeMap<Key, i64>, start: i64, end: i64) -> BTreeMap<String, f64> {
    let mut by_customer: BTreeMap<&str, Vec<(i64, i64)>> = BTreeMap::new();
    for ((c, ts), v) in rows {
        if *ts < end {
            by_customer.entry(c.as_str()).or_default().push((*ts, *v));
        }
    }
    let mut out = BTreeMap::new();
    for (c, points) in by_customer {
        // Keys are (customer, timestamp): one point per instant, already in time order.
        let from = points.partition_point(|(t, _)| *t < start);
        let mut held: Vec<(i64, i64)> = points[from..].to_vec();
        if let Some((_, v)) = from.checked_sub(1).map(|i| points[i]) {
            held.insert(0, (start, v));
        }
        if held.is_empty() {
            continue;
        }
        let total: i128 = held
            .iter()
            .enumerate()
            .map(|(i, (t, v))| {
                let next = held.get(i + 1).map_or(end, |p| p.0);
                i128::from(*v) * i128::from(next - t)
            })
            .sum();
        out.insert(c.to_string(), total as f64 / 3600.0);
    }
    out
}

/// Each row's `value` by `customer_id`, read from the answer's text by Rust's float parser:
/// serde_json's default one is not always correctly rounded (3961.7744444444443 reads as
/// 3961.774444444444), and these values are compared bit for bit.
fn values_as_written(text: &str) -> BTreeMap<String, f64> {
    text.split("{\"customer_id\":\"")
        .skip(1)
        .map(|row| {
            let (customer, rest) = row.split_once('"').unwrap_or_default();
            let value = rest
                .split_once("\"value\":")
                .map(|(_, v)| v.split([',', '}']).next().unwrap_or_default())
                .unwrap_or_default();
            (customer.to_string(), value.parse().unwrap_or(f64::NAN))
        })
        .collect()
}

/// A metric's usage for every customer over `[start, end)`; panics unless 200.
fn usage(s: &Server, metric: &str, start: i64, end: i64) -> Reply {
    let r = s.get(&format!(
        "/billable_metrics/{metric}/usage?start_date={}&end_date={}",
        iso(start),
        iso(end)
    ));
    assert_eq!(r.status, 200, "{}", r.text);
    r
}

fn iso(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn instant_between_phases() -> String {
    std::thread::sleep(Duration::from_millis(3));
    let t = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    std::thread::sleep(Duration::from_millis(3));
    t
}

#[test]
fn random_history_matches_the_reference_now_and_as_of_every_phase() {
    let files_one_seq = random_history(History {
        ops: 200_000,
        deletions_per_100k: 200,
        keep_history: true,
    });
    eprintln!("{files_one_seq} compacted files with one sequence");
}

/// Without history kept, compaction leaves one version per key and forgets spent deletions,
/// so days it merges take one sequence (`files_one_seq`); the replacements and deletions
/// that follow must still order against those rows exactly.
#[test]
fn replacements_and_deletions_after_rows_share_one_sequence_match_the_reference() {
    let files_one_seq = random_history(History {
        ops: 100_000,
        deletions_per_100k: 20,
        keep_history: false,
    });
    assert!(files_one_seq > 0, "no compaction gave a file one sequence");
}

struct History {
    ops: usize,
    deletions_per_100k: u32,
    /// Otherwise `--history-retention-days 0`, and only the present is checked.
    keep_history: bool,
}

/// Runs a random history against a server and the reference; returns how many compacted
/// files took one sequence.
fn random_history(h: History) -> usize {
    let total_ops: usize = std::env::var("METERBASE_HISTORY_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(h.ops);
    let phases = 20;
    let per_phase = total_ops / phases;
    let dir = tempdir();
    // Persists compare keys with at most a thousand older rows, so most corrections are
    // left to the compaction passes they wake, which then run between (and while) the
    // phases' writes, flushes and the explicit compactions; no timed pass runs.
    let mut args = vec![
        "--flush-bytes",
        "300000",
        "--flush-age-ms",
        "200",
        "--compaction-interval-secs",
        "3600",
        "--compaction-resolve-delay-ms",
        "50",
        "--persist-compare-rows",
        "1000",
        "--compaction-grace-secs",
        "0",
    ];
    if h.keep_history {
        // Several compacted files per month, whose partials a usage answer combines.
        args.extend(["--compaction-max-rows", "20000"]);
    } else {
        args.extend(["--history-retention-days", "0"]);
    }
    let mut s = Server::start(&dir.path().join("d"), &args);
    let mut files_one_seq = 0;
    let mut explicit_passes = 0;
    s.create_compute_events();
    let r = s.post_json(
        "/billable_metrics",
        &json!({"name": "CPU", "slug": "cpu", "usage_event": "compute_events",
                "aggregation": "sum", "field": "cpu_hours_consumed"}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let r = s.post_json(
        "/billable_metrics",
        &json!({"name": "CPU held", "slug": "cpu_tw", "usage_event": "compute_events",
                "aggregation": "time_weighted_sum", "field": "cpu_hours_consumed"}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let mut time_weighted_from_partials = 0usize;
    let mut rng = StdRng::seed_from_u64(0x6d65_7465_7262_6173);
    let mut ops: Vec<(usize, Op)> = Vec::new();
    let mut current: BTreeMap<Key, i64> = BTreeMap::new();
    let mut keys: Vec<Key> = Vec::new();
    let mut instants: Vec<String> = Vec::new();
    let mut mismatches = Vec::new();
    let mut done = 0usize;
    let (mut partial_answers, mut kept_partials, mut combined_partials) = (0usize, false, false);
    for phase in 0..phases {
        let mut n = 0;
        while n < per_phase {
            if rng.random_range(0..100_000) < h.deletions_per_100k {
                // A range deletion: one customer, or everyone, over a few hours to days.
                let from = T0 + rng.random_range(0..DAYS * 24) * 3600;
                let to = from + rng.random_range(1..72) * 3600;
                let customer = rng
                    .random_bool(0.7)
                    .then(|| format!("c{}", rng.random_range(0..CUSTOMERS)));
                let mut q = url::form_urlencoded::Serializer::new(String::new());
                if let Some(c) = &customer {
                    q.append_pair("customer_id", c);
                }
                q.append_pair("from", &iso(from))
                    .append_pair("to", &iso(to));
                let r = s.delete(&format!("/usage/compute_events/events?{}", q.finish()));
                assert_eq!(r.status, 200, "{}", r.text);
                let op = Op::Delete { customer, from, to };
                let removed = apply(&mut current, &op);
                ops.push((phase, op));
                if r.body["deleted"].as_u64() != Some(removed) {
                    mismatches.push(format!(
                        "phase {phase}: deletion reported {} rows, the reference removed {removed}",
                        r.body["deleted"]
                    ));
                }
                n += 1;
                continue;
            }
            // A batch of puts: new keys, replacements of any earlier key (late events
            // included: old days get rows long after they were flushed and compacted).
            let batch = rng.random_range(50..400).min(per_phase - n);
            let mut events = Vec::with_capacity(batch);
            let mut in_batch: BTreeMap<Key, i64> = BTreeMap::new();
            for _ in 0..batch {
                let key = if !keys.is_empty() && rng.random_bool(0.3) {
                    keys[rng.random_range(0..keys.len())].clone()
                } else {
                    let k = (
                        format!("c{}", rng.random_range(0..CUSTOMERS)),
                        T0 + rng.random_range(0..DAYS * 86_400),
                    );
                    keys.push(k.clone());
                    k
                };
                let v = rng.random_range(1..100);
                in_batch.insert(key.clone(), v);
                events.push(json!({"customer_id": key.0, "timestamp": key.1, "data": {"cpu_hours_consumed": v, "region": "r"}}));
            }
            let r = s.post_json("/usage/compute_events", &Value::Array(events));
            assert_eq!(r.status, 200, "{}", r.text);
            // Within one request the last event of a key wins, as in the file order.
            for (k, v) in in_batch {
                let op = Op::Put(k, v);
                apply(&mut current, &op);
                ops.push((phase, op));
            }
            n += batch;
        }
        done += n;
        match phase % 5 {
            0 => s.wait_flushed(),
            1 => {
                s.wait_flushed();
                let r = compact(&s);
                explicit_passes += 1;
                eprintln!("phase {phase}: compaction {r}");
                files_one_seq += r["files_one_seq"].as_u64().unwrap_or(0) as usize;
            }
            2 => s.restart(),
            3 => {
                s.terminate();
                s.spawn();
            }
            _ => {}
        }
        let metrics = s.request("GET", "/metrics", None, &[], None).text;
        let files = metrics
            .lines()
            .find(|l| l.starts_with("meterbase_live_files "))
            .unwrap_or_default()
            .to_string();
        eprintln!("after phase {phase}: {files}");
        instants.push(instant_between_phases());
        let mut check = |label: String,
                         got: BTreeMap<String, (u64, i64)>,
                         want: BTreeMap<String, (u64, i64)>| {
            if got != want {
                mismatches.push(format!("{label}: server {got:?}\n reference {want:?}"));
            }
        };
        check(
            format!("phase {phase} now"),
            server_state(&s, None),
            totals(&current),
        );
        for _ in 0..if h.keep_history { 3 } else { 0 } {
            let past = rng.random_range(0..=phase);
            check(
                format!("phase {phase} as_of phase {past}"),
                server_state(&s, Some(&instants[past])),
                state_after(&ops, past),
            );
        }
        // The metric endpoint for every customer over a random whole-hour period: files the
        // current view reads straight answer from their per-file partial aggregates, the
        // rest raw; the sums must be the reference's.
        let ps = T0 + rng.random_range(0..DAYS * 24) * 3600;
        let pe = (ps + rng.random_range(1..DAYS * 24) * 3600).min(T0 + DAYS * 86_400);
        let r = usage(&s, "cpu", ps, pe);
        let served = r.header("x-meterbase-partials").map(str::to_string);
        partial_answers += usize::from(served.is_some());
        // Asked again, files answer from the partials the first answer kept (unless a
        // compaction pass the persists woke changed them in between), with the same rows.
        let again = usage(&s, "cpu", ps, pe);
        let served_again = again.header("x-meterbase-partials").unwrap_or_default();
        if again.body["rows"] != r.body["rows"] {
            mismatches.push(format!(
                "phase {phase}: asked again ({served_again}), {} instead of {}",
                again.body["rows"], r.body["rows"]
            ));
        }
        kept_partials |=
            served_again.contains("computed=0;") && !served_again.starts_with("kept=0;");
        combined_partials |= !served_again.contains("combined=0;");
        let got: BTreeMap<String, i64> = r.body["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                (
                    row["customer_id"].as_str().unwrap().to_string(),
                    num(&row["value"]) as i64,
                )
            })
            .collect();
        let mut want: BTreeMap<String, i64> = BTreeMap::new();
        for ((c, ts), v) in current.range(..) {
            if (ps..pe).contains(ts) {
                *want.entry(c.clone()).or_default() += v;
            }
        }
        if got != want {
            mismatches.push(format!(
                "phase {phase}: usage over [{}, {}) ({served:?}): server {got:?}\n reference {want:?}",
                iso(ps),
                iso(pe)
            ));
        }
        // The time-weighted metric over the same period: from partials where no customer's
        // files interleave in time (a late event's file does, until compaction), bit for bit.
        let r = usage(&s, "cpu_tw", ps, pe);
        let served = r.header("x-meterbase-partials").map(str::to_string);
        time_weighted_from_partials += usize::from(served.is_some());
        let got = values_as_written(&r.text);
        let want = time_weighted(&current, ps, pe);
        if got != want {
            mismatches.push(format!(
                "phase {phase}: time-weighted over [{}, {}) ({served:?}): server {got:?}\n reference {want:?}",
                iso(ps),
                iso(pe)
            ));
        }
        // Explain and reconcile for one customer over ten days, now or as of a past phase.
        let customer = format!("c{}", rng.random_range(0..CUSTOMERS));
        let from = T0 + rng.random_range(0..DAYS - 10) * 86_400;
        let past = (h.keep_history && rng.random_bool(0.5)).then(|| rng.random_range(0..=phase));
        let rows = past.map_or_else(|| current.clone(), |p| rows_after(&ops, p));
        mismatches.extend(check_explain_and_reconcile(
            &s,
            dir.path(),
            &rows,
            &customer,
            (from, from + 10 * 86_400),
            past.map(|p| instants[p].as_str()),
        ));
        assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    }
    // A last compaction over everything changes no answer, now or as of any phase.
    let r = compact(&s);
    explicit_passes += 1;
    files_one_seq += r["files_one_seq"].as_u64().unwrap_or(0) as usize;
    // Passes the persists woke ran too (each pass that merged something logs one line).
    let log = std::fs::read_to_string(dir.path().join("d.log")).unwrap_or_default();
    let passes = log
        .lines()
        .filter(|l| l.contains("compacted") && l.contains("files_in"))
        .count();
    assert!(
        passes > explicit_passes,
        "{passes} compaction passes logged, {explicit_passes} of them asked for"
    );
    eprintln!("{passes} compaction passes, {explicit_passes} of them asked for");
    for (p, t) in instants.iter().enumerate().filter(|_| h.keep_history) {
        let want = state_after(&ops, p);
        let got = server_state(&s, Some(t));
        assert_eq!(got, want, "after the final compaction, as_of phase {p}");
    }
    assert_eq!(server_state(&s, None), state_after(&ops, phases - 1));
    assert_eq!(
        partial_answers, phases,
        "every usage answer came from partials"
    );
    assert!(
        kept_partials,
        "no usage answer used partials kept from an earlier one"
    );
    // Without history, compaction leaves one file per day range: nothing to combine.
    assert!(
        combined_partials || !h.keep_history,
        "no usage answer combined the partials of compacted files"
    );
    assert!(
        time_weighted_from_partials > 0,
        "no time-weighted answer came from partials"
    );
    eprintln!(
        "{done} operations in {phases} phases, zero mismatches; \
         {time_weighted_from_partials} time-weighted answers from partials"
    );
    files_one_seq
}
