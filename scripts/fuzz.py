#!/usr/bin/env python3
"""Fuzzing campaign: runs each fuzz target of fuzz/ for at least --cpu-seconds of CPU time
(libFuzzer with AddressSanitizer, through cargo fuzz), in rounds, and records per target the
CPU seconds, executions, coverage and findings in fuzz/results/<target>.json. New inputs that add
coverage are merged into the committed corpus (testdata/fuzz/<target>), which make test
replays.

    scripts/fuzz.py [--cpu-seconds 3600] [--nice 19] [--stop-at UNIX_TIME] [TARGET ...]
    scripts/fuzz.py --report      # the results as the Markdown table of docs/operations.md

Needs cargo-fuzz (cargo install cargo-fuzz) and takes the toolchain's -Z flags through
RUSTC_BOOTSTRAP=1, so the stable toolchain is enough.
"""
import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FUZZ = os.path.join(ROOT, "fuzz")
RESULTS = os.path.join(FUZZ, "results")
ALL = ["json_events", "ndjson_events", "csv_rows", "timestamp", "zuora_bulk", "wal_record",
       "manifest", "usage_params", "arrow_stream", "parquet_body"]
STATS = re.compile(r"#(\d+)\s+(?:DONE|pulse|NEW|REDUCE|INITED)\s+cov: (\d+) ft: (\d+) corp: (\d+)")


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def env():
    # Its own build directory even when CARGO_TARGET_DIR is set (as .ci/run sets it): the
    # sanitizer build shares nothing with the test build, and rebuilt everything there.
    target = os.environ.get("METERBASE_FUZZ_TARGET_DIR", os.path.join(FUZZ, "target"))
    return dict(os.environ, RUSTC_BOOTSTRAP="1", CARGO_TARGET_DIR=target)


def load(target):
    try:
        with open(os.path.join(RESULTS, f"{target}.json")) as f:
            return json.load(f)
    except FileNotFoundError:
        return {"cpu_seconds": 0.0, "executions": 0, "rounds": 0, "findings": []}


def save(target, r):
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, f"{target}.json"), "w") as f:
        json.dump(r, f, indent=1, sort_keys=True)


def binary(target, nice):
    """Builds the target (its CPU is not the campaign's) and returns the fuzzer's path."""
    subprocess.run(["nice", "-n", str(nice), "cargo", "fuzz", "build", "--fuzz-dir", FUZZ, target],
                   cwd=ROOT, env=env(), check=True)
    return os.path.join(env()["CARGO_TARGET_DIR"], "x86_64-unknown-linux-gnu", "release", target)


def campaign(target, cpu_seconds, nice, stop_at=None):
    fuzzer = binary(target, nice)
    work = os.path.join(FUZZ, "corpus", target)
    seeds = os.path.join(ROOT, "testdata", "fuzz", target)
    os.makedirs(work, exist_ok=True)
    for name in os.listdir(seeds):
        shutil.copy(os.path.join(seeds, name), work)
    r = load(target)
    while r["cpu_seconds"] < cpu_seconds and not r["findings"]:
        wall = int(min(900, max(60, (cpu_seconds - r["cpu_seconds"]) * 1.2)))
        if stop_at is not None:
            # A campaign that must end by a given time ends its rounds there, and still merges.
            wall = min(wall, int(stop_at - time.time()))
            if wall < 30:
                break
        before = children_cpu()
        artifacts = os.path.join(FUZZ, "artifacts", target) + "/"
        os.makedirs(artifacts, exist_ok=True)
        proc = subprocess.run(
            ["nice", "-n", str(nice), fuzzer, work, f"-max_total_time={wall}", "-print_final_stats=1",
             "-rss_limit_mb=4096", "-timeout=30", f"-artifact_prefix={artifacts}"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        used = children_cpu() - before
        r["cpu_seconds"] += used
        r["rounds"] += 1
        lines = proc.stdout.splitlines()
        done = [m for m in (STATS.search(l) for l in lines) if m]
        if done:
            last = done[-1]
            r["executions"] += int(last.group(1))
            r["coverage"], r["features"], r["corpus"] = int(last.group(2)), int(last.group(3)), int(last.group(4))
        if proc.returncode != 0:
            tail = "\n".join(lines[-40:])
            r["findings"].append({"round": r["rounds"], "exit": proc.returncode, "tail": tail})
            print(f"{target}: FINDING in round {r['rounds']}:\n{tail}", file=sys.stderr)
        r["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        save(target, r)
        print(f"{target}: round {r['rounds']}, {r['cpu_seconds']:.0f} CPU-s, {r['executions']} executions, "
              f"cov {r.get('coverage')}, corpus {r.get('corpus')}", file=sys.stderr, flush=True)
    # Keep what adds coverage: inputs of the working corpus that cover more than the committed
    # one are added to it (libFuzzer names them by content hash).
    before = len(os.listdir(seeds))
    subprocess.run(["nice", "-n", str(nice), fuzzer, seeds, work, "-merge=1"], cwd=ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    r["committed_corpus"] = len(os.listdir(seeds))
    r["committed_added"] = r["committed_corpus"] - before
    save(target, r)


def report(targets):
    """The recorded campaign per target, as a Markdown table."""
    print("| Target | CPU hours | Executions | Coverage (edges) | Committed corpus | Findings (fixed) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for t in targets:
        r = load(t)
        open_, fixed = len(r.get("findings", [])), len(r.get("fixed_findings", []))
        print(f"| `{t}` | {r['cpu_seconds'] / 3600:.2f} | {r['executions']:,} | {r.get('coverage', 0):,} "
              f"| {r.get('committed_corpus', 0):,} | {open_ + fixed} ({fixed}) |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cpu-seconds", type=float, default=3600)
    ap.add_argument("--nice", type=int, default=19)
    ap.add_argument("--stop-at", type=float, help="Unix time by which to stop fuzzing (then merge)")
    ap.add_argument("--report", action="store_true", help="print the recorded results and stop")
    ap.add_argument("targets", nargs="*", default=ALL)
    a = ap.parse_args()
    if a.report:
        return report(a.targets)
    if shutil.which("cargo-fuzz") is None:
        sys.exit("needs cargo-fuzz: cargo install cargo-fuzz")
    for t in a.targets:
        campaign(t, a.cpu_seconds, a.nice, a.stop_at)


if __name__ == "__main__":
    main()
