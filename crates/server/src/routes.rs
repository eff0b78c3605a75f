//! Request routing and handlers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use datafusion::common::ScalarValue;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, header};
use meterbase_catalog::Organisation;
use meterbase_schema::timestamp::parse_instant_utc;
use meterbase_schema::{
    DecodeLimits, DecodeOutcome, EventDecoder, EventTypeDef, EventTypeSpec, InputFormat,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use subtle::ConstantTimeEq;

use crate::encoding::{Encoding, accepts_gzip, gzip, inflate, request_encoding};
use crate::metrics::{Metrics, render};
use crate::metrics_api;
use crate::problem::{HttpResponse, Problem};
use crate::{App, Shared};

pub(crate) type Req = Request<TrackedBody>;

/// A request body that records how it ended: read to its end, or dropped unfinished by a
/// handler (a refusal decided from the headers alone), which hands it back to `handle`.
pub(crate) struct TrackedBody {
    inner: Option<Incoming>,
    /// `None` for a body complete from the start (no body at all): nothing to track.
    end: Option<Arc<Mutex<BodyEnd>>>,
}

enum BodyEnd {
    /// Still being read, or held by a task that outlived the handler.
    Open,
    ReadToEnd,
    Unread(Incoming),
}

impl TrackedBody {
    fn set_end(&self, end: BodyEnd) {
        if let Some(shared) = &self.end {
            *shared.lock().unwrap_or_else(|p| p.into_inner()) = end;
        }
    }
}

impl hyper::body::Body for TrackedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<std::result::Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return std::task::Poll::Ready(None);
        };
        let polled = std::pin::Pin::new(inner).poll_frame(cx);
        if matches!(polled, std::task::Poll::Ready(None)) {
            self.inner = None;
            self.set_end(BodyEnd::ReadToEnd);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| hyper::body::SizeHint::with_exact(0), |b| b.size_hint())
    }
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        if let Some(body) = self.inner.take() {
            self.set_end(BodyEnd::Unread(body));
        }
    }
}

type Result<T> = std::result::Result<T, Problem>;

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

const SMALL_BODY: usize = 1 << 20;

pub(crate) fn json_response(status: StatusCode, body: &Value) -> HttpResponse {
    bytes_response(status, "application/json", Bytes::from(body.to_string()))
}

pub(crate) fn no_content() -> HttpResponse {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    resp
}

pub(crate) fn bytes_response(
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
) -> HttpResponse {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp
}

pub(crate) fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// How much of a body a refusal reads and discards so the connection stays usable.
const DRAIN_BYTES: usize = 1 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(1);

pub(crate) async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> HttpResponse {
    use hyper::body::Body as _;
    let (parts, inner) = req.into_parts();
    let end = (!inner.is_end_stream()).then(|| Arc::new(Mutex::new(BodyEnd::Open)));
    let body = TrackedBody {
        inner: Some(inner),
        end: end.clone(),
    };
    let mut resp = respond(shared, Request::from_parts(parts, body)).await;
    let Some(end) = end else {
        return resp;
    };
    // A response sent with the body unread makes hyper close the connection. A client that
    // reused it raced that close, and its next request failed with a reset. So a short rest
    // is read and dropped, and otherwise the response says the connection closes.
    let left = std::mem::replace(
        &mut *end.lock().unwrap_or_else(|p| p.into_inner()),
        BodyEnd::Open,
    );
    let drained = match left {
        BodyEnd::ReadToEnd => return resp,
        BodyEnd::Unread(body) => {
            let limited = Limited::new(body, DRAIN_BYTES).collect();
            matches!(tokio::time::timeout(DRAIN_TIME, limited).await, Ok(Ok(_)))
        }
        BodyEnd::Open => false,
    };
    if !drained {
        resp.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    resp
}

async fn respond(shared: Arc<Shared>, req: Req) -> HttpResponse {
    let ready = shared.ready.load(std::sync::atomic::Ordering::SeqCst);
    if req.uri().path() == "/healthz" {
        return if ready {
            json_response(StatusCode::OK, &json!({"status": "ok"}))
        } else {
            Problem::unavailable("replaying the write-ahead log", 1).into_response()
        };
    }
    let gzip_ok = accepts_gzip(&req);
    let Some(app) = shared.app.get().filter(|_| ready) else {
        return Problem::unavailable("the server is starting (replaying the write-ahead log)", 1)
            .into_response();
    };
    let resp = match route(app, req).await {
        Ok(r) => r,
        Err(p) => {
            if p.status == StatusCode::SERVICE_UNAVAILABLE {
                Metrics::add(&app.metrics.requests_rejected_overload, 1);
            }
            p.into_response()
        }
    };
    if gzip_ok { compress(resp).await } else { resp }
}

/// Responses over 1000 bytes go out gzip-compressed to clients that accept it.
async fn compress(resp: HttpResponse) -> HttpResponse {
    use http_body_util::BodyExt as _;
    let (mut parts, body) = resp.into_parts();
    let bytes = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(never) => match never {},
    };
    if bytes.len() <= 1000 || parts.headers.contains_key(header::CONTENT_ENCODING) {
        return Response::from_parts(parts, Full::new(bytes));
    }
    match gzip(&bytes) {
        Some(z) => {
            parts.headers.insert(
                header::CONTENT_ENCODING,
                header::HeaderValue::from_static("gzip"),
            );
            parts.headers.remove(header::CONTENT_LENGTH);
            parts.headers.append(
                header::VARY,
                header::HeaderValue::from_static("accept-encoding"),
            );
            Response::from_parts(parts, Full::new(Bytes::from(z)))
        }
        None => Response::from_parts(parts, Full::new(bytes)),
    }
}

