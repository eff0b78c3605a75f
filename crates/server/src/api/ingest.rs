//! `POST /usage/{slug}` (JSON, NDJSON, Arrow IPC stream, Parquet) and `POST /usage/bulk/{slug}`
//! (Zuora-compatible): decode and validate the whole body (all or nothing), log it durably,
//! acknowledge with a receipt (count, log sequences, digest).

use std::time::Instant;

use axum::body::Body;
use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hyper::{HeaderMap, StatusCode, header};
use meterbase_catalog::Organisation;
use meterbase_schema::{CsvOptions, DecodeLimits, DecodeOutcome, InputFormat};
use serde_json::json;

use crate::app::App;
use crate::auth::Tenant;
use crate::columnar::{self, Columnar};
use crate::encoding::{Encoding, inflate, request_encoding};
use crate::http::{Params, Result, bytes_response, json_response, mime, read_body};
use crate::problem::Problem;
use crate::receipt::{Receipt, batch_digest};

const TRACK_ID: &str = "zuora-track-id";

/// How a body is read.
enum BodyFormat {
    Json(InputFormat),
    /// Columns matched to fields as a CSV header's are.
    Columnar(Columnar, CsvOptions),
    /// The Zuora-compatible shapes of `/usage/bulk/{slug}`, rewritten to NDJSON first.
    Bulk,
}

fn body_format(headers: &HeaderMap, params: &Params) -> Result<BodyFormat> {
    let mime = mime(headers, header::CONTENT_TYPE, "application/json");
    if let Some(columnar) = Columnar::from_mime(&mime) {
        return Ok(BodyFormat::Columnar(columnar, params.column_options(&[])?));
    }
    match mime.as_str() {
        // curl sends form-urlencoded when -d is given without -H 'Content-Type'; the body is
        // still the JSON the user typed.
        "application/json" | "" | "application/x-www-form-urlencoded" | "text/plain" => {
            Ok(BodyFormat::Json(InputFormat::Json))
        }
        "application/x-ndjson"
        | "application/jsonl"
        | "application/ndjson"
        | "application/jsonlines" => Ok(BodyFormat::Json(InputFormat::Ndjson)),
        other => Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported media type",
            format!(
                "Content-Type {other:?} is not accepted here: use application/json, application/x-ndjson, {} or {}",
                columnar::ARROW_STREAM,
                columnar::PARQUET
            ),
        )),
    }
}

pub(crate) async fn ingest(
    Tenant { app, org }: Tenant,
    Path(slug): Path<String>,
    params: Params,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let receipt = ingest_events(&app, &org, &slug, &headers, body, Some(&params)).await?;
    // Written directly: every single-event POST answers this, and a `json!` map costs several
    // allocations.
    Ok(bytes_response(
        StatusCode::OK,
        "application/json",
        Bytes::from(format!(
            "{{\"accepted\":{},\"receipt\":{}}}",
            receipt.count,
            receipt.json()
        )),
    ))
}

/// Zuora's answers: `success` on every one, the `Zuora-Track-Id` echoed.
pub(crate) async fn bulk(
    tenant: std::result::Result<Tenant, Problem>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let track = headers.get(TRACK_ID).cloned();
    let result = match (tenant, track.as_ref().map(check_track_id).transpose()) {
        (Err(p), _) | (_, Err(p)) => Err(p),
        (Ok(Tenant { app, org }), Ok(_)) => {
            ingest_events(&app, &org, &slug, &headers, body, None).await
        }
    };
    let mut resp = match result {
        Ok(r) => json_response(
            StatusCode::OK,
            &json!({
                "success": true,
                "message": format!("{} events ingested", r.count),
                "receipt": r.value(),
            }),
        ),
        Err(p) => p.with("success", json!(false)).into_response(),
    };
    if let Some(t) = track.filter(|t| check_track_id(t).is_ok()) {
        resp.headers_mut().insert(TRACK_ID, t);
    }
    resp
}

