//! The reconciliation digest (`sha256-sum64-v1`): an order-independent fingerprint of a set
//! of events that a sender can compute from its own records in any language, so ingest
//! receipts and `GET /usage/{slug}/reconcile` can be checked against a ledger.
//!
//! One event's canonical bytes are a sequence of items, each written `<length>:<bytes>,`
//! (length = decimal count of bytes, as in netstrings): `customer_id`, the timestamp as
//! `YYYY-MM-DDTHH:MM:SS.ffffffZ`, then for each data field whose value is not null, in byte
//! order of the field names, the name and the value's canonical text. The event's hash is
//! the first 8 bytes of SHA-256 of those bytes read as a little-endian u64; a set's digest is
//! the sum of its events' hashes modulo 2^64, written as 16 lower-case hex digits.
//!
//! Why these choices: a sum commutes (any order, any partition of the work, and a difference
//! of two digests is the digest of what one set has more); null fields are left out so adding
//! a `Nullable` field to a type changes no digest of the events already stored; names sorted
//! by bytes need no knowledge of how a definition was written; netstring framing makes the
//! bytes unambiguous whatever the values contain. `docs/api.md` specifies the value texts.

use std::fmt::Write as _;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type,
    Int64Type, TimestampMicrosecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use sha2::{Digest as _, Sha256};

use crate::field_type::timestamp_type;
use crate::scalar::format_decimal;
use crate::timestamp::{MICROS_PER_SECOND, civil_from_days};
use crate::{BaseType, FieldType, SchemaError};

/// The name responses give the algorithm; a change of the canonical form gets a new one.
pub const DIGEST_ALGORITHM: &str = "sha256-sum64-v1";

/// The digest of a set given the sum of its events' hashes.
pub fn digest_hex(sum: u64) -> String {
    format!("{sum:016x}")
}

/// One event's hash: the first 8 bytes of SHA-256 of its canonical bytes, little-endian.
pub fn hash_canonical(bytes: &[u8]) -> u64 {
    let h = Sha256::digest(bytes);
    let mut first = [0u8; 8];
    first.copy_from_slice(&h[..8]);
    u64::from_le_bytes(first)
}

/// Canonical bytes and hashes of events held as Arrow columns: `customer_id`, `timestamp`,
/// then the data fields in the order given to `new` (a definition's order).
#[derive(Debug, Clone)]
pub struct EventDigester {
    fields: Vec<(String, FieldType)>,
    /// Indexes into `fields`, sorted by name bytes: the order fields are written in.
    written: Vec<usize>,
}

impl EventDigester {
    pub fn new(fields: &[(String, FieldType)]) -> EventDigester {
        let mut written: Vec<usize> = (0..fields.len()).collect();
        written.sort_by(|&a, &b| fields[a].0.as_bytes().cmp(fields[b].0.as_bytes()));
        EventDigester {
            fields: fields.to_vec(),
            written,
        }
    }

    pub fn fields(&self) -> &[(String, FieldType)] {
        &self.fields
    }

    /// The columns in the types this module reads (a query may hand over views or
    /// dictionaries of the same values).
    pub fn normalize(&self, columns: &[ArrayRef]) -> Result<Vec<ArrayRef>, SchemaError> {
        if columns.len() != self.fields.len() + 2 {
            return Err(SchemaError::Digest(format!(
                "expected customer_id, timestamp and {} data columns, got {} columns",
                self.fields.len(),
                columns.len()
            )));
        }
        let wanted = [DataType::Utf8, timestamp_type()]
            .into_iter()
            .chain(self.fields.iter().map(|(_, t)| t.arrow_type()));
        columns
            .iter()
            .zip(wanted)
            .map(|(c, t)| {
                if c.data_type() == &t {
                    Ok(c.clone())
                } else {
                    cast(c, &t).map_err(|e| {
                        SchemaError::Digest(format!(
                            "a {} column cannot be read as {t}: {e}",
                            c.data_type()
                        ))
                    })
                }
            })
            .collect()
    }

