//! Which member of a builder definition is wrong. The builder's own checks say what is wrong
//! in words; a caller fixing a form (or a preview's candidate) also needs to know where, as a
//! JSON pointer, so each member is checked on its own before the whole is.

use meterbase_schema::EventTypeDef;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::builder::{Aggregation, Builder, Filter, compile};
use crate::error::MetricError;

const MEMBERS: [&str; 5] = ["usage_event", "aggregation", "field", "filters", "group_by"];

fn member<T: DeserializeOwned>(fields: &Map<String, Value>, name: &str) -> Result<(), MetricError> {
    match fields.get(name) {
        None => Ok(()),
        Some(v) => serde_json::from_value::<T>(v.clone())
            .map(drop)
            .map_err(|e| MetricError::Field {
                pointer: format!("/{name}"),
                message: format!("{name}: {e}"),
            }),
    }
}

/// The builder members of a definition (everything but `name`, `slug`, `sql`, `period`),
/// decoded, with the first wrong member named.
pub(crate) fn parse_builder(fields: Map<String, Value>) -> Result<Builder, MetricError> {
    if let Some(unknown) = fields.keys().find(|k| !MEMBERS.contains(&k.as_str())) {
        return Err(MetricError::Field {
            pointer: format!("/{unknown}"),
            message: format!(
                "unknown member {unknown:?}: a builder metric has {}",
                MEMBERS.join(", ")
            ),
        });
    }
    for required in ["usage_event", "aggregation"] {
        if !fields.contains_key(required) {
            return Err(MetricError::Field {
                pointer: format!("/{required}"),
                message: format!("a builder metric needs {required}"),
            });
        }
    }
    member::<String>(&fields, "usage_event")?;
    member::<Aggregation>(&fields, "aggregation")?;
    member::<Option<String>>(&fields, "field")?;
    member::<Vec<String>>(&fields, "group_by")?;
    if let Some(filters) = fields.get("filters") {
        let items = filters.as_array().ok_or_else(|| MetricError::Field {
            pointer: "/filters".into(),
            message: "filters must be an array of {\"field\",\"op\",\"value\"}".into(),
        })?;
        for (i, f) in items.iter().enumerate() {
            serde_json::from_value::<Filter>(f.clone()).map_err(|e| MetricError::Field {
                pointer: format!("/filters/{i}"),
                message: format!("filters[{i}]: {e}"),
            })?;
        }
    }
    serde_json::from_value(Value::Object(fields))
        .map_err(|e| MetricError::Invalid(format!("invalid builder metric: {e}")).at(""))
}

/// `compile`, with a refusal blamed on the member that causes it: the field (with the
/// aggregation alone), else the first filter or dimension that fails on its own.
pub(crate) fn compile_located(b: &Builder, def: &EventTypeDef) -> Result<String, MetricError> {
    let err = match compile(b, def) {
        Ok(sql) => return Ok(sql),
        Err(e) => e,
    };
    let bare = Builder {
        filters: Vec::new(),
        group_by: Vec::new(),
        ..b.clone()
    };
    if compile(&bare, def).is_err() {
        return Err(err.at("/field"));
    }
    for (i, f) in b.filters.iter().enumerate() {
        let one = Builder {
            filters: vec![f.clone()],
            ..bare.clone()
        };
        if compile(&one, def).is_err() {
            return Err(err.at(&format!("/filters/{i}")));
        }
    }
    for (i, g) in b.group_by.iter().enumerate() {
        let one = Builder {
            group_by: vec![g.clone()],
            ..bare.clone()
        };
        if compile(&one, def).is_err() {
            return Err(err.at(&format!("/group_by/{i}")));
        }
    }
    Err(err.at(""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pointer(e: MetricError) -> String {
        match e {
            MetricError::Field { pointer, .. } => pointer,
            other => panic!("not a field error: {other}"),
        }
    }

    fn def() -> EventTypeDef {
        serde_json::from_value(json!({"id": "t1", "name": "Calls", "api_slug": "calls",
            "dataschema": {"customer_id": "String", "timestamp": "DateTime64",
                           "data": {"cost": "Float64", "region": "String"}},
            "column_order": ["timestamp"], "unique_key": ["customer_id", "timestamp"],
            "created_at": "2025-01-01T00:00:00Z", "schema_version": 1}))
        .unwrap()
    }

    fn fields(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn each_wrong_member_is_named() {
        for (body, want) in [
            (
                json!({"usage_event": "calls", "aggregation": "median"}),
                "/aggregation",
            ),
            (json!({"usage_event": "calls"}), "/aggregation"),
            (json!({"aggregation": "count"}), "/usage_event"),
            (
                json!({"usage_event": "calls", "aggregation": "count", "colour": 1}),
                "/colour",
            ),
            (
                json!({"usage_event": "calls", "aggregation": "count", "group_by": "region"}),
                "/group_by",
            ),
            (
                json!({"usage_event": "calls", "aggregation": "count",
                    "filters": [{"field": "region", "op": "eq", "value": "x"}, {"field": "region", "op": "like", "value": "x"}]}),
                "/filters/1",
            ),
        ] {
            let got = parse_builder(fields(body.clone())).map(drop);
            assert_eq!(pointer(got.unwrap_err()), want, "{body}");
        }
        assert!(
            parse_builder(fields(
                json!({"usage_event": "calls", "aggregation": "count"})
            ))
            .is_ok()
        );
    }

    #[test]
    fn a_refused_compilation_is_blamed_on_its_member() {
        for (body, want) in [
            (
                json!({"usage_event": "calls", "aggregation": "sum", "field": "nope"}),
                "/field",
            ),
            (
                json!({"usage_event": "calls", "aggregation": "sum"}),
                "/field",
            ),
            (
                json!({"usage_event": "calls", "aggregation": "sum", "field": "region"}),
                "/field",
            ),
            (
                json!({"usage_event": "calls", "aggregation": "sum", "field": "cost",
                    "filters": [{"field": "region", "op": "eq", "value": "x"}, {"field": "nope", "op": "eq", "value": 1}]}),
                "/filters/1",
            ),
            (
                json!({"usage_event": "calls", "aggregation": "count", "group_by": ["region", "nope"]}),
                "/group_by/1",
            ),
        ] {
            let b = parse_builder(fields(body.clone())).unwrap();
            assert_eq!(
                pointer(compile_located(&b, &def()).unwrap_err()),
                want,
                "{body}"
            );
        }
    }
}
