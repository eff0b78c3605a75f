//! The group-commit writer thread.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use meterbase_fs::{Create, File, Fs};
use tokio::sync::oneshot;
use tracing::{error, info, warn};

use crate::error::{Seq, WalError};
use crate::segment::{MAGIC, MAX_RECORD, encode_frame, list_segments, segment_name};

#[derive(Debug, Clone)]
pub struct WalConfig {
    /// The file system the log is on (the OS's, or a simulated one in crash tests).
    pub fs: Arc<dyn Fs>,
    pub dir: PathBuf,
    /// A segment is closed and a new one started past this size.
    pub segment_bytes: u64,
    /// Records waiting for the writer; beyond this `append` fails with `QueueFull`.
    pub queue_records: usize,
    /// Payload bytes waiting for the writer; beyond this `append` fails with `QueueFull`.
    pub queue_bytes: usize,
    /// `false` skips `fdatasync` (only for throwaway benchmarks; acknowledged data may be lost).
    pub sync: bool,
    /// Zero-fill the next segment on a helper thread before it is needed. Writes into it then
    /// change no file size, so `fdatasync` writes the data alone instead of the data and then
    /// the inode: about half the latency and a third less CPU per sync on ext4.
    pub preallocate: bool,
}

impl WalConfig {
    pub fn new(dir: impl Into<PathBuf>) -> WalConfig {
        WalConfig {
            fs: meterbase_fs::real(),
            dir: dir.into(),
            segment_bytes: 64 << 20,
            queue_records: 16_384,
            queue_bytes: 256 << 20,
            sync: true,
            preallocate: true,
        }
    }
}

/// What a writer learns once its record is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub seq: Seq,
    /// Microseconds since the epoch; never decreases along the log.
    pub ingested_at: i64,
}

/// Called on the writer thread for every durable record, in sequence order, before the
/// record's writer is answered: whatever it makes visible is visible by the time of the ack.
pub trait Apply<T>: Send + Sync + 'static {
    fn apply(&self, ack: Ack, item: T);
}

/// Lets tests make the next syncs fail, the way a dying disk would.
#[derive(Debug, Default)]
pub struct SyncFailpoint {
    fail_next: AtomicUsize,
}

impl SyncFailpoint {
    pub fn fail_next(&self, n: usize) {
        self.fail_next.store(n, Ordering::SeqCst);
    }
    fn should_fail(&self) -> bool {
        self.fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

struct Request<T> {
    payload: Vec<u8>,
    item: T,
    reply: oneshot::Sender<Result<Ack, WalError>>,
}

/// Upper bounds (µs) of the sync-latency histogram's buckets; a last bucket takes the rest.
pub const SYNC_BUCKETS_MICROS: [u64; 11] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 1_000_000,
];

/// What the log's syncs have cost so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncStats {
    pub syncs: u64,
    pub sync_micros: u64,
    pub bytes_written: u64,
    /// Syncs per bucket of `SYNC_BUCKETS_MICROS`, then those slower than the last bound.
    pub buckets: Vec<u64>,
}

struct Shared {
    queued_bytes: AtomicUsize,
    poisoned: AtomicBool,
    synced_seq: AtomicU64,
    syncs: AtomicU64,
    sync_micros: AtomicU64,
    sync_buckets: [AtomicU64; SYNC_BUCKETS_MICROS.len() + 1],
    bytes_written: AtomicU64,
    preallocated_segments: AtomicU64,
}

pub struct Wal<T: Send + 'static> {
    tx: Option<SyncSender<Request<T>>>,
    shared: Arc<Shared>,
    config: WalConfig,
    thread: Option<JoinHandle<()>>,
    pub failpoint: Arc<SyncFailpoint>,
}

