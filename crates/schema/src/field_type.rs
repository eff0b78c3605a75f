use std::fmt;

use arrow::datatypes::{DataType, TimeUnit};

use crate::SchemaError;

/// The value domain of a field, without the `Nullable`/`LowCardinality` wrappers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseType {
    String,
    Uuid,
    Int8,
    Int16,
    Int32,
    Int64,
    UInt8,
    UInt16,
    UInt32,
    UInt64,
    Float32,
    Float64,
    Decimal { precision: u8, scale: i8 },
    Bool,
    Date,
    DateTime,
    DateTime64 { precision: u8 },
}

/// A field type of the contract. `LowCardinality` keeps the values of its inner type; the
/// dictionary encoding is a storage concern (Parquet dictionary pages), not a different Arrow
/// type, so tables never disagree with their files about column types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldType {
    pub base: BaseType,
    pub nullable: bool,
    pub low_cardinality: bool,
}

impl FieldType {
    pub fn parse(text: &str) -> Result<FieldType, SchemaError> {
        let mut t = FieldType {
            base: BaseType::String,
            nullable: false,
            low_cardinality: false,
        };
        let mut rest = text.trim();
        loop {
            if let Some(inner) = strip_wrapper(rest, "nullable") {
                if t.nullable {
                    return Err(SchemaError::InvalidType(
                        text.into(),
                        "Nullable twice".into(),
                    ));
                }
                t.nullable = true;
                rest = inner;
            } else if let Some(inner) = strip_wrapper(rest, "lowcardinality") {
                if t.low_cardinality {
                    return Err(SchemaError::InvalidType(
                        text.into(),
                        "LowCardinality twice".into(),
                    ));
                }
                t.low_cardinality = true;
                rest = inner;
            } else {
                break;
            }
        }
        t.base = parse_base(rest).map_err(|why| match why {
            None => SchemaError::UnknownType(text.into()),
            Some(why) => SchemaError::InvalidType(text.into(), why),
        })?;
        Ok(t)
    }

    pub fn arrow_type(&self) -> DataType {
        match self.base {
            BaseType::String | BaseType::Uuid => DataType::Utf8,
            BaseType::Int8 => DataType::Int8,
            BaseType::Int16 => DataType::Int16,
            BaseType::Int32 => DataType::Int32,
            BaseType::Int64 => DataType::Int64,
            BaseType::UInt8 => DataType::UInt8,
            BaseType::UInt16 => DataType::UInt16,
            BaseType::UInt32 => DataType::UInt32,
            BaseType::UInt64 => DataType::UInt64,
            BaseType::Float32 => DataType::Float32,
            BaseType::Float64 => DataType::Float64,
            BaseType::Decimal { precision, scale } => DataType::Decimal128(precision, scale),
            BaseType::Bool => DataType::Boolean,
            BaseType::Date => DataType::Date32,
            BaseType::DateTime | BaseType::DateTime64 { .. } => timestamp_type(),
        }
    }
}

/// Every instant is stored as microseconds since the epoch, UTC.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

impl fmt::Display for BaseType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BaseType::String => f.write_str("String"),
            BaseType::Uuid => f.write_str("UUID"),
            BaseType::Int8 => f.write_str("Int8"),
            BaseType::Int16 => f.write_str("Int16"),
            BaseType::Int32 => f.write_str("Int32"),
            BaseType::Int64 => f.write_str("Int64"),
            BaseType::UInt8 => f.write_str("UInt8"),
            BaseType::UInt16 => f.write_str("UInt16"),
            BaseType::UInt32 => f.write_str("UInt32"),
            BaseType::UInt64 => f.write_str("UInt64"),
            BaseType::Float32 => f.write_str("Float32"),
            BaseType::Float64 => f.write_str("Float64"),
            BaseType::Decimal { precision, scale } => write!(f, "Decimal({precision},{scale})"),
            BaseType::Bool => f.write_str("Bool"),
            BaseType::Date => f.write_str("Date"),
            BaseType::DateTime => f.write_str("DateTime"),
            BaseType::DateTime64 { precision } => write!(f, "DateTime64({precision})"),
        }
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.nullable, self.low_cardinality) {
            (false, false) => write!(f, "{}", self.base),
            (true, false) => write!(f, "Nullable({})", self.base),
            (false, true) => write!(f, "LowCardinality({})", self.base),
            (true, true) => write!(f, "LowCardinality(Nullable({}))", self.base),
        }
    }
}

