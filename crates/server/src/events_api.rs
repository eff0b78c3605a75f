//! `GET /usage/{slug}/events`: a customer's (or everyone's) events in timestamp order, paged
//! with an opaque cursor, one row per unique key (the latest version).

use std::collections::HashMap;

use bytes::Bytes;
use datafusion::common::ScalarValue;
use hyper::StatusCode;
use meterbase_catalog::Organisation;
use meterbase_query::format::write_json_value;
use meterbase_schema::timestamp::parse_instant_utc;
use serde_json::{Value, json};

use crate::App;
use crate::problem::{HttpResponse, Problem};
use crate::routes::{Req, bytes_response, param, query_params, snapshots};

type Result<T> = std::result::Result<T, Problem>;

const MAX_LIMIT: usize = 1000;

fn bad_cursor() -> Problem {
    Problem::bad_request("cursor is not one this server handed out")
}

/// The cursor is the sort key of the last row returned: (timestamp µs, key columns as text).
fn decode_cursor(text: &str, keys: usize) -> Result<(i64, Vec<String>)> {
    let bytes = hex::decode(text).map_err(|_| bad_cursor())?;
    let v: (i64, Vec<String>) = serde_json::from_slice(&bytes).map_err(|_| bad_cursor())?;
    if v.1.len() != keys {
        return Err(bad_cursor());
    }
    Ok(v)
}

pub(crate) async fn list(
    app: &App,
    org: &Organisation,
    slug: &str,
    req: &Req,
) -> Result<HttpResponse> {
    let def = app
        .catalog
        .event_type(&org.id, &slug.to_ascii_lowercase())
        .ok_or_else(|| Problem::not_found(format!("no event type with api_slug {slug:?}")))?;
    let q = query_params(req);
    let limit: usize = match param(&q, "limit") {
        None => 100,
        Some(l) => l
            .parse()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| Problem::bad_request(format!("limit must be 1-{MAX_LIMIT}")))?,
    };
    let keys: Vec<&str> = def
        .unique_key
        .iter()
        .map(String::as_str)
        .filter(|k| *k != "timestamp")
        .collect();
    let key_text: Vec<String> = keys
        .iter()
        // Nulls must take part in the order too, or a row whose key column is null would be
        // skipped by the cursor predicate: "n" for null sorts before "v<value>".
        .map(|k| format!("coalesce('v' || CAST(\"{k}\" AS VARCHAR), 'n')"))
        .collect();
    let mut params: HashMap<String, ScalarValue> = HashMap::new();
    let mut conds: Vec<String> = Vec::new();
    let ts = |name: &str, text: &str| -> Result<ScalarValue> {
        let us = parse_instant_utc(text)
            .map_err(|e| Problem::bad_request(format!("{name} {text:?}: {e}")))?;
        Ok(ScalarValue::TimestampMicrosecond(
            Some(us),
            Some("UTC".into()),
        ))
    };
    if let Some(c) = param(&q, "customer_id") {
        params.insert("customer".into(), ScalarValue::Utf8(Some(c.to_string())));
        conds.push("customer_id = $customer".into());
    }
    if let Some(f) = param(&q, "from") {
        params.insert("from".into(), ts("from", f)?);
        conds.push("timestamp >= $from".into());
    }
    if let Some(t) = param(&q, "to") {
        params.insert("to".into(), ts("to", t)?);
        conds.push("timestamp < $to".into());
    }
    if let Some(c) = param(&q, "cursor") {
        let (t, vals) = decode_cursor(c, keys.len())?;
        params.insert(
            "ct".into(),
            ScalarValue::TimestampMicrosecond(Some(t), Some("UTC".into())),
        );
        // Lexicographic "after the cursor" over (timestamp, key columns as text).
        let mut after = String::from("FALSE");
        for i in (0..keys.len()).rev() {
            params.insert(format!("c{i}"), ScalarValue::Utf8(Some(vals[i].clone())));
            after = format!(
                "({k} > $c{i} OR ({k} = $c{i} AND {after}))",
                k = key_text[i]
            );
        }
        let tail = if keys.is_empty() {
            "FALSE".to_string()
        } else {
            after
        };
        conds.push(format!("(timestamp > $ct OR (timestamp = $ct AND {tail}))"));
    }
    let has_data = !def.dataschema.data.is_empty();
    let mut select = vec!["customer_id".to_string(), "timestamp".to_string()];
    if has_data {
        select.push("data".into());
    }
    select.push("_ingested_at".into());
    for (i, k) in key_text.iter().enumerate() {
        select.push(format!("{k} AS __key{i}"));
    }
    let order: Vec<String> = std::iter::once("timestamp".to_string())
        .chain(key_text.iter().cloned())
        .collect();
    let sql = format!(
        "SELECT {} FROM \"{}\"{} ORDER BY {} LIMIT {}",
        select.join(", "),
        def.api_slug,
        if conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conds.join(" AND "))
        },
        order.join(", "),
        limit + 1
    );
    let tables = snapshots(app, org)?;
    let out = app.engine.execute(tables, sql, params, None).await?;
    let mut items: Vec<String> = Vec::new();
    let mut next: Option<Value> = None;
    let mut seen = 0;
    'outer: for batch in &out.batches {
        for r in 0..batch.num_rows() {
            seen += 1;
            if seen > limit {
                break 'outer;
            }
            let cell = |name: &str| {
                let mut s = String::new();
                match out.schema.index_of(name) {
                    Ok(i) => write_json_value(&mut s, batch.column(i), r),
                    Err(_) => s.push_str("{}"),
                }
                s
            };
            let data = if has_data { cell("data") } else { "{}".into() };
            items.push(format!(
                "{{\"customer_id\":{},\"timestamp\":{},\"data\":{},\"ingested_at\":{}}}",
                cell("customer_id"),
                cell("timestamp"),
                data,
                cell("_ingested_at")
            ));
            if seen == limit {
                let t = batch
                    .column(1)
                    .as_any()
                    .downcast_ref::<arrow::array::TimestampMicrosecondArray>()
                    .map(|a| a.value(r))
                    .unwrap_or_default();
                let vals: Vec<String> = (0..keys.len())
                    .map(|i| {
                        serde_json::from_str::<String>(&cell(&format!("__key{i}")))
                            .unwrap_or_default()
                    })
                    .collect();
                next = Some(json!(hex::encode(json!([t, vals]).to_string())));
            }
        }
    }
    let next = if seen > limit {
        next.unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    let body = format!(
        "{{\"items\":[{}],\"next_cursor\":{}}}",
        items.join(","),
        next
    );
    Ok(bytes_response(
        StatusCode::OK,
        "application/json",
        Bytes::from(body),
    ))
}

