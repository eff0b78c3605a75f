//! One tenant's runaway queries do not stop anyone else's: queries that would run for hours
//! stop using CPU within a second of their cap or of their client going away (measured from
//! the query threads' CPU times in `/proc`), a tenant's queries queue behind its own, not in
//! front of another tenant's, a query that cannot start within its cap is a 503, and a
//! deletion answers whatever the queries ahead of its count.

mod common;

use std::time::{Duration, Instant};

use common::{Server, agent_with_timeout, tempdir};
use serde_json::json;

/// CPU seconds the server's query threads have used so far.
fn query_cpu(pid: i32) -> f64 {
    let mut ticks = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // pid (comm) state … utime stime: fields 14 and 15, counted after the comm.
        let Some((comm, rest)) = stat.split_once(" (").and_then(|(_, r)| r.rsplit_once(") "))
        else {
            continue;
        };
        if comm != "query" {
            continue;
        }
        let fields: Vec<&str> = rest.split_whitespace().collect();
        ticks += fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
    }
    ticks as f64 / 100.0
}

/// CPU the query threads use in the second that starts one second after now.
fn cpu_a_second_later(pid: i32) -> f64 {
    std::thread::sleep(Duration::from_secs(1));
    let before = query_cpu(pid);
    std::thread::sleep(Duration::from_secs(1));
    query_cpu(pid) - before
}

const RUNAWAYS: [(&str, &str); 6] = [
    (
        "cross join",
        "SELECT count(*) FROM (SELECT * FROM generate_series(1, 1000000000)) a CROSS JOIN (SELECT * FROM generate_series(1, 1000000000)) b",
    ),
    (
        "self-join",
        "SELECT a.region, count(*) FROM compute_events a JOIN compute_events b ON a.region = b.region GROUP BY 1",
    ),
    (
        "generate_series in a subquery",
        "SELECT count(*) FROM (SELECT value * 2 AS v FROM generate_series(1, 100000000000)) t WHERE v % 7 = 3",
    ),
    (
        "huge ORDER BY",
        "SELECT a.customer_id, b.timestamp FROM compute_events a JOIN compute_events b ON a.region = b.region ORDER BY 2, 1",
    ),
    (
        "window over the whole table",
        "SELECT max(s) FROM (SELECT sum(cpu_hours_consumed) OVER (ORDER BY timestamp ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS s FROM (SELECT a.timestamp, a.cpu_hours_consumed FROM compute_events a JOIN compute_events b ON a.region = b.region) j) w",
    ),
    (
        "recursive CTE",
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r",
    ),
];

fn server_with_a_table(dir: &std::path::Path, timeout_ms: &str, extra: &[&str]) -> Server {
    let mut args = vec![
        "--query-timeout-ms",
        timeout_ms,
        "--query-memory-bytes",
        "268435456",
    ];
    args.extend_from_slice(extra);
    let s = Server::start(dir, &args);
    s.create_compute_events();
    let events: Vec<_> = (0..60_000)
        .map(|i| {
            json!({"customer_id": format!("c{}", i % 100), "timestamp": 1_735_689_600 + i,
                   "data": {"cpu_hours_consumed": 1.0, "region": format!("r{}", i % 3)}})
        })
        .collect();
    let r = s.post_json("/usage/compute_events", &json!(events));
    assert_eq!(r.status, 200, "{}", r.text);
    s
}

#[test]
fn a_query_over_its_cap_stops_using_cpu_within_a_second() {
    let dir = tempdir();
    let s = server_with_a_table(&dir.path().join("d"), "2000", &[]);
    for (name, sql) in RUNAWAYS {
        let started = Instant::now();
        let r = s.post_json("/sql", &json!({ "sql": sql }));
        let took = started.elapsed();
        assert_eq!(r.status, 422, "{name}: {}", r.text);
        assert!(
            took < Duration::from_secs(10),
            "{name}: answered after {took:?}"
        );
        let after = cpu_a_second_later(s.pid());
        eprintln!(
            "{name}: 422 after {took:?}; query threads used {after:.2} CPU-s in the second after the next"
        );
        assert!(after < 0.2, "{name}: {after} CPU-s after its cap");
        let started = Instant::now();
        assert_eq!(s.sql("SELECT 1 AS one")[0]["one"], 1);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{name}: SELECT 1 waited"
        );
    }
}

#[test]
fn a_query_whose_client_goes_away_stops() {
    let dir = tempdir();
    // A cap far away: only the client's leaving can stop the query in time.
    let s = server_with_a_table(&dir.path().join("d"), "600000", &[]);
    let impatient = agent_with_timeout(Duration::from_millis(700));
    let (_, sql) = RUNAWAYS[1];
    let url = format!("{}/sql", s.addr);
    let gone = impatient
        .post(&url)
        .header("x-api-key", &s.key)
        .send_json(json!({ "sql": sql }));
    assert!(gone.is_err(), "the client gave up first");
    let after = cpu_a_second_later(s.pid());
    eprintln!("client gone: query threads used {after:.2} CPU-s in the second after the next");
    assert!(after < 0.2, "{after} CPU-s after the client left");
}

