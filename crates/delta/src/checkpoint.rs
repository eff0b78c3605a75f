//! Checkpoints: the whole state of a table at one version in one Parquet file
//! (`_delta_log/<version>.checkpoint.parquet`, the protocol's classic single-part form) plus
//! `_delta_log/_last_checkpoint`, so readers replay at most `CHECKPOINT_EVERY` JSON commits
//! instead of the table's whole history.
//!
//! Each row holds one action in the column named after it. The schema is the smallest one
//! chDB, DuckDB's delta extension and delta-rs all read (checked with each, see
//! `docs/storage.md`): nullable structs, maps named `key_value`/`key`/`value` as Parquet
//! writers conventionally name them. The rows are our own actions' JSON, decoded into that
//! schema by arrow's JSON reader, so a field is spelled in one place (`actions`).

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::ArrowWriter;
use serde_json::json;

use crate::actions::{Action, Protocol, Remove};
use crate::error::DeltaError;
use crate::log::LOG_DIR;
use crate::state::LogState;

fn text() -> DataType {
    DataType::Utf8
}

fn strings() -> DataType {
    DataType::List(Arc::new(Field::new("element", text(), true)))
}

fn string_map() -> DataType {
    let entry = Fields::from(vec![
        Field::new("key", text(), false),
        Field::new("value", text(), true),
    ]);
    DataType::Map(
        Arc::new(Field::new("key_value", DataType::Struct(entry), false)),
        false,
    )
}

fn group(fields: Vec<Field>) -> DataType {
    DataType::Struct(Fields::from(fields))
}

fn deletion_vector() -> DataType {
    group(vec![
        Field::new("storageType", text(), true),
        Field::new("pathOrInlineDv", text(), true),
        Field::new("offset", DataType::Int32, true),
        Field::new("sizeInBytes", DataType::Int32, true),
        Field::new("cardinality", DataType::Int64, true),
    ])
}

/// The checkpoint's columns.
pub fn checkpoint_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(
            "protocol",
            group(vec![
                Field::new("minReaderVersion", DataType::Int32, true),
                Field::new("minWriterVersion", DataType::Int32, true),
                Field::new("readerFeatures", strings(), true),
                Field::new("writerFeatures", strings(), true),
            ]),
            true,
        ),
        Field::new(
            "metaData",
            group(vec![
                Field::new("id", text(), true),
                Field::new("name", text(), true),
                Field::new(
                    "format",
                    group(vec![
                        Field::new("provider", text(), true),
                        Field::new("options", string_map(), true),
                    ]),
                    true,
                ),
                Field::new("schemaString", text(), true),
                Field::new("partitionColumns", strings(), true),
                Field::new("configuration", string_map(), true),
                Field::new("createdTime", DataType::Int64, true),
            ]),
            true,
        ),
        Field::new(
            "txn",
            group(vec![
                Field::new("appId", text(), true),
                Field::new("version", DataType::Int64, true),
                Field::new("lastUpdated", DataType::Int64, true),
            ]),
            true,
        ),
        Field::new(
            "add",
            group(vec![
                Field::new("path", text(), true),
                Field::new("partitionValues", string_map(), true),
                Field::new("size", DataType::Int64, true),
                Field::new("modificationTime", DataType::Int64, true),
                Field::new("dataChange", DataType::Boolean, true),
                Field::new("stats", text(), true),
                Field::new("deletionVector", deletion_vector(), true),
            ]),
            true,
        ),
        Field::new(
            "remove",
            group(vec![
                Field::new("path", text(), true),
                Field::new("deletionTimestamp", DataType::Int64, true),
                Field::new("dataChange", DataType::Boolean, true),
                Field::new("extendedFileMetadata", DataType::Boolean, true),
                Field::new("partitionValues", string_map(), true),
                Field::new("size", DataType::Int64, true),
            ]),
            true,
        ),
    ]))
}

/// The actions a checkpoint of `state` holds: protocol, metadata, the last txn, every live
/// file, and the files removed within the retention (tombstones, for other writers' VACUUM).
pub fn checkpoint_actions(state: &LogState) -> Vec<Action> {
    let mut out = vec![Action::Protocol(Protocol::with_deletion_vectors())];
    out.extend(state.metadata.clone().map(Action::MetaData));
    out.extend(state.txn.clone().map(Action::Txn));
    out.extend(state.files.values().cloned().map(Action::Add));
    out.extend(
        state
            .removed
            .iter()
            .filter(|(path, _)| path.ends_with(".parquet"))
            .map(|(path, at)| {
                Action::Remove(Remove {
                    path: path.clone(),
                    deletion_timestamp: *at,
                    data_change: false,
                    extended_file_metadata: false,
                    partition_values: Default::default(),
                    size: 0,
                    deletion_vector: None,
                })
            }),
    );
    out
}