/// `DELETE /usage/{slug}/events`: a range deletion, logged like a write. The reply counts the
/// rows it removed, from the table as it stood just before the deletion.
pub(crate) async fn delete(
    app: &App,
    org: &Organisation,
    slug: &str,
    req: &Req,
) -> Result<HttpResponse> {
    let def = crate::routes::find_type(app, org, slug)?;
    let table = app
        .store
        .table(&org.id, &def.id)
        .ok_or_else(|| Problem::not_found(format!("no event type with api_slug {slug:?}")))?;
    let q = query_params(req);
    if let Some((k, _)) = q
        .iter()
        .find(|(k, _)| !matches!(k.as_str(), "customer_id" | "from" | "to"))
    {
        return Err(Problem::bad_request(format!(
            "unknown query parameter {k:?}: use customer_id, from and to"
        )));
    }
    let instant = |name: &str| -> Result<Option<i64>> {
        param(&q, name)
            .map(|text| {
                parse_instant_utc(text)
                    .map_err(|e| Problem::bad_request(format!("{name} {text:?}: {e}")))
            })
            .transpose()
    };
    let filter = meterbase_storage::DeleteFilter {
        customer_id: param(&q, "customer_id").map(str::to_string),
        from: instant("from")?,
        to: instant("to")?,
    };
    if filter.customer_id.is_none() && (filter.from.is_none() || filter.to.is_none()) {
        return Err(Problem::bad_request(
            "a deletion needs customer_id, or both from and to (or all three); deleting everything is DELETE /rawmetrics/{slug}?force=true",
        ));
    }
    if let (Some(f), Some(t)) = (filter.from, filter.to)
        && f >= t
    {
        return Err(Problem::bad_request("from must be before to"));
    }
    let mut conds = vec!["true".to_string()];
    let mut params: HashMap<String, ScalarValue> = HashMap::new();
    let ts = |v: i64| ScalarValue::TimestampMicrosecond(Some(v), Some("UTC".into()));
    if let Some(c) = &filter.customer_id {
        params.insert("customer".into(), ScalarValue::Utf8(Some(c.clone())));
        conds.push("customer_id = $customer".into());
    }
    if let Some(f) = filter.from {
        params.insert("from".into(), ts(f));
        conds.push("timestamp >= $from".into());
    }
    if let Some(t) = filter.to {
        params.insert("to".into(), ts(t));
        conds.push("timestamp < $to".into());
    }
    let ack = app.store.delete(&table, filter).await?;
    let sql = format!(
        "SELECT count(*) AS n FROM \"{}\" WHERE {}",
        def.api_slug,
        conds.join(" AND ")
    );
    // The deletion is durable from here on: a count that fails must not read as a failed
    // deletion, so it is reported next to a 200.
    let body = match count_before(app, &table, ack.seq, sql, params).await {
        Ok(deleted) => json!({ "deleted": deleted }),
        Err(p) => {
            tracing::warn!(table = %def.api_slug, "deletion applied, counting its rows failed: {}", p.detail);
            json!({
                "deleted": null,
                "count_error": format!("the deletion is applied; counting its rows failed: {}", p.detail),
            })
        }
    };
    Ok(crate::routes::json_response(StatusCode::OK, &body))
}

/// Rows `sql` counts among those written before log sequence `seq`.
async fn count_before(
    app: &App,
    table: &std::sync::Arc<meterbase_storage::Table>,
    seq: u64,
    sql: String,
    params: HashMap<String, ScalarValue>,
) -> Result<i64> {
    let mut snap = table.snapshot()?;
    snap.before_seq = Some(seq);
    let out = app.engine.execute(vec![snap], sql, params, None).await?;
    Ok(out
        .batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .and_then(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .map(|a| a.value(0))
        })
        .unwrap_or(0))
}
