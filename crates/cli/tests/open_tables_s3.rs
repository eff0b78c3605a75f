//! Open tables on a real S3-compatible store (`METERBASE_TEST_S3_URL`, set by `make test`
//! through `scripts/test-env.sh`, which starts SeaweedFS): the Delta table rooted at
//! `<store>/<org id>/compute_events` is read straight from S3 by the three independent
//! readers of `scripts/delta_read.py` (chDB `deltaLake`, DuckDB 1.5.5 `delta_scan` with
//! httpfs, Python `deltalake`) after every phase of a short random history (replacements
//! across flushes, late events, range deletions, compactions, a SIGKILL), and earlier Delta
//! versions again at the end (time travel, garbage collection having run): per-customer
//! counts and sums must equal the server's `/sql` and the reference's, with zero mismatches.
//! `open_tables.rs` proves the same, longer, on the local store.

mod common;

use common::delta::{History, Totals, compare, publish, server_totals};
use common::{Server, compact, tempdir};

const DAYS: i64 = 10;
const CUSTOMERS: usize = 6;
const PHASES: usize = 6;

#[test]
fn outside_readers_see_what_the_server_answers_on_s3() {
    let Ok(base) = std::env::var("METERBASE_TEST_S3_URL") else {
        eprintln!(
            "METERBASE_TEST_S3_URL is not set: open tables on S3 not tested here (make test sets it)"
        );
        return;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let url = format!(
        "{}/open-tables-{}-{nanos}",
        base.trim_end_matches('/'),
        std::process::id()
    );
    let dir = tempdir();
    let mut s = Server::start(
        &dir.path().join("d"),
        &[
            "--object-store",
            &url,
            "--flush-bytes",
            "100000",
            "--flush-age-ms",
            "200",
            "--compaction-interval-secs",
            "0",
            // Replaced files go as soon as nothing of ours needs them: only the Delta
            // versions' retention keeps them for the time travel below.
            "--compaction-grace-secs",
            "0",
            "--delta-commit-interval",
            "1h",
            // Checkpoints (and our state snapshot) on S3 too, read after the restart.
            "--delta-checkpoint-every",
            "3",
        ],
    );
    s.create_compute_events();
    let r = s.get("/organisation");
    assert_eq!(r.status, 200, "{}", r.text);
    let org = r.body["id"]
        .as_str()
        .expect("an organisation id")
        .to_string();
    let table = format!("{url}/{org}/compute_events");

    let mut history = History::new(0x5333_6465_6c74, CUSTOMERS, DAYS);
    let mut versions: Vec<(i64, Totals)> = Vec::new();
    let mut wrong = Vec::new();
    for phase in 0..PHASES {
        history.puts(&s, 3..6, 100..400, 0.5);
        if phase % 2 == 1 {
            history.delete(&s, 72);
        }
        match phase {
            2 | 4 => {
                compact(&s);
            }
            3 => {
                // Everything acknowledged survives; the log resumes from its last commit.
                s.kill9();
                s.restart();
            }
            _ => {}
        }
        s.wait_flushed();
        let version = publish(&s);
        let want = history.totals();
        assert_eq!(server_totals(&s), want, "phase {phase}: the server itself");
        wrong.extend(compare(
            &table,
            None,
            &want,
            &format!("phase {phase}, version {version}"),
        ));
        versions.push((version, want));
    }
    // Versions from before the compactions, read again after a last compaction and its
    // garbage collection: the retained Delta versions' files are still on S3.
    compact(&s);
    for (version, want) in versions.iter().step_by(2) {
        wrong.extend(compare(
            &table,
            Some(*version),
            want,
            &format!("time travel to {version}"),
        ));
    }
    assert!(
        wrong.is_empty(),
        "{} mismatches on {table}:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