impl<T: Send + 'static> Wal<T> {
    /// Starts the writer after replay. `last_seq`/`last_ingested_at` come from `replay`; the
    /// writer always begins a fresh segment so a torn tail is never appended to.
    pub fn start(
        config: WalConfig,
        last_seq: Seq,
        last_ingested_at: i64,
        sink: Arc<dyn Apply<T>>,
    ) -> Result<Wal<T>, WalError> {
        let fs = config.fs.clone();
        fs.create_dir_all_synced(&config.dir)
            .map_err(|e| WalError::io(&config.dir, e))?;
        let shared = Arc::new(Shared {
            queued_bytes: AtomicUsize::new(0),
            poisoned: AtomicBool::new(false),
            synced_seq: AtomicU64::new(last_seq),
            syncs: AtomicU64::new(0),
            sync_micros: AtomicU64::new(0),
            sync_buckets: Default::default(),
            bytes_written: AtomicU64::new(0),
            preallocated_segments: AtomicU64::new(0),
        });
        // Left by a run that stopped while preparing; never a segment, so never needed.
        remove_prepared_segments(fs.as_ref(), &config.dir);
        let failpoint = Arc::new(SyncFailpoint::default());
        let mut writer = Writer {
            fs,
            dir: config.dir.clone(),
            segment_bytes: config.segment_bytes,
            sync: config.sync,
            preallocate: config.preallocate,
            file: None,
            file_len: 0,
            file_preallocated: false,
            prepared_path: config.dir.join(prepared_segment_name()),
            preparing: None,
            next_seq: last_seq + 1,
            last_ts: last_ingested_at,
            shared: shared.clone(),
            failpoint: failpoint.clone(),
            buf: Vec::with_capacity(1 << 20),
        };
        writer.open_segment()?;
        writer.prepare_next_segment();
        let (tx, rx) = sync_channel(config.queue_records);
        let thread = std::thread::Builder::new()
            .name("wal-writer".into())
            .spawn(move || writer.run(rx, sink))
            .map_err(|e| WalError::io(&config.dir, e))?;
        Ok(Wal {
            tx: Some(tx),
            shared,
            config,
            thread: Some(thread),
            failpoint,
        })
    }

    /// Queues a record; resolves once it is synced and applied.
    pub async fn append(&self, payload: Vec<u8>, item: T) -> Result<Ack, WalError> {
        let rx = self.submit(payload, item)?;
        rx.await.map_err(|_| WalError::Closed)?
    }

    fn submit(
        &self,
        payload: Vec<u8>,
        item: T,
    ) -> Result<oneshot::Receiver<Result<Ack, WalError>>, WalError> {
        if self.shared.poisoned.load(Ordering::SeqCst) {
            return Err(WalError::Poisoned("an earlier write or sync failed".into()));
        }
        if payload.len() > MAX_RECORD {
            return Err(WalError::TooLarge(payload.len()));
        }
        let len = payload.len();
        let queued = self.shared.queued_bytes.fetch_add(len, Ordering::SeqCst);
        if queued > 0 && queued + len > self.config.queue_bytes {
            self.shared.queued_bytes.fetch_sub(len, Ordering::SeqCst);
            return Err(WalError::QueueFull);
        }
        let (reply, rx) = oneshot::channel();
        let tx = self.tx.as_ref().ok_or(WalError::Closed)?;
        match tx.try_send(Request {
            payload,
            item,
            reply,
        }) {
            Ok(()) => Ok(rx),
            Err(e) => {
                self.shared.queued_bytes.fetch_sub(len, Ordering::SeqCst);
                Err(match e {
                    TrySendError::Full(_) => WalError::QueueFull,
                    TrySendError::Disconnected(_) => WalError::Closed,
                })
            }
        }
    }

    pub fn is_poisoned(&self) -> bool {
        self.shared.poisoned.load(Ordering::SeqCst)
    }

    pub fn synced_seq(&self) -> Seq {
        self.shared.synced_seq.load(Ordering::SeqCst)
    }

    pub fn sync_stats(&self) -> SyncStats {
        SyncStats {
            syncs: self.shared.syncs.load(Ordering::Relaxed),
            sync_micros: self.shared.sync_micros.load(Ordering::Relaxed),
            bytes_written: self.shared.bytes_written.load(Ordering::Relaxed),
            buckets: self
                .shared
                .sync_buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
        }
    }

    /// Segments the log has moved into after they were zero-filled ahead of use.
    pub fn preallocated_segments(&self) -> u64 {
        self.shared.preallocated_segments.load(Ordering::Relaxed)
    }

    /// Deletes every closed segment whose records all have `seq <= persisted`.
    pub fn retire_through(&self, persisted: Seq) -> Result<usize, WalError> {
        retire_through(self.config.fs.as_ref(), &self.config.dir, persisted)
    }

    /// Stops the writer after everything queued so far is written.
    pub fn shutdown(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl<T: Send + 'static> Drop for Wal<T> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

pub(crate) fn retire_through(fs: &dyn Fs, dir: &Path, persisted: Seq) -> Result<usize, WalError> {
    let segments = list_segments(fs, dir)?;
    let mut removed = 0;
    for pair in segments.windows(2) {
        let (_, path) = &pair[0];
        let (next_first, _) = pair[1];
        if next_first <= persisted + 1 {
            fs.remove_file(path).map_err(|e| WalError::io(path, e))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// How the segment being zero-filled ahead of use ends. Not a `.wal` name: replay and
/// retirement never see it, and it only becomes a segment by a rename once it is complete
/// and synced.
const PREPARED_SUFFIX: &str = ".prep";

/// A name no other log writer uses, so a zero-filling thread still running for a log
/// closed in this process (tests, benches) can never write into the file a reopened log
/// renamed into a live segment.
fn prepared_segment_name() -> String {
    static WRITERS: AtomicU64 = AtomicU64::new(0);
    let n = WRITERS.fetch_add(1, Ordering::Relaxed);
    format!("next-segment-{}-{n}{PREPARED_SUFFIX}", std::process::id())
}

fn remove_prepared_segments(fs: &dyn Fs, dir: &Path) {
    let Ok(entries) = fs.read_dir(dir) else {
        return;
    };
    for entry in entries {
        if entry.name.ends_with(PREPARED_SUFFIX) {
            let _ = fs.remove_file(&dir.join(&entry.name));
        }
    }
}

struct Writer {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    segment_bytes: u64,
    sync: bool,
    preallocate: bool,
    file: Option<Box<dyn File>>,
    /// Bytes of valid log in `file`; past them a preallocated segment holds zeros.
    file_len: u64,
    file_preallocated: bool,
    /// Where the next segment is zero-filled (`prepared_segment_name`).
    prepared_path: PathBuf,
    /// The helper thread zero-filling the next segment answers here.
    preparing: Option<Receiver<std::io::Result<Box<dyn File>>>>,
    next_seq: Seq,
    last_ts: i64,
    shared: Arc<Shared>,
    failpoint: Arc<SyncFailpoint>,
    buf: Vec<u8>,
}

/// Why a group could not be made durable: a failed write can be undone, a failed sync not.
enum Failure {
    Write(WalError),
    Sync(WalError),
}

/// The clock acknowledgements are stamped with (`Ack::ingested_at`, µs since the epoch):
/// everything that compares an instant with `_ingested_at` (`as_of`, retention) reads it.
pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Writes a segment header and zeros up to `bytes` at `path`, durably. Refused while the
/// file system has less than twice that free: zeros written ahead must never be what fills
/// the disk under the log's own records or the catalog.
fn zero_filled_segment(fs: &dyn Fs, path: &Path, bytes: u64) -> std::io::Result<Box<dyn File>> {
    if let Some(free) = path.parent().and_then(|dir| fs.free_bytes(dir))
        && free < bytes.saturating_mul(2)
    {
        return Err(std::io::Error::other(format!(
            "{free} bytes free, zero-filling wants {bytes} and as much to spare"
        )));
    }
    let file = fs.create(path, Create::Truncate)?;
    file.write_all_at(MAGIC, 0)?;
    let zeros = vec![0u8; 1 << 20];
    let mut at = MAGIC.len() as u64;
    while at < bytes {
        let n = (bytes - at).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    file.sync_all()?;
    Ok(file)
}

impl Writer {
    fn open_segment(&mut self) -> Result<(), WalError> {
        let path = self.dir.join(segment_name(self.next_seq));
        // A segment with this name can only exist if it holds no valid record (replay would
        // have advanced past it otherwise): start it over.
        let file = self
            .fs
            .create(&path, Create::Truncate)
            .map_err(|e| WalError::io(&path, e))?;
        file.write_all_at(MAGIC, 0)
            .and_then(|()| file.sync_all())
            .and_then(|()| self.fs.sync_dir(&self.dir))
            .map_err(|e| WalError::io(&path, e))?;
        self.file = Some(file);
        self.file_len = MAGIC.len() as u64;
        self.file_preallocated = false;
        Ok(())
    }

    /// Starts zero-filling the next segment, unless that is off or already under way.
    fn prepare_next_segment(&mut self) {
        if !self.preallocate || self.preparing.is_some() {
            return;
        }
        let (tx, rx) = sync_channel(1);
        let path = self.prepared_path.clone();
        let bytes = self.segment_bytes;
        let fs = self.fs.clone();
        let spawned = std::thread::Builder::new()
            .name("wal-prepare".into())
            .spawn(move || {
                let prepared = zero_filled_segment(fs.as_ref(), &path, bytes);
                if prepared.is_err() {
                    let _ = fs.remove_file(&path);
                }
                let _ = tx.send(prepared);
            });
        match spawned {
            Ok(_) => self.preparing = Some(rx),
            Err(e) => warn!("cannot start zero-filling the next log segment: {e}"),
        }
    }

    /// The zero-filled segment, if it is ready.
    fn take_prepared(&mut self) -> Option<Box<dyn File>> {
        let outcome = match self.preparing.as_ref()?.try_recv() {
            Err(TryRecvError::Empty) => return None,
            Ok(outcome) => outcome,
            Err(TryRecvError::Disconnected) => {
                Err(std::io::Error::other("the preparing thread stopped"))
            }
        };
        self.preparing = None;
        match outcome {
            Ok(file) => Some(file),
            Err(e) => {
                // Plain segments still work; the next roll-over tries again.
                warn!("could not zero-fill the next log segment: {e}");
                None
            }
        }
    }

    /// Closes the current segment and continues in a new one: the zero-filled one if it is
    /// ready, a plain one otherwise. `full` says the current one has no room left; a plain
    /// segment is also left early, as soon as a zero-filled one is ready.
    ///
    /// A failed sync of the cut or of the directory counts as a failed sync (the log stops
    /// acknowledging): after it, the directory may show a zero-filled segment after records
    /// still going into the old one, or the old one's name on the new file.
    fn roll_over(&mut self, full: bool) -> Result<(), Failure> {
        let prepared = self.take_prepared();
        if prepared.is_none() && !full {
            return Ok(());
        }
        self.cut_zero_tail().map_err(Failure::Sync)?;
        match prepared {
            Some(file) => {
                let path = self.dir.join(segment_name(self.next_seq));
                // The old segment is cut to its records first (durably), so only the last
                // segment can ever end in zeros. An empty current segment of the same name
                // is simply replaced.
                self.fs
                    .rename(&self.prepared_path, &path)
                    .map_err(|e| Failure::Write(WalError::io(&path, e)))?;
                self.fs
                    .sync_dir(&self.dir)
                    .map_err(|e| Failure::Sync(WalError::io(&self.dir, e)))?;
                self.file = Some(file);
                self.file_len = MAGIC.len() as u64;
                self.file_preallocated = true;
                self.shared
                    .preallocated_segments
                    .fetch_add(1, Ordering::Relaxed);
            }
            None => self.open_segment().map_err(Failure::Write)?,
        }
        self.prepare_next_segment();
        Ok(())
    }

    /// Cuts a zero-filled segment back to its records and makes that durable.
    fn cut_zero_tail(&mut self) -> Result<(), WalError> {
        if !self.file_preallocated {
            return Ok(());
        }
        let path = self.dir.join("current segment");
        let file = self.file.as_ref().ok_or(WalError::Closed)?;
        file.set_len(self.file_len)
            .and_then(|()| file.sync_all())
            .map_err(|e| WalError::io(&path, e))?;
        self.file_preallocated = false;
        Ok(())
    }

    fn run<T: Send + 'static>(mut self, rx: Receiver<Request<T>>, sink: Arc<dyn Apply<T>>) {
        let mut group: Vec<Request<T>> = Vec::with_capacity(1024);
        while let Ok(first) = rx.recv() {
            group.push(first);
            let mut bytes = group[0].payload.len();
            while bytes < (8 << 20) {
                match rx.try_recv() {
                    Ok(r) => {
                        bytes += r.payload.len();
                        group.push(r);
                    }
                    Err(_) => break,
                }
            }
            self.shared.queued_bytes.fetch_sub(bytes, Ordering::SeqCst);
            self.commit(&mut group, sink.as_ref());
        }
        // A clean stop leaves no zeros to read past on the next start.
        if let Err(e) = self.cut_zero_tail() {
            warn!("{e}; the next start reads past the zero-filled rest of the segment");
        }
        info!("write-ahead log writer stopped");
    }

    fn commit<T: Send + 'static>(&mut self, group: &mut Vec<Request<T>>, sink: &dyn Apply<T>) {
        if self.shared.poisoned.load(Ordering::SeqCst) {
            for r in group.drain(..) {
                let _ = r.reply.send(Err(WalError::Poisoned(
                    "an earlier write or sync failed".into(),
                )));
            }
            return;
        }
        let ts = now_micros().max(self.last_ts);
        self.buf.clear();
        let first_seq = self.next_seq;
        for (i, r) in group.iter().enumerate() {
            encode_frame(&mut self.buf, first_seq + i as u64, ts, &r.payload);
        }
        let outcome = match self.write_and_sync() {
            Err(Failure::Write(e)) => match self.rewind() {
                // A write that failed (a full disk) reached no disk that a sync vouched for:
                // cut the partial frame off and refuse only this group. Nothing was
                // acknowledged, and the next group can succeed once space returns.
                Ok(()) => {
                    warn!("{e}; the records were not written, the log stays usable");
                    for r in group.drain(..) {
                        let _ = r.reply.send(Err(e.duplicate()));
                    }
                    return;
                }
                Err(rewind) => Err(WalError::Poisoned(format!("{e}, then {rewind}"))),
            },
            Err(Failure::Sync(e)) => Err(e),
            Ok(()) => Ok(()),
        };
        if let Err(e) = outcome {
            // After a failed sync the page cache cannot be trusted (PostgreSQL's fsyncgate):
            // never acknowledge anything again in this process.
            error!("{e}; refusing all further writes until restart");
            self.shared.poisoned.store(true, Ordering::SeqCst);
            let msg = e.to_string();
            for r in group.drain(..) {
                let _ = r.reply.send(Err(WalError::Poisoned(msg.clone())));
            }
            return;
        }
        self.next_seq += group.len() as u64;
        self.last_ts = ts;
        self.shared
            .synced_seq
            .store(self.next_seq - 1, Ordering::SeqCst);
        for (i, r) in group.drain(..).enumerate() {
            let ack = Ack {
                seq: first_seq + i as u64,
                ingested_at: ts,
            };
            sink.apply(ack, r.item);
            let _ = r.reply.send(Ok(ack));
        }
    }

    /// Puts the end of the current segment back where the last good frame ended.
    fn rewind(&mut self) -> Result<(), WalError> {
        let path = self.dir.join("current segment");
        let file = self.file.as_ref().ok_or(WalError::Closed)?;
        file.set_len(self.file_len)
            .map_err(|e| WalError::io(&path, e))?;
        // The zeros went with the cut: this segment now grows like a plain one.
        self.file_preallocated = false;
        Ok(())
    }

    fn write_and_sync(&mut self) -> Result<(), Failure> {
        let full = self.file_len > MAGIC.len() as u64
            && self.file_len + self.buf.len() as u64 > self.segment_bytes;
        if full || (!self.file_preallocated && self.preparing.is_some()) {
            self.roll_over(full)?;
        }
        let path = self.dir.join("current segment");
        let file = self.file.as_ref().ok_or(Failure::Write(WalError::Closed))?;
        file.write_all_at(&self.buf, self.file_len)
            .map_err(|e| Failure::Write(WalError::io(&path, e)))?;
        self.file_len += self.buf.len() as u64;
        self.shared
            .bytes_written
            .fetch_add(self.buf.len() as u64, Ordering::Relaxed);
        if self.sync {
            let started = Instant::now();
            if self.failpoint.should_fail() {
                return Err(Failure::Sync(WalError::io(
                    &path,
                    std::io::Error::other("injected fdatasync failure"),
                )));
            }
            file.sync_data()
                .map_err(|e| Failure::Sync(WalError::io(&path, e)))?;
            let micros = started.elapsed().as_micros() as u64;
            self.shared.syncs.fetch_add(1, Ordering::Relaxed);
            self.shared.sync_micros.fetch_add(micros, Ordering::Relaxed);
            let bucket = SYNC_BUCKETS_MICROS.partition_point(|bound| *bound < micros);
            self.shared.sync_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_filling_is_refused_when_it_would_take_the_disk_s_last_space() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(prepared_segment_name());
        let fs = meterbase_fs::RealFs;
        let free = fs.free_bytes(dir.path()).expect("statvfs");
        let err = zero_filled_segment(&fs, &path, free / 2 + 1).expect_err("refused");
        assert!(err.to_string().contains("bytes free"), "{err}");
        assert!(!path.exists(), "nothing written before the refusal");
        let file = zero_filled_segment(&fs, &path, 4096).expect("room for a small one");
        assert_eq!(file.size().expect("size"), 4096);
    }
}
