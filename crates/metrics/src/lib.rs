//! meterbase-metrics owns billable metrics: the SQL and builder definitions, compiling a
//! builder to SQL, binding `{{placeholders}}` as typed parameters (never as text), checking a
//! metric against the current schemas, and evaluating it over a period split into calendar
//! windows of an IANA time zone.
//!
//! It must not store anything (the catalog keeps definitions) nor speak HTTP.
//!
//! Module map: `error`, `windows` (calendar windows of an IANA zone), `window_functions`
//! (SQL functions bound to a request's windows), `builder` (builder form → SQL, also every
//! window in one query), `sql_windows` (a SQL metric's statement answering every window in one
//! query, where its shape allows), `partial_form` (a builder metric as partial states per
//! bucket and their merge, answered from per-file partial aggregates), `fields` (which member of a builder definition is wrong, as a JSON
//! pointer), `decimal` (exact subtraction of decimal texts), `compare` (a preview's two
//! answers matched row by row, with their difference), `explain` (one customer's events
//! classified as included, with contributions, or left out and why), this file (definitions,
//! placeholders, //! `create`, `evaluate` and `preview`), `fuzzing`.
//!
//! Versions of a definition are the catalog's (it stores them and says which one was in force
//! when); here a definition is just the one being created, evaluated or previewed.

mod builder;
pub mod compare;
mod decimal;
mod error;
mod explain;
mod fields;
pub mod fuzzing;
mod partial_form;
mod sql_windows;
mod window_functions;
mod windows;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use datafusion::common::ScalarValue;
use meterbase_query::{
    Caller, Decomposed, QueryEngine, QueryError, QueryKind, QueryOutput, Served,
};
use meterbase_schema::EventTypeDef;
use meterbase_storage::TableSnapshot;
use serde::{Deserialize, Serialize};

pub use builder::{Aggregation, Builder, Filter, FilterOp, compile, compile_windowed};
pub use compare::Compared;
pub use decimal::subtract as subtract_decimals;
pub use error::MetricError;
pub use explain::{
    ExplainRequest, ExplainTarget, Explanation, MAX_EXPLAIN_LIMIT, REASONS, Show, explain,
};
pub use partial_form::{Bucket, decompose};
pub use window_functions::window_functions;
pub use windows::{MAX_WINDOWS, Window, parse_instant, windows};

/// Which events a metric's value covers.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// The events of the period asked for: the SQL filters on `{{start_date}}`/`{{end_date}}`.
    #[default]
    Bounded,
    /// Every event, whatever period is asked for; the user said so explicitly, because a SQL
    /// metric that forgets the period would otherwise bill all-time totals without a word.
    AllTime,
}

/// `POST /billable_metrics` body: either `sql`, or the builder fields.
#[derive(Debug, Clone, Deserialize)]
pub struct MetricSpec {
    pub name: String,
    #[serde(default)]
    pub slug: Option<String>,
    #[serde(default)]
    pub sql: Option<String>,
    #[serde(default)]
    pub period: Option<Period>,
    #[serde(flatten)]
    pub builder: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A stored metric. `sql` is what runs: the user's SQL, or what the builder compiled to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Metric {
    pub slug: String,
    pub name: String,
    pub sql: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub builder: Option<Builder>,
    pub reads: Vec<String>,
    #[serde(default)]
    pub period: Period,
    pub created_at: DateTime<Utc>,
}

pub const START: &str = "start_date";
pub const END: &str = "end_date";
pub const CUSTOMER: &str = "customer_id";

/// A metric's SQL with its placeholders turned into parameters, and which ones it uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundSql {
    pub sql: String,
    pub uses_customer: bool,
    /// Whether it refers to `{{start_date}}` or `{{end_date}}`.
    pub uses_period: bool,
}

