//! Statements of a wire-protocol client: already parsed by the protocol layer (which rewrites
//! what its clients send), planned in the same read-only tenant session as `/sql` plus the
//! catalog tables that layer adds, and answered as a stream of batches instead of a collected
//! result, so a million-row fetch never sits whole in memory.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::execute_stream;
use datafusion::prelude::{SQLOptions, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use futures::{Stream, StreamExt};
use meterbase_storage::TableSnapshot;
use tokio::sync::mpsc;

use crate::cancel::{CancelToken, Stop, cancellable, stop_of};
use crate::engine::{Caller, QueryEngine, QueryError, check_params_bound};

pub use datafusion::sql::sqlparser::ast::Statement as SqlStatement;

/// What a protocol layer adds to a tenant session: the catalog tables and functions its
/// clients expect. It runs after the caller's tables are registered (so a catalog built from
/// the session lists exactly those) and must add only read-only, in-memory things.
pub type SessionSetup = dyn Fn(&SessionContext) -> Result<(), DataFusionError> + Send + Sync;

/// A statement's result columns and its parameters' types (`$1` first; `None` where nothing
/// in the statement decides one).
pub struct Described {
    pub schema: SchemaRef,
    pub params: Vec<Option<DataType>>,
}

enum Msg {
    Started(SchemaRef),
    Batch(RecordBatch),
    End,
    Failed(QueryError),
}

/// Stops the query when its reader goes away (the client disconnected or stopped reading).
struct Guard {
    token: Arc<CancelToken>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.token.cancel();
        self.task.abort();
    }
}

/// The rows of a running query, batch by batch. At most two batches wait between the query
/// and its reader: a slow reader slows the query instead of filling memory.
pub struct QueryStream {
    schema: SchemaRef,
    rx: mpsc::Receiver<Msg>,
    done: bool,
    _guard: Guard,
}

impl QueryStream {
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

impl Stream for QueryStream {
    type Item = Result<RecordBatch, QueryError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Msg::Batch(b))) => Poll::Ready(Some(Ok(b))),
            Poll::Ready(Some(Msg::End)) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Msg::Failed(e))) => {
                self.done = true;
                Poll::Ready(Some(Err(e)))
            }
            // A result that stops without saying so must not pass for a complete one.
            Poll::Ready(None) | Poll::Ready(Some(Msg::Started(_))) => {
                self.done = true;
                Poll::Ready(Some(Err(QueryError::Execution(
                    "the query stopped before its last row".into(),
                ))))
            }
        }
    }
}

fn sandbox() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

async fn plan_statement(
    ctx: &SessionContext,
    statement: &SqlStatement,
    limit: usize,
) -> Result<LogicalPlan, QueryError> {
    let df = |e| QueryError::from_df(e, limit);
    let plan = ctx
        .state()
        .statement_to_plan(DfStatement::Statement(Box::new(statement.clone())))
        .await
        .map_err(df)?;
    sandbox().verify_plan(&plan).map_err(df)?;
    Ok(plan)
}

/// `$1` … `$n` as the names `check_params_bound` and DataFusion's parameter map use.
fn positional(params: Vec<ScalarValue>) -> HashMap<String, ScalarValue> {
    params
        .into_iter()
        .enumerate()
        .map(|(i, v)| ((i + 1).to_string(), v))
        .collect()
}

impl QueryEngine {
    /// The tenant session of `/sql` with information_schema and what `setup` adds.
    fn client_context(
        &self,
        tables: &[TableSnapshot],
        as_of: Option<i64>,
        setup: &SessionSetup,
    ) -> Result<SessionContext, QueryError> {
        let ctx = self.tenant_context(tables, as_of)?;
        // Its tables are the caller's only, so information_schema lists nothing else.
        ctx.state_ref()
            .write()
            .config_mut()
            .options_mut()
            .catalog
            .information_schema = true;
        setup(&ctx).map_err(|e| QueryError::from_df(e, self.config().memory_limit))?;
        Ok(ctx)
    }

    /// Plans a statement without running it (a prepared statement's describe): under the
    /// same admission and sandbox as running it.
    pub async fn describe_statement(
        &self,
        caller: Caller<'_>,
        tables: Vec<TableSnapshot>,
        statement: &SqlStatement,
        setup: &SessionSetup,
    ) -> Result<Described, QueryError> {
        let mut watch = self.observe(caller.kind);
        let result = match self.admit(caller).await {
            Ok(_permit) => self.describe_now(&tables, statement, setup).await,
            Err(e) => Err(e),
        };
        watch.record(&result);
        result
    }

