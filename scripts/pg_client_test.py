#!/usr/bin/env python3
"""Drives meterbase's Postgres wire protocol with psycopg 3 (what a notebook or a Python
service uses), for crates/cli/tests/postgres.rs. Prints one JSON object with what the Rust
test compares against /sql; exits non-zero on the first check that fails.

  pg_client_test.py --port P --key KEY --wrong-key K --pid SERVER_PID [--stream-rows N]
"""
import argparse
import json
import socket
import struct
import sys
import threading
import time

import psycopg


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class PeakRss(threading.Thread):
    """Samples the server's resident memory while a fetch runs."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.running = pid, rss_kib(pid), True

    def run(self):
        while self.running:
            self.peak = max(self.peak, rss_kib(self.pid))
            time.sleep(0.01)

    def stop(self):
        self.running = False
        self.join()
        return self.peak


def raw_auth_sqlstate(port, password):
    """The SQLSTATE of the server's answer to a cleartext password, spoken by hand."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        params = b"user\0anyone\0database\0meterbase\0\0"
        s.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
        kind, length = struct.unpack("!ci", s.recv(5))
        body = s.recv(length - 4)
        if kind != b"R" or struct.unpack("!i", body[:4])[0] != 3:
            sys.exit(f"expected a cleartext password request, got {kind} {body!r}")
        pw = password.encode() + b"\0"
        s.sendall(b"p" + struct.pack("!i", 4 + len(pw)) + pw)
        kind, length = struct.unpack("!ci", s.recv(5))
        body = b""
        while len(body) < length - 4:
            body += s.recv(length - 4 - len(body))
        if kind != b"E":
            sys.exit(f"expected an ErrorResponse, got {kind}")
        fields = {f[:1]: f[1:].decode() for f in body.split(b"\0") if f}
        return fields.get(b"C")


def connect(port, key, **kw):
    return psycopg.connect(
        host="127.0.0.1", port=port, user="grafana", password=key, dbname="meterbase",
        sslmode="disable", connect_timeout=10, **kw)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--wrong-key", required=True)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--stream-rows", type=int, default=0)
    a = p.parse_args()
    out = {}

    # A wrong key is the protocol's authentication failure: psycopg refuses to connect, and
    # the ErrorResponse itself carries SQLSTATE 28P01 (read off the wire: libpq does not
    # expose a failed connection's SQLSTATE).
    try:
        connect(a.port, a.wrong_key).close()
        sys.exit("a wrong API key connected")
    except psycopg.OperationalError as e:
        if "password authentication failed" not in str(e).lower():
            sys.exit(f"unexpected refusal: {e}")
    out["wrong_key_sqlstate"] = raw_auth_sqlstate(a.port, a.wrong_key)

    with connect(a.port, a.key, autocommit=True) as conn:
        # Prepared (named, server-side) statement with bound, typed parameters, run twice.
        q = ("SELECT customer_id, count(*) AS n, sum(cpu_hours_consumed) AS v FROM compute_events "
             "WHERE customer_id = %s AND timestamp >= %s GROUP BY customer_id")
        prepared = []
        for customer in ["cust_a", "cust_b"]:
            rows = conn.execute(q, (customer, "2025-07-01T00:00:00Z"), prepare=True).fetchall()
            prepared.append([[r[0], r[1], float(r[2])] for r in rows])
        out["prepared"] = prepared

        # Grafana's PostgreSQL data source: a time series with $__timeFilter expanded.
        grafana = ("SELECT date_trunc('hour', timestamp) AS time, sum(cpu_hours_consumed) AS value "
                   "FROM compute_events WHERE timestamp BETWEEN '2025-07-28T00:00:00Z' AND "
                   "'2025-07-29T00:00:00Z' GROUP BY 1 ORDER BY 1")
        out["grafana"] = [[r[0].strftime("%Y-%m-%dT%H:%M:%SZ"), float(r[1])]
                          for r in conn.execute(grafana).fetchall()]

        # Grafana's and Metabase's table and column lists: information_schema.
        out["tables"] = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
            "ORDER BY table_name").fetchall()]
        out["columns"] = [[r[0], r[1]] for r in conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = %s ORDER BY ordinal_position", ("compute_events",)).fetchall()]

        if a.stream_rows:
            sql = "SELECT customer_id, timestamp, cpu_hours_consumed, region FROM compute_events"
            before = rss_kib(a.pid)
            sampler = PeakRss(a.pid)
            sampler.start()
            started = time.monotonic()
            n = 0
            with conn.cursor() as cur:
                # Rows are handed over as they arrive (libpq single-row mode): nothing is
                # collected on either side.
                for _ in cur.stream(sql):
                    n += 1
            elapsed = time.monotonic() - started
            peak = sampler.stop()
            out["stream"] = {"rows": n, "seconds": elapsed, "rows_per_sec": n / elapsed,
                             "rss_before_kib": before, "rss_peak_kib": peak}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
