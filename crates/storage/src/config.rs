//! What storage is started with: buffer and flush sizes, the write-ahead log's settings, and
//! compaction's.

use std::path::PathBuf;
use std::time::Duration;

use meterbase_wal::WalConfig;

/// A table's buffer is persisted once it holds this much.
pub const DEFAULT_FLUSH_BYTES: usize = 32 << 20;
/// Writes are refused (503) beyond this much buffered, and flushes hurry from half of it.
/// With the persister's working copies and the allocator's slack, the process peaks at
/// about three times this under sustained ingest; 256 MiB keeps it under 1 GiB.
pub const DEFAULT_MAX_BUFFER_BYTES: usize = 256 << 20;
/// Long enough to span a persist under load (a few hundred ms), short next to a client's
/// request timeout.
pub const DEFAULT_BUFFER_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub wal: WalConfig,
    /// A table's active chunk is persisted once it holds this many bytes...
    pub flush_bytes: usize,
    /// ...or once its oldest row has waited this long.
    pub flush_age: Duration,
    /// Above this many buffered bytes in all, writes wait for persists to catch up...
    pub max_buffer_bytes: usize,
    /// ...at most this long, then are refused (503). Zero refuses at once.
    pub buffer_wait: Duration,
    /// Start of every retry back-off after a failed persist.
    pub retry_base: Duration,
    pub skip_wal_corruption: bool,
    pub compaction: CompactionConfig,
}

impl StorageConfig {
    pub fn new(wal_dir: impl Into<PathBuf>) -> StorageConfig {
        StorageConfig {
            wal: WalConfig::new(wal_dir),
            flush_bytes: DEFAULT_FLUSH_BYTES,
            flush_age: Duration::from_secs(10),
            max_buffer_bytes: DEFAULT_MAX_BUFFER_BYTES,
            buffer_wait: DEFAULT_BUFFER_WAIT,
            retry_base: Duration::from_millis(200),
            skip_wal_corruption: false,
            compaction: CompactionConfig::default(),
        }
    }
}

/// Rows per compacted file: a merge holds its group in memory two or three times over
/// (read, sorted copy, encoded), so this bounds compaction's memory at a few hundred MiB.
pub const DEFAULT_COMPACTION_MAX_ROWS: usize = 1_000_000;

/// Key rows of older files a persist may always read: about 100 ms of decoding, so a
/// correction batch into a table of up to this many rows is compared as it is persisted.
pub const DEFAULT_PERSIST_COMPARE_ROWS: u64 = 1_000_000;

#[derive(Debug, Clone)]
pub struct CompactionConfig {
    /// How often the background pass runs; zero turns it off (`POST /admin/compact` still works).
    pub interval: Duration,
    /// A pass also runs this long after a persist leaves files queries must deduplicate
    /// (corrections of older days), and five times this long after the previous pass at the
    /// soonest (`Store::run_compactor`).
    pub resolve_delay: Duration,
    /// Older rows a persist reads, at least, to compare keys with its own (it always may
    /// read twice its own rows); past that its files are flagged by time overlap and the
    /// pass `resolve_delay` later compares them.
    pub persist_compare_rows: u64,
    /// Most rows merged into one output file.
    pub max_rows: usize,
    /// How long a replaced file stays after no snapshot needs it (readers outside the server).
    pub grace: Duration,
    /// Versions replaced or deleted longer ago than this are dropped for good.
    pub history_retention: Duration,
    /// Readers of an outside log of our files (the open tables' Delta log) may still read a
    /// replaced file this long after that log stopped listing it: garbage collection asks
    /// them (`gc::OutsideReaders`) before deleting. `None`: there is no such log.
    pub outside_retention: Option<Duration>,
}

impl CompactionConfig {
    /// How long a manifest remembers a replaced file: past any wait for readers, so a
    /// restart can still tell a replaced file from the leftover of an interrupted write.
    pub fn retired_memory(&self) -> Duration {
        Duration::from_micros(crate::format::manifest::RETIRED_MEMORY_MICROS as u64)
            + self.outside_retention.unwrap_or_default()
            + self.grace
    }
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            interval: Duration::from_secs(60),
            resolve_delay: Duration::from_secs(2),
            persist_compare_rows: DEFAULT_PERSIST_COMPARE_ROWS,
            max_rows: DEFAULT_COMPACTION_MAX_ROWS,
            grace: Duration::from_secs(300),
            history_retention: Duration::from_secs(400 * 86_400),
            outside_retention: None,
        }
    }
}

/// How much of a day one pass rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompactionMode {
    /// The background pass. A day that received files since the last pass merges them with
    /// compacted files at most twice their size: a row is then rewritten about
    /// log2(day rows / flush rows) times while the day keeps receiving events, not once per
    /// pass. A day that received nothing since (it has settled) is merged whole, as `Full`:
    /// files of one day overlap in time, so until then queries deduplicate across them.
    Tiered,
    /// Every file of a day into as few files as `max_rows` allows (`POST /admin/compact`).
    Full,
}