async fn route(app: &Arc<App>, req: Req) -> Result<HttpResponse> {
    let path = req.uri().path().to_string();
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method().clone();
    match (segs.as_slice(), &method) {
        (["metrics"], &Method::GET) => Ok(bytes_response(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            Bytes::from(render(app)),
        )),
        (["admin", rest @ ..], _) => {
            check_admin(app, &req)?;
            match (rest, &method) {
                (["organisations"], &Method::POST) => create_org(app, req).await,
                (["organisations"], &Method::GET) => list_orgs(app),
                (["faults"], &Method::POST) => set_faults(app, req).await,
                (["compact"], &Method::POST) => {
                    let stats = app
                        .store
                        .compact_all(meterbase_storage::CompactionMode::Full)
                        .await?;
                    Ok(json_response(
                        StatusCode::OK,
                        &json!({
                            "files_in": stats.files_in,
                            "files_out": stats.files_out,
                            "rows_in": stats.rows_in,
                            "rows_out": stats.rows_out,
                            "files_one_seq": stats.files_one_seq,
                        }),
                    ))
                }
                (["organisations", org, "api_keys"], &Method::POST) => create_key(app, org),
                (["organisations", org, "api_keys"], &Method::GET) => list_keys(app, org),
                (["api_keys", id], &Method::DELETE) => {
                    app.catalog.delete_api_key(id)?;
                    Ok(no_content())
                }
                _ => Err(not_routed(&method, &path)),
            }
        }
        _ => {
            let org = authenticate(app, &req).map_err(|p| {
                // Zuora clients read `success` on every answer of the bulk endpoint.
                if matches!(segs.as_slice(), ["usage", "bulk", _]) {
                    p.with("success", json!(false))
                } else {
                    p
                }
            })?;
            match (segs.as_slice(), &method) {
                (["rawmetrics"], &Method::POST) => create_event_type(app, &org, req).await,
                (["rawmetrics"], &Method::GET) => {
                    let items: Vec<Value> = app
                        .catalog
                        .event_types(&org.id)
                        .iter()
                        .map(def_json)
                        .collect();
                    Ok(json_response(StatusCode::OK, &json!({ "items": items })))
                }
                (["rawmetrics", slug], &Method::GET) => {
                    let def = find_type(app, &org, slug)?;
                    Ok(json_response(StatusCode::OK, &def_json(&def)))
                }
                (["rawmetrics", slug], &Method::PATCH) => {
                    patch_event_type(app, &org, slug, req).await
                }
                (["rawmetrics", slug], &Method::DELETE) => {
                    delete_event_type(app, &org, slug, &req).await
                }
                (["usage", slug], &Method::POST) => ingest(app, &org, slug, req).await,
                (["usage", slug, "csv"], &Method::POST) => {
                    crate::csv_api::handle(app, &org, slug, req).await
                }
                (["usage", slug, "events"], &Method::GET) => {
                    crate::events_api::list(app, &org, slug, &req).await
                }
                (["usage", slug, "events"], &Method::DELETE) => {
                    crate::events_api::delete(app, &org, slug, &req).await
                }
                (["usage", "bulk", slug], &Method::POST) => {
                    Ok(crate::bulk::handle(app, &org, slug, req).await)
                }
                (["sql"], &Method::POST) => sql(app, &org, req).await,
                (["billable_metrics"], &Method::POST) => metrics_api::create(app, &org, req).await,
                (["billable_metrics"], &Method::GET) => metrics_api::list(app, &org),
                (["billable_metrics", slug], &Method::GET) => metrics_api::show(app, &org, slug),
                (["billable_metrics", slug], &Method::DELETE) => {
                    metrics_api::delete(app, &org, slug)
                }
                (["billable_metrics", slug, "usage"], &Method::GET) => {
                    metrics_api::usage(app, &org, slug, &req).await
                }
                _ => Err(not_routed(&method, &path)),
            }
        }
    }
}

