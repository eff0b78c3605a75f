//! The exact float sum split in two, so that partial aggregates kept per file add up to the
//! same bits as the rows: `meterbase_exact_state(x)` is the exact sum of a group's `x` as bytes
//! (an `ExactSum`'s state, null where the group had no value), and
//! `meterbase_exact_merge(state, n)` / `meterbase_exact_mean_merge(state, n)` add such states
//! up and round once, to the sum, or to the mean of the `n` values they hold;
//! `meterbase_exact_combine(state, n)` adds them up into one state again (partials of many
//! files merged once and kept). A rounded partial sum would not do: adding rounded sums is not
//! the rounded sum of the values.
//!
//! The time-weighted sum's pieces are the same state, of products:
//! `meterbase_exact_weighted_state(value, micros)` is the exact Σ value × micros of a group,
//! `meterbase_exact_term(value, micros)` the state of one product (a value held across the
//! edge of two partials), and `meterbase_exact_hours_merge(state, n)` adds states up and
//! divides by an hour's micros, rounding once, as `meterbase_time_weighted_hours` does over
//! the rows.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BinaryArray, BooleanArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, FieldRef, Float64Type, Int64Type};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::AggregateOrderSensitivity;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, EmitTo, GroupsAccumulator,
    ReversedUDAF, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

use crate::exact_aggregates::{Finish, FloatAccumulator, FloatGroups, state_error, state_fields};
use crate::exact_sum::ExactSum;

/// The state and merge aggregates, registered in every session beside the exact ones.
pub fn partial_state_aggregates() -> Vec<AggregateUDF> {
    [
        (
            "meterbase_exact_state",
            Finish::Total,
            Stage::VALUES_TO_STATE,
        ),
        (
            "meterbase_exact_weighted_state",
            Finish::Total,
            Stage::PRODUCTS_TO_STATE,
        ),
        (
            "meterbase_exact_merge",
            Finish::Total,
            Stage::STATES_TO_VALUE,
        ),
        (
            "meterbase_exact_mean_merge",
            Finish::Mean,
            Stage::STATES_TO_VALUE,
        ),
        (
            "meterbase_exact_hours_merge",
            Finish::PerHour,
            Stage::STATES_TO_VALUE,
        ),
        (
            "meterbase_exact_combine",
            Finish::Total,
            Stage::STATES_TO_STATE,
        ),
    ]
    .into_iter()
    .map(|(name, finish, stage)| AggregateUDF::new_from_impl(ExactStage::new(name, finish, stage)))
    .collect()
}

/// The scalar functions of partial states, registered beside the aggregates.
pub fn partial_state_functions() -> Vec<ScalarUDF> {
    vec![ScalarUDF::new_from_impl(ExactTerm::default())]
}

/// What a stage of the exact sum reads and gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Stage {
    /// Reads (state, count) rows rather than values.
    reads_states: bool,
    /// Reads (value, micros) rows and adds their products.
    weighted: bool,
    /// Gives the state rather than the finished value.
    gives_state: bool,
}

impl Stage {
    const VALUES_TO_STATE: Stage = Stage {
        reads_states: false,
        weighted: false,
        gives_state: true,
    };
    const PRODUCTS_TO_STATE: Stage = Stage {
        reads_states: false,
        weighted: true,
        gives_state: true,
    };
    const STATES_TO_VALUE: Stage = Stage {
        reads_states: true,
        weighted: false,
        gives_state: false,
    };
    const STATES_TO_STATE: Stage = Stage {
        reads_states: true,
        weighted: false,
        gives_state: true,
    };
}

/// A state column and a count column as the float accumulators' merge reads them.
fn merge_input(values: &[ArrayRef]) -> Result<[ArrayRef; 2]> {
    let counts = cast(&values[1], &DataType::UInt64).map_err(state_error)?;
    Ok([values[0].clone(), counts])
}

