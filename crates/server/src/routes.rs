//! The route table: every path of the API, its method and handler, and the layers around
//! them. Nothing else lives here.

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower::ServiceBuilder;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::SizeAbove;
use tower_http::normalize_path::{NormalizePath, NormalizePathLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::api::{
    admin, billable_metrics, console, csv, event_types, events, explain, ingest, operations,
    organisation, reconcile, sql,
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

/// The whole HTTP API. Trailing slashes are ignored (`/rawmetrics/` is `/rawmetrics`).
pub(crate) fn router(shared: Arc<Shared>) -> NormalizePath<Router> {
    let api = Router::new()
        .route("/", get(console::root))
        // Trailing slashes are cut before routing, so `/ui/` arrives as `/ui`.
        .route("/ui", get(console::index))
        .route("/ui/{*path}", get(console::asset))
        .route("/healthz", get(operations::healthz))
        .route("/organisation", get(organisation::show))
        .route("/metrics", get(operations::metrics))
        .route(
            "/admin/organisations",
            post(admin::create_organisation).get(admin::list_organisations),
        )
        .route(
            "/admin/organisations/{org}/api_keys",
            post(admin::create_key).get(admin::list_keys),
        )
        .route(
            "/admin/api_keys/{id}",
            axum::routing::delete(admin::delete_key),
        )
        .route("/admin/compact", post(admin::compact))
        .route("/admin/faults", post(admin::set_faults))
        .route(
            "/rawmetrics",
            post(event_types::create).get(event_types::list),
        )
        .route(
            "/rawmetrics/{slug}",
            get(event_types::show)
                .patch(event_types::patch)
                .delete(event_types::delete),
        )
        .route("/rawmetrics/{slug}/stats", get(event_types::stats))
        .route("/usage/{slug}", post(ingest::ingest))
        .route("/usage/bulk/{slug}", post(ingest::bulk))
        .route("/usage/{slug}/csv", post(csv::upload))
        .route(
            "/usage/{slug}/events",
            get(events::list).delete(events::delete),
        )
        .route("/usage/{slug}/reconcile", get(reconcile::get))
        .route("/sql", post(sql::query))
        .route(
            "/billable_metrics",
            post(billable_metrics::create).get(billable_metrics::list),
        )
        .route(
            "/billable_metrics/{slug}",
            get(billable_metrics::show)
                .put(billable_metrics::replace)
                .delete(billable_metrics::delete),
        )
        .route(
            "/billable_metrics/{slug}/versions",
            get(billable_metrics::versions),
        )
        .route(
            "/billable_metrics/{slug}/preview",
            post(billable_metrics::preview),
        )
        .route(
            "/billable_metrics/preview",
            post(billable_metrics::preview_new),
        )
        .route(
            "/billable_metrics/{slug}/usage",
            get(billable_metrics::usage),
        )
        .route(
            "/billable_metrics/{slug}/usage/explain",
            get(explain::explain),
        )
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
