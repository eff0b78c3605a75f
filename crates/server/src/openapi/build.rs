//! The pieces operations are made of: who may call them, parameters, bodies, responses and
//! the problem+json answers, so every operation says these things the same way.

use serde_json::{Map, Value, json};

pub(crate) fn schema(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

pub(crate) fn parameter(name: &str) -> Value {
    json!({ "$ref": format!("#/components/parameters/{name}") })
}

/// `{"<media type>": {"schema": …}}` for one media type.
pub(crate) fn content(media: &str, schema: Value) -> Value {
    json!({ media: { "schema": schema } })
}

pub(crate) fn json_of(schema_name: &str) -> Value {
    content("application/json", schema(schema_name))
}

/// Who may call an operation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// No credentials (health, metrics, the console's files, this document).
    Public,
    /// An organisation's API key; the answer is about that organisation only.
    Tenant,
    /// The operator's admin token.
    Admin,
}

/// Statuses a problem+json answer is documented with, as `components.responses` names.
pub(crate) const PROBLEM_STATUSES: &[(u16, &str)] = &[
    (
        400,
        "The request is invalid; `detail` (and `errors`, where there are several) say why.",
    ),
    (
        401,
        "Missing or unknown credentials, or two different keys in `x-api-key` and `Authorization`.",
    ),
    (
        403,
        "The `organisation` header names another organisation than the key's, or the admin API is disabled.",
    ),
    (404, "No such resource."),
    (406, "No format the `Accept` header lists is offered."),
    (
        409,
        "Conflicts with what exists (a taken slug or name, an event type that still holds events).",
    ),
    (
        413,
        "The body is too large (after decompression) or holds too many events.",
    ),
    (415, "The `Content-Type` is not accepted here."),
    (422, "The query exceeded its memory or time cap."),
    (429, "Too many requests; retry after `Retry-After` seconds."),
    (
        500,
        "The server failed (storage, a bug): never the request's fault. The log says more.",
    ),
    (
        503,
        "Overloaded (log queue or buffer full, queries queued past their cap) or still replaying the write-ahead log; retry after `Retry-After` seconds. Nothing from the request was stored.",
    ),
    (
        507,
        "The disk is full; retry after `Retry-After` seconds. Nothing from the request was stored.",
    ),
];

/// One operation being described; `paths` collects them.
pub(crate) struct Op {
    pub method: &'static str,
    pub path: &'static str,
    pub body: Map<String, Value>,
}

pub(crate) fn op(
    method: &'static str,
    path: &'static str,
    operation_id: &str,
    tag: &str,
    summary: &str,
    access: Access,
) -> Op {
    let mut body = Map::new();
    body.insert("operationId".into(), json!(operation_id));
    body.insert("tags".into(), json!([tag]));
    body.insert("summary".into(), json!(summary));
    body.insert("parameters".into(), json!([]));
    body.insert("responses".into(), json!({}));
    let op = Op { method, path, body };
    match access {
        Access::Public => op.with("security", json!([])),
        Access::Tenant => op
            .with("security", json!([{ "apiKey": [] }, { "bearerKey": [] }]))
            .param(parameter("organisation"))
            .problems(&[401, 403, 503]),
        Access::Admin => op
            .with("security", json!([{ "adminToken": [] }]))
            .problems(&[401, 403, 503]),
    }
}

impl Op {
    pub(crate) fn with(mut self, key: &str, value: Value) -> Op {
        self.body.insert(key.into(), value);
        self
    }

    pub(crate) fn describe(self, text: &str) -> Op {
        self.with("description", json!(text))
    }

    pub(crate) fn param(mut self, p: Value) -> Op {
        if let Some(Value::Array(ps)) = self.body.get_mut("parameters") {
            ps.push(p);
        }
        self
    }

    pub(crate) fn path_param(self, name: &str, description: &str, example: &str) -> Op {
        self.param(json!({
            "name": name, "in": "path", "required": true, "description": description,
            "schema": { "type": "string", "minLength": 1 }, "example": example,
        }))
    }

    pub(crate) fn query(self, name: &str, required: bool, schema: Value, description: &str) -> Op {
        self.param(json!({
            "name": name, "in": "query", "required": required, "description": description,
            "schema": schema,
        }))
    }

    /// The body, by media type (`{"application/json": {"schema": …}, …}`).
    pub(crate) fn body(self, required: bool, description: &str, content: Value) -> Op {
        self.with(
            "requestBody",
            json!({ "required": required, "description": description, "content": content }),
        )
    }

    pub(crate) fn response(mut self, status: u16, description: &str, content: Option<Value>) -> Op {
        let mut r = Map::new();
        r.insert("description".into(), json!(description));
        if let Some(c) = content {
            r.insert("content".into(), c);
        }
        if let Some(Value::Object(rs)) = self.body.get_mut("responses") {
            rs.insert(status.to_string(), Value::Object(r));
        }
        self
    }

    /// A header on an already added response.
    pub(crate) fn response_header(mut self, status: u16, name: &str, header: Value) -> Op {
        if let Some(Value::Object(r)) = self
            .body
            .get_mut("responses")
            .and_then(|rs| rs.get_mut(status.to_string()))
        {
            let headers = r.entry("headers").or_insert_with(|| json!({}));
            if let Value::Object(h) = headers {
                h.insert(name.into(), header);
            }
        }
        self
    }

    pub(crate) fn json(self, status: u16, description: &str, schema_name: &str) -> Op {
        self.response(status, description, Some(json_of(schema_name)))
    }

    /// problem+json answers, by status (each a `components.responses` entry).
    pub(crate) fn problems(mut self, statuses: &[u16]) -> Op {
        if let Some(Value::Object(rs)) = self.body.get_mut("responses") {
            for s in statuses {
                rs.insert(
                    s.to_string(),
                    json!({ "$ref": format!("#/components/responses/Problem{s}") }),
                );
            }
        }
        self
    }
}

/// `components.responses`: one problem+json answer per status, with `Retry-After` where the
/// client is told to come back.
pub(crate) fn problem_responses() -> Value {
    let mut out = Map::new();
    for (status, description) in PROBLEM_STATUSES {
        let mut r = json!({
            "description": description,
            "content": { "application/problem+json": { "schema": schema("Problem") } },
        });
        if matches!(status, 429 | 503 | 507) {
            r["headers"] = json!({ "Retry-After": { "$ref": "#/components/headers/RetryAfter" } });
        }
        out.insert(format!("Problem{status}"), r);
    }
    Value::Object(out)
}
