//! A bounded memory cache of the Parquet bytes queries read, in front of the object store.
//!
//! On S3 every ranged read is a request (10–50 ms each on the real service), and DataFusion
//! caches only footers; page indexes and column chunks were fetched again by every query.
//! Data files are immutable (a published path names the same bytes until it is deleted, and
//! a deleted path is never reused: names carry sequence ranges and compaction versions), so
//! the cache needs no invalidation: files that leave the manifest are simply no longer read
//! and age out.
//!
//! Reads are cut into fixed blocks so that differently shaped reads of the same bytes (one
//! query's projection against another's, coalesced ranges) share entries. Missing blocks are
//! fetched as one ranged read per contiguous run, concurrently. A whole-object read (the
//! checksum check before a file's first scan) fills the blocks too. Only plain reads of
//! `.parquet` objects are cached; everything else goes straight through.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use moka::sync::Cache;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

/// Small enough that a footer or page index read does not pull in much else, large enough
/// that a column chunk is a handful of entries.
const BLOCK_BYTES: u64 = 256 << 10;

/// Missing runs fetched at once for one read.
const FETCH_CONCURRENCY: usize = 8;

/// What the cache has done since start, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Blocks served from memory.
    pub hits: u64,
    /// Blocks fetched from the store.
    pub misses: u64,
    /// Bytes fetched from the store for the cache.
    pub fetched_bytes: u64,
    /// Bytes held now (blocks not yet evicted).
    pub held_bytes: u64,
    /// The bound on `held_bytes`.
    pub capacity_bytes: u64,
}

pub struct ReadCache {
    inner: Arc<dyn ObjectStore>,
    blocks: Cache<(Path, u64), Bytes>,
    /// Each cached object's metadata (its size bounds the last block), taken from the first
    /// ranged read of it.
    metas: Cache<Path, ObjectMeta>,
    capacity: u64,
    hits: AtomicU64,
    misses: AtomicU64,
    fetched: AtomicU64,
}

impl fmt::Debug for ReadCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReadCache({}, {} bytes)", self.inner, self.capacity)
    }
}

impl fmt::Display for ReadCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

fn cacheable(location: &Path) -> bool {
    location.as_ref().ends_with(".parquet")
}

/// The blocks `range` touches (`range` is not empty).
fn blocks_of(range: &Range<u64>) -> Range<u64> {
    range.start / BLOCK_BYTES..range.end.div_ceil(BLOCK_BYTES)
}

/// Runs of consecutive block numbers, from sorted distinct numbers.
fn runs(blocks: &[u64]) -> Vec<Range<u64>> {
    let mut out: Vec<Range<u64>> = Vec::new();
    for &b in blocks {
        match out.last_mut() {
            Some(run) if run.end == b => run.end = b + 1,
            _ => out.push(b..b + 1),
        }
    }
    out
}

fn short_read(location: &Path, range: &Range<u64>) -> object_store::Error {
    object_store::Error::Generic {
        store: "ReadCache",
        source: format!("{location}: bytes {range:?} run past the end of the object").into(),
    }
}

impl ReadCache {
    /// A cache of at most `capacity_bytes` in front of `inner`.
    pub fn new(inner: Arc<dyn ObjectStore>, capacity_bytes: u64) -> ReadCache {
        ReadCache {
            inner,
            blocks: Cache::builder()
                .max_capacity(capacity_bytes)
                .weigher(|_, block: &Bytes| u32::try_from(block.len()).unwrap_or(u32::MAX))
                .build(),
            // An entry is a path and a few numbers; a thousand per megabyte of blocks is far
            // more files than the blocks could cover.
            metas: Cache::new(capacity_bytes / 1024 + 1024),
            capacity: capacity_bytes,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            fetched: AtomicU64::new(0),
        }
    }

