use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::field_type::timestamp_type;
use crate::{BaseType, FieldType, SchemaError};

/// Whose usage a row is; every event type has it.
pub const CUSTOMER_ID_COLUMN: &str = "customer_id";
/// When the usage happened (UTC, µs); every event type has it.
pub const TIMESTAMP_COLUMN: &str = "timestamp";
/// Arrival instant of a row's version, visible to SQL.
pub const INGESTED_AT_COLUMN: &str = "_ingested_at";
/// Arrival order of a row's version: `wal_sequence << 20 | row_in_record`. Hidden from SQL,
/// used to pick the latest version of a unique key.
pub const SEQ_COLUMN: &str = "_seq";

/// `POST /rawmetrics` body, before validation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventTypeSpec {
    pub name: String,
    #[serde(default)]
    pub api_slug: Option<String>,
    #[serde(default)]
    pub dataschema: Option<DataSchemaSpec>,
    #[serde(default)]
    pub column_order: Option<Vec<String>>,
    #[serde(default)]
    pub unique_key: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DataSchemaSpec {
    #[serde(default)]
    pub customer_id: Option<String>,
    #[serde(default)]
    pub timestamp: Option<String>,
    #[serde(default)]
    pub data: Map<String, Value>,
}

/// A stored event type definition, as persisted in the catalog and returned by the API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EventTypeDef {
    pub id: String,
    pub name: String,
    pub api_slug: String,
    pub dataschema: DataSchemaSpec,
    pub column_order: Vec<String>,
    pub unique_key: Vec<String>,
    pub created_at: DateTime<Utc>,
    /// Bumped by every change of fields, so buffered data can be adapted.
    pub schema_version: u32,
}

impl EventTypeDef {
    /// Whether the unique key includes the event time: then two versions of a key can only
    /// sit in files whose time ranges overlap, which storage and queries rely on to skip
    /// key checks and deduplication.
    pub fn key_has_time(&self) -> bool {
        self.unique_key.iter().any(|k| k == "timestamp")
    }

    /// Validates a creation request. `id` and `now` come from the caller so this stays pure.
    pub fn from_spec(
        spec: EventTypeSpec,
        id: String,
        now: DateTime<Utc>,
    ) -> Result<EventTypeDef, SchemaError> {
        let name = spec.name.trim().to_string();
        if name.is_empty() {
            return Err(SchemaError::Invalid("name must not be empty".into()));
        }
        let api_slug = match spec.api_slug {
            Some(s) => validate_slug(&s)?,
            None => {
                let derived = derive_slug(&name);
                validate_slug(&derived).map_err(|_| {
                    SchemaError::Invalid(format!(
                        "cannot derive an api_slug from name {name:?}; give api_slug explicitly"
                    ))
                })?
            }
        };
        if RESERVED_EVENT_SLUGS.contains(&api_slug.as_str()) {
            return Err(SchemaError::InvalidSlug(
                api_slug,
                format!(
                    "is reserved: it is a path word of the usage API (/usage/bulk/{{slug}}, /usage/{{slug}}/csv, …); reserved: {}",
                    RESERVED_EVENT_SLUGS.join(", ")
                ),
            ));
        }
        let mut ds = spec.dataschema.unwrap_or_default();
        let cid = ds.customer_id.take().unwrap_or_else(|| "String".into());
        let plain_string = FieldType {
            base: BaseType::String,
            nullable: false,
            low_cardinality: false,
        };
        if FieldType::parse(&cid).ok() != Some(plain_string) {
            return Err(SchemaError::Invalid(format!(
                "dataschema.customer_id must be String, got {cid:?}"
            )));
        }
        let ts = ds.timestamp.take().unwrap_or_else(|| "DateTime64".into());
        match FieldType::parse(&ts) {
            Ok(FieldType {
                base: BaseType::DateTime64 { .. },
                nullable: false,
                low_cardinality: false,
            }) => {}
            _ => {
                return Err(SchemaError::Invalid(format!(
                    "dataschema.timestamp must be DateTime64 or DateTime64(p), got {ts:?}"
                )));
            }
        }
        ds.customer_id = Some(cid);
        ds.timestamp = Some(ts);
        let def = EventTypeDef {
            id,
            name,
            api_slug,
            dataschema: ds,
            column_order: spec
                .column_order
                .unwrap_or_else(|| vec!["timestamp".into()]),
            unique_key: spec
                .unique_key
                .unwrap_or_else(|| vec!["customer_id".into(), "timestamp".into()]),
            created_at: now,
            schema_version: 1,
        };
        let mut def = def;
        def.column_order = normalize_columns(&def, "column_order", &def.column_order)?;
        def.unique_key = normalize_columns(&def, "unique_key", &def.unique_key)?;
        if def.unique_key.is_empty() {
            return Err(SchemaError::Invalid(
                "unique_key must name at least one column".into(),
            ));
        }
        def.fields()?;
        Ok(def)
    }

