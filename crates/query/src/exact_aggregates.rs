//! The aggregates billing uses, made exact and order independent: `sum` and `avg` replace
//! DataFusion's for `Float64` (every float is summed as Float64) and for `Int64`/`UInt64`
//! sums, and `meterbase_time_weighted_hours(value, micros)` gives the builder's time-weighted
//! sum, Σ value × micros / 3.6e9, rounded once. Every other input type (decimals, durations,
//! intervals, `DISTINCT`) goes to DataFusion's own implementation, which is already exact
//! or not about money.
//!
//! Floats accumulate in an `ExactSum` (see `exact_sum`); integers in an `i128`, which 2^64
//! additions of 64-bit values cannot overflow, and a total outside the result type is an
//! error rather than a wrapped number.

use std::mem::size_of;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BinaryBuilder, BooleanArray, Float64Array, Int64Array,
    UInt64Array,
};
use arrow::datatypes::{DataType, Field, FieldRef, Float64Type, Int64Type, UInt64Type};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::functions_aggregate::average::Avg;
use datafusion::functions_aggregate::sum::Sum;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::AggregateOrderSensitivity;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Documentation, EmitTo, GroupsAccumulator,
    ReversedUDAF, SetMonotonicity, Signature, Volatility,
};

use crate::exact_sum::ExactSum;

/// The exact aggregates, to register in every session (they replace `sum` and `avg`).
pub fn exact_aggregates() -> Vec<AggregateUDF> {
    vec![
        AggregateUDF::new_from_impl(exact_sum_function()),
        AggregateUDF::new_from_impl(exact_avg_function()),
        AggregateUDF::new_from_impl(TimeWeightedHours::default()),
    ]
}

/// Microseconds per hour: the time-weighted sum is in value-hours.
const MICROS_PER_HOUR: u64 = 3_600_000_000;

/// How an exact float total becomes the aggregate's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Finish {
    Total,
    Mean,
    PerHour,
}

/// Which of our accumulators serves an input type, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Exact {
    Float(Finish),
    /// Integer sum; `true` for an unsigned result.
    Integer(bool),
}

fn exact_sum_for(input: &DataType, distinct: bool) -> Option<Exact> {
    match (input, distinct) {
        (DataType::Float64, false) => Some(Exact::Float(Finish::Total)),
        (DataType::Int64, false) => Some(Exact::Integer(false)),
        (DataType::UInt64, false) => Some(Exact::Integer(true)),
        _ => None,
    }
}

fn exact_avg_for(input: &DataType, distinct: bool) -> Option<Exact> {
    (input == &DataType::Float64 && !distinct).then_some(Exact::Float(Finish::Mean))
}

pub(crate) fn state_fields(name: &str) -> Vec<FieldRef> {
    vec![
        Arc::new(Field::new(
            format!("{name}[exact_sum]"),
            DataType::Binary,
            true,
        )),
        Arc::new(Field::new(format!("{name}[count]"), DataType::UInt64, true)),
    ]
}

fn accumulator(exact: Exact, weighted: bool) -> Box<dyn Accumulator> {
    match exact {
        Exact::Float(finish) => Box::new(FloatAccumulator {
            sum: ExactSum::new(),
            count: 0,
            finish,
            weighted,
        }),
        Exact::Integer(unsigned) => Box::new(IntegerAccumulator {
            sum: 0,
            count: 0,
            unsigned,
        }),
    }
}

fn groups_accumulator(exact: Exact, weighted: bool) -> Box<dyn GroupsAccumulator> {
    match exact {
        Exact::Float(finish) => Box::new(FloatGroups {
            sums: Vec::new(),
            counts: Vec::new(),
            finish,
            weighted,
        }),
        Exact::Integer(unsigned) => Box::new(IntegerGroups {
            sums: Vec::new(),
            counts: Vec::new(),
            unsigned,
        }),
    }
}

/// One of DataFusion's aggregates with our exact accumulators for the input types `pick`
/// chooses; every other input, and everything but accumulating, is the inner function's.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Exactly<F> {
    inner: F,
    which: Which,
}

/// Which aggregate an `Exactly` stands for, deciding the inputs it accumulates itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Which {
    Sum,
    Avg,
}

impl<F> Exactly<F> {
    fn pick(&self, input: &DataType, distinct: bool) -> Option<Exact> {
        match self.which {
            Which::Sum => exact_sum_for(input, distinct),
            Which::Avg => exact_avg_for(input, distinct),
        }
    }
}

