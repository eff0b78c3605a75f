//! `components` of the document: the shapes of bodies and answers, the shared parameters
//! and headers, and the security schemes. The handlers write their JSON directly (often as
//! text, for speed), so these shapes are stated here and held to the server by schemathesis
//! (`crates/cli/tests/openapi.rs`).

use serde_json::{Value, json};

use super::build::schema as r;

fn instant() -> Value {
    json!({ "type": "string", "format": "date-time", "description": "RFC 3339, UTC, with `Z`." })
}

fn count() -> Value {
    json!({ "type": "integer", "minimum": 0 })
}

/// A value a query computed: a number, a decimal as an exact string, or null.
fn value() -> Value {
    json!({ "type": ["number", "string", "null"] })
}

pub(crate) fn security_schemes() -> Value {
    json!({
        "apiKey": {
            "type": "apiKey", "in": "header", "name": "x-api-key",
            "description": "An organisation's API key; the key alone decides the organisation.",
        },
        "bearerKey": {
            "type": "http", "scheme": "bearer",
            "description": "The same API key as `Authorization: Bearer KEY`. Sending both headers with different keys is 401.",
        },
        "adminToken": {
            "type": "http", "scheme": "bearer",
            "description": "The admin token the server was started with (`--admin-token`, `METERBASE_ADMIN_TOKEN`). Without one the admin API answers 403.",
        },
    })
}

pub(crate) fn parameters() -> Value {
    json!({
        "organisation": {
            "name": "organisation", "in": "header", "required": false,
            "description": "When present, must name the key's organisation (its id or name); otherwise 403.",
            "schema": { "type": "string" },
        },
        "slug": {
            "name": "slug", "in": "path", "required": true,
            "description": "The event type's `api_slug` (any case).",
            "schema": { "type": "string", "minLength": 1 }, "example": "compute_events",
        },
        "metricSlug": {
            "name": "slug", "in": "path", "required": true,
            "description": "The billable metric's slug.",
            "schema": { "type": "string", "minLength": 1 }, "example": "cpu_hours",
        },
        "contentEncoding": {
            "name": "Content-Encoding", "in": "header", "required": false,
            "description": "The body is compressed. Size limits apply to the inflated bytes, counted while inflating.",
            "schema": { "type": "string", "enum": ["gzip", "zstd", "identity"] },
        },
    })
}

pub(crate) fn headers() -> Value {
    json!({
        "RetryAfter": {
            "description": "Seconds to wait before retrying.",
            "schema": { "type": "integer", "minimum": 0 },
        },
        "ZuoraTrackId": {
            "description": "The request's `Zuora-Track-Id`, echoed.",
            "schema": { "type": "string", "maxLength": 64 },
        },
    })
}