    /// Every row's hash. `columns` as `normalize` returns them.
    pub fn row_hashes(&self, columns: &[ArrayRef]) -> Result<Vec<u64>, SchemaError> {
        let columns = self.normalize(columns)?;
        let rows = columns.first().map_or(0, |c| c.len());
        let mut out = Vec::with_capacity(rows);
        let mut buf = Vec::with_capacity(256);
        let mut scratch = String::with_capacity(64);
        for row in 0..rows {
            buf.clear();
            self.write_row(&columns, row, &mut buf, &mut scratch)?;
            out.push(hash_canonical(&buf));
        }
        Ok(out)
    }

    /// The digest sum of every row.
    pub fn sum(&self, columns: &[ArrayRef]) -> Result<u64, SchemaError> {
        Ok(self
            .row_hashes(columns)?
            .into_iter()
            .fold(0u64, u64::wrapping_add))
    }

    /// One row's canonical bytes; `columns` normalized.
    pub fn canonical_row(&self, columns: &[ArrayRef], row: usize) -> Result<Vec<u8>, SchemaError> {
        let mut buf = Vec::new();
        self.write_row(columns, row, &mut buf, &mut String::new())?;
        Ok(buf)
    }

    /// One row as (name, canonical text) pairs in written order, nulls left out: what a
    /// person comparing two versions of an event reads.
    pub fn row_values(
        &self,
        columns: &[ArrayRef],
        row: usize,
    ) -> Result<Vec<(String, String)>, SchemaError> {
        let mut out = Vec::with_capacity(self.fields.len() + 2);
        let mut text = String::new();
        write_value(&columns[0], BaseType::String, row, &mut text)?;
        out.push(("customer_id".to_string(), std::mem::take(&mut text)));
        write_value(&columns[1], BaseType::DateTime, row, &mut text)?;
        out.push(("timestamp".to_string(), std::mem::take(&mut text)));
        for &i in &self.written {
            let col = &columns[i + 2];
            if col.is_null(row) {
                continue;
            }
            write_value(col, self.fields[i].1.base, row, &mut text)?;
            out.push((self.fields[i].0.clone(), std::mem::take(&mut text)));
        }
        Ok(out)
    }

    fn write_row(
        &self,
        columns: &[ArrayRef],
        row: usize,
        buf: &mut Vec<u8>,
        scratch: &mut String,
    ) -> Result<(), SchemaError> {
        scratch.clear();
        write_value(&columns[0], BaseType::String, row, scratch)?;
        item(buf, scratch.as_bytes());
        scratch.clear();
        write_value(&columns[1], BaseType::DateTime, row, scratch)?;
        item(buf, scratch.as_bytes());
        for &i in &self.written {
            let col = &columns[i + 2];
            if col.is_null(row) {
                continue;
            }
            let (name, ty) = &self.fields[i];
            item(buf, name.as_bytes());
            scratch.clear();
            write_value(col, ty.base, row, scratch)?;
            item(buf, scratch.as_bytes());
        }
        Ok(())
    }
}

