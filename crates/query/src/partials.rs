//! Per-file partial aggregates of billable metrics, kept in memory: for each data file a
//! metric has read, its partial states per (customer, dimensions, bucket). A billing query
//! over a month then merges a few rows per customer and day from each file instead of
//! scanning the file's events again.
//!
//! Files never change once written (a published path never names other bytes), so an
//! entry is never invalidated, only evicted: a file whose deletion vector, deletions in force,
//! schema or metric change gets a different key (`partials_plan::key`), and files compaction
//! replaced are no longer asked for and age out. Bounded by bytes; a restart starts cold, and
//! the first query after it computes the partials of the files it reads.

use std::sync::Arc;

use arrow::record_batch::RecordBatch;

use crate::partials_plan::PartialKey;

/// The partial rows of one file under one key.
pub(crate) type Partials = Arc<Vec<RecordBatch>>;

pub(crate) struct PartialsCache {
    entries: moka::sync::Cache<PartialKey, Partials>,
}

impl PartialsCache {
    pub fn new(capacity_bytes: u64) -> PartialsCache {
        PartialsCache {
            entries: moka::sync::Cache::builder()
                .max_capacity(capacity_bytes)
                .weigher(|_, v: &Partials| {
                    let bytes: usize = v.iter().map(RecordBatch::get_array_memory_size).sum();
                    u32::try_from(bytes).unwrap_or(u32::MAX)
                })
                .build(),
        }
    }

    pub fn get(&self, key: &PartialKey) -> Option<Partials> {
        self.entries.get(key)
    }

    pub fn insert(&self, key: PartialKey, partials: Partials) {
        self.entries.insert(key, partials);
    }

    /// Bytes held now (after pending evictions are applied).
    pub fn bytes(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.weighted_size()
    }
}
