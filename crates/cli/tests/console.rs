//! The web console in a real browser: `scripts/console_test.py` drives headless Chromium
//! (Selenium) through every page against a fresh server with an empty organisation — sign
//! in, define an event type, send and upload events, page through them, delete with the
//! count shown first, run SQL, define and chart a billable metric — and checks what a user
//! sees, the CSP and the console's own errors. `make test` installs Chromium and its driver
//! (`scripts/system-deps.sh`) and the Python side (`scripts/venv.sh`).

mod common;

use std::process::Command;

use common::{Server, tempdir};

#[test]
fn every_console_page_works_in_a_real_browser() {
    let python = std::env::var("METERBASE_TEST_PYTHON").unwrap_or_else(|_| {
        panic!("METERBASE_TEST_PYTHON is not set: run the tests through scripts/test-env.sh (make test)")
    });
    let tmp = tempdir();
    let s = Server::start(&tmp.path().join("data"), &[]);
    let root = common::repo();
    let out = Command::new(python)
        .arg(root.join("scripts/console_test.py"))
        .args(["--url", &s.addr, "--key", &s.key, "--screenshots"])
        .arg(tmp.path().join("screenshots"))
        .output()
        .expect("run scripts/console_test.py");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the console test failed:\n{text}");
    assert!(text.contains("timings_ms"), "{text}");
}
