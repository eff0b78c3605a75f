//! Torn tails recover every earlier record; corruption followed by valid records is refused.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use meterbase_wal::{Ack, Apply, Wal, WalConfig, WalError, replay};

struct Collect(Mutex<Vec<u64>>);

impl Apply<u64> for Collect {
    fn apply(&self, ack: Ack, item: u64) {
        assert_eq!(ack.seq, item);
        self.0.lock().unwrap().push(item);
    }
}

/// `preallocate` as in `WalConfig`: with it the log may move into a zero-filled segment at
/// any group, so where the records fall among segments depends on timing.
fn write_log(dir: &Path, records: u64, segment_bytes: u64, preallocate: bool) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let sink = Arc::new(Collect(Mutex::new(Vec::new())));
    let mut config = WalConfig::new(dir);
    config.segment_bytes = segment_bytes;
    config.preallocate = preallocate;
    let mut wal = Wal::start(config, 0, 0, sink.clone()).unwrap();
    rt.block_on(async {
        for i in 1..=records {
            let payload = format!("record {i} ")
                .repeat((i % 7 + 1) as usize)
                .into_bytes();
            let ack = wal.append(payload, i).await.unwrap();
            assert_eq!(ack.seq, i);
        }
    });
    wal.shutdown();
    assert_eq!(sink.0.lock().unwrap().len() as u64, records);
}

/// The log's segment files (not the one being zero-filled ahead of use).
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for p in segments(from) {
        fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}

fn replay_payloads(dir: &Path, skip: bool) -> Result<Vec<(u64, Vec<u8>)>, WalError> {
    let mut out = Vec::new();
    replay(&meterbase_fs::RealFs, dir, skip, |seq, _, payload| {
        out.push((seq, payload.to_vec()));
        Ok(())
    })?;
    Ok(out)
}

