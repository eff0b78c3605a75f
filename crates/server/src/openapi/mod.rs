//! The OpenAPI 3.1 document of the HTTP API, served at `GET /openapi.json` and committed as
//! `docs/openapi.json` (a test keeps the two equal; `make openapi` rewrites the file).
//!
//! Written here rather than derived by a macro crate: the handlers answer JSON they write
//! directly (`json!`, or text for speed), so there are no response types to derive from. It
//! is held to the server instead: `routes` tests that the router and the document have the
//! same operations, and `make test` runs schemathesis against a live server with it.
//!
//! - `build`: the pieces of an operation (access, parameters, bodies, problem answers).
//! - `schemas`: `components` (shapes, shared parameters and headers, security schemes).
//! - `paths`: every operation.

mod build;
mod paths;
mod schemas;

use std::sync::OnceLock;

use bytes::Bytes;
use serde_json::{Map, Value, json};

const DESCRIPTION: &str = "A usage-metering store for usage-based billing: define event types, push usage events, query them with SQL and billable metrics.\n\n\
**Auth.** Every operation except the public ones (`/healthz`, `/metrics`, `/openapi.json`, the console) needs an API key, as `x-api-key: KEY` or `Authorization: Bearer KEY`; the key alone decides the organisation. The admin API (`/admin/…`) needs `Authorization: Bearer <admin token>`.\n\n\
**Errors** are RFC 9457 `application/problem+json`, with `errors[]` entries (`index` for JSON bodies, `line` for NDJSON and CSV, `pointer`, `message`) where a request holds several faults. Overload is 503 (or 429) with `Retry-After`.\n\n\
**Compression.** Ingest bodies may be `Content-Encoding: gzip` or `zstd` (limits apply to the inflated bytes). Answers over 1000 bytes are gzip-compressed when the request says `Accept-Encoding: gzip`.\n\n\
**Request ids.** Every answer carries `x-request-id` (the request's own, or a new UUID).";

/// The document as a JSON value.
pub(crate) fn document() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for op in paths::operations() {
        let item = paths
            .entry(op.path.to_string())
            .or_insert_with(|| json!({}));
        if let Value::Object(methods) = item {
            methods.insert(op.method.to_string(), Value::Object(op.body));
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "meterbase",
            "version": env!("CARGO_PKG_VERSION"),
            "description": DESCRIPTION,
            "license": { "name": "Apache-2.0", "identifier": "Apache-2.0" },
        },
        "servers": [{ "url": "http://127.0.0.1:8080", "description": "`make run`" }],
        "tags": [
            { "name": "event types", "description": "Usage event definitions (`/rawmetrics`, Zenskar's name)." },
            { "name": "ingest", "description": "Sending events: JSON, NDJSON, Zuora's shape, CSV." },
            { "name": "events", "description": "Reading, deleting and reconciling stored events." },
            { "name": "sql", "description": "Read-only SQL; JSON, NDJSON, CSV, Arrow IPC stream or Parquet answers." },
            { "name": "billable metrics", "description": "Metric definitions, versions, previews and usage." },
            { "name": "admin", "description": "Organisations and API keys, with the admin token." },
            { "name": "operations", "description": "Health, metrics, this document, the caller's organisation." },
            { "name": "console", "description": "The web console's files." },
        ],
        "security": [{ "apiKey": [] }, { "bearerKey": [] }],
        "paths": paths,
        "components": {
            "securitySchemes": schemas::security_schemes(),
            "schemas": schemas::schemas(),
            "parameters": schemas::parameters(),
            "headers": schemas::headers(),
            "responses": build::problem_responses(),
        },
    })
}

/// The document's bytes, exactly as `docs/openapi.json` holds them (pretty, newline-ended).
pub(crate) fn document_bytes() -> Bytes {
    static BYTES: OnceLock<Bytes> = OnceLock::new();
    BYTES
        .get_or_init(|| {
            let mut text = serde_json::to_string_pretty(&document()).unwrap_or_default();
            text.push('\n');
            Bytes::from(text)
        })
        .clone()
}

/// `(method, path)` of every operation, paths in OpenAPI's syntax (`{name}`).
#[cfg(test)]
pub(crate) fn operation_keys() -> Vec<(String, String)> {
    paths::operations()
        .into_iter()
        .map(|o| (o.method.to_ascii_uppercase(), o.path.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/openapi.json` is what the server serves; `METERBASE_WRITE_OPENAPI=1` (what
    /// `make openapi` sets) rewrites it instead of failing.
    #[test]
    fn committed_document_is_the_served_one() {
        let path = std::env::var_os("CARGO_MANIFEST_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")))
            .join("../../docs/openapi.json");
        let served = document_bytes();
        if std::env::var_os("METERBASE_WRITE_OPENAPI").is_some() {
            std::fs::write(&path, &served).expect("write docs/openapi.json");
            return;
        }
        let committed = std::fs::read(&path).unwrap_or_default();
        assert!(
            committed == served.as_ref(),
            "docs/openapi.json differs from the document the server serves: run `make openapi` and commit it"
        );
    }

    #[test]
    fn every_reference_resolves_and_operation_ids_are_unique() {
        let doc = document();
        let mut refs = Vec::new();
        fn walk(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(r)) = m.get("$ref") {
                        out.push(r.clone());
                    }
                    m.values().for_each(|v| walk(v, out));
                }
                Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
                _ => {}
            }
        }
        walk(&doc, &mut refs);
        for r in refs {
            let pointer = r.strip_prefix('#').expect("local reference");
            assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
        }
        let mut ids: Vec<String> = paths::operations()
            .iter()
            .map(|o| {
                o.body["operationId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n, "operationIds repeat");
    }
}
