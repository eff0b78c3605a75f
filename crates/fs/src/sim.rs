//! A disk that can lose power. Reads see every write at once, as with a page cache; what
//! survives a crash is only what was synced: a file's data up to its last `sync_data`, and a
//! directory's entries (creations, renames, removals) up to the last `sync_dir` of every
//! directory they touch. Of the rest, a seed picks what happened to reach the platter anyway:
//! a prefix of each file's unsynced writes (the last one possibly torn), and a prefix, in
//! order, of the unsynced directory changes, as a journaling file system would replay.
//!
//! A crash is set to happen at the n-th mutating call (`crash_at`): that call and every
//! later one fail with an I/O error, as if the process lost its disk. `power_cycle` then
//! gives the disk as a restarted machine would find it.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Component, Path};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::fs::{Create, Entry, File, Fs, Metadata};

type Id = u64;

#[derive(Debug, Clone)]
enum DataOp {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Clone, Default)]
struct FileNode {
    /// What reads see.
    data: Vec<u8>,
    /// What survives a crash for sure.
    durable: Vec<u8>,
    /// Changes since the last sync, in order.
    pending: Vec<DataOp>,
    modified: Option<SystemTime>,
}

#[derive(Debug, Clone)]
enum Node {
    File(FileNode),
    Dir(BTreeMap<String, Id>),
}

#[derive(Debug, Clone)]
enum MetaOp {
    Link {
        dir: Id,
        name: String,
        id: Id,
    },
    Unlink {
        dir: Id,
        name: String,
        id: Id,
    },
    Rename {
        from: (Id, String),
        to: (Id, String),
        id: Id,
    },
}

#[derive(Debug, Clone)]
struct Logged {
    op: MetaOp,
    /// Directories still to be synced before this change is durable.
    unsynced: Vec<Id>,
}

/// What the disk went through: for tests to report, and to tell a crash point was reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    pub mutations: u64,
    pub file_syncs: u64,
    pub dir_syncs: u64,
    pub crashed: bool,
}

#[derive(Debug)]
struct State {
    nodes: HashMap<Id, Node>,
    root: Id,
    next_id: Id,
    /// Directory entries as durable when the log began.
    base_dirs: HashMap<Id, BTreeMap<String, Id>>,
    log: Vec<Logged>,
    stats: SimStats,
    crash_at: Option<u64>,
}

/// The simulated disk; clones share it.
#[derive(Debug, Clone)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

fn lost() -> io::Error {
    io::Error::other("simulated power loss: the disk is gone")
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

fn names(path: &Path) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n.to_string_lossy().into_owned()),
            Component::ParentDir => {
                out.pop();
            }
            Component::Prefix(_) => return Err(io::Error::other("no prefixes here")),
        }
    }
    Ok(out)
}

impl Default for SimFs {
    fn default() -> SimFs {
        SimFs::new()
    }
}

