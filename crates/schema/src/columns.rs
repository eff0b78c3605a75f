//! A table's column names matched to an event type's fields: by name, or by
//! `map.FIELD=COLUMN`, with unknown columns refused unless ignored. One module so a CSV
//! header row and the schema of an Arrow or Parquet body follow exactly the same rules.

use std::collections::HashMap;

use crate::{BaseType, EventDecoder, EventError};

/// How column names are matched to the event type (CSV header rows, Arrow and Parquet
/// schemas alike).
#[derive(Debug, Clone, Default)]
pub struct CsvOptions {
    /// `(field, column)` pairs from `map.FIELD=COLUMN`.
    pub field_columns: Vec<(String, String)>,
    pub ignore_unknown_columns: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    Customer,
    Timestamp,
    /// A data field, by index into the decoder's fields; `true` when it holds instants (epoch
    /// seconds are then read as numbers, as in JSON).
    Field(usize, bool),
    Ignore,
}

/// The column names resolved against one event type.
#[derive(Debug)]
pub(crate) struct Layout {
    pub(crate) targets: Vec<Target>,
    /// Decoder error pointer (`/customer_id`, `/data/x`) → the column it came from.
    column_of_pointer: HashMap<String, String>,
}

/// An error about the columns as a whole: `line` is the CSV header's (1), none for a schema.
pub(crate) fn header_error(line: Option<usize>, column: &str, message: String) -> EventError {
    EventError {
        index: None,
        line,
        pointer: column.to_string(),
        message,
    }
}

impl Layout {
    /// `line`: where the names are, for the errors (the CSV header's line; none for a schema).
    pub(crate) fn new(
        dec: &EventDecoder,
        header: &[String],
        opts: &CsvOptions,
        line: Option<usize>,
    ) -> Result<Layout, Vec<EventError>> {
        let mut errors = Vec::new();
        let mut seen = HashMap::new();
        for (j, name) in header.iter().enumerate() {
            if seen.insert(name.as_str(), j).is_some() {
                errors.push(header_error(
                    line,
                    name,
                    format!("column {name:?} appears twice"),
                ));
            }
        }
        let target_of = |field: &str| -> Option<Target> {
            match field {
                "customer_id" => Some(Target::Customer),
                "timestamp" => Some(Target::Timestamp),
                _ => dec.field_index(field).map(|i| {
                    let instants = matches!(
                        dec.fields()[i].1.base,
                        BaseType::DateTime | BaseType::DateTime64 { .. }
                    );
                    Target::Field(i, instants)
                }),
            }
        };
        let mut targets = vec![None; header.len()];
        let mut mapped_fields: HashMap<&str, &str> = HashMap::new();
        for (field, column) in &opts.field_columns {
            if mapped_fields.insert(field, column).is_some() {
                errors.push(header_error(
                    line,
                    column,
                    format!("map.{field} is given more than once"),
                ));
                continue;
            }
            let Some(target) = target_of(field) else {
                errors.push(header_error(
                    line,
                    column,
                    format!("map.{field}={column}: the event type has no field {field:?}"),
                ));
                continue;
            };
            match seen.get(column.as_str()) {
                Some(&j) if targets[j].is_none() => targets[j] = Some(target),
                Some(_) => errors.push(header_error(
                    line,
                    column,
                    format!("column {column:?} is mapped to two fields"),
                )),
                None => errors.push(header_error(
                    line,
                    column,
                    format!("map.{field}={column}: there is no column {column:?}"),
                )),
            }
        }
        for (j, name) in header.iter().enumerate() {
            if targets[j].is_some() {
                continue;
            }
            let by_name = if mapped_fields.contains_key(name.as_str()) {
                // The field takes its values from another column; this one matches nothing.
                None
            } else {
                target_of(name)
            };
            targets[j] = Some(match by_name {
                Some(t) => t,
                None if opts.ignore_unknown_columns => Target::Ignore,
                None => {
                    errors.push(header_error(
                    line,
                        name,
                        format!(
                            "column {name:?} matches no field of the event type (map it with map.FIELD={name}, or pass ignore_unknown_columns=true)"
                        ),
                    ));
                    Target::Ignore
                }
            });
        }
        let targets: Vec<Target> = targets
            .into_iter()
            .map(|t| t.unwrap_or(Target::Ignore))
            .collect();
        let mut column_of_pointer = HashMap::new();
        for (j, t) in targets.iter().enumerate() {
            let pointer = match t {
                Target::Customer => "/customer_id".to_string(),
                Target::Timestamp => "/timestamp".to_string(),
                Target::Field(i, _) => format!("/data/{}", dec.fields()[*i].0),
                Target::Ignore => continue,
            };
            column_of_pointer.insert(pointer, header[j].clone());
        }
        let required = [("customer_id", "/customer_id"), ("timestamp", "/timestamp")]
            .into_iter()
            .map(|(f, p)| (f.to_string(), p.to_string(), false))
            .chain(
                dec.fields()
                    .iter()
                    .map(|(f, t)| (f.clone(), format!("/data/{f}"), t.nullable)),
            );
        for (field, pointer, nullable) in required {
            if !nullable && !column_of_pointer.contains_key(&pointer) {
                errors.push(header_error(
                    line,
                    &field,
                    format!(
                        "required field {field:?} has no column (name a column {field:?} or map it with map.{field}=COLUMN)"
                    ),
                ));
            }
        }
        if errors.is_empty() {
            Ok(Layout {
                targets,
                column_of_pointer,
            })
        } else {
            Err(errors)
        }
    }

    /// Decoder pointers (`/data/x`) → the column names the sender knows.
    pub(crate) fn rename(&self, errors: &mut [EventError]) {
        for e in errors {
            if let Some(column) = self.column_of_pointer.get(&e.pointer) {
                e.pointer = column.clone();
            }
        }
    }
}
