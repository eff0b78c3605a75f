//! Test harness: starts the real `meterbase` binary on an ephemeral loopback port and talks
//! HTTP to it.
#![allow(dead_code)]

pub mod delta;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const ADMIN_TOKEN: &str = "test-admin-token";

pub struct Server {
    pub child: Option<Child>,
    pub addr: String,
    pub key: String,
    pub dir: PathBuf,
    pub args: Vec<String>,
    agent: ureq::Agent,
}

pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub text: String,
    pub headers: Vec<(String, String)>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn agent() -> ureq::Agent {
    agent_with_timeout(Duration::from_secs(120))
}

/// An HTTP client that returns every status as a response; `timeout` bounds each request.
pub fn agent_with_timeout(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .new_agent()
}

impl Server {
    /// Starts a server on `dir` (created if needed) and waits for `/healthz`.
    pub fn start(dir: &Path, args: &[&str]) -> Server {
        let mut s = Server {
            child: None,
            addr: String::new(),
            key: String::new(),
            dir: dir.to_path_buf(),
            args: args.iter().map(|a| a.to_string()).collect(),
            agent: agent(),
        };
        s.spawn();
        s
    }

    pub fn spawn(&mut self) {
        let _ = std::fs::remove_file(self.dir.join("listen-addr"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.with_extension("log"))
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_meterbase"))
            .arg("serve")
            .arg("--data-dir")
            .arg(&self.dir)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--admin-token")
            .arg(ADMIN_TOKEN)
            .args(&self.args)
            .env("METERBASE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start meterbase");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(
                Instant::now() < deadline,
                "server did not become healthy; see {}",
                self.dir.with_extension("log").display()
            );
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "server exited with {status}; see {}",
                    self.dir.with_extension("log").display()
                );
            }
            if let Ok(addr) = std::fs::read_to_string(self.dir.join("listen-addr")) {
                self.addr = format!("http://{}", addr.trim());
                if let Ok(r) = self.agent.get(format!("{}/healthz", self.addr)).call()
                    && r.status().as_u16() == 200
                {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.key = std::fs::read_to_string(self.dir.join("default-api-key"))
            .expect("default-api-key")
            .trim()
            .to_string();
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn terminate(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        c.wait().expect("wait")
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Reply {
        let url = format!("{}{}", self.addr, path);
        let mut req = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(k) = key {
            req = req.header("x-api-key", k);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = match body {
            Some(b) => self.agent.run(req.body(b.to_vec()).expect("request")),
            None => self.agent.run(req.body(()).expect("request")),
        };
        let mut resp = resp.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let text = resp
            .body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_string()
            .unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            body,
            text,
            headers,
        }
    }

    pub fn post_json(&self, path: &str, body: &Value) -> Reply {
        self.post_as(&self.key, path, body)
    }

    pub fn post_as(&self, key: &str, path: &str, body: &Value) -> Reply {
        self.request(
            "POST",
            path,
            Some(key),
            &[("content-type", "application/json")],
            Some(body.to_string().as_bytes()),
        )
    }

    pub fn get(&self, path: &str) -> Reply {
        self.request("GET", path, Some(&self.key), &[], None)
    }

    pub fn delete(&self, path: &str) -> Reply {
        self.request("DELETE", path, Some(&self.key), &[], None)
    }

    pub fn admin(&self, method: &str, path: &str, body: Option<&Value>) -> Reply {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        let b = body.map(|b| b.to_string());
        self.request(
            method,
            path,
            None,
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            b.as_deref().map(str::as_bytes),
        )
    }

    /// Rows of a SQL query as JSON objects; panics unless 200.
    pub fn sql(&self, sql: &str) -> Vec<Value> {
        self.sql_as(&self.key, sql)
    }

    pub fn sql_as(&self, key: &str, sql: &str) -> Vec<Value> {
        let r = self.post_as(key, "/sql", &json!({ "sql": sql }));
        assert_eq!(r.status, 200, "{sql}: {}", r.text);
        r.body["rows"].as_array().cloned().unwrap_or_default()
    }

    pub fn create_compute_events(&self) {
        let r = self.post_json("/rawmetrics", &compute_events_definition());
        assert_eq!(r.status, 201, "{}", r.text);
    }

    /// Waits until every buffer is persisted (the metric `meterbase_buffer_bytes` is 0).
    pub fn wait_flushed(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let m = self.request("GET", "/metrics", None, &[], None).text;
            if m.lines().any(|l| l == "meterbase_buffer_bytes 0") {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("buffers were not persisted in time");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn compute_events_definition() -> Value {
    json!({
        "name": "Compute events",
        "api_slug": "compute_events",
        "dataschema": {
            "data": {"cpu_hours_consumed": "Float64", "region": "String"},
            "timestamp": "DateTime64",
            "customer_id": "String"
        },
        "column_order": ["timestamp"]
    })
}

pub fn num(v: &Value) -> f64 {
    match v {
        Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        Value::String(s) => s.parse().unwrap_or(f64::NAN),
        _ => f64::NAN,
    }
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("meterbase-test")
        .tempdir()
        .expect("tempdir")
}

/// Every file under `dir`, at any depth.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Parquet files under `dir`, at any depth.
pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect()
}

/// Manifest versions under `dir`, oldest first.
pub fn manifest_paths(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = files_under(dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("_manifest"))
        .collect();
    out.sort();
    out
}

/// One value from `GET /metrics` (NaN when absent).
pub fn metric(s: &Server, name: &str) -> f64 {
    s.request("GET", "/metrics", None, &[], None)
        .text
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// `SELECT customer_id, count(*) AS n, sum(cpu_hours_consumed) AS v … GROUP BY customer_id`,
/// ordered by customer, optionally `as_of`.
pub fn customer_totals(s: &Server, as_of: Option<&str>) -> Vec<Value> {
    let mut body = json!({"sql": "SELECT customer_id, count(*) AS n, sum(data.cpu_hours_consumed) AS v FROM compute_events GROUP BY customer_id ORDER BY customer_id"});
    if let Some(t) = as_of {
        body["as_of"] = json!(t);
    }
    let r = s.post_json("/sql", &body);
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["rows"].as_array().cloned().unwrap_or_default()
}

/// Runs a compaction pass now (`POST /admin/compact`); panics unless 200.
pub fn compact(s: &Server) -> Value {
    let r = s.admin("POST", "/admin/compact", None);
    assert_eq!(r.status, 200, "{}", r.text);
    r.body
}

/// A reconcile answer's buckets as `customer|bucket_start` → (count, digest), the way the
/// Python digest reference (`digest_reference.py`) keys them.
pub fn reconcile_buckets(body: &Value) -> std::collections::BTreeMap<String, (u64, String)> {
    body["buckets"]
        .as_array()
        .map(|buckets| {
            buckets
                .iter()
                .map(|b| {
                    (
                        format!(
                            "{}|{}",
                            b["customer_id"].as_str().unwrap_or_default(),
                            b["bucket_start"].as_str().unwrap_or_default()
                        ),
                        (
                            b["count"].as_u64().unwrap_or_default(),
                            b["digest"].as_str().unwrap_or_default().to_string(),
                        ),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The independent Python digest reference (`digest_reference.py`, written from docs/api.md)
/// over `events` as the sender sent them: `customer|day start` → (count, digest).
pub fn digest_reference(
    dir: &Path,
    types: &Value,
    events: &[Value],
) -> std::collections::BTreeMap<String, (u64, String)> {
    let path = dir.join("reference-events.json");
    std::fs::write(&path, Value::Array(events.to_vec()).to_string()).expect("events file");
    let out = Command::new("python3")
        .args(["-c", include_str!("digest_reference.py")])
        .arg(types.to_string())
        .arg(&path)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("reference output");
    v.as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        (
                            v[0].as_u64().unwrap_or_default(),
                            v[1].as_str().unwrap_or_default().to_string(),
                        ),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The repository's root. Read at run time (cargo sets it for tests): a build cache shared by
/// two checkouts may run a binary compiled in the other one.
pub fn repo() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .join("../..")
}

/// The metrics cookbook's event types and events (`testdata/metrics`).
pub fn load_metrics_dataset(s: &Server) {
    let dir = repo().join("testdata/metrics");
    let types: Vec<Value> =
        serde_json::from_slice(&std::fs::read(dir.join("event_types.json")).expect("types"))
            .expect("types JSON");
    for t in types {
        let r = s.post_json("/rawmetrics", &t);
        assert_eq!(r.status, 201, "{}", r.text);
        let slug = r.body["api_slug"].as_str().unwrap_or_default().to_string();
        let body = std::fs::read(dir.join(format!("{slug}.ndjson"))).expect("events");
        let r = s.request(
            "POST",
            &format!("/usage/{slug}"),
            Some(&s.key),
            &[("content-type", "application/x-ndjson")],
            Some(&body),
        );
        assert_eq!(r.status, 200, "{}", r.text);
    }
}
