//! Open tables: what `crates/cli/tests/open_tables*.rs` share. The server's per-customer
//! answer, publication now, the three outside readers (`scripts/delta_read.py`) on a local
//! folder or an `s3://` table, and the reference the random histories keep.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::process::Command;

use serde_json::Value;

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
