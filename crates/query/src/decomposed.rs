//! Running a decomposed metric: its partial states per bucket come from each clean file's
//! cached partials (computed and kept on first use), and from the raw rest (files that may
//! share keys, the buffer) through the deduplicating view; one merge over all of them gives
//! the answer, the same as the metric's statement over the rows would.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::datasource::{MemTable, TableProvider};
use datafusion::logical_expr::ScalarUDF;
use meterbase_storage::{FileLayout, FileMeta, TableSnapshot};

use crate::engine::{Caller, Extras, QueryEngine, QueryError, QueryOutput};
use crate::partials_plan::{PartialKey, apart_in_time, key, plan, set_key, with_files};

/// The table the merge statement reads the partial rows from.
pub const PARTIALS_TABLE: &str = "meterbase_partials";

/// A metric's aggregation split into partial states per bucket and their merge. Both
/// partial statements bound their rows by `$start_date`/`$end_date` on `timestamp`; the
/// merge bounds `__bucket` by them, so the period must fall on bucket edges.
#[derive(Debug, Clone)]
pub struct Decomposed {
    /// The event type (table) the partials are of.
    pub slug: String,
    /// Over the table: the group keys, `__bucket` and the partial states of each group.
    pub partial_sql: String,
    /// `partial_sql` as the raw rest runs it (narrowed to one customer, say): same columns.
    pub rest_sql: String,
    /// Over `meterbase_partials`: the partial rows of many files combined into one row per
    /// group and bucket, with the same columns and types.
    pub combine_sql: String,
    /// The answer, over `meterbase_partials`.
    pub final_sql: String,
    /// Set where a group's value is held from one partial row into the next (the
    /// time-weighted sum): its partials are read from the start of history (the value held
    /// into the period), and they merge only where no two rows of one group overlap in time.
    /// Over `meterbase_partials`, one row whose first column counts the overlapping rows;
    /// where there are any (the raw rest's rows inside a file's run), the answer must read
    /// events.
    pub overlaps_sql: Option<String>,
}

/// Where a decomposed answer's rows came from: files answered by partials already kept,
/// files whose partials this query computed (and kept), how many of those went through one
/// combined set (compacted files), files read raw, and buffered rows read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Served {
    pub cached_files: usize,
    /// Files (of those kept or computed) answered through one combined set of partials.
    pub combined_files: usize,
    pub computed_files: usize,
    pub raw_files: usize,
    pub buffered_rows: usize,
}

/// What is left of a query's time cap.
struct Budget {
    deadline: Instant,
    cap: Duration,
}

impl Budget {
    fn left(&self) -> Result<Duration, QueryError> {
        let d = self.deadline.saturating_duration_since(Instant::now());
        if d.is_zero() {
            Err(QueryError::Timeout(self.cap))
        } else {
            Ok(d)
        }
    }

    /// A step's timeout is the whole query's.
    fn at_cap(&self, e: QueryError) -> QueryError {
        match e {
            QueryError::Timeout(_) => QueryError::Timeout(self.cap),
            other => other,
        }
    }
}

/// A query's rows as one batch of its own buffers: an aggregate's batches may be slices of
/// larger buffers, which would be kept (and weighed) whole.
fn one_batch(out: &QueryOutput) -> Result<RecordBatch, QueryError> {
    let schema = out
        .batches
        .first()
        .map_or(out.schema.clone(), |b| b.schema());
    arrow::compute::concat_batches(&schema, &out.batches)
        .map_err(|e| QueryError::Execution(format!("partial rows: {e}")))
}

fn ts(us: i64) -> ScalarValue {
    ScalarValue::TimestampMicrosecond(Some(us), Some("UTC".into()))
}

impl QueryEngine {
    /// Runs `d` for the period `[start, end)` (on its buckets' edges) over the current data
    /// of `tables`; `params` holds `start_date`, `end_date` and whatever else the statements
    /// use. Never for `as_of`: history reads every version. `None` where the partials cannot
    /// give the answer (`Decomposed::overlaps_sql` found overlapping rows): read events.
    pub async fn execute_decomposed(
        &self,
        caller: Caller<'_>,
        tables: Vec<TableSnapshot>,
        d: &Decomposed,
        params: HashMap<String, ScalarValue>,
        period: (i64, i64),
        functions: Vec<Arc<ScalarUDF>>,
    ) -> Result<Option<(QueryOutput, Served)>, QueryError> {
        let mut observed = self.observe(caller.kind);
        let cap = self.cap(caller.kind);
        let result = match self.admit(caller).await {
            Ok(_permit) => {
                self.decomposed(tables, d, params, period, &functions, cap)
                    .await
            }
            Err(e) => Err(e),
        };
        observed.record(&result);
        result
    }