fn not_routed(method: &Method, path: &str) -> Problem {
    Problem::not_found(format!("no endpoint {method} {path}"))
}

fn check_admin(app: &App, req: &Req) -> Result<()> {
    let Some(token) = &app.config.admin_token else {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "the admin API is disabled: start the server with --admin-token or METERBASE_ADMIN_TOKEN",
        ));
    };
    let given = bearer(req).ok_or_else(|| {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "admin endpoints need Authorization: Bearer <admin token>",
        )
    })?;
    if !bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
        return Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "wrong admin token",
        ));
    }
    Ok(())
}

fn bearer(req: &Req) -> Option<&str> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn authenticate(app: &App, req: &Req) -> Result<Arc<Organisation>> {
    let unauthorized =
        |detail: &str| Problem::new(StatusCode::UNAUTHORIZED, "Unauthorized", detail);
    let header_key = req
        .headers()
        .get("x-api-key")
        .map(|v| v.to_str().map(str::trim).unwrap_or_default());
    let key = match (header_key, bearer(req)) {
        (Some(a), Some(b)) if a != b => {
            return Err(unauthorized(
                "x-api-key and Authorization: Bearer carry different keys; send one of them",
            ));
        }
        (Some(k), _) | (None, Some(k)) => k,
        (None, None) => {
            return Err(unauthorized(
                "missing API key: send x-api-key or Authorization: Bearer",
            ));
        }
    };
    let org = app
        .catalog
        .authenticate(key)
        .ok_or_else(|| Problem::new(StatusCode::UNAUTHORIZED, "Unauthorized", "unknown API key"))?;
    if let Some(claimed) = req.headers().get("organisation") {
        let claimed = claimed.to_str().unwrap_or_default().trim();
        if claimed != org.id && claimed != org.name {
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!(
                    "the organisation header names {claimed:?}, but the API key belongs to another organisation"
                ),
            ));
        }
    }
    Ok(org)
}

pub(crate) async fn read_body(req: Req, limit: usize) -> Result<Bytes> {
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Payload too large",
                format!("the request body is larger than {limit} bytes"),
            ))
        }
        Err(e) => Err(Problem::bad_request(format!(
            "could not read the request body: {e}"
        ))),
    }
}

pub(crate) fn query_params(req: &Req) -> Vec<(String, String)> {
    req.uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

pub(crate) fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T> {
    serde_json::from_slice(body)
        .map_err(|e| Problem::bad_request(format!("invalid JSON body: {e}")))
}

// ---- admin ----------------------------------------------------------------------------------

/// `POST /admin/faults` (only with `--fault-injection`): sets what the object store and the
/// write-ahead log do wrong. Absent fields are left as they are.
async fn set_faults(app: &App, req: Req) -> Result<HttpResponse> {
    use std::sync::atomic::Ordering::SeqCst;
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        outage: Option<bool>,
        fail_puts: Option<usize>,
        lose_put_responses: Option<usize>,
        latency_ms: Option<u64>,
        timeout_puts: Option<usize>,
        timeout_ms: Option<u64>,
        wal_sync_failures: Option<usize>,
    }
    let Some(faults) = &app.faults else {
        return Err(Problem::not_found(
            "fault injection is off (start the server with --fault-injection)",
        ));
    };
    let body = read_body(req, SMALL_BODY).await?;
    let b: Body = parse_json(&body)?;
    if let Some(v) = b.outage {
        faults.outage.store(v, SeqCst);
    }
    if let Some(v) = b.fail_puts {
        faults.fail_puts.store(v, SeqCst);
    }
    if let Some(v) = b.lose_put_responses {
        faults.lose_put_responses.store(v, SeqCst);
    }
    if let Some(v) = b.latency_ms {
        faults.latency_ms.store(v, SeqCst);
    }
    if let Some(v) = b.timeout_puts {
        faults.timeout_puts.store(v, SeqCst);
    }
    if let Some(v) = b.timeout_ms {
        faults.timeout_ms.store(v, SeqCst);
    }
    if let Some(n) = b.wal_sync_failures
        && let Some(fp) = app.store.wal_failpoint()
    {
        fp.fail_next(n);
    }
    Ok(no_content())
}

