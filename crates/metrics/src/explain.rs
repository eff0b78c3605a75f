//! Explaining one customer's value of a metric over a period: every stored event of the
//! metric's event type for that customer, classified as included (with its contribution) or
//! left out and why — replaced by a later version, removed by a deletion, outside the
//! period, excluded by the builder's filters, or ingested after `as_of`.
//!
//! The classification reads every stored version (`meterbase_versions`, see
//! `meterbase_query::Versions`) and applies the same rules as the view billing reads: the
//! latest version of a unique key (by log sequence) is the live one, and a deletion removes
//! the live version of a key it matches when the deletion came after it. So the included
//! events are exactly the ones the usage endpoint aggregates.

use std::collections::{BTreeMap, HashMap};

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use datafusion::common::ScalarValue;
use meterbase_query::format::write_json_value;
use meterbase_query::{Caller, QueryEngine, QueryKind, Versions, versions_table};
use meterbase_schema::timestamp::format_micros;
use meterbase_storage::{ROW_BITS, TableSnapshot, Tombstone};
use serde_json::{Value, json};

use crate::builder::{Aggregation, Builder, field_column, filter_condition};
use crate::error::MetricError;

/// The reasons, in the order `counts` lists them.
pub const REASONS: [&str; 6] = [
    "included",
    "replaced",
    "deleted",
    "outside_period",
    "filtered",
    "after_as_of",
];

/// At most this many items per page.
pub const MAX_EXPLAIN_LIMIT: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    Included,
    Excluded,
}

pub struct ExplainRequest<'a> {
    pub customer_id: &'a str,
    pub start: i64,
    pub end: i64,
    pub as_of: Option<i64>,
    pub show: Show,
    pub limit: usize,
    /// `next_cursor` of the previous page.
    pub cursor: Option<&'a str>,
}

/// What the metric is, as far as explaining goes.
pub struct ExplainTarget<'a> {
    /// The builder form, when the metric has one: its filters and field are known.
    pub builder: Option<&'a Builder>,
    /// The event types the metric reads.
    pub reads: &'a [String],
}

pub struct Explanation {
    pub counts: BTreeMap<&'static str, u64>,
    pub items: Vec<Value>,
    pub next_cursor: Option<String>,
    /// How contributions relate to the value, or why there are none.
    pub contributions: &'static str,
}

/// Where a page starts: after the row with this (timestamp µs, `_seq`).
fn parse_cursor(cursor: &str) -> Result<(i64, i64), MetricError> {
    let bad = || MetricError::Invalid(format!("cursor {cursor:?} is not one this API gave"));
    let (t, s) = cursor.split_once('.').ok_or_else(bad)?;
    Ok((t.parse().map_err(|_| bad())?, s.parse().map_err(|_| bad())?))
}

fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The deletions in force for this customer, as a `CASE` naming the one that removed a row.
fn deleted_by(tombstones: &[Tombstone], snap: &TableSnapshot, req: &ExplainRequest) -> String {
    let arms: Vec<String> = tombstones
        .iter()
        .filter(|t| req.as_of.is_none_or(|a| t.at <= a))
        .filter(|t| snap.before_seq.is_none_or(|b| t.seq < b))
        .filter(|t| {
            t.customer_id
                .as_deref()
                .is_none_or(|c| c == req.customer_id)
        })
        .map(|t| {
            let mut when = format!("CAST(_seq AS BIGINT) < {}", (t.seq << ROW_BITS) as i64);
            if let Some(from) = t.from {
                when.push_str(&format!(" AND CAST(timestamp AS BIGINT) >= {from}"));
            }
            if let Some(to) = t.to {
                when.push_str(&format!(" AND CAST(timestamp AS BIGINT) < {to}"));
            }
            let detail = json!({"deletion": {
                "at": format_micros(t.at),
                "customer_id": t.customer_id,
                "from": t.from.map(format_micros),
                "to": t.to.map(format_micros),
            }});
            format!("WHEN {when} THEN {}", quote(&detail.to_string()))
        })
        .collect();
    if arms.is_empty() {
        "CASE WHEN false THEN 'none' END".to_string()
    } else {
        format!("CASE {} END", arms.join(" "))
    }
}