pub(crate) fn schemas() -> Value {
    // In parts: one `json!` of them all passes the macro recursion limit.
    let parts = [
        json!({
            "Problem": {
                "description": "RFC 9457 problem details (`application/problem+json`).",
                "type": "object",
                "required": ["type", "title", "status", "detail"],
                "properties": {
                    "type": { "type": "string", "format": "uri" },
                    "title": { "type": "string" },
                    "status": { "type": "integer", "minimum": 400, "maximum": 599 },
                    "detail": { "type": "string" },
                    "errors": { "type": "array", "items": r("ProblemError"), "maxItems": 1000 },
                    "invalid_events": { "description": "How many events or rows are invalid (`errors` lists at most 100, or 1000 for CSV).", "type": "integer", "minimum": 0 },
                    "rows": { "description": "CSV: rows read.", "type": "integer", "minimum": 0 },
                    "success": { "description": "`/usage/bulk/{slug}` (Zuora's shape): always false on an error.", "type": "boolean" },
                },
            },
            "ProblemError": {
                "description": "One invalid event, row or member.",
                "type": "object",
                "required": ["pointer", "message"],
                "properties": {
                    "index": { "description": "0-based position in a JSON body.", "type": "integer", "minimum": 0 },
                    "line": { "description": "1-based line of NDJSON, or of CSV (the header is line 1).", "type": "integer", "minimum": 1 },
                    "pointer": { "description": "A JSON pointer into the event or definition, or the CSV column name.", "type": "string" },
                    "message": { "type": "string" },
                },
            },
            "Health": {
                "type": "object",
                "required": ["status", "queries"],
                "properties": {
                    "status": { "const": "ok" },
                    "queries": {
                        "type": "object",
                        "required": ["running", "queued", "refused", "cancelled"],
                        "properties": { "running": count(), "queued": count(), "refused": count(), "cancelled": count() },
                    },
                },
            },
            "Organisation": {
                "type": "object",
                "required": ["id", "name", "created_at"],
                "properties": { "id": { "type": "string" }, "name": { "type": "string" }, "created_at": instant() },
            },
            "OrganisationList": {
                "type": "object", "required": ["items"],
                "properties": { "items": { "type": "array", "items": r("Organisation") } },
            },
            "NewOrganisation": {
                "type": "object", "required": ["name"],
                "properties": { "name": { "type": "string", "minLength": 1, "maxLength": 128 } },
            },
        }),
        json!({
            "CreatedOrganisation": {
                "description": "The only time the key is shown.",
                "type": "object",
                "required": ["id", "name", "api_key", "api_key_id"],
                "properties": {
                    "id": { "type": "string" }, "name": { "type": "string" },
                    "api_key": { "type": "string" }, "api_key_id": { "type": "string" },
                },
            },
            "CreatedApiKey": {
                "description": "The only time the key is shown.",
                "type": "object", "required": ["id", "api_key"],
                "properties": { "id": { "type": "string" }, "api_key": { "type": "string" } },
            },
            "ApiKeyList": {
                "description": "Key ids, oldest first; never the keys.",
                "type": "object", "required": ["items"],
                "properties": { "items": { "type": "array", "items": {
                    "type": "object", "required": ["id", "created_at"],
                    "properties": { "id": { "type": "string" }, "created_at": instant() },
                } } },
            },
            "CompactionStats": {
                "type": "object",
                "required": ["files_in", "files_out", "rows_in", "rows_out", "files_one_seq"],
                "properties": {
                    "files_in": count(), "files_out": count(), "rows_in": count(), "rows_out": count(),
                    "files_one_seq": { "description": "Outputs whose rows share one `_seq` (docs/storage.md).", "type": "integer", "minimum": 0 },
                },
            },
            "OpenTables": {
                "type": "object",
                "required": ["tables"],
                "properties": {
                    "tables": { "type": "array", "items": {
                        "type": "object",
                        "required": ["organisation_id", "slug", "version", "manifest_version", "files"],
                        "properties": {
                            "organisation_id": { "type": "string" },
                            "slug": { "type": "string" },
                            "version": { "description": "The table's Delta version; null before the first commit.", "type": ["integer", "null"] },
                            "manifest_version": { "description": "The manifest version that Delta version holds.", "type": ["integer", "null"], "minimum": 0 },
                            "files": count(),
                            "error": { "description": "Why this attempt could not publish (retried at the next tick).", "type": "string" },
                        },
                    } },
                },
            },
            "Faults": {
                "description": "What the object store and the write-ahead log do wrong (tests only); absent fields are left as they are.",
                "type": "object", "additionalProperties": false,
                "properties": {
                    "outage": { "type": "boolean" },
                    "fail_puts": count(), "lose_put_responses": count(), "latency_ms": count(),
                    "timeout_puts": count(), "timeout_ms": count(), "wal_sync_failures": count(),
                },
            },
            "DataSchema": {
                "type": "object", "additionalProperties": false,
                "properties": {
                    "customer_id": { "type": ["string", "null"], "description": "`String` (the default)." },
                    "timestamp": { "type": ["string", "null"], "description": "`DateTime64` or `DateTime64(p)` (the default `DateTime64`)." },
                    "data": {
                        "description": "Field name → type: `String`, `UUID`, `Int8/16/32/64`, `UInt8/16/32/64`, `Float32`, `Float64`, `Decimal(P,S)`, `Bool`, `Date`, `DateTime`, `DateTime64[(p)]`, `LowCardinality(T)`, `Nullable(T)` (only `Nullable` fields may be absent or null).",
                        "type": "object", "additionalProperties": { "type": "string" },
                    },
                },
            },
        }),
        json!({
            "EventTypeDefinition": {
                "type": "object", "required": ["name"], "additionalProperties": false,
                "properties": {
                    "name": { "type": "string" },
                    "api_slug": { "description": "1-64 letters, digits, `_`, `-`; derived from `name` when absent.", "type": "string" },
                    "dataschema": r("DataSchema"),
                    "column_order": { "description": "Sort order of stored files (default `[\"timestamp\"]`).", "type": "array", "items": { "type": "string" } },
                    "unique_key": { "description": "Fields that identify one record (default `[\"customer_id\",\"timestamp\"]`); a later event with the same key replaces the earlier one.", "type": "array", "items": { "type": "string" } },
                },
                "example": {
                    "name": "Compute events", "api_slug": "compute_events",
                    "dataschema": { "customer_id": "String", "timestamp": "DateTime64",
                                    "data": { "cpu_hours_consumed": "Float64", "region": "String" } },
                    "column_order": ["timestamp"], "unique_key": ["customer_id", "timestamp"],
                },
            },
            "EventTypePatch": {
                "description": "May rename, and add `Nullable` fields (send the whole `dataschema.data` with the new fields added); anything else is 400.",
                "type": "object",
                "properties": { "name": { "type": "string" }, "dataschema": r("DataSchema") },
            },
            "EventType": {
                "type": "object",
                "required": ["id", "name", "api_slug", "dataschema", "column_order", "unique_key", "created_at", "schema_version", "endpoint"],
                "properties": {
                    "id": { "type": "string" }, "name": { "type": "string" }, "api_slug": { "type": "string" },
                    "dataschema": r("DataSchema"),
                    "column_order": { "type": "array", "items": { "type": "string" } },
                    "unique_key": { "type": "array", "items": { "type": "string" } },
                    "created_at": instant(),
                    "schema_version": { "description": "Bumped by every change of fields.", "type": "integer", "minimum": 0 },
                    "endpoint": { "description": "Where its events are sent, e.g. `/usage/compute_events`.", "type": "string" },
                },
            },
            "EventTypeList": {
                "type": "object", "required": ["items"],
                "properties": { "items": { "type": "array", "items": r("EventType") } },
            },
            "EventTypeStats": {
                "description": "Where the type's rows are, from the manifest and the buffer (rows counted before deduplication).",
                "type": "object",
                "required": ["buffered", "persisted", "deletions", "latest_timestamp"],
                "properties": {
                    "buffered": { "type": "object", "required": ["rows", "bytes"], "properties": { "rows": count(), "bytes": count() } },
                    "persisted": { "type": "object", "required": ["rows", "files", "bytes"], "properties": { "rows": count(), "files": count(), "bytes": count() } },
                    "deletions": count(),
                    "latest_timestamp": { "type": ["string", "null"], "format": "date-time" },
                },
            },
            "Event": {
                "description": "One usage event. `data` holds the event type's fields, validated against its definition.",
                "type": "object", "required": ["customer_id", "timestamp"], "additionalProperties": false,
                "properties": {
                    "customer_id": { "type": "string", "minLength": 1, "description": "At most 256 bytes." },
                    "timestamp": {
                        "description": "RFC 3339 (with `Z` or an offset, up to 9 fraction digits), `YYYY-MM-DD HH:MM:SS[.f]` or `YYYY-MM-DDTHH:MM:SS[.f]` read as UTC, or Unix epoch seconds. At most 24 h in the future.",
                        "type": ["string", "number"],
                    },
                    "data": { "type": "object" },
                },
                "example": { "customer_id": "cust_7d2f", "timestamp": "2025-07-28T10:00:00Z",
                             "data": { "cpu_hours_consumed": 10.5, "region": "us-east-1" } },
            },
        }),
        json!({
            "Events": {
                "description": "One event or an array of events; all or nothing.",
                "oneOf": [r("Event"), { "type": "array", "items": r("Event") }],
            },
            "ZuoraUsage": {
                "description": "Zuora's usage shape: `CustomerId` → `customer_id`, `UsageDate` → `timestamp`, every other key → the data field of its snake_case name (`UsageIdentifier` → `usage_identifier`). Events in the shape of `Event` are accepted too.",
                "type": "object",
                "properties": {
                    "CustomerId": { "type": "string" }, "UsageDate": { "type": ["string", "number"] },
                    "UsageIdentifier": { "type": "string" }, "Quantity": { "type": ["number", "string"] },
                },
                "example": { "CustomerId": "cust_7d2f", "UsageDate": "2025-07-28T10:00:00Z", "UsageIdentifier": "compute", "Quantity": 3 },
            },
            "ZuoraBody": {
                "oneOf": [r("ZuoraUsage"), { "type": "array", "items": r("ZuoraUsage") }],
            },
            "Receipt": {
                "description": "Exactly what was accepted: how many events, the log sequences holding them (null when nothing was logged), and their reconciliation digest (`sha256-sum64-v1`, as `GET /usage/{slug}/reconcile` answers).",
                "type": "object", "required": ["count", "first_seq", "last_seq", "digest"],
                "properties": {
                    "count": count(),
                    "first_seq": { "type": ["integer", "null"], "minimum": 0 },
                    "last_seq": { "type": ["integer", "null"], "minimum": 0 },
                    "digest": { "type": "string", "pattern": "^[0-9a-f]{16}$" },
                },
            },
            "IngestResult": {
                "type": "object", "required": ["accepted", "receipt"],
                "properties": { "accepted": count(), "receipt": r("Receipt") },
            },
            "BulkResult": {
                "type": "object", "required": ["success", "message", "receipt"],
                "properties": { "success": { "const": true }, "message": { "type": "string", "example": "3 events ingested" }, "receipt": r("Receipt") },
            },
        }),
        json!({
            "CsvResult": {
                "type": "object", "required": ["rows", "accepted", "receipt"],
                "properties": { "rows": count(), "accepted": count(), "receipt": r("Receipt") },
            },
            "CsvDryRun": {
                "type": "object", "required": ["rows", "valid", "errors"],
                "properties": { "rows": count(), "valid": count(), "errors": { "type": "array", "items": r("ProblemError") } },
            },
            "StoredEvent": {
                "type": "object", "required": ["customer_id", "timestamp", "data", "ingested_at"],
                "properties": {
                    "customer_id": { "type": "string" }, "timestamp": instant(),
                    "data": { "type": "object" }, "ingested_at": instant(),
                },
            },
            "EventPage": {
                "type": "object", "required": ["items", "next_cursor"],
                "properties": {
                    "items": { "type": "array", "items": r("StoredEvent") },
                    "next_cursor": { "description": "Pass back as `cursor` for the next page; null on the last page.", "type": ["string", "null"] },
                },
            },
            "DeleteResult": {
                "oneOf": [
                    {
                        "description": "The deletion is durable. `deleted` is null when counting its rows failed (`count_error` says why).",
                        "type": "object", "required": ["deleted"],
                        "properties": { "deleted": { "type": ["integer", "null"], "minimum": 0 }, "count_error": { "type": "string" } },
                    },
                    {
                        "description": "`dry_run=true`: nothing deleted.",
                        "type": "object", "required": ["would_delete"],
                        "properties": { "would_delete": count() },
                    },
                ],
            },
            "Reconciliation": {
                "type": "object", "required": ["algorithm", "event_type", "from", "to", "by", "buckets"],
                "properties": {
                    "algorithm": { "type": "string", "example": "sha256-sum64-v1" },
                    "event_type": { "type": "string" }, "from": instant(), "to": instant(),
                    "by": { "enum": ["day", "hour"] },
                    "buckets": { "type": "array", "items": {
                        "type": "object", "required": ["customer_id", "bucket_start", "count", "sums", "digest"],
                        "properties": {
                            "customer_id": { "type": "string" }, "bucket_start": instant(), "count": count(),
                            "sums": { "description": "Numeric field → exact sum (decimals as strings).", "type": "object", "additionalProperties": value() },
                            "digest": { "type": "string", "pattern": "^[0-9a-f]{16}$" },
                        },
                    } },
                },
            },
        }),
        json!({
            "SqlRequest": {
                "type": "object", "required": ["sql"], "additionalProperties": false,
                "properties": {
                    "sql": { "type": "string", "description": "`SELECT`, `WITH` or `EXPLAIN`; each event type is a table named by its slug." },
                    "params": { "description": "Values of `$name` placeholders.", "type": "object", "additionalProperties": { "type": ["string", "number", "boolean", "null"] } },
                    "as_of": { "description": "See the data as it stood at that instant.", "type": "string", "format": "date-time" },
                },
                "example": {
                    "sql": "SELECT customer_id, sum(cpu_hours_consumed) AS value FROM compute_events WHERE timestamp >= $start GROUP BY customer_id",
                    "params": { "start": "2025-07-01T00:00:00Z" },
                },
            },
            "SqlResult": {
                "type": "object", "required": ["columns", "rows"],
                "properties": {
                    "columns": { "type": "array", "items": {
                        "type": "object", "required": ["name", "type"],
                        "properties": { "name": { "type": "string" }, "type": { "type": "string", "description": "The Arrow type." } },
                    } },
                    "rows": { "type": "array", "items": { "type": "object" } },
                },
            },
            "MetricFilter": {
                "type": "object", "required": ["field", "op"], "additionalProperties": false,
                "properties": {
                    "field": { "type": "string" },
                    "op": { "enum": ["eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte"] },
                    "value": { "description": "A value, or an array for `in`/`not_in`." },
                },
            },
            "MetricDefinition": {
                "description": "SQL form (`sql`) or builder form (`usage_event`, `aggregation`, …). SQL may use `{{start_date}}`, `{{end_date}}` and `{{customer_id}}`, bound as typed parameters, and must return `customer_id` and `value`.",
                "type": "object", "required": ["name"], "additionalProperties": false,
                "properties": {
                    "name": { "type": "string" },
                    "slug": { "type": "string", "description": "Derived from `name` when absent." },
                    "sql": { "type": "string" },
                    "period": { "enum": ["bounded", "all_time"] },
                    "usage_event": { "type": "string" },
                    "aggregation": { "enum": ["count", "sum", "min", "max", "avg", "unique_count", "latest", "earliest", "time_weighted_sum"] },
                    "field": { "type": "string" },
                    "filters": { "type": "array", "items": r("MetricFilter") },
                    "group_by": { "type": "array", "items": { "type": "string" } },
                },
                "example": { "name": "CPU hours", "usage_event": "compute_events", "aggregation": "sum", "field": "cpu_hours_consumed" },
            },
            "MetricBody": {
                "description": "A stored definition: what runs (`sql`, compiled from the builder where one was given) and the tables it reads.",
                "type": "object", "required": ["slug", "name", "sql", "reads", "period"],
                "properties": {
                    "slug": { "type": "string" }, "name": { "type": "string" }, "sql": { "type": "string" },
                    "builder": {
                        "type": "object", "required": ["usage_event", "aggregation"],
                        "properties": {
                            "usage_event": { "type": "string" }, "aggregation": { "type": "string" }, "field": { "type": "string" },
                            "filters": { "type": "array", "items": r("MetricFilter") },
                            "group_by": { "type": "array", "items": { "type": "string" } },
                        },
                    },
                    "reads": { "type": "array", "items": { "type": "string" } },
                    "period": { "enum": ["bounded", "all_time"] },
                },
            },
            "Metric": {
                "allOf": [r("MetricBody"), {
                    "type": "object", "required": ["created_at", "version", "version_created_at"],
                    "properties": {
                        "created_at": { "description": "When version 1 took effect.", "type": "string", "format": "date-time" },
                        "version": { "type": "integer", "minimum": 1 },
                        "version_created_at": { "description": "When this version took effect.", "type": "string", "format": "date-time" },
                    },
                }],
            },
        }),
        json!({
            "MetricList": {
                "type": "object", "required": ["items"],
                "properties": { "items": { "type": "array", "items": r("Metric") } },
            },
            "MetricVersions": {
                "type": "object", "required": ["metric", "versions"],
                "properties": {
                    "metric": { "type": "string" },
                    "versions": { "type": "array", "items": {
                        "type": "object", "required": ["version", "created_at", "definition"],
                        "properties": { "version": { "type": "integer", "minimum": 1 }, "created_at": instant(), "definition": r("MetricBody") },
                    } },
                },
            },
            "Usage": {
                "type": "object", "required": ["metric", "version", "start_date", "end_date", "rows"],
                "properties": {
                    "metric": { "type": "string" },
                    "version": { "description": "The version evaluated: the current one, or with `as_of` the one in force then.", "type": "integer", "minimum": 1 },
                    "start_date": instant(), "end_date": instant(),
                    "period": { "const": "all_time" },
                    "rows": { "type": "array", "items": {
                        "description": "Other members are the metric's dimensions.",
                        "type": "object", "required": ["value"],
                        "properties": {
                            "customer_id": { "type": ["string", "null"] }, "value": value(),
                            "window_start": { "type": "string", "format": "date-time" },
                        },
                    } },
                },
            },
            "Explanation": {
                "type": "object",
                "required": ["metric", "version", "customer_id", "start_date", "end_date", "value", "counts", "items", "next_cursor"],
                "properties": {
                    "metric": { "type": "string" }, "version": { "type": "integer", "minimum": 1 },
                    "customer_id": { "type": "string" }, "start_date": instant(), "end_date": instant(),
                    "as_of": { "type": ["string", "null"], "format": "date-time" },
                    "value": {
                        "description": "The usage endpoint's value for the same arguments (an array when the metric has dimensions; null without usage).",
                        "anyOf": [value(), { "type": "array", "items": value() }],
                    },
                    "contributions": { "description": "How the items' contributions relate to the value, or why there are none.", "type": "string" },
                    "counts": {
                        "description": "Events by what happened to them: `included`, `replaced`, `deleted`, `outside_period`, `filtered`, `after_as_of`.",
                        "type": "object", "additionalProperties": count(),
                    },
                    "items": { "type": "array", "items": {
                        "description": "An event (`customer_id`, `timestamp`, `data`, `ingested_at`) with its `contribution`, or with the `reason` and `detail` of its exclusion.",
                        "type": "object",
                    } },
                    "next_cursor": { "type": ["string", "null"] },
                },
            },
            "PreviewRequest": {
                "type": "object", "required": ["definition", "periods"], "additionalProperties": false,
                "properties": {
                    "definition": r("MetricDefinition"),
                    "periods": { "type": "array", "maxItems": 100, "items": {
                        "type": "object", "required": ["start_date", "end_date"], "additionalProperties": false,
                        "properties": { "start_date": { "type": "string" }, "end_date": { "type": "string" } },
                    } },
                    "customer_id": { "type": "string" },
                    "tz": { "description": "IANA time zone where plain dates begin.", "type": "string" },
                },
            },
            "Preview": {
                "type": "object", "required": ["metric", "version", "rows"],
                "properties": {
                    "metric": { "type": "string" },
                    "version": { "description": "The current version; null when previewing a metric not created yet.", "type": ["integer", "null"], "minimum": 1 },
                    "rows": { "type": "array", "items": {
                        "description": "Other members are the metric's dimensions.",
                        "type": "object", "required": ["customer_id", "start_date", "end_date", "current", "candidate", "difference"],
                        "properties": {
                            "customer_id": { "type": ["string", "null"] }, "start_date": instant(), "end_date": instant(),
                            "current": value(), "candidate": value(), "difference": value(),
                        },
                    } },
                },
            },
        }),
    ];
    let mut all = serde_json::Map::new();
    for part in parts {
        if let Value::Object(m) = part {
            all.extend(m);
        }
    }
    Value::Object(all)
}
