//! Middleware every request passes, around the route table: the request log (one line per
//! request, through `tower_http`'s trace layer), request metrics, and draining the body a
//! refusal left unread. Request ids and response compression are `tower_http` layers as they
//! come (`routes`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Body as _;
use hyper::header;
use tracing::{Span, error, info};

use crate::problem::ServerFault;
use crate::prometheus::Metrics;

/// How a request with no matching route is named in logs and metrics.
const UNMATCHED: &str = "unmatched";

fn route_of<B>(req: &hyper::Request<B>) -> String {
    req.extensions()
        .get::<MatchedPath>()
        .map_or_else(|| UNMATCHED.to_string(), |p| p.as_str().to_string())
}

/// The span of one request: what the log line says about it. `org` is filled in by
/// authentication.
pub(crate) fn request_span<B>(req: &hyper::Request<B>) -> Span {
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let bytes_in = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::info_span!(
        "request",
        method = %req.method(),
        route = %route_of(req),
        request_id,
        org = tracing::field::Empty,
        bytes_in,
    )
}

/// One line per request at info; a 5xx at error, with its cause.
pub(crate) fn log_response<B: hyper::body::Body>(
    resp: &hyper::Response<B>,
    latency: Duration,
    _: &Span,
) {
    let status = resp.status().as_u16();
    let ms = latency.as_secs_f64() * 1e3;
    let bytes_out = resp.body().size_hint().exact();
    match resp.extensions().get::<ServerFault>() {
        Some(fault) => error!(status, ms, bytes_out, cause = %fault.0, "request failed"),
        None if resp.status().is_server_error() => error!(status, ms, bytes_out, "request failed"),
        None => info!(status, ms, bytes_out, "request"),
    }
}

/// Counts the request by route template, method and status, and its latency by route.
pub(crate) async fn record_metrics(
    State(metrics): State<Arc<Metrics>>,
    req: Request,
    next: Next,
) -> Response {
    let route = route_of(&req);
    let method = req.method().clone();
    let started = Instant::now();
    let resp = next.run(req).await;
    metrics.record_request(
        &route,
        method.as_str(),
        resp.status().as_u16(),
        started.elapsed(),
    );
    resp
}

/// A request body that records how it ended: read to its end, or dropped unfinished by a
/// handler (a refusal decided from the headers alone), which hands it back.
struct TrackedBody {
    inner: Option<Body>,
    end: Arc<Mutex<BodyEnd>>,
}

enum BodyEnd {
    /// Still being read, or held by a task that outlived the handler.
    Open,
    ReadToEnd,
    Unread(Body),
}

impl TrackedBody {
    fn set_end(&self, end: BodyEnd) {
        *self.end.lock().unwrap_or_else(|p| p.into_inner()) = end;
    }
}

impl hyper::body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, axum::Error>>> {
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

/// How much of a body a refusal reads and discards so the connection stays usable.
const DRAIN_BYTES: usize = 1 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(1);

/// A response sent with the request body unread makes hyper close the connection, and a
/// client that reused it raced that close (its next request failed with a reset). So a short
/// rest is read and dropped, and otherwise the response says the connection closes. (Not a
/// `tower_http` layer: none drains a body a handler refused.)
pub(crate) async fn drain_unread(req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    if body.is_end_stream() {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let end = Arc::new(Mutex::new(BodyEnd::Open));
    let tracked = TrackedBody {
        inner: Some(body),
        end: end.clone(),
    };
    let mut resp = next
        .run(Request::from_parts(parts, Body::new(tracked)))
        .await;
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
