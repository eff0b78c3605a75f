//! `GET /openapi.json`: the OpenAPI 3.1 document of this API, no key needed (a client
//! generator must read it before it has one).

use axum::response::Response;
use hyper::StatusCode;

use crate::http::bytes_response;
use crate::openapi;

pub(crate) async fn openapi() -> Response {
    bytes_response(
        StatusCode::OK,
        "application/json",
        openapi::document_bytes(),
    )
}
