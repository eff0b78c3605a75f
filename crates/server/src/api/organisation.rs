//! `GET /organisation`: the organisation the caller's key belongs to (how a client, the
//! console among them, learns whose data it is looking at).

use axum::response::Response;
use hyper::StatusCode;
use serde_json::json;

use crate::auth::Tenant;
use crate::http::{Result, json_response};

pub(crate) async fn show(Tenant { org, .. }: Tenant) -> Result<Response> {
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "id": org.id,
            "name": org.name,
            "created_at": org.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }),
    ))
}