impl SimFs {
    /// An empty disk.
    pub fn new() -> SimFs {
        let mut nodes = HashMap::new();
        nodes.insert(0, Node::Dir(BTreeMap::new()));
        let mut base_dirs = HashMap::new();
        base_dirs.insert(0, BTreeMap::new());
        SimFs {
            state: Arc::new(Mutex::new(State {
                nodes,
                root: 0,
                next_id: 1,
                base_dirs,
                log: Vec::new(),
                stats: SimStats::default(),
                crash_at: None,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The power fails at the `n`-th mutating call from now (1 = the next one).
    pub fn crash_at(&self, n: u64) {
        let mut st = self.lock();
        st.crash_at = Some(st.stats.mutations + n.max(1));
    }

    /// The power fails now.
    pub fn crash_now(&self) {
        let mut st = self.lock();
        st.stats.crashed = true;
    }

    pub fn stats(&self) -> SimStats {
        self.lock().stats
    }

    /// The disk as a restarted machine finds it: what was synced, and of the rest what the
    /// seed lets through.
    pub fn power_cycle(&self, seed: u64) -> SimFs {
        let st = self.lock();
        let mut rng = StdRng::seed_from_u64(seed);
        // Directory changes: every durable one, and a prefix (in order) of the others.
        let volatile = st.log.iter().filter(|l| !l.unsynced.is_empty()).count();
        let keep_volatile = rng.random_range(0..=volatile);
        let mut dirs = st.base_dirs.clone();
        let mut seen_volatile = 0;
        for l in &st.log {
            if !l.unsynced.is_empty() {
                seen_volatile += 1;
                if seen_volatile > keep_volatile {
                    continue;
                }
            }
            replay(&st, &mut dirs, &l.op);
        }
        // Files: durable data, then a prefix of the unsynced changes, the next write torn.
        let mut nodes = HashMap::new();
        let mut stack = vec![st.root];
        while let Some(id) = stack.pop() {
            if nodes.contains_key(&id) {
                continue;
            }
            match st.nodes.get(&id) {
                Some(Node::Dir(_)) => {
                    let entries = dirs.get(&id).cloned().unwrap_or_default();
                    stack.extend(entries.values().copied());
                    nodes.insert(id, Node::Dir(entries));
                }
                Some(Node::File(f)) => {
                    let data = recover(f, &mut rng);
                    nodes.insert(
                        id,
                        Node::File(FileNode {
                            durable: data.clone(),
                            data,
                            pending: Vec::new(),
                            modified: f.modified,
                        }),
                    );
                }
                None => {}
            }
        }
        let base_dirs = nodes
            .iter()
            .filter_map(|(id, n)| match n {
                Node::Dir(e) => Some((*id, e.clone())),
                Node::File(_) => None,
            })
            .collect();
        SimFs {
            state: Arc::new(Mutex::new(State {
                nodes,
                root: st.root,
                next_id: st.next_id,
                base_dirs,
                log: Vec::new(),
                stats: SimStats::default(),
                crash_at: None,
            })),
        }
    }
}

/// One logged directory change applied to recovered entries; a change whose source is gone
/// (an earlier change it needed was lost) does nothing.
fn replay(st: &State, dirs: &mut HashMap<Id, BTreeMap<String, Id>>, op: &MetaOp) {
    match op {
        MetaOp::Link { dir, name, id } => {
            if let Some(entries) = dirs.get_mut(dir) {
                entries.insert(name.clone(), *id);
            }
            if matches!(st.nodes.get(id), Some(Node::Dir(_))) {
                dirs.entry(*id).or_default();
            }
        }
        MetaOp::Unlink { dir, name, id } => {
            if let Some(entries) = dirs.get_mut(dir)
                && entries.get(name) == Some(id)
            {
                entries.remove(name);
            }
        }
        MetaOp::Rename { from, to, id } => {
            let present = dirs.get(&from.0).and_then(|e| e.get(&from.1)) == Some(id);
            if present && dirs.contains_key(&to.0) {
                if let Some(e) = dirs.get_mut(&from.0) {
                    e.remove(&from.1);
                }
                if let Some(e) = dirs.get_mut(&to.0) {
                    e.insert(to.1.clone(), *id);
                }
            }
        }
    }
}

fn apply(data: &mut Vec<u8>, op: &DataOp) {
    match op {
        DataOp::Write {
            offset,
            data: bytes,
        } => {
            let end = *offset as usize + bytes.len();
            if data.len() < end {
                data.resize(end, 0);
            }
            data[*offset as usize..end].copy_from_slice(bytes);
        }
        DataOp::SetLen(n) => data.resize(*n as usize, 0),
    }
}

fn recover(f: &FileNode, rng: &mut StdRng) -> Vec<u8> {
    let mut data = f.durable.clone();
    let keep = rng.random_range(0..=f.pending.len());
    for op in &f.pending[..keep] {
        apply(&mut data, op);
    }
    // The first lost write may have reached the disk in part.
    if let Some(DataOp::Write {
        offset,
        data: bytes,
    }) = f.pending.get(keep)
        && !bytes.is_empty()
        && rng.random_bool(0.5)
    {
        let torn = rng.random_range(0..bytes.len());
        apply(
            &mut data,
            &DataOp::Write {
                offset: *offset,
                data: bytes[..torn].to_vec(),
            },
        );
    }
    data
}

impl State {
    /// Counts a mutating call; fails it (and all after) once the crash point is reached.
    fn mutate(&mut self) -> io::Result<()> {
        if self.stats.crashed {
            return Err(lost());
        }
        self.stats.mutations += 1;
        if self.crash_at.is_some_and(|n| self.stats.mutations >= n) {
            self.stats.crashed = true;
            return Err(lost());
        }
        Ok(())
    }

    fn check(&self) -> io::Result<()> {
        if self.stats.crashed {
            Err(lost())
        } else {
            Ok(())
        }
    }

    fn dir(&self, id: Id) -> Option<&BTreeMap<String, Id>> {
        match self.nodes.get(&id) {
            Some(Node::Dir(e)) => Some(e),
            _ => None,
        }
    }

    fn dir_mut(&mut self, id: Id) -> Option<&mut BTreeMap<String, Id>> {
        match self.nodes.get_mut(&id) {
            Some(Node::Dir(e)) => Some(e),
            _ => None,
        }
    }

    fn file_mut(&mut self, id: Id) -> io::Result<&mut FileNode> {
        match self.nodes.get_mut(&id) {
            Some(Node::File(f)) => Ok(f),
            _ => Err(io::Error::other("not a file")),
        }
    }

    fn lookup(&self, path: &Path) -> io::Result<Id> {
        let mut at = self.root;
        for n in names(path)? {
            at = *self
                .dir(at)
                .and_then(|e| e.get(&n))
                .ok_or_else(|| not_found(path))?;
        }
        Ok(at)
    }

    /// The directory holding `path` and the last name.
    fn parent(&self, path: &Path) -> io::Result<(Id, String)> {
        let mut n = names(path)?;
        let last = n.pop().ok_or_else(|| io::Error::other("no file name"))?;
        let mut at = self.root;
        for name in n {
            at = *self
                .dir(at)
                .and_then(|e| e.get(&name))
                .ok_or_else(|| not_found(path))?;
        }
        if self.dir(at).is_none() {
            return Err(io::Error::other(format!(
                "{} is not in a directory",
                path.display()
            )));
        }
        Ok((at, last))
    }

    fn log(&mut self, op: MetaOp) {
        let mut unsynced = match &op {
            MetaOp::Link { dir, .. } | MetaOp::Unlink { dir, .. } => vec![*dir],
            MetaOp::Rename { from, to, .. } => vec![from.0, to.0],
        };
        unsynced.dedup();
        self.log.push(Logged { op, unsynced });
    }

    fn link(&mut self, dir: Id, name: String, node: Node) -> Id {
        let id = self.next_id;
        self.next_id += 1;
        self.nodes.insert(id, node);
        if let Some(e) = self.dir_mut(dir) {
            e.insert(name.clone(), id);
        }
        self.log(MetaOp::Link { dir, name, id });
        id
    }
}

#[derive(Debug)]
struct SimFile {
    fs: SimFs,
    id: Id,
}

impl File for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut st = self.fs.lock();
        st.check()?;
        let f = st.file_mut(self.id)?;
        let start = (offset as usize).min(f.data.len());
        let n = buf.len().min(f.data.len() - start);
        buf[..n].copy_from_slice(&f.data[start..start + n]);
        Ok(n)
    }

    fn write_all_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        let mut st = self.fs.lock();
        st.mutate()?;
        let f = st.file_mut(self.id)?;
        let op = DataOp::Write {
            offset,
            data: data.to_vec(),
        };
        apply(&mut f.data, &op);
        f.pending.push(op);
        f.modified = Some(SystemTime::now());
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut st = self.fs.lock();
        st.mutate()?;
        let f = st.file_mut(self.id)?;
        let op = DataOp::SetLen(len);
        apply(&mut f.data, &op);
        f.pending.push(op);
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        let mut st = self.fs.lock();
        st.check()?;
        Ok(st.file_mut(self.id)?.data.len() as u64)
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut st = self.fs.lock();
        st.mutate()?;
        st.stats.file_syncs += 1;
        let f = st.file_mut(self.id)?;
        f.durable = f.data.clone();
        f.pending.clear();
        Ok(())
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync_data()
    }
}

impl SimFs {
    fn file(&self, id: Id) -> Box<dyn File> {
        Box::new(SimFile {
            fs: self.clone(),
            id,
        })
    }
}

impl Fs for SimFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.check()?;
        let mut at = st.root;
        for name in names(path)? {
            let next = st
                .dir(at)
                .ok_or_else(|| not_found(path))?
                .get(&name)
                .copied();
            at = match next {
                Some(id) => id,
                None => {
                    st.mutate()?;
                    st.link(at, name, Node::Dir(BTreeMap::new()))
                }
            };
        }
        Ok(())
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn File>> {
        let st = self.lock();
        st.check()?;
        let id = st.lookup(path)?;
        drop(st);
        Ok(self.file(id))
    }

    fn open_write(&self, path: &Path) -> io::Result<Box<dyn File>> {
        self.open_read(path)
    }

    fn create(&self, path: &Path, mode: Create) -> io::Result<Box<dyn File>> {
        let mut st = self.lock();
        st.mutate()?;
        let (dir, name) = st.parent(path)?;
        let existing = st.dir(dir).and_then(|e| e.get(&name)).copied();
        let id = match (existing, mode) {
            (Some(_), Create::New) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists", path.display()),
                ));
            }
            (Some(id), Create::Truncate) => {
                let f = st.file_mut(id)?;
                f.data.clear();
                f.pending.push(DataOp::SetLen(0));
                id
            }
            (None, _) => st.link(
                dir,
                name,
                Node::File(FileNode {
                    modified: Some(SystemTime::now()),
                    ..FileNode::default()
                }),
            ),
        };
        drop(st);
        Ok(self.file(id))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.rename_with(from, to, true)
    }

    fn rename_noreplace(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.rename_with(from, to, false)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.mutate()?;
        let (dir, name) = st.parent(path)?;
        let id = st
            .dir(dir)
            .and_then(|e| e.get(&name))
            .copied()
            .ok_or_else(|| not_found(path))?;
        if let Some(e) = st.dir_mut(dir) {
            e.remove(&name);
        }
        st.log(MetaOp::Unlink { dir, name, id });
        Ok(())
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.mutate()?;
        let id = st.lookup(path)?;
        if st.dir(id).is_some_and(|e| !e.is_empty()) {
            return Err(io::Error::other(format!("{} is not empty", path.display())));
        }
        let (dir, name) = st.parent(path)?;
        if let Some(e) = st.dir_mut(dir) {
            e.remove(&name);
        }
        st.log(MetaOp::Unlink { dir, name, id });
        Ok(())
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<Entry>> {
        let st = self.lock();
        st.check()?;
        let id = st.lookup(path)?;
        let entries = st
            .dir(id)
            .ok_or_else(|| io::Error::other(format!("{} is not a directory", path.display())))?;
        Ok(entries
            .iter()
            .map(|(name, id)| Entry {
                name: name.clone(),
                is_dir: matches!(st.nodes.get(id), Some(Node::Dir(_))),
            })
            .collect())
    }

    fn metadata(&self, path: &Path) -> io::Result<Metadata> {
        let st = self.lock();
        st.check()?;
        let id = st.lookup(path)?;
        Ok(match st.nodes.get(&id) {
            Some(Node::File(f)) => Metadata {
                len: f.data.len() as u64,
                is_dir: false,
                modified: f.modified.unwrap_or(SystemTime::UNIX_EPOCH),
            },
            _ => Metadata {
                len: 0,
                is_dir: true,
                modified: SystemTime::UNIX_EPOCH,
            },
        })
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.mutate()?;
        st.stats.dir_syncs += 1;
        let id = st.lookup(path)?;
        if st.dir(id).is_none() {
            return Err(io::Error::other(format!(
                "{} is not a directory",
                path.display()
            )));
        }
        for l in &mut st.log {
            l.unsynced.retain(|d| *d != id);
        }
        Ok(())
    }

    fn free_bytes(&self, _path: &Path) -> Option<u64> {
        Some(u64::MAX / 4)
    }
}