#[test]
fn truncation_at_every_offset_of_the_last_record_keeps_all_earlier_ones() {
    let base = tempfile::tempdir().unwrap();
    let log = base.path().join("log");
    write_log(&log, 20, 64 << 20, true);
    let all = replay_payloads(&log, false).unwrap();
    assert_eq!(all.len(), 20);
    // The last record is at the end of the last segment (a clean stop cut its zeros off).
    let seg = segments(&log).pop().unwrap();
    let full = fs::read(&seg).unwrap();
    let last_len = 24 + all[19].1.len();
    let start = full.len() - last_len;
    for cut in start..full.len() {
        let dir = base.path().join(format!("cut{cut}"));
        copy_dir(&log, &dir);
        let target = dir.join(seg.file_name().unwrap());
        fs::write(&target, &full[..cut]).unwrap();
        let got = replay_payloads(&dir, false).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        assert_eq!(got.len(), 19, "cut at {cut}");
        assert_eq!(got, all[..19].to_vec());
        // The torn tail was cut off, so a second replay is clean and identical.
        assert_eq!(fs::metadata(&target).unwrap().len() as usize, start);
        assert_eq!(replay_payloads(&dir, false).unwrap(), all[..19].to_vec());
        fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn a_flipped_byte_in_a_middle_record_is_reported_with_its_place() {
    let base = tempfile::tempdir().unwrap();
    let log = base.path().join("log");
    // One segment, so the damaged record has records after it in its own segment.
    write_log(&log, 30, 64 << 20, false);
    let seg = segments(&log)
        .into_iter()
        .find(|p| fs::metadata(p).unwrap().len() > 8)
        .unwrap();
    let mut bytes = fs::read(&seg).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    fs::write(&seg, &bytes).unwrap();
    match replay_payloads(&log, false) {
        Err(WalError::Corrupt {
            segment, offset, ..
        }) => {
            assert_eq!(segment, seg);
            assert!(offset as usize <= middle && offset > 8, "offset {offset}");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    // With the explicit override, the damaged record is skipped and the rest replays.
    let got = replay_payloads(&log, true).unwrap();
    assert_eq!(got.len(), 29);
}

#[test]
fn corruption_in_an_earlier_segment_is_refused() {
    let base = tempfile::tempdir().unwrap();
    let log = base.path().join("log");
    write_log(&log, 40, 300, true);
    let segs: Vec<_> = segments(&log)
        .into_iter()
        .filter(|p| fs::metadata(p).unwrap().len() > 8)
        .collect();
    assert!(segs.len() > 3, "{segs:?}");
    let victim = &segs[1];
    let mut bytes = fs::read(victim).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0xff;
    fs::write(victim, &bytes).unwrap();
    assert!(matches!(
        replay_payloads(&log, false),
        Err(WalError::Corrupt { .. })
    ));
    // Discarding it as asked loses that record alone: the next segment's first record,
    // whose sequence number now jumps, is kept.
    let got = replay_payloads(&log, true).unwrap();
    assert_eq!(got.len(), 39);
    assert_eq!(got.last().unwrap().0, 40);
}

#[test]
fn retired_segments_are_gone_and_the_rest_replays() {
    let base = tempfile::tempdir().unwrap();
    let log = base.path().join("log");
    write_log(&log, 40, 300, true);
    let before = segments(&log).len();
    let sink = Arc::new(Collect(Mutex::new(Vec::new())));
    let stats = replay(&meterbase_fs::RealFs, &log, false, |_, _, _| Ok(())).unwrap();
    let mut wal = Wal::start(
        WalConfig::new(&log),
        stats.last_seq,
        stats.last_ingested_at,
        sink,
    )
    .unwrap();
    wal.retire_through(20).unwrap();
    wal.shutdown();
    assert!(segments(&log).len() < before);
    let got = replay_payloads(&log, false).unwrap();
    assert!(got.first().unwrap().0 <= 21);
    assert_eq!(got.last().unwrap().0, 40);
}

#[test]
fn a_failed_sync_poisons_the_log() {
    let base = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let sink = Arc::new(Collect(Mutex::new(Vec::new())));
    let wal = Wal::start(WalConfig::new(base.path()), 0, 0, sink.clone()).unwrap();
    rt.block_on(async {
        wal.append(b"ok".to_vec(), 1).await.unwrap();
        wal.failpoint.fail_next(1);
        assert!(matches!(
            wal.append(b"lost".to_vec(), 2).await,
            Err(WalError::Poisoned(_))
        ));
        assert!(matches!(
            wal.append(b"after".to_vec(), 2).await,
            Err(WalError::Poisoned(_))
        ));
    });
    assert_eq!(*sink.0.lock().unwrap(), vec![1]);
}

/// Appends until the log has just moved into its `want`th zero-filled segment (so that one
/// holds a single record and zeros); returns the payloads acknowledged, in sequence order,
/// and the still-running log.
fn write_until_preallocated(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    want: u64,
) -> (Vec<Vec<u8>>, Wal<u64>) {
    let sink = Arc::new(Collect(Mutex::new(Vec::new())));
    let mut config = WalConfig::new(dir);
    config.segment_bytes = 2048;
    let wal = Wal::start(config, 0, 0, sink).unwrap();
    let mut acked = Vec::new();
    rt.block_on(async {
        for i in 1..=20_000u64 {
            let payload = format!("record {i} ")
                .repeat((i % 5 + 1) as usize)
                .into_bytes();
            let before = wal.preallocated_segments();
            wal.append(payload.clone(), i).await.unwrap();
            acked.push(payload);
            let now = wal.preallocated_segments();
            if now > before && now >= want {
                break;
            }
        }
    });
    assert!(
        wal.preallocated_segments() >= want,
        "no zero-filled segment was used"
    );
    (acked, wal)
}

#[test]
fn a_crash_inside_a_zero_filled_segment_loses_no_acknowledged_record() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let base = tempfile::tempdir().unwrap();
    let log = base.path().join("log");
    let (acked, mut wal) = write_until_preallocated(&rt, &log, 3);
    // What a crash now leaves: the current segment still ends in its zeros.
    let crashed = base.path().join("crashed");
    copy_dir(&log, &crashed);
    let segs = segments(&crashed);
    let last = fs::read(segs.last().unwrap()).unwrap();
    assert_eq!(
        last.len(),
        2048,
        "the current segment was zero-filled ahead"
    );
    assert!(last.ends_with(&[0; 1024]));
    for closed in &segs[..segs.len() - 1] {
        let bytes = fs::read(closed).unwrap();
        assert_ne!(bytes.last(), Some(&0), "{closed:?} was cut to its records");
    }
    let got = replay_payloads(&crashed, false).unwrap();
    let want: Vec<(u64, Vec<u8>)> = (1..).zip(acked.iter().cloned()).collect();
    assert_eq!(got, want);
    // Replay cut the zeros off: a second start reads the same and nothing more.
    assert_eq!(replay_payloads(&crashed, false).unwrap(), want);

    // A write torn just before the zeros is a torn tail too, not corruption.
    let torn = base.path().join("torn");
    copy_dir(&log, &torn);
    let seg = segments(&torn).pop().unwrap();
    let mut bytes = fs::read(&seg).unwrap();
    let end = bytes.iter().rposition(|b| *b != 0).unwrap() + 1;
    bytes[end..end + 30].copy_from_slice(&[0xab; 30]);
    fs::write(&seg, &bytes).unwrap();
    assert_eq!(replay_payloads(&torn, false).unwrap(), want);

    // A clean stop cuts the zeros itself.
    wal.shutdown();
    let seg = segments(&log).pop().unwrap();
    assert_ne!(fs::read(&seg).unwrap().last(), Some(&0));
    assert_eq!(replay_payloads(&log, false).unwrap(), want);
}

/// Found by the power-loss simulation: a restart opens an empty segment; once every record
/// is persisted the segments before it retire, and the next start found no record at all and
/// numbered the log from 1 again, below what the tables had persisted (the next replay then
/// skipped acknowledged records as persisted, and the reused names looked like corruption).
#[test]
fn sequences_continue_after_a_restart_that_left_only_an_empty_segment() {
    let base = tempfile::tempdir().unwrap();
    let log = base.path().join("log");
    write_log(&log, 3, 1 << 20, false);
    let start = |log: &Path| {
        let stats = replay(&meterbase_fs::RealFs, log, false, |_, _, _| Ok(())).unwrap();
        let mut config = WalConfig::new(log);
        config.preallocate = false;
        let sink = Arc::new(Collect(Mutex::new(Vec::new())));
        (
            Wal::start(config, stats.last_seq, stats.last_ingested_at, sink).unwrap(),
            stats,
        )
    };
    // Restarted idle: a fresh empty segment; everything up to 3 persisted, so retired.
    let (mut wal, stats) = start(&log);
    assert_eq!(stats.last_seq, 3);
    assert_eq!(wal.retire_through(3).unwrap(), 1);
    wal.shutdown();
    assert_eq!(segments(&log).len(), 1, "only the empty segment is left");
    let (mut wal, stats) = start(&log);
    assert_eq!(
        stats.last_seq, 3,
        "the empty segment's name says what was handed out"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let ack = rt.block_on(wal.append(b"four".to_vec(), 4)).unwrap();
    assert_eq!(ack.seq, 4);
    wal.shutdown();
}
