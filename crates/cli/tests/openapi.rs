//! The server against its OpenAPI document (`docs/openapi.json`): the document it serves is
//! the committed one, byte for byte; schemathesis (`scripts/openapi_test.py`) sends every
//! operation generated requests and fails on a 5xx or on a status, content type, header or
//! body the document does not describe; and a Python client generated from the document
//! (`scripts/client_example.py`, the recipe of `docs/clients.md`) sends an event and reads
//! usage. `make test` installs schemathesis and openapi-python-client (`scripts/venv.sh`).

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{ADMIN_TOKEN, Server, tempdir};

fn root() -> PathBuf {
    common::repo()
}

fn python() -> String {
    std::env::var("METERBASE_TEST_PYTHON").unwrap_or_else(|_| {
        panic!("METERBASE_TEST_PYTHON is not set: run the tests through scripts/test-env.sh (make test)")
    })
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run python");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

#[test]
fn the_served_document_is_docs_openapi_json_and_needs_no_key() {
    let tmp = tempdir();
    let s = Server::start(&tmp.path().join("data"), &[]);
    let r = s.request("GET", "/openapi.json", None, &[], None);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let committed =
        std::fs::read_to_string(root().join("docs/openapi.json")).expect("docs/openapi.json");
    assert!(
        r.text == committed,
        "GET /openapi.json differs from docs/openapi.json: run `make openapi` and commit it"
    );
    assert_eq!(r.body["openapi"], "3.1.0");
}

#[test]
fn schemathesis_finds_the_server_true_to_its_document() {
    let tmp = tempdir();
    let s = Server::start(&tmp.path().join("data"), &[]);
    let text = run(Command::new(python())
        .arg(root().join("scripts/openapi_test.py"))
        .args([
            "--url",
            &s.addr,
            "--key",
            &s.key,
            "--admin-token",
            ADMIN_TOKEN,
        ])
        .arg("--schema")
        .arg(root().join("docs/openapi.json")));
    assert!(text.contains("schemathesis exited 0"), "{text}");
}

#[test]
fn a_generated_python_client_sends_an_event_and_reads_usage() {
    let tmp = tempdir();
    let s = Server::start(&tmp.path().join("data"), &[]);
    let text = run(Command::new(python())
        .arg(root().join("scripts/client_example.py"))
        .args(["--url", &s.addr, "--key", &s.key])
        .arg("--schema")
        .arg(root().join("docs/openapi.json"))
        .arg("--out")
        .arg(tmp.path().join("client")));
    assert!(text.contains("usage: cust_7d2f 10.5"), "{text}");
}
