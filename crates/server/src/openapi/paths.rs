//! Every operation of the API: method, path (OpenAPI's syntax), parameters, bodies and
//! answers. `routes::endpoints` is the router's table; a test holds the two to the same set.

use serde_json::{Value, json};

use super::build::{Access, Op, content, json_of, op, parameter, schema};

fn string() -> Value {
    json!({ "type": "string" })
}

fn flag() -> Value {
    json!({ "type": "string", "enum": ["true", "false", "1", "0", ""] })
}

fn slug(o: Op) -> Op {
    o.param(parameter("slug"))
}

fn metric_slug(o: Op) -> Op {
    o.param(parameter("metricSlug"))
}

fn console() -> Vec<Op> {
    use Access::Public;
    vec![
        op("get", "/", "root", "console", "Redirects to the web console", Public)
            .response(303, "To `/ui/`.", None)
            .response_header(303, "Location", json!({ "schema": { "type": "string" } })),
        op("get", "/ui", "consoleIndex", "console", "The web console's page", Public)
            .describe("The console signs in with an API key and then speaks this API. `/ui/` is the same page.")
            .response(200, "The console.", Some(content("text/html", string()))),
        op("get", "/ui/{path}", "consoleAsset", "console", "A file of the web console", Public)
            .describe("Scripts, styles and images of the console (the path may hold `/`).")
            .path_param("path", "The file, relative to the console's root.", "app.js")
            .response(200, "The file, typed by its extension.", Some(json!({
                "text/html": { "schema": string() },
                "text/javascript": { "schema": string() },
                "text/css": { "schema": string() },
                "image/svg+xml": { "schema": string() },
                "image/png": { "schema": string() },
                "application/json": {},
                "text/plain": { "schema": string() },
                "application/octet-stream": { "schema": string() },
            })))
            .problems(&[404]),
    ]
}

fn operations_area() -> Vec<Op> {
    use Access::{Public, Tenant};
    vec![
        op("get", "/openapi.json", "openapi", "operations", "This document", Public)
            .response(200, "The OpenAPI 3.1 document of this API.", Some(content("application/json", json!({ "type": "object" })))),
        op("get", "/healthz", "health", "operations", "Readiness and query load", Public)
            .json(200, "The write-ahead log is replayed; the server answers.", "Health")
            .problems(&[503]),
        op("get", "/metrics", "metrics", "operations", "Prometheus metrics", Public)
            .describe("Events and bytes ingested, rejected events, overload rejections, log syncs and sync time, buffer bytes, flushes, files, queries and query time.")
            .response(200, "Prometheus text exposition format 0.0.4.", Some(content("text/plain", string()))),
        op("get", "/organisation", "showOrganisation", "operations", "The organisation of the caller's key", Tenant)
            .json(200, "The organisation.", "Organisation"),
    ]
}

fn admin() -> Vec<Op> {
    use Access::Admin;
    vec![
        op(
            "post",
            "/admin/organisations",
            "createOrganisation",
            "admin",
            "Create an organisation and its first API key",
            Admin,
        )
        .body(true, "", json_of("NewOrganisation"))
        .json(
            201,
            "Created; the key is shown only now.",
            "CreatedOrganisation",
        )
        .problems(&[400, 409, 413]),
        op(
            "get",
            "/admin/organisations",
            "listOrganisations",
            "admin",
            "List organisations",
            Admin,
        )
        .json(200, "Every organisation.", "OrganisationList"),
        op(
            "post",
            "/admin/organisations/{org}/api_keys",
            "createApiKey",
            "admin",
            "Create another API key",
            Admin,
        )
        .path_param("org", "The organisation's id or name.", "default")
        .json(201, "Created; the key is shown only now.", "CreatedApiKey")
        .problems(&[404]),
        op(
            "get",
            "/admin/organisations/{org}/api_keys",
            "listApiKeys",
            "admin",
            "List an organisation's key ids",
            Admin,
        )
        .path_param("org", "The organisation's id or name.", "default")
        .json(
            200,
            "Key ids, oldest first; never the keys, so any can be revoked.",
            "ApiKeyList",
        )
        .problems(&[404]),
        op(
            "delete",
            "/admin/api_keys/{id}",
            "deleteApiKey",
            "admin",
            "Revoke an API key",
            Admin,
        )
        .path_param("id", "The key's id.", "0f1e2d3c")
        .response(204, "Revoked, effective immediately.", None)
        .problems(&[404]),
        op(
            "post",
            "/admin/compact",
            "compact",
            "admin",
            "Run a compaction pass now",
            Admin,
        )
        .describe("Merges every day fully; it also runs every `--compaction-interval-secs`.")
        .json(200, "What the pass merged.", "CompactionStats")
        .problems(&[500]),
        op(
            "post",
            "/admin/open_tables/publish",
            "publishOpenTables",
            "admin",
            "Publish the open tables now",
            Admin,
        )
        .describe("Brings every event type's Delta log up to its current manifest (it also happens every `--delta-commit-interval`). 404 with `--open-tables off`.")
        .query("flush", false, flag(), "Persist every buffer and pending deletion first, so the tables hold everything acknowledged so far.")
        .json(200, "Where each table's Delta log stands.", "OpenTables")
        .problems(&[400, 404]),
        op(
            "post",
            "/admin/faults",
            "setFaults",
            "admin",
            "Inject faults (tests only)",
            Admin,
        )
        .describe("Only with `--fault-injection`; otherwise 404.")
        .body(true, "", json_of("Faults"))
        .response(204, "Set.", None)
        .problems(&[400, 404, 413]),
    ]
}