    pub fn stats(&self) -> CacheStats {
        self.blocks.run_pending_tasks();
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            fetched_bytes: self.fetched.load(Ordering::Relaxed),
            held_bytes: self.blocks.weighted_size(),
            capacity_bytes: self.capacity,
        }
    }

    /// Every block the ranges touch, from memory or fetched (and then cached), with the
    /// object's metadata when a fetch or an earlier read told it. Fetched blocks are returned
    /// as well as cached, so a cache smaller than one read still serves it.
    async fn blocks_for(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> Result<(HashMap<u64, Bytes>, Option<ObjectMeta>)> {
        let mut wanted: Vec<u64> = ranges
            .iter()
            .filter(|r| r.start < r.end)
            .flat_map(blocks_of)
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut found = HashMap::with_capacity(wanted.len());
        let mut missing = Vec::new();
        for b in wanted {
            match self.blocks.get(&(location.clone(), b)) {
                Some(block) => {
                    found.insert(b, block);
                }
                None => missing.push(b),
            }
        }
        self.hits.fetch_add(found.len() as u64, Ordering::Relaxed);
        self.misses
            .fetch_add(missing.len() as u64, Ordering::Relaxed);
        let mut meta = self.metas.get(location);
        let fetched: Vec<(Range<u64>, ObjectMeta, Bytes)> =
            futures::stream::iter(runs(&missing).into_iter().map(|run| async move {
                let bytes = run.start * BLOCK_BYTES..run.end * BLOCK_BYTES;
                // The store clamps a range past the end to the object's end.
                let options = GetOptions::new().with_range(Some(GetRange::Bounded(bytes)));
                let result = self.inner.get_opts(location, options).await?;
                let got = result.range.clone();
                let meta = result.meta.clone();
                let data = result.bytes().await?;
                Ok::<_, object_store::Error>((got, meta, data))
            }))
            .buffer_unordered(FETCH_CONCURRENCY)
            .try_collect()
            .await?;
        for (got, fetched_meta, data) in fetched {
            found.extend(self.keep(location, got.start, &data));
            if meta.is_none() {
                self.metas.insert(location.clone(), fetched_meta.clone());
            }
            meta = Some(fetched_meta);
        }
        Ok((found, meta))
    }

    /// Caches bytes fetched from `start` (a block boundary) as blocks, and returns them.
    fn keep(&self, location: &Path, start: u64, data: &[u8]) -> Vec<(u64, Bytes)> {
        self.fetched.fetch_add(data.len() as u64, Ordering::Relaxed);
        let first = start / BLOCK_BYTES;
        data.chunks(BLOCK_BYTES as usize)
            .zip(first..)
            .map(|(chunk, number)| {
                // A copy, so an evicted block frees its bytes rather than pinning the run.
                let block = Bytes::copy_from_slice(chunk);
                self.blocks
                    .insert((location.clone(), number), block.clone());
                (number, block)
            })
            .collect()
    }

    /// A whole object read through (its size is not known yet), kept as blocks on the way.
    async fn whole(&self, location: &Path) -> Result<GetResult> {
        let result = self.inner.get_opts(location, GetOptions::new()).await?;
        let (meta, range, attributes) = (
            result.meta.clone(),
            result.range.clone(),
            result.attributes.clone(),
        );
        let bytes = result.bytes().await?;
        let kept = self.keep(location, 0, &bytes);
        self.misses.fetch_add(kept.len() as u64, Ordering::Relaxed);
        self.metas.insert(location.clone(), meta.clone());
        let payload = futures::stream::once(async move { Ok(bytes) }).boxed();
        Ok(GetResult {
            payload: GetResultPayload::Stream(payload),
            meta,
            range,
            attributes,
        })
    }

    /// `range`'s bytes out of its blocks; `None` if the object ends before the range does.
    fn assemble(blocks: &HashMap<u64, Bytes>, range: &Range<u64>) -> Option<Bytes> {
        if range.start >= range.end {
            return Some(Bytes::new());
        }
        let span = blocks_of(range);
        if span.end - span.start == 1 {
            let block = blocks.get(&span.start)?;
            let from = (range.start - span.start * BLOCK_BYTES) as usize;
            let to = (range.end - span.start * BLOCK_BYTES) as usize;
            return (to <= block.len()).then(|| block.slice(from..to));
        }
        let mut out = BytesMut::with_capacity((range.end - range.start) as usize);
        for b in span {
            let block = blocks.get(&b)?;
            let start = b * BLOCK_BYTES;
            let from = range.start.saturating_sub(start) as usize;
            let to = ((range.end - start) as usize).min(block.len());
            if from > to {
                return None;
            }
            out.extend_from_slice(&block[from..to]);
        }
        (out.len() as u64 == range.end - range.start).then(|| out.freeze())
    }

    /// A plain read of a data file (ranged or whole), served from blocks; `None` when it is
    /// not one.
    async fn cached_get(&self, location: &Path, options: &GetOptions) -> Result<Option<GetResult>> {
        let plain = options.if_match.is_none()
            && options.if_none_match.is_none()
            && options.if_modified_since.is_none()
            && options.if_unmodified_since.is_none()
            && options.version.is_none()
            && !options.head;
        if !(plain && cacheable(location)) {
            return Ok(None);
        }
        let range = match (&options.range, self.metas.get(location)) {
            (None, Some(meta)) => 0..meta.size,
            (None, None) => return self.whole(location).await.map(Some),
            (Some(requested), Some(meta)) => match requested.as_range(meta.size) {
                Ok(r) => r,
                // The store words the error.
                Err(_) => return Ok(None),
            },
            (Some(GetRange::Bounded(r)), None) => r.clone(),
            // A suffix or offset needs the size first: this read goes through and tells it.
            (Some(_), None) => return Ok(None),
        };
        if range.start >= range.end {
            return Ok(None);
        }
        let (blocks, meta) = self
            .blocks_for(location, std::slice::from_ref(&range))
            .await?;
        let Some(meta) = meta else {
            return Ok(None);
        };
        let range = range.start..range.end.min(meta.size);
        let Some(bytes) = Self::assemble(&blocks, &range) else {
            return Ok(None);
        };
        let payload = futures::stream::once(async move { Ok(bytes) }).boxed();
        Ok(Some(GetResult {
            payload: GetResultPayload::Stream(payload),
            meta,
            range,
            attributes: Default::default(),
        }))
    }
}