    /// The data fields in declaration order with their parsed types.
    pub fn fields(&self) -> Result<Vec<(String, FieldType)>, SchemaError> {
        let mut out = Vec::with_capacity(self.dataschema.data.len());
        for (name, ty) in &self.dataschema.data {
            validate_field_name(name)?;
            let text = ty.as_str().ok_or_else(|| {
                SchemaError::InvalidType(
                    ty.to_string(),
                    format!("type of field {name:?} must be a string"),
                )
            })?;
            out.push((name.clone(), FieldType::parse(text)?));
        }
        Ok(out)
    }

    /// The user-visible columns, as produced by the event decoder.
    pub fn input_schema(&self) -> Result<SchemaRef, SchemaError> {
        let mut fields = vec![
            Field::new("customer_id", DataType::Utf8, false),
            Field::new("timestamp", timestamp_type(), false),
        ];
        for (name, ty) in self.fields()? {
            fields.push(Field::new(name, ty.arrow_type(), true));
        }
        Ok(Arc::new(Schema::new(fields)))
    }

    /// The stored columns: the input columns plus the arrival columns.
    pub fn table_schema(&self) -> Result<SchemaRef, SchemaError> {
        let input = self.input_schema()?;
        let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new(INGESTED_AT_COLUMN, timestamp_type(), false));
        fields.push(Field::new(SEQ_COLUMN, DataType::UInt64, false));
        Ok(Arc::new(Schema::new(fields)))
    }

    /// Applies a `PATCH`: a new name and/or new `Nullable` fields. Anything else is refused.
    pub fn patched(&self, patch: &Map<String, Value>) -> Result<EventTypeDef, SchemaError> {
        let mut next = self.clone();
        for (key, value) in patch {
            match key.as_str() {
                "name" => {
                    let name = value.as_str().map(str::trim).unwrap_or_default();
                    if name.is_empty() {
                        return Err(SchemaError::Invalid(
                            "name must be a non-empty string".into(),
                        ));
                    }
                    next.name = name.to_string();
                }
                "dataschema" => {
                    let obj = value.as_object().ok_or_else(|| {
                        SchemaError::Invalid("dataschema must be an object".into())
                    })?;
                    for (k, v) in obj {
                        match k.as_str() {
                            "customer_id" | "timestamp" => {
                                let current = if k == "customer_id" {
                                    &self.dataschema.customer_id
                                } else {
                                    &self.dataschema.timestamp
                                };
                                if v.as_str() != current.as_deref() {
                                    return Err(SchemaError::Invalid(format!(
                                        "dataschema.{k} cannot be changed"
                                    )));
                                }
                            }
                            "data" => {
                                let data = v.as_object().ok_or_else(|| {
                                    SchemaError::Invalid("dataschema.data must be an object".into())
                                })?;
                                for (field, ty) in data {
                                    if let Some(existing) = self.dataschema.data.get(field) {
                                        if existing != ty {
                                            return Err(SchemaError::Invalid(format!(
                                                "field {field:?} exists as {existing}; fields cannot change type"
                                            )));
                                        }
                                        continue;
                                    }
                                    validate_field_name(field)?;
                                    let text = ty.as_str().unwrap_or_default();
                                    let parsed = FieldType::parse(text)?;
                                    if !parsed.nullable {
                                        return Err(SchemaError::Invalid(format!(
                                            "new field {field:?} must be Nullable(...): existing events have no value for it"
                                        )));
                                    }
                                    next.dataschema.data.insert(field.clone(), ty.clone());
                                    next.schema_version += 1;
                                }
                                for existing in self.dataschema.data.keys() {
                                    if !data.contains_key(existing) {
                                        return Err(SchemaError::Invalid(format!(
                                            "field {existing:?} cannot be removed"
                                        )));
                                    }
                                }
                            }
                            other => {
                                return Err(SchemaError::Invalid(format!(
                                    "unknown dataschema key {other:?}"
                                )));
                            }
                        }
                    }
                }
                "api_slug" if value.as_str() == Some(self.api_slug.as_str()) => {}
                "column_order" if value == &serde_json::json!(self.column_order) => {}
                "unique_key" if value == &serde_json::json!(self.unique_key) => {}
                other => {
                    return Err(SchemaError::Invalid(format!(
                        "{other} cannot be changed; PATCH may rename and add Nullable fields"
                    )));
                }
            }
        }
        Ok(next)
    }
}

