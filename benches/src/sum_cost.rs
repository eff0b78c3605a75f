//! What exact summation costs: the same `GROUP BY` sum over in-memory batches, once with
//! DataFusion's float `sum` and once with meterbase's exact one, in turns, on the same
//! threads. Reading and filtering are left out so the difference is the accumulator alone.

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Float64Array, Int64Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::BenchError;

const QUERY: &str = "SELECT g, sum(v) AS total FROM t GROUP BY g";

fn table(rows: usize, groups: i64, threads: usize) -> Result<Arc<MemTable>, BenchError> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("g", DataType::Int64, false),
        Field::new("v", DataType::Float64, false),
    ]));
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let batch_rows = 8192;
    let mut partitions = vec![Vec::new(); threads.max(1)];
    for (k, start) in (0..rows).step_by(batch_rows).enumerate() {
        let n = batch_rows.min(rows - start);
        let g: Int64Array = (0..n).map(|_| rng.random_range(0..groups)).collect();
        // Usage-like magnitudes: thousandths of an hour up to a few hundred.
        let v: Float64Array = (0..n)
            .map(|_| (rng.random_range(1..500_000) as f64) / 1000.0)
            .collect();
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(g), Arc::new(v)])?;
        partitions[k % threads.max(1)].push(batch);
    }
    MemTable::try_new(schema, partitions)
        .map(Arc::new)
        .map_err(|e| BenchError::Other(e.to_string()))
}

async fn time_once(ctx: &SessionContext) -> Result<f64, BenchError> {
    let started = Instant::now();
    let batches = ctx
        .sql(QUERY)
        .await
        .map_err(|e| BenchError::Other(e.to_string()))?
        .collect()
        .await
        .map_err(|e| BenchError::Other(e.to_string()))?;
    std::hint::black_box(batches);
    Ok(started.elapsed().as_secs_f64())
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Runs both sums `runs` times each, alternating, and reports the medians.
pub async fn measure(
    rows: usize,
    groups: i64,
    threads: usize,
    runs: usize,
) -> Result<Value, BenchError> {
    let data = table(rows, groups, threads)?;
    let context = |exact: bool| -> Result<SessionContext, BenchError> {
        let ctx =
            SessionContext::new_with_config(SessionConfig::new().with_target_partitions(threads));
        if exact {
            for f in meterbase_query::exact_aggregates() {
                ctx.register_udaf(f);
            }
        }
        ctx.register_table("t", data.clone())
            .map_err(|e| BenchError::Other(e.to_string()))?;
        Ok(ctx)
    };
    let (builtin, exact) = (context(false)?, context(true)?);
    time_once(&builtin).await?;
    time_once(&exact).await?;
    let (mut b, mut e) = (Vec::new(), Vec::new());
    for _ in 0..runs.max(1) {
        b.push(time_once(&builtin).await?);
        e.push(time_once(&exact).await?);
    }
    let (b, e) = (median(b), median(e));
    Ok(json!({
        "rows": rows, "groups": groups, "threads": threads,
        "builtin_seconds": b, "exact_seconds": e,
        "extra_ns_per_value": (e - b) * 1e9 * threads as f64 / rows as f64,
    }))
}