/// Replaces `{{start_date}}`, `{{end_date}}`, `{{customer_id}}` (alias
/// `{{customer.external_id}}`) by parameter references `$start_date` …; the values are bound
/// as typed parameters at evaluation, so a customer id is only ever a string value. A
/// placeholder written as a quoted literal (`'{{start_date}}'`, the common Zenskar template
/// style) is the same parameter: the quotes go, nothing is ever pasted into the text.
pub fn bind_placeholders(sql: &str) -> Result<BoundSql, MetricError> {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    let mut uses_customer = false;
    let mut uses_period = false;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or_else(|| MetricError::Invalid("unclosed {{ placeholder".into()))?;
        let name = after[..close].trim();
        let param = match name {
            "start_date" => START,
            "end_date" => END,
            "customer_id" | "customer.external_id" => {
                uses_customer = true;
                CUSTOMER
            }
            other => {
                return Err(MetricError::Invalid(format!(
                    "unknown placeholder {{{{{other}}}}}: use {{{{start_date}}}}, {{{{end_date}}}} or {{{{customer_id}}}}"
                )));
            }
        };
        uses_period |= param != CUSTOMER;
        rest = &after[close + 2..];
        if out.ends_with('\'') && rest.starts_with('\'') {
            out.pop();
            rest = &rest[1..];
        }
        out.push('$');
        out.push_str(param);
    }
    out.push_str(rest);
    let sql = out.trim_end().trim_end_matches(';').trim_end().to_string();
    Ok(BoundSql {
        sql,
        uses_customer,
        uses_period,
    })
}

fn ts(us: i64) -> ScalarValue {
    ScalarValue::TimestampMicrosecond(Some(us), Some("UTC".into()))
}

fn params(start: i64, end: i64, customer: Option<&str>) -> HashMap<String, ScalarValue> {
    let mut p = HashMap::from([(START.to_string(), ts(start)), (END.to_string(), ts(end))]);
    p.insert(
        CUSTOMER.to_string(),
        ScalarValue::Utf8(customer.map(str::to_string)),
    );
    p
}

/// Validates a creation request against the current schemas and returns the metric to store.
pub async fn create(
    engine: &QueryEngine,
    org: &str,
    tables: Vec<TableSnapshot>,
    event_types: &[EventTypeDef],
    spec: MetricSpec,
) -> Result<Metric, MetricError> {
    let name = spec.name.trim().to_string();
    if name.is_empty() {
        return Err(MetricError::Invalid("name must not be empty".into()).at("/name"));
    }
    let slug = match &spec.slug {
        Some(s) => meterbase_schema::validate_slug(s)
            .map_err(|e| MetricError::Invalid(e.to_string()).at("/slug"))?,
        None => meterbase_schema::validate_slug(&meterbase_schema::derive_slug(&name)).map_err(
            |_| {
                MetricError::Invalid(format!(
                    "cannot derive a slug from name {name:?}; give slug"
                ))
                .at("/name")
            },
        )?,
    };
    let builder_fields = spec.builder.filter(|m| !m.is_empty());
    let period = spec.period.unwrap_or_default();
    if period == Period::AllTime && builder_fields.is_some() {
        return Err(MetricError::Invalid(
            "\"period\": \"all_time\" is for SQL metrics; builder metrics always count the period asked for".into(),
        ).at("/period"));
    }
    let sql_given = spec.sql.is_some();
    // Where a refusal of the SQL points: the user's SQL, or the whole builder definition
    // whose compiled SQL it is.
    let sql_pointer = if sql_given { "/sql" } else { "" };
    let (sql, builder) = match (spec.sql, builder_fields) {
        (Some(sql), None) => (sql, None),
        (None, Some(fields)) => {
            let b: Builder = fields::parse_builder(fields)?;
            let def = event_types
                .iter()
                .find(|d| d.api_slug == b.usage_event)
                .ok_or_else(|| {
                    MetricError::Invalid(format!("usage_event {:?} does not exist", b.usage_event))
                        .at("/usage_event")
                })?;
            (fields::compile_located(&b, def)?, Some(b))
        }
        (Some(_), Some(_)) => {
            return Err(MetricError::Invalid(
                "give either sql or the builder fields (usage_event, aggregation, …), not both"
                    .into(),
            )
            .at("/sql"));
        }
        (None, None) => {
            return Err(MetricError::Invalid(
                "a metric needs sql, or usage_event and aggregation".into(),
            )
            .at("/sql"));
        }
    };
    let bound = bind_placeholders(&sql).map_err(|e| e.at(sql_pointer))?;
    match (bound.uses_period, period) {
        (false, Period::Bounded) => {
            return Err(MetricError::Invalid(
                "the metric's SQL uses neither {{start_date}} nor {{end_date}}, so every usage answer would be the all-time total whatever period is asked for (and with a window, all of it in the first window). Filter on the period, e.g. WHERE timestamp >= {{start_date}} AND timestamp < {{end_date}}; or, if an all-time total is really what you bill, create it with \"period\": \"all_time\"".into(),
            ).at(sql_pointer));
        }
        (true, Period::AllTime) => {
            return Err(MetricError::Invalid(
                "\"period\": \"all_time\" is for SQL that ignores the period, but this SQL uses {{start_date}} or {{end_date}}; leave period out".into(),
            ).at("/period"));
        }
        _ => {}
    }
    // Planned all the way to an executable plan with real parameter values, the way usage
    // runs it: a metric that passes here does not fail later in the optimizer.
    let now = Utc::now().timestamp_micros();
    let (schema, reads) = engine
        .describe(
            Caller {
                org,
                kind: QueryKind::MetricCheck,
            },
            tables,
            &bound.sql,
            params(now - 3_600_000_000, now, Some("customer")),
        )
        .await
        .map_err(|e| match e {
            QueryError::Invalid(d) | QueryError::Data(d) | QueryError::Execution(d) => {
                MetricError::Invalid(format!("the metric's SQL does not plan: {d}")).at(sql_pointer)
            }
            other => MetricError::Query(other),
        })?;
    for required in ["customer_id", "value"] {
        if schema.index_of(required).is_err() {
            return Err(MetricError::Invalid(format!(
                "the metric's query must return a column named {required:?} (it returns {:?})",
                schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
            ))
            .at(sql_pointer));
        }
    }
    Ok(Metric {
        slug,
        name,
        sql,
        builder,
        reads,
        period,
        created_at: Utc::now(),
    })
}

