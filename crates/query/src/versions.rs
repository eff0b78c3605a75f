//! Every stored version of one event type's rows, for explaining a number: what the view
//! (`view`) hides — replaced versions, deleted rows, rows that arrived after `as_of` — is
//! shown here with `_seq` and `_ingested_at`, so a query can say why each row was left out.

use std::sync::Arc;

use datafusion::common::{Result, ScalarValue};
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::{LogicalPlan, LogicalPlanBuilder, col, lit};
use meterbase_schema::{INGESTED_AT_COLUMN, SEQ_COLUMN};
use meterbase_storage::{ROW_BITS, TableSnapshot};

use crate::provider::RawSource;
use crate::view::with_data;

/// Which versions a plan holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Versions {
    /// Every version the data held at `as_of` (all of them without `as_of`), none deduplicated,
    /// masked or deleted.
    Visible,
    /// The versions that arrived after `as_of` (none without it).
    Later,
}

/// The name a statement reads `which` under.
pub fn versions_table(which: Versions) -> &'static str {
    match which {
        Versions::Visible => "meterbase_versions",
        Versions::Later => "meterbase_later_versions",
    }
}

pub fn versions_view(
    snap: &TableSnapshot,
    as_of: Option<i64>,
    which: Versions,
) -> Result<LogicalPlan> {
    // An upload committed after `as_of` was invisible then, whatever its rows' arrival times.
    let files = snap
        .manifest
        .files
        .iter()
        .filter(|f| {
            which == Versions::Later || as_of.is_none_or(|t| f.visible_from.is_none_or(|v| v <= t))
        })
        .cloned()
        .collect();
    let source = Arc::new(RawSource {
        schema: snap.schema.clone(),
        files,
        batches: snap.buffer.clone(),
        apply_vectors: false,
        paths: snap.paths.clone(),
    });
    let mut builder =
        LogicalPlanBuilder::scan(snap.slug.as_str(), provider_as_source(source), None)?;
    let at = |t: i64| {
        lit(ScalarValue::TimestampMicrosecond(
            Some(t),
            Some("UTC".into()),
        ))
    };
    builder = match (which, as_of) {
        (Versions::Visible, Some(t)) => builder.filter(col(INGESTED_AT_COLUMN).lt_eq(at(t)))?,
        (Versions::Visible, None) => builder,
        (Versions::Later, Some(t)) => builder.filter(col(INGESTED_AT_COLUMN).gt(at(t)))?,
        (Versions::Later, None) => builder.filter(lit(false))?,
    };
    if let Some(before) = snap.before_seq {
        builder = builder.filter(col(SEQ_COLUMN).lt(lit(before << ROW_BITS)))?;
    }
    with_data(builder, &snap.schema, true)?.build()
}
