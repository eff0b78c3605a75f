#!/usr/bin/env python3
"""The recipe of docs/clients.md, run by crates/cli/tests/openapi.rs: generate a Python
client from the OpenAPI document with openapi-python-client, then use it to define an event
type, send an event and read a billable metric's usage.

    client_example.py --url http://127.0.0.1:8080 --key KEY --schema docs/openapi.json --out DIR
"""

import argparse
import os
import subprocess
import sys


def generate(schema, out):
    """What docs/clients.md tells a user to run."""
    tool = os.path.join(os.path.dirname(sys.executable), "openapi-python-client")
    subprocess.run([tool, "generate", "--path", schema, "--meta", "none",
                    "--output-path", os.path.join(out, "meterbase_client")], check=True)
    sys.path.insert(0, out)


def use(url, key):
    # --- docs/clients.md: from here on, the example as it is printed there ---
    from meterbase_client import AuthenticatedClient
    from meterbase_client.api.billable_metrics import create_metric, metric_usage
    from meterbase_client.api.event_types import create_event_type
    from meterbase_client.api.ingest import ingest
    from meterbase_client.models import (
        DataSchema, DataSchemaData, Event, EventData, EventTypeDefinition, MetricDefinition,
        MetricDefinitionAggregation,
    )

    # The API key as `Authorization: Bearer KEY` (the document's bearerKey scheme).
    client = AuthenticatedClient(base_url=url, token=key, raise_on_unexpected_status=True)

    data = DataSchemaData.from_dict({"cpu_hours_consumed": "Float64", "region": "String"})
    create_event_type.sync(client=client, body=EventTypeDefinition(
        name="Compute events", api_slug="compute_events", dataschema=DataSchema(data=data)))

    accepted = ingest.sync(slug="compute_events", client=client, body=Event(
        customer_id="cust_7d2f", timestamp="2025-07-28T10:00:00Z",
        data=EventData.from_dict({"cpu_hours_consumed": 10.5, "region": "us-east-1"})))
    print("accepted:", accepted.accepted, "digest:", accepted.receipt.digest)

    create_metric.sync(client=client, body=MetricDefinition(
        name="CPU hours", usage_event="compute_events",
        aggregation=MetricDefinitionAggregation.SUM, field="cpu_hours_consumed"))

    usage = metric_usage.sync(slug="cpu_hours", client=client,
                              start_date="2025-07-01", end_date="2025-08-01")
    for row in usage.rows:
        print("usage:", row.customer_id, row.value)
    # --- end of the example ---


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--schema", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    generate(args.schema, args.out)
    use(args.url, args.key)


if __name__ == "__main__":
    main()
