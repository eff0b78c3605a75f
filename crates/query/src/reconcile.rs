//! Reconciliation: per customer and UTC day or hour, the count of an event type's live
//! events, the sum of each numeric field and the digest of `meterbase_schema::digest`, as one
//! aggregate query over the same view every query reads (one row per unique key, no deleted
//! row), under the same admission and caps.
//!
//! The digest is a sum of per-event hashes modulo 2^64. SQL's `sum` is not asked to wrap (an
//! exact integer sum may refuse to overflow): each hash is split into 32-bit halves, whose
//! sums cannot overflow a u64 below 2^32 events per bucket, and recombined here.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, UInt64Builder};
use arrow::compute::cast;
use arrow::datatypes::{
    DataType, Decimal128Type, Float64Type, TimestampMicrosecondType, UInt64Type,
};
use datafusion::common::{Result as DfResult, ScalarValue, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use meterbase_schema::digest::EventDigester;
use meterbase_schema::{BaseType, EventTypeDef};
use meterbase_storage::TableSnapshot;

use crate::{Caller, QueryEngine, QueryError, QueryKind};

/// The SQL name of the per-event hash.
pub const EVENT_HASH: &str = "meterbase_event_hash";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Day,
    Hour,
}

impl Bucket {
    fn unit(self) -> &'static str {
        match self {
            Bucket::Day => "day",
            Bucket::Hour => "hour",
        }
    }
}

/// What is reconciled: `[from, to)`, optionally one customer, bucketed by `by`.
#[derive(Debug, Clone)]
pub struct ReconcileRequest {
    pub from: i64,
    pub to: i64,
    pub customer_id: Option<String>,
    pub by: Bucket,
    pub as_of: Option<i64>,
}

