//! The SQL functions that let a windowed usage answer be one query whatever the number of
//! windows: the windows of a request (calendar windows of a time zone, `windows::windows`) are
//! bound into the functions, which a builder metric's windowed SQL calls per row.
//!
//! - `meterbase_window_start(ts)`: the start of the window holding `ts` (NULL outside them);
//! - `meterbase_window_spans(from, to)`: for the interval `[from, to)`, each window it
//!   overlaps with the overlap in µs (what a time-weighted value held over it earns there).

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Int64Builder, ListBuilder, StructBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Fields, TimeUnit, TimestampMicrosecondType};
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

pub const WINDOW_START: &str = "meterbase_window_start";
pub const WINDOW_SPANS: &str = "meterbase_window_spans";

fn utc() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn span_fields() -> Fields {
    Fields::from(vec![
        Field::new("window_start", utc(), false),
        Field::new("micros", DataType::Int64, false),
    ])
}

/// Contiguous windows `[starts[i], starts[i + 1])`, the last ending at `end`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Bounds {
    starts: Vec<i64>,
    end: i64,
}

impl Bounds {
    fn new(windows: &[(i64, i64)]) -> Bounds {
        Bounds {
            starts: windows.iter().map(|w| w.0).collect(),
            end: windows.last().map_or(i64::MIN, |w| w.1),
        }
    }

    /// Index of the window holding `t`.
    fn index(&self, t: i64) -> Option<usize> {
        if self.starts.first().is_none_or(|s| t < *s) || t >= self.end {
            return None;
        }
        Some(self.starts.partition_point(|&s| s <= t) - 1)
    }

    fn window(&self, i: usize) -> (i64, i64) {
        (
            self.starts[i],
            self.starts.get(i + 1).copied().unwrap_or(self.end),
        )
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct WindowStart {
    bounds: Arc<Bounds>,
    signature: Signature,
}

impl ScalarUDFImpl for WindowStart {
    fn name(&self) -> &str {
        WINDOW_START
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(utc())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let Some(ts) = arrays[0].as_primitive_opt::<TimestampMicrosecondType>() else {
            return exec_err!("{WINDOW_START} takes a timestamp (µs)");
        };
        let mut out = TimestampMicrosecondBuilder::with_capacity(ts.len());
        for t in ts.iter() {
            out.append_option(
                t.and_then(|t| self.bounds.index(t))
                    .map(|i| self.bounds.starts[i]),
            );
        }
        let out: ArrayRef = Arc::new(out.finish().with_timezone("UTC"));
        Ok(ColumnarValue::Array(out))
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct WindowSpans {
    bounds: Arc<Bounds>,
    signature: Signature,
}

impl ScalarUDFImpl for WindowSpans {
    fn name(&self) -> &str {
        WINDOW_SPANS
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::List(Arc::new(Field::new(
            "item",
            DataType::Struct(span_fields()),
            true,
        ))))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let (Some(from), Some(to)) = (
            arrays[0].as_primitive_opt::<TimestampMicrosecondType>(),
            arrays[1].as_primitive_opt::<TimestampMicrosecondType>(),
        ) else {
            return exec_err!("{WINDOW_SPANS} takes two timestamps (µs)");
        };
        let values = StructBuilder::from_fields(span_fields(), 0);
        let mut out = ListBuilder::new(values).with_field(Arc::new(Field::new(
            "item",
            DataType::Struct(span_fields()),
            true,
        )));
        let b = &self.bounds;
        for row in 0..from.len() {
            if from.is_valid(row) && to.is_valid(row) {
                let (a, z) = (from.value(row), to.value(row));
                // The first window the interval reaches: the one holding `a`, or the first.
                let mut i = match b.index(a) {
                    Some(i) => i,
                    None if b.starts.first().is_some_and(|s| a < *s) => 0,
                    None => b.starts.len(),
                };
                while i < b.starts.len() {
                    let (ws, we) = b.window(i);
                    if ws >= z {
                        break;
                    }
                    let overlap = z.min(we) - a.max(ws);
                    if overlap > 0 {
                        let s = out.values();
                        if let Some(f) = s.field_builder::<TimestampMicrosecondBuilder>(0) {
                            f.append_value(ws);
                        }
                        if let Some(f) = s.field_builder::<Int64Builder>(1) {
                            f.append_value(overlap);
                        }
                        s.append(true);
                    }
                    i += 1;
                }
            }
            out.append(true);
        }
        let list = out.finish();
        // The struct's timestamp field carries the zone, as declared.
        let list = arrow::compute::cast(&list, &self.return_type(&[])?)?;
        Ok(ColumnarValue::Array(list))
    }
}

/// The two functions, bound to `windows` (contiguous, in order).
pub fn window_functions(windows: &[(i64, i64)]) -> Vec<Arc<ScalarUDF>> {
    let bounds = Arc::new(Bounds::new(windows));
    vec![
        Arc::new(ScalarUDF::new_from_impl(WindowStart {
            bounds: bounds.clone(),
            signature: Signature::exact(vec![utc()], Volatility::Immutable),
        })),
        Arc::new(ScalarUDF::new_from_impl(WindowSpans {
            bounds,
            signature: Signature::exact(vec![utc(), utc()], Volatility::Immutable),
        })),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_found_and_intervals_split_across_them() {
        let b = Bounds::new(&[(0, 10), (10, 25), (25, 30)]);
        assert_eq!(b.index(-1), None);
        assert_eq!(b.index(0), Some(0));
        assert_eq!(b.index(10), Some(1));
        assert_eq!(b.index(29), Some(2));
        assert_eq!(b.index(30), None);
        assert_eq!(b.window(2), (25, 30));
    }
}