fn event_types() -> Vec<Op> {
    use Access::Tenant;
    vec![
        op(
            "post",
            "/rawmetrics",
            "createEventType",
            "event types",
            "Define an event type",
            Tenant,
        )
        .body(true, "", json_of("EventTypeDefinition"))
        .json(201, "The stored definition.", "EventType")
        .problems(&[400, 409, 413]),
        op(
            "get",
            "/rawmetrics",
            "listEventTypes",
            "event types",
            "List event types",
            Tenant,
        )
        .json(
            200,
            "Every event type of the organisation.",
            "EventTypeList",
        ),
        slug(op(
            "get",
            "/rawmetrics/{slug}",
            "showEventType",
            "event types",
            "Show an event type",
            Tenant,
        ))
        .json(200, "The definition.", "EventType")
        .problems(&[404]),
        slug(op(
            "patch",
            "/rawmetrics/{slug}",
            "patchEventType",
            "event types",
            "Rename, or add Nullable fields",
            Tenant,
        ))
        .body(true, "", json_of("EventTypePatch"))
        .json(200, "The changed definition.", "EventType")
        .problems(&[400, 404, 413]),
        slug(op(
            "delete",
            "/rawmetrics/{slug}",
            "deleteEventType",
            "event types",
            "Delete an event type",
            Tenant,
        ))
        .query(
            "force",
            false,
            flag(),
            "Delete it even while it holds events (and them with it).",
        )
        .response(204, "Deleted.", None)
        .problems(&[404, 409]),
        slug(op(
            "get",
            "/rawmetrics/{slug}/stats",
            "eventTypeStats",
            "event types",
            "Where an event type's rows are",
            Tenant,
        ))
        .json(
            200,
            "Buffered and persisted rows, without reading a row.",
            "EventTypeStats",
        )
        .problems(&[404]),
    ]
}

/// Answers every ingest route shares: invalid events, limits, an unknown `Content-Encoding`
/// or `Content-Type`, overload, a full disk.
fn ingest_problems(o: Op) -> Op {
    o.param(parameter("contentEncoding"))
        .problems(&[400, 404, 413, 415, 507])
}

