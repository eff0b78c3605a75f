//! The object store on a local directory, through `meterbase_fs` so crash tests can run it on
//! a disk that loses power. A put is durable when it returns: the bytes go to a hidden
//! staging file that is synced, renamed into place (refusing an existing object for
//! `PutMode::Create`, atomically) and its directory synced, with every directory the put
//! created synced into its parent. (`object_store`'s own `LocalFileSystem` syncs nothing.)

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;
use meterbase_fs::{Create, Fs};
use object_store::path::Path;
use object_store::{
    CopyMode, CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult,
    Result,
};

const STORE: &str = "LocalStore";

/// Staging files start with this: listings never show them, nor do outside readers that skip
/// hidden files (Delta's vacuum leaves `.`-files alone).
const STAGING_PREFIX: &str = ".staging-";

#[derive(Debug, Clone)]
pub struct LocalStore {
    fs: Arc<dyn Fs>,
    root: PathBuf,
}

impl fmt::Display for LocalStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LocalStore({})", self.root.display())
    }
}

fn io_error(path: &Path, e: io::Error) -> object_store::Error {
    match e.kind() {
        io::ErrorKind::NotFound => object_store::Error::NotFound {
            path: path.to_string(),
            source: Box::new(e),
        },
        io::ErrorKind::AlreadyExists => object_store::Error::AlreadyExists {
            path: path.to_string(),
            source: Box::new(e),
        },
        _ => object_store::Error::Generic {
            store: STORE,
            source: Box::new(e),
        },
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|source| object_store::Error::JoinError { source })?
}

impl LocalStore {
    pub fn new(fs: Arc<dyn Fs>, root: impl Into<PathBuf>) -> LocalStore {
        LocalStore {
            fs,
            root: root.into(),
        }
    }

    fn file(&self, location: &Path) -> PathBuf {
        let mut p = self.root.clone();
        for part in location.parts() {
            p.push(part.as_ref());
        }
        p
    }

    fn meta(&self, location: &Path) -> Result<ObjectMeta> {
        let m = self
            .fs
            .metadata(&self.file(location))
            .map_err(|e| io_error(location, e))?;
        if m.is_dir {
            return Err(io_error(
                location,
                io::Error::new(io::ErrorKind::NotFound, "a directory, not an object"),
            ));
        }
        Ok(ObjectMeta {
            location: location.clone(),
            last_modified: DateTime::<Utc>::from(m.modified),
            size: m.len,
            e_tag: None,
            version: None,
        })
    }

    /// Writes `bytes` as `location`, durably (see the module comment).
    fn put_durably(&self, location: &Path, bytes: &[u8], mode: &PutMode) -> Result<()> {
        let target = self.file(location);
        let dir = target
            .parent()
            .map(PathBuf::from)
            .unwrap_or_else(|| self.root.clone());
        let err = |e| io_error(location, e);
        self.fs.create_dir_all_synced(&dir).map_err(err)?;
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let staging = dir.join(format!(
            "{STAGING_PREFIX}{name}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let written = (|| {
            let f = self.fs.create(&staging, Create::New)?;
            f.write_all_at(bytes, 0)?;
            f.sync_data()?;
            match mode {
                PutMode::Create => self.fs.rename_noreplace(&staging, &target),
                _ => self.fs.rename(&staging, &target),
            }
        })();
        if let Err(e) = written {
            let _ = self.fs.remove_file(&staging);
            if e.kind() == io::ErrorKind::AlreadyExists {
                // Whoever put it made its data durable before naming it; its name may not be
                // yet (a crash between the rename and the directory sync, then a retry).
                self.fs.sync_dir(&dir).map_err(err)?;
            }
            return Err(err(e));
        }
        self.fs.sync_dir(&dir).map_err(err)
    }

