//! A builder metric as partial aggregates: its aggregation split into states per (customer,
//! dimensions, bucket) that merge into the same value, bit for bit, as the compiled SQL over
//! the rows, for buckets of a UTC hour, day or month. Which aggregations split, and how:
//!
//! | aggregation | state per bucket | merge (states of many files combine into one state the
//! same way) |
//! |---|---|---|
//! | `count` | `count(*)` | `sum` |
//! | `sum` of an integer | `sum` (exact, Int64/UInt64) | `sum` |
//! | `sum` of a decimal | `sum` (Decimal(p+10, s)) | `sum`, cast back to Decimal(p+10, s) |
//! | `sum` of a float | the exact sum's state and the count | `meterbase_exact_merge` |
//! | `avg` of a float | the exact sum's state and the count | `meterbase_exact_mean_merge` |
//! | `min`, `max` | `min`, `max` | `min`, `max` |
//!
//! `time_weighted_sum` splits too, for one period (not by window): each bucket of each file
//! keeps its first and last event (time and value) and the exact Σ value × micros of the
//! values held within it; the merge orders a group's rows by time and adds, exactly, each
//! row's last value held until the next row's first event (or the period end), the value
//! held into the period from the last row before it, and the rows' own sums. That is the
//! same set of products the compiled SQL adds over the events, so the same bits; it holds
//! only where no two rows of one group overlap in time (files of one customer's late events
//! may), which `Decomposed::overlaps_sql` checks before any merge: where they do, the answer
//! reads events.
//!
//! `unique_count` (a distinct count does not add up), `latest`, `earliest` (they depend on
//! rows beyond a bucket), `time_weighted_sum` by window, and `avg` of integers and decimals
//! (DataFusion's own rounding) are not split: they read raw rows.

use meterbase_query::Decomposed;
use meterbase_schema::{BaseType, EventTypeDef};

use crate::builder::{Aggregation, Builder, check_numeric, field_column, filter_condition};
use crate::window_functions::WINDOW_START;

/// How finely partials are kept: a period and its windows must fall on these edges (UTC).
/// The coarser, the fewer partial rows a period merges; each bucket keeps its own partials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Hour,
    Day,
    Month,
}

const HOUR_MICROS: i64 = 3_600_000_000;
const DAY_MICROS: i64 = 24 * HOUR_MICROS;

impl Bucket {
    /// The coarsest bucket every one of `edges` falls on, if any.
    pub fn fitting(edges: impl Iterator<Item = i64> + Clone) -> Option<Bucket> {
        let on = |unit: i64| edges.clone().all(|e| e.rem_euclid(unit) == 0);
        let month_start = |e: i64| {
            chrono::DateTime::from_timestamp_micros(e).is_some_and(|t| {
                use chrono::{Datelike, Timelike};
                t.day() == 1 && t.num_seconds_from_midnight() == 0 && t.nanosecond() == 0
            })
        };
        if edges.clone().all(month_start) {
            Some(Bucket::Month)
        } else if on(DAY_MICROS) {
            Some(Bucket::Day)
        } else if on(HOUR_MICROS) {
            Some(Bucket::Hour)
        } else {
            None
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Bucket::Hour => "hour",
            Bucket::Day => "day",
            Bucket::Month => "month",
        }
    }
}

/// For one aggregation of one field: the states a bucket keeps, how states combine into one
/// state (the partials of many files merged once and kept), and how they merge into the value.
struct Split {
    states: String,
    combine: String,
    merge: String,
}

fn split(states: &str, combine: &str, merge: &str) -> Split {
    Split {
        states: states.into(),
        combine: combine.into(),
        merge: merge.into(),
    }
}

/// The type of `b`'s field, if it names one of `def`.
fn field_base(b: &Builder, def: &EventTypeDef) -> Option<BaseType> {
    let name = b.field.as_deref()?;
    let name = name.strip_prefix("data.").unwrap_or(name);
    def.fields()
        .ok()?
        .into_iter()
        .find(|(f, _)| f == name)
        .map(|(_, t)| t.base)
}

fn integer(t: &BaseType) -> bool {
    use BaseType as B;
    matches!(
        t,
        B::Int8 | B::Int16 | B::Int32 | B::Int64 | B::UInt8 | B::UInt16 | B::UInt32 | B::UInt64
    )
}

fn float(t: &BaseType) -> bool {
    matches!(t, BaseType::Float32 | BaseType::Float64)
}