fn ingest() -> Vec<Op> {
    use Access::Tenant;
    let ndjson = json!({ "type": "string", "description": "One event (as `Event`) per line; blank lines are ignored." });
    let columnar = json!({ "type": "string", "contentMediaType": "application/octet-stream", "description": "One row per event: Utf8 `customer_id`; `timestamp` as Timestamp (any unit; no zone is UTC), epoch seconds or RFC 3339 text; data fields as the matching Arrow types (strings, integers, floats, Decimal128, Boolean, Date32, Timestamp)." });
    vec![
        ingest_problems(slug(op("post", "/usage/{slug}", "ingest", "ingest", "Send events", Tenant)))
            .describe("All or nothing: one invalid event is 400 listing every invalid event (at most 100), and nothing is stored. 200 is sent only after the events are synced to the write-ahead log; they are visible to the very next query. Limits: 32 MiB after decompression, 100,000 events. Arrow and Parquet bodies: columns `customer_id`, `timestamp` and the data fields, matched by name as CSV columns are (`map.FIELD=COLUMN`, `ignore_unknown_columns`); errors carry `line` (the 1-based row) and `pointer` (the column), or no `line` when a column itself does not fit.")
            .param(json!({
                "name": "map", "in": "query", "required": false, "style": "form", "explode": true,
                "description": "Arrow and Parquet bodies: `map.FIELD=COLUMN` takes FIELD from a differently named column (repeatable).",
                "schema": { "type": "object", "additionalProperties": { "type": "string" } },
            }))
            .query("ignore_unknown_columns", false, flag(), "Arrow and Parquet bodies: skip columns that match no field instead of refusing the body.")
            .body(true, "One event or an array (`application/json`), one event per line (`application/x-ndjson`, `application/jsonl`), an Arrow IPC stream (`application/vnd.apache.arrow.stream`) or a Parquet file (`application/vnd.apache.parquet`).", json!({
                "application/json": { "schema": schema("Events") },
                "application/x-ndjson": { "schema": ndjson },
                "application/jsonl": { "schema": ndjson },
                "application/vnd.apache.arrow.stream": { "schema": columnar },
                "application/vnd.apache.parquet": { "schema": columnar },
            }))
            .json(200, "Accepted and durable.", "IngestResult"),
        ingest_problems(slug(op("post", "/usage/bulk/{slug}", "ingestBulk", "ingest", "Send events, Zuora-compatible", Tenant)))
            .describe("Events in Zuora's usage shape or in ours, validated like `POST /usage/{slug}`. Errors carry `\"success\":false`.")
            .param(json!({
                "name": "Zuora-Track-Id", "in": "header", "required": false,
                "description": "At most 64 US-ASCII characters, none of `: ; \" '` (otherwise 400); echoed in the answer.",
                "schema": { "type": "string", "maxLength": 64, "pattern": "^[ !#-&(-9<-~]*$" },
            }))
            .body(true, "One object or an array.", json_of("ZuoraBody"))
            .json(200, "Accepted and durable.", "BulkResult")
            .response_header(200, "Zuora-Track-Id", json!({ "$ref": "#/components/headers/ZuoraTrackId" })),
        ingest_problems(slug(op("post", "/usage/{slug}/csv", "ingestCsv", "ingest", "Upload a CSV file", Tenant)))
            .describe("A header row, then one event per row; columns match `customer_id`, `timestamp` and data fields by name. An empty cell is null. Streams with bounded memory (up to 64 GiB after decompression); all or nothing (at most 1000 errors listed, `line` 1-based with the header as line 1, `pointer` the column).")
            .param(json!({
                "name": "map", "in": "query", "required": false, "style": "form", "explode": true,
                "description": "`map.FIELD=COLUMN`: take FIELD from a differently named column (repeatable).",
                "schema": { "type": "object", "additionalProperties": { "type": "string" } },
            }))
            .query("ignore_unknown_columns", false, flag(), "Skip columns that match no field instead of refusing the file.")
            .query("dry_run", false, flag(), "Validate only; store nothing.")
            // The example is in the description: schemathesis writes CSV bodies with its own
            // strategy (scripts/schemathesis_hooks.py), which cannot take a text example.
            .body(true, "CSV with a header row (a UTF-8 BOM and CRLF are fine), e.g.\n\n```\ncustomer_id,timestamp,cpu_hours_consumed,region\ncust_7d2f,2025-07-29T10:00:00Z,4,eu-west-1\n```", json!({
                "text/csv": { "schema": { "type": "string" } },
            }))
            .response(200, "Accepted and durable, or the dry run's verdict.", Some(json!({
                "application/json": { "schema": { "oneOf": [schema("CsvResult"), schema("CsvDryRun")] } },
            }))),
    ]
}

