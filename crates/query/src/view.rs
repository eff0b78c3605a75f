//! The logical view of one event type: raw sources split into those that cannot hold two
//! versions of a key (read straight) and those that may (deduplicated, latest `_seq` wins).

use std::sync::Arc;

use datafusion::common::{Result, ScalarValue};
use datafusion::datasource::provider_as_source;
use datafusion::functions::core::expr_fn::named_struct;
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::expr::Sort;
use datafusion::logical_expr::{Expr, ExprFunctionExt, LogicalPlan, LogicalPlanBuilder, col, lit};
use meterbase_schema::{INGESTED_AT_COLUMN, SEQ_COLUMN};
use meterbase_storage::{FileMeta, ROW_BITS, TableSnapshot};

use crate::provider::RawSource;

const ROW_NUMBER: &str = "__meterbase_version";

/// Where each source goes: straight (cannot hold a second version of any of its keys) or
/// through deduplication.
pub(crate) struct Split {
    pub clean: Vec<FileMeta>,
    pub dirty: Vec<FileMeta>,
    pub buffer_clean: bool,
}

/// Sources whose time ranges overlap another source, or that may repeat a key themselves,
/// are deduplicated; the rest are read straight.
pub(crate) fn split_sources(snap: &TableSnapshot, as_of: Option<i64>) -> Split {
    // Files of an upload committed after `as_of` were invisible then, whatever their rows'
    // arrival instants.
    let visible: Vec<FileMeta>;
    let files = match as_of {
        Some(t) if snap.manifest.files.iter().any(|f| f.visible_from > Some(t)) => {
            visible = snap
                .manifest
                .files
                .iter()
                .filter(|f| f.visible_from.is_none_or(|v| v <= t))
                .cloned()
                .collect();
            &visible
        }
        _ => &snap.manifest.files,
    };
    let has_buffer = !snap.buffer.is_empty();
    // Reading the current data, deletion vectors hide replaced versions: a file whose
    // replaced rows are all masked (`live_resolved`) is read straight. Any other view reads
    // every version and deduplicates.
    let now = as_of.is_none() && snap.before_seq.is_none();
    let clean = |f: &FileMeta| {
        if now {
            f.clean_now()
        } else {
            f.clean_at_any_time()
        }
    };
    if !snap.def.key_has_time() {
        // Without the timestamp in the key, two versions can sit anywhere in time: only a
        // single source without repeats can be read straight.
        let single = match (files.len(), has_buffer) {
            (1, false) => !files[0].has_duplicate_keys || (now && files[0].live_resolved),
            (0, true) => !snap.buffer_has_duplicates,
            _ => false,
        };
        return if single {
            Split {
                clean: files.clone(),
                dirty: Vec::new(),
                buffer_clean: true,
            }
        } else {
            Split {
                clean: Vec::new(),
                dirty: files.clone(),
                buffer_clean: false,
            }
        };
    }
    // Files already know whether another file may share a key with them (checked when they
    // were written); the buffer is checked here, by time overlap, against every file.
    let buffer_range = if has_buffer {
        snap.buffer_ts_range
    } else {
        None
    };
    let mut split = Split {
        clean: Vec::new(),
        dirty: Vec::new(),
        buffer_clean: !snap.buffer_has_duplicates,
    };
    for f in files {
        let overlaps_buffer =
            buffer_range.is_some_and(|(lo, hi)| meterbase_storage::file_overlaps(f, lo, hi));
        if overlaps_buffer {
            split.buffer_clean = false;
        }
        if overlaps_buffer || !clean(f) {
            split.dirty.push(f.clone());
        } else {
            split.clean.push(f.clone());
        }
    }
    split
}

