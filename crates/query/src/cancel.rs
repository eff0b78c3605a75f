//! Stopping a query where it runs. Aborting the query's task was not enough: DataFusion's
//! operators run inside the polls of their parents, and an aggregate over a cross join or a
//! many-to-many hash join gets a ready batch on every poll, so its task never yielded to let
//! the abort in, and the query's threads kept spinning minutes after the client had its 422.
//! So every operator of the physical plan is wrapped: once the query is cancelled (its
//! deadline passed, or its caller stopped waiting), the next batch any operator hands on is
//! an error, which ends every stream of the plan. The wrapper also spends tokio's cooperative
//! budget per batch, so a runtime's other tasks (other tenants' queries) get their turn.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::coop::make_cooperative;
use datafusion::physical_plan::execution_plan::{
    CardinalityEffect, ChildrenPropertiesMode, ReplaceChildrenOptions,
};
use datafusion::physical_plan::statistics::{ChildStats, StatisticsArgs};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, Statistics,
};
use futures::Stream;

/// Why a query stopped before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    Deadline,
    Cancelled,
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stop::Deadline => "the query passed its time limit",
            Stop::Cancelled => "the query was cancelled",
        })
    }
}

impl std::error::Error for Stop {}

/// Shared by every operator of one query.
#[derive(Debug)]
pub(crate) struct CancelToken {
    cancelled: AtomicBool,
    deadline: Instant,
}

impl CancelToken {
    pub(crate) fn new(deadline: Instant) -> Arc<CancelToken> {
        Arc::new(CancelToken {
            cancelled: AtomicBool::new(false),
            deadline,
        })
    }

    pub(crate) fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    /// Checked on every batch: a flag and a clock read (vDSO, ~20 ns against batches of
    /// thousands of rows). The deadline is checked here, in the operators, because a timer
    /// on the query's runtime cannot fire while its workers are all busy.
    fn stop(&self) -> Option<Stop> {
        if self.cancelled.load(Ordering::Relaxed) {
            Some(Stop::Cancelled)
        } else if Instant::now() >= self.deadline {
            Some(Stop::Deadline)
        } else {
            None
        }
    }
}

/// Whether `e` is a query stopped by its token, and why.
pub(crate) fn stop_of(e: &DataFusionError) -> Option<Stop> {
    let mut found = None;
    visit(e, &mut |err| {
        if let DataFusionError::External(inner) = err
            && let Some(stop) = inner.downcast_ref::<Stop>()
        {
            found = Some(*stop);
        }
    });
    found
}

fn visit(e: &DataFusionError, f: &mut impl FnMut(&DataFusionError)) {
    f(e);
    match e {
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            visit(inner, f)
        }
        DataFusionError::Shared(inner) => visit(inner, f),
        DataFusionError::Collection(all) => all.iter().for_each(|e| visit(e, f)),
        _ => {}
    }
}

/// `plan` with every operator wrapped to stop when `token` says so.
pub(crate) fn cancellable(
    plan: Arc<dyn ExecutionPlan>,
    token: &Arc<CancelToken>,
) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        Ok(Transformed::yes(
            Arc::new(CancelExec::new(node, token.clone())) as Arc<dyn ExecutionPlan>,
        ))
    })
    .map(|t| t.data)
}

#[derive(Debug)]
struct CancelExec {
    input: Arc<dyn ExecutionPlan>,
    token: Arc<CancelToken>,
}

impl CancelExec {
    fn new(input: Arc<dyn ExecutionPlan>, token: Arc<CancelToken>) -> CancelExec {
        CancelExec { input, token }
    }
}

impl DisplayAs for CancelExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CancelExec")
    }
}

impl ExecutionPlan for CancelExec {
    fn name(&self) -> &str {
        "CancelExec"
    }

    /// The wrapped operator's own properties, the same `Arc`: nothing about the plan changes.
    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    /// Code that asks what an operator is sees the wrapped one.
    fn downcast_delegate(&self) -> Option<&dyn ExecutionPlan> {
        Some(self.input.as_ref())
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal(format!(
                "CancelExec takes one child, got {}",
                children.len()
            )));
        }
        Ok(Arc::new(CancelExec::new(
            children.swap_remove(0),
            self.token.clone(),
        )))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if let Some(stop) = self.token.stop() {
            return Err(DataFusionError::External(Box::new(stop)));
        }
        let inner = self.input.execute(partition, context)?;
        Ok(make_cooperative(Box::pin(CancelStream {
            schema: inner.schema(),
            inner,
            token: self.token.clone(),
            done: false,
        })))
    }

    fn child_stats_requests(&self, partition: Option<usize>) -> Vec<ChildStats> {
        vec![ChildStats::At(partition)]
    }

    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        _args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        Ok(Arc::clone(&input_stats[0]))
    }

    fn supports_limit_pushdown(&self) -> bool {
        true
    }

    fn cardinality_effect(&self) -> CardinalityEffect {
        CardinalityEffect::Equal
    }
}

struct CancelStream {
    schema: SchemaRef,
    inner: SendableRecordBatchStream,
    token: Arc<CancelToken>,
    done: bool,
}

impl Stream for CancelStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Some(stop) = self.token.stop() {
            self.done = true;
            return Poll::Ready(Some(Err(DataFusionError::External(Box::new(stop)))));
        }
        self.inner.as_mut().poll_next(cx)
    }
}

impl RecordBatchStream for CancelStream {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}
