# Everything a fresh machine needs is installed or built by these targets.
SHELL := /bin/bash
CARGO ?= cargo
DATA_DIR ?= ./data
LISTEN ?= 127.0.0.1:8080

.PHONY: run build test lint fmt-check clippy unit bench-build clean

## Build (release) and start the server on a local data directory, no external services.
run:
	$(CARGO) run --release -p meterbase -- serve --data-dir $(DATA_DIR) --listen $(LISTEN)

build:
	$(CARGO) build --workspace

## Every check and every test.
test: fmt-check clippy unit

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit:
	$(CARGO) test --workspace --all-targets

clean:
	$(CARGO) clean
