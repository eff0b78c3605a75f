//! Tenant SQL: a fresh, read-only session per query holding only the caller's tables, on a
//! dedicated runtime, with a memory pool and a deadline.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::datasource::TableProvider;
use datafusion::datasource::view::ViewTable;
use datafusion::error::DataFusionError;
use datafusion::execution::cache::cache_manager::{CacheManagerConfig, FileMetadataCache};
use datafusion::execution::cache::default_cache::DefaultCache;
use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::object_store::{DefaultObjectStoreRegistry, ObjectStoreRegistry};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::{LogicalPlan, ScalarUDF};
use datafusion::physical_plan::collect;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use meterbase_storage::TableSnapshot;
use object_store::ObjectStore;
use thiserror::Error;
use url::Url;

use crate::admission::{Admission, Load, Permit};
use crate::cancel::{CancelToken, Stop, cancellable, stop_of};
use crate::exact_aggregates::exact_aggregates;
use crate::partial_states::{partial_state_aggregates, partial_state_functions};
use crate::partials::PartialsCache;
use crate::provider::STORE_URL;
use crate::read_cache::{CacheStats, ReadCache};
use crate::versions::{Versions, versions_table, versions_view};
use crate::view::table_view;

#[derive(Debug, Clone, Error)]
pub enum QueryError {
    /// The query is wrong: parse, plan, unknown table or column, forbidden statement, a
    /// parameter without a value.
    #[error("{0}")]
    Invalid(String),
    /// The query is well-formed but fails on the values it meets: a division by zero, a
    /// cast of text that is not a number, an unparsable timestamp.
    #[error("{0}")]
    Data(String),
    #[error("query exceeded its memory limit of {limit} bytes: {detail}")]
    MemoryLimit { limit: usize, detail: String },
    #[error("query exceeded its time limit of {0:?}")]
    Timeout(Duration),
    /// Its caller stopped waiting (the client disconnected).
    #[error("query cancelled: its client went away")]
    Cancelled,
    /// It could not start before its time cap: too many queries run or wait.
    #[error("too many queries are running; this one could not start within {0:?}")]
    Busy(Duration),
    /// Something other than the query failed (storage, a bug): the server's fault.
    #[error("query failed: {0}")]
    Execution(String),
}

/// DataFusion adds a plea to file a bug report to its internal errors, also to those a user's
/// query causes (`sum` of a string); our users cannot act on it, so the plea is cut and the
/// rest of the message (which says what is wrong) kept.
fn without_bug_plea(text: String) -> String {
    const PLEA: &str = "This issue was likely caused by a bug";
    const PLEA_END: &str = "/issues";
    let Some(at) = text.find(PLEA) else {
        return text;
    };
    let rest = &text[at..];
    let end = rest
        .find(PLEA_END)
        .map_or(rest.len(), |i| i + PLEA_END.len());
    let after = rest[end..].trim_start_matches('.').trim_start();
    let before = text[..at].trim_end();
    if after.is_empty() {
        before.to_string()
    } else {
        format!("{before} {after}")
    }
}