/// `sum`: exact for Float64 and 64-bit integers, DataFusion's otherwise.
pub fn exact_sum_function() -> Exactly<Sum> {
    Exactly {
        inner: Sum::default(),
        which: Which::Sum,
    }
}

/// `avg`: the exact Float64 total divided by the count, rounded once; DataFusion's for
/// decimals, durations and `DISTINCT`.
pub fn exact_avg_function() -> Exactly<Avg> {
    Exactly {
        inner: Avg::default(),
        which: Which::Avg,
    }
}

impl<F: AggregateUDFImpl + PartialEq + Eq + std::hash::Hash> AggregateUDFImpl for Exactly<F> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }
    fn signature(&self) -> &Signature {
        self.inner.signature()
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }
    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        match self.pick(args.expr_fields[0].data_type(), args.is_distinct) {
            Some(exact) => Ok(accumulator(exact, false)),
            None => self.inner.accumulator(args),
        }
    }
    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        match self.pick(args.input_fields[0].data_type(), args.is_distinct) {
            Some(_) => Ok(state_fields(args.name)),
            None => self.inner.state_fields(args),
        }
    }
    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        self.pick(args.expr_fields[0].data_type(), args.is_distinct)
            .is_some()
            || self.inner.groups_accumulator_supported(args)
    }
    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        match self.pick(args.expr_fields[0].data_type(), args.is_distinct) {
            Some(exact) => Ok(groups_accumulator(exact, false)),
            None => self.inner.create_groups_accumulator(args),
        }
    }
    fn create_sliding_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        match self.pick(args.expr_fields[0].data_type(), args.is_distinct) {
            Some(exact) => Ok(accumulator(exact, false)),
            None => self.inner.create_sliding_accumulator(args),
        }
    }
    fn reverse_expr(&self) -> ReversedUDAF {
        ReversedUDAF::Identical
    }
    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        AggregateOrderSensitivity::Insensitive
    }
    fn set_monotonicity(&self, data_type: &DataType) -> SetMonotonicity {
        self.inner.set_monotonicity(data_type)
    }
    fn default_value(&self, data_type: &DataType) -> Result<ScalarValue> {
        self.inner.default_value(data_type)
    }
    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

/// `meterbase_time_weighted_hours(value, micros)`: Σ value × micros / 3.6e9 with every
/// product and the division exact, rounded once. The builder's `time_weighted_sum` compiles
/// to it.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TimeWeightedHours {
    signature: Signature,
}

impl Default for TimeWeightedHours {
    fn default() -> Self {
        TimeWeightedHours {
            signature: Signature::exact(
                vec![DataType::Float64, DataType::Int64],
                Volatility::Immutable,
            ),
        }
    }
}

impl AggregateUDFImpl for TimeWeightedHours {
    fn name(&self) -> &str {
        "meterbase_time_weighted_hours"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }
    fn accumulator(&self, _: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(accumulator(Exact::Float(Finish::PerHour), true))
    }
    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(state_fields(args.name))
    }
    fn groups_accumulator_supported(&self, _: AccumulatorArgs) -> bool {
        true
    }
    fn create_groups_accumulator(&self, _: AccumulatorArgs) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(groups_accumulator(Exact::Float(Finish::PerHour), true))
    }
    fn reverse_expr(&self) -> ReversedUDAF {
        ReversedUDAF::Identical
    }
    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        AggregateOrderSensitivity::Insensitive
    }
}

fn finish(sum: &ExactSum, count: u64, how: Finish) -> Option<f64> {
    (count > 0).then(|| match how {
        Finish::Total => sum.to_f64(),
        Finish::Mean => sum.divided_by(count),
        Finish::PerHour => sum.divided_by(MICROS_PER_HOUR),
    })
}

pub(crate) fn state_error(e: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Internal(e.to_string())
}

/// Folds one batch of (value[, micros]) rows into per-row targets: `apply(row, value,
/// weight)` for every row that is valid and passes the filter.
fn for_each_row(
    values: &[ArrayRef],
    weighted: bool,
    filter: Option<&BooleanArray>,
    mut apply: impl FnMut(usize, f64, i64),
) {
    let value = values[0].as_primitive::<Float64Type>();
    let weight = weighted.then(|| values[1].as_primitive::<Int64Type>());
    let passes = |i: usize| filter.is_none_or(|f| f.is_valid(i) && f.value(i));
    match weight {
        None if value.null_count() == 0 && filter.is_none() => {
            for (i, v) in value.values().iter().enumerate() {
                apply(i, *v, 1);
            }
        }
        None => {
            for i in 0..value.len() {
                if value.is_valid(i) && passes(i) {
                    apply(i, value.value(i), 1);
                }
            }
        }
        Some(weight) => {
            for i in 0..value.len() {
                if value.is_valid(i) && weight.is_valid(i) && passes(i) {
                    apply(i, value.value(i), weight.value(i));
                }
            }
        }
    }
}

