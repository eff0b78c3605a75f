//! RFC 9457 problem details: the one place internal errors become HTTP statuses.

use axum::response::{IntoResponse, Response};
use hyper::{StatusCode, header};
use meterbase_catalog::CatalogError;
use meterbase_metrics::MetricError;
use meterbase_query::QueryError;
use meterbase_schema::{EventError, SchemaError};
use meterbase_storage::StorageError;
use meterbase_wal::WalError;
use serde_json::{Map, Value, json};

/// Why a request failed with a 5xx, attached to the response for the request log (the body
/// says it to the client; the log must say it to the operator).
#[derive(Debug, Clone)]
pub struct ServerFault(pub String);

#[derive(Debug)]
pub struct Problem {
    pub status: StatusCode,
    pub title: String,
    pub detail: String,
    pub errors: Vec<Value>,
    pub extra: Map<String, Value>,
    pub retry_after: Option<u32>,
}

impl Problem {
    pub fn new(status: StatusCode, title: &str, detail: impl Into<String>) -> Problem {
        Problem {
            status,
            title: title.to_string(),
            detail: detail.into(),
            errors: Vec::new(),
            extra: Map::new(),
            retry_after: None,
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, "Bad request", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "Not found", detail)
    }

    pub fn unavailable(detail: impl Into<String>, retry_after: u32) -> Problem {
        let mut p = Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service unavailable",
            detail,
        );
        p.retry_after = Some(retry_after);
        p
    }

    pub fn internal(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal server error",
            detail,
        )
    }

    pub fn with_event_errors(mut self, errors: &[EventError]) -> Problem {
        self.errors = event_errors_json(errors);
        self
    }

    pub fn with(mut self, key: &str, value: Value) -> Problem {
        self.extra.insert(key.into(), value);
        self
    }

    pub fn type_uri(&self) -> String {
        let slug: String = self
            .title
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        format!("https://meterbase.dev/problems/{slug}")
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let fault = self
            .status
            .is_server_error()
            .then(|| ServerFault(format!("{}: {}", self.title, self.detail)));
        let mut body = Map::new();
        body.insert("type".into(), json!(self.type_uri()));
        body.insert("title".into(), json!(self.title));
        body.insert("status".into(), json!(self.status.as_u16()));
        body.insert("detail".into(), json!(self.detail));
        if !self.errors.is_empty() {
            body.insert("errors".into(), Value::Array(self.errors));
        }
        for (k, v) in self.extra {
            body.insert(k, v);
        }
        let mut resp = (
            self.status,
            [(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/problem+json"),
            )],
            Value::Object(body).to_string(),
        )
            .into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(s));
        }
        if let Some(f) = fault {
            resp.extensions_mut().insert(f);
        }
        resp
    }
}

impl From<CatalogError> for Problem {
    fn from(e: CatalogError) -> Problem {
        match e {
            CatalogError::NotFound(d) => Problem::not_found(d),
            CatalogError::Conflict(d) => Problem::new(StatusCode::CONFLICT, "Conflict", d),
            CatalogError::Invalid(d) => Problem::bad_request(d),
            other => Problem::internal(other.to_string()),
        }
    }
}

impl From<SchemaError> for Problem {
    fn from(e: SchemaError) -> Problem {
        match e {
            // Columns that do not fit their own event type: never the request's fault.
            SchemaError::Digest(_) => Problem::internal(e.to_string()),
            other => Problem::bad_request(other.to_string()),
        }
    }
}

/// The `errors` members of the contract: `index` or `line`, `pointer`, `message`.
pub(crate) fn event_errors_json(errors: &[EventError]) -> Vec<Value> {
    errors
        .iter()
        .map(|e| {
            let mut m = Map::new();
            if let Some(i) = e.index {
                m.insert("index".into(), json!(i));
            }
            if let Some(l) = e.line {
                m.insert("line".into(), json!(l));
            }
            m.insert("pointer".into(), json!(e.pointer));
            m.insert("message".into(), json!(e.message));
            Value::Object(m)
        })
        .collect()
}

fn is_disk_full(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOSPC) || e.raw_os_error() == Some(libc::EDQUOT)
}

impl From<StorageError> for Problem {
    fn from(e: StorageError) -> Problem {
        match e {
            StorageError::BufferFull { .. } => Problem::unavailable(
                format!("{e}; retry shortly, nothing from this request was stored"),
                1,
            ),
            StorageError::Wal(WalError::QueueFull) => Problem::unavailable(
                "the write-ahead log queue is full; retry shortly, nothing from this request was stored",
                1,
            ),
            StorageError::Wal(WalError::Io { ref source, .. }) if is_disk_full(source) => {
                let mut p = Problem::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "Insufficient storage",
                    e.to_string(),
                );
                p.retry_after = Some(5);
                p
            }
            StorageError::Wal(WalError::Poisoned(ref why)) => Problem::internal(format!(
                "the write-ahead log failed ({why}); this request was not stored and the server refuses writes until it is restarted"
            )),
            StorageError::UnknownTable => Problem::not_found("event type not found"),
            StorageError::TooManyRows { .. } => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Too many rows",
                format!("{e}; split the request, nothing from it was stored"),
            ),
            // The rest are the server's failures, never the request's: listed one by one so a
            // new kind of failure has to be placed here.
            StorageError::ObjectStore { .. }
            | StorageError::Io { .. }
            | StorageError::CorruptManifest { .. }
            | StorageError::CorruptFile { .. }
            | StorageError::Arrow(_)
            | StorageError::Parquet(_)
            | StorageError::Wal(_)
            | StorageError::Schema(_)
            | StorageError::BadRecord(_)
            | StorageError::MissingColumn(_)
            | StorageError::MissingKeyColumn(_)
            | StorageError::TaskFailed { .. }
            | StorageError::CompactionAbandoned
            | StorageError::Invariant(_)
            | StorageError::ManifestEncoding(_)
            | StorageError::BadUrl(..)
            | StorageError::SequenceReused { .. }
            | StorageError::ManifestTaken { .. } => Problem::internal(e.to_string()),
        }
    }
}

impl From<QueryError> for Problem {
    fn from(e: QueryError) -> Problem {
        match e {
            QueryError::Invalid(d) => Problem::new(StatusCode::BAD_REQUEST, "Invalid query", d),
            QueryError::Data(d) => {
                Problem::new(StatusCode::BAD_REQUEST, "Query failed on the data", d)
            }
            QueryError::MemoryLimit { .. } => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Query memory limit exceeded",
                e.to_string(),
            ),
            QueryError::Timeout(_) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Query time limit exceeded",
                e.to_string(),
            ),
            QueryError::Cancelled => {
                Problem::new(StatusCode::BAD_REQUEST, "Query cancelled", e.to_string())
            }
            QueryError::Busy(_) => Problem::unavailable(e.to_string(), 2),
            QueryError::Execution(d) => Problem::internal(d),
        }
    }
}

impl From<MetricError> for Problem {
    fn from(e: MetricError) -> Problem {
        match e {
            MetricError::Invalid(d) => Problem::new(StatusCode::BAD_REQUEST, "Invalid metric", d),
            // The member at fault as the contract's `errors` entry, so a form can point at it.
            MetricError::Field { pointer, message } => {
                let mut p = Problem::new(StatusCode::BAD_REQUEST, "Invalid metric", &message);
                p.errors = vec![json!({"pointer": pointer, "message": message})];
                p
            }
            MetricError::Query(q) => q.into(),
        }
    }
}