/// The checkpoint file's bytes for `actions`.
pub fn encode_checkpoint(actions: &[Action]) -> Result<Vec<u8>, DeltaError> {
    let schema = checkpoint_schema();
    let mut decoder = arrow::json::ReaderBuilder::new(schema.clone())
        .with_batch_size(actions.len().max(1))
        .build_decoder()
        .map_err(|e| DeltaError::Checkpoint(e.to_string()))?;
    let rows: Vec<serde_json::Value> = actions
        .iter()
        .map(|a| serde_json::to_value(a).map_err(DeltaError::Encode))
        .collect::<Result<_, _>>()?;
    decoder
        .serialize(&rows)
        .map_err(|e| DeltaError::Checkpoint(e.to_string()))?;
    let batch = decoder
        .flush()
        .map_err(|e| DeltaError::Checkpoint(e.to_string()))?
        .unwrap_or_else(|| RecordBatch::new_empty(schema.clone()));
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, schema, None)
        .map_err(|e| DeltaError::Checkpoint(e.to_string()))?;
    writer
        .write(&batch)
        .map_err(|e| DeltaError::Checkpoint(e.to_string()))?;
    writer
        .close()
        .map_err(|e| DeltaError::Checkpoint(e.to_string()))?;
    Ok(out)
}

/// Writes the checkpoint of `state` (at its version) and points `_last_checkpoint` at it.
pub async fn write_checkpoint(
    store: &dyn ObjectStore,
    root: &Path,
    state: &LogState,
) -> Result<(), DeltaError> {
    let Some(version) = state.version else {
        return Ok(());
    };
    let actions = checkpoint_actions(state);
    let bytes = encode_checkpoint(&actions)?;
    let log = root.clone().join(LOG_DIR);
    let path = log
        .clone()
        .join(format!("{version:020}.checkpoint.parquet"));
    let size_in_bytes = bytes.len();
    store
        .put(&path, PutPayload::from(bytes))
        .await
        .map_err(|e| DeltaError::store(&path, e))?;
    let last = log.join("_last_checkpoint");
    let pointer = json!({"version": version, "size": actions.len(), "sizeInBytes": size_in_bytes});
    store
        .put(&last, PutPayload::from(pointer.to_string().into_bytes()))
        .await
        .map_err(|e| DeltaError::store(&last, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::{Add, DeletionVectorDescriptor, Format, Metadata, Txn};
    use arrow::array::{Array, AsArray};

    #[test]
    fn a_checkpoint_holds_one_action_per_row_in_its_column() {
        let mut state = LogState::empty();
        let add = |path: &str, dv: bool| Add {
            path: path.into(),
            partition_values: Default::default(),
            size: 10,
            modification_time: 1,
            data_change: true,
            stats: Some("{\"numRecords\":3}".into()),
            deletion_vector: dv.then(|| DeletionVectorDescriptor {
                storage_type: "i".into(),
                path_or_inline_dv: "abcde".into(),
                offset: None,
                size_in_bytes: 4,
                cardinality: 1,
            }),
        };
        state.apply(
            0,
            &[
                Action::MetaData(Metadata {
                    id: "t1".into(),
                    name: None,
                    format: Format {
                        provider: "parquet".into(),
                        options: Default::default(),
                    },
                    schema_string: "{}".into(),
                    partition_columns: vec![],
                    configuration: [("a".to_string(), "b".to_string())].into(),
                    created_time: Some(5),
                }),
                Action::Txn(Txn {
                    app_id: "meterbase-t1".into(),
                    version: 7,
                    last_updated: None,
                }),
                Action::Add(add("x.parquet", true)),
                Action::Add(add("y.parquet", false)),
            ],
        );
        let bytes = encode_checkpoint(&checkpoint_actions(&state)).unwrap();
        let batches: Vec<RecordBatch> =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                bytes::Bytes::from(bytes),
            )
            .unwrap()
            .build()
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let batch = &batches[0];
        assert_eq!(batch.num_rows(), 5);
        let add = batch.column_by_name("add").unwrap().as_struct();
        assert_eq!(add.null_count(), 3);
        let paths = add.column_by_name("path").unwrap().as_string::<i32>();
        assert_eq!(paths.value(3), "x.parquet");
        let dv = add.column_by_name("deletionVector").unwrap().as_struct();
        assert!(dv.is_valid(3) && dv.is_null(4));
        let txn = batch.column_by_name("txn").unwrap().as_struct();
        assert_eq!(
            txn.column_by_name("version")
                .unwrap()
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(2),
            7
        );
    }
}