/// At most 64 US-ASCII characters, none of `: ; " '`.
fn check_track_id(v: &header::HeaderValue) -> Result<()> {
    let bytes = v.as_bytes();
    let ok = bytes.len() <= 64
        && bytes.iter().all(|b| {
            b.is_ascii() && !b.is_ascii_control() && !matches!(b, b':' | b';' | b'"' | b'\'')
        });
    if ok {
        Ok(())
    } else {
        Err(Problem::bad_request(
            "Zuora-Track-Id must be at most 64 US-ASCII characters without : ; \" '",
        ))
    }
}

/// Validates, logs and buffers the events of one request (all or nothing); the receipt of
/// what was accepted. `params` `None` reads the Zuora-compatible shapes of
/// `/usage/bulk/{slug}`.
async fn ingest_events(
    app: &App,
    org: &Organisation,
    slug: &str,
    headers: &HeaderMap,
    body: Body,
    params: Option<&Params>,
) -> Result<Receipt> {
    let table = app.table(org, slug)?;
    let format = match params {
        None => BodyFormat::Bulk,
        Some(params) => body_format(headers, params)?,
    };
    // Bulk and columnar bodies are bulk loads: always decoded off the async threads.
    let blocking = !matches!(format, BodyFormat::Json(_));
    // The table's definition is the one its schema follows, so the rows decoded against it
    // always fit the buffer.
    let def = table.def();
    let encoding = request_encoding(headers)?;
    let limit = app.config.max_body_bytes;
    let body = read_body(body, limit).await?;
    let decoder = app.decoders.get(&def)?;
    let limits = DecodeLimits {
        max_events: app.config.max_events,
        max_errors: 100,
        now: meterbase_wal::now_micros(),
        max_future: app.config.max_future.as_micros() as i64,
    };
    let big = body.len() > 256 << 10;
    // The digest is taken where the decoding runs, so a large body hashes off the async
    // threads too.
    let work = move || -> Result<(usize, DecodeOutcome, u64)> {
        let (len, outcome) = decode_body(&decoder, body, encoding, limit, format, limits)?;
        let digest = match &outcome {
            DecodeOutcome::Valid(batch) => batch_digest(&decoder, batch)?,
            _ => 0,
        };
        Ok((len, outcome, digest))
    };
    let (body_len, outcome, digest) = if encoding != Encoding::Identity || blocking || big {
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| Problem::internal(format!("decoder task failed: {e}")))??
    } else {
        work()?
    };
    let metrics = &app.metrics;
    match outcome {
        DecodeOutcome::Valid(batch) => {
            let n = batch.num_rows();
            let mut seqs = None;
            if n > 0 {
                let started = Instant::now();
                let ack = app.store.append(&table, batch).await?;
                seqs = Some((ack.seq, ack.seq));
                metrics
                    .ingest_ack_seconds
                    .observe(started.elapsed().as_secs_f64());
            }
            metrics.events_ingested.inc_by(n as u64);
            metrics.bytes_ingested.inc_by(body_len as u64);
            Ok(Receipt {
                count: n,
                seqs,
                digest,
            })
        }
        DecodeOutcome::Invalid {
            errors,
            invalid_events,
            events,
        } => {
            metrics.events_rejected.inc_by(invalid_events as u64);
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

/// Inflates and decodes one body. Its inflated length and the outcome.
fn decode_body(
    decoder: &meterbase_schema::EventDecoder,
    body: Bytes,
    encoding: Encoding,
    limit: usize,
    format: BodyFormat,
    limits: DecodeLimits,
) -> Result<(usize, DecodeOutcome)> {
    let body = inflate(body, encoding, limit)?;
    let len = body.len();
    let format = match format {
        BodyFormat::Json(format) => format,
        BodyFormat::Columnar(columnar, options) => {
            let outcome = columnar::decode(decoder, columnar, body, &options, limits);
            return Ok((len, outcome));
        }
        BodyFormat::Bulk => {
            let ndjson = meterbase_schema::zuora::to_ndjson(&body)?;
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
    };
    Ok((len, decoder.decode(&body, format, limits)))
}
