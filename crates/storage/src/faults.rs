//! An object store that fails on purpose, for the fault suite: outages (every request a
//! 500), a number of failing puts, puts that time out part-way through their body, puts whose
//! response is lost after the object was written (an ambiguous commit), and added latency. Off unless the server is started with
//! `--fault-injection`; then `POST /admin/faults` sets it.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

#[derive(Debug, Default)]
pub struct Faults {
    /// While set, every request fails like an HTTP 500.
    pub outage: AtomicBool,
    /// The next this-many puts fail without writing anything.
    pub fail_puts: AtomicUsize,
    /// The next this-many puts write the object, then report a failure.
    pub lose_put_responses: AtomicUsize,
    /// The next this-many puts hang for `timeout_ms`, then fail as timed out, having sent
    /// only part of the body (like S3 or the local store, nothing is left at the path).
    pub timeout_puts: AtomicUsize,
    pub timeout_ms: AtomicU64,
    /// Added to every request.
    pub latency_ms: AtomicU64,
}

fn take_one(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

fn injected(what: &str) -> object_store::Error {
    object_store::Error::Generic {
        store: "fault-injection",
        source: format!("injected failure: {what}").into(),
    }
}

#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    pub faults: Arc<Faults>,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn ObjectStore>, faults: Arc<Faults>) -> FaultyStore {
        FaultyStore { inner, faults }
    }

    async fn enter(&self, what: &str) -> Result<()> {
        let ms = self.faults.latency_ms.load(Ordering::Relaxed);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if self.faults.outage.load(Ordering::SeqCst) {
            return Err(injected(&format!("store unavailable ({what})")));
        }
        Ok(())
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.enter("put").await?;
        if take_one(&self.faults.fail_puts) {
            return Err(injected("put failed before anything was written"));
        }
        if take_one(&self.faults.timeout_puts) {
            let ms = self.faults.timeout_ms.load(Ordering::Relaxed).max(1);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            return Err(injected(&format!(
                "put timed out after {ms} ms with {} of {} bytes sent",
                payload.content_length() / 2,
                payload.content_length()
            )));
        }
        let result = self.inner.put_opts(location, payload, opts).await?;
        if take_one(&self.faults.lose_put_responses) {
            return Err(injected("put written, response lost"));
        }
        Ok(result)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.enter("multipart put").await?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.enter("get").await?;
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.enter("get ranges").await?;
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        if self.faults.outage.load(Ordering::SeqCst) {
            return futures::stream::once(async { Err(injected("store unavailable (delete)")) })
                .boxed();
        }
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        if self.faults.outage.load(Ordering::SeqCst) {
            return futures::stream::once(async { Err(injected("store unavailable (list)")) })
                .boxed();
        }
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.enter("list").await?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.enter("copy").await?;
        self.inner.copy_opts(from, to, options).await
    }
}
