//! Deletion vectors in the object store: each commit that changes some writes them all into
//! one new vector file (`format::deletion_vector`), files never change; the vector files a
//! manifest stops referencing are retired like replaced data files.

use std::collections::{BTreeSet, HashMap};

use object_store::ObjectStoreExt;
use object_store::path::Path;
use roaring::RoaringTreemap;

use crate::context::Ctx;
use crate::error::StorageError;
use crate::format::deletion_vector::{DeletionVector, decode, encode_file};
use crate::format::manifest::{FileMeta, Manifest, RetiredFile};
use crate::format::paths::TablePaths;
use crate::url::ObjectStoreHandle;

/// Writes `masks` into one new vector file; their descriptors, in order. Durable when it
/// returns; listed by no manifest yet.
pub(crate) async fn write_vectors(
    ctx: &Ctx,
    paths: &TablePaths,
    masks: &[&RoaringTreemap],
) -> Result<Vec<DeletionVector>, StorageError> {
    if masks.is_empty() {
        return Ok(Vec::new());
    }
    let uuid = uuid::Uuid::new_v4().hyphenated().to_string();
    let (bytes, places) = encode_file(masks)?;
    ctx.put_file(paths.deletion_vector(&uuid).as_ref(), bytes)
        .await?;
    Ok(masks
        .iter()
        .zip(places)
        .map(|(m, (offset, size_in_bytes))| DeletionVector {
            uuid: uuid.clone(),
            offset,
            size_in_bytes,
            cardinality: m.len(),
        })
        .collect())
}

/// The rows `file`'s deletion vector masks (none without one).
pub(crate) async fn read_mask(
    handle: &ObjectStoreHandle,
    paths: &TablePaths,
    file: &FileMeta,
) -> Result<Option<RoaringTreemap>, StorageError> {
    let Some(dv) = &file.deletion_vector else {
        return Ok(None);
    };
    let path = paths.deletion_vector(&dv.uuid);
    let bytes = handle.get_bytes(&path).await?;
    decode(&bytes, dv.offset, dv.size_in_bytes, path.as_ref()).map(Some)
}

/// The vector files `manifest` references.
pub(crate) fn referenced(manifest: &Manifest) -> BTreeSet<&str> {
    manifest
        .files
        .iter()
        .filter_map(|f| f.deletion_vector.as_ref().map(|d| d.uuid.as_str()))
        .collect()
}

/// `next` with the vector files `current` referenced and it does not listed as retired at
/// `now` (readers of `current` may still need them), and their paths.
pub(crate) fn retire_released(
    current: &Manifest,
    mut next: Manifest,
    paths: &TablePaths,
    now: i64,
) -> (Manifest, Vec<String>) {
    let keep = referenced(&next);
    let released: Vec<String> = referenced(current)
        .into_iter()
        .filter(|u| !keep.contains(u))
        .map(|u| paths.deletion_vector(u).to_string())
        .collect();
    next.retired.extend(released.iter().map(|path| RetiredFile {
        path: path.clone(),
        at: now,
    }));
    (next, released)
}

/// Vector files written for a commit that did not take them: deleted at once (no manifest
/// ever listed them).
pub(crate) async fn delete_unused(
    ctx: &Ctx,
    paths: &TablePaths,
    written: &[DeletionVector],
    manifest: &Manifest,
) {
    let used = referenced(manifest);
    let mut seen: HashMap<&str, ()> = HashMap::new();
    for dv in written {
        if used.contains(dv.uuid.as_str()) || seen.insert(dv.uuid.as_str(), ()).is_some() {
            continue;
        }
        let path: Path = paths.deletion_vector(&dv.uuid);
        let _ = ctx.handle.store.delete(&path).await;
    }
}
