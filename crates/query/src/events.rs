//! The events API's reads: a page of a table's events in timestamp order (ties broken by the
//! unique key) behind an opaque cursor, and the count of the rows a range deletion covers.
//! Both are SQL over the same view every query uses, so they see one row per unique key and
//! no deleted row.

use std::collections::HashMap;

use arrow::array::TimestampMicrosecondArray;
use datafusion::common::ScalarValue;
use meterbase_schema::EventTypeDef;
use meterbase_storage::{EventRange, TableSnapshot};
use serde_json::{Value, json};

use crate::format::write_json_value;
use crate::{Caller, QueryEngine, QueryError, QueryKind};

fn utc(us: i64) -> ScalarValue {
    ScalarValue::TimestampMicrosecond(Some(us), Some("UTC".into()))
}

/// SQL conditions for a range, and their parameters.
fn conditions(range: &EventRange) -> (Vec<String>, HashMap<String, ScalarValue>) {
    let mut conds = Vec::new();
    let mut params = HashMap::new();
    if let Some(c) = &range.customer_id {
        params.insert("customer".into(), ScalarValue::Utf8(Some(c.clone())));
        conds.push("customer_id = $customer".to_string());
    }
    if let Some(f) = range.from {
        params.insert("from".into(), utc(f));
        conds.push("timestamp >= $from".to_string());
    }
    if let Some(t) = range.to {
        params.insert("to".into(), utc(t));
        conds.push("timestamp < $to".to_string());
    }
    (conds, params)
}

fn bad_cursor() -> QueryError {
    QueryError::Invalid("cursor is not one this server handed out".into())
}

/// The cursor is the sort key of the last row returned: (timestamp µs, key columns as text).
fn decode_cursor(text: &str, keys: usize) -> Result<(i64, Vec<String>), QueryError> {
    let bytes = hex::decode(text).map_err(|_| bad_cursor())?;
    let v: (i64, Vec<String>) = serde_json::from_slice(&bytes).map_err(|_| bad_cursor())?;
    if v.1.len() != keys {
        return Err(bad_cursor());
    }
    Ok(v)
}

fn encode_cursor(t: i64, keys: &[String]) -> String {
    hex::encode(json!([t, keys]).to_string())
}

/// `{"items":[…],"next_cursor":…}`: at most `limit` events after `cursor`.
pub async fn page(
    engine: &QueryEngine,
    org: &str,
    tables: Vec<TableSnapshot>,
    def: &EventTypeDef,
    range: &EventRange,
    cursor: Option<&str>,
    limit: usize,
) -> Result<String, QueryError> {
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
    let (mut conds, mut params) = conditions(range);
    if let Some(c) = cursor {
        let (t, vals) = decode_cursor(c, keys.len())?;
        params.insert("ct".into(), utc(t));
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
        where_clause(&conds),
        order.join(", "),
        limit + 1
    );
    let caller = Caller {
        org,
        kind: QueryKind::EventsList,
    };
    let out = engine.execute(caller, tables, sql, params, None).await?;
    let mut items: Vec<String> = Vec::new();
    let mut next: Option<String> = None;
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
                    .downcast_ref::<TimestampMicrosecondArray>()
                    .map(|a| a.value(r))
                    .unwrap_or_default();
                let vals: Vec<String> = (0..keys.len())
                    .map(|i| {
                        serde_json::from_str::<String>(&cell(&format!("__key{i}")))
                            .unwrap_or_default()
                    })
                    .collect();
                next = Some(encode_cursor(t, &vals));
            }
        }
    }
    let next = match next.filter(|_| seen > limit) {
        Some(c) => Value::String(c),
        None => Value::Null,
    };
    Ok(format!(
        "{{\"items\":[{}],\"next_cursor\":{}}}",
        items.join(","),
        next
    ))
}

fn where_clause(conds: &[String]) -> String {
    if conds.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conds.join(" AND "))
    }
}

/// Rows of `table` in `range`; with `before_seq`, among those written before that log
/// sequence (what a deletion at that sequence removes).
pub async fn count(
    engine: &QueryEngine,
    org: &str,
    mut table: TableSnapshot,
    range: &EventRange,
    before_seq: Option<u64>,
) -> Result<i64, QueryError> {
    let (conds, params) = conditions(range);
    let sql = format!(
        "SELECT count(*) AS n FROM \"{}\"{}",
        table.slug,
        where_clause(&conds)
    );
    table.before_seq = before_seq;
    let caller = Caller {
        org,
        kind: QueryKind::DeletionCount,
    };
    let out = engine
        .execute(caller, vec![table], sql, params, None)
        .await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_refused() {
        let c = encode_cursor(42, &["a".into(), "".into()]);
        assert_eq!(
            decode_cursor(&c, 2).unwrap(),
            (42, vec!["a".into(), "".into()])
        );
        assert!(decode_cursor(&c, 1).is_err());
        assert!(decode_cursor("zz", 0).is_err());
        assert!(decode_cursor(&hex::encode("[1]"), 0).is_err());
    }
}
