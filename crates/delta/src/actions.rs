//! The Delta Lake log's actions as this crate writes and reads them: one JSON object per
//! line of `_delta_log/<version, 20 digits>.json`, each with exactly one key naming the
//! action (Delta protocol, "Actions"). Only the fields meterbase sets are modelled; a reader
//! of our own log meets nothing else. The log format is Delta's, pinned by
//! `PROTOCOL_READER`/`PROTOCOL_WRITER` and the golden fixture `testdata/formats/delta/`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::DeltaError;

/// Reader version 3 and writer version 7: the versions that name their features in lists
/// (deletion vectors need both).
pub const PROTOCOL_READER: u32 = 3;
pub const PROTOCOL_WRITER: u32 = 7;
pub const DELETION_VECTORS: &str = "deletionVectors";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    Protocol(Protocol),
    MetaData(Metadata),
    Txn(Txn),
    Add(Add),
    Remove(Remove),
    CommitInfo(CommitInfo),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Protocol {
    pub min_reader_version: u32,
    pub min_writer_version: u32,
    pub reader_features: Vec<String>,
    pub writer_features: Vec<String>,
}

impl Protocol {
    /// What every table meterbase publishes needs: deletion vectors, nothing else.
    pub fn with_deletion_vectors() -> Protocol {
        Protocol {
            min_reader_version: PROTOCOL_READER,
            min_writer_version: PROTOCOL_WRITER,
            reader_features: vec![DELETION_VECTORS.into()],
            writer_features: vec![DELETION_VECTORS.into()],
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Format {
    pub provider: String,
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    /// The event type's id: a table dropped and created again under the same slug is
    /// another table.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub format: Format,
    pub schema_string: String,
    pub partition_columns: Vec<String>,
    pub configuration: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_time: Option<i64>,
}

/// Which version of our manifest a Delta version reflects: the protocol's idempotent
/// transaction marker, read back after a restart to resume without a gap or a repeat.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Txn {
    pub app_id: String,
    pub version: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<i64>,
}

/// Where a file's deletion vector is: a file under the table root (`u`: an optional prefix
/// directory then the z85 of its uuid) or the bitmap itself (`i`: z85 of its bytes).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DeletionVectorDescriptor {
    pub storage_type: String,
    pub path_or_inline_dv: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<i32>,
    pub size_in_bytes: i32,
    pub cardinality: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Add {
    /// Relative to the table root, URL-encoded.
    pub path: String,
    pub partition_values: BTreeMap<String, String>,
    pub size: i64,
    pub modification_time: i64,
    pub data_change: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_vector: Option<DeletionVectorDescriptor>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Remove {
    pub path: String,
    pub deletion_timestamp: i64,
    pub data_change: bool,
    pub extended_file_metadata: bool,
    pub partition_values: BTreeMap<String, String>,
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_vector: Option<DeletionVectorDescriptor>,
}

impl Remove {
    /// Takes `add` out of the table at `now` (ms), naming the deletion vector it had, as the
    /// protocol requires for a file whose vector is being replaced.
    pub fn of(add: &Add, now: i64, data_change: bool) -> Remove {
        Remove {
            path: add.path.clone(),
            deletion_timestamp: now,
            data_change,
            extended_file_metadata: true,
            partition_values: add.partition_values.clone(),
            size: add.size,
            deletion_vector: add.deletion_vector.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CommitInfo {
    pub timestamp: i64,
    pub operation: String,
    pub engine_info: String,
    /// The manifest version this commit publishes (also in `txn`, for people reading the
    /// log by eye).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meterbase_manifest_version: Option<u64>,
}

/// A commit file's bytes: one action per line.
pub fn encode_commit(actions: &[Action]) -> Result<Vec<u8>, DeltaError> {
    let mut out = Vec::new();
    for a in actions {
        serde_json::to_writer(&mut out, a).map_err(DeltaError::Encode)?;
        out.push(b'\n');
    }
    Ok(out)
}

/// The actions of a commit file. Lines holding an action this crate does not model (a
/// commit written by another writer) are skipped, not refused: they do not change which
/// files are live in a table only meterbase writes.
pub fn decode_commit(bytes: &[u8], name: &str) -> Result<Vec<Action>, DeltaError> {
    let text = std::str::from_utf8(bytes).map_err(|_| DeltaError::CorruptLog {
        file: name.to_string(),
        reason: "not UTF-8".into(),
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| DeltaError::CorruptLog {
                file: name.to_string(),
                reason: format!("line {}: {e}", i + 1),
            })?;
        let known = value.as_object().is_some_and(|o| {
            o.keys().any(|k| {
                matches!(
                    k.as_str(),
                    "protocol" | "metaData" | "txn" | "add" | "remove" | "commitInfo"
                )
            })
        });
        if !known {
            continue;
        }
        // A commitInfo of another writer may lack our fields: not worth refusing the log.
        match serde_json::from_value::<Action>(value) {
            Ok(a) => out.push(a),
            Err(e) if line.starts_with("{\"commitInfo\"") => {
                tracing::debug!(file = name, "skipping a commitInfo: {e}");
            }
            Err(e) => {
                return Err(DeltaError::CorruptLog {
                    file: name.to_string(),
                    reason: format!("line {}: {e}", i + 1),
                });
            }
        }
    }
    Ok(out)
}

/// Delta's path encoding for `add.path`: a relative URI, so characters outside the
/// unreserved set and the separators our paths use are percent-encoded.
pub fn encode_path(relative: &str) -> String {
    let mut out = String::with_capacity(relative.len());
    for b in relative.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'/' | b'=' | b'-') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_encode_as_one_keyed_object_per_line() {
        let bytes = encode_commit(&[
            Action::Protocol(Protocol::with_deletion_vectors()),
            Action::Txn(Txn {
                app_id: "meterbase-t1".into(),
                version: 4,
                last_updated: None,
            }),
        ])
        .unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert_eq!(
            text,
            "{\"protocol\":{\"minReaderVersion\":3,\"minWriterVersion\":7,\"readerFeatures\":[\"deletionVectors\"],\"writerFeatures\":[\"deletionVectors\"]}}\n{\"txn\":{\"appId\":\"meterbase-t1\",\"version\":4}}\n"
        );
        assert_eq!(decode_commit(&bytes, "x").unwrap().len(), 2);
    }

    #[test]
    fn unknown_actions_are_skipped_and_broken_lines_refused() {
        let log = b"{\"cdc\":{\"path\":\"x\"}}\n{\"txn\":{\"appId\":\"a\",\"version\":1}}\n";
        assert_eq!(decode_commit(log, "x").unwrap().len(), 1);
        assert!(decode_commit(b"{\"add\":{\"path\":1}}\n", "x").is_err());
        assert!(decode_commit(b"{not json\n", "x").is_err());
    }

    #[test]
    fn paths_keep_the_characters_our_file_names_use() {
        assert_eq!(
            encode_path("date=2025-01-01/t9-0001_c.parquet"),
            "date=2025-01-01/t9-0001_c.parquet"
        );
        assert_eq!(encode_path("a b/%"), "a%20b/%25");
    }
}