/// Each group's state as bytes; null where the group had no value.
fn states_of(sums: &[ExactSum], counts: &[u64]) -> BinaryArray {
    sums.iter()
        .zip(counts)
        .map(|(s, &c)| (c > 0).then(|| s.to_bytes()))
        .collect()
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct ExactStage {
    name: &'static str,
    signature: Signature,
    finish: Finish,
    stage: Stage,
}

impl ExactStage {
    fn new(name: &'static str, finish: Finish, stage: Stage) -> ExactStage {
        let inputs = if stage.reads_states {
            vec![DataType::Binary, DataType::Int64]
        } else if stage.weighted {
            vec![DataType::Float64, DataType::Int64]
        } else {
            vec![DataType::Float64]
        };
        ExactStage {
            name,
            signature: Signature::exact(inputs, Volatility::Immutable),
            finish,
            stage,
        }
    }
}

impl AggregateUDFImpl for ExactStage {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(if self.stage.gives_state {
            DataType::Binary
        } else {
            DataType::Float64
        })
    }
    fn accumulator(&self, _: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(Staged {
            inner: FloatAccumulator {
                sum: ExactSum::new(),
                count: 0,
                finish: self.finish,
                weighted: self.stage.weighted,
            },
            stage: self.stage,
        }))
    }
    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(state_fields(args.name))
    }
    fn groups_accumulator_supported(&self, _: AccumulatorArgs) -> bool {
        true
    }
    fn create_groups_accumulator(&self, _: AccumulatorArgs) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(StagedGroups {
            inner: FloatGroups {
                sums: Vec::new(),
                counts: Vec::new(),
                finish: self.finish,
                weighted: self.stage.weighted,
            },
            stage: self.stage,
        }))
    }
    fn reverse_expr(&self) -> ReversedUDAF {
        ReversedUDAF::Identical
    }
    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        AggregateOrderSensitivity::Insensitive
    }
}

/// The exact float accumulator, fed values or states and giving its value or its state.
#[derive(Debug)]
struct Staged {
    inner: FloatAccumulator,
    stage: Stage,
}

impl Accumulator for Staged {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        if self.stage.reads_states {
            self.inner.merge_batch(&merge_input(values)?)
        } else {
            self.inner.update_batch(values)
        }
    }
    fn evaluate(&mut self) -> Result<ScalarValue> {
        if self.stage.gives_state {
            return Ok(ScalarValue::Binary(
                (self.inner.count > 0).then(|| self.inner.sum.to_bytes()),
            ));
        }
        self.inner.evaluate()
    }
    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        self.inner.state()
    }
    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.inner.merge_batch(states)
    }
    fn size(&self) -> usize {
        self.inner.size()
    }
}

/// `meterbase_exact_term(value, micros)`: the exact sum's state of the one product
/// value × micros (null where either is), for a partial whose value is held into the next.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ExactTerm {
    signature: Signature,
}

impl Default for ExactTerm {
    fn default() -> Self {
        ExactTerm {
            signature: Signature::exact(
                vec![DataType::Float64, DataType::Int64],
                Volatility::Immutable,
            ),
        }
    }
}

impl ScalarUDFImpl for ExactTerm {
    fn name(&self) -> &str {
        "meterbase_exact_term"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Binary)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let values = arrays[0].as_primitive::<Float64Type>();
        let micros = arrays[1].as_primitive::<Int64Type>();
        let states: BinaryArray = values
            .iter()
            .zip(micros.iter())
            .map(|(v, m)| {
                let (v, m) = (v?, m?);
                let mut sum = ExactSum::new();
                sum.add_product(v, m);
                Some(sum.to_bytes())
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(states)))
    }
}

/// `Staged` for many groups at once.
struct StagedGroups {
    inner: FloatGroups,
    stage: Stage,
}