    /// Whether `d`'s partial rows `rows` may merge: no check, or it found no overlap.
    async fn mergeable(
        &self,
        d: &Decomposed,
        schema: Option<SchemaRef>,
        rows: &[RecordBatch],
        budget: &Budget,
    ) -> Result<bool, QueryError> {
        let Some(sql) = &d.overlaps_sql else {
            return Ok(true);
        };
        let out = self
            .over_rows(schema, rows.to_vec(), sql, HashMap::new(), &[], budget)
            .await?;
        let overlapping = out
            .batches
            .iter()
            .filter(|b| b.num_columns() > 0 && b.num_rows() > 0)
            .filter_map(|b| {
                arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Int64)
                    .ok()
                    .and_then(|c| {
                        c.as_any()
                            .downcast_ref::<arrow::array::Int64Array>()
                            .map(|a| a.value(0))
                    })
            })
            .sum::<i64>();
        Ok(overlapping == 0)
    }

    async fn decomposed(
        &self,
        tables: Vec<TableSnapshot>,
        d: &Decomposed,
        params: HashMap<String, ScalarValue>,
        (start, end): (i64, i64),
        functions: &[Arc<ScalarUDF>],
        cap: Duration,
    ) -> Result<Option<(QueryOutput, Served)>, QueryError> {
        let budget = Budget {
            deadline: Instant::now() + cap,
            cap,
        };
        let snap = tables
            .iter()
            .find(|t| t.slug == d.slug)
            .ok_or_else(|| QueryError::Invalid(format!("no event type {:?}", d.slug)))?;
        // A value held into the period may come from any earlier file.
        let from = if d.overlaps_sql.is_some() {
            i64::MIN
        } else {
            start
        };
        let split = plan(snap, from, end)
            .ok_or_else(|| QueryError::Execution("a snapshot of history has no partials".into()))?;
        let mut served = Served {
            raw_files: split.raw_files,
            buffered_rows: snap.buffer.iter().map(RecordBatch::num_rows).sum(),
            ..Served::default()
        };
        // Compacted files change only at the next compaction: their partials are combined
        // once into one state per group and bucket, and kept, so a period's merge reads about
        // one row per customer whatever the number of files. Files of recent flushes come and
        // go; theirs are merged file by file. A held value reads files whose times overlap
        // as one source (`apart_in_time`), so a late file and the compacted one it lands in
        // are one unit, merged unit by unit until compaction folds it in.
        let units: Vec<Vec<FileMeta>> = if d.overlaps_sql.is_some() {
            apart_in_time(split.from_partials)
        } else {
            split.from_partials.into_iter().map(|f| vec![f]).collect()
        };
        let unit_key = |files: &[FileMeta]| match files {
            [one] => key(snap, one, &d.partial_sql),
            many => {
                let members: Vec<PartialKey> =
                    many.iter().map(|f| key(snap, f, &d.partial_sql)).collect();
                set_key(&members, &d.partial_sql)
            }
        };
        let (settled, mut fresh): (Vec<Vec<FileMeta>>, Vec<Vec<FileMeta>>) = units
            .into_iter()
            .partition(|u| u.iter().all(|f| f.layout == FileLayout::Compacted));
        let mut parts: Vec<RecordBatch> = Vec::new();
        if settled.len() > 1 {
            served.combined_files = settled.iter().map(Vec::len).sum();
            let keys: Vec<PartialKey> = settled.iter().map(|u| unit_key(u)).collect();
            let together = set_key(&keys, &d.combine_sql);
            match self.partials.as_ref().and_then(|c| c.get(&together)) {
                Some(kept) => {
                    parts.extend(kept.iter().cloned());
                    served.cached_files += served.combined_files;
                }
                None => {
                    let members = settled.iter().zip(keys);
                    let rows = self
                        .files_partials(snap, members, d, &params, &budget, &mut served)
                        .await?;
                    let combined = self
                        .over_rows(None, rows, &d.combine_sql, HashMap::new(), &[], &budget)
                        .await?;
                    let combined = one_batch(&combined)?;
                    if let Some(cache) = &self.partials {
                        cache.insert(together, Arc::new(vec![combined.clone()]));
                    }
                    parts.push(combined);
                }
            }
        } else {
            fresh.extend(settled);
        }
        let fresh: Vec<(&Vec<FileMeta>, PartialKey)> =
            fresh.iter().map(|u| (u, unit_key(u))).collect();
        parts.extend(
            self.files_partials(snap, fresh.into_iter(), d, &params, &budget, &mut served)
                .await?,
        );
        let rest = self
            .run(
                vec![split.rest],
                d.rest_sql.clone(),
                params.clone(),
                None,
                Extras::default(),
                budget.left()?,
            )
            .await
            .map_err(|e| budget.at_cap(e))?;
        parts.extend(rest.batches);
        // Units are apart in time and a unit's rows of one group are one per bucket, so
        // only the raw rest's rows can interleave with theirs.
        if !self
            .mergeable(d, Some(rest.schema.clone()), &parts, &budget)
            .await?
        {
            return Ok(None);
        }
        let out = self
            .over_rows(
                Some(rest.schema),
                parts,
                &d.final_sql,
                params,
                functions,
                &budget,
            )
            .await?;
        Ok(Some((out, served)))
    }

    /// The partial rows of `units` (each one file, or files read as one source, with its
    /// key), kept or computed (and kept), a few units at a time: each is a query of its own on
    /// the query runtime.
    async fn files_partials<'f>(
        &self,
        snap: &TableSnapshot,
        units: impl Iterator<Item = (&'f Vec<FileMeta>, PartialKey)>,
        d: &Decomposed,
        params: &HashMap<String, ScalarValue>,
        budget: &Budget,
        served: &mut Served,
    ) -> Result<Vec<RecordBatch>, QueryError> {
        let mut rows: Vec<RecordBatch> = Vec::new();
        let mut missing = Vec::new();
        for (unit, k) in units {
            match self.partials.as_ref().and_then(|c| c.get(&k)) {
                Some(kept) => {
                    rows.extend(kept.iter().cloned());
                    served.cached_files += unit.len();
                }
                None => {
                    let from = unit.iter().map(|f| f.min_ts).min().unwrap_or(i64::MIN);
                    let to = unit.iter().map(|f| f.max_ts).max().unwrap_or(i64::MAX);
                    let mut file_params = params.clone();
                    file_params.insert("start_date".into(), ts(from));
                    file_params.insert("end_date".into(), ts(to.saturating_add(1)));
                    let files = unit.len();
                    missing.push((with_files(snap, unit.clone(), false), file_params, k, files));
                }
            }
        }
        let mut missing = missing.into_iter();
        loop {
            let wave: Vec<_> = missing
                .by_ref()
                .take(self.config().threads.max(1))
                .collect();
            if wave.is_empty() {
                break;
            }
            served.computed_files += wave.iter().map(|w| w.3).sum::<usize>();
            let timeout = budget.left()?;
            let runs = wave.into_iter().map(|(one, file_params, k, _)| {
                self.file_partials(one, d.partial_sql.clone(), file_params, k, timeout)
            });
            let computed = futures::future::try_join_all(runs)
                .await
                .map_err(|e| budget.at_cap(e))?;
            rows.extend(computed.into_iter().flatten());
        }
        Ok(rows)
    }

    /// Runs `sql` over `rows` as `meterbase_partials` (of `schema`, or of the first row's).
    async fn over_rows(
        &self,
        schema: Option<SchemaRef>,
        rows: Vec<RecordBatch>,
        sql: &str,
        params: HashMap<String, ScalarValue>,
        functions: &[Arc<ScalarUDF>],
        budget: &Budget,
    ) -> Result<QueryOutput, QueryError> {
        let schema = schema
            .or_else(|| rows.first().map(RecordBatch::schema))
            .ok_or_else(|| QueryError::Execution("no partial rows and no schema".into()))?;
        // Every source's partials have the same columns; nullability may differ by plan.
        let schema = Arc::new(Schema::new(
            schema
                .fields()
                .iter()
                .map(|f| Field::new(f.name(), f.data_type().clone(), true))
                .collect::<Vec<_>>(),
        ));
        // Dealt round the query threads, so the merge runs on all of them.
        let threads = self.config().threads.max(1);
        let mut partitions: Vec<Vec<RecordBatch>> = vec![Vec::new(); threads];
        for (i, b) in rows.into_iter().enumerate() {
            let b = RecordBatch::try_new(schema.clone(), b.columns().to_vec())
                .map_err(|e| QueryError::Execution(format!("partial rows do not line up: {e}")))?;
            partitions[i % threads].push(b);
        }
        let table: Arc<dyn TableProvider> = Arc::new(
            MemTable::try_new(schema, partitions)
                .map_err(|e| QueryError::Execution(e.to_string()))?,
        );
        self.run(
            Vec::new(),
            sql.to_string(),
            params,
            None,
            Extras {
                functions,
                versions_of: None,
                memory_table: Some((PARTIALS_TABLE, &table)),
            },
            budget.left()?,
        )
        .await
        .map_err(|e| budget.at_cap(e))
    }

    /// One file's partial rows, computed and kept.
    async fn file_partials(
        &self,
        one: TableSnapshot,
        sql: String,
        params: HashMap<String, ScalarValue>,
        key: PartialKey,
        timeout: Duration,
    ) -> Result<Vec<RecordBatch>, QueryError> {
        let out = self
            .run(vec![one], sql, params, None, Extras::default(), timeout)
            .await?;
        let rows = one_batch(&out)?;
        if let Some(cache) = &self.partials {
            cache.insert(key, Arc::new(vec![rows.clone()]));
        }
        Ok(vec![rows])
    }
}
