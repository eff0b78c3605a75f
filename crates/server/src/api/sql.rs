//! `POST /sql`: a read-only query over the organisation's tables, answered in the format the
//! client accepts.

use std::collections::HashMap;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use datafusion::common::ScalarValue;
use hyper::{HeaderMap, StatusCode, header};
use meterbase_query::format as f;
use meterbase_query::{Caller, QueryKind};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::auth::Tenant;
use crate::http::{Result, bytes_response, json_body};
use crate::problem::Problem;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlRequest {
    sql: String,
    #[serde(default)]
    params: Map<String, Value>,
    #[serde(default)]
    as_of: Option<String>,
}

fn scalar_param(name: &str, v: &Value) -> Result<ScalarValue> {
    Ok(match v {
        Value::Null => ScalarValue::Null,
        Value::Bool(b) => ScalarValue::Boolean(Some(*b)),
        Value::String(s) => ScalarValue::Utf8(Some(s.clone())),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                ScalarValue::Int64(Some(i))
            } else if let Some(u) = n.as_u64() {
                ScalarValue::UInt64(Some(u))
            } else {
                ScalarValue::Float64(n.as_f64())
            }
        }
        _ => {
            return Err(Problem::bad_request(format!(
                "parameter {name:?} must be a string, number, boolean or null"
            )));
        }
    })
}

enum OutputFormat {
    Json,
    Ndjson,
    Csv,
    Arrow,
    Parquet,
}

fn output_format(headers: &HeaderMap) -> Result<OutputFormat> {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    for part in accept.split(',') {
        let mime = part
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match mime.as_str() {
            "application/json" | "*/*" | "application/*" | "" => return Ok(OutputFormat::Json),
            "application/x-ndjson" | "application/jsonl" | "application/ndjson" => {
                return Ok(OutputFormat::Ndjson);
            }
            "text/csv" => return Ok(OutputFormat::Csv),
            "application/vnd.apache.arrow.stream" => return Ok(OutputFormat::Arrow),
            "application/vnd.apache.parquet" => return Ok(OutputFormat::Parquet),
            _ => {}
        }
    }
    Err(Problem::new(
        StatusCode::NOT_ACCEPTABLE,
        "Not acceptable",
        "supported results: application/json, application/x-ndjson, text/csv, application/vnd.apache.arrow.stream, application/vnd.apache.parquet",
    ))
}

pub(crate) async fn query(
    Tenant { app, org }: Tenant,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let format = output_format(&headers)?;
    let r: SqlRequest = json_body(body).await?;
    let as_of = r.as_of.as_deref().map(|t| app.parse_as_of(t)).transpose()?;
    let mut params = HashMap::new();
    for (k, v) in &r.params {
        params.insert(k.clone(), scalar_param(k, v)?);
    }
    let tables = app.snapshots(&org)?;
    let caller = Caller {
        org: &org.id,
        kind: QueryKind::Sql,
    };
    let out = app
        .engine
        .execute(caller, tables, r.sql, params, as_of)
        .await?;
    Ok(match format {
        OutputFormat::Json => bytes_response(
            StatusCode::OK,
            "application/json",
            Bytes::from(f::to_json(&out.schema, &out.batches)),
        ),
        OutputFormat::Ndjson => bytes_response(
            StatusCode::OK,
            "application/x-ndjson",
            Bytes::from(f::to_ndjson(&out.schema, &out.batches)),
        ),
        OutputFormat::Csv => bytes_response(
            StatusCode::OK,
            "text/csv",
            Bytes::from(f::to_csv(&out.schema, &out.batches)?),
        ),
        OutputFormat::Arrow => bytes_response(
            StatusCode::OK,
            "application/vnd.apache.arrow.stream",
            Bytes::from(f::to_arrow_ipc(&out.schema, &out.batches)?),
        ),
        OutputFormat::Parquet => bytes_response(
            StatusCode::OK,
            "application/vnd.apache.parquet",
            Bytes::from(f::to_parquet(&out.schema, &out.batches)?),
        ),
    })
}
