//! A preview's comparison of two answers to the same period: rows matched by customer and
//! dimensions, values kept in the JSON form the usage endpoint gives them, and their
//! difference computed without losing exactness (decimals as decimals, integers as integers).

use std::collections::BTreeMap;

use arrow::array::Array;
use arrow::datatypes::DataType;
use meterbase_query::QueryOutput;
use meterbase_query::format::write_json_value;

use crate::decimal;

/// One value as the usage endpoint shows it, and what kind of number it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// JSON text: a number, a quoted decimal, `null`, or whatever else the column holds.
    pub json: String,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Int,
    Float,
    Decimal,
    Null,
    Other,
}

impl Cell {
    fn of(array: &arrow::array::ArrayRef, row: usize) -> Cell {
        let mut json = String::new();
        write_json_value(&mut json, array, row);
        let kind = if array.is_null(row) || json == "null" {
            Kind::Null
        } else {
            match array.data_type() {
                t if t.is_integer() => Kind::Int,
                DataType::Float16 | DataType::Float32 | DataType::Float64 => Kind::Float,
                DataType::Decimal128(..) | DataType::Decimal256(..) => Kind::Decimal,
                _ => Kind::Other,
            }
        };
        Cell { json, kind }
    }

    /// The plain number text (a decimal's without its quotes).
    fn number(&self) -> Option<String> {
        match self.kind {
            Kind::Int | Kind::Float => Some(self.json.clone()),
            Kind::Decimal => serde_json::from_str::<String>(&self.json).ok(),
            Kind::Null | Kind::Other => None,
        }
    }
}

/// `candidate - current` as JSON text. A missing side counts as 0; a present value that is
/// null or not a number makes the difference `null`. Any decimal side: exact, as a decimal
/// string at the larger scale. Both integers: an integer. Otherwise a float (IEEE
/// subtraction, which is the correctly rounded exact difference of the two values).
pub fn difference(current: Option<&Cell>, candidate: Option<&Cell>) -> String {
    let zero = Cell {
        json: "0".into(),
        kind: Kind::Int,
    };
    let (cur, cand) = (current.unwrap_or(&zero), candidate.unwrap_or(&zero));
    let (Some(a), Some(b)) = (cand.number(), cur.number()) else {
        return "null".into();
    };
    if cand.kind == Kind::Decimal || cur.kind == Kind::Decimal {
        return decimal::subtract(&a, &b)
            .map(|d| serde_json::Value::String(d).to_string())
            .unwrap_or_else(|| "null".into());
    }
    if cand.kind == Kind::Int && cur.kind == Kind::Int {
        let exact = a
            .parse::<i128>()
            .ok()
            .zip(b.parse::<i128>().ok())
            .and_then(|(a, b)| a.checked_sub(b));
        if let Some(d) = exact {
            return d.to_string();
        }
    }
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(a), Ok(b)) if (a - b).is_finite() => format!("{}", a - b),
        _ => "null".into(),
    }
}

/// Which row of an answer: the customer and every dimension, as JSON texts, dimensions by
/// name so two definitions listing them in another order still match.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RowKey {
    pub customer_id: String,
    pub dimensions: Vec<(String, String)>,
    /// The n-th row with the same customer and dimensions (a SQL metric may return several),
    /// matched with the n-th of the other answer.
    pub occurrence: usize,
}

/// The rows of one answer by key.
pub fn rows(outputs: &[QueryOutput]) -> BTreeMap<RowKey, Cell> {
    let mut out = BTreeMap::new();
    let mut seen: BTreeMap<(String, Vec<(String, String)>), usize> = BTreeMap::new();
    for o in outputs {
        let schema = &o.schema;
        let cid = schema.index_of("customer_id").ok();
        let value = schema.index_of("value").ok();
        let mut dims: Vec<(usize, &str)> = schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| !matches!(f.name().as_str(), "customer_id" | "value"))
            .map(|(i, f)| (i, f.name().as_str()))
            .collect();
        dims.sort_by_key(|(_, name)| *name);
        for batch in &o.batches {
            for r in 0..batch.num_rows() {
                let text = |i: usize| Cell::of(batch.column(i), r).json;
                let customer_id = cid.map(text).unwrap_or_else(|| "null".into());
                let dimensions: Vec<(String, String)> = dims
                    .iter()
                    .map(|(i, name)| (name.to_string(), text(*i)))
                    .collect();
                let n = seen
                    .entry((customer_id.clone(), dimensions.clone()))
                    .or_insert(0);
                let key = RowKey {
                    customer_id,
                    dimensions,
                    occurrence: *n,
                };
                *n += 1;
                let cell = value.map_or(
                    Cell {
                        json: "null".into(),
                        kind: Kind::Null,
                    },
                    |i| Cell::of(batch.column(i), r),
                );
                out.insert(key, cell);
            }
        }
    }
    out
}

