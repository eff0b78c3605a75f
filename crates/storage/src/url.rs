use std::path::PathBuf;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::local::LocalFileSystem;

use crate::StorageError;

/// The object store with what durability needs to know about it: `object_store`'s local
/// filesystem does not fsync, so for `file://` we sync files and directories ourselves.
#[derive(Clone, Debug)]
pub struct ObjectStoreHandle {
    pub store: Arc<dyn ObjectStore>,
    /// The URL the user gave, for logs and for registering the store with the query engine.
    pub url: String,
    pub local_root: Option<PathBuf>,
}

impl ObjectStoreHandle {
    pub fn local(root: impl Into<PathBuf>) -> Result<ObjectStoreHandle, StorageError> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|e| StorageError::Io {
            path: root.display().to_string(),
            source: e,
        })?;
        let store = LocalFileSystem::new_with_prefix(&root)
            .map_err(|e| StorageError::store(root.display(), e))?;
        Ok(ObjectStoreHandle {
            store: Arc::new(store),
            url: format!("file://{}", root.display()),
            local_root: Some(root),
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

    /// Makes a just-written object and the directories leading to it durable (local only).
    pub fn sync_object(&self, path: &object_store::path::Path) -> Result<(), StorageError> {
        let Some(root) = &self.local_root else {
            return Ok(());
        };
        let io = |p: &std::path::Path, e| StorageError::Io {
            path: p.display().to_string(),
            source: e,
        };
        let mut file = root.clone();
        for part in path.parts() {
            file.push(part.as_ref());
        }
        std::fs::File::open(&file)
            .and_then(|f| f.sync_all())
            .map_err(|e| io(&file, e))?;
        let mut dir = file.parent().map(|p| p.to_path_buf());
        while let Some(d) = dir {
            std::fs::File::open(&d)
                .and_then(|f| f.sync_all())
                .map_err(|e| io(&d, e))?;
            if d == *root {
                break;
            }
            dir = d.parent().map(|p| p.to_path_buf());
        }
        Ok(())
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
        local_root: None,
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
