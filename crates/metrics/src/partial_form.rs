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
//! `unique_count` (a distinct count does not add up), `latest`, `earliest`,
//! `time_weighted_sum` (they depend on rows beyond a bucket) and `avg` of integers and
//! decimals (DataFusion's own rounding) are not split: they read raw rows.

use meterbase_query::Decomposed;
use meterbase_schema::{BaseType, EventTypeDef};

use crate::builder::{Aggregation, Builder, field_column, filter_condition};
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

fn states_and_merge(b: &Builder, def: &EventTypeDef) -> Option<Split> {
    let base = || -> Option<BaseType> {
        let name = b.field.as_deref()?;
        let name = name.strip_prefix("data.").unwrap_or(name);
        let fields = def.fields().ok()?;
        fields
            .into_iter()
            .find(|(f, _)| f == name)
            .map(|(_, t)| t.base)
    };
    let col = || b.field.as_deref().and_then(|f| field_column(def, f).ok());
    use BaseType as B;
    let integer = |t: &BaseType| {
        matches!(
            t,
            B::Int8 | B::Int16 | B::Int32 | B::Int64 | B::UInt8 | B::UInt16 | B::UInt32 | B::UInt64
        )
    };
    let float = |t: &BaseType| matches!(t, B::Float32 | B::Float64);
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
    let Split {
        states,
        combine,
        merge,
    } = states_and_merge(b, def)?;
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
    let table = format!("\"{}\"", def.api_slug);
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
        ] {
            assert!(splits(a, f).is_some(), "{a} {f:?}");
        }
        for (a, f) in [
            ("unique_count", Some("n")),
            ("latest", Some("n")),
            ("earliest", Some("n")),
            ("time_weighted_sum", Some("n")),
            ("avg", Some("n")),
            ("avg", Some("d")),
        ] {
            assert!(splits(a, f).is_none(), "{a} {f:?}");
        }
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
