//! `GET /healthz` and `GET /metrics`: no key needed, answered also while replaying.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hyper::StatusCode;
use serde_json::json;

use crate::app::Shared;
use crate::http::{bytes_response, json_response};
use crate::problem::Problem;

/// `{"status":"ok","queries":{…}}` once replay is done; the query load says whether billing
/// queries would start now.
pub(crate) async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    if let Some(app) = shared.ready_app() {
        let load = app.engine.load();
        json_response(
            StatusCode::OK,
            &json!({"status": "ok", "queries": {
                "running": load.running,
                "queued": load.queued,
                "refused": load.refused,
                "cancelled": shared.metrics.queries_cancelled_total(),
            }}),
        )
    } else {
        Problem::unavailable("replaying the write-ahead log", 1).into_response()
    }
}

pub(crate) async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let app = shared.ready_app();
    let load = app.map(|app| app.engine.load());
    let cache = app.and_then(|app| app.engine.cache_stats());
    let partials = app.and_then(|app| app.engine.partials_bytes());
    let store = app.map(|app| app.store.as_ref());
    bytes_response(
        StatusCode::OK,
        "text/plain; version=0.0.4",
        Bytes::from(shared.metrics.render(load, cache, partials, store)),
    )
}