impl QueryError {
    pub(crate) fn from_df(e: DataFusionError, limit: usize) -> QueryError {
        use arrow::error::ArrowError as A;
        let root = e.find_root();
        match root {
            DataFusionError::ResourcesExhausted(d) => QueryError::MemoryLimit {
                limit,
                detail: d.clone(),
            },
            DataFusionError::SQL(..)
            | DataFusionError::Plan(_)
            | DataFusionError::SchemaError(..)
            | DataFusionError::Configuration(_)
            | DataFusionError::NotImplemented(_) => {
                QueryError::Invalid(without_bug_plea(root.to_string()))
            }
            DataFusionError::Execution(_) => QueryError::Data(without_bug_plea(root.to_string())),
            DataFusionError::ArrowError(a, _)
                if matches!(
                    a.as_ref(),
                    A::CastError(_)
                        | A::ParseError(_)
                        | A::ComputeError(_)
                        | A::DivideByZero
                        | A::ArithmeticOverflow(_)
                        | A::InvalidArgumentError(_)
                ) =>
            {
                QueryError::Data(root.to_string())
            }
            _ => {
                let text = e.to_string();
                if text.contains("Resources exhausted") {
                    QueryError::MemoryLimit {
                        limit,
                        detail: text,
                    }
                } else {
                    QueryError::Execution(without_bug_plea(text))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bug_report_plea_is_cut_and_the_reason_kept() {
        let text = "Internal error: Function 'sum' failed.\nThis issue was likely caused by a bug in DataFusion's code. Please help us to resolve this by filing a bug report in our issue tracker: https://github.com/apache/datafusion/issues. No function matches 'sum(Utf8)'.".to_string();
        assert_eq!(
            without_bug_plea(text),
            "Internal error: Function 'sum' failed. No function matches 'sum(Utf8)'."
        );
        assert_eq!(without_bug_plea("plain".into()), "plain");
    }
}

#[derive(Debug, Clone)]
pub struct QueryConfig {
    pub memory_limit: usize,
    pub timeout: Duration,
    pub threads: usize,
    /// Queries running at once; more wait (see `admission`).
    pub concurrency: usize,
    /// Queries of one organisation running at once: below `concurrency`, so another tenant
    /// always finds room.
    pub concurrency_per_org: usize,
    /// Bytes of Parquet data files kept in memory after queries read them (`read_cache`); 0
    /// turns the cache off.
    pub cache_bytes: u64,
    /// Bytes of per-file partial aggregates of billable metrics kept in memory (`partials`);
    /// 0 keeps none, and every usage answer reads raw rows.
    pub partials_bytes: u64,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            memory_limit: 512 << 20,
            timeout: Duration::from_secs(60),
            threads: 2,
            concurrency: 4,
            concurrency_per_org: 3,
            cache_bytes: DEFAULT_CACHE_BYTES,
            partials_bytes: DEFAULT_PARTIALS_BYTES,
        }
    }
}

/// Enough for the page indexes and hot column chunks of a month of a busy table, little next
/// to the query memory cap.
pub const DEFAULT_CACHE_BYTES: u64 = 256 << 20;

/// A day's partials of every customer of a busy table take about 1 MB; this keeps a year of
/// them for a few metrics.
pub const DEFAULT_PARTIALS_BYTES: u64 = 256 << 20;

/// A deletion's count is a courtesy next to a deletion already applied: it must not hold
/// the reply long, whatever the queries ahead of it.
const DELETION_COUNT_CAP: Duration = Duration::from_secs(5);

/// What a session offers beyond the caller's tables and the built-in functions.
#[derive(Clone, Copy, Default)]
pub(crate) struct Extras<'a> {
    /// Functions bound to one request (such as its usage windows).
    pub functions: &'a [Arc<ScalarUDF>],
    /// The event type whose every stored version the statement may read.
    pub versions_of: Option<&'a str>,
    /// A table of rows in memory, and its name (the partial rows a decomposed metric merges).
    pub memory_table: Option<(&'a str, &'a Arc<dyn TableProvider>)>,
}

pub struct QueryOutput {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

/// What a query is for: metrics and logs name it, and caps may differ by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueryKind {
    /// `POST /sql`.
    Sql,
    /// A billable metric's usage.
    MetricUsage,
    /// Planning a billable metric when it is created.
    MetricCheck,
    /// A page of `GET /usage/{slug}/events`.
    EventsList,
    /// Counting what a range deletion removed.
    DeletionCount,
    /// `GET /usage/{slug}/reconcile`: counts, sums and digests per customer and bucket.
    Reconcile,
}

impl QueryKind {
    pub const ALL: [QueryKind; 6] = [
        QueryKind::Sql,
        QueryKind::MetricUsage,
        QueryKind::MetricCheck,
        QueryKind::EventsList,
        QueryKind::DeletionCount,
        QueryKind::Reconcile,
    ];

    pub fn label(self) -> &'static str {
        match self {
            QueryKind::Sql => "sql",
            QueryKind::MetricUsage => "metric_usage",
            QueryKind::MetricCheck => "metric_check",
            QueryKind::EventsList => "events_list",
            QueryKind::DeletionCount => "deletion_count",
            QueryKind::Reconcile => "reconcile",
        }
    }
}

