//! meterbase-catalog owns the durable, rarely-changing metadata: organisations, API keys
//! (stored only as SHA-256 hashes, looked up by hash), event type definitions and billable
//! metric definitions with every version of each.
//! It persists one JSON document in the data directory with write-temp, fsync, rename.
//!
//! It must not touch events, the write-ahead log or the object store, nor interpret a
//! metric's definition (the metrics layer owns it; here it is opaque JSON).
//!
//! Module map: this file (the document, `State`, versioned by `CATALOG_FORMAT` and pinned by
//! `testdata/formats/catalog/`; its operations on `Catalog`; `persist`), `metric` (a metric's
//! versions and which one is in force at an instant), `upgrade` (older documents rewritten
//! into today's shape before decoding).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use meterbase_fs::{Create, Fs};
use meterbase_schema::EventTypeDef;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

mod metric;
mod upgrade;

pub use metric::{MetricVersion, StoredMetric};

#[derive(Debug, Error)]
pub enum CatalogError {
    #[error("catalog I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("catalog file {path} is unreadable: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Organisation {
    pub id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// A key as handed out: the only time the key itself exists outside the client.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub id: String,
    pub key: String,
}

/// What the admin API may show of a stored key: never the key, nor its hash.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeyInfo {
    pub id: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ApiKeyRecord {
    id: String,
    org_id: String,
    /// Hex SHA-256 of the key; the key itself is never stored.
    sha256: String,
    created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoredEventType {
    pub org_id: String,
    pub def: EventTypeDef,
}

/// The catalog document format this build writes. 0: before the document carried one
/// (same fields); 1: `format` present; 2: a metric holds `versions` instead of one
/// `reads`/`body` (older documents are upgraded on open, `upgrade`). A newer format is
/// refused, never half-read.
pub const CATALOG_FORMAT: u32 = 2;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    #[serde(default)]
    format: u32,
    version: u64,
    organisations: Vec<Organisation>,
    api_keys: Vec<ApiKeyRecord>,
    event_types: Vec<StoredEventType>,
    #[serde(default)]
    metrics: Vec<StoredMetric>,
    /// Every key's SHA-256 to its organisation, derived from the fields above whenever they
    /// change: authentication runs on every request and must not scan every key.
    #[serde(skip)]
    orgs_by_key: HashMap<[u8; 32], Arc<Organisation>>,
}

impl State {
    fn index_keys(&mut self) {
        let orgs: HashMap<&str, Arc<Organisation>> = self
            .organisations
            .iter()
            .map(|o| (o.id.as_str(), Arc::new(o.clone())))
            .collect();
        self.orgs_by_key = self
            .api_keys
            .iter()
            .filter_map(|record| {
                let mut digest = [0u8; 32];
                hex::decode_to_slice(&record.sha256, &mut digest).ok()?;
                Some((digest, orgs.get(record.org_id.as_str())?.clone()))
            })
            .collect();
    }
}