/// Each included event's part of the value, and what that means.
fn contribution(
    target: &ExplainTarget,
    snap: &TableSnapshot,
) -> Result<(String, &'static str), MetricError> {
    let Some(b) = target.builder else {
        return Ok((
            "CAST(NULL AS DOUBLE)".into(),
            "a SQL metric: its value is whatever its SQL computes, so no contribution per event \
             is derived; included are the live events of the period, which the SQL may narrow further",
        ));
    };
    let field = b
        .field
        .as_deref()
        .map(|f| field_column(&snap.def, f))
        .transpose()?;
    Ok(match (b.aggregation, field) {
        (Aggregation::Count, _) => (
            "CAST(1 AS BIGINT)".into(),
            "count: each included event contributes 1",
        ),
        (Aggregation::Sum, Some(f)) => (
            f,
            "sum: each included event contributes its value; their exact sum, rounded once, is the value",
        ),
        (Aggregation::Avg, _) => (
            "CAST(NULL AS DOUBLE)".into(),
            "avg: the value is the exact sum of the included events' values divided by their number",
        ),
        (Aggregation::TimeWeightedSum, _) => (
            "CAST(NULL AS DOUBLE)".into(),
            "time_weighted_sum: each value is held until the customer's next event (the last one \
             before the period carries into it); per-event hours are not broken out yet",
        ),
        _ => (
            "CAST(NULL AS DOUBLE)".into(),
            "min, max, unique_count, latest and earliest pick or count values among the included events",
        ),
    })
}

/// The statement classifying every visible version of the customer's rows.
fn classified(
    target: &ExplainTarget,
    snap: &TableSnapshot,
    req: &ExplainRequest,
) -> Result<(String, &'static str), MetricError> {
    let (contribution, meaning) = contribution(target, snap)?;
    let passes = match target.builder {
        Some(b) => filter_condition(b, &snap.def)?
            .map_or("true".to_string(), |c| format!("coalesce(({c}), false)")),
        None => "true".to_string(),
    };
    let keys: Vec<String> = snap
        .def
        .unique_key
        .iter()
        .map(|k| format!("\"{}\"", k.replace('"', "")))
        .collect();
    let replaced_at = if keys.is_empty() {
        "CASE WHEN false THEN _ingested_at END".to_string()
    } else {
        format!(
            "lead(_ingested_at) OVER (PARTITION BY {} ORDER BY _seq)",
            keys.join(", ")
        )
    };
    // Versions of one key share their customer when the customer is part of the key: the
    // customer's rows alone then decide which are replaced.
    let early = if snap.def.unique_key.iter().any(|k| k == "customer_id") {
        "WHERE customer_id = $explain_customer"
    } else {
        ""
    };
    let versions = versions_table(Versions::Visible);
    let deleted = deleted_by(&snap.tombstones, snap, req);
    let sql = format!(
        "WITH v AS (SELECT customer_id, timestamp, _ingested_at, _seq, data, \
         {contribution} AS __contribution, {replaced_at} AS __replaced_at, \
         {deleted} AS __deleted_by, {passes} AS __passes FROM {versions} {early}), \
         c AS (SELECT *, CASE WHEN __replaced_at IS NOT NULL THEN 'replaced' \
         WHEN __deleted_by IS NOT NULL THEN 'deleted' \
         WHEN timestamp < $explain_start OR timestamp >= $explain_end THEN 'outside_period' \
         WHEN NOT __passes THEN 'filtered' ELSE 'included' END AS __reason \
         FROM v WHERE customer_id = $explain_customer)"
    );
    Ok((sql, meaning))
}

fn params(req: &ExplainRequest) -> HashMap<String, ScalarValue> {
    let ts = |us| ScalarValue::TimestampMicrosecond(Some(us), Some("UTC".into()));
    HashMap::from([
        ("explain_start".to_string(), ts(req.start)),
        ("explain_end".to_string(), ts(req.end)),
        (
            "explain_customer".to_string(),
            ScalarValue::Utf8(Some(req.customer_id.to_string())),
        ),
    ])
}

/// The event type a metric's events come from: explaining needs exactly one.
fn event_type<'a>(
    target: &ExplainTarget,
    tables: &'a [TableSnapshot],
) -> Result<&'a TableSnapshot, MetricError> {
    let slug = match (target.builder, target.reads) {
        (Some(b), _) => b.usage_event.as_str(),
        (None, [one]) => one.as_str(),
        (None, reads) => {
            return Err(MetricError::Invalid(format!(
                "this SQL metric reads {} event types ({}); explain lists the events of one",
                reads.len(),
                reads.join(", ")
            )));
        }
    };
    tables.iter().find(|t| t.slug == slug).ok_or_else(|| {
        MetricError::Invalid(format!("usage event {slug:?} does not exist any more"))
    })
}