/// Who asks, and for what.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub org: &'a str,
    pub kind: QueryKind,
}

/// Told about every query the engine runs, from start to its end however it ends (the server
/// turns this into metrics).
pub trait QueryObserver: Send + Sync {
    fn started(&self, kind: QueryKind);
    fn finished(&self, kind: QueryKind, elapsed: Duration, result: Result<(), &QueryError>);
}

/// Observes nothing.
impl QueryObserver for () {
    fn started(&self, _: QueryKind) {}
    fn finished(&self, _: QueryKind, _: Duration, _: Result<(), &QueryError>) {}
}

/// Reports a query's end to the observer when dropped: also when the caller stops waiting.
/// Owns its observer, so a streamed query (`statement`) can carry it past the call that
/// started it.
pub(crate) struct Observed {
    observer: Arc<dyn QueryObserver>,
    kind: QueryKind,
    started: std::time::Instant,
    result: Option<Result<(), QueryError>>,
}

impl Observed {
    /// The query's outcome, reported when this is dropped.
    pub(crate) fn record<T>(&mut self, result: &Result<T, QueryError>) {
        self.result = Some(result.as_ref().map(|_| ()).map_err(Clone::clone));
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        let result = match &self.result {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(e),
            // Dropped before an answer: the client went away.
            None => Err(&QueryError::Cancelled),
        };
        self.observer
            .finished(self.kind, self.started.elapsed(), result);
    }
}

pub struct QueryEngine {
    config: QueryConfig,
    /// Always `Some` until drop; dropping a runtime inside async code panics, so drop hands it
    /// to `shutdown_background`.
    runtime: Option<tokio::runtime::Runtime>,
    registry: Arc<dyn ObjectStoreRegistry>,
    metadata_cache: Arc<FileMetadataCache>,
    read_cache: Option<Arc<ReadCache>>,
    pub(crate) partials: Option<PartialsCache>,
    observer: Arc<dyn QueryObserver>,
    admission: Arc<Admission>,
}