async fn create_org(app: &App, req: Req) -> Result<HttpResponse> {
    #[derive(Deserialize)]
    struct Body {
        name: String,
    }
    let body = read_body(req, SMALL_BODY).await?;
    let b: Body = parse_json(&body)?;
    let (org, key) = app.catalog.create_organisation(&b.name)?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"id": org.id, "name": org.name, "api_key": key.key, "api_key_id": key.id}),
    ))
}

fn list_orgs(app: &App) -> Result<HttpResponse> {
    let items: Vec<Value> = app
        .catalog
        .organisations()
        .iter()
        .map(|o| json!({"id": o.id, "name": o.name, "created_at": o.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)}))
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "items": items })))
}

fn create_key(app: &App, org: &str) -> Result<HttpResponse> {
    let key = app.catalog.create_api_key(org)?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"id": key.id, "api_key": key.key}),
    ))
}

/// Key ids and creation times, never the keys: enough to revoke one.
fn list_keys(app: &App, org: &str) -> Result<HttpResponse> {
    let items: Vec<Value> = app
        .catalog
        .api_keys(org)?
        .iter()
        .map(|k| json!({"id": k.id, "created_at": k.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)}))
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "items": items })))
}

// ---- event types ----------------------------------------------------------------------------

fn def_json(def: &EventTypeDef) -> Value {
    let mut v = serde_json::to_value(def).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("endpoint".into(), json!(format!("/usage/{}", def.api_slug)));
        m.insert(
            "created_at".into(),
            json!(
                def.created_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        );
    }
    v
}

pub(crate) fn find_type(app: &App, org: &Organisation, slug: &str) -> Result<EventTypeDef> {
    app.catalog
        .event_type(&org.id, &slug.to_ascii_lowercase())
        .ok_or_else(|| Problem::not_found(format!("no event type with api_slug {slug:?}")))
}

async fn create_event_type(app: &App, org: &Organisation, req: Req) -> Result<HttpResponse> {
    let body = read_body(req, SMALL_BODY).await?;
    let spec: EventTypeSpec = parse_json(&body)?;
    let def = EventTypeDef::from_spec(
        spec,
        uuid::Uuid::new_v4().simple().to_string(),
        chrono::Utc::now(),
    )?;
    app.catalog.create_event_type(&org.id, def.clone())?;
    app.store.create_table(&org.id, def.clone())?;
    Ok(json_response(StatusCode::CREATED, &def_json(&def)))
}

async fn patch_event_type(
    app: &App,
    org: &Organisation,
    slug: &str,
    req: Req,
) -> Result<HttpResponse> {
    let def = find_type(app, org, slug)?;
    let body = read_body(req, SMALL_BODY).await?;
    let patch: Map<String, Value> = parse_json(&body)?;
    let next = def.patched(&patch)?;
    app.catalog.replace_event_type(&org.id, next.clone())?;
    if let Some(t) = app.store.table(&org.id, &next.id) {
        t.set_def(next.clone())?;
    }
    Ok(json_response(StatusCode::OK, &def_json(&next)))
}

async fn delete_event_type(
    app: &App,
    org: &Organisation,
    slug: &str,
    req: &Req,
) -> Result<HttpResponse> {
    let def = find_type(app, org, slug)?;
    let force = param(&query_params(req), "force") == Some("true");
    if let Some(t) = app.store.table(&org.id, &def.id)
        && t.holds_rows()
        && !force
    {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "event type {:?} holds events; DELETE with ?force=true to delete them too",
                def.api_slug
            ),
        ));
    }
    app.catalog.delete_event_type(&org.id, &def.api_slug)?;
    app.store
        .drop_table(&org.id, &def.id, &def.api_slug)
        .await?;
    Ok(no_content())
}

// ---- ingest ---------------------------------------------------------------------------------

fn input_format(req: &Req) -> Result<InputFormat> {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        // curl sends form-urlencoded when -d is given without -H 'Content-Type'; the body is
        // still the JSON the user typed.
        "application/json" | "" | "application/x-www-form-urlencoded" | "text/plain" => {
            Ok(InputFormat::Json)
        }
        "application/x-ndjson"
        | "application/jsonl"
        | "application/ndjson"
        | "application/jsonlines" => Ok(InputFormat::Ndjson),
        other => Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported media type",
            format!(
                "Content-Type {other:?} is not accepted here: use application/json or application/x-ndjson"
            ),
        )),
    }
}