fn strip_wrapper<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let open = text.find('(')?;
    if !text[..open].trim().eq_ignore_ascii_case(name) || !text.ends_with(')') {
        return None;
    }
    Some(text[open + 1..text.len() - 1].trim())
}

/// `Err(None)` means the name is unknown, `Err(Some(why))` a known name used wrongly.
fn parse_base(text: &str) -> Result<BaseType, Option<String>> {
    let (name, args) = match text.find('(') {
        Some(open) if text.ends_with(')') => {
            (text[..open].trim(), Some(&text[open + 1..text.len() - 1]))
        }
        Some(_) => return Err(Some("unbalanced parentheses".into())),
        None => (text, None),
    };
    let lower = name.to_ascii_lowercase();
    let simple = match lower.as_str() {
        "string" => Some(BaseType::String),
        "uuid" => Some(BaseType::Uuid),
        "int8" => Some(BaseType::Int8),
        "int16" => Some(BaseType::Int16),
        "int32" => Some(BaseType::Int32),
        "int64" => Some(BaseType::Int64),
        "uint8" => Some(BaseType::UInt8),
        "uint16" => Some(BaseType::UInt16),
        "uint32" => Some(BaseType::UInt32),
        "uint64" => Some(BaseType::UInt64),
        "float32" => Some(BaseType::Float32),
        "float64" => Some(BaseType::Float64),
        "bool" | "boolean" => Some(BaseType::Bool),
        "date" | "date32" => Some(BaseType::Date),
        "datetime" => Some(BaseType::DateTime),
        _ => None,
    };
    if let Some(base) = simple {
        return match args {
            None => Ok(base),
            Some(_) => Err(Some(format!("{name} takes no arguments"))),
        };
    }
    match lower.as_str() {
        "datetime64" => match args {
            None => Ok(BaseType::DateTime64 { precision: 3 }),
            Some(a) => {
                let p: u8 = a
                    .trim()
                    .parse()
                    .map_err(|_| Some("precision must be a number 0-9".to_string()))?;
                if p > 9 {
                    return Err(Some("precision must be 0-9".into()));
                }
                Ok(BaseType::DateTime64 { precision: p })
            }
        },
        "decimal" => {
            let a = args.ok_or_else(|| Some("Decimal needs (P,S)".to_string()))?;
            let mut parts = a.split(',').map(str::trim);
            let p: u8 = parts
                .next()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| Some("precision P must be 1-38".to_string()))?;
            let s: u8 = parts
                .next()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| Some("scale S must be 0-P".to_string()))?;
            if parts.next().is_some() || p == 0 || p > 38 || s > p {
                return Err(Some(
                    "Decimal(P,S) needs 1 <= P <= 38 and 0 <= S <= P".into(),
                ));
            }
            Ok(BaseType::Decimal {
                precision: p,
                scale: s as i8,
            })
        }
        _ => Err(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_contract_type() {
        let cases = [
            ("String", DataType::Utf8),
            ("uuid", DataType::Utf8),
            ("Int8", DataType::Int8),
            ("UInt64", DataType::UInt64),
            ("Float32", DataType::Float32),
            ("Decimal(38,10)", DataType::Decimal128(38, 10)),
            ("Boolean", DataType::Boolean),
            ("Bool", DataType::Boolean),
            ("Date32", DataType::Date32),
            ("DateTime", timestamp_type()),
            ("DateTime64(6)", timestamp_type()),
            ("LowCardinality(String)", DataType::Utf8),
            ("Nullable(Float64)", DataType::Float64),
            ("LowCardinality(Nullable(String))", DataType::Utf8),
        ];
        for (text, dt) in cases {
            let t = FieldType::parse(text).unwrap();
            assert_eq!(t.arrow_type(), dt, "{text}");
        }
        assert!(FieldType::parse("Nullable(String)").unwrap().nullable);
        assert!(!FieldType::parse("String").unwrap().nullable);
    }

    #[test]
    fn rejects_bad_types() {
        for bad in [
            "Strin",
            "Decimal(39,2)",
            "Decimal(5,6)",
            "Decimal",
            "DateTime64(10)",
            "Int8(3)",
            "Nullable(Nullable(String))",
            "Array(String)",
        ] {
            assert!(FieldType::parse(bad).is_err(), "{bad}");
        }
    }
}
