//! `GET /ui/…`: the web console, files embedded in the binary (`crates/server/console/`), no
//! key needed for them: the console signs in with an API key and then speaks the same HTTP
//! API as any client. `GET /` redirects here. With `METERBASE_CONSOLE_DIR` set, the files
//! are read from that directory instead (working on the console without rebuilding).

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use bytes::Bytes;
use include_dir::{Dir, include_dir};

use crate::problem::Problem;

static CONSOLE: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/console");

/// Scripts, styles and data only from this origin, never inline; never framed.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'";

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "json" => "application/json",
        "txt" | "md" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn file(path: &str) -> Option<Bytes> {
    if let Some(dir) = std::env::var_os("METERBASE_CONSOLE_DIR") {
        // Refuses `..`: only files under the directory.
        if path.split('/').any(|p| p == "..") {
            return None;
        }
        return std::fs::read(std::path::Path::new(&dir).join(path))
            .ok()
            .map(Bytes::from);
    }
    CONSOLE
        .get_file(path)
        .map(|f| Bytes::from_static(f.contents()))
}

fn serve(path: &str) -> Response {
    let path = if path.is_empty() || path.ends_with('/') {
        format!("{path}index.html")
    } else {
        path.to_string()
    };
    let Some(bytes) = file(&path) else {
        return Problem::not_found(format!("no console file {path:?}")).into_response();
    };
    let mut resp = (StatusCode::OK, bytes).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(&path)),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

pub(crate) async fn index() -> Response {
    serve("")
}

pub(crate) async fn asset(Path(path): Path<String>) -> Response {
    serve(&path)
}

pub(crate) async fn root() -> Redirect {
    Redirect::to("/ui/")
}
