//! The state requests are served from: the catalog, the store and the query engine once
//! replay has finished, and what every handler asks of them (snapshots, `as_of`, decoders).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use axum::extract::FromRequestParts;
use hyper::http::request::Parts;
use meterbase_catalog::{Catalog, Organisation};
use meterbase_query::QueryEngine;
use meterbase_schema::timestamp::parse_instant_utc;
use meterbase_schema::{EventDecoder, EventTypeDef};
use meterbase_storage::{Store, Table, TableSnapshot};

use crate::config::ServerConfig;
use crate::http::Result;
use crate::problem::Problem;
use crate::prometheus::Metrics;

/// Everything a request handler needs once the server is ready.
pub struct App {
    pub config: ServerConfig,
    pub catalog: Catalog,
    pub store: Arc<Store>,
    pub engine: QueryEngine,
    pub metrics: Arc<Metrics>,
    pub decoders: DecoderCache,
    /// Set only with `--fault-injection`.
    pub faults: Option<Arc<meterbase_storage::Faults>>,
    /// The open tables' publisher (`--open-tables delta`).
    pub open_tables: Option<Arc<meterbase_delta::Publisher>>,
}

/// What the listener serves from before replay has finished: `App` is set once it has.
pub struct Shared {
    pub app: OnceLock<Arc<App>>,
    pub ready: AtomicBool,
    pub metrics: Arc<Metrics>,
}

impl Shared {
    pub fn ready_app(&self) -> Option<&Arc<App>> {
        self.app.get().filter(|_| self.ready.load(Ordering::SeqCst))
    }
}

/// The ready `App`, or 503 while the write-ahead log is still being replayed.
pub(crate) struct Ready(pub Arc<App>);

impl FromRequestParts<Arc<Shared>> for Ready {
    type Rejection = Problem;

    async fn from_request_parts(_: &mut Parts, shared: &Arc<Shared>) -> Result<Ready> {
        shared.ready_app().cloned().map(Ready).ok_or_else(|| {
            Problem::unavailable("the server is starting (replaying the write-ahead log)", 1)
        })
    }
}

/// Decoders are built once per (event type, schema version); a new version replaces the old.
#[derive(Default)]
pub struct DecoderCache {
    map: Mutex<HashMap<String, (u32, Arc<EventDecoder>)>>,
}

impl DecoderCache {
    pub(crate) fn get(&self, def: &EventTypeDef) -> Result<Arc<EventDecoder>> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((version, d)) = map.get(def.id.as_str())
            && *version == def.schema_version
        {
            return Ok(d.clone());
        }
        let d = Arc::new(EventDecoder::new(def)?);
        map.insert(def.id.clone(), (def.schema_version, d.clone()));
        Ok(d)
    }
}

fn no_such_type(slug: &str) -> Problem {
    Problem::not_found(format!("no event type with api_slug {slug:?}"))
}

/// The Postgres listener reads through the same keys, snapshots, engine and `as_of` rule.
impl meterbase_pgwire::Tenants for App {
    fn authenticate(&self, key: &str) -> Option<Arc<Organisation>> {
        self.catalog.authenticate(key)
    }

    fn snapshots(&self, org: &Organisation) -> std::result::Result<Vec<TableSnapshot>, String> {
        App::snapshots(self, org).map_err(|p| p.detail)
    }

    fn engine(&self) -> &QueryEngine {
        &self.engine
    }

    fn parse_as_of(&self, text: &str) -> std::result::Result<i64, String> {
        App::parse_as_of(self, text).map_err(|p| p.detail)
    }
}

impl App {
    /// An event type of the organisation by slug (any case).
    pub(crate) fn event_type(&self, org: &Organisation, slug: &str) -> Result<EventTypeDef> {
        self.catalog
            .event_type(&org.id, &slug.to_ascii_lowercase())
            .ok_or_else(|| no_such_type(slug))
    }

    /// The table an event type's rows live in, found by slug.
    pub(crate) fn table(&self, org: &Organisation, slug: &str) -> Result<Arc<Table>> {
        let type_id = self
            .catalog
            .event_type_id(&org.id, &slug.to_ascii_lowercase())
            .ok_or_else(|| no_such_type(slug))?;
        self.store
            .table(&org.id, &type_id)
            .ok_or_else(|| no_such_type(slug))
    }

    /// One consistent snapshot of each of the organisation's tables.
    pub(crate) fn snapshots(&self, org: &Organisation) -> Result<Vec<TableSnapshot>> {
        Ok(self
            .store
            .org_tables(&org.id)
            .iter()
            .map(|t| t.snapshot())
            .collect::<std::result::Result<Vec<_>, _>>()?)
    }

    /// An `as_of` instant, refused when older than the history kept
    /// (`--history-retention-days`): versions replaced or deleted longer ago may already be
    /// gone, so the answer could be wrong.
    pub(crate) fn parse_as_of(&self, text: &str) -> Result<i64> {
        let t = parse_instant_utc(text)
            .map_err(|e| Problem::bad_request(format!("as_of {text:?}: {e}")))?;
        let retention = self.config.compaction.history_retention;
        let oldest = meterbase_wal::now_micros() - retention.as_micros() as i64;
        if t < oldest {
            return Err(Problem::bad_request(format!(
                "as_of {text:?} is older than the history kept ({} days, --history-retention-days)",
                retention.as_secs() / 86_400
            )));
        }
        Ok(t)
    }
}