/// `<length>:<bytes>,`
fn item(buf: &mut Vec<u8>, bytes: &[u8]) {
    // The length's digits, written backwards then turned: no allocation per item.
    let start = buf.len();
    let mut n = bytes.len();
    loop {
        buf.push(b'0' + (n % 10) as u8);
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf[start..].reverse();
    buf.push(b':');
    buf.extend_from_slice(bytes);
    buf.push(b',');
}

fn mismatch(base: BaseType, col: &ArrayRef) -> SchemaError {
    SchemaError::Digest(format!(
        "a {base} value cannot be read from a {} column",
        col.data_type()
    ))
}

/// The canonical text of one non-null value.
fn write_value(
    col: &ArrayRef,
    base: BaseType,
    row: usize,
    out: &mut String,
) -> Result<(), SchemaError> {
    macro_rules! prim {
        ($t:ty) => {
            col.as_primitive_opt::<$t>()
                .ok_or_else(|| mismatch(base, col))?
                .value(row)
        };
    }
    // `write!` into a String cannot fail.
    match base {
        BaseType::String | BaseType::Uuid => out.push_str(
            col.as_string_opt::<i32>()
                .ok_or_else(|| mismatch(base, col))?
                .value(row),
        ),
        BaseType::Int8 => _ = write!(out, "{}", prim!(Int8Type)),
        BaseType::Int16 => _ = write!(out, "{}", prim!(Int16Type)),
        BaseType::Int32 => _ = write!(out, "{}", prim!(Int32Type)),
        BaseType::Int64 => _ = write!(out, "{}", prim!(Int64Type)),
        BaseType::UInt8 => _ = write!(out, "{}", prim!(UInt8Type)),
        BaseType::UInt16 => _ = write!(out, "{}", prim!(UInt16Type)),
        BaseType::UInt32 => _ = write!(out, "{}", prim!(UInt32Type)),
        BaseType::UInt64 => _ = write!(out, "{}", prim!(UInt64Type)),
        // Rust's `Display` of a float is the shortest text that reads back as the same value,
        // written without an exponent: the form the spec asks for, but for the sign of zero.
        BaseType::Float32 => {
            let v = prim!(Float32Type);
            _ = write!(out, "{}", if v == 0.0 { 0.0 } else { v });
        }
        BaseType::Float64 => {
            let v = prim!(Float64Type);
            _ = write!(out, "{}", if v == 0.0 { 0.0 } else { v });
        }
        BaseType::Decimal { scale, .. } => out.push_str(&plain_decimal(&format_decimal(
            prim!(Decimal128Type),
            scale,
        ))),
        BaseType::Bool => out.push_str(
            if col
                .as_boolean_opt()
                .ok_or_else(|| mismatch(base, col))?
                .value(row)
            {
                "true"
            } else {
                "false"
            },
        ),
        BaseType::Date => {
            let (y, m, d) = civil_from_days(i64::from(prim!(Date32Type)));
            _ = write!(out, "{y:04}-{m:02}-{d:02}");
        }
        BaseType::DateTime | BaseType::DateTime64 { .. } => {
            write_instant(prim!(TimestampMicrosecondType), out)
        }
    }
    Ok(())
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`, always six fraction digits.
pub fn write_instant(us: i64, out: &mut String) {
    let secs = us.div_euclid(MICROS_PER_SECOND);
    let frac = us.rem_euclid(MICROS_PER_SECOND);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:06}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    );
}

/// A decimal text without trailing fraction zeros, without a lone `.`, and `0` for zero.
fn plain_decimal(text: &str) -> String {
    let t = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        text
    };
    match t {
        "-0" | "" | "-" => "0".to_string(),
        t => t.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        BooleanArray, Date32Array, Decimal128Array, Float32Array, Float64Array, Int64Array,
        StringArray, TimestampMicrosecondArray, UInt64Array,
    };
    use std::sync::Arc;

    fn ty(t: &str) -> FieldType {
        FieldType::parse(t).unwrap()
    }

    fn ts(v: i64) -> ArrayRef {
        Arc::new(TimestampMicrosecondArray::from(vec![v]).with_timezone("UTC"))
    }

    fn s(v: &str) -> ArrayRef {
        Arc::new(StringArray::from(vec![v]))
    }

    #[test]
    fn the_canonical_form_is_netstrings_in_name_order_without_nulls() {
        let d = EventDigester::new(&[
            ("region".into(), ty("String")),
            ("cpu".into(), ty("Float64")),
            ("note".into(), ty("Nullable(String)")),
        ]);
        let cols = vec![
            s("cust_7d2f"),
            ts(1_753_696_800_000_000),
            s("us-east-1"),
            Arc::new(Float64Array::from(vec![10.5])) as ArrayRef,
            Arc::new(StringArray::from(vec![None::<&str>])) as ArrayRef,
        ];
        let bytes = d.canonical_row(&cols, 0).unwrap();
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            "9:cust_7d2f,27:2025-07-28T10:00:00.000000Z,3:cpu,4:10.5,6:region,9:us-east-1,"
        );
        // The published example of docs/api.md.
        assert_eq!(digest_hex(hash_canonical(&bytes)), "14374b84e24e3057");
        assert_eq!(d.sum(&cols).unwrap(), hash_canonical(&bytes));
    }

    #[test]
    fn values_have_one_text_each() {
        let d = EventDigester::new(&[
            ("a_dec".into(), ty("Decimal(10,3)")),
            ("b_neg".into(), ty("Decimal(10,2)")),
            ("c_zero".into(), ty("Decimal(10,2)")),
            ("d_f".into(), ty("Float64")),
            ("e_negzero".into(), ty("Float64")),
            ("f_f32".into(), ty("Float32")),
            ("g_big".into(), ty("Float64")),
            ("h_u".into(), ty("UInt64")),
            ("i_i".into(), ty("Int64")),
            ("j_b".into(), ty("Bool")),
            ("k_date".into(), ty("Date")),
            ("l_dt".into(), ty("DateTime64(3)")),
        ]);
        let dec = |v: i128, p: u8, s: i8| -> ArrayRef {
            Arc::new(
                Decimal128Array::from(vec![v])
                    .with_precision_and_scale(p, s)
                    .unwrap(),
            )
        };
        let cols = vec![
            s("c"),
            ts(1),
            dec(10_500, 10, 3),
            dec(-5, 10, 2),
            dec(0, 10, 2),
            Arc::new(Float64Array::from(vec![0.1 + 0.2])) as ArrayRef,
            Arc::new(Float64Array::from(vec![-0.0])) as ArrayRef,
            Arc::new(Float32Array::from(vec![0.1f32])) as ArrayRef,
            Arc::new(Float64Array::from(vec![1e21])) as ArrayRef,
            Arc::new(UInt64Array::from(vec![u64::MAX])) as ArrayRef,
            Arc::new(Int64Array::from(vec![-7])) as ArrayRef,
            Arc::new(BooleanArray::from(vec![true])) as ArrayRef,
            Arc::new(Date32Array::from(vec![20_297])) as ArrayRef,
            ts(-1),
        ];
        let values: Vec<String> = d
            .row_values(&cols, 0)
            .unwrap()
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        assert_eq!(
            values,
            [
                "c",
                "1970-01-01T00:00:00.000001Z",
                "10.5",
                "-0.05",
                "0",
                "0.30000000000000004",
                "0",
                "0.1",
                "1000000000000000000000",
                "18446744073709551615",
                "-7",
                "true",
                "2025-07-28",
                "1969-12-31T23:59:59.999999Z",
            ]
        );
    }

    #[test]
    fn the_digest_ignores_order_and_types_of_the_same_values() {
        let d = EventDigester::new(&[("v".into(), ty("Int64"))]);
        let cols = |c: Vec<&str>, v: Vec<i64>| -> Vec<ArrayRef> {
            let n = c.len();
            vec![
                Arc::new(StringArray::from(c)) as ArrayRef,
                Arc::new(TimestampMicrosecondArray::from(vec![5; n]).with_timezone("UTC")),
                Arc::new(Int64Array::from(v)),
            ]
        };
        let ab = d.sum(&cols(vec!["a", "b"], vec![1, 2])).unwrap();
        let ba = d.sum(&cols(vec!["b", "a"], vec![2, 1])).unwrap();
        assert_eq!(ab, ba);
        let a = d.sum(&cols(vec!["a"], vec![1])).unwrap();
        let b = d.sum(&cols(vec!["b"], vec![2])).unwrap();
        assert_eq!(ab, a.wrapping_add(b));
        // A query may hand strings over as views: same values, same digest.
        let mut viewed = cols(vec!["a", "b"], vec![1, 2]);
        viewed[0] = cast(&viewed[0], &DataType::Utf8View).unwrap();
        assert_eq!(d.sum(&viewed).unwrap(), ab);
        assert!(d.sum(&cols(vec!["a"], vec![1])[..2]).is_err());
        assert_eq!(digest_hex(0), "0000000000000000");
    }
}
