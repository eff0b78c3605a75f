//! The DuckDB recipe of `docs/storage.md`, run as written against a live server's files
//! after replacements, range deletions and compaction: its per-customer totals equal
//! `/sql`'s, on DuckDB 1.5 and 2.0 (installed into .venv by `make test`).

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{Server, compact, customer_totals, num, repo, tempdir};
use serde_json::{Value, json};

/// The SQL block under "Reading the live data with DuckDB", exactly as documented.
fn documented_recipe() -> String {
    let doc = std::fs::read_to_string(repo().join("docs/storage.md")).unwrap();
    let section = &doc[doc
        .find("## Reading the live data without Delta, with DuckDB")
        .expect("the section is in docs/storage.md")..];
    let start = section.find("```sql\n").expect("an sql block") + "```sql\n".len();
    let end = start + section[start..].find("```").unwrap();
    section[start..end].to_string()
}

/// Runs `sql` in DuckDB; the rows of its last statement as JSON arrays.
fn duckdb(python: &str, extra_path: Option<&str>, sql: &str) -> Vec<Value> {
    let script = "import duckdb, json, sys\n\
        rows = duckdb.connect().execute(sys.stdin.read()).fetchall()\n\
        print(json.dumps({'version': duckdb.__version__, 'rows': [[r[0], r[1], r[2]] for r in rows]}))\n";
    let mut cmd = Command::new(python);
    cmd.arg("-c").arg(script);
    if let Some(p) = extra_path {
        cmd.env("PYTHONPATH", p);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(sql.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "DuckDB failed on the documented recipe:\n{}\n{sql}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("DuckDB {}", v["version"]);
    v["rows"].as_array().cloned().unwrap()
}

fn recipe_totals(
    store: &Path,
    org: &str,
    type_id: &str,
    python: &str,
    duckdb2: Option<&str>,
) -> Vec<Value> {
    let recipe = documented_recipe()
        .replace("data/store/", &format!("{}/", store.display()))
        .replace("<org>", org)
        .replace("<type id>", type_id);
    let last = recipe.rfind("WITH latest AS").expect("the final query");
    let (setup, query) = recipe.split_at(last);
    let sql = format!(
        "{setup}SELECT customer_id, count(*)::BIGINT AS n, sum(cpu_hours_consumed) AS v FROM ({}) GROUP BY 1 ORDER BY 1;",
        query.trim().trim_end_matches(';')
    );
    duckdb(python, duckdb2, &sql)
}

fn assert_same(server: &[Value], recipe: &[Value], when: &str) {
    assert_eq!(
        server.len(),
        recipe.len(),
        "{when}: {server:?} vs {recipe:?}"
    );
    for (s, r) in server.iter().zip(recipe) {
        assert_eq!(s["customer_id"], r[0], "{when}");
        assert_eq!(s["n"], r[1], "{when}: {s} vs {r}");
        let (a, b) = (num(&s["v"]), num(&r[2]));
        assert!(
            (a - b).abs() <= 1e-9 * a.abs().max(1.0),
            "{when}: {a} vs {b}"
        );
    }
}

#[test]
fn the_documented_duckdb_recipe_gives_the_servers_totals() {
    let Ok(python) = std::env::var("METERBASE_TEST_PYTHON") else {
        eprintln!(
            "METERBASE_TEST_PYTHON is not set: the DuckDB recipe is not run here (make test sets it)"
        );
        return;
    };
    let duckdb2 = std::env::var("METERBASE_TEST_DUCKDB2").ok();
    let dir = tempdir();
    let data = dir.path().join("d");
    let s = Server::start(&data, &["--flush-age-ms", "50"]);
    s.create_compute_events();
    let day = 1_735_689_600i64; // 2025-01-01
    let event = |c: i64, t: i64, v: f64| json!({"customer_id": format!("c{c}"), "timestamp": t, "data": {"cpu_hours_consumed": v, "region": "eu"}});
    let events: Vec<Value> = (0..300)
        .map(|i| event(i % 5, day + i * 600, 1.0 + i as f64))
        .collect();
    assert_eq!(
        s.post_json("/usage/compute_events", &json!(events)).status,
        200
    );
    s.wait_flushed();
    // Corrections: 30 events re-sent with new values, then two deletions, then late arrivals
    // inside a deleted range (written after the deletion, so they stay).
    let again: Vec<Value> = (0..300)
        .step_by(10)
        .map(|i| event(i % 5, day + i * 600, 1000.0 + i as f64))
        .collect();
    assert_eq!(
        s.post_json("/usage/compute_events", &json!(again)).status,
        200
    );
    s.wait_flushed();
    let r = s.delete(
        "/usage/compute_events/events?customer_id=c1&from=2025-01-01T00:00:00Z&to=2025-01-01T12:00:00Z",
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        s.delete("/usage/compute_events/events?customer_id=c3")
            .status,
        200
    );
    let late: Vec<Value> = (0..10).map(|i| event(1, day + 60 + i * 60, 0.25)).collect();
    assert_eq!(
        s.post_json("/usage/compute_events", &json!(late)).status,
        200
    );
    s.wait_flushed();

    let type_id = s.get("/rawmetrics/compute_events").body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let org = std::fs::read_dir(data.join("store"))
        .unwrap()
        .flatten()
        .find(|e| e.path().join("compute_events").exists())
        .unwrap()
        .file_name()
        .to_string_lossy()
        .into_owned();
    let store = data.join("store");
    for phase in ["before compaction", "after compaction"] {
        if phase == "after compaction" {
            compact(&s);
        }
        let server = customer_totals(&s, None);
        assert!(server.iter().all(|r| r["customer_id"] != "c3"));
        for extra in [None, duckdb2.as_deref()] {
            let recipe = recipe_totals(&store, &org, &type_id, &python, extra);
            assert_same(&server, &recipe, phase);
        }
    }
}
