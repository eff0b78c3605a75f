//! Result rendering. JSON keeps decimals exact (as strings) and writes instants as RFC 3339
//! UTC with `Z`, as the contract asks of every response.

use std::fmt::Write as _;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type,
    Int64Type, SchemaRef, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use meterbase_schema::scalar::format_decimal;
use meterbase_schema::timestamp::{format_date, format_micros};

use crate::QueryError;

fn json_str(out: &mut String, s: &str) {
    // serde_json's escaping is the reference; writing into a String cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
}

fn write_f64(out: &mut String, v: f64) {
    if v.is_finite() {
        let _ = write!(out, "{v}");
    } else {
        out.push_str("null");
    }
}

/// Appends one cell as JSON.
pub fn write_json_value(out: &mut String, array: &ArrayRef, row: usize) {
    if array.is_null(row) {
        out.push_str("null");
        return;
    }
    match array.data_type() {
        DataType::Boolean => out.push_str(if array.as_boolean().value(row) {
            "true"
        } else {
            "false"
        }),
        DataType::Int8 => {
            let _ = write!(out, "{}", array.as_primitive::<Int8Type>().value(row));
        }
        DataType::Int16 => {
            let _ = write!(out, "{}", array.as_primitive::<Int16Type>().value(row));
        }
        DataType::Int32 => {
            let _ = write!(out, "{}", array.as_primitive::<Int32Type>().value(row));
        }
        DataType::Int64 => {
            let _ = write!(out, "{}", array.as_primitive::<Int64Type>().value(row));
        }
        DataType::UInt8 => {
            let _ = write!(out, "{}", array.as_primitive::<UInt8Type>().value(row));
        }
        DataType::UInt16 => {
            let _ = write!(out, "{}", array.as_primitive::<UInt16Type>().value(row));
        }
        DataType::UInt32 => {
            let _ = write!(out, "{}", array.as_primitive::<UInt32Type>().value(row));
        }
        DataType::UInt64 => {
            let _ = write!(out, "{}", array.as_primitive::<UInt64Type>().value(row));
        }
        DataType::Float32 => write_f64(out, array.as_primitive::<Float32Type>().value(row) as f64),
        DataType::Float64 => write_f64(out, array.as_primitive::<Float64Type>().value(row)),
        DataType::Decimal128(_, scale) => json_str(
            out,
            &format_decimal(array.as_primitive::<Decimal128Type>().value(row), *scale),
        ),
        DataType::Utf8 => json_str(out, array.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => json_str(out, array.as_string::<i64>().value(row)),
        DataType::Utf8View => json_str(out, array.as_string_view().value(row)),
        DataType::Date32 => json_str(
            out,
            &format_date(array.as_primitive::<Date32Type>().value(row)),
        ),
        DataType::Timestamp(unit, _) => {
            let us = match unit {
                TimeUnit::Second => array
                    .as_primitive::<TimestampSecondType>()
                    .value(row)
                    .saturating_mul(1_000_000),
                TimeUnit::Millisecond => array
                    .as_primitive::<TimestampMillisecondType>()
                    .value(row)
                    .saturating_mul(1000),
                TimeUnit::Microsecond => {
                    array.as_primitive::<TimestampMicrosecondType>().value(row)
                }
                TimeUnit::Nanosecond => array
                    .as_primitive::<TimestampNanosecondType>()
                    .value(row)
                    .div_euclid(1000),
            };
            json_str(out, &format_micros(us));
        }
        DataType::Struct(fields) => {
            let s = array.as_struct();
            out.push('{');
            for (i, f) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_str(out, f.name());
                out.push(':');
                write_json_value(out, s.column(i), row);
            }
            out.push('}');
        }
        _ => {
            let opts = FormatOptions::default();
            match ArrayFormatter::try_new(array.as_ref(), &opts) {
                Ok(f) => json_str(out, &f.value(row).to_string()),
                Err(_) => out.push_str("null"),
            }
        }
    }
}

pub fn write_json_row(out: &mut String, schema: &SchemaRef, batch: &RecordBatch, row: usize) {
    out.push('{');
    for (i, f) in schema.fields().iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_str(out, f.name());
        out.push(':');
        write_json_value(out, batch.column(i), row);
    }
    out.push('}');
}

/// `{"columns":[{"name","type"}],"rows":[{…}]}`
pub fn to_json(schema: &SchemaRef, batches: &[RecordBatch]) -> String {
    let mut out = String::with_capacity(256);
    out.push_str("{\"columns\":[");
    for (i, f) in schema.fields().iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"name\":");
        json_str(&mut out, f.name());
        out.push_str(",\"type\":");
        json_str(&mut out, &f.data_type().to_string());
        out.push('}');
    }
    out.push_str("],\"rows\":[");
    let mut first = true;
    for b in batches {
        for r in 0..b.num_rows() {
            if !first {
                out.push(',');
            }
            first = false;
            write_json_row(&mut out, schema, b, r);
        }
    }
    out.push_str("]}");
    out
}

pub fn to_ndjson(schema: &SchemaRef, batches: &[RecordBatch]) -> String {
    let mut out = String::new();
    for b in batches {
        for r in 0..b.num_rows() {
            write_json_row(&mut out, schema, b, r);
            out.push('\n');
        }
    }
    out
}

pub fn to_csv(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>, QueryError> {
    let mut buf = Vec::new();
    {
        let mut w = arrow::csv::WriterBuilder::new()
            .with_header(true)
            .with_timestamp_tz_format("%Y-%m-%dT%H:%M:%S%.fZ".to_string())
            .build(&mut buf);
        if batches.is_empty() {
            w.write(&RecordBatch::new_empty(schema.clone()))
                .map_err(|e| QueryError::Execution(e.to_string()))?;
        }
        for b in batches {
            w.write(b)
                .map_err(|e| QueryError::Execution(e.to_string()))?;
        }
    }
    Ok(buf)
}

pub fn to_arrow_ipc(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>, QueryError> {
    let mut buf = Vec::new();
    let err = |e: arrow::error::ArrowError| QueryError::Execution(e.to_string());
    let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut buf, schema).map_err(err)?;
    for b in batches {
        w.write(b).map_err(err)?;
    }
    w.finish().map_err(err)?;
    drop(w);
    Ok(buf)
}

pub fn to_parquet(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>, QueryError> {
    let mut buf = Vec::new();
    let err = |e: datafusion::parquet::errors::ParquetError| QueryError::Execution(e.to_string());
    let mut w = datafusion::parquet::arrow::ArrowWriter::try_new(&mut buf, schema.clone(), None)
        .map_err(err)?;
    for b in batches {
        w.write(b).map_err(err)?;
    }
    w.close().map_err(err)?;
    Ok(buf)
}