fn events() -> Vec<Op> {
    use Access::Tenant;
    let instant = || json!({ "type": "string", "description": "Any timestamp form, or a date (midnight UTC)." });
    vec![
        slug(op("get", "/usage/{slug}/events", "listEvents", "events", "A page of events in timestamp order", Tenant))
            .describe("Each unique key once, in its latest version; ties broken by the unique key. Paging is stable.")
            .query("customer_id", false, string(), "Only this customer's events.")
            .query("from", false, instant(), "Inclusive.")
            .query("to", false, instant(), "Exclusive.")
            .query("limit", false, json!({ "type": "integer", "minimum": 1, "maximum": 1000, "default": 100 }), "Events per page.")
            .query("cursor", false, string(), "`next_cursor` of the previous page.")
            .json(200, "One page.", "EventPage")
            .problems(&[400, 404, 422]),
        slug(op("delete", "/usage/{slug}/events", "deleteEvents", "events", "Delete events", Tenant))
            .describe("Needs `customer_id`, or both `from` and `to`. Logged and acknowledged like a write; `as_of` before it undoes it. To edit an event, send it again with the same unique key.")
            .query("customer_id", false, string(), "Only this customer's events.")
            .query("from", false, instant(), "Inclusive.")
            .query("to", false, instant(), "Exclusive.")
            .query("dry_run", false, flag(), "Count what would be deleted; delete nothing.")
            .json(200, "Deleted (or counted).", "DeleteResult")
            .problems(&[400, 404, 422, 507]),
        slug(op("get", "/usage/{slug}/reconcile", "reconcile", "events", "Counts, sums and digests per customer and bucket", Tenant))
            .describe("Over the live events of `[from, to)`, per customer and UTC day or hour: the count, exact sums of numeric fields and the order-independent digest, for a sender to compare with its own ledger.")
            .query("from", true, instant(), "Inclusive.")
            .query("to", true, instant(), "Exclusive.")
            .query("customer_id", false, string(), "Only this customer.")
            .query("by", false, json!({ "enum": ["day", "hour"], "default": "day" }), "Bucket size (UTC).")
            .query("as_of", false, string(), "The data as it stood at that instant.")
            .json(200, "The buckets.", "Reconciliation")
            .problems(&[400, 404, 422]),
    ]
}

fn sql() -> Vec<Op> {
    let table = || json!({ "type": "string" });
    let binary = || json!({ "type": "string", "contentMediaType": "application/octet-stream" });
    vec![
        op("post", "/sql", "sql", "sql", "Run a read-only SQL query", Access::Tenant)
            .describe("Only `SELECT`, `WITH` and `EXPLAIN` run; another organisation's tables do not exist. The answer's format follows `Accept`. Memory and time are capped per query (422 beyond); queries wait in line past the concurrency cap (503 when one cannot start within its time cap).")
            .body(true, "", json_of("SqlRequest"))
            .response(200, "The rows, in the format `Accept` asked for.", Some(json!({
                "application/json": { "schema": schema("SqlResult") },
                "application/x-ndjson": { "schema": table() },
                "text/csv": { "schema": table() },
                "application/vnd.apache.arrow.stream": { "schema": binary() },
                "application/vnd.apache.parquet": { "schema": binary() },
            })))
            .problems(&[400, 406, 413, 422]),
    ]
}

