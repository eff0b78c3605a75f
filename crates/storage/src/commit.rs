//! Manifests in the object store: the newest is loaded at start, and each change is the next
//! version, created with `PutMode::Create` so two writers can never both commit one version.

use object_store::ObjectStoreExt;
use object_store::path::Path;
use object_store::{PutMode, PutOptions, PutPayload};
use std::time::Duration;
use tracing::{info, warn};

use crate::context::Ctx;
use crate::error::StorageError;
use crate::format::manifest::Manifest;
use crate::format::paths::{TablePaths, manifest_version_of};
use crate::table::Table;
use crate::url::ObjectStoreHandle;

/// The newest version of a table's manifest, or an empty manifest when there is none.
pub(crate) async fn load_latest(
    store: &ObjectStoreHandle,
    paths: &TablePaths,
) -> Result<Manifest, StorageError> {
    let dir = paths.manifest_dir();
    let metas = store.list_all(&dir).await?;
    let latest = metas
        .iter()
        .filter_map(|m| {
            Some((
                manifest_version_of(m.location.filename()?)?,
                m.location.clone(),
            ))
        })
        .max_by_key(|(v, _)| *v);
    let Some((_, path)) = latest else {
        return Ok(Manifest::default());
    };
    let bytes = store.get_bytes(&path).await?;
    Manifest::decode(&path, &bytes)
}

/// How putting a manifest version went.
enum Put {
    Landed,
    /// The version exists already and differs: what is there.
    Taken(Manifest),
}

/// Publishes `manifest` as version `manifest.version`. If that version exists already it is
/// read back: identical means an earlier attempt of this very commit landed (fine); anything
/// else is `Put::Taken` with what is there.
async fn put_version(
    manifest: &Manifest,
    store: &ObjectStoreHandle,
    paths: &TablePaths,
) -> Result<Put, StorageError> {
    let path = paths.manifest_version(manifest.version);
    let bytes = manifest.encode()?;
    let opts = PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    match store
        .store
        .put_opts(&path, PutPayload::from(bytes), opts)
        .await
    {
        Ok(_) => {}
        Err(object_store::Error::AlreadyExists { .. }) => {
            let existing = store.get_bytes(&path).await?;
            let landed = Manifest::decode(&path, &existing)?;
            if landed != manifest.as_stored() {
                return Ok(Put::Taken(landed));
            }
        }
        Err(e) => return Err(StorageError::store(&path, e)),
    }
    // Older versions are no longer needed once this one is durable; keep a few for
    // inspection. Failing to delete them is harmless.
    if manifest.version > 3 {
        let old: Path = paths.manifest_version(manifest.version - 3);
        let _ = store.store.delete(&old).await;
    }
    Ok(Put::Landed)
}

/// Commits the manifest `build` makes from the current one, as the next version. An
/// ambiguous failure (the store may or may not have taken it) is retried; a version found
/// taken by an earlier attempt of this process is adopted and `build` asked again (it
/// returns `None` when the adopted version already holds its change). The caller holds
/// the table's `flush_lock`, so no other commit of this process races it.
pub(crate) async fn commit_manifest(
    ctx: &Ctx,
    table: &Table,
    mut build: impl FnMut(&Manifest) -> Option<Manifest>,
) -> Result<Option<Manifest>, StorageError> {
    let paths = table.paths();
    let mut failures = 0u32;
    loop {
        let current = table.manifest();
        let Some(mut next) = build(&current) else {
            return Ok(None);
        };
        next.version = current.version + 1;
        next.writer = ctx.writer_id.clone();
        match put_version(&next, &ctx.handle, &paths).await {
            Ok(Put::Landed) => return Ok(Some(next)),
            Ok(Put::Taken(landed)) if landed.writer == ctx.writer_id => {
                info!(table = %table.slug, version = landed.version, "a manifest commit whose reply was lost had landed; adopting it");
                table.adopt(landed);
            }
            Ok(Put::Taken(landed)) => {
                return Err(StorageError::ManifestTaken {
                    path: paths.manifest_version(next.version).to_string(),
                    writer: landed.writer,
                });
            }
            Err(e) if failures < 3 => {
                failures += 1;
                warn!(table = %table.slug, "manifest commit failed, retrying: {e}");
                tokio::time::sleep(Duration::from_millis(50 << failures)).await;
            }
            Err(e) => return Err(e),
        }
    }
}