    async fn describe_now(
        &self,
        tables: &[TableSnapshot],
        statement: &SqlStatement,
        setup: &SessionSetup,
    ) -> Result<Described, QueryError> {
        let ctx = self.client_context(tables, None, setup)?;
        let plan = plan_statement(&ctx, statement, self.config().memory_limit).await?;
        let types = plan
            .get_parameter_types()
            .map_err(|e| QueryError::Invalid(e.to_string()))?;
        let mut params: Vec<Option<DataType>> = Vec::new();
        for (id, ty) in types {
            let Some(n) = id
                .strip_prefix('$')
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|n| *n >= 1)
            else {
                return Err(QueryError::Invalid(format!(
                    "parameter {id}: only positional parameters ($1, $2, …) are supported here"
                )));
            };
            if params.len() < n {
                params.resize(n, None);
            }
            params[n - 1] = ty;
        }
        Ok(Described {
            schema: Arc::new(plan.schema().as_arrow().clone()),
            params,
        })
    }

    /// Runs one read-only statement over `tables` with positional parameters and streams its
    /// rows. Returns once the query is planned and running (its errors so far as `Err`); the
    /// slot, the snapshots and the time cap are held until the last row is read or the
    /// stream is dropped, which stops the query.
    pub async fn execute_stream(
        &self,
        caller: Caller<'_>,
        tables: Vec<TableSnapshot>,
        statement: SqlStatement,
        params: Vec<ScalarValue>,
        as_of: Option<i64>,
        setup: &SessionSetup,
    ) -> Result<QueryStream, QueryError> {
        let mut watch = self.observe(caller.kind);
        let started = async {
            let permit = self.admit(caller).await?;
            let ctx = self.client_context(&tables, as_of, setup)?;
            let runtime = self.query_runtime()?;
            Ok::<_, QueryError>((permit, ctx, runtime))
        }
        .await;
        let (permit, ctx, runtime) = match started {
            Ok(s) => s,
            Err(e) => {
                watch.record::<()>(&Err(e.clone()));
                return Err(e);
            }
        };
        let timeout = self.cap(caller.kind);
        let limit = self.config().memory_limit;
        let token = CancelToken::new(Instant::now() + timeout);
        let (tx, mut rx) = mpsc::channel(2);
        let task_token = token.clone();
        let task = runtime.spawn(async move {
            let run = produce(&ctx, &statement, params, &task_token, limit, timeout, &tx);
            let result = match tokio::time::timeout(timeout, run).await {
                Err(_) => Err(QueryError::Timeout(timeout)),
                Ok(r) => r,
            };
            watch.record(&result);
            drop(watch);
            // The slot and the snapshots go before the last message, which may wait for a
            // slow reader.
            drop(permit);
            drop(tables);
            drop(ctx);
            let _ = tx
                .send(match result {
                    Ok(()) => Msg::End,
                    Err(e) => Msg::Failed(e),
                })
                .await;
        });
        let guard = Guard { token, task };
        match rx.recv().await {
            Some(Msg::Started(schema)) => Ok(QueryStream {
                schema,
                rx,
                done: false,
                _guard: guard,
            }),
            Some(Msg::Failed(e)) => Err(e),
            Some(Msg::Batch(_)) | Some(Msg::End) | None => Err(QueryError::Execution(
                "the query stopped before it started".into(),
            )),
        }
    }
}

async fn produce(
    ctx: &SessionContext,
    statement: &SqlStatement,
    params: Vec<ScalarValue>,
    token: &Arc<CancelToken>,
    limit: usize,
    timeout: Duration,
    tx: &mpsc::Sender<Msg>,
) -> Result<(), QueryError> {
    let df_err = |e: DataFusionError| match stop_of(&e) {
        Some(Stop::Deadline) => QueryError::Timeout(timeout),
        Some(Stop::Cancelled) => QueryError::Cancelled,
        None => QueryError::from_df(e, limit),
    };
    let plan = plan_statement(ctx, statement, limit).await?;
    let params = positional(params);
    check_params_bound(&plan, &params)?;
    let plan = if params.is_empty() {
        plan
    } else {
        plan.with_param_values(ParamValues::from(params))
            .map_err(df_err)?
    };
    let frame = ctx.execute_logical_plan(plan).await.map_err(df_err)?;
    let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
    let task_ctx = Arc::new(frame.task_ctx());
    let physical = frame.create_physical_plan().await.map_err(df_err)?;
    let physical = cancellable(physical, token).map_err(df_err)?;
    let mut batches = execute_stream(physical, task_ctx).map_err(df_err)?;
    if tx.send(Msg::Started(schema)).await.is_err() {
        return Err(QueryError::Cancelled);
    }
    while let Some(batch) = batches.next().await {
        let batch = batch.map_err(df_err)?;
        if batch.num_rows() == 0 {
            continue;
        }
        if tx.send(Msg::Batch(batch)).await.is_err() {
            return Err(QueryError::Cancelled);
        }
    }
    Ok(())
}
