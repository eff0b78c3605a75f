//! A chunk of a table's buffer: the rows of consecutive log records, in log order, with
//! what the persister and snapshots need to know of them (sequence and time ranges, key
//! hashes, bytes). Small writes are merged as they arrive.

use arrow::record_batch::RecordBatch;
use meterbase_wal::Seq;

use crate::identity::KeySet;

/// Writes of fewer rows than this (single events, small requests) are not kept as batches of
/// their own: a 1-row `RecordBatch` costs ~1 KiB of buffers and arrays, which made a stream
/// of single events flush a file per day every second and made every persist and query
/// walk one batch per event. They wait in `Chunk::small` and are merged by `concat_batches`.
pub(crate) const SMALL_BATCH_ROWS: usize = 64;
/// How many rows of small writes are merged into one batch.
const MERGED_ROWS: usize = 1024;

#[derive(Debug, Default)]
pub(crate) struct Chunk {
    /// In log order; `small` holds writes later than all of these.
    batches: Vec<RecordBatch>,
    small: Vec<RecordBatch>,
    small_rows: usize,
    small_bytes: usize,
    /// Hashes of the unique keys of the rows, to tell whether the buffer can hold two
    /// versions of a key (equal keys have equal hashes; a collision only costs a dedup).
    pub keys: KeySet,
    /// Two rows of this chunk may share a unique key (a hash repeated). Keys shared with
    /// the frozen chunk are `TableState::shares_with_frozen`'s.
    pub has_duplicates: bool,
    pub rows: usize,
    pub bytes: usize,
    pub min_seq: Seq,
    pub max_seq: Seq,
    pub min_ts: i64,
    pub max_ts: i64,
}

impl Chunk {
    pub(crate) fn push(
        &mut self,
        seq: Seq,
        batch: RecordBatch,
        bytes: usize,
        min_ts: i64,
        max_ts: i64,
    ) {
        if self.is_empty() {
            self.min_seq = seq;
            self.min_ts = min_ts;
            self.max_ts = max_ts;
        } else {
            self.min_ts = self.min_ts.min(min_ts);
            self.max_ts = self.max_ts.max(max_ts);
        }
        self.max_seq = seq;
        self.rows += batch.num_rows();
        self.bytes += bytes;
        let small = batch.num_rows() < SMALL_BATCH_ROWS;
        // A schema change (a field added to the event type) starts a new merge: the batches
        // `concat_batches` joins must share one schema.
        if !small
            || self
                .small
                .first()
                .is_some_and(|b| b.schema() != batch.schema())
        {
            self.merge_small();
        }
        if small {
            self.small_rows += batch.num_rows();
            self.small_bytes += bytes;
            self.small.push(batch);
            if self.small_rows >= MERGED_ROWS {
                self.merge_small();
            }
        } else {
            self.batches.push(batch);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.batches.is_empty() && self.small.is_empty()
    }

    /// Every batch, in log order.
    pub(crate) fn all_batches(&self) -> impl Iterator<Item = &RecordBatch> {
        self.batches.iter().chain(&self.small)
    }

    /// Moves the small writes into `batches` as one batch (as they are, should the merge
    /// fail: it only saves memory and time, it decides nothing).
    pub(crate) fn merge_small(&mut self) {
        match self.small.len() {
            0 => return,
            1 => self.batches.append(&mut self.small),
            _ => match arrow::compute::concat_batches(&self.small[0].schema(), &self.small) {
                Ok(merged) => {
                    let merged_bytes = merged.get_array_memory_size();
                    self.bytes = self.bytes - self.small_bytes + merged_bytes;
                    self.batches.push(merged);
                    self.small.clear();
                }
                Err(_) => self.batches.append(&mut self.small),
            },
        }
        self.small_rows = 0;
        self.small_bytes = 0;
    }
}