fn normalize_columns(
    def: &EventTypeDef,
    what: &str,
    cols: &[String],
) -> Result<Vec<String>, SchemaError> {
    let mut out: Vec<String> = Vec::with_capacity(cols.len());
    for c in cols {
        let name = c.strip_prefix("data.").unwrap_or(c);
        let known =
            name == "customer_id" || name == "timestamp" || def.dataschema.data.contains_key(name);
        if !known {
            return Err(SchemaError::Invalid(format!(
                "{what} names unknown column {c:?}"
            )));
        }
        if out.iter().any(|o| o == name) {
            return Err(SchemaError::Invalid(format!("{what} names {c:?} twice")));
        }
        out.push(name.to_string());
    }
    Ok(out)
}

/// `"a raw metric"` → `a_raw_metric`: lower-case, every run of characters outside
/// `a-z 0-9 _ -` becomes one `_`, trimmed of leading and trailing `_`.
pub fn derive_slug(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut pending = false;
    for ch in name.chars().flat_map(char::to_lowercase) {
        if ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_' || ch == '-' {
            if pending && !out.is_empty() {
                out.push('_');
            }
            pending = false;
            out.push(ch);
        } else {
            pending = true;
        }
    }
    out.trim_matches('_').to_string()
}

/// Words of the `/usage/…` routes: an event type named `bulk` would make
/// `POST /usage/bulk/csv` mean two things.
pub const RESERVED_EVENT_SLUGS: &[&str] = &["bulk", "csv", "events", "reconcile"];

pub fn validate_slug(slug: &str) -> Result<String, SchemaError> {
    if slug.is_empty() || slug.len() > 64 {
        return Err(SchemaError::InvalidSlug(
            slug.into(),
            "must be 1-64 characters".into(),
        ));
    }
    if !slug
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(SchemaError::InvalidSlug(
            slug.into(),
            "only letters, digits, '_' and '-' are allowed".into(),
        ));
    }
    Ok(slug.to_ascii_lowercase())
}

pub fn validate_field_name(name: &str) -> Result<(), SchemaError> {
    let bytes = name.as_bytes();
    let ok_first = bytes
        .first()
        .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_');
    let ok_rest = bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'_');
    if !ok_first || !ok_rest || bytes.len() > 128 {
        return Err(SchemaError::InvalidFieldName(
            name.into(),
            "must match [A-Za-z_][A-Za-z0-9_]{0,127}".into(),
        ));
    }
    if name.starts_with('_') || name == "customer_id" || name == "timestamp" || name == "data" {
        return Err(SchemaError::InvalidFieldName(
            name.into(),
            "reserved (customer_id, timestamp, data and names starting with '_')".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slug_derivation() {
        assert_eq!(derive_slug("a raw metric"), "a_raw_metric");
        assert_eq!(derive_slug("Compute events"), "compute_events");
        assert_eq!(derive_slug("  CPU -- hours!! (v2) "), "cpu_--_hours_v2");
        assert_eq!(derive_slug("Ünïcode name"), "n_code_name");
    }

    #[test]
    fn spec_defaults_and_checks() {
        let spec: EventTypeSpec = serde_json::from_str(
            r#"{"name":"Compute events","dataschema":{"data":{"cpu":"Float64","region":"String"}}}"#,
        )
        .unwrap();
        let def = EventTypeDef::from_spec(spec, "id".into(), Utc::now()).unwrap();
        assert_eq!(def.api_slug, "compute_events");
        assert_eq!(def.column_order, vec!["timestamp"]);
        assert_eq!(def.unique_key, vec!["customer_id", "timestamp"]);
        let schema = def.table_schema().unwrap();
        assert_eq!(schema.fields().len(), 6);

        for bad in [
            r#"{"name":"x","dataschema":{"customer_id":"Int64"}}"#,
            r#"{"name":"x","dataschema":{"timestamp":"Date"}}"#,
            r#"{"name":"x","dataschema":{"data":{"_x":"String"}}}"#,
            r#"{"name":"x","dataschema":{"data":{"a":"Nope"}}}"#,
            r#"{"name":"x","column_order":["nope"]}"#,
            r#"{"name":"x","unique_key":[]}"#,
            r#"{"name":"x","api_slug":"bad slug"}"#,
            r#"{"name":"!!!"}"#,
        ] {
            let spec: EventTypeSpec = serde_json::from_str(bad).unwrap();
            assert!(
                EventTypeDef::from_spec(spec, "id".into(), Utc::now()).is_err(),
                "{bad}"
            );
        }
    }
}
