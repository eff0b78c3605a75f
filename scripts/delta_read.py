#!/usr/bin/env python3
"""Reads a Delta Lake table through three independent readers and prints what each one sees.

Why: meterbase publishes every event type as a Delta table (issue 22): `_delta_log/` commits
that point at our own Parquet files, with deletion vectors hiding superseded and deleted rows.
The tests prove that publication by comparing, at one version, what outside engines read with
the server's `/sql` answer. The readers are chDB (`deltaLakeLocal`, or `deltaLake` on S3:
ClickHouse's delta-kernel-rs reader), DuckDB 1.5.5 with the `delta` extension (`delta_scan`,
loaded by file path from the PyPI package `duckdb-extension-delta`, with no autoinstall) and
`deltalake` (delta-rs for Python, through its SQL `QueryBuilder`: its `to_pyarrow_*` refuse
tables with deletion vectors).

    .venv/bin/python scripts/delta_read.py TABLE_ROOT --sum COLUMN [--version N] [--key COL]
    .venv/bin/python scripts/delta_read.py s3://BUCKET/PREFIX/TO/TABLE --sum COLUMN [...]
    .venv/bin/python scripts/delta_read.py --selftest [s3://BUCKET/PREFIX]

prints one JSON object:

    {"table": ..., "version": N|null, "sum": COLUMN,
     "readers": {"chdb": {"rows": [[customer_id, count, sum], ...]} | {"error": "..."},
                 "duckdb": ..., "deltalake": ...},
     "agree": true|false}

`rows` are sorted by customer_id; `sum` is null for a customer whose values are all null.
A reader that fails reports its error; the others still run. `agree` compares the readers that
answered (sums within a relative 1e-9: the readers add in different orders). Exit status 0
unless a reader failed or they disagree. All three readers support `--version` (time travel):
deltalake `DeltaTable(path, version=N)`, DuckDB `delta_scan(path, version := N)`, chDB setting
`delta_lake_snapshot_version`.

TABLE may be an S3 URL (`s3://bucket/prefix/to/table`, any S3-compatible store: the tests use
SeaweedFS). The endpoint, keys and region come from the flags `--s3-endpoint`, `--s3-key-id`,
`--s3-secret` and `--s3-region`, or else from the environment `scripts/test-env.sh` exports:
AWS_ENDPOINT_URL (e.g. http://127.0.0.1:8333; none means AWS itself), AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_REGION or AWS_DEFAULT_REGION (default us-east-1). Each reader is
given them its own way: chDB `deltaLake('http://host:port/bucket/prefix/', key, secret)`
(path-style URL), deltalake `storage_options` (AWS_ENDPOINT_URL, AWS_ALLOW_HTTP for an http
endpoint, AWS_REGION, the keys), DuckDB an S3 secret (ENDPOINT host:port, URL_STYLE path,
USE_SSL false for http) with the `httpfs` extension (without it DuckDB has no `s3` secret type
and no S3 file system) loaded by file path from the PyPI package `duckdb-extension-httpfs`
(pinned like the delta one: no extension can be downloaded here).

`--selftest` writes a small hand-made table (file and inline deletion vectors, a second commit
that replaces one file's vector, a data file under a `date=` folder, Parquet columns outside
the Delta schema) into a temporary folder and checks that every reader returns the expected
rows at versions 0 and 1: proof that the readers are installed and apply deletion vectors.
With an S3 URL, the same table is uploaded under that prefix (with pyarrow's S3 file system)
and read from there.
"""

import argparse
import importlib.util
import json
import math
import os
import pathlib
import struct
import sys
import tempfile
import uuid
import zlib


def _quote(s):
    return "'" + s.replace("\\", "\\\\").replace("'", "''") + "'"


def _ident(s):
    return '"' + s.replace('"', '""') + '"'


def _rows(pairs):
    """[[key, count, sum]] sorted by key, with plain Python types."""
    out = [
        [k, int(n), None if s is None else float(s)]
        for k, n, s in pairs
    ]
    return sorted(out, key=lambda r: (r[0] is None, r[0] or ""))


