# Everything a fresh machine needs is installed or built by these targets.
SHELL := /bin/bash
CARGO ?= cargo
DATA_DIR ?= ./data
LISTEN ?= 127.0.0.1:8080

.PHONY: run build test lint fmt-check clippy imports unit openapi soak bench bench-scale bench-micro profile delta-read clean

## Build (release) and start the server on a local data directory, no external services.
run:
	$(CARGO) run --release -p meterbase -- serve --data-dir $(DATA_DIR) --listen $(LISTEN)

build:
	$(CARGO) build --workspace

## Every check and every test.
test: fmt-check clippy imports unit

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## No two files of one crate import each other, directly or round a circle.
imports:
	python3 scripts/check-imports.py crates

## Unit, property and integration tests; the storage suite also runs against SeaweedFS (S3),
## and outside readers (DuckDB) check our files: scripts/test-env.sh installs them into .venv,
## starts SeaweedFS on loopback and stops it afterwards.
unit:
	scripts/test-env.sh $(CARGO) test --workspace --all-targets

## Rewrites docs/openapi.json from the document the server serves (crates/server/src/openapi);
## a test fails while the two differ.
openapi:
	METERBASE_WRITE_OPENAPI=1 $(CARGO) test -p meterbase-server --lib openapi::tests::committed_document_is_the_served_one

## 200 SIGKILLs at random moments under load, flushes and compactions (make test runs 20),
## and 5000 seeded power losses of a simulated disk (make test runs 300).
soak:
	METERBASE_SOAK_CYCLES=$${METERBASE_SOAK_CYCLES:-200} $(CARGO) test --test crash -- --nocapture
	METERBASE_POWER_LOSS_SEEDS=$${METERBASE_POWER_LOSS_SEEDS:-5000} $(CARGO) test -p meterbase-query --test power_loss -- --nocapture

## What outside engines read of the open tables (Delta) under DATA_DIR: per table, rows and
## the sum of SUM_COLUMN per customer through chDB, DuckDB and deltalake (docs/storage.md).
SUM_COLUMN ?= cpu_hours_consumed
delta-read:
	scripts/venv.sh
	for t in $(DATA_DIR)/store/*/*/; do if [ -d "$$t/_delta_log" ]; then echo "$$t"; .venv/bin/python scripts/delta_read.py "$$t" --sum $(SUM_COLUMN); fi; done

## Benchmarks (docs/benchmarks.md is rewritten from the run): installs DuckDB and chDB into
## .venv, builds release, generates SCALE events, runs everything side by side.
SCALE ?= 20000000
bench:
	scripts/venv.sh
	$(CARGO) build --release -p meterbase -p meterbase-bench
	scripts/test-env.sh .venv/bin/python scripts/bench.py --scale $(SCALE) --bin $${CARGO_TARGET_DIR:-target}/release --command "make bench SCALE=$(SCALE)"

## The scale table of docs/benchmarks.md: one row per SCALES entry, each data set streamed into
## a fresh server (no NDJSON written above 2M events), with DuckDB and chDB on its Parquet.
SCALES ?= 20000000 100000000 200000000
bench-scale:
	scripts/venv.sh
	$(CARGO) build --release -p meterbase -p meterbase-bench
	for n in $(SCALES); do .venv/bin/python scripts/bench.py --only scale --scale $$n --bin $${CARGO_TARGET_DIR:-target}/release || exit 1; done
	.venv/bin/python scripts/bench.py --only scale-table

## Where the release server's time goes: perf (Debian's linux-perf) during batched ingest
## (PROFILE=ingest) or a loop of one billing query over SCALE events: its hand SQL through
## /sql (PROFILE=q1 … q4) or its billable metric's usage (PROFILE=q1-metric, q2-metric, q4-metric).
PROFILE ?= ingest
profile:
	$(CARGO) build --release -p meterbase -p meterbase-bench
	python3 scripts/bench.py --profile $(PROFILE) --scale $(SCALE) --bin $${CARGO_TARGET_DIR:-target}/release

## Criterion micro-benchmarks (decoder, log group commit, buffer → Parquet). A separate target:
## criterion's dev-dependencies change feature sets, so this is a second release build.
bench-micro:
	$(CARGO) bench -p meterbase-bench --bench micro

clean:
	$(CARGO) clean
