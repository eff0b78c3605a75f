#!/usr/bin/env bash
# Runs a command in the test environment: the Python tools of scripts/requirements-test.txt
# (installed into .venv by scripts/venv.sh) and a real S3-compatible server (SeaweedFS) on
# loopback, stopped afterwards whatever the command's outcome. SeaweedFS verifies request
# signatures and enforces `If-None-Match: *` atomically, so the manifest commit protocol is
# really exercised.
#
#   scripts/test-env.sh cargo test --workspace
#
# Debian packages the tests drive (Chromium, psql) are installed by scripts/system-deps.sh.
# The command sees AWS_* for the server, METERBASE_TEST_S3_URL=s3://<bucket>/<prefix>,
# METERBASE_TEST_PYTHON (the venv's python) and METERBASE_TEST_DUCKDB2 (a path with DuckDB 2
# to put first on PYTHONPATH).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
venv="$root/.venv"
weed="$venv/bin/weed"
scripts/venv.sh
scripts/system-deps.sh
port=8333
if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
  echo "test-env: port $port is already in use; stop whatever listens there first" >&2
  exit 1
fi
dir=$(mktemp -d "${TMPDIR:-/tmp}/meterbase-s3.XXXXXX")
export AWS_ACCESS_KEY_ID=meterbase-test
export AWS_SECRET_ACCESS_KEY=meterbase-test-secret
AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY \
  "$weed" mini -dir="$dir" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.telemetry=false \
  >"$dir/weed.log" 2>&1 &
weed_pid=$!
stop() {
  kill "$weed_pid" 2>/dev/null || true
  # SeaweedFS stopped while still starting can log every service stopped and never exit.
  for _ in $(seq 1 100); do
    kill -0 "$weed_pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$weed_pid" 2>/dev/null || true
  wait "$weed_pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap stop EXIT
for _ in $(seq 1 300); do
  if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then break; fi
  if ! kill -0 "$weed_pid" 2>/dev/null; then
    echo "test-env: SeaweedFS exited; its log:" >&2
    cat "$dir/weed.log" >&2
    exit 1
  fi
  sleep 0.1
done
bucket=meterbase-test
for _ in $(seq 1 50); do
  if echo "s3.bucket.create -name $bucket" | "$weed" shell -master=127.0.0.1:9333 2>&1 \
      | grep -q "created bucket\|already exists"; then
    break
  fi
  sleep 0.2
done
export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
export AWS_ALLOW_HTTP=true
export AWS_DEFAULT_REGION=us-east-1
export METERBASE_TEST_S3_URL="s3://$bucket/run-$$"
export METERBASE_TEST_PYTHON="$venv/bin/python"
export METERBASE_TEST_DUCKDB2="$venv/duckdb2"
echo "test-env: SeaweedFS on $AWS_ENDPOINT_URL, tests use $METERBASE_TEST_S3_URL" >&2
"$@"