async fn ingest(app: &App, org: &Organisation, slug: &str, req: Req) -> Result<HttpResponse> {
    let n = ingest_events(app, org, slug, req, false).await?;
    // Written directly: every single-event POST answers this, and a `json!` map costs several
    // allocations.
    Ok(bytes_response(
        StatusCode::OK,
        "application/json",
        Bytes::from(format!("{{\"accepted\":{n}}}")),
    ))
}

/// Validates, logs and buffers the events of one request (all or nothing); the number of
/// events accepted. `bulk` reads the Zuora-compatible shapes of `/usage/bulk/{slug}`.
pub(crate) async fn ingest_events(
    app: &App,
    org: &Organisation,
    slug: &str,
    req: Req,
    bulk: bool,
) -> Result<usize> {
    let not_found = || Problem::not_found(format!("no event type with api_slug {slug:?}"));
    let type_id = app
        .catalog
        .event_type_id(&org.id, slug)
        .ok_or_else(not_found)?;
    let table = app.store.table(&org.id, &type_id).ok_or_else(not_found)?;
    // The table's definition is the one its schema follows, so the rows decoded against it
    // always fit the buffer.
    let def = table.def();
    let format = if bulk {
        InputFormat::Json
    } else {
        input_format(&req)?
    };
    let encoding = request_encoding(&req)?;
    let limit = app.config.max_body_bytes;
    let body = read_body(req, limit).await?;
    let decoder = app.decoders.get(&def)?;
    let limits = DecodeLimits {
        max_events: app.config.max_events,
        max_errors: 100,
        now: now_micros(),
        max_future: app.config.max_future.as_micros() as i64,
    };
    let big = body.len() > 256 << 10;
    let work = move || -> Result<(usize, DecodeOutcome)> {
        let body = inflate(body, encoding, limit)?;
        let len = body.len();
        if bulk {
            let ndjson = crate::bulk::to_ndjson(&body)?;
            let outcome = match decoder.decode(&ndjson, InputFormat::Ndjson, limits) {
                DecodeOutcome::Invalid {
                    mut errors,
                    invalid_events,
                    events,
                } => {
                    // Bulk bodies are JSON: report positions as array indexes.
                    for e in &mut errors {
                        e.index = e.line.take().map(|l| l - 1);
                    }
                    DecodeOutcome::Invalid {
                        errors,
                        invalid_events,
                        events,
                    }
                }
                other => other,
            };
            return Ok((len, outcome));
        }
        Ok((len, decoder.decode(&body, format, limits)))
    };
    let (body_len, outcome) = if encoding != Encoding::Identity || bulk || big {
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| Problem::internal(format!("decoder task failed: {e}")))??
    } else {
        work()?
    };
    match outcome {
        DecodeOutcome::Valid(batch) => {
            let n = batch.num_rows();
            if n > 0 {
                app.store.append(&table, batch).await?;
            }
            Metrics::add(&app.metrics.events_ingested, n as u64);
            Metrics::add(&app.metrics.bytes_ingested, body_len as u64);
            Ok(n)
        }
        DecodeOutcome::Invalid {
            errors,
            invalid_events,
            events,
        } => {
            Metrics::add(&app.metrics.events_rejected, invalid_events as u64);
            let detail = if events == 0 {
                "the request body is not valid; nothing was stored".to_string()
            } else {
                format!(
                    "{invalid_events} of {events} events are invalid; nothing from this request was stored"
                )
            };
            Err(
                Problem::new(StatusCode::BAD_REQUEST, "Invalid events", detail)
                    .with_event_errors(&errors)
                    .with("invalid_events", json!(invalid_events)),
            )
        }
        DecodeOutcome::TooManyEvents { limit } => Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Payload too large",
            format!("more than {limit} events in one request; split it into smaller requests"),
        )),
    }
}

/// An `as_of` instant, refused when older than the history kept (`--history-retention-days`):
/// versions replaced or deleted longer ago may already be gone, so the answer could be wrong.
pub(crate) fn parse_as_of(app: &App, text: &str) -> Result<i64> {
    let t = parse_instant_utc(text)
        .map_err(|e| Problem::bad_request(format!("as_of {text:?}: {e}")))?;
    let retention = app.config.compaction.history_retention;
    let oldest = now_micros() - retention.as_micros() as i64;
    if t < oldest {
        return Err(Problem::bad_request(format!(
            "as_of {text:?} is older than the history kept ({} days, --history-retention-days)",
            retention.as_secs() / 86_400
        )));
    }
    Ok(t)
}