/// The plan a table name resolves to. `as_of` (µs) hides every version that arrived later.
pub fn table_view(snap: &TableSnapshot, as_of: Option<i64>) -> Result<LogicalPlan> {
    let Split {
        clean,
        dirty,
        buffer_clean,
    } = split_sources(snap, as_of);
    // Masked rows are versions replaced by live rows: hidden from the current data only.
    let apply_vectors = as_of.is_none() && snap.before_seq.is_none();
    let (clean_batches, dirty_batches) = if buffer_clean {
        (snap.buffer.clone(), Vec::new())
    } else {
        (Vec::new(), snap.buffer.clone())
    };
    let schema = snap.schema.clone();
    let before_seq = snap.before_seq.map(|s| s << ROW_BITS);
    let as_of_filter = |b: LogicalPlanBuilder| -> Result<LogicalPlanBuilder> {
        let b = match as_of {
            Some(t) => b.filter(col(INGESTED_AT_COLUMN).lt_eq(lit(
                ScalarValue::TimestampMicrosecond(Some(t), Some("UTC".into())),
            )))?,
            None => b,
        };
        match before_seq {
            Some(s) => b.filter(col(SEQ_COLUMN).lt(lit(s))),
            None => Ok(b),
        }
    };
    let mut parts: Vec<LogicalPlan> = Vec::new();
    if !clean.is_empty()
        || !clean_batches.is_empty()
        || (dirty.is_empty() && dirty_batches.is_empty())
    {
        let src = Arc::new(RawSource {
            schema: schema.clone(),
            files: clean,
            batches: clean_batches,
            apply_vectors,
            paths: snap.paths.clone(),
        });
        parts.push(
            as_of_filter(LogicalPlanBuilder::scan(
                snap.slug.as_str(),
                provider_as_source(src),
                None,
            )?)?
            .build()?,
        );
    }
    if !dirty.is_empty() || !dirty_batches.is_empty() {
        let src = Arc::new(RawSource {
            schema: schema.clone(),
            files: dirty,
            batches: dirty_batches,
            apply_vectors,
            paths: snap.paths.clone(),
        });
        let keys: Vec<Expr> = snap
            .def
            .unique_key
            .iter()
            .map(|k| col(k.as_str()))
            .collect();
        let version = row_number()
            .partition_by(keys)
            .order_by(vec![Sort::new(col(SEQ_COLUMN), false, false)])
            .build()?
            .alias(ROW_NUMBER);
        let columns: Vec<Expr> = schema
            .fields()
            .iter()
            .map(|f| col(f.name().as_str()))
            .collect();
        let plan = as_of_filter(LogicalPlanBuilder::scan(
            snap.slug.as_str(),
            provider_as_source(src),
            None,
        )?)?
        .window(vec![version])?
        .filter(col(ROW_NUMBER).eq(lit(1u64)))?
        .project(columns)?
        .build()?;
        parts.push(plan);
    }
    let mut builder = LogicalPlanBuilder::from(parts.remove(0));
    for p in parts {
        builder = builder.union(p)?;
    }
    if let Some(deleted) = deleted_rows(snap, as_of) {
        builder = builder.filter(Expr::Not(Box::new(deleted)))?;
    }
    with_data(builder, &schema, false)?.build()
}

/// Projects the table's columns (with `_seq` when `keep_seq`) and the data fields gathered
/// in a `data` struct, as `/sql` shows them.
pub(crate) fn with_data(
    builder: LogicalPlanBuilder,
    schema: &arrow::datatypes::SchemaRef,
    keep_seq: bool,
) -> Result<LogicalPlanBuilder> {
    let mut out: Vec<Expr> = schema
        .fields()
        .iter()
        .filter(|f| keep_seq || f.name() != SEQ_COLUMN)
        .map(|f| col(f.name().as_str()))
        .collect();
    let fields: Vec<&str> = schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .filter(|n| {
            !matches!(
                *n,
                "customer_id" | "timestamp" | INGESTED_AT_COLUMN | SEQ_COLUMN
            )
        })
        .collect();
    if !fields.is_empty() {
        let args: Vec<Expr> = fields.iter().flat_map(|f| [lit(*f), col(*f)]).collect();
        out.push(named_struct(args).alias("data"));
    }
    builder.project(out)
}

/// Rows removed by the deletions in force (made before `as_of` and before `before_seq`):
/// the latest version of a key is gone when a deletion matching it came after it.
fn deleted_rows(snap: &TableSnapshot, as_of: Option<i64>) -> Option<Expr> {
    let ts = |v: i64| {
        lit(ScalarValue::TimestampMicrosecond(
            Some(v),
            Some("UTC".into()),
        ))
    };
    snap.tombstones
        .iter()
        .filter(|t| as_of.is_none_or(|a| t.at <= a))
        .filter(|t| snap.before_seq.is_none_or(|b| t.seq < b))
        .map(|t| {
            let mut e = col(SEQ_COLUMN).lt(lit(t.seq << ROW_BITS));
            if let Some(c) = &t.customer_id {
                e = e.and(col("customer_id").eq(lit(c.as_str())));
            }
            if let Some(from) = t.from {
                e = e.and(col("timestamp").gt_eq(ts(from)));
            }
            if let Some(to) = t.to {
                e = e.and(col("timestamp").lt(ts(to)));
            }
            e
        })
        .reduce(Expr::or)
}
