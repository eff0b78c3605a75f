#!/usr/bin/env python3
"""Holds a running meterbase server to its OpenAPI document with schemathesis.

Seeds the organisation with the document's own examples (the event type `compute_events`,
a few events, the metric `cpu_hours`) so that the example-based cases reach real data, then
runs schemathesis over every operation with a bounded number of examples and these checks:
no 5xx, status codes, content types, headers and bodies as documented. Tenant operations
authenticate with the API key, admin operations with the admin token (the document's
security schemes say which is which).

Run by crates/cli/tests/openapi.rs (make test):
    openapi_test.py --url http://127.0.0.1:PORT --key KEY --admin-token T --schema docs/openapi.json
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

CHECKS = ",".join([
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
])


def call(url, method, path, key, body=None, content_type="application/json"):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(url + path, data=data, method=method)
    req.add_header("x-api-key", key)
    if data is not None:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def seed(url, key, schema):
    s = schema["components"]["schemas"]
    status, body = call(url, "POST", "/rawmetrics", key, s["EventTypeDefinition"]["example"])
    assert status == 201, (status, body)
    now = int(time.time())
    events = [
        {"customer_id": f"cust_{i % 3}", "timestamp": now - 3600 * i,
         "data": {"cpu_hours_consumed": 1.5 * i, "region": "us-east-1"}}
        for i in range(20)
    ]
    status, body = call(url, "POST", "/usage/compute_events", key, events)
    assert status == 200, (status, body)
    status, body = call(url, "POST", "/billable_metrics", key, s["MetricDefinition"]["example"])
    assert status == 201, (status, body)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--admin-token", required=True)
    p.add_argument("--schema", required=True)
    p.add_argument("--max-examples", type=int, default=int(os.environ.get("METERBASE_SCHEMATHESIS_EXAMPLES", "100")))
    p.add_argument("--seed", type=int, default=int(os.environ.get("METERBASE_SCHEMATHESIS_SEED", "23")))
    args = p.parse_args()
    with open(args.schema) as f:
        schema = json.load(f)
    seed(args.url, args.key, schema)
    here = os.path.dirname(os.path.abspath(__file__))
    with tempfile.TemporaryDirectory() as tmp:
        config = os.path.join(tmp, "schemathesis.toml")
        # Keys go through the environment, not the command line (nor the report).
        with open(config, "w") as f:
            f.write('[auth.openapi.apiKey]\napi_key = "${METERBASE_ST_KEY}"\n'
                    '[auth.openapi.adminToken]\nbearer = "${METERBASE_ST_ADMIN}"\n')
        env = dict(os.environ, METERBASE_ST_KEY=args.key, METERBASE_ST_ADMIN=args.admin_token,
                   SCHEMATHESIS_HOOKS="schemathesis_hooks",
                   PYTHONPATH=here + os.pathsep + os.environ.get("PYTHONPATH", ""))
        cmd = [
            os.path.join(os.path.dirname(sys.executable), "schemathesis"),
            "--config-file", config,
            "run", args.schema, "--url", args.url,
            "--checks", CHECKS,
            "--phases", "examples,coverage,fuzzing",
            "--max-examples", str(args.max_examples),
            "--seed", str(args.seed),
            # One worker: hypothesis describes strategies by parsing their source with `ast`,
            # and CPython 3.11's AST constructor is not thread-safe ("AST constructor recursion
            # depth mismatch" failed a CI run with two workers).
            "--workers", "1",
            "--request-timeout", "60",
            "--suppress-health-check", "too_slow,filter_too_much",
            "--no-color",
        ]
        print("running:", " ".join(cmd), flush=True)
        started = time.monotonic()
        # Its cache (.schemathesis/) goes to the temporary directory, not the work tree.
        code = subprocess.run(cmd, env=env, cwd=tmp).returncode
        print(f"schemathesis exited {code} after {time.monotonic() - started:.0f} s", flush=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
