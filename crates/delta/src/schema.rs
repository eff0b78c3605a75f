//! An event type's columns as a Delta schema: the Parquet columns readers see (customer_id,
//! timestamp, the data fields, `_ingested_at`), not `_seq`, which is ours (readers skip Parquet
//! columns the schema does not name).

use arrow::datatypes::{DataType, TimeUnit};
use meterbase_schema::{EventTypeDef, SEQ_COLUMN};
use serde_json::{Value, json};

use crate::error::DeltaError;

/// The Delta type of an Arrow type our tables store.
fn delta_type(t: &DataType) -> Result<String, DeltaError> {
    Ok(match t {
        DataType::Utf8 => "string".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Int8 => "byte".into(),
        DataType::Int16 | DataType::UInt8 => "short".into(),
        DataType::Int32 | DataType::UInt16 => "integer".into(),
        DataType::Int64 | DataType::UInt32 => "long".into(),
        // Delta has no unsigned 64-bit type: as `long`, values from 2^63 on read negative
        // (chDB) or fail (DuckDB, deltalake); as a decimal every reader gets them exactly.
        DataType::UInt64 => "decimal(20,0)".into(),
        DataType::Float32 => "float".into(),
        DataType::Float64 => "double".into(),
        DataType::Date32 => "date".into(),
        DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => "timestamp".into(),
        DataType::Decimal128(p, s) => format!("decimal({p},{s})"),
        other => return Err(DeltaError::UnsupportedType(other.to_string())),
    })
}

/// The columns published, with their Arrow types, in table order.
pub fn published_columns(def: &EventTypeDef) -> Result<Vec<(String, DataType, bool)>, DeltaError> {
    let schema = def
        .table_schema()
        .map_err(|e| DeltaError::UnsupportedType(e.to_string()))?;
    Ok(schema
        .fields()
        .iter()
        .filter(|f| f.name() != SEQ_COLUMN)
        .map(|f| (f.name().clone(), f.data_type().clone(), f.is_nullable()))
        .collect())
}

/// The `schemaString` of the table's `metaData`.
pub fn schema_string(def: &EventTypeDef) -> Result<String, DeltaError> {
    let fields = published_columns(def)?
        .into_iter()
        .map(|(name, t, nullable)| {
            Ok(json!({"name": name, "type": delta_type(&t)?, "nullable": nullable, "metadata": {}}))
        })
        .collect::<Result<Vec<Value>, DeltaError>>()?;
    Ok(json!({"type": "struct", "fields": fields}).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_type_has_a_delta_type() {
        for t in [
            DataType::Utf8,
            DataType::Int8,
            DataType::UInt64,
            DataType::Float32,
            DataType::Boolean,
            DataType::Date32,
            DataType::Decimal128(12, 2),
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        ] {
            assert!(delta_type(&t).is_ok(), "{t}");
        }
        assert_eq!(
            delta_type(&DataType::Decimal128(12, 2)).unwrap(),
            "decimal(12,2)"
        );
    }
}
