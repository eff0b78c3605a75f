//! A SQL metric's statement rewritten to answer every window of a request in one query, where
//! its shape makes that the same answer as one query per window.
//!
//! The shape: one `SELECT … FROM <one table> WHERE … AND e >= $start_date AND e < $end_date
//! … GROUP BY …`, where `e` is one column, the period placeholders appear nowhere else, and
//! nothing sees rows across groups (no window functions, `LIMIT`, `DISTINCT`, joins, CTEs or
//! set operations). Then a row falls in window `w` of the per-window queries exactly when
//! `w.start <= e < w.end`, and grouping also by `meterbase_window_start(e)` (the window
//! holding `e`) with the placeholders bound to the whole request splits every group into the
//! per-window groups, each aggregating the same rows. Anything else keeps one query per
//! window: the rewrite never guesses.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, GroupByExpr, Ident, SelectItem, SetExpr, Statement, TableFactor, Value,
    visit_expressions,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

use crate::window_functions::WINDOW_START;

/// The column the rewritten statement adds: the window each row belongs to.
pub const WINDOW_COLUMN: &str = "window_start";

const START: &str = "$start_date";
const END: &str = "$end_date";

fn placeholder(e: &Expr) -> Option<&str> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::Placeholder(p) => Some(p.as_str()),
            _ => None,
        },
        _ => None,
    }
}

/// `e` of a conjunct `e >= $start_date` (or `$start_date <= e`), and of `e < $end_date` (or
/// `$end_date > e`).
fn bound_of(conjunct: &Expr) -> Option<(&'static str, &Expr)> {
    let Expr::BinaryOp { left, op, right } = conjunct else {
        return None;
    };
    match (placeholder(left), op, placeholder(right)) {
        (None, BinaryOperator::GtEq, Some(START)) => Some((START, left)),
        (Some(START), BinaryOperator::LtEq, None) => Some((START, right)),
        (None, BinaryOperator::Lt, Some(END)) => Some((END, left)),
        (Some(END), BinaryOperator::Gt, None) => Some((END, right)),
        _ => None,
    }
}

fn conjuncts<'a>(e: &'a Expr, out: &mut Vec<&'a Expr>) {
    match e {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            conjuncts(left, out);
            conjuncts(right, out);
        }
        Expr::Nested(inner) => conjuncts(inner, out),
        other => out.push(other),
    }
}