fn billable_metrics() -> Vec<Op> {
    use Access::Tenant;
    let instant =
        || json!({ "type": "string", "description": "RFC 3339, or a date (midnight in `tz`)." });
    vec![
        op("post", "/billable_metrics", "createMetric", "billable metrics", "Define a billable metric", Tenant)
            .describe("Checked against the current schemas when created; a refused definition is 400 whose `errors` entry names the member at fault (`pointer`).")
            .body(true, "", json_of("MetricDefinition"))
            .json(201, "The stored metric, version 1.", "Metric")
            .problems(&[400, 409, 413, 422]),
        op("get", "/billable_metrics", "listMetrics", "billable metrics", "List billable metrics", Tenant)
            .json(200, "Every metric, at its current version.", "MetricList"),
        metric_slug(op("get", "/billable_metrics/{slug}", "showMetric", "billable metrics", "Show a billable metric", Tenant))
            .json(200, "The current version.", "Metric")
            .problems(&[404]),
        metric_slug(op("put", "/billable_metrics/{slug}", "replaceMetric", "billable metrics", "Change a billable metric (a new version)", Tenant))
            .describe("A full definition becomes version N+1, checked as creation checks it; earlier versions stay for `as_of`.")
            .body(true, "", json_of("MetricDefinition"))
            .json(200, "The metric at its new version.", "Metric")
            .problems(&[400, 404, 413, 422]),
        metric_slug(op("delete", "/billable_metrics/{slug}", "deleteMetric", "billable metrics", "Delete a billable metric", Tenant))
            .response(204, "Deleted, every version.", None)
            .problems(&[404]),
        metric_slug(op("get", "/billable_metrics/{slug}/versions", "metricVersions", "billable metrics", "A metric's versions", Tenant))
            .json(200, "Oldest first.", "MetricVersions")
            .problems(&[404]),
        metric_slug(op("post", "/billable_metrics/{slug}/preview", "previewMetric", "billable metrics", "Compare a candidate definition with the current one", Tenant))
            .describe("Evaluates both on up to 100 periods against one snapshot; stores nothing.")
            .body(true, "", json_of("PreviewRequest"))
            .json(200, "Current, candidate and their exact difference per customer and period.", "Preview")
            .problems(&[400, 404, 413, 422]),
        op("post", "/billable_metrics/preview", "previewNewMetric", "billable metrics", "Evaluate a definition before creating it", Tenant)
            .describe("The definition is checked as creation checks it and evaluated on up to 100 periods; `current` is null and `version` is null. Stores nothing (`preview` is therefore not a metric slug).")
            .body(true, "", json_of("PreviewRequest"))
            .json(200, "The candidate's value per customer and period.", "Preview")
            .problems(&[400, 413, 422]),
        metric_slug(op("get", "/billable_metrics/{slug}/usage", "metricUsage", "billable metrics", "Evaluate a billable metric", Tenant))
            .describe("Over the half-open period `[start_date, end_date)`, optionally per window. With `as_of`, the data and the metric version as they stood then.")
            .query("start_date", true, instant(), "Inclusive.")
            .query("end_date", true, instant(), "Exclusive.")
            .query("customer_id", false, string(), "Only this customer.")
            .query("window", false, json!({ "enum": ["hour", "day", "month"] }), "Evaluate on each sub-period.")
            .query("tz", false, json!({ "type": "string", "example": "Europe/Berlin" }), "IANA time zone where days and months begin (default UTC).")
            .query("as_of", false, string(), "Reproduce the answer as it was at that instant.")
            .json(200, "One row per customer (and window and dimension).", "Usage")
            .response_header(200, "x-meterbase-windows", json!({
                "description": "With `window`: `one-query` when one query answered every window, `per-window` when a SQL metric's shape needed one query per window (docs/metrics.md).",
                "schema": { "type": "string", "enum": ["one-query", "per-window"] },
            }))
            .response_header(200, "x-meterbase-partials", json!({
                "description": "Present when the answer came from per-file partial aggregates: how many files answered from partials already kept, how many had theirs computed by this request, how many of those went through one combined set (compacted files), how many files were read raw, and how many buffered rows were read (docs/metrics.md).",
                "schema": { "type": "string", "example": "kept=41; computed=1; combined=40; raw_files=2; buffered_rows=1800" },
            }))
            .problems(&[400, 404, 422]),
        metric_slug(op("get", "/billable_metrics/{slug}/usage/explain", "explainUsage", "billable metrics", "Which events made one customer's value", Tenant))
            .describe("The usage endpoint's value for one customer and period, with a page of the events included (and each one's contribution) or of those left out (`show=excluded`) and why.")
            .query("customer_id", true, string(), "The customer.")
            .query("start_date", true, instant(), "Inclusive.")
            .query("end_date", true, instant(), "Exclusive.")
            .query("tz", false, string(), "IANA time zone where plain dates begin (default UTC).")
            .query("as_of", false, string(), "The data and metric version as they stood at that instant.")
            .query("show", false, json!({ "enum": ["included", "excluded"], "default": "included" }), "Which events to list.")
            .query("limit", false, json!({ "type": "integer", "minimum": 1, "maximum": 1000, "default": 100 }), "Events per page.")
            .query("cursor", false, string(), "`next_cursor` of the previous page.")
            .json(200, "The value, the counts by reason and one page of events.", "Explanation")
            .problems(&[400, 404, 422]),
    ]
}

pub(crate) fn operations() -> Vec<Op> {
    [
        console(),
        operations_area(),
        admin(),
        event_types(),
        ingest(),
        events(),
        sql(),
        billable_metrics(),
    ]
    .into_iter()
    .flatten()
    .collect()
}
