//! The small HTTP toolkit every API module uses: responses, query parameters, bodies read
//! whole under a limit, JSON bodies.

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::http::request::Parts;
use hyper::{StatusCode, header};
use meterbase_schema::CsvOptions;
use serde::Deserialize;
use serde_json::Value;

use crate::problem::Problem;

pub(crate) type Result<T> = std::result::Result<T, Problem>;

/// Bodies of the small JSON endpoints (definitions, SQL, admin).
pub(crate) const SMALL_BODY: usize = 1 << 20;

pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    bytes_response(status, "application/json", Bytes::from(body.to_string()))
}

pub(crate) fn bytes_response(
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(content_type),
        )],
        body,
    )
        .into_response()
}

pub(crate) fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// The query string as name/value pairs, in order, repeats kept (`map.FIELD=…` repeats).
pub(crate) struct Params(pub Vec<(String, String)>);

impl Params {
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// `true`/`1`/empty or `false`/`0`; absent is false.
    pub(crate) fn flag(&self, name: &str) -> Result<bool> {
        match self.get(name) {
            None | Some("false") | Some("0") => Ok(false),
            Some("true") | Some("1") | Some("") => Ok(true),
            Some(other) => Err(Problem::bad_request(format!(
                "{name}={other:?}: use true or false"
            ))),
        }
    }

    /// How columns are matched to the event type (`map.FIELD=COLUMN`, repeatable, and
    /// `ignore_unknown_columns`), for CSV, Arrow and Parquet bodies alike; any other parameter
    /// but those in `also` is refused.
    pub(crate) fn column_options(&self, also: &[&str]) -> Result<CsvOptions> {
        let mut field_columns = Vec::new();
        for (k, v) in &self.0 {
            if let Some(field) = k.strip_prefix("map.") {
                field_columns.push((field.to_string(), v.clone()));
            } else if k != "ignore_unknown_columns" && !also.contains(&k.as_str()) {
                let also: String = also.iter().map(|a| format!("{a}, ")).collect();
                return Err(Problem::bad_request(format!(
                    "unknown query parameter {k:?}: use {also}ignore_unknown_columns or map.FIELD=COLUMN"
                )));
            }
        }
        Ok(CsvOptions {
            field_columns,
            ignore_unknown_columns: self.flag("ignore_unknown_columns")?,
        })
    }

    /// Refuses any parameter outside `known`, naming what is accepted.
    pub(crate) fn only(&self, known: &[&str]) -> Result<()> {
        match self.0.iter().find(|(k, _)| !known.contains(&k.as_str())) {
            None => Ok(()),
            Some((k, _)) => Err(Problem::bad_request(format!(
                "unknown query parameter {k:?}: use {}",
                known.join(", ")
            ))),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _: &S,
    ) -> std::result::Result<Self, Self::Rejection> {
        Ok(Params(
            parts
                .uri
                .query()
                .map(|q| {
                    url::form_urlencoded::parse(q.as_bytes())
                        .into_owned()
                        .collect()
                })
                .unwrap_or_default(),
        ))
    }
}

/// The whole body, refused (413) past `limit` bytes.
pub(crate) async fn read_body(body: Body, limit: usize) -> Result<Bytes> {
    match Limited::new(body, limit).collect().await {
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

pub(crate) fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T> {
    serde_json::from_slice(body)
        .map_err(|e| Problem::bad_request(format!("invalid JSON body: {e}")))
}

/// A small JSON body read whole and parsed.
pub(crate) async fn json_body<T: for<'a> Deserialize<'a>>(body: Body) -> Result<T> {
    let bytes = read_body(body, SMALL_BODY).await?;
    parse_json(&bytes)
}

/// The MIME type of a header (`text/csv; charset=utf-8` → `text/csv`), lower-cased.
pub(crate) fn mime(headers: &header::HeaderMap, name: header::HeaderName, default: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or(default)
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_keep_repeats_and_refuse_strangers() {
        let p = Params(vec![
            ("map.a".into(), "x".into()),
            ("map.a".into(), "y".into()),
            ("dry_run".into(), "".into()),
        ]);
        assert_eq!(p.get("map.a"), Some("x"));
        assert!(p.flag("dry_run").unwrap());
        assert!(!p.flag("absent").unwrap());
        assert!(p.only(&["dry_run"]).is_err());
        let options = p.column_options(&["dry_run"]).unwrap();
        assert_eq!(options.field_columns.len(), 2);
        assert!(!options.ignore_unknown_columns);
        let refused = p.column_options(&[]).unwrap_err();
        assert!(refused.detail.contains("\"dry_run\""), "{}", refused.detail);
        assert!(
            Params(vec![("x".into(), "maybe".into())])
                .flag("x")
                .is_err()
        );
    }

    #[test]
    fn mime_types_drop_parameters() {
        let mut h = header::HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            "Text/CSV; charset=utf-8".parse().unwrap(),
        );
        assert_eq!(mime(&h, header::CONTENT_TYPE, ""), "text/csv");
        assert_eq!(
            mime(&h, header::ACCEPT, "application/json"),
            "application/json"
        );
    }
}
