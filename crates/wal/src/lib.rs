//! meterbase-wal owns the write-ahead log: numbered segment files of framed records
//! (`[len][crc32c][seq][ingested_at][payload]`), group commit on one writer thread (one
//! `fdatasync` answers every waiting writer), replay that tells a torn tail from corruption,
//! and retirement of segments once their records are persisted elsewhere.
//!
//! It knows nothing about events, Arrow or object stores: payloads are opaque bytes and the
//! caller's `Apply` hook receives each durable record, in sequence order, before its writer
//! is answered.
//!
//! Module map: `error` (`WalError`, `Seq`), `segment` (segment names, record framing, replay), `writer` (the writer
//! thread: group commit, segment roll-over and zero-filled preallocation, retirement).

mod error;
mod segment;
mod writer;

pub use error::{Seq, WalError};

pub use segment::{ReplayStats, replay};
pub use writer::{
    Ack, Apply, SYNC_BUCKETS_MICROS, SyncFailpoint, SyncStats, Wal, WalConfig, now_micros,
};