/// One evaluation per window; `None` window start when no window was asked for, or when one
/// query answered every window (its rows then carry a `window_start` column).
pub struct Evaluation {
    pub window_start: Option<i64>,
    pub output: QueryOutput,
    /// Set when the answer came from per-file partial aggregates (and the raw rest).
    pub served: Option<Served>,
}

pub struct UsageRequest<'a> {
    pub start: i64,
    pub end: i64,
    pub customer_id: Option<&'a str>,
    pub window: Option<Window>,
    pub tz: chrono_tz::Tz,
    pub as_of: Option<i64>,
}

/// `sql`'s rows of one customer when one is asked for.
fn for_customer(sql: String, customer: Option<&str>) -> String {
    match customer {
        Some(_) => {
            format!("SELECT * FROM ({sql}) AS metric WHERE metric.customer_id = ${CUSTOMER}")
        }
        None => sql,
    }
}

/// Every window of `req` in one query of `windowed` (SQL that groups by
/// `meterbase_window_start`).
async fn in_one_query(
    engine: &QueryEngine,
    org: &str,
    tables: Vec<TableSnapshot>,
    windowed: String,
    req: &UsageRequest<'_>,
    periods: &[(i64, i64)],
) -> Result<QueryOutput, QueryError> {
    engine
        .execute_with(
            Caller {
                org,
                kind: QueryKind::MetricUsage,
            },
            tables,
            for_customer(windowed, req.customer_id),
            params(req.start, req.end, req.customer_id),
            req.as_of,
            window_functions(periods),
        )
        .await
}