    /// Every object under `dir` (recursively), skipping staging files.
    fn walk(&self, dir: &Path, out: &mut Vec<ObjectMeta>) -> Result<()> {
        let entries = match self.fs.read_dir(&self.file(dir)) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_error(dir, e)),
        };
        for e in entries {
            if e.name.starts_with(STAGING_PREFIX) {
                continue;
            }
            let child = dir.clone().join(e.name.as_str());
            if e.is_dir {
                self.walk(&child, out)?;
            } else {
                match self.meta(&child) {
                    Ok(m) => out.push(m),
                    // Deleted since the directory was read.
                    Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        if let PutMode::Update(_) = opts.mode {
            return Err(object_store::Error::NotImplemented {
                operation: "put with PutMode::Update".into(),
                implementer: STORE.into(),
            });
        }
        let (store, location) = (self.clone(), location.clone());
        blocking(move || {
            let bytes: Bytes = payload.into();
            store.put_durably(&location, &bytes, &opts.mode)?;
            Ok(PutResult {
                e_tag: None,
                version: None,
            })
        })
        .await
    }

    async fn put_multipart_opts(
        &self,
        _location: &Path,
        _opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        Err(object_store::Error::NotImplemented {
            operation: "multipart put".into(),
            implementer: STORE.into(),
        })
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let (store, location) = (self.clone(), location.clone());
        blocking(move || {
            let meta = store.meta(&location)?;
            let range = match &options.range {
                Some(r) => r
                    .as_range(meta.size)
                    .map_err(|e| object_store::Error::Generic {
                        store: STORE,
                        source: Box::new(e),
                    })?,
                None => 0..meta.size,
            };
            let bytes = if options.head {
                Bytes::new()
            } else {
                let file = store
                    .fs
                    .open_read(&store.file(&location))
                    .map_err(|e| io_error(&location, e))?;
                let mut buf = vec![0; (range.end - range.start) as usize];
                let mut at = 0;
                while at < buf.len() {
                    let n = file
                        .read_at(&mut buf[at..], range.start + at as u64)
                        .map_err(|e| io_error(&location, e))?;
                    if n == 0 {
                        break;
                    }
                    at += n;
                }
                buf.truncate(at);
                Bytes::from(buf)
            };
            Ok(GetResult {
                payload: GetResultPayload::Stream(
                    futures::stream::once(async { Ok(bytes) }).boxed(),
                ),
                meta,
                range,
                attributes: Default::default(),
            })
        })
        .await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let store = self.clone();
        locations
            .then(move |location| {
                let store = store.clone();
                async move {
                    let location = location?;
                    blocking(move || {
                        store
                            .fs
                            .remove_file(&store.file(&location))
                            .map_err(|e| io_error(&location, e))?;
                        Ok(location)
                    })
                    .await
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let store = self.clone();
        let prefix = prefix.cloned().unwrap_or_default();
        futures::stream::once(async move {
            blocking(move || {
                let mut out = Vec::new();
                store.walk(&prefix, &mut out)?;
                Ok(out)
            })
            .await
        })
        .map(|listed| match listed {
            Ok(objects) => futures::stream::iter(objects.into_iter().map(Ok)).boxed(),
            Err(e) => futures::stream::once(async { Err(e) }).boxed(),
        })
        .flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let store = self.clone();
        let prefix = prefix.cloned().unwrap_or_default();
        blocking(move || {
            let mut result = ListResult {
                common_prefixes: Vec::new(),
                objects: Vec::new(),
            };
            let entries = match store.fs.read_dir(&store.file(&prefix)) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(result),
                Err(e) => return Err(io_error(&prefix, e)),
            };
            for e in entries {
                if e.name.starts_with(STAGING_PREFIX) {
                    continue;
                }
                let child = prefix.clone().join(e.name.as_str());
                if e.is_dir {
                    result.common_prefixes.push(child);
                } else {
                    result.objects.push(store.meta(&child)?);
                }
            }
            Ok(result)
        })
        .await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        let (store, from, to) = (self.clone(), from.clone(), to.clone());
        blocking(move || {
            let bytes = store
                .fs
                .read(&store.file(&from))
                .map_err(|e| io_error(&from, e))?;
            let mode = match options.mode {
                CopyMode::Create => PutMode::Create,
                CopyMode::Overwrite => PutMode::Overwrite,
            };
            store.put_durably(&to, &bytes, &mode)
        })
        .await
    }
}
