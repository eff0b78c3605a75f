//! `date_trunc` for UTC timestamps without the per-value time-zone work.
//!
//! Every stored timestamp is `Timestamp(µs, "UTC")`. DataFusion truncates zoned timestamps
//! one value at a time through chrono-tz (and formats the zone name per value): profiled, that
//! was half of a monthly-sum-per-customer query. UTC has no offset, so truncating the same
//! instants as zone-less timestamps (DataFusion's arithmetic fast paths) gives identical
//! results; the zone is put back on the output. Anything else goes to DataFusion unchanged.
//!
//! Weeks, months, quarters and years DataFusion still computes one value at a time through a
//! calendar conversion (a quarter of a monthly-sum-per-customer query over 20M events). Scans
//! deliver timestamps in long runs of one bucket (files are sorted by time, or by customer then
//! time), so those units compute a bucket's bounds only when a value falls outside the last one.

use std::sync::Arc;

use arrow::array::{Array, AsArray, PrimitiveArray};
use arrow::datatypes::{DataType, FieldRef, TimeUnit, TimestampMicrosecondType};
use datafusion::common::{Result, ScalarValue};
use datafusion::functions::datetime::date_trunc::DateTruncFunc;
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature,
};
use meterbase_schema::timestamp::{MICROS_PER_DAY, civil_from_days, days_from_civil};

#[derive(Debug, PartialEq, Eq, Hash, Default)]
pub(crate) struct UtcDateTrunc {
    inner: DateTruncFunc,
}

fn is_utc(tz: &str) -> bool {
    matches!(tz, "UTC" | "utc" | "+00:00" | "Z" | "Etc/UTC")
}

/// The units whose buckets are calendar arithmetic rather than a fixed-length remainder.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Calendar {
    Week,
    Month,
    Quarter,
    Year,
}

impl Calendar {
    fn of(granularity: &ColumnarValue) -> Option<Calendar> {
        let ColumnarValue::Scalar(
            ScalarValue::Utf8(Some(unit))
            | ScalarValue::Utf8View(Some(unit))
            | ScalarValue::LargeUtf8(Some(unit)),
        ) = granularity
        else {
            return None;
        };
        match unit.to_ascii_lowercase().as_str() {
            "week" => Some(Calendar::Week),
            "month" => Some(Calendar::Month),
            "quarter" => Some(Calendar::Quarter),
            "year" => Some(Calendar::Year),
            _ => None,
        }
    }

    /// `[first, end)` in days since the epoch of the bucket holding `day`. Weeks begin on
    /// Monday, as DataFusion's do.
    fn bucket(self, day: i64) -> (i64, i64) {
        let months = match self {
            Calendar::Week => {
                let monday = day - (day + 3).rem_euclid(7);
                return (monday, monday + 7);
            }
            Calendar::Month => 1,
            Calendar::Quarter => 3,
            Calendar::Year => 12,
        };
        let (year, month, _) = civil_from_days(day);
        let first = 1 + (month - 1) / months * months;
        // The next bucket's first month, counted from January of `year` starting at 0.
        let next = first - 1 + months;
        (
            days_from_civil(year, first, 1),
            days_from_civil(year + i64::from(next / 12), next % 12 + 1, 1),
        )
    }
}

/// DataFusion truncates through nanoseconds and fails for an instant, or a bucket start,
/// outside their range. Such an array is left to it, so every answer and error stays its own.
const NANOSECOND_SAFE_MICROS: u64 = (i64::MAX / 1000) as u64;

/// Bucket starts of every value, or `None` when one is out of DataFusion's range.
fn calendar_trunc(
    unit: Calendar,
    array: &PrimitiveArray<TimestampMicrosecondType>,
) -> Option<Vec<i64>> {
    let mut out = Vec::with_capacity(array.len());
    // The current bucket [start, end); empty until the first valid value.
    let (mut start, mut end) = (0i64, 0i64);
    for (i, &t) in array.values().iter().enumerate() {
        if t < start || t >= end {
            if array.is_null(i) {
                out.push(0);
                continue;
            }
            let (first, next) = unit.bucket(t.div_euclid(MICROS_PER_DAY));
            start = first.checked_mul(MICROS_PER_DAY)?;
            // A bucket may straddle the limit: values past it must come back here.
            end = next
                .saturating_mul(MICROS_PER_DAY)
                .min(NANOSECOND_SAFE_MICROS as i64 + 1);
            if t.unsigned_abs() > NANOSECOND_SAFE_MICROS
                || start.unsigned_abs() > NANOSECOND_SAFE_MICROS
            {
                return None;
            }
        }
        out.push(start);
    }
    Some(out)
}

impl ScalarUDFImpl for UtcDateTrunc {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn output_ordering(&self, input: &[ExprProperties]) -> Result<SortProperties> {
        self.inner.output_ordering(input)
    }