/// A builder metric's answer from per-file partial aggregates and the raw rest, where its
/// aggregation splits (`partial_form`), the period and windows fall on hour edges, it reads
/// the current data (no `as_of`) and partials are kept at all; `None` otherwise.
async fn from_partials(
    engine: &QueryEngine,
    org: &str,
    tables: &[TableSnapshot],
    metric: &Metric,
    req: &UsageRequest<'_>,
    periods: &[(i64, i64)],
) -> Result<Option<Evaluation>, MetricError> {
    let (Some(builder), None) = (&metric.builder, req.as_of) else {
        return Ok(None);
    };
    let Some(bucket) = Bucket::fitting(periods.iter().flat_map(|&(s, e)| [s, e])) else {
        return Ok(None);
    };
    let Some(def) = tables
        .iter()
        .find(|t| t.def.api_slug == builder.usage_event)
        .map(|t| t.def.clone())
    else {
        return Ok(None);
    };
    let several = periods.len() > 1;
    let Some(d) = decompose(builder, &def, bucket, several) else {
        return Ok(None);
    };
    if engine.config().partials_bytes == 0 {
        return Ok(None);
    }
    let bound = |sql: &str| bind_placeholders(sql).map(|b| b.sql);
    let d = Decomposed {
        partial_sql: bound(&d.partial_sql)?,
        combine_sql: d.combine_sql,
        rest_sql: for_customer(bound(&d.rest_sql)?, req.customer_id),
        final_sql: for_customer(bound(&d.final_sql)?, req.customer_id),
        overlaps_sql: d.overlaps_sql,
        slug: d.slug,
    };
    let functions = if several {
        window_functions(periods)
    } else {
        Vec::new()
    };
    let Some((output, served)) = engine
        .execute_decomposed(
            Caller {
                org,
                kind: QueryKind::MetricUsage,
            },
            tables.to_vec(),
            &d,
            params(req.start, req.end, req.customer_id),
            (req.start, req.end),
            functions,
        )
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(Evaluation {
        window_start: match (several, req.window) {
            (false, Some(_)) => periods.first().map(|p| p.0),
            _ => None,
        },
        output,
        served: Some(served),
    }))
}

