//! Counters of what storage did, for `/metrics` and the admin API.

use std::sync::atomic::AtomicU64;

#[derive(Debug, Default)]
pub struct StorageStats {
    pub flushes: AtomicU64,
    pub flush_failures: AtomicU64,
    pub files_written: AtomicU64,
    pub rows_persisted: AtomicU64,
    pub wal_segments_retired: AtomicU64,
    /// Writes that found the buffer full and waited for room (accepted or not).
    pub buffer_waits: AtomicU64,
    /// Compactions committed (one per table and pass that merged anything).
    pub compactions: AtomicU64,
    pub compaction_bytes_read: AtomicU64,
    pub compaction_bytes_written: AtomicU64,
}

/// What one compaction pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CompactionStats {
    pub files_in: usize,
    pub files_out: usize,
    pub rows_in: usize,
    pub rows_out: usize,
    /// Outputs whose rows all took the group's latest `_seq` (`may_share_one_seq`).
    pub files_one_seq: usize,
}

impl std::ops::AddAssign for CompactionStats {
    fn add_assign(&mut self, o: Self) {
        self.files_in += o.files_in;
        self.files_out += o.files_out;
        self.rows_in += o.rows_in;
        self.rows_out += o.rows_out;
        self.files_one_seq += o.files_one_seq;
    }
}
