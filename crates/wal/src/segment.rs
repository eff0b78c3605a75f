//! Segment files and record framing, plus replay.

use std::path::{Path, PathBuf};

use meterbase_fs::Fs;

use tracing::{error, warn};

use crate::error::{Seq, WalError};

pub(crate) const MAGIC: &[u8; 8] = b"MBWAL01\n";
/// len (4) + crc32c (4) + seq (8) + ingested_at (8).
pub(crate) const FRAME_HEADER: usize = 24;
pub(crate) const MAX_RECORD: usize = 1 << 30;

pub(crate) fn segment_name(first_seq: Seq) -> String {
    format!("{first_seq:020}.wal")
}

/// Segments in the directory, ordered by their first sequence number.
pub(crate) fn list_segments(fs: &dyn Fs, dir: &Path) -> Result<Vec<(Seq, PathBuf)>, WalError> {
    let mut out = Vec::new();
    for entry in fs.read_dir(dir).map_err(|e| WalError::io(dir, e))? {
        if let Some(stem) = entry.name.strip_suffix(".wal")
            && let Ok(seq) = stem.parse::<Seq>()
        {
            out.push((seq, dir.join(&entry.name)));
        }
    }
    out.sort();
    Ok(out)
}

pub(crate) fn encode_frame(out: &mut Vec<u8>, seq: Seq, ingested_at: i64, payload: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&ingested_at.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32c::crc32c(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

enum Frame<'a> {
    Ok {
        seq: Seq,
        ingested_at: i64,
        payload: &'a [u8],
        len: usize,
    },
    Bad(String),
}

fn decode_frame(buf: &[u8]) -> Frame<'_> {
    if buf.len() < FRAME_HEADER {
        return Frame::Bad(format!(
            "{} bytes left, a record header needs {FRAME_HEADER}",
            buf.len()
        ));
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if len > MAX_RECORD || FRAME_HEADER + len > buf.len() {
        return Frame::Bad(format!(
            "record length {len} runs past the end of the segment"
        ));
    }
    let body = &buf[8..FRAME_HEADER + len];
    if crc32c::crc32c(body) != crc {
        return Frame::Bad("checksum mismatch".into());
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&buf[8..16]);
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&buf[16..24]);
    Frame::Ok {
        seq: u64::from_le_bytes(seq),
        ingested_at: i64::from_le_bytes(ts),
        payload: &buf[FRAME_HEADER..FRAME_HEADER + len],
        len: FRAME_HEADER + len,
    }
}

/// Is there a well-formed record with a later sequence number anywhere in `buf`?
fn valid_record_after(buf: &[u8], after_seq: Seq) -> bool {
    // No record starts in the zero-filled rest of a preallocated segment (a header of zeros
    // fails its checksum), so only starts before the last non-zero byte are tried.
    let end = buf.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1);
    let starts = end.min(buf.len().saturating_sub(FRAME_HEADER));
    (0..starts).any(|i| match decode_frame(&buf[i..]) {
        Frame::Ok { seq, .. } => seq > after_seq,
        Frame::Bad(_) => false,
    })
}

#[derive(Debug, Default, Clone)]
pub struct ReplayStats {
    pub segments: usize,
    pub records: u64,
    pub bytes: u64,
    /// Last sequence number found (0 for an empty log).
    pub last_seq: Seq,
    pub last_ingested_at: i64,
    /// A torn tail that was dropped: segment and the byte offset it was cut at.
    pub torn_tail: Option<(PathBuf, u64)>,
    /// Damaged ranges skipped because the caller allowed it.
    pub skipped_corruption: Vec<(PathBuf, u64)>,
}

