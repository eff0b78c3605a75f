//! Who is asking: an organisation by its API key (`x-api-key` or `Authorization: Bearer`),
//! or the operator by the admin token.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use hyper::http::request::Parts;
use hyper::{HeaderMap, StatusCode, header};
use meterbase_catalog::Organisation;
use subtle::ConstantTimeEq;

use crate::app::{App, Ready, Shared};
use crate::http::Result;
use crate::problem::Problem;

/// A request of one organisation, with the app it is served from.
pub(crate) struct Tenant {
    pub app: Arc<App>,
    pub org: Arc<Organisation>,
}

/// A request made with the admin token.
pub(crate) struct Admin(pub Arc<App>);

fn unauthorized(detail: &str) -> Problem {
    Problem::new(StatusCode::UNAUTHORIZED, "Unauthorized", detail)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The organisation a request's key belongs to; an `organisation` header must name it.
fn authenticate(app: &App, headers: &HeaderMap) -> Result<Arc<Organisation>> {
    let header_key = headers
        .get("x-api-key")
        .map(|v| v.to_str().map(str::trim).unwrap_or_default());
    let key = match (header_key, bearer(headers)) {
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
        .ok_or_else(|| unauthorized("unknown API key"))?;
    if let Some(claimed) = headers.get("organisation") {
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

impl FromRequestParts<Arc<Shared>> for Tenant {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, shared: &Arc<Shared>) -> Result<Tenant> {
        let Ready(app) = Ready::from_request_parts(parts, shared).await?;
        let org = authenticate(&app, &parts.headers)?;
        // The request log names the organisation.
        tracing::Span::current().record("org", org.id.as_str());
        Ok(Tenant { app, org })
    }
}

impl FromRequestParts<Arc<Shared>> for Admin {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, shared: &Arc<Shared>) -> Result<Admin> {
        let Ready(app) = Ready::from_request_parts(parts, shared).await?;
        let Some(token) = &app.config.admin_token else {
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                "the admin API is disabled: start the server with --admin-token or METERBASE_ADMIN_TOKEN",
            ));
        };
        let given = bearer(&parts.headers).ok_or_else(|| {
            unauthorized("admin endpoints need Authorization: Bearer <admin token>")
        })?;
        if !bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
            return Err(unauthorized("wrong admin token"));
        }
        tracing::Span::current().record("org", "admin");
        Ok(Admin(app))
    }
}