fn cell(batch: &arrow::record_batch::RecordBatch, name: &str, row: usize) -> Value {
    let Ok(i) = batch.schema().index_of(name) else {
        return Value::Null;
    };
    let mut text = String::new();
    write_json_value(&mut text, batch.column(i), row);
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

fn int(batch: &arrow::record_batch::RecordBatch, name: &str, row: usize) -> Option<i64> {
    let column = batch.column(batch.schema().index_of(name).ok()?);
    let values = column.as_primitive_opt::<Int64Type>()?;
    values.is_valid(row).then(|| values.value(row))
}

/// Counts per reason and one page of items. Runs two statements under the usage caps
/// against one snapshot (`tables`).
pub async fn explain(
    engine: &QueryEngine,
    org: &str,
    tables: Vec<TableSnapshot>,
    target: &ExplainTarget<'_>,
    req: &ExplainRequest<'_>,
) -> Result<Explanation, MetricError> {
    if req.start >= req.end {
        return Err(MetricError::Invalid(
            "start_date must be before end_date".into(),
        ));
    }
    let cursor = req.cursor.map(parse_cursor).transpose()?;
    let snap = event_type(target, &tables)?.clone();
    let (with, meaning) = classified(target, &snap, req)?;
    let later = versions_table(Versions::Later);
    let caller = Caller {
        org,
        kind: QueryKind::MetricUsage,
    };

    let counts_sql = format!(
        "{with} SELECT __reason AS reason, count(*) AS n FROM c GROUP BY __reason \
         UNION ALL SELECT 'after_as_of' AS reason, count(*) AS n FROM {later} \
         WHERE customer_id = $explain_customer"
    );
    let output = engine
        .execute_on_versions(
            caller,
            tables.clone(),
            &snap.slug,
            counts_sql,
            params(req),
            req.as_of,
        )
        .await?;
    let mut counts: BTreeMap<&'static str, u64> = REASONS.iter().map(|r| (*r, 0)).collect();
    for batch in &output.batches {
        for row in 0..batch.num_rows() {
            if let (Value::String(reason), Some(n)) =
                (cell(batch, "reason", row), int(batch, "n", row))
                && let Some(key) = REASONS.iter().find(|r| **r == reason)
            {
                *counts.entry(key).or_default() += n as u64;
            }
        }
    }

    let after = cursor.map_or(String::new(), |(t, s)| {
        format!(
            " AND (CAST(timestamp AS BIGINT) > {t} OR (CAST(timestamp AS BIGINT) = {t} AND CAST(_seq AS BIGINT) > {s}))"
        )
    });
    let columns = "customer_id, timestamp, data, _ingested_at, _seq, CAST(timestamp AS BIGINT) AS __t, CAST(_seq AS BIGINT) AS __s";
    let page_sql = match req.show {
        Show::Included => format!(
            "{with} SELECT {columns}, __contribution AS contribution FROM c \
             WHERE __reason = 'included'{after} ORDER BY __t, __s LIMIT {}",
            req.limit + 1
        ),
        Show::Excluded => format!(
            "{with} SELECT * FROM (\
             SELECT {columns}, __reason AS reason, __replaced_at AS replaced_at, __deleted_by AS deleted_by \
             FROM c WHERE __reason <> 'included' \
             UNION ALL SELECT {columns}, 'after_as_of' AS reason, \
             CASE WHEN false THEN _ingested_at END AS replaced_at, \
             CASE WHEN false THEN 'none' END AS deleted_by \
             FROM {later} WHERE customer_id = $explain_customer) AS x \
             WHERE true{after} ORDER BY __t, __s LIMIT {}",
            req.limit + 1
        ),
    };
    let output = engine
        .execute_on_versions(caller, tables, &snap.slug, page_sql, params(req), req.as_of)
        .await?;
    let mut items = Vec::new();
    let mut next_cursor = None;
    let filters = target
        .builder
        .map(|b| serde_json::to_value(&b.filters).unwrap_or(Value::Null));
    for batch in &output.batches {
        for row in 0..batch.num_rows() {
            if items.len() == req.limit {
                break;
            }
            let mut item = json!({
                "customer_id": cell(batch, "customer_id", row),
                "timestamp": cell(batch, "timestamp", row),
                "data": cell(batch, "data", row),
                "ingested_at": cell(batch, "_ingested_at", row),
            });
            match req.show {
                Show::Included => item["contribution"] = cell(batch, "contribution", row),
                Show::Excluded => {
                    let reason = cell(batch, "reason", row);
                    let detail = match reason.as_str() {
                        Some("replaced") => {
                            json!({"replaced_by_version_ingested_at": cell(batch, "replaced_at", row)})
                        }
                        Some("deleted") => cell(batch, "deleted_by", row)
                            .as_str()
                            .and_then(|d| serde_json::from_str(d).ok())
                            .unwrap_or(Value::Null),
                        Some("outside_period") => json!({"period": {
                            "start_date": format_micros(req.start),
                            "end_date": format_micros(req.end),
                        }}),
                        Some("filtered") => json!({"filters": filters}),
                        Some("after_as_of") => json!({"as_of": req.as_of.map(format_micros)}),
                        _ => Value::Null,
                    };
                    item["reason"] = reason;
                    item["detail"] = detail;
                }
            }
            items.push((item, int(batch, "__t", row), int(batch, "__s", row)));
        }
    }
    let more = output.batches.iter().map(|b| b.num_rows()).sum::<usize>() > req.limit;
    if more && let Some((_, Some(t), Some(s))) = items.last() {
        next_cursor = Some(format!("{t}.{s}"));
    }
    Ok(Explanation {
        counts,
        items: items.into_iter().map(|(item, _, _)| item).collect(),
        next_cursor,
        contributions: meaning,
    })
}
