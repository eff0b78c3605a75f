//! `/billable_metrics`: create, list, show, delete, and usage evaluation.

use arrow::array::{Array, AsArray};
use arrow::datatypes::TimestampMicrosecondType;
use axum::body::Body;
use axum::extract::Path;
use axum::response::Response;
use bytes::Bytes;
use hyper::StatusCode;
use meterbase_catalog::{Organisation, StoredMetric};
use meterbase_metrics::{Metric, MetricSpec, UsageRequest, Window};
use meterbase_query::format::write_json_value;
use meterbase_schema::timestamp::format_micros;
use serde_json::{Value, json};

use crate::app::App;
use crate::auth::Tenant;
use crate::http::{
    Params, Result, bytes_response, json_response, no_content, parse_json, read_body,
};
use crate::problem::Problem;

fn metric_json(m: &Metric) -> Value {
    let mut v = serde_json::to_value(m).unwrap_or(Value::Null);
    if let Value::Object(o) = &mut v {
        o.insert(
            "created_at".into(),
            json!(
                m.created_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        );
    }
    v
}

fn load(app: &App, org: &Organisation, slug: &str) -> Result<Metric> {
    let stored = app
        .catalog
        .metric(&org.id, slug)
        .ok_or_else(|| Problem::not_found(format!("no billable metric {slug:?}")))?;
    serde_json::from_value(stored.body)
        .map_err(|e| Problem::internal(format!("stored metric {slug:?} is unreadable: {e}")))
}

pub(crate) async fn create(Tenant { app, org }: Tenant, body: Body) -> Result<Response> {
    let body = read_body(body, 1 << 20).await?;
    let spec: MetricSpec = parse_json(&body)?;
    let tables = app.snapshots(&org)?;
    let types = app.catalog.event_types(&org.id);
    let metric = meterbase_metrics::create(&app.engine, &org.id, tables, &types, spec).await?;
    app.catalog.create_metric(StoredMetric {
        org_id: org.id.clone(),
        slug: metric.slug.clone(),
        reads: metric.reads.clone(),
        body: serde_json::to_value(&metric).map_err(|e| Problem::internal(e.to_string()))?,
    })?;
    Ok(json_response(StatusCode::CREATED, &metric_json(&metric)))
}

pub(crate) async fn list(Tenant { app, org }: Tenant) -> Result<Response> {
    let items: Vec<Value> = app
        .catalog
        .metrics(&org.id)
        .into_iter()
        .filter_map(|m| serde_json::from_value::<Metric>(m.body).ok())
        .map(|m| metric_json(&m))
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "items": items })))
}

pub(crate) async fn show(
    Tenant { app, org }: Tenant,
    Path(slug): Path<String>,
) -> Result<Response> {
    Ok(json_response(
        StatusCode::OK,
        &metric_json(&load(&app, &org, &slug)?),
    ))
}

pub(crate) async fn delete(
    Tenant { app, org }: Tenant,
    Path(slug): Path<String>,
) -> Result<Response> {
    app.catalog.delete_metric(&org.id, &slug)?;
    Ok(no_content())
}

pub(crate) async fn usage(
    Tenant { app, org }: Tenant,
    Path(slug): Path<String>,
    q: Params,
) -> Result<Response> {
    let metric = load(&app, &org, &slug)?;
    let tz: chrono_tz::Tz = match q.get("tz") {
        None => chrono_tz::UTC,
        Some(t) => t.parse().map_err(|_| {
            Problem::bad_request(format!(
                "tz {t:?} is not an IANA time zone (e.g. Europe/Berlin)"
            ))
        })?,
    };
    let instant = |name: &str| -> Result<i64> {
        let text = q
            .get(name)
            .ok_or_else(|| Problem::bad_request(format!("{name} is required")))?;
        Ok(meterbase_metrics::parse_instant(text, tz)?)
    };
    let start = instant("start_date")?;
    let end = instant("end_date")?;
    let window: Option<Window> = q.get("window").map(str::parse).transpose()?;
    let as_of = q.get("as_of").map(|t| app.parse_as_of(t)).transpose()?;
    let customer_id = q.get("customer_id");
    let request = UsageRequest {
        start,
        end,
        customer_id,
        window,
        tz,
        as_of,
    };
    let tables = app.snapshots(&org)?;
    let evaluations =
        meterbase_metrics::evaluate(&app.engine, &org.id, tables, &metric, &request).await?;
    let mut rows: Vec<(i64, String, String)> = Vec::new();
    for e in &evaluations {
        let schema = &e.output.schema;
        let cid = schema.index_of("customer_id").ok();
        let wcol = schema.index_of("window_start").ok();
        for batch in &e.output.batches {
            for r in 0..batch.num_rows() {
                let mut obj = String::from("{");
                let mut sort_key = String::new();
                let mut first = true;
                let mut push = |obj: &mut String, name: &str, value: &str| {
                    if !first {
                        obj.push(',');
                    }
                    first = false;
                    obj.push_str(&json!(name).to_string());
                    obj.push(':');
                    obj.push_str(value);
                };
                let cell = |i: usize| {
                    let mut s = String::new();
                    write_json_value(&mut s, batch.column(i), r);
                    s
                };
                if let Some(i) = cid {
                    sort_key = cell(i);
                    push(&mut obj, "customer_id", &sort_key);
                }
                if let Ok(i) = schema.index_of("value") {
                    push(&mut obj, "value", &cell(i));
                }
                // The window: the evaluation's, or the row's own when one query answered
                // every window.
                let window = e.window_start.or_else(|| {
                    wcol.and_then(|i| {
                        batch
                            .column(i)
                            .as_primitive_opt::<TimestampMicrosecondType>()
                            .filter(|a| a.is_valid(r))
                            .map(|a| a.value(r))
                    })
                });
                if let Some(ws) = window {
                    push(
                        &mut obj,
                        "window_start",
                        &json!(format_micros(ws)).to_string(),
                    );
                }
                for (i, f) in schema.fields().iter().enumerate() {
                    if !matches!(f.name().as_str(), "customer_id" | "value" | "window_start") {
                        let v = cell(i);
                        sort_key.push('\0');
                        sort_key.push_str(&v);
                        push(&mut obj, f.name(), &v);
                    }
                }
                obj.push('}');
                rows.push((window.unwrap_or(0), sort_key, obj));
            }
        }
    }
    rows.sort();
    let mut body = format!(
        "{{\"metric\":{},\"start_date\":{},\"end_date\":{},",
        json!(metric.slug),
        json!(format_micros(start)),
        json!(format_micros(end))
    );
    if metric.period == meterbase_metrics::Period::AllTime {
        body.push_str("\"period\":\"all_time\",");
    }
    body.push_str("\"rows\":[");
    for (i, (_, _, row)) in rows.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(row);
    }
    body.push_str("]}");
    Ok(bytes_response(
        StatusCode::OK,
        "application/json",
        Bytes::from(body),
    ))
}