def _query(key, col, source):
    return (
        f"SELECT {_ident(key)}, count(*), sum({_ident(col)}) FROM {source} "
        f"GROUP BY {_ident(key)}"
    )


class S3:
    """Where an `s3://bucket/prefix` table is and how to reach it."""

    def __init__(self, url, endpoint=None, key_id=None, secret=None, region=None):
        rest = url[len("s3://") :]
        self.bucket, _, prefix = rest.partition("/")
        if not self.bucket:
            raise ValueError(f"no bucket in {url!r}")
        self.prefix = prefix.strip("/")
        self.url = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        env = os.environ.get
        endpoint = endpoint or env("AWS_ENDPOINT_URL_S3") or env("AWS_ENDPOINT_URL") or ""
        self.endpoint = endpoint.rstrip("/")
        self.key_id = key_id or env("AWS_ACCESS_KEY_ID") or ""
        self.secret = secret or env("AWS_SECRET_ACCESS_KEY") or ""
        self.region = region or env("AWS_REGION") or env("AWS_DEFAULT_REGION") or "us-east-1"

    @property
    def http(self):
        return self.endpoint.startswith("http://")

    def host_port(self):
        """The endpoint without its scheme: host:port."""
        return self.endpoint.split("://", 1)[-1]

    def http_url(self):
        """The table as a path-style HTTP(S) URL, ending in "/" (what chDB's deltaLake takes)."""
        base = self.endpoint or f"https://s3.{self.region}.amazonaws.com"
        path = f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket
        return f"{base}/{path}/"

    def storage_options(self):
        """deltalake's (object_store's) options."""
        opts = {"AWS_REGION": self.region}
        if self.endpoint:
            opts["AWS_ENDPOINT_URL"] = self.endpoint
            # Path-style requests: an endpoint other than AWS has no bucket subdomains.
            opts["AWS_VIRTUAL_HOSTED_STYLE_REQUEST"] = "false"
        if self.http:
            opts["AWS_ALLOW_HTTP"] = "true"
        if self.key_id:
            opts["AWS_ACCESS_KEY_ID"] = self.key_id
            opts["AWS_SECRET_ACCESS_KEY"] = self.secret
        return opts

    def pyarrow_fs(self):
        from pyarrow import fs

        kw = {"region": self.region}
        if self.endpoint:
            kw["endpoint_override"] = self.host_port()
            kw["scheme"] = "http" if self.http else "https"
            kw["force_virtual_addressing"] = False
        if self.key_id:
            kw["access_key"], kw["secret_key"] = self.key_id, self.secret
        return fs.S3FileSystem(**kw)


def read_chdb(root, key, col, version):
    import chdb

    # chDB's trivial count() reads numRecords and ignores deletion vectors; a grouped
    # count is not trivial, but keep it off so a changed query cannot silently miscount.
    settings = ["optimize_trivial_count_query=0"]
    if version is not None:
        settings.append(f"delta_lake_snapshot_version={int(version)}")
    if isinstance(root, S3):
        args = _quote(root.http_url())
        if root.key_id:
            args += f", {_quote(root.key_id)}, {_quote(root.secret)}"
        source = f"deltaLake({args})"
    else:
        source = f"deltaLakeLocal({_quote(str(root))})"
    sql = _query(key, col, source) + " SETTINGS " + ", ".join(settings)
    # chDB (26.9) refuses a Delta table outside its user_files_path, which is the current
    # directory, and no connection parameter changed that: read from "/".
    cwd = os.getcwd()
    os.chdir("/")
    try:
        res = chdb.query(sql, "JSONCompact")
    finally:
        os.chdir(cwd)
    return _rows(json.loads(res.bytes())["data"])