impl Drop for QueryEngine {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// A query on the query runtime. Dropped (the caller stopped waiting: client gone, deadline
/// passed) it cancels the query's operators and aborts its task.
struct Running<T> {
    task: tokio::task::JoinHandle<T>,
    token: Arc<CancelToken>,
}

impl<T> Drop for Running<T> {
    fn drop(&mut self) {
        self.token.cancel();
        self.task.abort();
    }
}

impl QueryEngine {
    pub fn new(
        config: QueryConfig,
        store: Arc<dyn ObjectStore>,
        observer: Arc<dyn QueryObserver>,
    ) -> Result<QueryEngine, QueryError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.threads.max(1))
            .thread_name("query")
            .enable_all()
            .build()
            .map_err(|e| QueryError::Execution(format!("cannot start the query runtime: {e}")))?;
        let registry: Arc<dyn ObjectStoreRegistry> = Arc::new(DefaultObjectStoreRegistry::new());
        let url = Url::parse(STORE_URL).map_err(|e| QueryError::Execution(e.to_string()))?;
        let read_cache = (config.cache_bytes > 0)
            .then(|| Arc::new(ReadCache::new(store.clone(), config.cache_bytes)));
        match &read_cache {
            Some(cache) => registry.register_store(&url, cache.clone()),
            None => registry.register_store(&url, store),
        };
        Ok(QueryEngine {
            runtime: Some(runtime),
            registry,
            metadata_cache: Arc::new(DefaultCache::new(256 << 20)),
            read_cache,
            partials: (config.partials_bytes > 0)
                .then(|| PartialsCache::new(config.partials_bytes)),
            observer,
            admission: Admission::new(config.concurrency, config.concurrency_per_org),
            config,
        })
    }

    pub fn config(&self) -> &QueryConfig {
        &self.config
    }

    /// What the cache of data file bytes has done; `None` when it is off.
    pub fn cache_stats(&self) -> Option<CacheStats> {
        self.read_cache.as_ref().map(|c| c.stats())
    }

    /// Bytes of per-file partial aggregates held now; `None` when none are kept.
    pub fn partials_bytes(&self) -> Option<u64> {
        self.partials.as_ref().map(PartialsCache::bytes)
    }

    /// Queries running and waiting now, and how many could not start in time so far.
    pub fn load(&self) -> Load {
        self.admission.load()
    }

    /// The runtime queries run on: `statement` streams rows from it too.
    pub(crate) fn query_runtime(&self) -> Result<&tokio::runtime::Runtime, QueryError> {
        self.runtime
            .as_ref()
            .ok_or_else(|| QueryError::Execution("query engine is shut down".into()))
    }

    /// The session `execute` runs tenant SQL in: the caller's tables and our functions.
    pub(crate) fn tenant_context(
        &self,
        tables: &[TableSnapshot],
        as_of: Option<i64>,
    ) -> Result<SessionContext, QueryError> {
        self.context(
            tables,
            as_of,
            Extras {
                functions: &[],
                versions_of: None,
                memory_table: None,
            },
        )
    }

    /// How long a query of `kind` may wait for a slot, and then run.
    pub(crate) fn cap(&self, kind: QueryKind) -> Duration {
        match kind {
            QueryKind::DeletionCount => self.config.timeout.min(DELETION_COUNT_CAP),
            _ => self.config.timeout,
        }
    }

    /// A slot for the caller's query, or `Busy` once its cap has passed waiting.
    pub(crate) async fn admit(&self, caller: Caller<'_>) -> Result<Permit, QueryError> {
        let cap = self.cap(caller.kind);
        self.admission
            .admit(caller.org, Instant::now() + cap)
            .await
            .map_err(|_| QueryError::Busy(cap))
    }

    fn context(
        &self,
        tables: &[TableSnapshot],
        as_of: Option<i64>,
        extras: Extras<'_>,
    ) -> Result<SessionContext, QueryError> {
        let df = |e| QueryError::from_df(e, self.config.memory_limit);
        let runtime = RuntimeEnvBuilder::new()
            // A fair pool caps each spillable operator at its share, so a sort spills before
            // it leaves its own merge no room: with the greedy pool the month's sort of a
            // 200M-event table took the whole cap and its merge then failed (422).
            .with_memory_pool(Arc::new(TrackConsumersPool::new(
                FairSpillPool::new(self.config.memory_limit),
                NonZeroUsize::MIN.saturating_add(4),
            )))
            .with_object_store_registry(self.registry.clone())
            .with_cache_manager(
                CacheManagerConfig::default()
                    .with_file_metadata_cache(Some(self.metadata_cache.clone())),
            )
            .build_arc()
            .map_err(df)?;
        let mut config = SessionConfig::new()
            .with_target_partitions(self.config.threads.max(1))
            .with_information_schema(false)
            .with_default_catalog_and_schema("meterbase", "public");
        let opts = config.options_mut();
        opts.execution.parquet.pushdown_filters = true;
        opts.execution.parquet.reorder_filters = true;
        opts.execution.parquet.enable_page_index = true;
        opts.execution.parquet.bloom_filter_on_read = true;
        opts.sql_parser.enable_ident_normalization = true;
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        // DataFusion 55's leaf-expression pushdown moves `data.field` into both inputs of a
        // view's union and leaves the deduplicated input with its partition columns first:
        // planning fails with "UNION field 0 have different type". Column pruning of `data`
        // still happens through the ordinary projection rules.
        ctx.remove_optimizer_rule("extract_leaf_expressions");
        ctx.remove_optimizer_rule("push_down_leaf_projections");
        ctx.register_udf(ScalarUDF::new_from_impl(
            crate::utc_trunc::UtcDateTrunc::default(),
        ));
        for f in partial_state_functions() {
            ctx.register_udf(f);
        }
        for f in extras.functions {
            ctx.register_udf(f.as_ref().clone());
        }
        if let Some((name, table)) = extras.memory_table {
            ctx.register_table(name, table.clone()).map_err(df)?;
        }
        // Billing totals must not depend on row order, partitioning or thread count.
        for aggregate in exact_aggregates()
            .into_iter()
            .chain(partial_state_aggregates())
        {
            ctx.register_udaf(aggregate);
        }
        for snap in tables {
            let plan: LogicalPlan = table_view(snap, as_of).map_err(df)?;
            let view = ViewTable::new(plan, None);
            ctx.register_table(snap.slug.as_str(), Arc::new(view))
                .map_err(df)?;
            if extras.versions_of == Some(snap.slug.as_str()) {
                for which in [Versions::Visible, Versions::Later] {
                    let plan = versions_view(snap, as_of, which).map_err(df)?;
                    ctx.register_table(versions_table(which), Arc::new(ViewTable::new(plan, None)))
                        .map_err(df)?;
                }
            }
        }
        Ok(ctx)
    }

    /// Plans a read-only statement without running it: its output schema and the tables it
    /// reads. Used to check billable metrics when they are created.
    pub async fn describe(
        &self,
        caller: Caller<'_>,
        tables: Vec<TableSnapshot>,
        sql: &str,
        params: HashMap<String, ScalarValue>,
    ) -> Result<(SchemaRef, Vec<String>), QueryError> {
        let mut observed = self.observe(caller.kind);
        let result = match self.admit(caller).await {
            Ok(_permit) => self.plan_only(tables, sql, params).await,
            Err(e) => Err(e),
        };
        observed.record(&result);
        result
    }

    pub(crate) fn observe(&self, kind: QueryKind) -> Observed {
        self.observer.started(kind);
        Observed {
            observer: self.observer.clone(),
            kind,
            started: std::time::Instant::now(),
            result: None,
        }
    }

    async fn plan_only(
        &self,
        tables: Vec<TableSnapshot>,
        sql: &str,
        params: HashMap<String, ScalarValue>,
    ) -> Result<(SchemaRef, Vec<String>), QueryError> {
        use datafusion::common::tree_node::TreeNodeRecursion;
        let limit = self.config.memory_limit;
        let df = |e| QueryError::from_df(e, limit);
        let ctx = self.context(
            &tables,
            None,
            Extras {
                functions: &[],
                versions_of: None,
                memory_table: None,
            },
        )?;
        let plan = ctx.state().create_logical_plan(sql).await.map_err(df)?;
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
            .verify_plan(&plan)
            .map_err(df)?;
        let mut reads: Vec<String> = Vec::new();
        plan.apply_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = node {
                let name = scan.table_name.table().to_string();
                if !reads.contains(&name) {
                    reads.push(name);
                }
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .map_err(df)?;
        check_params_bound(&plan, &params)?;
        let plan = if params.is_empty() {
            plan
        } else {
            plan.with_param_values(ParamValues::from(params))
                .map_err(df)?
        };
        let schema: SchemaRef = Arc::new(plan.schema().as_arrow().clone());
        // Optimized and planned for execution with the values bound, as a run would be.
        ctx.state().create_physical_plan(&plan).await.map_err(df)?;
        Ok((schema, reads))
    }

    /// Runs one read-only statement over `tables` (the caller's whole world).
    pub async fn execute(
        &self,
        caller: Caller<'_>,
        tables: Vec<TableSnapshot>,
        sql: String,
        params: HashMap<String, ScalarValue>,
        as_of: Option<i64>,
    ) -> Result<QueryOutput, QueryError> {
        self.execute_with(caller, tables, sql, params, as_of, Vec::new())
            .await
    }

    /// `execute` where the statement may also read every stored version of event type
    /// `slug` (`meterbase_versions`, and `meterbase_later_versions` for those that arrived
    /// after `as_of`), to explain what the view leaves out. Internal: never for tenant SQL.
    pub async fn execute_on_versions(
        &self,
        caller: Caller<'_>,
        tables: Vec<TableSnapshot>,
        slug: &str,
        sql: String,
        params: HashMap<String, ScalarValue>,
        as_of: Option<i64>,
    ) -> Result<QueryOutput, QueryError> {
        let mut observed = self.observe(caller.kind);
        let result = match self.admit(caller).await {
            Ok(_permit) => {
                let extras = Extras {
                    functions: &[],
                    versions_of: Some(slug),
                    memory_table: None,
                };
                self.run(tables, sql, params, as_of, extras, self.cap(caller.kind))
                    .await
            }
            Err(e) => Err(e),
        };
        observed.record(&result);
        result
    }

    /// `execute` with SQL functions of the caller's own that the statement may call (bound
    /// to one request, such as its usage windows).
    pub async fn execute_with(
        &self,
        caller: Caller<'_>,
        tables: Vec<TableSnapshot>,
        sql: String,
        params: HashMap<String, ScalarValue>,
        as_of: Option<i64>,
        functions: Vec<Arc<ScalarUDF>>,
    ) -> Result<QueryOutput, QueryError> {
        let mut observed = self.observe(caller.kind);
        let result = match self.admit(caller).await {
            Ok(_permit) => {
                self.run(
                    tables,
                    sql,
                    params,
                    as_of,
                    Extras {
                        functions: &functions,
                        versions_of: None,
                        memory_table: None,
                    },
                    self.cap(caller.kind),
                )
                .await
            }
            Err(e) => Err(e),
        };
        observed.record(&result);
        result
    }

    pub(crate) async fn run(
        &self,
        tables: Vec<TableSnapshot>,
        sql: String,
        params: HashMap<String, ScalarValue>,
        as_of: Option<i64>,
        extras: Extras<'_>,
        timeout: Duration,
    ) -> Result<QueryOutput, QueryError> {
        let ctx = self.context(&tables, as_of, extras)?;
        let limit = self.config.memory_limit;
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| QueryError::Execution("query engine is shut down".into()))?;
        let token = CancelToken::new(Instant::now() + timeout);
        let task_token = token.clone();
        let task = runtime.spawn(async move {
            // The snapshots (their manifests) live as long as the query: files they list are
            // not deleted by compaction while it reads them.
            let _snapshots = tables;
            let df_err = |e: DataFusionError| match stop_of(&e) {
                Some(Stop::Deadline) => QueryError::Timeout(timeout),
                Some(Stop::Cancelled) => QueryError::Cancelled,
                None => QueryError::from_df(e, limit),
            };
            let options = SQLOptions::new()
                .with_allow_ddl(false)
                .with_allow_dml(false)
                .with_allow_statements(false);
            let df = ctx.sql_with_options(&sql, options).await.map_err(df_err)?;
            check_params_bound(df.logical_plan(), &params)?;
            let df = if params.is_empty() {
                df
            } else {
                df.with_param_values(ParamValues::from(params))
                    .map_err(df_err)?
            };
            let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
            let task_ctx = Arc::new(df.task_ctx());
            let plan = df.create_physical_plan().await.map_err(df_err)?;
            let plan = cancellable(plan, &task_token).map_err(df_err)?;
            let batches = collect(plan, task_ctx).await.map_err(df_err)?;
            Ok::<_, QueryError>(QueryOutput { schema, batches })
        });
        let mut guard = Running { task, token };
        let joined = tokio::time::timeout(timeout, &mut guard.task).await;
        match joined {
            Err(_) => Err(QueryError::Timeout(timeout)),
            Ok(Err(join)) => Err(QueryError::Execution(format!("query task ended: {join}"))),
            Ok(Ok(result)) => result,
        }
    }
}

/// Every `$name` the statement uses must have a value: DataFusion reports a missing one only
/// when it meets it during execution, as an internal error.
pub(crate) fn check_params_bound(
    plan: &LogicalPlan,
    params: &HashMap<String, ScalarValue>,
) -> Result<(), QueryError> {
    let used = plan
        .get_parameter_types()
        .map_err(|e| QueryError::Invalid(e.to_string()))?;
    let mut missing: Vec<&str> = used
        .keys()
        .map(|id| id.trim_start_matches('$'))
        .filter(|name| !params.contains_key(*name))
        .collect();
    missing.sort_unstable();
    match missing.as_slice() {
        [] => Ok(()),
        [one] => Err(QueryError::Invalid(format!(
            "parameter ${one} has no value: add \"{one}\" to params"
        ))),
        many => Err(QueryError::Invalid(format!(
            "parameters {} have no value: add them to params",
            many.iter()
                .map(|n| format!("${n}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}
