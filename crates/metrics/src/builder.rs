//! The visual-builder form of a metric, compiled to the SQL that the stored metric shows.

use meterbase_schema::EventTypeDef;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::MetricError;
use crate::window_functions::{WINDOW_SPANS, WINDOW_START};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    Count,
    Sum,
    Min,
    Max,
    Avg,
    UniqueCount,
    Latest,
    Earliest,
    TimeWeightedSum,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FilterOp {
    Eq,
    Ne,
    In,
    NotIn,
    Gt,
    Gte,
    Lt,
    Lte,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    pub field: String,
    pub op: FilterOp,
    pub value: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Builder {
    pub usage_event: String,
    pub aggregation: Aggregation,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<Filter>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_by: Vec<String>,
}

/// A column of the event type, as a quoted identifier. Names are checked against the
/// definition, so nothing but a known column name is ever written into the SQL.
fn column(def: &EventTypeDef, name: &str) -> Result<String, MetricError> {
    let name = name.strip_prefix("data.").unwrap_or(name);
    let known =
        name == "customer_id" || name == "timestamp" || def.dataschema.data.contains_key(name);
    if !known {
        return Err(MetricError::Invalid(format!(
            "{name:?} is not a field of usage event {:?}",
            def.api_slug
        )));
    }
    Ok(format!("\"{name}\""))
}

/// `sum`, `avg` and `time_weighted_sum` add values up: only numbers can be.
pub(crate) fn check_numeric(
    def: &EventTypeDef,
    aggregation: Aggregation,
    name: &str,
) -> Result<(), MetricError> {
    use meterbase_schema::BaseType as B;
    let name = name.strip_prefix("data.").unwrap_or(name);
    let fields = def
        .fields()
        .map_err(|e| MetricError::Invalid(e.to_string()))?;
    let (type_text, numeric) = match name {
        "customer_id" => ("String".to_string(), false),
        "timestamp" => ("DateTime64".to_string(), false),
        _ => match fields.iter().find(|(f, _)| f == name) {
            Some((_, t)) => (
                t.to_string(),
                matches!(
                    t.base,
                    B::Int8
                        | B::Int16
                        | B::Int32
                        | B::Int64
                        | B::UInt8
                        | B::UInt16
                        | B::UInt32
                        | B::UInt64
                        | B::Float32
                        | B::Float64
                        | B::Decimal { .. }
                ),
            ),
            // Unknown names are reported by `column`.
            None => return Ok(()),
        },
    };
    if numeric {
        return Ok(());
    }
    let aggregation = serde_json::to_value(aggregation)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    Err(MetricError::Invalid(format!(
        "{aggregation} needs a numeric field; {name} is {type_text}"
    )))
}

/// A filter constant from the metric definition as a SQL literal.
fn literal(v: &Value) -> Result<String, MetricError> {
    match v {
        Value::String(s) => Ok(format!("'{}'", s.replace('\'', "''"))),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(if *b { "TRUE" } else { "FALSE" }.into()),
        other => Err(MetricError::Invalid(format!(
            "filter value {other} must be a string, number or boolean"
        ))),
    }
}

fn condition(def: &EventTypeDef, f: &Filter) -> Result<String, MetricError> {
    let col = column(def, &f.field)?;
    let op = match f.op {
        FilterOp::In | FilterOp::NotIn => {
            let items = f
                .value
                .as_array()
                .filter(|a| !a.is_empty())
                .ok_or_else(|| {
                    MetricError::Invalid(format!(
                        "filter {:?} {:?} needs a non-empty array",
                        f.field, f.op
                    ))
                })?;
            let list = items
                .iter()
                .map(literal)
                .collect::<Result<Vec<_>, _>>()?
                .join(", ");
            let not = if f.op == FilterOp::NotIn { "NOT " } else { "" };
            return Ok(format!("{col} {not}IN ({list})"));
        }
        FilterOp::Eq => "=",
        FilterOp::Ne => "<>",
        FilterOp::Gt => ">",
        FilterOp::Gte => ">=",
        FilterOp::Lt => "<",
        FilterOp::Lte => "<=",
    };
    Ok(format!("{col} {op} {}", literal(&f.value)?))
}

/// The builder's filters as one SQL condition over the event type's columns (`None` when it
/// has none): what explaining a value reports as "filtered".
pub fn filter_condition(b: &Builder, def: &EventTypeDef) -> Result<Option<String>, MetricError> {
    let conditions = b
        .filters
        .iter()
        .map(|f| condition(def, f))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((!conditions.is_empty()).then(|| conditions.join(" AND ")))
}

/// A field of the event type as a quoted identifier, checked against the definition.
pub fn field_column(def: &EventTypeDef, name: &str) -> Result<String, MetricError> {
    column(def, name)
}

/// The SQL a builder metric runs, with `{{start_date}}`/`{{end_date}}` placeholders.
pub fn compile(b: &Builder, def: &EventTypeDef) -> Result<String, MetricError> {
    compile_as(b, def, false)
}

/// `compile` for every window of a request in one query: each row also says its window
/// (`window_start`), computed by the functions `window_functions` binds to the windows, so the
/// answer costs one scan whatever the number of windows. Every window's value is what
/// `compile`'s SQL gives for that window alone.
pub fn compile_windowed(b: &Builder, def: &EventTypeDef) -> Result<String, MetricError> {
    compile_as(b, def, true)
}

fn compile_as(b: &Builder, def: &EventTypeDef, windowed: bool) -> Result<String, MetricError> {
    let table = format!("\"{}\"", def.api_slug);
    let field = match (&b.field, b.aggregation) {
        (None, Aggregation::Count) => None,
        (Some(f), a @ (Aggregation::Sum | Aggregation::Avg | Aggregation::TimeWeightedSum)) => {
            let col = column(def, f)?;
            check_numeric(def, a, f)?;
            Some(col)
        }
        (Some(f), _) => Some(column(def, f)?),
        (None, other) => {
            return Err(MetricError::Invalid(format!(
                "aggregation {other:?} needs a field"
            )));
        }
    };
    let dims = b
        .group_by
        .iter()
        .map(|d| column(def, d))
        .collect::<Result<Vec<_>, _>>()?;
    let keys: String = std::iter::once("customer_id".to_string())
        .chain(dims.iter().cloned())
        .collect::<Vec<_>>()
        .join(", ");
    let mut filters = b
        .filters
        .iter()
        .map(|f| condition(def, f))
        .collect::<Result<Vec<_>, _>>()?;
    let extra = if filters.is_empty() {
        String::new()
    } else {
        format!(" AND {}", filters.join(" AND "))
    };
    let f = field.clone().unwrap_or_default();
    let agg = match b.aggregation {
        Aggregation::Count => "count(*)".to_string(),
        Aggregation::Sum => format!("sum({f})"),
        Aggregation::Min => format!("min({f})"),
        Aggregation::Max => format!("max({f})"),
        Aggregation::Avg => format!("avg({f})"),
        Aggregation::UniqueCount => format!("count(DISTINCT {f})"),
        Aggregation::Latest => format!("last_value({f} ORDER BY timestamp, _ingested_at)"),
        Aggregation::Earliest => format!("first_value({f} ORDER BY timestamp, _ingested_at)"),
        Aggregation::TimeWeightedSum if windowed => {
            filters.clear();
            return Ok(time_weighted_windowed(&table, &f, &keys, &extra));
        }
        Aggregation::TimeWeightedSum => {
            filters.clear();
            return Ok(time_weighted(&table, &f, &keys, &extra));
        }
    };
    if windowed {
        return Ok(format!(
            "SELECT {keys}, {WINDOW_START}(timestamp) AS window_start, {agg} AS value FROM {table} WHERE timestamp >= {{{{start_date}}}} AND timestamp < {{{{end_date}}}}{extra} GROUP BY {keys}, {WINDOW_START}(timestamp)"
        ));
    }
    Ok(format!(
        "SELECT {keys}, {agg} AS value FROM {table} WHERE timestamp >= {{{{start_date}}}} AND timestamp < {{{{end_date}}}}{extra} GROUP BY {keys}"
    ))
}

/// `time_weighted` for every window at once: each value is held from its event until the
/// next event of the same customer and dimensions (or the period end), and that interval
/// earns in each window it overlaps for the overlap. Per window this is `time_weighted`'s
/// answer: the value before a window's start carries into it until its first event.
fn time_weighted_windowed(table: &str, field: &str, keys: &str, extra: &str) -> String {
    format!(
        "WITH held AS (\
 SELECT {keys}, {field} AS v, timestamp AS t, \
 coalesce(lead(timestamp) OVER (PARTITION BY {keys} ORDER BY timestamp, _ingested_at), {{{{end_date}}}}) AS t_next \
 FROM {table} WHERE timestamp < {{{{end_date}}}}{extra}), \
 spans AS (\
 SELECT {keys}, v, unnest({WINDOW_SPANS}(t, t_next)) AS span FROM held WHERE v IS NOT NULL) \
 SELECT {keys}, span['window_start'] AS window_start, \
 meterbase_time_weighted_hours(CAST(v AS DOUBLE), CAST(span['micros'] AS BIGINT)) AS value \
 FROM spans GROUP BY {keys}, span['window_start']"
    )
}

/// Each value counts for the hours until the next event of the same customer and dimensions,
/// or the period end; the last value before the period start carries into it. That value is
/// an aggregate per group, not a window: numbering all of history before the period to keep
/// each group's last row sorted every earlier event (34M rows for a month of a 100M-event
/// table, past the 4 GiB query cap).
fn time_weighted(table: &str, field: &str, keys: &str, extra: &str) -> String {
    format!(
        "WITH points AS (\
 SELECT {keys}, timestamp AS t, 1 AS src, _ingested_at AS i, {field} AS v FROM {table} WHERE timestamp >= {{{{start_date}}}} AND timestamp < {{{{end_date}}}}{extra} \
 UNION ALL \
 SELECT {keys}, {{{{start_date}}}} AS t, 0 AS src, {{{{start_date}}}} AS i, v FROM (\
 SELECT {keys}, last_value({field} ORDER BY timestamp, _ingested_at) AS v \
 FROM {table} WHERE timestamp < {{{{start_date}}}}{extra} GROUP BY {keys}) AS before_start), \
 spans AS (\
 SELECT {keys}, v, t, coalesce(lead(t) OVER (PARTITION BY {keys} ORDER BY t, src, i), {{{{end_date}}}}) AS t_next FROM points) \
 SELECT {keys}, meterbase_time_weighted_hours(CAST(v AS DOUBLE), CAST(t_next AS BIGINT) - CAST(t AS BIGINT)) AS value \
 FROM spans WHERE v IS NOT NULL GROUP BY {keys}"
    )
}