pub async fn evaluate(
    engine: &QueryEngine,
    org: &str,
    tables: Vec<TableSnapshot>,
    metric: &Metric,
    req: &UsageRequest<'_>,
) -> Result<Vec<Evaluation>, MetricError> {
    if req.start >= req.end {
        return Err(MetricError::Invalid(
            "start_date must be before end_date".into(),
        ));
    }
    if metric.period == Period::AllTime && req.window.is_some() {
        return Err(MetricError::Invalid(format!(
            "metric {:?} counts all events whatever the period (\"period\": \"all_time\"), so windows do not apply",
            metric.slug
        )));
    }
    let BoundSql {
        sql: bound,
        uses_customer,
        ..
    } = bind_placeholders(&metric.sql)?;
    if uses_customer && req.customer_id.is_none() {
        return Err(MetricError::Invalid(
            "this metric's SQL uses {{customer_id}}: give customer_id".into(),
        ));
    }
    let periods = match req.window {
        None => vec![(req.start, req.end)],
        Some(w) => windows(req.start, req.end, w, req.tz)?,
    };
    if periods.len() > MAX_WINDOWS {
        return Err(MetricError::Invalid(format!(
            "{} windows requested; at most {MAX_WINDOWS} per request",
            periods.len()
        )));
    }
    // A builder metric answers every window in one query: its windowed SQL says each row's
    // window. So does a SQL metric whose shape allows it (`sql_windows`); other SQL metrics
    // run once per window (their SQL binds one period).
    // One window is one query either way, and the plain statement skips the window lookup
    // per row (about 15% of a month's query).
    let several = periods.len() > 1;
    if let Some(answer) = from_partials(engine, org, &tables, metric, req, &periods).await? {
        return Ok(vec![answer]);
    }
    if let (None, true) = (&metric.builder, several)
        && let Some(windowed) = sql_windows::windowed(&bound)
    {
        match in_one_query(engine, org, tables.clone(), windowed, req, &periods).await {
            Ok(output) => {
                return Ok(vec![Evaluation {
                    window_start: None,
                    output,
                    served: None,
                }]);
            }
            // The planner refused what the parser's shape allowed (a bound column that is no
            // timestamp): one query per window, as before, which says what is wrong if
            // anything is.
            Err(QueryError::Invalid(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if let (Some(builder), true) = (&metric.builder, several) {
        let def = tables
            .iter()
            .find(|t| t.def.api_slug == builder.usage_event)
            .map(|t| t.def.clone())
            .ok_or_else(|| {
                MetricError::Invalid(format!(
                    "usage_event {:?} does not exist any more",
                    builder.usage_event
                ))
            })?;
        let windowed = bind_placeholders(&compile_windowed(builder, &def)?)?.sql;
        let output = in_one_query(engine, org, tables, windowed, req, &periods).await?;
        return Ok(vec![Evaluation {
            window_start: None,
            output,
            served: None,
        }]);
    }
    let sql = for_customer(bound, req.customer_id);
    let mut out = Vec::with_capacity(periods.len());
    for (ws, we) in periods {
        let output = engine
            .execute(
                Caller {
                    org,
                    kind: QueryKind::MetricUsage,
                },
                tables.clone(),
                sql.clone(),
                params(ws, we, req.customer_id),
                req.as_of,
            )
            .await?;
        out.push(Evaluation {
            window_start: req.window.map(|_| ws),
            output,
            served: None,
        });
    }
    Ok(out)
}

/// At most this many periods per preview: each costs two evaluations under the query caps.
pub const MAX_PREVIEW_PERIODS: usize = 100;

/// One period of a preview, with its rows.
pub struct PreviewPeriod {
    pub start: i64,
    pub end: i64,
    pub rows: Vec<Compared>,
}

/// Evaluates `current` and `candidate` over each period (whole, no windows) against the
/// same snapshot, so a difference is the definitions' and never data arriving in between,
/// and matches their rows. Stores nothing; each evaluation runs under the usage caps.
pub async fn preview(
    engine: &QueryEngine,
    org: &str,
    tables: Vec<TableSnapshot>,
    current: Option<&Metric>,
    candidate: &Metric,
    periods: &[(i64, i64)],
    customer_id: Option<&str>,
) -> Result<Vec<PreviewPeriod>, MetricError> {
    if periods.is_empty() {
        return Err(MetricError::Invalid("give at least one period".into()).at("/periods"));
    }
    if periods.len() > MAX_PREVIEW_PERIODS {
        return Err(MetricError::Invalid(format!(
            "{} periods; at most {MAX_PREVIEW_PERIODS} per preview",
            periods.len()
        ))
        .at("/periods"));
    }
    let mut out = Vec::with_capacity(periods.len());
    for (i, &(start, end)) in periods.iter().enumerate() {
        if start >= end {
            return Err(MetricError::Invalid(format!(
                "periods[{i}]: start_date must be before end_date"
            ))
            .at(&format!("/periods/{i}")));
        }
        let request = UsageRequest {
            start,
            end,
            customer_id,
            window: None,
            tz: chrono_tz::UTC,
            as_of: None,
        };
        let mut answers = Vec::with_capacity(2);
        // A metric not created yet has no current side: every row is the candidate's alone.
        for m in [current, Some(candidate)] {
            let outputs = match m {
                Some(m) => evaluate(engine, org, tables.clone(), m, &request)
                    .await?
                    .into_iter()
                    .map(|e| e.output)
                    .collect::<Vec<_>>(),
                None => Vec::new(),
            };
            answers.push(outputs);
        }
        out.push(PreviewPeriod {
            start,
            end,
            rows: compare::compare(&answers[0], &answers[1]),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_parameters() {
        let b = bind_placeholders(
            "SELECT 1 WHERE t >= {{start_date}} AND t < {{ end_date }} AND c = {{customer.external_id}};",
        )
        .unwrap();
        assert_eq!(
            b.sql,
            "SELECT 1 WHERE t >= $start_date AND t < $end_date AND c = $customer_id"
        );
        assert!(b.uses_customer && b.uses_period);
        assert!(bind_placeholders("{{nope}}").is_err());
        assert!(bind_placeholders("{{start_date").is_err());
        let b = bind_placeholders("SELECT {{start_date}}").unwrap();
        assert!(!b.uses_customer && b.uses_period);
        let b = bind_placeholders("SELECT 1 WHERE c = {{customer_id}}").unwrap();
        assert!(b.uses_customer && !b.uses_period);
    }

    #[test]
    fn quoted_placeholders_are_the_same_parameters() {
        let b = bind_placeholders(
            "WHERE timestamp >= '{{start_date}}' AND timestamp < '{{ end_date }}' AND c = '{{customer_id}}'",
        )
        .unwrap();
        assert_eq!(
            b.sql,
            "WHERE timestamp >= $start_date AND timestamp < $end_date AND c = $customer_id"
        );
    }
}