/// One consistent snapshot of each of the organisation's tables.
pub(crate) fn snapshots(
    app: &App,
    org: &Organisation,
) -> Result<Vec<meterbase_storage::TableSnapshot>> {
    Ok(app
        .store
        .org_tables(&org.id)
        .iter()
        .map(|t| t.snapshot())
        .collect::<std::result::Result<Vec<_>, _>>()?)
}

// ---- SQL ------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlRequest {
    sql: String,
    #[serde(default)]
    params: Map<String, Value>,
    #[serde(default)]
    as_of: Option<String>,
}

fn scalar_param(name: &str, v: &Value) -> Result<ScalarValue> {
    Ok(match v {
        Value::Null => ScalarValue::Null,
        Value::Bool(b) => ScalarValue::Boolean(Some(*b)),
        Value::String(s) => ScalarValue::Utf8(Some(s.clone())),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                ScalarValue::Int64(Some(i))
            } else if let Some(u) = n.as_u64() {
                ScalarValue::UInt64(Some(u))
            } else {
                ScalarValue::Float64(n.as_f64())
            }
        }
        _ => {
            return Err(Problem::bad_request(format!(
                "parameter {name:?} must be a string, number, boolean or null"
            )));
        }
    })
}

enum OutputFormat {
    Json,
    Ndjson,
    Csv,
    Arrow,
    Parquet,
}

fn output_format(req: &Req) -> Result<OutputFormat> {
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    for part in accept.split(',') {
        let mime = part
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match mime.as_str() {
            "application/json" | "*/*" | "application/*" | "" => return Ok(OutputFormat::Json),
            "application/x-ndjson" | "application/jsonl" | "application/ndjson" => {
                return Ok(OutputFormat::Ndjson);
            }
            "text/csv" => return Ok(OutputFormat::Csv),
            "application/vnd.apache.arrow.stream" => return Ok(OutputFormat::Arrow),
            "application/vnd.apache.parquet" => return Ok(OutputFormat::Parquet),
            _ => {}
        }
    }
    Err(Problem::new(
        StatusCode::NOT_ACCEPTABLE,
        "Not acceptable",
        "supported results: application/json, application/x-ndjson, text/csv, application/vnd.apache.arrow.stream, application/vnd.apache.parquet",
    ))
}

async fn sql(app: &App, org: &Organisation, req: Req) -> Result<HttpResponse> {
    let format = output_format(&req)?;
    let body = read_body(req, SMALL_BODY).await?;
    let r: SqlRequest = parse_json(&body)?;
    let as_of = r
        .as_of
        .as_deref()
        .map(|t| parse_as_of(app, t))
        .transpose()?;
    let mut params = HashMap::new();
    for (k, v) in &r.params {
        params.insert(k.clone(), scalar_param(k, v)?);
    }
    let tables = snapshots(app, org)?;
    let started = Instant::now();
    Metrics::add(&app.metrics.queries, 1);
    let result = app.engine.execute(tables, r.sql, params, as_of).await;
    Metrics::add(
        &app.metrics.query_micros,
        started.elapsed().as_micros() as u64,
    );
    let out = result.inspect_err(|_| Metrics::add(&app.metrics.query_errors, 1))?;
    use meterbase_query::format as f;
    Ok(match format {
        OutputFormat::Json => bytes_response(
            StatusCode::OK,
            "application/json",
            Bytes::from(f::to_json(&out.schema, &out.batches)),
        ),
        OutputFormat::Ndjson => bytes_response(
            StatusCode::OK,
            "application/x-ndjson",
            Bytes::from(f::to_ndjson(&out.schema, &out.batches)),
        ),
        OutputFormat::Csv => bytes_response(
            StatusCode::OK,
            "text/csv",
            Bytes::from(f::to_csv(&out.schema, &out.batches)?),
        ),
        OutputFormat::Arrow => bytes_response(
            StatusCode::OK,
            "application/vnd.apache.arrow.stream",
            Bytes::from(f::to_arrow_ipc(&out.schema, &out.batches)?),
        ),
        OutputFormat::Parquet => bytes_response(
            StatusCode::OK,
            "application/vnd.apache.parquet",
            Bytes::from(f::to_parquet(&out.schema, &out.batches)?),
        ),
    })
}