fn integer_values(values: &ArrayRef, unsigned: bool) -> Vec<Option<i128>> {
    if unsigned {
        values
            .as_primitive::<UInt64Type>()
            .iter()
            .map(|v| v.map(i128::from))
            .collect()
    } else {
        values
            .as_primitive::<Int64Type>()
            .iter()
            .map(|v| v.map(i128::from))
            .collect()
    }
}

fn integer_result(sum: i128, count: u64, unsigned: bool) -> Result<ScalarValue> {
    let overflow = || {
        DataFusionError::Execution(format!(
            "sum is {sum}, beyond the range of {}: cast the argument to a DECIMAL to sum it",
            if unsigned { "UInt64" } else { "Int64" }
        ))
    };
    Ok(match (count, unsigned) {
        (0, true) => ScalarValue::UInt64(None),
        (0, false) => ScalarValue::Int64(None),
        (_, true) => ScalarValue::UInt64(Some(u64::try_from(sum).map_err(|_| overflow())?)),
        (_, false) => ScalarValue::Int64(Some(i64::try_from(sum).map_err(|_| overflow())?)),
    })
}

pub(crate) struct FloatAccumulator {
    pub(crate) sum: ExactSum,
    pub(crate) count: u64,
    pub(crate) finish: Finish,
    pub(crate) weighted: bool,
}

impl std::fmt::Debug for FloatAccumulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FloatAccumulator")
            .field("count", &self.count)
            .finish()
    }
}

impl Accumulator for FloatAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let (sum, count, weighted) = (&mut self.sum, &mut self.count, self.weighted);
        for_each_row(values, weighted, None, |_, v, w| {
            if weighted {
                sum.add_product(v, w)
            } else {
                sum.add(v)
            }
            *count += 1;
        });
        Ok(())
    }
    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let (sum, count, weighted) = (&mut self.sum, &mut self.count, self.weighted);
        for_each_row(values, weighted, None, |_, v, w| {
            if weighted {
                sum.subtract_product(v, w)
            } else {
                sum.subtract(v)
            }
            *count -= 1;
        });
        Ok(())
    }
    fn supports_retract_batch(&self) -> bool {
        true
    }
    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Float64(finish(
            &self.sum,
            self.count,
            self.finish,
        )))
    }
    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![
            ScalarValue::Binary(Some(self.sum.to_bytes())),
            ScalarValue::UInt64(Some(self.count)),
        ])
    }
    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let sums = states[0].as_binary::<i32>();
        let counts = states[1].as_primitive::<UInt64Type>();
        for i in 0..sums.len() {
            if sums.is_valid(i) {
                self.sum
                    .merge(&ExactSum::from_bytes(sums.value(i)).map_err(state_error)?);
                self.count += counts.value(i);
            }
        }
        Ok(())
    }
    fn size(&self) -> usize {
        size_of::<Self>() + self.sum.heap_size()
    }
}

pub(crate) struct FloatGroups {
    pub(crate) sums: Vec<ExactSum>,
    pub(crate) counts: Vec<u64>,
    pub(crate) finish: Finish,
    pub(crate) weighted: bool,
}