/// One numeric field's sum, in the type its values add up exactly in (floats aside).
#[derive(Debug, Clone, PartialEq)]
pub enum FieldSum {
    Integer(i128),
    /// Unscaled value and scale.
    Decimal(i128, i8),
    /// A binary floating-point sum: not exact, and not yet independent of the order rows
    /// arrive in.
    Float(f64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReconcileBucket {
    pub customer_id: String,
    pub bucket_start: i64,
    pub count: u64,
    /// Sum of the events' hashes modulo 2^64 (`digest::digest_hex` writes it).
    pub digest: u64,
    /// One per numeric field, in definition order.
    pub sums: Vec<(String, FieldSum)>,
}

/// `meterbase_event_hash(customer_id, timestamp, <data fields in definition order>)`: one
/// event's hash, for the event type it is built for.
#[derive(Debug)]
struct EventHash {
    digester: Arc<EventDigester>,
    /// What tells two of these apart: the type's fields and their types.
    identity: String,
    signature: Signature,
}

impl PartialEq for EventHash {
    fn eq(&self, other: &Self) -> bool {
        self.identity == other.identity
    }
}

impl Eq for EventHash {}

impl Hash for EventHash {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.identity.hash(state);
    }
}

impl ScalarUDFImpl for EventHash {
    fn name(&self) -> &str {
        EVENT_HASH
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::UInt64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let arrays: Vec<ArrayRef> = ColumnarValue::values_to_arrays(&args.args)?;
        let hashes = match self.digester.row_hashes(&arrays) {
            Ok(h) => h,
            Err(e) => return exec_err!("{EVENT_HASH}: {e}"),
        };
        let mut out = UInt64Builder::with_capacity(hashes.len());
        out.append_slice(&hashes);
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// The hash function bound to `def`'s fields.
pub fn event_hash_function(def: &EventTypeDef) -> Result<Arc<ScalarUDF>, QueryError> {
    let fields = def
        .fields()
        .map_err(|e| QueryError::Execution(e.to_string()))?;
    let identity = fields
        .iter()
        .map(|(n, t)| format!("{n}:{t}"))
        .collect::<Vec<_>>()
        .join(",");
    Ok(Arc::new(ScalarUDF::new_from_impl(EventHash {
        digester: Arc::new(EventDigester::new(&fields)),
        identity,
        signature: Signature::variadic_any(Volatility::Immutable),
    })))
}

fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn utc(us: i64) -> ScalarValue {
    ScalarValue::TimestampMicrosecond(Some(us), Some("UTC".into()))
}

/// How a numeric field is summed in SQL, and read back.
#[derive(Clone, Copy)]
enum SumKind {
    Integer,
    Decimal(i8),
    Float,
}

fn sum_kind(base: BaseType) -> Option<SumKind> {
    use BaseType as B;
    match base {
        B::Int8 | B::Int16 | B::Int32 | B::Int64 | B::UInt8 | B::UInt16 | B::UInt32 | B::UInt64 => {
            Some(SumKind::Integer)
        }
        B::Decimal { scale, .. } => Some(SumKind::Decimal(scale)),
        B::Float32 | B::Float64 => Some(SumKind::Float),
        _ => None,
    }
}

/// The SQL of one reconciliation, its parameters, and the numeric fields it sums (`s0`, …).
struct Statement {
    sql: String,
    params: HashMap<String, ScalarValue>,
    numeric: Vec<(String, SumKind)>,
}

fn statement(def: &EventTypeDef, req: &ReconcileRequest) -> Result<Statement, QueryError> {
    let fields = def
        .fields()
        .map_err(|e| QueryError::Execution(e.to_string()))?;
    let numeric: Vec<(String, SumKind)> = fields
        .iter()
        .filter_map(|(n, t)| sum_kind(t.base).map(|k| (n.clone(), k)))
        .collect();
    let mut args = vec!["customer_id".to_string(), "timestamp".to_string()];
    args.extend(fields.iter().map(|(n, _)| quoted(n)));
    let mut inner = vec![
        "customer_id".to_string(),
        format!("date_trunc('{}', timestamp) AS bucket_start", req.by.unit()),
        format!("{EVENT_HASH}({}) AS h", args.join(", ")),
    ];
    inner.extend(numeric.iter().map(|(n, _)| quoted(n)));
    let mut outer = vec![
        "customer_id".to_string(),
        "bucket_start".to_string(),
        "count(*) AS n".to_string(),
        "sum(h % CAST(4294967296 AS BIGINT UNSIGNED)) AS h_lo".to_string(),
        "sum(h / CAST(4294967296 AS BIGINT UNSIGNED)) AS h_hi".to_string(),
    ];
    for (i, (n, k)) in numeric.iter().enumerate() {
        // Integers as DECIMAL(38,0): exact, and no 64-bit sum to overflow.
        outer.push(match k {
            SumKind::Integer => format!("sum(CAST({} AS DECIMAL(38,0))) AS s{i}", quoted(n)),
            SumKind::Decimal(_) => format!("sum({}) AS s{i}", quoted(n)),
            SumKind::Float => format!("sum(CAST({} AS DOUBLE)) AS s{i}", quoted(n)),
        });
    }
    let mut params = HashMap::new();
    params.insert("from".to_string(), utc(req.from));
    params.insert("to".to_string(), utc(req.to));
    let mut conds = vec!["timestamp >= $from", "timestamp < $to"];
    if let Some(c) = &req.customer_id {
        params.insert("customer".to_string(), ScalarValue::Utf8(Some(c.clone())));
        conds.push("customer_id = $customer");
    }
    let sql = format!(
        "SELECT {} FROM (SELECT {} FROM {} WHERE {}) AS events \
         GROUP BY customer_id, bucket_start ORDER BY customer_id, bucket_start",
        outer.join(", "),
        inner.join(", "),
        quoted(&def.api_slug),
        conds.join(" AND "),
    );
    Ok(Statement {
        sql,
        params,
        numeric,
    })
}

/// The digest from the sums of the hashes' high and low 32-bit halves: only the low 64 bits
/// of hi·2^32 + lo matter, the digest being a sum mod 2^64.
fn combine(hi_sum: u64, lo_sum: u64) -> u64 {
    (hi_sum << 32).wrapping_add(lo_sum)
}

fn unexpected(what: &str) -> QueryError {
    QueryError::Execution(format!("reconcile: unexpected {what} in the result"))
}

/// A column cast to `t`, for reading whatever integer or decimal type the sums came back in.
fn column_as(col: &ArrayRef, t: &DataType) -> Result<ArrayRef, QueryError> {
    cast(col, t).map_err(|e| QueryError::Execution(format!("reconcile: {e}")))
}

/// Counts, sums and digests per (customer, bucket) of `def`'s live events in the request's
/// range, ordered by customer then bucket.
pub async fn reconcile(
    engine: &QueryEngine,
    org: &str,
    tables: Vec<TableSnapshot>,
    def: &EventTypeDef,
    req: &ReconcileRequest,
) -> Result<Vec<ReconcileBucket>, QueryError> {
    let Statement {
        sql,
        params,
        numeric,
    } = statement(def, req)?;
    let caller = Caller {
        org,
        kind: QueryKind::Reconcile,
    };
    let out = engine
        .execute_with(
            caller,
            tables,
            sql,
            params,
            req.as_of,
            vec![event_hash_function(def)?],
        )
        .await?;
    let mut buckets = Vec::new();
    for batch in &out.batches {
        let customers = cast(batch.column(0), &DataType::Utf8)
            .map_err(|e| QueryError::Execution(format!("reconcile: {e}")))?;
        let customers = customers
            .as_string_opt::<i32>()
            .ok_or_else(|| unexpected("customer_id"))?;
        let starts = batch
            .column(1)
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(|| unexpected("bucket_start"))?;
        let counts = column_as(batch.column(2), &DataType::UInt64)?;
        let lo = column_as(batch.column(3), &DataType::UInt64)?;
        let hi = column_as(batch.column(4), &DataType::UInt64)?;
        let (counts, lo, hi) = (
            counts.as_primitive::<UInt64Type>(),
            lo.as_primitive::<UInt64Type>(),
            hi.as_primitive::<UInt64Type>(),
        );
        let mut sums: Vec<ArrayRef> = Vec::with_capacity(numeric.len());
        for (i, (_, kind)) in numeric.iter().enumerate() {
            let col = batch.column(5 + i);
            sums.push(match kind {
                SumKind::Integer => column_as(col, &DataType::Decimal128(38, 0))?,
                SumKind::Decimal(scale) => column_as(col, &DataType::Decimal128(38, *scale))?,
                SumKind::Float => column_as(col, &DataType::Float64)?,
            });
        }
        for row in 0..batch.num_rows() {
            let digest = combine(hi.value(row), lo.value(row));
            let field_sums = numeric
                .iter()
                .zip(&sums)
                .map(|((name, kind), col)| {
                    let null = col.is_null(row);
                    let v = match kind {
                        SumKind::Integer => FieldSum::Integer(if null {
                            0
                        } else {
                            col.as_primitive::<Decimal128Type>().value(row)
                        }),
                        SumKind::Decimal(scale) => FieldSum::Decimal(
                            if null {
                                0
                            } else {
                                col.as_primitive::<Decimal128Type>().value(row)
                            },
                            *scale,
                        ),
                        SumKind::Float => FieldSum::Float(if null {
                            0.0
                        } else {
                            col.as_primitive::<Float64Type>().value(row)
                        }),
                    };
                    (name.clone(), v)
                })
                .collect();
            buckets.push(ReconcileBucket {
                customer_id: customers.value(row).to_string(),
                bucket_start: starts.value(row),
                count: counts.value(row),
                digest,
                sums: field_sums,
            });
        }
    }
    Ok(buckets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_summed_apart_recombine_to_the_wrapping_sum() {
        let hashes = [u64::MAX, u64::MAX - 7, 1 << 63, 0x0123_4567_89ab_cdef, 42];
        let (hi, lo) = hashes.iter().fold((0u64, 0u64), |(h, l), x| {
            (h + (x >> 32), l + (x & 0xffff_ffff))
        });
        let wrapped = hashes.iter().fold(0u64, |a, x| a.wrapping_add(*x));
        assert_eq!(combine(hi, lo), wrapped);
    }

    #[test]
    fn numeric_fields_are_summed_exactly_by_kind() {
        let def: EventTypeDef = serde_json::from_value(serde_json::json!({
            "id": "t", "name": "T", "api_slug": "t",
            "dataschema": {"data": {"n": "UInt64", "d": "Decimal(9,2)", "f": "Float32", "s": "String"}},
            "column_order": ["timestamp"], "unique_key": ["customer_id", "timestamp"],
            "created_at": "2025-01-01T00:00:00Z", "schema_version": 1
        }))
        .unwrap();
        let req = ReconcileRequest {
            from: 0,
            to: 1,
            customer_id: None,
            by: Bucket::Hour,
            as_of: None,
        };
        let st = statement(&def, &req).unwrap();
        assert!(
            st.sql.contains("sum(CAST(\"n\" AS DECIMAL(38,0))) AS s0"),
            "{}",
            st.sql
        );
        assert!(st.sql.contains("sum(\"d\") AS s1"), "{}", st.sql);
        assert!(
            st.sql.contains("sum(CAST(\"f\" AS DOUBLE)) AS s2"),
            "{}",
            st.sql
        );
        assert!(
            st.sql.contains("date_trunc('hour', timestamp)"),
            "{}",
            st.sql
        );
        assert_eq!(st.numeric.len(), 3);
        assert!(!st.params.contains_key("customer"));
    }
}
