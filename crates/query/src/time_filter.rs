//! The time range a query's filters confine `timestamp` to, for skipping whole files and
//! buffered batches before DataFusion sees them.

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};

fn micros_of(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::TimestampMicrosecond(Some(x), _) => Some(*x),
        ScalarValue::TimestampNanosecond(Some(x), _) => Some(x.div_euclid(1000)),
        ScalarValue::TimestampMillisecond(Some(x), _) => x.checked_mul(1000),
        ScalarValue::TimestampSecond(Some(x), _) => x.checked_mul(1_000_000),
        _ => None,
    }
}

/// `[lo, hi)` in microseconds implied by `timestamp <op> literal` conjuncts; unbounded sides
/// are `i64::MIN` / `i64::MAX`. Used only to skip whole files and batches.
pub(crate) fn time_bounds(filters: &[Expr]) -> (i64, i64) {
    let (mut lo, mut hi) = (i64::MIN, i64::MAX);
    let mut visit = |e: &Expr| {
        let Expr::BinaryExpr(BinaryExpr { left, op, right }) = e else {
            return;
        };
        let (column, value, op) = match (left.as_ref(), right.as_ref()) {
            (Expr::Column(c), Expr::Literal(v, _)) => (c, v, *op),
            (Expr::Literal(v, _), Expr::Column(c)) => match op.swap() {
                Some(op) => (c, v, op),
                None => return,
            },
            _ => return,
        };
        if column.name != "timestamp" {
            return;
        }
        let Some(v) = micros_of(value) else { return };
        match op {
            Operator::Gt => lo = lo.max(v.saturating_add(1)),
            Operator::GtEq => lo = lo.max(v),
            Operator::Lt => hi = hi.min(v),
            Operator::LtEq => hi = hi.min(v.saturating_add(1)),
            Operator::Eq => {
                lo = lo.max(v);
                hi = hi.min(v.saturating_add(1));
            }
            _ => {}
        }
    };
    for f in filters {
        for conj in datafusion::logical_expr::utils::split_conjunction(f) {
            visit(conj);
        }
    }
    (lo, hi)
}