impl GroupsAccumulator for FloatGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.sums.resize_with(total_num_groups, ExactSum::new);
        self.counts.resize(total_num_groups, 0);
        let (sums, counts, weighted) = (&mut self.sums, &mut self.counts, self.weighted);
        for_each_row(values, weighted, opt_filter, |i, v, w| {
            let g = group_indices[i];
            if weighted {
                sums[g].add_product(v, w)
            } else {
                sums[g].add(v)
            }
            counts[g] += 1;
        });
        Ok(())
    }
    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let sums = emit_to.take_needed(&mut self.sums);
        let counts = emit_to.take_needed(&mut self.counts);
        let values: Float64Array = sums
            .iter()
            .zip(&counts)
            .map(|(s, &c)| finish(s, c, self.finish))
            .collect();
        Ok(Arc::new(values))
    }
    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let sums = emit_to.take_needed(&mut self.sums);
        let counts = emit_to.take_needed(&mut self.counts);
        let mut builder = BinaryBuilder::with_capacity(sums.len(), sums.len() * 48);
        for s in &sums {
            builder.append_value(s.to_bytes());
        }
        Ok(vec![
            Arc::new(builder.finish()),
            Arc::new(UInt64Array::from(counts)),
        ])
    }
    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.sums.resize_with(total_num_groups, ExactSum::new);
        self.counts.resize(total_num_groups, 0);
        let sums: &BinaryArray = values[0].as_binary::<i32>();
        let counts = values[1].as_primitive::<UInt64Type>();
        for (i, &g) in group_indices.iter().enumerate() {
            if sums.is_valid(i) {
                self.sums[g].merge(&ExactSum::from_bytes(sums.value(i)).map_err(state_error)?);
                self.counts[g] += counts.value(i);
            }
        }
        Ok(())
    }
    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let rows = values[0].len();
        let mut states: Vec<Option<ExactSum>> = vec![None; rows];
        for_each_row(values, self.weighted, opt_filter, |i, v, w| {
            let mut sum = ExactSum::new();
            sum.add_product(v, w);
            states[i] = Some(sum);
        });
        let counts: UInt64Array = states.iter().map(|s| Some(s.is_some() as u64)).collect();
        let sums: BinaryArray = states
            .iter()
            .map(|s| s.as_ref().map(ExactSum::to_bytes))
            .collect();
        Ok(vec![Arc::new(sums), Arc::new(counts)])
    }
    fn size(&self) -> usize {
        self.sums.capacity() * size_of::<ExactSum>()
            + self.sums.iter().map(ExactSum::heap_size).sum::<usize>()
            + self.counts.capacity() * size_of::<u64>()
    }
}

#[derive(Debug)]
struct IntegerAccumulator {
    sum: i128,
    count: u64,
    unsigned: bool,
}

impl Accumulator for IntegerAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        for v in integer_values(&values[0], self.unsigned)
            .into_iter()
            .flatten()
        {
            self.sum += v;
            self.count += 1;
        }
        Ok(())
    }
    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        for v in integer_values(&values[0], self.unsigned)
            .into_iter()
            .flatten()
        {
            self.sum -= v;
            self.count -= 1;
        }
        Ok(())
    }
    fn supports_retract_batch(&self) -> bool {
        true
    }
    fn evaluate(&mut self) -> Result<ScalarValue> {
        integer_result(self.sum, self.count, self.unsigned)
    }
    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![
            ScalarValue::Binary(Some(self.sum.to_le_bytes().to_vec())),
            ScalarValue::UInt64(Some(self.count)),
        ])
    }
    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let sums = states[0].as_binary::<i32>();
        let counts = states[1].as_primitive::<UInt64Type>();
        for i in 0..sums.len() {
            if sums.is_valid(i) {
                self.sum += i128_from(sums.value(i))?;
                self.count += counts.value(i);
            }
        }
        Ok(())
    }
    fn size(&self) -> usize {
        size_of::<Self>()
    }
}

fn i128_from(bytes: &[u8]) -> Result<i128> {
    let array: [u8; 16] = bytes
        .try_into()
        .map_err(|_| state_error("integer sum state is not 16 bytes"))?;
    Ok(i128::from_le_bytes(array))
}

struct IntegerGroups {
    sums: Vec<i128>,
    counts: Vec<u64>,
    unsigned: bool,
}

