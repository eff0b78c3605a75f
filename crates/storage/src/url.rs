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

/// `file:///abs/path` or a plain path. (`s3://` arrives with the S3 work.)
pub fn parse_object_store_url(url: &str) -> Result<ObjectStoreHandle, StorageError> {
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
            "supported schemes: file://".into(),
        ));
    }
    ObjectStoreHandle::local(url)
}