fn states_and_merge(b: &Builder, def: &EventTypeDef) -> Option<Split> {
    let base = || field_base(b, def);
    let col = || b.field.as_deref().and_then(|f| field_column(def, f).ok());
    use BaseType as B;
    let exact_state =
        |f: &str| format!("meterbase_exact_state(CAST({f} AS DOUBLE)) AS __s, count({f}) AS __n");
    let exact_combine = "meterbase_exact_combine(__s, __n) AS __s, sum(__n) AS __n";
    Some(match b.aggregation {
        Aggregation::Count => split("count(*) AS __n", "sum(__n) AS __n", "sum(__n)"),
        Aggregation::Sum => {
            let (f, t) = (col()?, base()?);
            match t {
                t if integer(&t) => {
                    split(&format!("sum({f}) AS __s"), "sum(__s) AS __s", "sum(__s)")
                }
                t if float(&t) => split(
                    &exact_state(&f),
                    exact_combine,
                    "meterbase_exact_merge(__s, __n)",
                ),
                B::Decimal { precision, scale } if precision <= 38 => {
                    // The partial sum's own type, kept through combining and merging.
                    let typed = format!(
                        "CAST(sum(__s) AS DECIMAL({}, {scale}))",
                        (precision + 10).min(38)
                    );
                    split(
                        &format!("sum({f}) AS __s"),
                        &format!("{typed} AS __s"),
                        &typed,
                    )
                }
                _ => return None,
            }
        }
        Aggregation::Avg if base().is_some_and(|t| float(&t)) => split(
            &exact_state(&col()?),
            exact_combine,
            "meterbase_exact_mean_merge(__s, __n)",
        ),
        Aggregation::Min => split(
            &format!("min({}) AS __s", col()?),
            "min(__s) AS __s",
            "min(__s)",
        ),
        Aggregation::Max => split(
            &format!("max({}) AS __s", col()?),
            "max(__s) AS __s",
            "max(__s)",
        ),
        _ => return None,
    })
}

/// `b` split into partial states per `bucket` and their merge, or `None` when its
/// aggregation does not split (see the module comment). The statements still carry
/// `{{start_date}}`/`{{end_date}}` placeholders; `rest_sql` is `partial_sql` for the caller
/// to narrow.
pub fn decompose(
    b: &Builder,
    def: &EventTypeDef,
    bucket: Bucket,
    windowed: bool,
) -> Option<Decomposed> {
    if b.aggregation == Aggregation::TimeWeightedSum {
        return (!windowed).then(|| time_weighted(b, def, bucket)).flatten();
    }
    let Split {
        states,
        combine,
        merge,
    } = states_and_merge(b, def)?;
    let (keys, extra, table) = keys_filter_table(b, def)?;
    let bucket_of = format!("date_trunc('{}', timestamp)", bucket.unit());
    let partial_sql = format!(
        "SELECT {keys}, {bucket_of} AS __bucket, {states} FROM {table} \
         WHERE timestamp >= {{{{start_date}}}} AND timestamp < {{{{end_date}}}}{extra} \
         GROUP BY {keys}, {bucket_of}"
    );
    let partials = meterbase_query::PARTIALS_TABLE;
    let period = "__bucket >= {{start_date}} AND __bucket < {{end_date}}";
    let combine_sql =
        format!("SELECT {keys}, __bucket, {combine} FROM {partials} GROUP BY {keys}, __bucket");
    let final_sql = if windowed {
        format!(
            "SELECT {keys}, {WINDOW_START}(__bucket) AS window_start, {merge} AS value \
             FROM {partials} WHERE {period} GROUP BY {keys}, {WINDOW_START}(__bucket)"
        )
    } else {
        format!("SELECT {keys}, {merge} AS value FROM {partials} WHERE {period} GROUP BY {keys}")
    };
    Some(Decomposed {
        slug: def.api_slug.clone(),
        rest_sql: partial_sql.clone(),
        partial_sql,
        combine_sql,
        final_sql,
        overlaps_sql: None,
    })
}

/// The group keys, the filters' condition and the table of `b`, as its statements use them.
fn keys_filter_table(b: &Builder, def: &EventTypeDef) -> Option<(String, String, String)> {
    let dims = b
        .group_by
        .iter()
        .map(|d| field_column(def, d))
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    let keys = std::iter::once("customer_id".to_string())
        .chain(dims)
        .collect::<Vec<_>>()
        .join(", ");
    let extra = match filter_condition(b, def).ok()? {
        Some(c) => format!(" AND {c}"),
        None => String::new(),
    };
    Some((keys, extra, format!("\"{}\"", def.api_slug)))
}