/// One matched row of a period.
#[derive(Debug, Clone, PartialEq)]
pub struct Compared {
    pub key: RowKey,
    /// JSON texts; `None` where that answer has no such row.
    pub current: Option<String>,
    pub candidate: Option<String>,
    pub difference: String,
}

/// Every row present in either answer, in key order.
pub fn compare(current: &[QueryOutput], candidate: &[QueryOutput]) -> Vec<Compared> {
    let (mut cur, mut cand) = (rows(current), rows(candidate));
    let keys: std::collections::BTreeSet<RowKey> = cur.keys().chain(cand.keys()).cloned().collect();
    keys.into_iter()
        .map(|key| {
            let (a, b) = (cur.remove(&key), cand.remove(&key));
            Compared {
                difference: difference(a.as_ref(), b.as_ref()),
                current: a.map(|c| c.json),
                candidate: b.map(|c| c.json),
                key,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Decimal128Array, Float64Array, Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};
    use arrow::record_batch::RecordBatch;

    fn output(customers: &[&str], values: ArrayRef) -> QueryOutput {
        let schema = Arc::new(Schema::new(vec![
            Field::new("customer_id", DataType::Utf8, false),
            Field::new("value", values.data_type().clone(), true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(StringArray::from(customers.to_vec())), values],
        )
        .unwrap();
        QueryOutput {
            schema,
            batches: vec![batch],
        }
    }

    fn decimals(v: &[Option<i128>]) -> ArrayRef {
        Arc::new(
            Decimal128Array::from(v.to_vec())
                .with_precision_and_scale(18, 4)
                .unwrap(),
        )
    }

    fn summary(rows: &[Compared]) -> Vec<(String, Option<String>, Option<String>, String)> {
        rows.iter()
            .map(|r| {
                (
                    r.key.customer_id.clone(),
                    r.current.clone(),
                    r.candidate.clone(),
                    r.difference.clone(),
                )
            })
            .collect()
    }

    #[test]
    fn decimals_differ_exactly_and_a_missing_side_counts_as_zero() {
        let cur = output(&["acme", "globex"], decimals(&[Some(60), Some(1000)]));
        let cand = output(&["acme", "initech"], decimals(&[Some(1000), None]));
        let s = |t: &str| Some(t.to_string());
        assert_eq!(
            summary(&compare(&[cur], &[cand])),
            vec![
                (
                    "\"acme\"".into(),
                    s("\"0.0060\""),
                    s("\"0.1000\""),
                    "\"0.0940\"".into()
                ),
                (
                    "\"globex\"".into(),
                    s("\"0.1000\""),
                    None,
                    "\"-0.1000\"".into()
                ),
                ("\"initech\"".into(), None, s("null"), "null".into()),
            ]
        );
    }

    #[test]
    fn integers_stay_integers_and_floats_subtract_once() {
        let cur = output(&["a"], Arc::new(Int64Array::from(vec![i64::MIN])));
        let cand = output(&["a"], Arc::new(Int64Array::from(vec![i64::MAX])));
        assert_eq!(
            compare(&[cur], &[cand])[0].difference,
            (i128::from(i64::MAX) - i128::from(i64::MIN)).to_string()
        );
        let cur = output(&["a"], Arc::new(Float64Array::from(vec![0.1])));
        let cand = output(&["a"], Arc::new(Int64Array::from(vec![3])));
        assert_eq!(
            compare(&[cur], &[cand])[0].difference,
            format!("{}", 3.0 - 0.1)
        );
        // A decimal against a float: exact on the texts both show.
        let cur = output(&["a"], Arc::new(Float64Array::from(vec![0.1])));
        let cand = output(&["a"], decimals(&[Some(3)]));
        assert_eq!(compare(&[cur], &[cand])[0].difference, "\"-0.0997\"");
    }
}
