//! The payload of a write-ahead log record: which table, which schema version, and the
//! validated rows as an Arrow IPC stream (so replay never re-validates against a clock or a
//! schema that has moved on).

use std::io::Cursor;

use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;

use crate::StorageError;

const KIND_EVENTS: u8 = 1;
const KIND_MARKER: u8 = 2;
const KIND_DELETE: u8 = 3;

#[derive(Debug)]
pub enum WalRecord {
    Events {
        org_id: String,
        type_id: String,
        schema_version: u32,
        batch: RecordBatch,
    },
    /// Carries no rows: it takes a sequence number (and an arrival instant) from the log for
    /// rows written straight to files by a staged upload, so they order with logged rows.
    Marker { org_id: String, type_id: String },
    /// `DELETE /usage/{slug}/events`: its sequence and instant come from the log frame.
    Delete {
        org_id: String,
        type_id: String,
        filter: DeleteFilter,
    },
}

/// Which rows a deletion removes; `None` matches everything on that axis.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeleteFilter {
    pub customer_id: Option<String>,
    pub from: Option<i64>,
    pub to: Option<i64>,
}

fn put_opt_i64(out: &mut Vec<u8>, v: Option<i64>) {
    match v {
        Some(x) => {
            out.push(1);
            out.extend_from_slice(&x.to_le_bytes());
        }
        None => out.push(0),
    }
}

fn get_opt_i64(buf: &mut &[u8]) -> Result<Option<i64>, StorageError> {
    if take(buf, 1)?[0] == 0 {
        return Ok(None);
    }
    let b = take(buf, 8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Ok(Some(i64::from_le_bytes(a)))
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], StorageError> {
    if buf.len() < n {
        return Err(StorageError::BadRecord("truncated".into()));
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

fn get_str(buf: &mut &[u8]) -> Result<String, StorageError> {
    let len = take(buf, 2)?;
    let len = u16::from_le_bytes([len[0], len[1]]) as usize;
    let bytes = take(buf, len)?;
    String::from_utf8(bytes.to_vec()).map_err(|e| StorageError::BadRecord(e.to_string()))
}

impl WalRecord {
    pub fn encode_events(
        org_id: &str,
        type_id: &str,
        schema_version: u32,
        batch: &RecordBatch,
    ) -> Result<Vec<u8>, StorageError> {
        let mut out = Vec::with_capacity(batch.get_array_memory_size() + 256);
        out.push(KIND_EVENTS);
        put_str(&mut out, org_id);
        put_str(&mut out, type_id);
        out.extend_from_slice(&schema_version.to_le_bytes());
        let mut w = StreamWriter::try_new(&mut out, batch.schema_ref())?;
        w.write(batch)?;
        w.finish()?;
        drop(w);
        Ok(out)
    }

    pub fn encode_marker(org_id: &str, type_id: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(5 + org_id.len() + type_id.len());
        out.push(KIND_MARKER);
        put_str(&mut out, org_id);
        put_str(&mut out, type_id);
        out
    }

    pub fn encode_delete(org_id: &str, type_id: &str, filter: &DeleteFilter) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.push(KIND_DELETE);
        put_str(&mut out, org_id);
        put_str(&mut out, type_id);
        match &filter.customer_id {
            Some(c) => {
                out.push(1);
                put_str(&mut out, c);
            }
            None => out.push(0),
        }
        put_opt_i64(&mut out, filter.from);
        put_opt_i64(&mut out, filter.to);
        out
    }

    pub fn decode(payload: &[u8]) -> Result<WalRecord, StorageError> {
        let mut buf = payload;
        let kind = take(&mut buf, 1)?[0];
        match kind {
            KIND_EVENTS => {
                let org_id = get_str(&mut buf)?;
                let type_id = get_str(&mut buf)?;
                let v = take(&mut buf, 4)?;
                let schema_version = u32::from_le_bytes([v[0], v[1], v[2], v[3]]);
                let mut reader = StreamReader::try_new(Cursor::new(buf), None)?;
                let batch = reader
                    .next()
                    .ok_or_else(|| StorageError::BadRecord("no rows in record".into()))??;
                Ok(WalRecord::Events {
                    org_id,
                    type_id,
                    schema_version,
                    batch,
                })
            }
            KIND_MARKER => Ok(WalRecord::Marker {
                org_id: get_str(&mut buf)?,
                type_id: get_str(&mut buf)?,
            }),
            KIND_DELETE => {
                let org_id = get_str(&mut buf)?;
                let type_id = get_str(&mut buf)?;
                let customer_id = if take(&mut buf, 1)?[0] == 0 {
                    None
                } else {
                    Some(get_str(&mut buf)?)
                };
                let from = get_opt_i64(&mut buf)?;
                let to = get_opt_i64(&mut buf)?;
                Ok(WalRecord::Delete {
                    org_id,
                    type_id,
                    filter: DeleteFilter {
                        customer_id,
                        from,
                        to,
                    },
                })
            }
            other => Err(StorageError::BadRecord(format!(
                "unknown record kind {other}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_records_round_trip() {
        for filter in [
            DeleteFilter::default(),
            DeleteFilter {
                customer_id: Some("c'1".into()),
                from: Some(-5),
                to: Some(i64::MAX),
            },
        ] {
            let bytes = WalRecord::encode_delete("org", "type", &filter);
            match WalRecord::decode(&bytes).unwrap() {
                WalRecord::Delete {
                    org_id,
                    type_id,
                    filter: back,
                } => assert_eq!(
                    (org_id.as_str(), type_id.as_str(), back),
                    ("org", "type", filter)
                ),
                other => panic!("{other:?}"),
            }
        }
    }
}
