//! `WalError`, and `Seq`: a record's place in the log.

use std::path::PathBuf;

use thiserror::Error;

/// Position of a record in the log; strictly increasing from 1, never reused.
pub type Seq = u64;

#[derive(Debug, Error)]
pub enum WalError {
    #[error("write-ahead log queue is full")]
    QueueFull,
    #[error(
        "write-ahead log is unusable after a failed write or sync ({0}); restart the server to replay"
    )]
    Poisoned(String),
    #[error("write-ahead log I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "write-ahead log corrupted in {segment} at byte {offset}: {reason}; valid records follow, so this is not a torn write. Refusing to start (use --wal-skip-corruption to discard the damaged records)"
    )]
    Corrupt {
        segment: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("record of {0} bytes exceeds the maximum record size")]
    TooLarge(usize),
    #[error("write-ahead log is shut down")]
    Closed,
}

impl WalError {
    /// The same error for another waiting writer (I/O errors keep their OS error code, so a
    /// full disk stays recognisable).
    pub(crate) fn duplicate(&self) -> WalError {
        match self {
            WalError::Io { path, source } => WalError::Io {
                path: path.clone(),
                source: match source.raw_os_error() {
                    Some(code) => std::io::Error::from_raw_os_error(code),
                    None => std::io::Error::new(source.kind(), source.to_string()),
                },
            },
            other => WalError::Poisoned(other.to_string()),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> WalError {
        WalError::Io {
            path: path.into(),
            source,
        }
    }
}
