//! The tables of the running store, by (organisation, event type), and what the write-ahead
//! log hands them once a record is durable: its rows into the table's buffer, a deletion
//! into its pending deletions.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use arrow::record_batch::RecordBatch;
use meterbase_wal::{Ack, Apply};
use tracing::warn;

use crate::format::manifest::Tombstone;
use crate::format::record::EventRange;
use crate::table::Table;

type TableKey = (String, String);

/// The shared table map; also the write-ahead log's apply hook.
#[derive(Default)]
pub(crate) struct Tables {
    map: RwLock<HashMap<TableKey, Arc<Table>>>,
}

/// What a log record does once durable.
pub(crate) enum Pending {
    Rows {
        table: Arc<Table>,
        batch: RecordBatch,
        key_hashes: Vec<u64>,
    },
    /// A sequence reserved for rows that bypass the log (staged uploads).
    Marker,
    Delete {
        table: Arc<Table>,
        range: EventRange,
    },
}

/// The deletion a durable `Delete` record made.
pub(crate) fn tombstone(ack: Ack, range: EventRange) -> Tombstone {
    Tombstone {
        seq: ack.seq,
        at: ack.ingested_at,
        customer_id: range.customer_id,
        from: range.from,
        to: range.to,
    }
}

impl Tables {
    pub(crate) fn get(&self, org_id: &str, type_id: &str) -> Option<Arc<Table>> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(org_id.to_string(), type_id.to_string()))
            .cloned()
    }

    pub(crate) fn all(&self) -> Vec<Arc<Table>> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub(crate) fn insert(&self, table: Arc<Table>) {
        self.map
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert((table.org_id.clone(), table.type_id.clone()), table);
    }

    pub(crate) fn remove(&self, org_id: &str, type_id: &str) -> Option<Arc<Table>> {
        self.map
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(org_id.to_string(), type_id.to_string()))
    }
}

impl Apply<Pending> for Tables {
    fn apply(&self, ack: Ack, item: Pending) {
        match item {
            Pending::Rows {
                table,
                batch,
                key_hashes,
            } => {
                if let Err(e) = table.push(ack, batch, Some(key_hashes)) {
                    // Cannot happen for batches built against the table's schema; the rows
                    // are still in the log and come back on replay.
                    warn!(seq = ack.seq, "could not buffer a durable record: {e}");
                }
            }
            Pending::Marker => {}
            Pending::Delete { table, range } => table.add_tombstone(tombstone(ack, range)),
        }
    }
}