def duckdb_extension_path(name="delta"):
    """The <name>.duckdb_extension shipped in the PyPI package duckdb-extension-<name>."""
    spec = importlib.util.find_spec(f"duckdb_extension_{name}")
    if spec is None:
        raise RuntimeError(f"duckdb-extension-{name} is not installed")
    for loc in spec.submodule_search_locations:
        for p in pathlib.Path(loc).rglob(f"{name}.duckdb_extension"):
            return p
    raise RuntimeError(f"no {name}.duckdb_extension in duckdb-extension-{name}")


def read_duckdb(root, key, col, version):
    import duckdb

    con = duckdb.connect(
        config={"autoinstall_known_extensions": False, "autoload_known_extensions": False}
    )
    if isinstance(root, S3):
        # httpfs brings the `s3` secret type and DuckDB's S3 file system (without it, CREATE
        # SECRET (TYPE s3 ...) is refused); the delta extension takes the secret from there.
        con.execute(f"LOAD {_quote(str(duckdb_extension_path('httpfs')))}")
        secret = ["TYPE s3", f"REGION {_quote(root.region)}"]
        if root.key_id:
            secret += [f"KEY_ID {_quote(root.key_id)}", f"SECRET {_quote(root.secret)}"]
        if root.endpoint:
            secret += [f"ENDPOINT {_quote(root.host_port())}", "URL_STYLE 'path'"]
            secret.append(f"USE_SSL {'false' if root.http else 'true'}")
        con.execute(f"CREATE SECRET meterbase_s3 ({', '.join(secret)})")
        location = root.url
    else:
        location = str(root)
    con.execute(f"LOAD {_quote(str(duckdb_extension_path()))}")
    args = _quote(location)
    if version is not None:
        args += f", version := {int(version)}"
    return _rows(con.execute(_query(key, col, f"delta_scan({args})")).fetchall())


def read_deltalake(root, key, col, version):
    import deltalake

    if isinstance(root, S3):
        dt = deltalake.DeltaTable(
            root.url, version=version, storage_options=root.storage_options()
        )
    else:
        dt = deltalake.DeltaTable(str(root), version=version)
    batches = deltalake.QueryBuilder().register("t", dt).execute(_query(key, col, "t"))
    out = []
    for b in batches:
        cols = [b.column(i).to_pylist() for i in range(3)]
        out.extend(zip(*cols))
    return _rows(out)


READERS = {"chdb": read_chdb, "duckdb": read_duckdb, "deltalake": read_deltalake}


def _same(a, b):
    if len(a) != len(b):
        return False
    for (ka, na, sa), (kb, nb, sb) in zip(a, b):
        if ka != kb or na != nb or (sa is None) != (sb is None):
            return False
        if sa is not None and not math.isclose(sa, sb, rel_tol=1e-9, abs_tol=1e-9):
            return False
    return True


def read_all(root, col, version=None, key="customer_id"):
    """root: a local folder or an S3 table."""
    readers = {}
    for name, fn in READERS.items():
        try:
            readers[name] = {"rows": fn(root, key, col, version)}
        except Exception as e:  # noqa: BLE001 -- one failing reader must not hide the others
            readers[name] = {"error": f"{type(e).__name__}: {e}"}
    answered = [r["rows"] for r in readers.values() if "rows" in r]
    agree = len(answered) == len(readers) and all(_same(answered[0], r) for r in answered)
    table = root.url if isinstance(root, S3) else str(root)
    return {"table": table, "version": version, "sum": col, "readers": readers, "agree": agree}


# ---------------------------------------------------------------------------------------------
# Self-check: a hand-made Delta table, written here per the Delta protocol (PROTOCOL.md).

Z85 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
DV_MAGIC = 1681511377


