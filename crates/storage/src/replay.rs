//! Start-up replay: every write-ahead log record a manifest does not yet cover goes back
//! into its table's buffer (rows) or pending deletions, in log order.

use meterbase_wal::{Ack, ReplayStats, WalError};
use tracing::info;

use crate::config::StorageConfig;
use crate::error::StorageError;
use crate::format::record::WalRecord;
use crate::registry::{Tables, tombstone};

/// Replays the log in `config.wal.dir` into `tables`. Blocking: run it off the async workers.
pub(crate) fn replay_wal(
    config: &StorageConfig,
    tables: &Tables,
) -> Result<ReplayStats, StorageError> {
    let dir = &config.wal.dir;
    let corrupt = |seq: u64, reason: String| WalError::Corrupt {
        segment: dir.clone(),
        offset: 0,
        reason: format!("record {seq} {reason}"),
    };
    let mut skipped_unknown = 0u64;
    let stats = meterbase_wal::replay(
        config.wal.fs.as_ref(),
        dir,
        config.skip_wal_corruption,
        |seq, ingested_at, payload| {
            let record = WalRecord::decode(payload).map_err(|e| {
                corrupt(seq, format!("passed its checksum but does not decode: {e}"))
            })?;
            let ack = Ack { seq, ingested_at };
            match record {
                WalRecord::Events {
                    org_id,
                    type_id,
                    batch,
                    ..
                } => {
                    let Some(table) = tables.get(&org_id, &type_id) else {
                        skipped_unknown += 1;
                        return Ok(());
                    };
                    if seq <= table.manifest().persisted_seq {
                        return Ok(());
                    }
                    table
                        .push(ack, batch, None)
                        .map_err(|e| corrupt(seq, format!("does not fit its table: {e}")))?;
                }
                WalRecord::Marker { .. } => {}
                WalRecord::Delete {
                    org_id,
                    type_id,
                    range,
                } => {
                    if let Some(table) = tables.get(&org_id, &type_id) {
                        table.add_tombstone(tombstone(ack, range));
                    }
                }
            }
            Ok(())
        },
    )?;
    if skipped_unknown > 0 {
        info!(
            records = skipped_unknown,
            "skipped log records of deleted event types"
        );
    }
    Ok(stats)
}