/// `bound` (a metric's SQL with its placeholders bound as `$start_date` …) rewritten to add a
/// `window_start` column and group by it, or `None` when its shape does not allow it.
pub fn windowed(bound: &str) -> Option<String> {
    let mut statements = Parser::parse_sql(&GenericDialect {}, bound).ok()?;
    let [Statement::Query(query)] = statements.as_mut_slice() else {
        return None;
    };
    let plain_query = query.with.is_none()
        && query.limit_clause.is_none()
        && query.fetch.is_none()
        && query.locks.is_empty()
        && query.for_clause.is_none()
        && query.settings.is_none()
        && query.format_clause.is_none()
        && query.pipe_operators.is_empty();
    if !plain_query {
        return None;
    }
    // The placeholders appear once each, and no expression sees across groups.
    let mut starts = 0;
    let mut ends = 0;
    let mut across_groups = false;
    let _ = visit_expressions(&*query, |e: &Expr| {
        match placeholder(e) {
            Some(START) => starts += 1,
            Some(END) => ends += 1,
            _ => {}
        }
        if let Expr::Function(f) = e {
            across_groups |= f.over.is_some();
        }
        across_groups |=
            matches!(e, Expr::Identifier(i) if i.value.eq_ignore_ascii_case(WINDOW_COLUMN));
        ControlFlow::<()>::Continue(())
    });
    if starts != 1 || ends != 1 || across_groups {
        return None;
    }
    let SetExpr::Select(select) = query.body.as_mut() else {
        return None;
    };
    let plain_select = select.distinct.is_none()
        && select.top.is_none()
        && select.into.is_none()
        && select.exclude.is_none()
        && select.select_modifiers.is_none()
        && select.lateral_views.is_empty()
        && select.prewhere.is_none()
        && select.connect_by.is_empty()
        && select.cluster_by.is_empty()
        && select.distribute_by.is_empty()
        && select.sort_by.is_empty()
        && select.named_window.is_empty()
        && select.qualify.is_none()
        && select.value_table_mode.is_none();
    let one_table = matches!(select.from.as_slice(),
        [t] if t.joins.is_empty() && matches!(t.relation, TableFactor::Table { .. }));
    if !plain_select || !one_table {
        return None;
    }
    let mut parts = Vec::new();
    conjuncts(select.selection.as_ref()?, &mut parts);
    let bounds: Vec<(&str, &Expr)> = parts.iter().filter_map(|c| bound_of(c)).collect();
    let column = match bounds.as_slice() {
        [(a, e1), (b, e2)] if a != b && e1 == e2 => (*e1).clone(),
        _ => return None,
    };
    if !matches!(column, Expr::Identifier(_) | Expr::CompoundIdentifier(_)) {
        return None;
    }
    // Named columns only: a `*` would change with the added one, and an existing column
    // called window_start would meet it.
    for item in &select.projection {
        match item {
            SelectItem::UnnamedExpr(_) => {}
            SelectItem::ExprWithAlias { alias, .. }
                if !alias.value.eq_ignore_ascii_case(WINDOW_COLUMN) => {}
            _ => return None,
        }
    }
    let GroupByExpr::Expressions(keys, modifiers) = &mut select.group_by else {
        return None;
    };
    if keys.is_empty() || !modifiers.is_empty() {
        // Without GROUP BY an aggregate answers an empty window with a row; grouped, it would
        // not.
        return None;
    }
    let window = Parser::new(&GenericDialect {})
        .try_with_sql(&format!("{WINDOW_START}({column})"))
        .ok()?
        .parse_expr()
        .ok()?;
    keys.push(window.clone());
    select.projection.push(SelectItem::ExprWithAlias {
        expr: window,
        alias: Ident::new(WINDOW_COLUMN),
    });
    Some(query.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MONTHLY: &str = "SELECT customer_id, sum(amount) AS value FROM t \
        WHERE timestamp >= $start_date AND timestamp < $end_date GROUP BY customer_id";

    #[test]
    fn a_grouped_aggregate_over_the_period_gains_the_window() {
        let sql = windowed(MONTHLY).unwrap();
        assert_eq!(
            sql,
            "SELECT customer_id, sum(amount) AS value, meterbase_window_start(timestamp) AS window_start \
             FROM t WHERE timestamp >= $start_date AND timestamp < $end_date \
             GROUP BY customer_id, meterbase_window_start(timestamp)"
        );
        // Bounds written the other way round, among other conditions, in parentheses.
        let sql = windowed(
            "SELECT customer_id, count(*) AS value FROM t WHERE (region = 'eu' AND $start_date <= t.ts) \
             AND $end_date > t.ts AND customer_id = $customer_id GROUP BY 1 HAVING count(*) > 1 ORDER BY 1",
        )
        .unwrap();
        assert!(
            sql.contains("GROUP BY 1, meterbase_window_start(t.ts)"),
            "{sql}"
        );
    }

    #[test]
    fn shapes_that_see_across_windows_keep_one_query_per_window() {
        for sql in [
            // The period used beyond the two bounds.
            "SELECT customer_id, sum(amount * ($end_date - timestamp)) AS value FROM t WHERE timestamp >= $start_date AND timestamp < $end_date GROUP BY 1",
            // Bounds that are not the half-open period, or on different columns.
            "SELECT customer_id, sum(amount) AS value FROM t WHERE timestamp > $start_date AND timestamp < $end_date GROUP BY 1",
            "SELECT customer_id, sum(amount) AS value FROM t WHERE timestamp >= $start_date AND timestamp <= $end_date GROUP BY 1",
            "SELECT customer_id, sum(amount) AS value FROM t WHERE a >= $start_date AND b < $end_date GROUP BY 1",
            "SELECT customer_id, sum(amount) AS value FROM t WHERE timestamp >= $start_date OR timestamp < $end_date GROUP BY 1",
            // Rows seen across groups or windows.
            "SELECT customer_id, sum(amount) AS value FROM t WHERE timestamp >= $start_date AND timestamp < $end_date GROUP BY 1 LIMIT 5",
            "SELECT customer_id, sum(amount) OVER (ORDER BY timestamp) AS value FROM t WHERE timestamp >= $start_date AND timestamp < $end_date GROUP BY 1",
            "SELECT DISTINCT customer_id, sum(amount) AS value FROM t WHERE timestamp >= $start_date AND timestamp < $end_date GROUP BY 1",
            "SELECT sum(amount) AS value FROM t WHERE timestamp >= $start_date AND timestamp < $end_date",
            "SELECT a.customer_id, sum(amount) AS value FROM t a JOIN u b ON a.customer_id = b.customer_id WHERE a.timestamp >= $start_date AND a.timestamp < $end_date GROUP BY 1",
            "WITH x AS (SELECT * FROM t) SELECT customer_id, sum(amount) AS value FROM x WHERE timestamp >= $start_date AND timestamp < $end_date GROUP BY 1",
            "SELECT customer_id, sum(amount) AS value FROM (SELECT * FROM t) s WHERE timestamp >= $start_date AND timestamp < $end_date GROUP BY 1",
            "SELECT customer_id, sum(amount) AS value FROM t WHERE timestamp >= $start_date AND timestamp < $end_date GROUP BY 1 UNION ALL SELECT 'x', 1",
            // A window_start of its own, or a star.
            "SELECT customer_id, sum(amount) AS window_start FROM t WHERE timestamp >= $start_date AND timestamp < $end_date GROUP BY 1",
            "SELECT * FROM t WHERE timestamp >= $start_date AND timestamp < $end_date GROUP BY 1",
            // No period at all, or not a query.
            "SELECT customer_id, sum(amount) AS value FROM t GROUP BY 1",
            "SELECT customer_id, sum(amount) AS value FROM t WHERE timestamp >= $start_date AND timestamp < $end_date GROUP BY 1; SELECT 1",
            "not sql",
        ] {
            assert_eq!(windowed(sql), None, "{sql}");
        }
    }
}