impl SimFs {
    fn rename_with(&self, from: &Path, to: &Path, replace: bool) -> io::Result<()> {
        let mut st = self.lock();
        st.mutate()?;
        let (fdir, fname) = st.parent(from)?;
        let (tdir, tname) = st.parent(to)?;
        let id = st
            .dir(fdir)
            .and_then(|e| e.get(&fname))
            .copied()
            .ok_or_else(|| not_found(from))?;
        if !replace && st.dir(tdir).is_some_and(|e| e.contains_key(&tname)) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists", to.display()),
            ));
        }
        if let Some(e) = st.dir_mut(fdir) {
            e.remove(&fname);
        }
        if let Some(e) = st.dir_mut(tdir) {
            e.insert(tname.clone(), id);
        }
        st.log(MetaOp::Rename {
            from: (fdir, fname),
            to: (tdir, tname),
            id,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(fs: &SimFs, path: &str, data: &[u8], sync: bool) {
        let f = fs.create(Path::new(path), Create::Truncate).unwrap();
        f.write_all_at(data, 0).unwrap();
        if sync {
            f.sync_data().unwrap();
        }
    }

    #[test]
    fn synced_data_under_a_synced_name_survives_every_seed() {
        let fs = SimFs::new();
        fs.create_dir_all(Path::new("/d")).unwrap();
        fs.sync_dir(Path::new("/")).unwrap();
        write(&fs, "/d/a", b"hello", true);
        fs.sync_dir(Path::new("/d")).unwrap();
        write(&fs, "/d/a2", b"maybe", false);
        for seed in 0..50 {
            let after = fs.power_cycle(seed);
            assert_eq!(after.read(Path::new("/d/a")).unwrap(), b"hello");
        }
    }

    #[test]
    fn without_a_directory_sync_a_synced_file_can_vanish() {
        let fs = SimFs::new();
        write(&fs, "/a", b"hello", true);
        let vanished = (0..50).any(|seed| !fs.power_cycle(seed).exists(Path::new("/a")));
        assert!(vanished, "a name never made durable must sometimes be lost");
    }

    #[test]
    fn unsynced_writes_are_lost_kept_or_torn() {
        let fs = SimFs::new();
        write(&fs, "/a", b"old", true);
        fs.sync_dir(Path::new("/")).unwrap();
        let f = fs.open_write(Path::new("/a")).unwrap();
        f.write_all_at(b"new-and-longer", 0).unwrap();
        let outcomes: std::collections::BTreeSet<Vec<u8>> = (0..200)
            .map(|seed| fs.power_cycle(seed).read(Path::new("/a")).unwrap())
            .collect();
        assert!(outcomes.contains(b"old".as_slice()));
        assert!(outcomes.contains(b"new-and-longer".as_slice()));
        assert!(outcomes.len() > 2, "torn writes too: {outcomes:?}");
    }

    #[test]
    fn a_rename_over_a_file_is_all_or_nothing() {
        let fs = SimFs::new();
        write(&fs, "/cat", b"v1", true);
        fs.sync_dir(Path::new("/")).unwrap();
        write(&fs, "/cat.tmp", b"v2", true);
        fs.rename(Path::new("/cat.tmp"), Path::new("/cat")).unwrap();
        for seed in 0..50 {
            let got = fs.power_cycle(seed).read(Path::new("/cat")).unwrap();
            assert!(got == b"v1" || got == b"v2", "{got:?}");
        }
    }

    #[test]
    fn the_crash_point_fails_that_call_and_every_later_one() {
        let fs = SimFs::new();
        fs.crash_at(2);
        let f = fs.create(Path::new("/a"), Create::New).unwrap();
        assert!(f.write_all_at(b"x", 0).is_err());
        assert!(f.sync_data().is_err());
        assert!(fs.read_dir(Path::new("/")).is_err());
        assert!(fs.stats().crashed);
        assert!(fs.power_cycle(1).read_dir(Path::new("/")).is_ok());
        assert!(
            fs.rename_noreplace(Path::new("/a"), Path::new("/b"))
                .is_err()
        );
    }
}
