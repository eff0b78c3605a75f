use std::path::PathBuf;
use std::sync::Arc;

use meterbase_fs::Fs;
use object_store::ObjectStore;

use crate::StorageError;
use crate::local_store::LocalStore;

/// The object store, with the URL the user gave (for logs and for registering the store with
/// the query engine).
#[derive(Clone, Debug)]
pub struct ObjectStoreHandle {
    pub store: Arc<dyn ObjectStore>,
    pub url: String,
}

impl ObjectStoreHandle {
    /// A local directory on the operating system's file system.
    pub fn local(root: impl Into<PathBuf>) -> Result<ObjectStoreHandle, StorageError> {
        ObjectStoreHandle::local_on(meterbase_fs::real(), root)
    }

    /// A local directory on `fs` (a simulated disk in crash tests). Puts are durable when
    /// they return (`LocalStore`).
    pub fn local_on(
        fs: Arc<dyn Fs>,
        root: impl Into<PathBuf>,
    ) -> Result<ObjectStoreHandle, StorageError> {
        let root = root.into();
        fs.create_dir_all_synced(&root)
            .map_err(|e| StorageError::Io {
                path: root.display().to_string(),
                source: e,
            })?;
        Ok(ObjectStoreHandle {
            url: format!("file://{}", root.display()),
            store: Arc::new(LocalStore::new(fs, root)),
        })
    }

    /// The whole object at `path`.
    pub async fn get_bytes(
        &self,
        path: &object_store::path::Path,
    ) -> Result<bytes::Bytes, StorageError> {
        use object_store::ObjectStoreExt;
        self.store
            .get(path)
            .await
            .map_err(|e| StorageError::store(path, e))?
            .bytes()
            .await
            .map_err(|e| StorageError::store(path, e))
    }

    /// Every object under `prefix`.
    pub async fn list_all(
        &self,
        prefix: &object_store::path::Path,
    ) -> Result<Vec<object_store::ObjectMeta>, StorageError> {
        use futures::TryStreamExt;
        self.store
            .list(Some(prefix))
            .try_collect()
            .await
            .map_err(|e| StorageError::store(prefix, e))
    }
}

/// `s3://bucket[/prefix]`, configured by the standard `AWS_*` variables (`AWS_ENDPOINT_URL`,
/// `AWS_ALLOW_HTTP=true` for a local store, `AWS_DEFAULT_REGION`, credentials). Requests use
/// path-style addressing unless `AWS_VIRTUAL_HOSTED_STYLE_REQUEST=true`. Creates use
/// `If-None-Match: *` (`PutMode::Create`), which the store must enforce.
fn s3(url: &str, rest: &str) -> Result<ObjectStoreHandle, StorageError> {
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(StorageError::BadUrl(
            url.into(),
            "s3:// URLs need a bucket: s3://bucket/prefix".into(),
        ));
    }
    let s3 = object_store::aws::AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .build()
        .map_err(|e| StorageError::BadUrl(url.into(), e.to_string()))?;
    let prefix = prefix.trim_matches('/');
    let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
        Arc::new(s3)
    } else {
        Arc::new(object_store::prefix::PrefixStore::new(s3, prefix))
    };
    Ok(ObjectStoreHandle {
        store,
        url: url.to_string(),
    })
}

/// `file:///abs/path`, a plain path, or `s3://bucket/prefix`.
pub fn parse_object_store_url(url: &str) -> Result<ObjectStoreHandle, StorageError> {
    if let Some(rest) = url.strip_prefix("s3://") {
        return s3(url, rest);
    }
    if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(StorageError::BadUrl(
                url.into(),
                "file:// URLs need an absolute path".into(),
            ));
        }
        return ObjectStoreHandle::local(path);
    }
    if url.contains("://") {
        return Err(StorageError::BadUrl(
            url.into(),
            "supported schemes: file:// and s3://".into(),
        ));
    }
    ObjectStoreHandle::local(url)
}
