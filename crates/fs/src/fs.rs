//! What meterbase asks of a file system: open files with explicit offsets, and the
//! directory calls, each saying when what it does becomes durable.

use std::fmt::Debug;
use std::io;
use std::path::Path;
use std::time::SystemTime;

/// An open file. Offsets are explicit: writers keep their own position.
pub trait File: Send + Sync + Debug {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes all of `data` at `offset` (visible at once, durable only after a sync).
    fn write_all_at(&self, data: &[u8], offset: u64) -> io::Result<()>;
    fn set_len(&self, len: u64) -> io::Result<()>;
    fn size(&self) -> io::Result<u64>;
    /// Makes the file's data (and size) durable; not its name in a directory.
    fn sync_data(&self) -> io::Result<()>;
    /// `sync_data` and the file's metadata.
    fn sync_all(&self) -> io::Result<()>;
}

/// How `create` treats an existing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    /// Fail with `AlreadyExists`.
    New,
    /// Empty it.
    Truncate,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub is_dir: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metadata {
    pub len: u64,
    pub is_dir: bool,
    pub modified: SystemTime,
}

/// The file system calls meterbase makes. Names become durable only once their directory
/// is synced (`sync_dir`), as POSIX says; data only once the file is synced.
pub trait Fs: Send + Sync + Debug + 'static {
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn File>>;
    /// An existing file, for reading and writing, as it is.
    fn open_write(&self, path: &Path) -> io::Result<Box<dyn File>>;
    fn create(&self, path: &Path, mode: Create) -> io::Result<Box<dyn File>>;
    /// Replaces `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Fails with `AlreadyExists` if `to` exists (atomically).
    fn rename_noreplace(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes an empty directory.
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
    fn read_dir(&self, path: &Path) -> io::Result<Vec<Entry>>;
    fn metadata(&self, path: &Path) -> io::Result<Metadata>;
    /// Makes the directory's entries (files created, renamed, removed in it) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Free bytes of the file system holding `path`, when known.
    fn free_bytes(&self, path: &Path) -> Option<u64>;

    /// The whole file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let f = self.open_read(path)?;
        let len = f.size()? as usize;
        let mut out = vec![0; len];
        let mut at = 0;
        while at < len {
            let n = f.read_at(&mut out[at..], at as u64)?;
            if n == 0 {
                out.truncate(at);
                break;
            }
            at += n;
        }
        Ok(out)
    }

    fn exists(&self, path: &Path) -> bool {
        self.metadata(path).is_ok()
    }

    /// Creates `path` and its missing ancestors, and syncs each directory that gained one:
    /// a directory nobody synced the parent of can vanish with everything in it.
    fn create_dir_all_synced(&self, path: &Path) -> io::Result<()> {
        let mut missing = Vec::new();
        let mut at = Some(path);
        while let Some(dir) = at.filter(|d| !d.as_os_str().is_empty()) {
            if self.exists(dir) {
                break;
            }
            missing.push(dir);
            at = dir.parent();
        }
        for dir in missing.into_iter().rev() {
            self.create_dir_all(dir)?;
            let parent = dir
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            self.sync_dir(parent)?;
        }
        Ok(())
    }
}
