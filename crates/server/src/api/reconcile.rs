//! `GET /usage/{slug}/reconcile`: per customer and UTC day or hour, the count, numeric sums
//! and digest of an event type's live events, for a sender to compare with its own ledger.

use std::fmt::Write as _;

use axum::extract::Path;
use axum::response::Response;
use bytes::Bytes;
use hyper::StatusCode;
use meterbase_query::reconcile::{Bucket, FieldSum, ReconcileBucket, ReconcileRequest, reconcile};
use meterbase_schema::digest::{DIGEST_ALGORITHM, digest_hex};
use meterbase_schema::scalar::format_decimal;
use meterbase_schema::timestamp::{format_micros, parse_instant_utc};
use serde_json::Value;

use crate::auth::Tenant;
use crate::http::{Params, Result, bytes_response};
use crate::problem::Problem;

fn required_instant(params: &Params, name: &str) -> Result<i64> {
    let text = params.get(name).ok_or_else(|| {
        Problem::bad_request(format!(
            "{name} is required: an RFC 3339 instant or a date such as 2025-07-01"
        ))
    })?;
    parse_instant_utc(text).map_err(|e| Problem::bad_request(format!("{name} {text:?}: {e}")))
}

fn request(app: &crate::app::App, params: &Params) -> Result<ReconcileRequest> {
    params.only(&["from", "to", "customer_id", "by", "as_of"])?;
    let from = required_instant(params, "from")?;
    let to = required_instant(params, "to")?;
    if from >= to {
        return Err(Problem::bad_request("from must be before to"));
    }
    let by = match params.get("by").unwrap_or("day") {
        "day" => Bucket::Day,
        "hour" => Bucket::Hour,
        other => {
            return Err(Problem::bad_request(format!(
                "by {other:?}: use day or hour (UTC buckets of the event timestamp)"
            )));
        }
    };
    let as_of = params
        .get("as_of")
        .map(|t| app.parse_as_of(t))
        .transpose()?;
    Ok(ReconcileRequest {
        from,
        to,
        customer_id: params.get("customer_id").map(str::to_string),
        by,
        as_of,
    })
}

/// One bucket as JSON text: integers and floats as numbers, decimals as exact strings (as
/// `/sql` writes them); sums of integers may pass 2^64, which `serde_json` cannot hold.
fn write_bucket(out: &mut String, b: &ReconcileBucket) {
    let text = |s: &str| Value::String(s.to_string()).to_string();
    let _ = write!(
        out,
        "{{\"customer_id\":{},\"bucket_start\":{},\"count\":{},\"sums\":{{",
        text(&b.customer_id),
        text(&format_micros(b.bucket_start)),
        b.count
    );
    for (i, (name, sum)) in b.sums.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let value = match sum {
            FieldSum::Integer(v) => v.to_string(),
            FieldSum::Decimal(v, scale) => text(&format_decimal(*v, *scale)),
            FieldSum::Float(v) => serde_json::Number::from_f64(*v)
                .map_or_else(|| "null".to_string(), |n| n.to_string()),
        };
        let _ = write!(out, "{}:{value}", text(name));
    }
    let _ = write!(out, "}},\"digest\":\"{}\"}}", digest_hex(b.digest));
}

pub(crate) async fn get(
    Tenant { app, org }: Tenant,
    Path(slug): Path<String>,
    params: Params,
) -> Result<Response> {
    let def = app.event_type(&org, &slug)?;
    let req = request(&app, &params)?;
    let tables = app.snapshots(&org)?;
    let buckets = reconcile(&app.engine, &org.id, tables, &def, &req).await?;
    let mut body = format!(
        "{{\"algorithm\":\"{DIGEST_ALGORITHM}\",\"event_type\":{},\"from\":\"{}\",\"to\":\"{}\",\"by\":\"{}\",\"buckets\":[",
        Value::String(def.api_slug.clone()),
        format_micros(req.from),
        format_micros(req.to),
        match req.by {
            Bucket::Day => "day",
            Bucket::Hour => "hour",
        }
    );
    for (i, b) in buckets.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        write_bucket(&mut body, b);
    }
    body.push_str("]}");
    Ok(bytes_response(
        StatusCode::OK,
        "application/json",
        Bytes::from(body),
    ))
}
