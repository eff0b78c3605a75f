//! `GET /billable_metrics/{slug}/usage/explain`: one customer's value over a period, the same
//! as the usage endpoint's, with a page of the events that made it (and their contributions)
//! or of those left out and why.

use axum::extract::Path;
use axum::response::Response;
use hyper::StatusCode;
use meterbase_metrics::{ExplainRequest, ExplainTarget, MAX_EXPLAIN_LIMIT, Show, UsageRequest};
use meterbase_query::format::write_json_value;
use meterbase_schema::timestamp::format_micros;
use serde_json::{Value, json};

use crate::api::billable_metrics::{in_force, load, period, time_zone};
use crate::auth::Tenant;
use crate::http::{Params, Result, json_response};
use crate::problem::Problem;

const DEFAULT_LIMIT: usize = 100;

pub(crate) async fn explain(
    Tenant { app, org }: Tenant,
    Path(slug): Path<String>,
    q: Params,
) -> Result<Response> {
    let stored = load(&app, &org, &slug)?;
    let tz = time_zone(q.get("tz"))?;
    let (start, end) = period(&q, tz)?;
    let customer_id = q.get("customer_id").ok_or_else(|| {
        Problem::bad_request("customer_id is required: explain covers one customer")
    })?;
    let as_of = q.get("as_of").map(|t| app.parse_as_of(t)).transpose()?;
    let show = match q.get("show") {
        None | Some("included") => Show::Included,
        Some("excluded") => Show::Excluded,
        Some(other) => {
            return Err(Problem::bad_request(format!(
                "show {other:?} must be included or excluded"
            )));
        }
    };
    let limit = match q.get("limit") {
        None => DEFAULT_LIMIT,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_EXPLAIN_LIMIT).contains(n))
            .ok_or_else(|| {
                Problem::bad_request(format!(
                    "limit {text:?} must be a whole number from 1 to {MAX_EXPLAIN_LIMIT}"
                ))
            })?,
    };
    let (version, metric) = in_force(&stored, &slug, as_of)?;
    // One snapshot for the value and the events, so both describe the same data.
    let tables = app.snapshots(&org)?;
    let usage = UsageRequest {
        start,
        end,
        customer_id: Some(customer_id),
        window: None,
        tz,
        as_of,
    };
    let evaluations =
        meterbase_metrics::evaluate(&app.engine, &org.id, tables.clone(), &metric, &usage).await?;
    let mut values: Vec<Value> = Vec::new();
    for e in &evaluations {
        let Ok(column) = e.output.schema.index_of("value") else {
            continue;
        };
        for batch in &e.output.batches {
            for row in 0..batch.num_rows() {
                let mut text = String::new();
                write_json_value(&mut text, batch.column(column), row);
                values.push(serde_json::from_str(&text).unwrap_or(Value::Null));
            }
        }
    }
    // Without dimensions a customer has one value (none: no usage); with them, one per row.
    let value = match values.len() {
        0 => Value::Null,
        1 => values.remove(0),
        _ => Value::Array(values),
    };
    let target = ExplainTarget {
        builder: metric.builder.as_ref(),
        reads: &metric.reads,
    };
    let request = ExplainRequest {
        customer_id,
        start,
        end,
        as_of,
        show,
        limit,
        cursor: q.get("cursor"),
    };
    let explained =
        meterbase_metrics::explain(&app.engine, &org.id, tables, &target, &request).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "metric": metric.slug,
            "version": version.version,
            "customer_id": customer_id,
            "start_date": format_micros(start),
            "end_date": format_micros(end),
            "as_of": as_of.map(format_micros),
            "value": value,
            "contributions": explained.contributions,
            "counts": explained.counts,
            "items": explained.items,
            "next_cursor": explained.next_cursor,
        }),
    ))
}