    fn invoke_with_args(&self, mut args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let utc = match args.args.get(1) {
            Some(ColumnarValue::Array(a)) => match a.data_type() {
                DataType::Timestamp(TimeUnit::Microsecond, Some(tz)) if is_utc(tz) => {
                    Some((tz.clone(), a.clone()))
                }
                _ => None,
            },
            _ => None,
        };
        let Some((tz, array)) = utc else {
            return self.inner.invoke_with_args(args);
        };
        let micros = array.as_primitive::<TimestampMicrosecondType>();
        if let Some(unit) = args.args.first().and_then(Calendar::of)
            && let Some(starts) = calendar_trunc(unit, micros)
        {
            let out = PrimitiveArray::<TimestampMicrosecondType>::new(
                starts.into(),
                micros.nulls().cloned(),
            )
            .with_timezone(tz);
            return Ok(ColumnarValue::Array(Arc::new(out)));
        }
        let naive = micros.clone().with_timezone_opt(None::<Arc<str>>);
        args.args[1] = ColumnarValue::Array(Arc::new(naive));
        match self.inner.invoke_with_args(args)? {
            ColumnarValue::Array(out) => match out.as_primitive_opt::<TimestampMicrosecondType>() {
                Some(p) => Ok(ColumnarValue::Array(Arc::new(p.clone().with_timezone(tz)))),
                None => Ok(ColumnarValue::Array(out)),
            },
            other => Ok(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::TimestampMicrosecondArray;
    use arrow::datatypes::Field;
    use datafusion::config::ConfigOptions;
    use proptest::prelude::*;

    fn run(f: &dyn ScalarUDFImpl, unit: &str, values: &[i64]) -> Vec<Option<i64>> {
        let values: Vec<Option<i64>> = values.iter().copied().map(Some).collect();
        invoke(f, unit, &values).unwrap()
    }

    /// `date_trunc(unit, values)` on a `Timestamp(µs, "UTC")` array, or the error's text.
    fn invoke(
        f: &dyn ScalarUDFImpl,
        unit: &str,
        values: &[Option<i64>],
    ) -> Result<Vec<Option<i64>>, String> {
        let array: Arc<dyn Array> =
            Arc::new(TimestampMicrosecondArray::from(values.to_vec()).with_timezone("UTC"));
        let ty = array.data_type().clone();
        let args = ScalarFunctionArgs {
            args: vec![
                ColumnarValue::Scalar(ScalarValue::Utf8(Some(unit.into()))),
                ColumnarValue::Array(array),
            ],
            arg_fields: vec![
                Arc::new(Field::new("g", DataType::Utf8, false)),
                Arc::new(Field::new("t", ty.clone(), false)),
            ],
            number_rows: values.len(),
            return_field: Arc::new(Field::new("r", ty.clone(), false)),
            config_options: Arc::new(ConfigOptions::default()),
        };
        match f.invoke_with_args(args).map_err(|e| e.to_string())? {
            ColumnarValue::Array(a) => {
                assert_eq!(a.data_type(), &ty);
                Ok(a.as_primitive::<TimestampMicrosecondType>()
                    .iter()
                    .collect())
            }
            other => panic!("{other:?}"),
        }
    }

    /// Timestamps as scans deliver them (ascending runs that cross bucket boundaries) or in
    /// any order, some null, some at or past the nanosecond limits.
    fn timestamps() -> impl Strategy<Value = Vec<Option<i64>>> {
        let limit = (i64::MAX / 1000) + 1_000_000_000;
        let any_instant = prop_oneof![
            -limit..limit,
            1_600_000_000_000_000i64..1_800_000_000_000_000,
            any::<i64>(),
        ];
        let unordered = prop::collection::vec(prop::option::weighted(0.9, any_instant), 0..100);
        let ascending = (
            -limit..limit,
            prop::collection::vec(
                prop::option::weighted(0.95, 0i64..40 * 86_400_000_000),
                0..100,
            ),
        )
            .prop_map(|(mut t, steps)| {
                steps
                    .into_iter()
                    .map(|step| {
                        step.map(|s| {
                            t = t.saturating_add(s);
                            t
                        })
                    })
                    .collect()
            });
        prop_oneof![unordered, ascending]
    }

    #[test]
    fn a_run_crossing_the_nanosecond_limit_fails_as_datafusion_does() {
        let limit = i64::MAX / 1000;
        let values = [Some(limit - 86_400_000_000), Some(limit + 1)];
        for unit in ["month", "year"] {
            let ours = invoke(&UtcDateTrunc::default(), unit, &values);
            assert!(ours.is_err(), "{unit}: {ours:?}");
            assert_eq!(ours, invoke(&DateTruncFunc::new(), unit, &values), "{unit}");
        }
    }

    proptest! {
        #[test]
        fn calendar_units_answer_and_fail_as_datafusion_does(values in timestamps()) {
            let ours = UtcDateTrunc::default();
            let theirs = DateTruncFunc::new();
            // Finer units keep DataFusion's zone-less path, which answers for instants past
            // year 2262 where its zoned path fails on nanosecond overflow.
            for unit in ["week", "month", "Quarter", "YEAR"] {
                prop_assert_eq!(invoke(&ours, unit, &values), invoke(&theirs, unit, &values), "{}", unit);
            }
        }
    }

    #[test]
    fn same_answers_as_datafusion_for_every_unit() {
        // Around the epoch, month and year ends, a leap day, and far from now.
        let values: Vec<i64> = [
            0i64,
            -1,
            1_735_689_599_999_999,
            1_735_689_600_000_000,
            1_709_164_800_123_456,
            4_102_444_799_999_999,
            -2_208_988_800_000_001,
        ]
        .into_iter()
        .chain((0..500).map(|i| 1_600_000_000_000_000 + i * 7_777_777_777_777))
        .collect();
        let ours = UtcDateTrunc::default();
        let theirs = DateTruncFunc::new();
        for unit in [
            "microsecond",
            "millisecond",
            "second",
            "minute",
            "hour",
            "day",
            "week",
            "month",
            "quarter",
            "year",
        ] {
            assert_eq!(
                run(&ours, unit, &values),
                run(&theirs, unit, &values),
                "{unit}"
            );
        }
    }
}