impl GroupsAccumulator for IntegerGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.sums.resize(total_num_groups, 0);
        self.counts.resize(total_num_groups, 0);
        for (i, v) in integer_values(&values[0], self.unsigned)
            .into_iter()
            .enumerate()
        {
            let passes = opt_filter.is_none_or(|f| f.is_valid(i) && f.value(i));
            if let (Some(v), true) = (v, passes) {
                self.sums[group_indices[i]] += v;
                self.counts[group_indices[i]] += 1;
            }
        }
        Ok(())
    }
    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let sums = emit_to.take_needed(&mut self.sums);
        let counts = emit_to.take_needed(&mut self.counts);
        let values = sums
            .iter()
            .zip(&counts)
            .map(|(&s, &c)| integer_result(s, c, self.unsigned));
        Ok(if self.unsigned {
            let column = values
                .map(|v| match v? {
                    ScalarValue::UInt64(v) => Ok(v),
                    other => Err(state_error(format!("unexpected {other:?}"))),
                })
                .collect::<Result<UInt64Array>>()?;
            Arc::new(column)
        } else {
            let column = values
                .map(|v| match v? {
                    ScalarValue::Int64(v) => Ok(v),
                    other => Err(state_error(format!("unexpected {other:?}"))),
                })
                .collect::<Result<Int64Array>>()?;
            Arc::new(column)
        })
    }
    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let sums = emit_to.take_needed(&mut self.sums);
        let counts = emit_to.take_needed(&mut self.counts);
        let mut builder = BinaryBuilder::with_capacity(sums.len(), sums.len() * 16);
        for s in &sums {
            builder.append_value(s.to_le_bytes());
        }
        Ok(vec![
            Arc::new(builder.finish()),
            Arc::new(UInt64Array::from(counts)),
        ])
    }
    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.sums.resize(total_num_groups, 0);
        self.counts.resize(total_num_groups, 0);
        let sums = values[0].as_binary::<i32>();
        let counts = values[1].as_primitive::<UInt64Type>();
        for (i, &g) in group_indices.iter().enumerate() {
            if sums.is_valid(i) {
                self.sums[g] += i128_from(sums.value(i))?;
                self.counts[g] += counts.value(i);
            }
        }
        Ok(())
    }
    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let states: Vec<Option<i128>> = integer_values(&values[0], self.unsigned)
            .into_iter()
            .enumerate()
            .map(|(i, v)| v.filter(|_| opt_filter.is_none_or(|f| f.is_valid(i) && f.value(i))))
            .collect();
        let counts: UInt64Array = states.iter().map(|s| Some(s.is_some() as u64)).collect();
        let sums: BinaryArray = states.iter().map(|s| s.map(|v| v.to_le_bytes())).collect();
        Ok(vec![Arc::new(sums), Arc::new(counts)])
    }
    fn size(&self) -> usize {
        self.sums.capacity() * size_of::<i128>() + self.counts.capacity() * size_of::<u64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, Int64Array, StringArray};
    use arrow::datatypes::Schema;
    use arrow::record_batch::RecordBatch;
    use datafusion::datasource::MemTable;
    use datafusion::prelude::{SessionConfig, SessionContext};
    use proptest::prelude::*;

    /// Runs `sql` over rows `(group, value, int)` split into `parts` partitions of the given
    /// order, with `threads` target partitions.
    fn run(
        rows: &[(String, f64, i64)],
        parts: usize,
        threads: usize,
        sql: &str,
    ) -> Vec<RecordBatch> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("g", DataType::Utf8, false),
            Field::new("v", DataType::Float64, true),
            Field::new("i", DataType::Int64, true),
        ]));
        let chunk = rows.len().div_ceil(parts.max(1)).max(1);
        let partitions: Vec<Vec<RecordBatch>> = rows
            .chunks(chunk)
            .map(|c| {
                let batch = RecordBatch::try_new(
                    schema.clone(),
                    vec![
                        Arc::new(StringArray::from_iter_values(
                            c.iter().map(|r| r.0.as_str()),
                        )),
                        Arc::new(Float64Array::from_iter_values(c.iter().map(|r| r.1))),
                        Arc::new(Int64Array::from_iter_values(c.iter().map(|r| r.2))),
                    ],
                )
                .unwrap();
                vec![batch]
            })
            .collect();
        let ctx =
            SessionContext::new_with_config(SessionConfig::new().with_target_partitions(threads));
        for f in exact_aggregates() {
            ctx.register_udaf(f);
        }
        ctx.register_table(
            "t",
            Arc::new(MemTable::try_new(schema, partitions).unwrap()),
        )
        .unwrap();
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(async { ctx.sql(sql).await?.collect().await })
            .unwrap()
    }

    fn floats(batches: &[RecordBatch], column: usize) -> Vec<u64> {
        batches
            .iter()
            .flat_map(|b| {
                b.column(column)
                    .as_primitive::<Float64Type>()
                    .iter()
                    .map(|v| v.map_or(u64::MAX, f64::to_bits))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn reference(values: impl Iterator<Item = f64>) -> f64 {
        let mut s = ExactSum::new();
        values.for_each(|v| s.add(v));
        s.to_f64()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// `sum` and `avg` through SQL: the same bits whatever the row order, partitions and
        /// threads, equal to the exact reference.
        #[test]
        fn sql_sums_are_bit_identical_across_layouts(
            values in prop::collection::vec(
                prop_oneof![(-1000i64..1000).prop_map(|v| v as f64 * 0.1), Just(1e16), Just(-1e16), any::<f64>().prop_filter("finite", |v| v.is_finite() && v.abs() < 1e300)],
                1..300),
            seed in any::<u64>(),
        ) {
            let rows: Vec<(String, f64, i64)> = values
                .iter()
                .enumerate()
                .map(|(k, &v)| (format!("c{}", k % 3), v, k as i64))
                .collect();
            let mut shuffled = rows.clone();
            let mut state = seed | 1;
            for i in (1..shuffled.len()).rev() {
                state ^= state << 13; state ^= state >> 7; state ^= state << 17;
                shuffled.swap(i, (state % (i as u64 + 1)) as usize);
            }
            let total = "SELECT sum(v), avg(v) FROM t";
            let grouped = "SELECT g, sum(v) FROM t GROUP BY g ORDER BY g";
            let a = run(&rows, 1, 1, total);
            let b = run(&shuffled, 4, 4, total);
            prop_assert_eq!(floats(&a, 0), floats(&b, 0));
            prop_assert_eq!(floats(&a, 1), floats(&b, 1));
            prop_assert_eq!(floats(&a, 0), vec![reference(values.iter().copied()).to_bits()]);
            let mut mean = ExactSum::new();
            values.iter().for_each(|&v| mean.add(v));
            prop_assert_eq!(floats(&a, 1), vec![mean.divided_by(values.len() as u64).to_bits()]);
            let ga = run(&rows, 1, 1, grouped);
            let gb = run(&shuffled, 3, 4, grouped);
            prop_assert_eq!(floats(&ga, 1), floats(&gb, 1));
            for (k, bits) in floats(&ga, 1).into_iter().enumerate() {
                let group = format!("c{k}");
                let expected = reference(rows.iter().filter(|r| r.0 == group).map(|r| r.1));
                prop_assert_eq!(bits, expected.to_bits());
            }
        }
    }

    #[test]
    fn integer_sums_refuse_to_wrap() {
        let rows = vec![("a".to_string(), 0.0, i64::MAX), ("a".to_string(), 0.0, 1)];
        let outcome = std::panic::catch_unwind(|| run(&rows, 2, 2, "SELECT sum(i) FROM t"));
        assert!(
            outcome.is_err(),
            "an Int64 sum past i64::MAX must fail, not wrap"
        );
        let fine = vec![("a".to_string(), 0.0, i64::MAX), ("a".to_string(), 0.0, -1)];
        for sql in [
            "SELECT sum(i) FROM t",
            "SELECT sum(i) OVER () FROM t LIMIT 1",
        ] {
            let batches = run(&fine, 2, 2, sql);
            assert_eq!(
                batches[0].column(0).as_primitive::<Int64Type>().value(0),
                i64::MAX - 1
            );
        }
    }

    #[test]
    fn sliding_window_sums_are_exact() {
        let rows: Vec<(String, f64, i64)> = [1e16, 1.0, -1e16, 1.0]
            .iter()
            .enumerate()
            .map(|(k, &v)| ("a".to_string(), v, k as i64))
            .collect();
        let batches = run(
            &rows,
            1,
            1,
            "SELECT sum(v) OVER (ORDER BY i ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) FROM t ORDER BY i",
        );
        let got: Vec<f64> = floats(&batches, 0)
            .into_iter()
            .map(f64::from_bits)
            .collect();
        assert_eq!(got, vec![1e16, 1e16 + 1.0 + 0.0, 1.0, -1e16 + 2.0]);
    }

    #[test]
    fn time_weighted_hours_divides_once() {
        let ctx = SessionContext::new();
        for f in exact_aggregates() {
            ctx.register_udaf(f);
        }
        let batches = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(async {
                ctx.sql(
                    "SELECT meterbase_time_weighted_hours(v, m) FROM (VALUES (0.1, CAST(1800000000 AS BIGINT)), (0.2, CAST(5400000000 AS BIGINT))) AS x(v, m)",
                )
                .await?
                .collect()
                .await
            })
            .unwrap();
        // 0.1 × 0.5 h + 0.2 × 1.5 h, exactly, rounded once.
        let mut exact = ExactSum::new();
        exact.add_product(0.1, 1_800_000_000);
        exact.add_product(0.2, 5_400_000_000);
        assert_eq!(
            floats(&batches, 0),
            vec![exact.divided_by(MICROS_PER_HOUR).to_bits()]
        );
    }
}