pub struct Catalog {
    fs: Arc<dyn Fs>,
    path: PathBuf,
    state: RwLock<State>,
    /// Serialises read-modify-persist so two changes never race on the file.
    write: Mutex<()>,
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

fn new_key(org_id: &str) -> (NewKey, ApiKeyRecord) {
    let key = format!("mb_{}", random_hex(24));
    let id = format!("key_{}", random_hex(8));
    let record = ApiKeyRecord {
        id: id.clone(),
        org_id: org_id.to_string(),
        sha256: hex::encode(hash_key(&key)),
        created_at: Utc::now(),
    };
    (NewKey { id, key }, record)
}

fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl Catalog {
    pub fn open(path: impl Into<PathBuf>) -> Result<Catalog, CatalogError> {
        Catalog::open_on(meterbase_fs::real(), path)
    }

    /// `open` on a given file system (a simulated disk in crash tests).
    pub fn open_on(fs: Arc<dyn Fs>, path: impl Into<PathBuf>) -> Result<Catalog, CatalogError> {
        let path = path.into();
        let mut state: State = match fs.read(&path) {
            Ok(bytes) => decode(&bytes).map_err(|reason| CatalogError::Corrupt {
                path: path.clone(),
                reason,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(CatalogError::Io { path, source: e }),
        };
        state.index_keys();
        Ok(Catalog {
            fs,
            path,
            state: RwLock::new(state),
            write: Mutex::new(()),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `f` to a copy, persists the copy, then publishes it.
    fn update<R>(
        &self,
        f: impl FnOnce(&mut State) -> Result<R, CatalogError>,
    ) -> Result<R, CatalogError> {
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = self.read().clone();
        let out = f(&mut next)?;
        next.version += 1;
        next.format = CATALOG_FORMAT;
        next.index_keys();
        persist(self.fs.as_ref(), &self.path, &next)?;
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = next;
        Ok(out)
    }

    pub fn version(&self) -> u64 {
        self.read().version
    }

    pub fn has_organisations(&self) -> bool {
        !self.read().organisations.is_empty()
    }

    pub fn create_organisation(&self, name: &str) -> Result<(Organisation, NewKey), CatalogError> {
        let name = name.trim();
        if name.is_empty() || name.len() > 128 {
            return Err(CatalogError::Invalid(
                "organisation name must be 1-128 characters".into(),
            ));
        }
        let org = Organisation {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.to_string(),
            created_at: Utc::now(),
        };
        let (new, record) = new_key(&org.id);
        self.update(|s| {
            if s.organisations.iter().any(|o| o.name == name) {
                return Err(CatalogError::Conflict(format!(
                    "organisation {name:?} exists"
                )));
            }
            s.organisations.push(org.clone());
            s.api_keys.push(record);
            Ok(())
        })?;
        Ok((org, new))
    }

    pub fn organisations(&self) -> Vec<Organisation> {
        self.read().organisations.clone()
    }

    /// By id or by name.
    pub fn find_organisation(&self, id_or_name: &str) -> Option<Organisation> {
        self.read()
            .organisations
            .iter()
            .find(|o| o.id == id_or_name || o.name == id_or_name)
            .cloned()
    }

    pub fn create_api_key(&self, org: &str) -> Result<NewKey, CatalogError> {
        let org = self
            .find_organisation(org)
            .ok_or_else(|| CatalogError::NotFound(format!("organisation {org:?} not found")))?;
        let (new, record) = new_key(&org.id);
        self.update(|s| {
            s.api_keys.push(record);
            Ok(())
        })?;
        Ok(new)
    }

    /// The keys of an organisation (by id or name), oldest first.
    pub fn api_keys(&self, org: &str) -> Result<Vec<ApiKeyInfo>, CatalogError> {
        let org = self
            .find_organisation(org)
            .ok_or_else(|| CatalogError::NotFound(format!("organisation {org:?} not found")))?;
        let mut keys: Vec<ApiKeyInfo> = self
            .read()
            .api_keys
            .iter()
            .filter(|k| k.org_id == org.id)
            .map(|k| ApiKeyInfo {
                id: k.id.clone(),
                created_at: k.created_at,
            })
            .collect();
        keys.sort_by_key(|k| k.created_at);
        Ok(keys)
    }

    pub fn delete_api_key(&self, id: &str) -> Result<(), CatalogError> {
        self.update(|s| {
            let before = s.api_keys.len();
            s.api_keys.retain(|k| k.id != id);
            if s.api_keys.len() == before {
                return Err(CatalogError::NotFound(format!("API key {id:?} not found")));
            }
            Ok(())
        })
    }

    /// The organisation a key belongs to, found by the key's SHA-256. Timing can tell an
    /// attacker at most something about a digest, and no key can be recovered from that.
    pub fn authenticate(&self, key: &str) -> Option<Arc<Organisation>> {
        self.read().orgs_by_key.get(&hash_key(key)).cloned()
    }

    pub fn event_types(&self, org_id: &str) -> Vec<EventTypeDef> {
        self.read()
            .event_types
            .iter()
            .filter(|t| t.org_id == org_id)
            .map(|t| t.def.clone())
            .collect()
    }

    pub fn all_event_types(&self) -> Vec<StoredEventType> {
        self.read().event_types.clone()
    }

    pub fn event_type(&self, org_id: &str, slug: &str) -> Option<EventTypeDef> {
        self.read()
            .event_types
            .iter()
            .find(|t| t.org_id == org_id && t.def.api_slug == slug)
            .map(|t| t.def.clone())
    }

    /// The id of an organisation's event type, by `api_slug` in any letter case (the write
    /// path's lookup: no definition is copied).
    pub fn event_type_id(&self, org_id: &str, slug: &str) -> Option<String> {
        self.read()
            .event_types
            .iter()
            .find(|t| t.org_id == org_id && t.def.api_slug.eq_ignore_ascii_case(slug))
            .map(|t| t.def.id.clone())
    }

    pub fn create_event_type(&self, org_id: &str, def: EventTypeDef) -> Result<(), CatalogError> {
        self.update(|s| {
            if s.event_types
                .iter()
                .any(|t| t.org_id == org_id && t.def.api_slug == def.api_slug)
            {
                return Err(CatalogError::Conflict(format!(
                    "an event type with api_slug {:?} exists",
                    def.api_slug
                )));
            }
            s.event_types.push(StoredEventType {
                org_id: org_id.to_string(),
                def,
            });
            Ok(())
        })
    }

    pub fn replace_event_type(&self, org_id: &str, def: EventTypeDef) -> Result<(), CatalogError> {
        self.update(|s| {
            let slot = s
                .event_types
                .iter_mut()
                .find(|t| t.org_id == org_id && t.def.id == def.id)
                .ok_or_else(|| {
                    CatalogError::NotFound(format!("event type {:?} not found", def.api_slug))
                })?;
            slot.def = def;
            Ok(())
        })
    }

    pub fn delete_event_type(
        &self,
        org_id: &str,
        slug: &str,
    ) -> Result<EventTypeDef, CatalogError> {
        self.update(|s| {
            if let Some((m, version)) = s
                .metrics
                .iter()
                .filter(|m| m.org_id == org_id)
                .find_map(|m| Some((m, m.reads(slug)?)))
            {
                return Err(CatalogError::Conflict(format!(
                    "billable metric {:?} (version {version}) reads event type {slug:?}; delete the metric first",
                    m.slug
                )));
            }
            let pos = s
                .event_types
                .iter()
                .position(|t| t.org_id == org_id && t.def.api_slug == slug)
                .ok_or_else(|| CatalogError::NotFound(format!("event type {slug:?} not found")))?;
            Ok(s.event_types.remove(pos).def)
        })
    }

    pub fn metrics(&self, org_id: &str) -> Vec<StoredMetric> {
        self.read()
            .metrics
            .iter()
            .filter(|m| m.org_id == org_id)
            .cloned()
            .collect()
    }

    pub fn metric(&self, org_id: &str, slug: &str) -> Option<StoredMetric> {
        self.read()
            .metrics
            .iter()
            .find(|m| m.org_id == org_id && m.slug == slug)
            .cloned()
    }

    /// A new metric: its version 1, stamped now.
    pub fn create_metric(
        &self,
        org_id: &str,
        slug: &str,
        reads: Vec<String>,
        body: serde_json::Value,
    ) -> Result<MetricVersion, CatalogError> {
        self.update(|s| {
            if s.metrics
                .iter()
                .any(|m| m.org_id == org_id && m.slug == slug)
            {
                return Err(CatalogError::Conflict(format!(
                    "billable metric {slug:?} exists"
                )));
            }
            let mut metric = StoredMetric {
                org_id: org_id.to_string(),
                slug: slug.to_string(),
                versions: Vec::new(),
            };
            let first = metric.next_version(metric::now_micros(), reads, body);
            metric.versions.push(first.clone());
            s.metrics.push(metric);
            Ok(first)
        })
    }

    /// The next version of an existing metric, stamped now (never before the current one):
    /// from then on it is the one in force.
    pub fn add_metric_version(
        &self,
        org_id: &str,
        slug: &str,
        reads: Vec<String>,
        body: serde_json::Value,
    ) -> Result<MetricVersion, CatalogError> {
        self.update(|s| {
            let metric = s
                .metrics
                .iter_mut()
                .find(|m| m.org_id == org_id && m.slug == slug)
                .ok_or_else(|| {
                    CatalogError::NotFound(format!("billable metric {slug:?} not found"))
                })?;
            let next = metric.next_version(metric::now_micros(), reads, body);
            metric.versions.push(next.clone());
            Ok(next)
        })
    }

    pub fn delete_metric(&self, org_id: &str, slug: &str) -> Result<(), CatalogError> {
        self.update(|s| {
            let before = s.metrics.len();
            s.metrics
                .retain(|m| !(m.org_id == org_id && m.slug == slug));
            if s.metrics.len() == before {
                return Err(CatalogError::NotFound(format!(
                    "billable metric {slug:?} not found"
                )));
            }
            Ok(())
        })
    }
}

/// A stored document of any format this build reads, in today's shape.
fn decode(bytes: &[u8]) -> Result<State, String> {
    let mut doc: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let format = doc
        .get("format")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    if format > u64::from(CATALOG_FORMAT) {
        return Err(format!(
            "written in catalog format {format}, this build reads up to {CATALOG_FORMAT}: upgrade meterbase"
        ));
    }
    if format < 2 {
        upgrade::metrics_to_versions(&mut doc)?;
    }
    serde_json::from_value(doc).map_err(|e| e.to_string())
}

/// Write-temp, fsync, rename, fsync the directory: the file is either the old or the new
/// document after any crash.
fn persist(fs: &dyn Fs, path: &Path, state: &State) -> Result<(), CatalogError> {
    let io = |e| CatalogError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let bytes =
        serde_json::to_vec_pretty(state).map_err(|e| CatalogError::Invalid(e.to_string()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    fs.create_dir_all_synced(dir).map_err(io)?;
    let tmp = path.with_extension("json.tmp");
    let f = fs.create(&tmp, Create::Truncate).map_err(io)?;
    f.write_all_at(&bytes, 0)
        .and_then(|()| f.sync_all())
        .map_err(io)?;
    fs.rename(&tmp, path).map_err(io)?;
    fs.sync_dir(dir).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn formats_dir() -> PathBuf {
        // Read at run time: a build cache shared by two checkouts may run this test binary
        // compiled in the other one.
        std::env::var_os("CARGO_MANIFEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
            .join("../../testdata/formats")
    }

    /// A catalog written by the build before the document carried a format opens, serves its
    /// key and event type, and is written in today's format at its next change.
    #[test]
    fn a_format_0_catalog_opens_and_is_upgraded_on_its_next_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.json");
        std::fs::copy(formats_dir().join("v0-data/catalog.json"), &path).unwrap();
        let key = std::fs::read_to_string(formats_dir().join("v0-data/default-api-key")).unwrap();
        let c = Catalog::open(&path).unwrap();
        let org = c.authenticate(key.trim()).expect("the old key still works");
        assert_eq!(org.name, "default");
        assert_eq!(c.event_types(&org.id)[0].api_slug, "golden");
        assert_eq!(c.read().format, 0);
        c.create_metric(
            &org.id,
            "golden_calls",
            vec!["golden".into()],
            serde_json::json!({"sql": "SELECT customer_id, sum(calls) AS value FROM golden GROUP BY customer_id"}),
        )
        .unwrap();
        let written: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(written["format"], CATALOG_FORMAT);
        // The current format's fixture is that very document (written once, with
        // METERBASE_BLESS=1); today's code writes it back byte for byte.
        let fixture = formats_dir().join(format!("catalog/v{CATALOG_FORMAT}.json"));
        if std::env::var_os("METERBASE_BLESS").is_some() && !fixture.exists() {
            std::fs::create_dir_all(fixture.parent().unwrap()).unwrap();
            std::fs::copy(&path, &fixture).unwrap();
        }
        let pinned = std::fs::read(&fixture).unwrap_or_else(|e| {
            panic!(
                "{} is missing ({e}): a catalog format without its fixture",
                fixture.display()
            )
        });
        let reopened = Catalog::open(&fixture).unwrap();
        assert!(reopened.authenticate(key.trim()).is_some());
        assert_eq!(reopened.metrics(&org.id).len(), 1);
        let again = serde_json::to_vec_pretty(&*reopened.read()).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&again),
            String::from_utf8_lossy(&pinned),
            "the catalog is written differently: bump CATALOG_FORMAT and add its fixture"
        );
    }

    /// A format 1 catalog (one definition per metric) opens with each metric as its version
    /// 1, in force for any `as_of` since its body has no creation time; the next change
    /// writes today's format with both versions.
    #[test]
    fn a_format_1_catalog_opens_with_its_metrics_as_version_1() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.json");
        std::fs::copy(formats_dir().join("catalog/v1.json"), &path).unwrap();
        let key = std::fs::read_to_string(formats_dir().join("v0-data/default-api-key")).unwrap();
        let c = Catalog::open(&path).unwrap();
        let org = c.authenticate(key.trim()).expect("the old key still works");
        assert_eq!(c.read().format, 1);
        let m = c
            .metric(&org.id, "golden_calls")
            .expect("the metric is kept");
        assert_eq!(m.versions.len(), 1);
        let v1 = m.current().unwrap().clone();
        assert_eq!(v1.version, 1);
        assert_eq!(v1.reads, vec!["golden".to_string()]);
        assert_eq!(
            v1.body,
            serde_json::json!({"sql": "SELECT customer_id, sum(calls) AS value FROM golden GROUP BY customer_id"})
        );
        assert_eq!(m.in_force_at(0).map(|v| v.version), Some(1));
        let v2 = c
            .add_metric_version(
                &org.id,
                "golden_calls",
                vec!["golden".into()],
                serde_json::json!({"sql": "SELECT customer_id, count(*) AS value FROM golden GROUP BY customer_id"}),
            )
            .unwrap();
        assert_eq!(v2.version, 2);
        assert!(v2.created_at > v1.created_at);
        let reopened = Catalog::open(&path).unwrap();
        assert_eq!(reopened.read().format, CATALOG_FORMAT);
        let m = reopened.metric(&org.id, "golden_calls").unwrap();
        assert_eq!(m.versions, vec![v1, v2]);
        // Any version reading an event type keeps it from being deleted.
        let err = reopened.delete_event_type(&org.id, "golden").unwrap_err();
        assert!(err.to_string().contains("golden_calls"), "{err}");
        assert!(
            reopened
                .add_metric_version(&org.id, "nope", vec![], serde_json::Value::Null)
                .is_err()
        );
    }

    #[test]
    fn a_catalog_of_a_newer_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.json");
        std::fs::write(&path, br#"{"format": 99, "version": 1, "organisations": [], "api_keys": [], "event_types": []}"#).unwrap();
        let err = Catalog::open(&path).err().unwrap().to_string();
        assert!(err.contains("upgrade meterbase"), "{err}");
    }

    #[test]
    fn keys_authenticate_only_their_organisation_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.json");
        let cat = Catalog::open(&path).unwrap();
        let (acme, NewKey { key: acme_key, .. }) = cat.create_organisation("acme").unwrap();
        let (
            globex,
            NewKey {
                key: globex_key, ..
            },
        ) = cat.create_organisation("globex").unwrap();
        assert!(cat.create_organisation("acme").is_err());
        assert_eq!(cat.authenticate(&acme_key).unwrap().id, acme.id);
        assert_eq!(cat.authenticate(&globex_key).unwrap().id, globex.id);
        assert!(cat.authenticate("mb_nope").is_none());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&acme_key), "keys are stored only as hashes");

        let NewKey {
            id: key_id,
            key: second,
        } = cat.create_api_key("acme").unwrap();
        assert_eq!(cat.authenticate(&second).unwrap().id, acme.id);
        assert_eq!(
            cat.api_keys("acme")
                .unwrap()
                .iter()
                .map(|k| k.id.as_str())
                .collect::<Vec<_>>()
                .len(),
            2
        );
        cat.delete_api_key(&key_id).unwrap();
        assert!(cat.authenticate(&second).is_none());
        assert_eq!(cat.api_keys(&acme.id).unwrap().len(), 1);
        assert!(cat.api_keys("nobody").is_err());

        let reopened = Catalog::open(&path).unwrap();
        assert_eq!(reopened.authenticate(&acme_key).unwrap().id, acme.id);
        assert_eq!(reopened.organisations().len(), 2);
    }

    #[test]
    fn a_power_loss_at_any_point_of_a_change_leaves_the_old_or_the_new_catalog() {
        let path = std::path::Path::new("/data/catalog.json");
        for crash_point in 1..30 {
            let disk = meterbase_fs::SimFs::new();
            let fs: Arc<dyn Fs> = Arc::new(disk.clone());
            let cat = Catalog::open_on(fs, path).unwrap();
            let (acme, NewKey { key, .. }) = cat.create_organisation("acme").unwrap();
            disk.crash_at(crash_point);
            let second = cat.create_organisation("globex").is_ok();
            for seed in 0..8 {
                let after: Arc<dyn Fs> = Arc::new(disk.power_cycle(seed));
                let reopened = Catalog::open_on(after, path)
                    .unwrap_or_else(|e| panic!("crash point {crash_point}, seed {seed}: {e}"));
                assert_eq!(
                    reopened.authenticate(&key).map(|o| o.id.clone()),
                    Some(acme.id.clone()),
                    "crash point {crash_point}, seed {seed}: an acknowledged change was lost"
                );
                if second {
                    assert!(reopened.find_organisation("globex").is_some());
                }
            }
        }
    }
}