/// `time_weighted_sum` for one period as partials (see the module comment). A partial row:
/// the keys, `__bucket`, `__first_t`/`__first_v` and `__last_t`/`__last_v` (its first and last
/// event by time, then arrival), `__s` (the exact Σ value × micros of each value held until
/// the next event of the row) and `__n` (how many products `__s` holds). The raw rest reads
/// the events before the period as well: the value held into it may be in any of them.
fn time_weighted(b: &Builder, def: &EventTypeDef, bucket: Bucket) -> Option<Decomposed> {
    let f = b.field.as_deref().and_then(|f| field_column(def, f).ok())?;
    check_numeric(def, b.aggregation, b.field.as_deref()?).ok()?;
    let (keys, extra, table) = keys_filter_table(b, def)?;
    let bucket_of = format!("date_trunc('{}', timestamp)", bucket.unit());
    let states = |bounds: &str| {
        format!(
            "WITH r AS (SELECT {keys}, {bucket_of} AS __bucket, timestamp AS __t, \
             _ingested_at AS __i, CAST({f} AS DOUBLE) AS __v FROM {table} WHERE {bounds}{extra}), \
             s AS (SELECT {keys}, __bucket, __t, __i, __v, \
             lead(__t) OVER (PARTITION BY {keys}, __bucket ORDER BY __t, __i) AS __next FROM r) \
             SELECT {keys}, __bucket, min(__t) AS __first_t, \
             first_value(__v ORDER BY __t, __i) AS __first_v, max(__t) AS __last_t, \
             last_value(__v ORDER BY __t, __i) AS __last_v, \
             meterbase_exact_weighted_state(__v, CAST(__next AS BIGINT) - CAST(__t AS BIGINT)) AS __s, \
             count(CASE WHEN __v IS NOT NULL THEN __next END) AS __n \
             FROM s GROUP BY {keys}, __bucket"
        )
    };
    let partial_sql = states("timestamp >= {{start_date}} AND timestamp < {{end_date}}");
    let rest_sql = states("timestamp < {{end_date}}");
    let partials = meterbase_query::PARTIALS_TABLE;
    // The product of a row's last value held until the next row's first event.
    let held = |until: &str, from: &str| {
        format!(
            "meterbase_exact_term(__last_v, CAST({until} AS BIGINT) - CAST({from} AS BIGINT)) AS __s, \
             CASE WHEN __last_v IS NULL THEN 0 ELSE 1 END AS __n"
        )
    };
    let ordered = |within: &str, bounds: &str| {
        format!(
            "SELECT {keys}, __bucket, __first_t, __first_v, __last_t, __last_v, __s, __n, \
             lead(__first_t) OVER (PARTITION BY {within} ORDER BY __first_t, __last_t) AS __next_t \
             FROM {partials}{bounds}"
        )
    };
    // Rows of one bucket (compacted files) into one: the value held from each row into the
    // next is a product of the combined row's sum; duplicated rows leave the ends alone.
    let combine_sql = format!(
        "WITH o AS ({}), t AS (\
         SELECT {keys}, __bucket, __first_t, __first_v, __last_t, __last_v, __s, __n FROM o \
         UNION ALL SELECT {keys}, __bucket, __first_t, __first_v, __last_t, __last_v, {} \
         FROM o WHERE __next_t IS NOT NULL) \
         SELECT {keys}, __bucket, min(__first_t) AS __first_t, \
         first_value(__first_v ORDER BY __first_t) AS __first_v, max(__last_t) AS __last_t, \
         last_value(__last_v ORDER BY __last_t) AS __last_v, \
         meterbase_exact_combine(__s, __n) AS __s, sum(__n) AS __n \
         FROM t GROUP BY {keys}, __bucket",
        ordered(&format!("{keys}, __bucket"), ""),
        held("__next_t", "__last_t"),
    );
    // The period's own rows, and each row's last value held until the next row (or the
    // period end), from the period start at the earliest: the last row before the period
    // holds its value into it.
    let final_sql = format!(
        "WITH o AS ({}), t AS (\
         SELECT {keys}, __s, __n FROM o WHERE __bucket >= {{{{start_date}}}} \
         UNION ALL SELECT {keys}, {} FROM o \
         WHERE coalesce(__next_t, {{{{end_date}}}}) >= {{{{start_date}}}}) \
         SELECT {keys}, meterbase_exact_hours_merge(__s, __n) AS value FROM t \
         GROUP BY {keys} HAVING sum(__n) > 0",
        ordered(&keys, " WHERE __bucket < {{end_date}}"),
        held(
            "coalesce(__next_t, {{end_date}})",
            "greatest(__last_t, {{start_date}})"
        ),
    );
    let overlaps_sql = format!(
        "SELECT count(*) AS overlapping FROM (SELECT __first_t, \
         lag(__last_t) OVER (PARTITION BY {keys} ORDER BY __first_t, __last_t) AS __previous \
         FROM {partials}) AS o WHERE __previous >= __first_t"
    );
    Some(Decomposed {
        slug: def.api_slug.clone(),
        partial_sql,
        rest_sql,
        combine_sql,
        final_sql,
        overlaps_sql: Some(overlaps_sql),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_coarsest_bucket_on_every_edge() {
        assert_eq!(
            Bucket::fitting([0, DAY_MICROS * 31].into_iter()),
            Some(Bucket::Month)
        );
        assert_eq!(
            Bucket::fitting([0, DAY_MICROS * 30].into_iter()),
            Some(Bucket::Day)
        );
        assert_eq!(
            Bucket::fitting([0, DAY_MICROS - HOUR_MICROS].into_iter()),
            Some(Bucket::Hour)
        );
        assert_eq!(Bucket::fitting([0, HOUR_MICROS / 2].into_iter()), None);
        assert_eq!(
            Bucket::fitting([-DAY_MICROS, 0].into_iter()),
            Some(Bucket::Day)
        );
    }

    fn def() -> EventTypeDef {
        serde_json::from_value(serde_json::json!({
            "id": "t", "name": "T", "api_slug": "t",
            "dataschema": {"data": {"n": "Int32", "f": "Float32", "d": "Decimal(12,2)", "s": "String"}},
            "column_order": ["timestamp"], "unique_key": ["customer_id", "timestamp"],
            "created_at": "2025-01-01T00:00:00Z", "schema_version": 1
        }))
        .unwrap()
    }

    fn builder(aggregation: &str, field: Option<&str>) -> Builder {
        let mut v = serde_json::json!({"usage_event": "t", "aggregation": aggregation});
        if let Some(f) = field {
            v["field"] = serde_json::json!(f);
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn which_aggregations_split() {
        let d = def();
        let splits = |a: &str, f: Option<&str>| decompose(&builder(a, f), &d, Bucket::Day, false);
        for (a, f) in [
            ("count", None),
            ("sum", Some("n")),
            ("sum", Some("f")),
            ("sum", Some("d")),
            ("avg", Some("f")),
            ("min", Some("s")),
            ("max", Some("d")),
            ("time_weighted_sum", Some("n")),
            ("time_weighted_sum", Some("d")),
        ] {
            let d = splits(a, f).unwrap_or_else(|| panic!("{a} {f:?}"));
            // Only a value held from one row into the next asks that rows do not overlap.
            assert_eq!(d.overlaps_sql.is_some(), a == "time_weighted_sum");
        }
        for (a, f) in [
            ("unique_count", Some("n")),
            ("latest", Some("n")),
            ("earliest", Some("n")),
            ("time_weighted_sum", Some("s")),
            ("avg", Some("n")),
            ("avg", Some("d")),
        ] {
            assert!(splits(a, f).is_none(), "{a} {f:?}");
        }
        // By window, a held value would have to be cut at each window's edge: events.
        assert!(
            decompose(
                &builder("time_weighted_sum", Some("n")),
                &d,
                Bucket::Day,
                true
            )
            .is_none()
        );
        let held = splits("time_weighted_sum", Some("n")).unwrap();
        assert!(
            held.rest_sql.contains("WHERE timestamp < {{end_date}}")
                && !held.rest_sql.contains("timestamp >= {{start_date}}"),
            "the raw rest reads the events before the period: {}",
            held.rest_sql
        );
        let decimal = splits("sum", Some("d")).unwrap();
        assert!(
            decimal
                .final_sql
                .contains("CAST(sum(__s) AS DECIMAL(22, 2))"),
            "{}",
            decimal.final_sql
        );
    }
}
