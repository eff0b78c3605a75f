//! Open tables: what `crates/cli/tests/open_tables*.rs` share. The server's per-customer
//! answer, publication now, the three outside readers (`scripts/delta_read.py`) on a local
//! folder or an `s3://` table, and the reference the random histories keep.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::ops::Range;
use std::process::Command;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use super::{Server, customer_totals, num, repo};

/// customer → (rows, sum of cpu_hours_consumed).
pub type Totals = BTreeMap<String, (u64, i64)>;

/// The server's answer: customer → (rows, sum).
pub fn server_totals(s: &Server) -> Totals {
    customer_totals(s, None)
        .iter()
        .map(|r| {
            (
                r["customer_id"].as_str().unwrap().to_string(),
                (r["n"].as_u64().unwrap(), num(&r["v"]) as i64),
            )
        })
        .collect()
}

/// Publishes every table now; the compute_events table's Delta version.
pub fn publish(s: &Server) -> i64 {
    let r = s.admin("POST", "/admin/open_tables/publish?flush=true", None);
    assert_eq!(r.status, 200, "{}", r.text);
    let t = &r.body["tables"][0];
    assert!(t["error"].is_null(), "{}", r.text);
    t["version"].as_i64().expect("a Delta version")
}

/// What each reader sees of `table` (a folder, or an `s3://` URL read with the `AWS_*`
/// environment) at `version` (or the latest).
pub fn readers<T: AsRef<OsStr> + ?Sized>(
    table: &T,
    version: Option<i64>,
) -> BTreeMap<String, Result<Totals, String>> {
    let mut cmd = Command::new(repo().join(".venv/bin/python"));
    cmd.arg(repo().join("scripts/delta_read.py"))
        .arg(table)
        .args(["--sum", "cpu_hours_consumed"]);
    if let Some(v) = version {
        cmd.args(["--version", &v.to_string()]);
    }
    let out = cmd
        .output()
        .expect("run scripts/delta_read.py (make test installs .venv)");
    let body: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "delta_read.py: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    body["readers"]
        .as_object()
        .expect("readers")
        .iter()
        .map(|(name, r)| {
            let seen = match r["rows"].as_array() {
                Some(rows) => Ok(rows
                    .iter()
                    .map(|row| {
                        (
                            row[0].as_str().unwrap_or_default().to_string(),
                            (row[1].as_u64().unwrap_or(0), num(&row[2]) as i64),
                        )
                    })
                    .collect()),
                None => Err(r["error"].to_string()),
            };
            (name.clone(), seen)
        })
        .collect()
}

/// Mismatches between every reader of `table` at `version` and `want`.
pub fn compare<T: AsRef<OsStr> + ?Sized>(
    table: &T,
    version: Option<i64>,
    want: &Totals,
    label: &str,
) -> Vec<String> {
    let mut wrong = Vec::new();
    let seen = readers(table, version);
    assert_eq!(seen.len(), 3, "three readers");
    for (reader, got) in seen {
        match got {
            Ok(got) if &got == want => {}
            Ok(got) => wrong.push(format!("{label}: {reader} reads {got:?}\n  want {want:?}")),
            Err(e) => wrong.push(format!("{label}: {reader} failed: {e}")),
        }
    }
    wrong
}

/// A random history sent to a server, and the reference rows it leaves: (customer,
/// timestamp) → value, one per unique key, deletions applied.
pub struct History {
    rng: StdRng,
    pub rows: BTreeMap<(String, i64), i64>,
    keys: Vec<(String, i64)>,
    customers: usize,
    days: i64,
}

/// 2025-01-01T00:00:00Z, where the histories' events start.
pub const T0: i64 = 1_735_689_600;

impl History {
    pub fn new(seed: u64, customers: usize, days: i64) -> History {
        History {
            rng: StdRng::seed_from_u64(seed),
            rows: BTreeMap::new(),
            keys: Vec::new(),
            customers,
            days,
        }
    }

    /// `batches` requests of `per_batch` events; a third re-send an earlier key (a
    /// replacement, often of a flushed or compacted row: a late event). After each request
    /// the buffers are persisted with probability `flush`, so versions of a key end up in
    /// the buffer, in one file, or across files.
    pub fn puts(&mut self, s: &Server, batches: Range<usize>, per_batch: Range<usize>, flush: f64) {
        for _ in 0..self.rng.random_range(batches) {
            let mut events = Vec::new();
            for _ in 0..self.rng.random_range(per_batch.clone()) {
                let key = if !self.keys.is_empty() && self.rng.random_bool(0.3) {
                    self.keys[self.rng.random_range(0..self.keys.len())].clone()
                } else {
                    let k = (
                        format!("c{}", self.rng.random_range(0..self.customers)),
                        T0 + self.rng.random_range(0..self.days * 86_400),
                    );
                    self.keys.push(k.clone());
                    k
                };
                let v = self.rng.random_range(1..100);
                self.rows.insert(key.clone(), v);
                events.push(json!({"customer_id": key.0, "timestamp": key.1,
                                   "data": {"cpu_hours_consumed": v, "region": "r"}}));
            }
            let r = s.post_json("/usage/compute_events", &Value::Array(events));
            assert_eq!(r.status, 200, "{}", r.text);
            if self.rng.random_bool(flush) {
                s.wait_flushed();
            }
        }
    }

    /// A range deletion of one customer (or, 40% of the time, everyone) over 1 to
    /// `max_hours` hours.
    pub fn delete(&mut self, s: &Server, max_hours: i64) {
        let from = T0 + self.rng.random_range(0..self.days * 24) * 3600;
        let to = from + self.rng.random_range(1..max_hours) * 3600;
        let customer = self
            .rng
            .random_bool(0.6)
            .then(|| format!("c{}", self.rng.random_range(0..self.customers)));
        let mut q = format!("from={}&to={}", iso(from), iso(to));
        if let Some(c) = &customer {
            q.push_str(&format!("&customer_id={c}"));
        }
        let r = s.delete(&format!("/usage/compute_events/events?{q}"));
        assert_eq!(r.status, 200, "{}", r.text);
        apply(&mut self.rows, customer.as_deref(), from, to);
    }

    /// The reference's per-customer totals.
    pub fn totals(&self) -> Totals {
        totals(&self.rows)
    }
}

/// The reference after a range deletion of `customer` (or everyone) over `[from, to)`.
pub fn apply(rows: &mut BTreeMap<(String, i64), i64>, customer: Option<&str>, from: i64, to: i64) {
    rows.retain(|(c, ts), _| !(customer.is_none_or(|x| x == c) && *ts >= from && *ts < to));
}

/// The reference's per-customer totals.
pub fn totals(rows: &BTreeMap<(String, i64), i64>) -> Totals {
    let mut out = Totals::new();
    for ((c, _), v) in rows {
        let e = out.entry(c.clone()).or_default();
        e.0 += 1;
        e.1 += v;
    }
    out
}

/// Seconds since the epoch as RFC 3339 UTC.
pub fn iso(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