def z85(data):
    """Z85 of bytes whose length is a multiple of 4 (4 big-endian bytes -> 5 digits)."""
    assert len(data) % 4 == 0
    out = []
    for i in range(0, len(data), 4):
        v = int.from_bytes(data[i : i + 4], "big")
        out.append("".join(Z85[(v // 85**p) % 85] for p in range(4, -1, -1)))
    return "".join(out)


def roaring32(values):
    """Portable serialization of a 32-bit roaring bitmap (array/bitmap containers, no runs)."""
    buckets = {}
    for v in sorted(set(values)):
        buckets.setdefault(v >> 16, []).append(v & 0xFFFF)
    keys = sorted(buckets)
    head = struct.pack("<II", 12346, len(keys))
    head += b"".join(struct.pack("<HH", k, len(buckets[k]) - 1) for k in keys)
    bodies = []
    for k in keys:
        low = buckets[k]
        if len(low) <= 4096:
            bodies.append(struct.pack(f"<{len(low)}H", *low))
        else:
            bits = bytearray(8192)
            for x in low:
                bits[x >> 3] |= 1 << (x & 7)
            bodies.append(bytes(bits))
    offset = len(head) + 4 * len(keys)
    offsets = []
    for b in bodies:
        offsets.append(struct.pack("<I", offset))
        offset += len(b)
    return head + b"".join(offsets) + b"".join(bodies)


def dv_bitmap(rows):
    """RoaringBitmapArray: magic, bucket count, then per 32-bit high key a roaring bitmap."""
    high = {}
    for r in sorted(set(rows)):
        high.setdefault(r >> 32, []).append(r & 0xFFFFFFFF)
    out = struct.pack("<IQ", DV_MAGIC, len(high))
    for k in sorted(high):
        out += struct.pack("<I", k) + roaring32(high[k])
    return out


def dv_file(bitmaps):
    """A deletion vector file: version byte 1, then per DV size (BE), data, CRC-32 (BE).
    Returns (bytes, [(offset, sizeInBytes)])."""
    out, where = bytearray(b"\x01"), []
    for data in bitmaps:
        where.append((len(out), len(data)))
        out += struct.pack(">I", len(data)) + data + struct.pack(">I", zlib.crc32(data))
    return bytes(out), where


def dv_in_file(root, prefix, rows):
    """Writes <root>/<prefix>/deletion_vector_<uuid>.bin; returns its descriptor."""
    u = uuid.uuid4()
    data, [(offset, size)] = dv_file([dv_bitmap(rows)])
    d = pathlib.Path(root, prefix)
    d.mkdir(parents=True, exist_ok=True)
    (d / f"deletion_vector_{u}.bin").write_bytes(data)
    return {
        "storageType": "u",
        "pathOrInlineDv": prefix + z85(u.bytes),
        "offset": offset,
        "sizeInBytes": size,
        "cardinality": len(set(rows)),
    }


def dv_inline(rows):
    data = dv_bitmap(rows)
    padded = data + b"\0" * (-len(data) % 4)
    return {
        "storageType": "i",
        "pathOrInlineDv": z85(padded),
        "sizeInBytes": len(data),
        "cardinality": len(set(rows)),
    }


COLUMNS = [
    ("customer_id", "string"),
    ("timestamp", "timestamp"),
    ("cpu_hours_consumed", "double"),
    ("region", "string"),
    ("_ingested_at", "timestamp"),
]


def schema_string():
    return json.dumps(
        {
            "type": "struct",
            "fields": [
                {"name": n, "type": t, "nullable": True, "metadata": {}} for n, t in COLUMNS
            ],
        }
    )


def write_parquet(root, rel, rows):
    """rows: [(customer_id, timestamp µs, cpu_hours, region)]; adds _ingested_at and _seq
    (a column our files carry that the Delta schema does not name)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ts = pa.timestamp("us", tz="UTC")
    t = pa.table(
        {
            "customer_id": pa.array([r[0] for r in rows], pa.string()),
            "timestamp": pa.array([r[1] for r in rows], ts),
            "cpu_hours_consumed": pa.array([r[2] for r in rows], pa.float64()),
            "region": pa.array([r[3] for r in rows], pa.string()),
            "_ingested_at": pa.array([r[1] + 5_000_000 for r in rows], ts),
            "_seq": pa.array([(7 << 20) | i for i in range(len(rows))], pa.uint64()),
        }
    )
    p = pathlib.Path(root, rel)
    p.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(t, p)
    return p.stat().st_size


def iso_ms(us, up=False):
    """A µs timestamp as ISO-8601 UTC with milliseconds (rounded up for a max)."""
    import datetime

    ms = -(-us // 1000) if up else us // 1000
    t = datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def stats(rows):
    ts = [r[1] for r in rows]
    return json.dumps(
        {
            "numRecords": len(rows),
            "minValues": {
                "customer_id": min(r[0] for r in rows),
                "timestamp": iso_ms(min(ts)),
                "cpu_hours_consumed": min(r[2] for r in rows),
                "_ingested_at": iso_ms(min(ts) + 5_000_000),
            },
            "maxValues": {
                "customer_id": max(r[0] for r in rows),
                "timestamp": iso_ms(max(ts), up=True),
                "cpu_hours_consumed": max(r[2] for r in rows),
                "_ingested_at": iso_ms(max(ts) + 5_000_000, up=True),
            },
            "nullCount": {n: 0 for n, _ in COLUMNS},
            "tightBounds": False,
        }
    )


def add_action(root, rel, rows, dv=None, data_change=True):
    a = {
        "path": rel,
        "partitionValues": {},
        "size": pathlib.Path(root, rel).stat().st_size,
        "modificationTime": 1735689600000,
        "dataChange": data_change,
        "stats": stats(rows),
    }
    if dv is not None:
        a["deletionVector"] = dv
    return {"add": a}


def remove_action(add, data_change=True):
    a = add["add"]
    r = {
        "path": a["path"],
        "deletionTimestamp": 1735776000000,
        "dataChange": data_change,
        "extendedFileMetadata": True,
        "partitionValues": {},
        "size": a["size"],
    }
    if "deletionVector" in a:
        r["deletionVector"] = a["deletionVector"]
    return {"remove": r}


def protocol_action():
    return {
        "protocol": {
            "minReaderVersion": 3,
            "minWriterVersion": 7,
            "readerFeatures": ["deletionVectors"],
            "writerFeatures": ["deletionVectors"],
        }
    }


def metadata_action():
    return {
        "metaData": {
            "id": "5b0ae4f6-0f8d-4c38-9d7e-0c7d2b9a6f11",
            "format": {"provider": "parquet", "options": {}},
            "schemaString": schema_string(),
            "partitionColumns": [],
            "configuration": {"delta.enableDeletionVectors": "true"},
            "createdTime": 1735689600000,
        }
    }


def commit(root, version, actions):
    log = pathlib.Path(root, "_delta_log")
    log.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(a) + "\n" for a in actions)
    with open(log / f"{version:020d}.json", "x") as f:  # a commit never overwrites
        f.write(text)


def build_selftest_table(root, prefix="0f3c9a7be5d04c1e9b2a6d8f4e1c7a35"):
    """Two files, version 0 and 1; returns {version: expected rows}."""
    day = 1735689600_000_000  # 2025-01-01T00:00:00Z in µs
    f1 = [(f"c{i % 3}", day + i * 60_000_000 + 123, float(i) + 0.5, "eu") for i in range(10)]
    f2 = [(f"c{i % 2}", day + i * 1_000_001, 100.0 + i, "us") for i in range(6)]
    rel1, rel2 = f"date=2025-01-01/{prefix}-1-10.parquet", f"{prefix}-11-16.parquet"
    write_parquet(root, rel1, f1)
    write_parquet(root, rel2, f2)
    dv1 = dv_in_file(root, prefix, [0, 9])
    add1 = add_action(root, rel1, f1, dv1)
    add2 = add_action(root, rel2, f2, dv_inline([1]))
    txn = {"txn": {"appId": "meterbase", "version": 1, "lastUpdated": 1735689600000}}
    info = {"commitInfo": {"timestamp": 1735689600000, "operation": "WRITE"}}
    commit(root, 0, [info, protocol_action(), metadata_action(), txn, add1, add2])
    dv1b = dv_in_file(root, prefix, [0, 4, 9])
    txn = {"txn": {"appId": "meterbase", "version": 2, "lastUpdated": 1735689660000}}
    commit(root, 1, [txn, remove_action(add1), add_action(root, rel1, f1, dv1b)])

    def expect(deleted1, deleted2):
        live = [r for i, r in enumerate(f1) if i not in deleted1]
        live += [r for i, r in enumerate(f2) if i not in deleted2]
        acc = {}
        for c, _, v, _ in live:
            n, s = acc.get(c, (0, 0.0))
            acc[c] = (n + 1, s + v)
        return _rows((c, n, s) for c, (n, s) in acc.items())

    return {0: expect({0, 9}, {1}), 1: expect({0, 4, 9}, {1})}


def selftest(s3=None):
    """s3: an S3 location to upload the table under and read it from (else a local folder)."""
    failed = []
    with tempfile.TemporaryDirectory(prefix="delta-selftest-") as local:
        expected = build_selftest_table(local)
        root = local
        if s3 is not None:
            from pyarrow import fs

            where = f"{s3.url}/selftest-{uuid.uuid4().hex}"
            s3 = S3(where, s3.endpoint, s3.key_id, s3.secret, s3.region)
            remote = s3.pyarrow_fs()
            fs.copy_files(local, f"{s3.bucket}/{s3.prefix}", destination_filesystem=remote)
            root = s3
        try:
            for version, want in sorted(expected.items()):
                got = read_all(root, "cpu_hours_consumed", version)
                for name, r in got["readers"].items():
                    ok = "rows" in r and _same(r["rows"], want)
                    print(f"selftest: {name} at version {version} on {got['table']}: "
                          f"{'ok' if ok else 'FAILED'}")
                    if not ok:
                        failed.append((name, version, r, want))
        finally:
            if s3 is not None:
                remote.delete_dir(f"{s3.bucket}/{s3.prefix}")
    for name, version, r, want in failed:
        print(f"{name} v{version}: got {json.dumps(r)}, want {json.dumps(want)}", file=sys.stderr)
    return 1 if failed else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("table", nargs="?", help="the Delta table's root folder or s3:// URL")
    ap.add_argument("--sum", metavar="COLUMN", help="the numeric column to add up per customer")
    ap.add_argument("--key", default="customer_id", help="the column to group by")
    ap.add_argument("--version", type=int, help="read this Delta version (time travel)")
    ap.add_argument("--selftest", action="store_true",
                    help="check the readers on a made table (under TABLE if it is an s3:// URL)")
    ap.add_argument("--s3-endpoint", help="S3 endpoint URL (default: $AWS_ENDPOINT_URL)")
    ap.add_argument("--s3-key-id", help="S3 access key id (default: $AWS_ACCESS_KEY_ID)")
    ap.add_argument("--s3-secret", help="S3 secret key (default: $AWS_SECRET_ACCESS_KEY)")
    ap.add_argument("--s3-region",
                    help="S3 region (default: $AWS_REGION, $AWS_DEFAULT_REGION, us-east-1)")
    a = ap.parse_args()
    root = None
    if a.table and a.table.startswith("s3://"):
        root = S3(a.table, a.s3_endpoint, a.s3_key_id, a.s3_secret, a.s3_region)
    elif a.table:
        root = os.path.abspath(a.table)
    if a.selftest:
        if root is not None and not isinstance(root, S3):
            ap.error("--selftest takes no TABLE, or an s3:// URL to run it on")
        return selftest(root)
    if not a.table or not a.sum:
        ap.error("TABLE and --sum COLUMN are required (or --selftest)")
    out = read_all(root, a.sum, a.version, a.key)
    print(json.dumps(out))
    return 0 if out["agree"] else 1


if __name__ == "__main__":
    sys.exit(main())