/// Reads every segment in order and hands each record to `f`. A damaged record at the very
/// end of the log is a torn write: it is dropped, the segment is truncated to its last good
/// record, and replay succeeds. A damaged record followed by any valid one is corruption:
/// an error naming the place, unless `skip_corruption` is set.
pub fn replay(
    fs: &dyn Fs,
    dir: &Path,
    skip_corruption: bool,
    mut f: impl FnMut(Seq, i64, &[u8]) -> Result<(), WalError>,
) -> Result<ReplayStats, WalError> {
    fs.create_dir_all_synced(dir)
        .map_err(|e| WalError::io(dir, e))?;
    let segments = list_segments(fs, dir)?;
    let mut stats = ReplayStats::default();
    for (idx, (first_seq, path)) in segments.iter().enumerate() {
        let is_last = idx + 1 == segments.len();
        let buf = fs.read(path).map_err(|e| WalError::io(path, e))?;
        stats.segments += 1;
        if buf.len() < MAGIC.len() || &buf[..MAGIC.len()] != MAGIC {
            if is_last && MAGIC.starts_with(&buf) {
                warn!(segment = %path.display(), "dropping a segment torn while it was created");
                fs.remove_file(path).map_err(|e| WalError::io(path, e))?;
                stats.torn_tail = Some((path.clone(), 0));
                continue;
            }
            let err = WalError::Corrupt {
                segment: path.clone(),
                offset: 0,
                reason: "bad segment header".into(),
            };
            if skip_corruption {
                error!("{err}; skipping the segment as asked");
                stats.skipped_corruption.push((path.clone(), 0));
                continue;
            }
            return Err(err);
        }
        let mut off = MAGIC.len();
        let mut expected = if stats.last_seq == 0 {
            *first_seq
        } else {
            stats.last_seq + 1
        };
        while off < buf.len() {
            let bad = match decode_frame(&buf[off..]) {
                Frame::Ok { seq, .. } if seq != expected => {
                    Some(format!("sequence {seq} where {expected} was expected"))
                }
                Frame::Ok {
                    seq,
                    ingested_at,
                    payload,
                    len,
                } => {
                    f(seq, ingested_at, payload)?;
                    stats.records += 1;
                    stats.bytes += len as u64;
                    stats.last_seq = seq;
                    stats.last_ingested_at = ingested_at;
                    expected = seq + 1;
                    off += len;
                    None
                }
                Frame::Bad(reason) => Some(reason),
            };
            let Some(reason) = bad else { continue };
            // Only the last segment may end early: a write torn by a crash, or the unused
            // zero-filled rest of a preallocated segment. Earlier ones were cut to their
            // records before the log moved on.
            let torn = is_last
                && (buf[off..].iter().all(|b| *b == 0)
                    || !valid_record_after(&buf[off + 1..], stats.last_seq));
            if torn {
                warn!(
                    segment = %path.display(),
                    offset = off,
                    %reason,
                    "dropping a torn record at the end of the write-ahead log"
                );
                let file = fs.open_write(path).map_err(|e| WalError::io(path, e))?;
                file.set_len(off as u64)
                    .and_then(|()| file.sync_all())
                    .map_err(|e| WalError::io(path, e))?;
                stats.torn_tail = Some((path.clone(), off as u64));
                break;
            }
            let err = WalError::Corrupt {
                segment: path.clone(),
                offset: off as u64,
                reason,
            };
            if !skip_corruption {
                return Err(err);
            }
            error!("{err}; discarding the damaged bytes as asked");
            stats.skipped_corruption.push((path.clone(), off as u64));
            // Resume at the next well-formed record of this segment, or give up on it. A valid
            // record right here (one after a gap the damage left) is kept, not skipped.
            match (off..buf.len()).find(|&i| matches!(decode_frame(&buf[i..]), Frame::Ok { seq, .. } if seq > stats.last_seq)) {
                Some(next) => {
                    off = next;
                    if let Frame::Ok { seq, .. } = decode_frame(&buf[next..]) {
                        expected = seq;
                    }
                }
                None => break,
            }
        }
        // A segment is named by the first sequence it was opened for: every earlier one was
        // handed out before, also when this segment holds no record yet and the earlier
        // segments are retired. Sequences must never be handed out twice: a record numbered
        // at or below a table's persisted sequence is skipped by the next replay.
        stats.last_seq = stats.last_seq.max(first_seq.saturating_sub(1));
    }
    Ok(stats)
}