const HEAVY: &str = RUNAWAYS[1].1;

/// Starts `sql` on its own thread; its reply's status.
fn in_background(s: &Server, key: &str, sql: &str) -> std::thread::JoinHandle<(u16, Instant)> {
    let (url, key, sql) = (format!("{}/sql", s.addr), key.to_string(), sql.to_string());
    std::thread::spawn(move || {
        let r = agent_with_timeout(Duration::from_secs(120))
            .post(&url)
            .header("x-api-key", &key)
            .config()
            .http_status_as_error(false)
            .build()
            .send_json(json!({ "sql": sql }))
            .expect("a reply");
        (r.status().as_u16(), Instant::now())
    })
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "{what} never happened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_tenants_heavy_queries_queue_behind_its_own_not_before_another_tenant() {
    let dir = tempdir();
    let s = server_with_a_table(&dir.path().join("d"), "6000", &[]);
    let r = s.admin(
        "POST",
        "/admin/organisations",
        Some(&json!({"name": "globex"})),
    );
    let other = r.body["api_key"].as_str().unwrap().to_string();
    // Five heavy queries of one tenant: three run (its share of four slots), two wait.
    let heavy: Vec<_> = (0..5).map(|_| in_background(&s, &s.key, HEAVY)).collect();
    wait_for("three running and two queued", || {
        let h = s.request("GET", "/healthz", None, &[], None).body;
        h["queries"]["running"] == 3 && h["queries"]["queued"] == 2
    });
    // The other tenant's query starts at once and answers while all five still run or wait.
    let rows = s.sql_as(&other, "SELECT 1 AS one");
    assert_eq!(rows[0]["one"], 1);
    let answered = Instant::now();
    let ends: Vec<(u16, Instant)> = heavy.into_iter().map(|h| h.join().unwrap()).collect();
    for (status, ended) in &ends {
        // The two that queued wait from their own arrival; the slots they wait for free up
        // only once the running three have stopped, which on a loaded machine can be after
        // the waiters' own caps: then they are refused (503), never run past a cap.
        assert!(
            matches!(*status, 422 | 503),
            "each heavy query ends at its own cap: {status}"
        );
        assert!(
            *ended > answered,
            "another tenant's query waited for a heavy one"
        );
    }
    let capped = ends.iter().filter(|(status, _)| *status == 422).count();
    assert!(capped >= 3, "the three running queries ran into their caps");
    let m = s.request("GET", "/metrics", None, &[], None).text;
    assert!(m.contains("meterbase_queries_queued 0"), "{m}");
    assert!(
        m.contains(&format!(
            "meterbase_queries_cancelled_total{{kind=\"sql\"}} {capped}"
        )),
        "{m}"
    );
    assert!(
        m.contains(&format!("meterbase_queries_refused_total {}", 5 - capped)),
        "{m}"
    );
}

#[test]
fn a_query_that_cannot_start_within_its_cap_is_a_503_and_a_deletion_still_answers() {
    let dir = tempdir();
    let s = server_with_a_table(
        &dir.path().join("d"),
        "8000",
        &[
            "--query-concurrency",
            "1",
            "--query-concurrency-per-org",
            "1",
        ],
    );
    let heavy = in_background(&s, &s.key, HEAVY);
    wait_for("the heavy query running", || {
        s.request("GET", "/healthz", None, &[], None).body["queries"]["running"] == 1
    });
    // A second one waits for the first's slot (it gets it within its cap), and holds it
    // for a whole cap more.
    std::thread::sleep(Duration::from_secs(1));
    let second = in_background(&s, &s.key, HEAVY);
    // The deletion is applied and answered; its count could not start within its own cap.
    let r = s.delete("/usage/compute_events/events?customer_id=c1");
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.body["deleted"].is_null(), "{}", r.text);
    assert!(
        r.body["count_error"]
            .as_str()
            .unwrap()
            .contains("could not start"),
        "{}",
        r.text
    );
    let r = s.post_json("/sql", &json!({"sql": "SELECT 1"}));
    assert_eq!(r.status, 503, "{}", r.text);
    assert!(r.header("retry-after").is_some());
    assert_eq!(heavy.join().unwrap().0, 422);
    assert_eq!(second.join().unwrap().0, 422);
    // The deletion holds: customer c1 is gone.
    let n = s.sql("SELECT count(*) AS n FROM compute_events WHERE customer_id = 'c1'");
    assert_eq!(n[0]["n"], 0);
    let m = s.request("GET", "/metrics", None, &[], None).text;
    assert!(m.contains("meterbase_queries_refused_total 2"), "{m}");
}
