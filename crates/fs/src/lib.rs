//! meterbase-fs owns the file system as the durable parts of meterbase see it: the write-ahead
//! log, the catalog and the local object store all reach files through the `Fs` trait, and
//! nothing else. `RealFs` is the operating system's; `SimFs` is a disk that can lose power:
//! it keeps written-but-unsynced bytes and unsynced directory changes apart, and after a
//! simulated crash keeps only what an `fsync` made durable (plus, chosen by a seed, some of
//! the rest, or a torn prefix of it). Tests run the write path over it through thousands of
//! crash points to find every missing file or directory sync.
//!
//! It must not know anything of meterbase's formats: it moves bytes and names.
//!
//! Module map: `fs` (the `Fs` and `File` traits), `real` (the OS), `sim` (the power-losing
//! disk).

mod fs;
mod real;
mod sim;

use std::sync::Arc;

pub use fs::{Create, Entry, File, Fs, Metadata};
pub use real::RealFs;
pub use sim::{SimFs, SimStats};

/// The operating system's file system, shared.
pub fn real() -> Arc<dyn Fs> {
    Arc::new(RealFs)
}