impl GroupsAccumulator for StagedGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        if !self.stage.reads_states {
            return self
                .inner
                .update_batch(values, group_indices, opt_filter, total_num_groups);
        }
        let [states, counts] = merge_input(values)?;
        match opt_filter {
            // Our SQL never filters a merge; a filtered one keeps only the rows it passes.
            Some(filter) => {
                let keep = |a: &ArrayRef| arrow::compute::filter(a, filter).map_err(state_error);
                let kept: Vec<usize> = group_indices
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| filter.is_valid(*i) && filter.value(*i))
                    .map(|(_, g)| *g)
                    .collect();
                self.inner
                    .merge_batch(&[keep(&states)?, keep(&counts)?], &kept, total_num_groups)
            }
            None => self
                .inner
                .merge_batch(&[states, counts], group_indices, total_num_groups),
        }
    }
    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        if self.stage.gives_state {
            let sums = emit_to.take_needed(&mut self.inner.sums);
            let counts = emit_to.take_needed(&mut self.inner.counts);
            return Ok(Arc::new(states_of(&sums, &counts)));
        }
        self.inner.evaluate(emit_to)
    }
    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        self.inner.state(emit_to)
    }
    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.inner
            .merge_batch(values, group_indices, total_num_groups)
    }
    /// Values become states as the exact sum's do; a (state, count) row already is one, and
    /// a row the filter drops holds nothing.
    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        if !self.stage.reads_states {
            return self.inner.convert_to_state(values, opt_filter);
        }
        let [states, counts] = merge_input(values)?;
        Ok(match opt_filter {
            Some(filter) => {
                let dropped = arrow::compute::not(filter).map_err(state_error)?;
                vec![
                    arrow::compute::nullif(&states, &dropped).map_err(state_error)?,
                    counts,
                ]
            }
            None => vec![states, counts],
        })
    }
    fn size(&self) -> usize {
        self.inner.size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};
    use arrow::record_batch::RecordBatch;
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;
    use proptest::prelude::*;

    use crate::exact_aggregates::exact_aggregates;

    async fn values(ctx: &SessionContext, sql: &str) -> Vec<Option<f64>> {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        batches
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<Float64Array>()
                    .unwrap()
                    .iter()
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Rows `(part, group, value)`: sum and mean straight, and through per-part states.
    async fn straight_and_merged(rows: &[(u8, u8, Option<f64>)]) -> [Vec<Option<f64>>; 2] {
        let schema = Arc::new(Schema::new(vec![
            Field::new("p", DataType::Int64, false),
            Field::new("g", DataType::Utf8, false),
            Field::new("v", DataType::Float64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(
                    rows.iter().map(|r| i64::from(r.0)),
                )),
                Arc::new(StringArray::from_iter_values(
                    rows.iter().map(|r| r.1.to_string()),
                )),
                Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.2))),
            ],
        )
        .unwrap();
        let ctx = SessionContext::new();
        for f in exact_aggregates()
            .into_iter()
            .chain(partial_state_aggregates())
        {
            ctx.register_udaf(f);
        }
        ctx.register_table(
            "t",
            Arc::new(MemTable::try_new(schema, vec![vec![batch]]).unwrap()),
        )
        .unwrap();
        let straight = "SELECT s FROM (SELECT g, sum(v) AS s FROM t GROUP BY g \
             UNION ALL SELECT concat('m', g), avg(v) FROM t GROUP BY g) ORDER BY g";
        let merged = "WITH states AS (SELECT p, g, meterbase_exact_state(v) AS s, count(v) AS n \
             FROM t GROUP BY p, g), \
             parts AS (SELECT p % 2 AS p, g, meterbase_exact_combine(s, n) AS s, sum(n) AS n \
             FROM states GROUP BY p % 2, g) \
             SELECT s FROM (SELECT g, meterbase_exact_merge(s, n) AS s FROM parts GROUP BY g \
             UNION ALL SELECT concat('m', g), meterbase_exact_mean_merge(s, n) FROM parts GROUP BY g) \
             ORDER BY g";
        [values(&ctx, straight).await, values(&ctx, merged).await]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn merged_states_give_the_bits_of_the_rows(
            rows in proptest::collection::vec(
                (0u8..5, 0u8..3, proptest::option::of(prop_oneof![
                    any::<f64>().prop_filter("finite", |v| v.is_finite()),
                    -1e6f64..1e6,
                    Just(0.1f64),
                ])),
                1..200,
            )
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let [straight, merged] = rt.block_on(straight_and_merged(&rows));
            let bits = |v: &Vec<Option<f64>>| v.iter().map(|x| x.map(f64::to_bits)).collect::<Vec<_>>();
            prop_assert_eq!(bits(&straight), bits(&merged));
        }
    }
}
