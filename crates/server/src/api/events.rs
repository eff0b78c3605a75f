//! `GET /usage/{slug}/events` (a page of events in timestamp order) and
//! `DELETE /usage/{slug}/events` (a range deletion, logged like a write).

use axum::extract::Path;
use axum::response::Response;
use bytes::Bytes;
use hyper::StatusCode;
use meterbase_query::events::{count, page};
use meterbase_schema::timestamp::parse_instant_utc;
use meterbase_storage::EventRange;
use serde_json::json;

use crate::auth::Tenant;
use crate::http::{Params, Result, bytes_response, json_response};
use crate::problem::Problem;

const MAX_LIMIT: usize = 1000;

/// `customer_id`, `from`, `to` (any timestamp form, or a plain date meaning midnight UTC).
fn range(params: &Params) -> Result<EventRange> {
    let instant = |name: &str| -> Result<Option<i64>> {
        params
            .get(name)
            .map(|text| {
                parse_instant_utc(text)
                    .map_err(|e| Problem::bad_request(format!("{name} {text:?}: {e}")))
            })
            .transpose()
    };
    Ok(EventRange {
        customer_id: params.get("customer_id").map(str::to_string),
        from: instant("from")?,
        to: instant("to")?,
    })
}

pub(crate) async fn list(
    Tenant { app, org }: Tenant,
    Path(slug): Path<String>,
    params: Params,
) -> Result<Response> {
    let def = app.event_type(&org, &slug)?;
    let limit: usize = match params.get("limit") {
        None => 100,
        Some(l) => l
            .parse()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| Problem::bad_request(format!("limit must be 1-{MAX_LIMIT}")))?,
    };
    let range = range(&params)?;
    let tables = app.snapshots(&org)?;
    let body = page(
        &app.engine,
        &org.id,
        tables,
        &def,
        &range,
        params.get("cursor"),
        limit,
    )
    .await?;
    Ok(bytes_response(
        StatusCode::OK,
        "application/json",
        Bytes::from(body),
    ))
}

/// The reply counts the rows the deletion removed, from the table as it stood just before it;
/// with `dry_run=true` nothing is deleted and the reply counts what would be.
pub(crate) async fn delete(
    Tenant { app, org }: Tenant,
    Path(slug): Path<String>,
    params: Params,
) -> Result<Response> {
    let def = app.event_type(&org, &slug)?;
    let table = app.table(&org, &slug)?;
    params.only(&["customer_id", "from", "to", "dry_run"])?;
    let range = range(&params)?;
    if range.customer_id.is_none() && (range.from.is_none() || range.to.is_none()) {
        return Err(Problem::bad_request(
            "a deletion needs customer_id, or both from and to (or all three); deleting everything is DELETE /rawmetrics/{slug}?force=true",
        ));
    }
    if let (Some(f), Some(t)) = (range.from, range.to)
        && f >= t
    {
        return Err(Problem::bad_request("from must be before to"));
    }
    if params.flag("dry_run")? {
        // Nothing is logged or changed: the rows the deletion would remove now.
        let would = count(&app.engine, &org.id, table.snapshot()?, &range, None).await?;
        return Ok(json_response(
            StatusCode::OK,
            &json!({ "would_delete": would }),
        ));
    }
    let ack = app.store.delete(&table, range.clone()).await?;
    // The deletion is durable from here on: a count that fails must not read as a failed
    // deletion, so it is reported next to a 200.
    let counted = match table.snapshot() {
        Ok(snap) => count(&app.engine, &org.id, snap, &range, Some(ack.seq))
            .await
            .map_err(Problem::from),
        Err(e) => Err(Problem::from(e)),
    };
    let body = match counted {
        Ok(deleted) => json!({ "deleted": deleted }),
        Err(p) => {
            tracing::warn!(table = %def.api_slug, "deletion applied, counting its rows failed: {}", p.detail);
            json!({
                "deleted": null,
                "count_error": format!("the deletion is applied; counting its rows failed: {}", p.detail),
            })
        }
    };
    Ok(json_response(StatusCode::OK, &body))
}
