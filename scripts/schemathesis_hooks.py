"""Schemathesis hooks for meterbase (loaded through SCHEMATHESIS_HOOKS by openapi_test.py).

Schemathesis cannot make NDJSON or CSV bodies by itself: these strategies write events of
the `compute_events` type the test seeds, valid or subtly wrong, one per line or row. Arrow
and Parquet bodies are random bytes.
"""

import json

import schemathesis
from hypothesis import strategies as st

_customer = st.text(min_size=0, max_size=12)
_time = st.one_of(
    st.integers(min_value=0, max_value=4_000_000_000),
    st.sampled_from(["2025-07-28T10:00:00Z", "2025-07-28 10:00:00", "not a time", ""]),
)
_value = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6), st.none())


@st.composite
def _ndjson(draw):
    lines = []
    for _ in range(draw(st.integers(min_value=0, max_value=5))):
        event = {"customer_id": draw(_customer), "timestamp": draw(_time),
                 "data": {"cpu_hours_consumed": draw(_value), "region": draw(_customer)}}
        try:
            lines.append(json.dumps(event))
        except ValueError:
            lines.append("{")
    return ("\n".join(lines) + "\n").encode()


def _cell(v):
    text = "" if v is None else str(v)
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n\r') else text


@st.composite
def _csv(draw):
    header = draw(st.sampled_from([
        ["customer_id", "timestamp", "cpu_hours_consumed", "region"],
        ["customer_id", "timestamp", "cpu_hours_consumed"],
        ["customer_id", "timestamp", "cpu_hours_consumed", "region", "extra"],
    ]))
    rows = [",".join(header)]
    for _ in range(draw(st.integers(min_value=0, max_value=5))):
        rows.append(",".join(_cell(draw(st.one_of(_customer, _time, _value))) for _ in header))
    return ("\r\n".join(rows) + "\r\n").encode()


schemathesis.openapi.media_type("application/x-ndjson", _ndjson(), aliases=["application/jsonl"])
schemathesis.openapi.media_type("text/csv", _csv())
# Arrow and Parquet bodies: arbitrary bytes, so the readers' refusals (400, never 5xx) are
# what is exercised; valid bodies are tested in crates/cli/tests/columnar_ingest.rs.
schemathesis.openapi.media_type("application/vnd.apache.arrow.stream", st.binary(max_size=512))
schemathesis.openapi.media_type("application/vnd.apache.parquet", st.binary(max_size=512))