#[async_trait]
impl ObjectStore for ReadCache {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        if let Some(result) = self.cached_get(location, &options).await? {
            return Ok(result);
        }
        let result = self.inner.get_opts(location, options).await?;
        if cacheable(location) && self.metas.get(location).is_none() {
            self.metas.insert(location.clone(), result.meta.clone());
        }
        Ok(result)
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        if !cacheable(location) {
            return self.inner.get_ranges(location, ranges).await;
        }
        let (blocks, _) = self.blocks_for(location, ranges).await?;
        ranges
            .iter()
            .map(|r| Self::assemble(&blocks, r).ok_or_else(|| short_read(location, r)))
            .collect()
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;
    use proptest::prelude::*;
    use std::sync::atomic::AtomicUsize;

    /// The in-memory store, counting the reads that reach it.
    #[derive(Debug, Default)]
    struct Counting {
        inner: InMemory,
        gets: AtomicUsize,
    }

    impl fmt::Display for Counting {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "Counting")
        }
    }

    #[async_trait]
    impl ObjectStore for Counting {
        async fn put_opts(&self, l: &Path, p: PutPayload, o: PutOptions) -> Result<PutResult> {
            self.inner.put_opts(l, p, o).await
        }
        async fn put_multipart_opts(
            &self,
            l: &Path,
            o: PutMultipartOptions,
        ) -> Result<Box<dyn MultipartUpload>> {
            self.inner.put_multipart_opts(l, o).await
        }
        async fn get_opts(&self, l: &Path, o: GetOptions) -> Result<GetResult> {
            self.gets.fetch_add(1, Ordering::SeqCst);
            self.inner.get_opts(l, o).await
        }
        fn delete_stream(
            &self,
            l: BoxStream<'static, Result<Path>>,
        ) -> BoxStream<'static, Result<Path>> {
            self.inner.delete_stream(l)
        }
        fn list(&self, p: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
            self.inner.list(p)
        }
        async fn list_with_delimiter(&self, p: Option<&Path>) -> Result<ListResult> {
            self.inner.list_with_delimiter(p).await
        }
        async fn copy_opts(&self, f: &Path, t: &Path, o: CopyOptions) -> Result<()> {
            self.inner.copy_opts(f, t, o).await
        }
    }

    fn object(len: usize) -> Bytes {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    async fn store_with(path: &Path, data: &Bytes) -> Arc<Counting> {
        let store = Arc::new(Counting::default());
        store.put(path, data.clone().into()).await.unwrap();
        store
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    #[test]
    fn a_second_read_of_the_same_bytes_reaches_no_store() {
        runtime().block_on(async {
            let path = Path::from("org/t/date=2025-01-01/t1-1-2.parquet");
            let data = object(3 * BLOCK_BYTES as usize + 1000);
            let inner = store_with(&path, &data).await;
            let cache = ReadCache::new(inner.clone(), 64 << 20);
            let ranges = [
                10..20,
                300_000..600_000,
                data.len() as u64 - 8..data.len() as u64,
            ];
            let first = cache.get_ranges(&path, &ranges).await.unwrap();
            let reads = inner.gets.load(Ordering::SeqCst);
            assert!(reads >= 1);
            // The same bytes read differently: a single range, and the footer alone.
            let second = cache.get_ranges(&path, &ranges).await.unwrap();
            let single = cache.get_range(&path, 300_000..600_000).await.unwrap();
            let footer = cache
                .get_opts(
                    &path,
                    GetOptions::new().with_range(Some(GetRange::Suffix(8))),
                )
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            assert_eq!(inner.gets.load(Ordering::SeqCst), reads);
            assert_eq!(first, second);
            assert_eq!(single, data.slice(300_000..600_000));
            assert_eq!(footer, data.slice(data.len() - 8..));
            let stats = cache.stats();
            assert!(stats.hits > 0 && stats.misses > 0, "{stats:?}");
        });
    }

    #[test]
    fn a_whole_read_fills_the_blocks_ranged_reads_use() {
        runtime().block_on(async {
            let path = Path::from("w.parquet");
            let data = object(2 * BLOCK_BYTES as usize + 5);
            let inner = store_with(&path, &data).await;
            let cache = ReadCache::new(inner.clone(), 64 << 20);
            assert_eq!(cache.get(&path).await.unwrap().bytes().await.unwrap(), data);
            assert_eq!(cache.get(&path).await.unwrap().bytes().await.unwrap(), data);
            let tail = data.len() as u64 - 10..data.len() as u64;
            assert_eq!(
                cache
                    .get_ranges(&path, &[0..3, tail.clone()])
                    .await
                    .unwrap(),
                vec![data.slice(0..3), data.slice(tail.start as usize..)]
            );
            assert_eq!(inner.gets.load(Ordering::SeqCst), 1);
        });
    }

    #[test]
    fn other_objects_and_conditional_reads_go_through() {
        runtime().block_on(async {
            let path = Path::from("org/t/_manifest/00000000000000000001.json");
            let data = object(5000);
            let inner = store_with(&path, &data).await;
            let cache = ReadCache::new(inner.clone(), 64 << 20);
            for _ in 0..2 {
                assert_eq!(
                    cache.get_range(&path, 0..100).await.unwrap(),
                    data.slice(0..100)
                );
            }
            assert_eq!(inner.gets.load(Ordering::SeqCst), 2);
            assert_eq!(cache.stats().held_bytes, 0);
        });
    }

    #[test]
    fn a_cache_smaller_than_one_read_still_answers_it() {
        runtime().block_on(async {
            let path = Path::from("a.parquet");
            let data = object(5 * BLOCK_BYTES as usize);
            let inner = store_with(&path, &data).await;
            let cache = ReadCache::new(inner, BLOCK_BYTES);
            for _ in 0..3 {
                let all = cache.get_range(&path, 0..data.len() as u64).await.unwrap();
                assert_eq!(all, data);
            }
            assert!(cache.stats().held_bytes <= BLOCK_BYTES);
        });
    }

    #[test]
    fn a_range_past_the_end_is_the_stores_error() {
        runtime().block_on(async {
            let path = Path::from("a.parquet");
            let data = object(1000);
            let inner = store_with(&path, &data).await;
            let cache = ReadCache::new(inner, 64 << 20);
            assert!(
                cache
                    .get_ranges(&path, std::slice::from_ref(&(900..1100)))
                    .await
                    .is_err()
            );
            assert!(cache.get_range(&path, 2000..2100).await.is_err());
            // A bounded read past the end is clamped, as the stores do.
            assert_eq!(
                cache.get_range(&path, 900..1100).await.unwrap(),
                data.slice(900..)
            );
        });
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Whatever the reads and however small the cache, the bytes are the store's.
        #[test]
        fn reads_through_the_cache_equal_the_store(
            len in 1usize..(3 * BLOCK_BYTES as usize),
            reads in proptest::collection::vec(
                proptest::collection::vec((0.0f64..1.0, 0.0f64..1.0), 1..5), 1..6),
            blocks in 1u64..8,
        ) {
            runtime().block_on(async {
                let path = Path::from("p.parquet");
                let data = object(len);
                let inner = store_with(&path, &data).await;
                let cache = ReadCache::new(inner.clone(), blocks * BLOCK_BYTES);
                for read in reads {
                    let ranges: Vec<Range<u64>> = read
                        .iter()
                        .map(|&(a, b)| {
                            let (a, b) = ((a * len as f64) as u64, (b * len as f64) as u64);
                            a.min(b)..a.max(b)
                        })
                        .filter(|r| r.start < r.end)
                        .collect();
                    let expected = inner.get_ranges(&path, &ranges).await.unwrap();
                    let got = cache.get_ranges(&path, &ranges).await.unwrap();
                    assert_eq!(got, expected);
                    for r in &ranges {
                        assert_eq!(cache.get_range(&path, r.clone()).await.unwrap(),
                            data.slice(r.start as usize..r.end as usize));
                    }
                }
            });
        }
    }
}
