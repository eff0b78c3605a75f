//! The route table: every path of the API, its method and handler, and the layers around
//! them. Nothing else lives here.

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::handler::Handler;
use axum::response::{IntoResponse, Response};
use axum::routing::{self, MethodRouter};
use hyper::Method;
use tower::ServiceBuilder;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::SizeAbove;
use tower_http::normalize_path::{NormalizePath, NormalizePathLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::api::{
    admin, billable_metrics, console, csv, discovery, event_types, events, explain, ingest,
    operations, organisation, reconcile, sql,
};
use crate::app::Shared;
use crate::layers::{drain_unread, log_response, record_metrics, request_span};
use crate::problem::Problem;

async fn not_routed(req: Request) -> Response {
    Problem::not_found(format!("no endpoint {} {}", req.method(), req.uri().path())).into_response()
}

async fn method_not_allowed(req: Request) -> Response {
    Problem::new(
        hyper::StatusCode::METHOD_NOT_ALLOWED,
        "Method not allowed",
        format!(
            "{} {} is not an endpoint of this path",
            req.method(),
            req.uri().path()
        ),
    )
    .into_response()
}

/// One endpoint of the API. The router is built from `endpoints()` and nothing else, and the
/// route-coverage test compares the same table with the OpenAPI document, so a route cannot
/// exist without being documented (nor the reverse).
pub(crate) struct Endpoint {
    /// Read by the route-coverage test; the router takes it from `handler`.
    #[cfg_attr(not(test), allow(dead_code))]
    pub method: Method,
    pub path: &'static str,
    handler: MethodRouter<Arc<Shared>>,
}

macro_rules! endpoint_fn {
    ($name:ident, $method:ident) => {
        fn $name<H, T>(path: &'static str, handler: H) -> Endpoint
        where
            H: Handler<T, Arc<Shared>>,
            T: 'static,
        {
            Endpoint {
                method: Method::$method,
                path,
                handler: routing::$name(handler),
            }
        }
    };
}
endpoint_fn!(get, GET);
endpoint_fn!(post, POST);
endpoint_fn!(put, PUT);
endpoint_fn!(patch, PATCH);
endpoint_fn!(delete, DELETE);

/// Every endpoint: method, path (axum's syntax), handler.
pub(crate) fn endpoints() -> Vec<Endpoint> {
    vec![
        get("/", console::root),
        // Trailing slashes are cut before routing, so `/ui/` arrives as `/ui`.
        get("/ui", console::index),
        get("/ui/{*path}", console::asset),
        get("/openapi.json", discovery::openapi),
        get("/healthz", operations::healthz),
        get("/metrics", operations::metrics),
        get("/organisation", organisation::show),
        post("/admin/organisations", admin::create_organisation),
        get("/admin/organisations", admin::list_organisations),
        post("/admin/organisations/{org}/api_keys", admin::create_key),
        get("/admin/organisations/{org}/api_keys", admin::list_keys),
        delete("/admin/api_keys/{id}", admin::delete_key),
        post("/admin/compact", admin::compact),
        post("/admin/open_tables/publish", admin::publish_open_tables),
        post("/admin/faults", admin::set_faults),
        post("/rawmetrics", event_types::create),
        get("/rawmetrics", event_types::list),
        get("/rawmetrics/{slug}", event_types::show),
        patch("/rawmetrics/{slug}", event_types::patch),
        delete("/rawmetrics/{slug}", event_types::delete),
        get("/rawmetrics/{slug}/stats", event_types::stats),
        post("/usage/{slug}", ingest::ingest),
        post("/usage/bulk/{slug}", ingest::bulk),
        post("/usage/{slug}/csv", csv::upload),
        get("/usage/{slug}/events", events::list),
        delete("/usage/{slug}/events", events::delete),
        get("/usage/{slug}/reconcile", reconcile::get),
        post("/sql", sql::query),
        post("/billable_metrics", billable_metrics::create),
        get("/billable_metrics", billable_metrics::list),
        get("/billable_metrics/{slug}", billable_metrics::show),
        put("/billable_metrics/{slug}", billable_metrics::replace),
        delete("/billable_metrics/{slug}", billable_metrics::delete),
        get(
            "/billable_metrics/{slug}/versions",
            billable_metrics::versions,
        ),
        post(
            "/billable_metrics/{slug}/preview",
            billable_metrics::preview,
        ),
        post("/billable_metrics/preview", billable_metrics::preview_new),
        get("/billable_metrics/{slug}/usage", billable_metrics::usage),
        get("/billable_metrics/{slug}/usage/explain", explain::explain),
    ]
}

/// The whole HTTP API. Trailing slashes are ignored (`/rawmetrics/` is `/rawmetrics`).
pub(crate) fn router(shared: Arc<Shared>) -> NormalizePath<Router> {
    // Two endpoints of one path merge into one method router.
    let api = endpoints()
        .into_iter()
        .fold(Router::new(), |r, e| r.route(e.path, e.handler))
        .fallback(not_routed)
        .method_not_allowed_fallback(method_not_allowed);
    // Outermost first. Not from tower_http, and why: body limits are counted on the inflated
    // bytes while inflating (`encoding`), which its limit layer cannot do for a compressed
    // stream; a global timeout would cut multi-GiB CSV uploads, and everything long has its
    // own cap (queries, buffer waits, header reads).
    let layers = ServiceBuilder::new()
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_request(())
                .on_response(log_response)
                .on_failure(()),
        )
        .layer(
            CompressionLayer::new()
                .gzip(true)
                .quality(tower_http::CompressionLevel::Fastest)
                // The contract: responses over 1000 bytes.
                .compress_when(SizeAbove::new(1001)),
        )
        .layer(axum::middleware::from_fn_with_state(
            shared.metrics.clone(),
            record_metrics,
        ))
        .layer(axum::middleware::from_fn(drain_unread));
    let router = api.layer(layers).with_state(shared);
    ServiceBuilder::new()
        .layer(NormalizePathLayer::trim_trailing_slash())
        .service(router)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// A route in the router but not in the OpenAPI document, or the reverse, fails here.
    #[test]
    fn router_and_openapi_document_have_the_same_operations() {
        let routed: Vec<(String, String)> = endpoints()
            .iter()
            .map(|e| {
                // axum's catch-all `{*name}` is OpenAPI's `{name}`.
                (e.method.to_string(), e.path.replace("{*", "{"))
            })
            .collect();
        let documented = crate::openapi::operation_keys();
        let routed_set: BTreeSet<_> = routed.iter().cloned().collect();
        let documented_set: BTreeSet<_> = documented.iter().cloned().collect();
        assert_eq!(routed.len(), routed_set.len(), "a route is listed twice");
        assert_eq!(
            documented.len(),
            documented_set.len(),
            "an operation is documented twice"
        );
        let undocumented: Vec<_> = routed_set.difference(&documented_set).collect();
        let unrouted: Vec<_> = documented_set.difference(&routed_set).collect();
        assert!(
            undocumented.is_empty() && unrouted.is_empty(),
            "routes missing from the OpenAPI document (crates/server/src/openapi/paths.rs): {undocumented:?}; documented operations the router lacks: {unrouted:?}"
        );
    }
}
