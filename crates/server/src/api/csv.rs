//! `POST /usage/{slug}/csv`: a CSV body streamed through the decoder chunk by chunk.
//!
//! A body that fits in one chunk is logged and buffered like any request. A longer one is
//! staged to unlisted Parquet files chunk by chunk and published by one manifest commit once
//! every row has validated, so memory stays bounded by the chunk size whatever the file size,
//! and the upload stays all or nothing. The work runs in its own task, so a client that goes
//! away mid-upload still gets its staged files removed. The parser thread also takes each
//! valid chunk's digest for the receipt, so the hashing stays off the async threads.

use std::io::{self, Read};

use axum::body::Body;
use axum::extract::Path;
use axum::response::Response;
use bytes::{Buf, Bytes};
use http_body_util::BodyExt;
use hyper::{HeaderMap, StatusCode, header};
use meterbase_schema::{
    CsvChunk, CsvOptions, CsvStream, CsvStreamError, DecodeLimits, DecodeOutcome, EventDecoder,
    EventError,
};
use meterbase_storage::Upload;
use serde_json::json;
use tokio::sync::mpsc;

use crate::app::App;
use crate::auth::Tenant;
use crate::encoding::{Encoding, inflating, is_too_large, request_encoding};
use crate::http::{Params, Result, json_response, mime};
use crate::problem::{Problem, event_errors_json};
use crate::receipt::{Receipt, batch_digest};

/// The contract lists at most this many errors for one CSV body.
const MAX_CSV_ERRORS: usize = 1000;

struct Request {
    dry_run: bool,
    options: CsvOptions,
}

fn parse_request(headers: &HeaderMap, params: &Params) -> Result<Request> {
    let mime = mime(headers, header::CONTENT_TYPE, "text/csv");
    if !matches!(
        mime.as_str(),
        "text/csv" | "application/csv" | "text/plain" | "application/octet-stream" | ""
    ) {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported media type",
            format!("Content-Type {mime:?} is not accepted here: send text/csv"),
        ));
    }
    Ok(Request {
        options: params.column_options(&["dry_run"])?,
        dry_run: params.flag("dry_run")?,
    })
}

/// `POST /usage/{slug}/csv`.
pub(crate) async fn upload(
    Tenant { app, org }: Tenant,
    Path(slug): Path<String>,
    params: Params,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let table = app.table(&org, &slug)?;
    let request = parse_request(&headers, &params)?;
    let encoding = request_encoding(&headers)?;
    let decoder = app.decoders.get(&table.def())?;
    // Its own task: a client that disconnects drops this handler, not the clean-up.
    tokio::spawn(async move { run(&app, table, decoder, request, encoding, body).await })
        .await
        .map_err(|e| Problem::internal(format!("CSV upload task failed: {e}")))?
}

/// The request body as a blocking `Read`, fed by the task that polls hyper.
struct BodyReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

enum ParseEnd {
    Done,
    Header(Vec<EventError>),
    Io(io::Error),
}

/// Runs on a blocking thread: reads chunks and hands them over one at a time, each valid one
/// with its digest when `digests` (a dry run has no receipt).
fn parse(
    decoder: &EventDecoder,
    input: io::Result<Box<dyn Read>>,
    options: &CsvOptions,
    chunk_rows: usize,
    mut limits: DecodeLimits,
    digests: bool,
    out: &mpsc::Sender<(CsvChunk, u64)>,
) -> ParseEnd {
    let input = match input {
        Ok(i) => i,
        Err(e) => return ParseEnd::Io(e),
    };
    let mut stream = match CsvStream::open(decoder, input, options) {
        Ok(s) => s,
        Err(CsvStreamError::Header(e)) => return ParseEnd::Header(e),
        Err(CsvStreamError::Io(e)) => return ParseEnd::Io(e),
    };
    let mut errors = 0;
    loop {
        limits.max_errors = MAX_CSV_ERRORS - errors;
        match stream.next_chunk(decoder, chunk_rows, limits) {
            Ok(Some(chunk)) => {
                let mut digest = 0;
                match &chunk.outcome {
                    DecodeOutcome::Invalid { errors: e, .. } => errors += e.len(),
                    DecodeOutcome::Valid(batch) if digests => {
                        digest = match batch_digest(decoder, batch) {
                            Ok(d) => d,
                            Err(p) => return ParseEnd::Io(io::Error::other(p.detail)),
                        }
                    }
                    _ => {}
                }
                if out.blocking_send((chunk, digest)).is_err() {
                    // The receiver gave up (a storage error); nothing more to do.
                    return ParseEnd::Done;
                }
            }
            Ok(None) => return ParseEnd::Done,
            Err(e) => return ParseEnd::Io(e),
        }
    }
}

/// What the chunks added up to.
#[derive(Default)]
struct Tally {
    rows: usize,
    valid: usize,
    invalid: usize,
    errors: Vec<EventError>,
}

async fn run(
    app: &App,
    table: std::sync::Arc<meterbase_storage::Table>,
    decoder: std::sync::Arc<EventDecoder>,
    request: Request,
    encoding: Encoding,
    mut body: Body,
) -> Result<Response> {
    let (body_tx, body_rx) = mpsc::channel::<io::Result<Bytes>>(8);
    let pump = tokio::spawn(async move {
        while let Some(frame) = body.frame().await {
            let item = match frame {
                Ok(f) => match f.into_data() {
                    Ok(data) => Ok(data),
                    Err(_) => continue,
                },
                Err(e) => Err(io::Error::other(format!("the request body broke off: {e}"))),
            };
            let failed = item.is_err();
            if body_tx.send(item).await.is_err() || failed {
                return;
            }
        }
    });
    let (chunk_tx, mut chunk_rx) = mpsc::channel::<(CsvChunk, u64)>(1);
    let limits = DecodeLimits {
        max_events: usize::MAX,
        max_errors: MAX_CSV_ERRORS,
        now: meterbase_wal::now_micros(),
        max_future: app.config.max_future.as_micros() as i64,
    };
    let chunk_rows = app.config.csv_chunk_rows;
    let limit = app.config.max_csv_bytes;
    let options = request.options.clone();
    let parse_decoder = decoder.clone();
    let digests = !request.dry_run;
    let parser = tokio::task::spawn_blocking(move || {
        let reader = BodyReader {
            rx: body_rx,
            current: Bytes::new(),
        };
        let input = inflating(reader, encoding, limit);
        parse(
            &parse_decoder,
            input,
            &options,
            chunk_rows,
            limits,
            digests,
            &chunk_tx,
        )
    });

    let mut tally = Tally::default();
    // The first valid chunk waits here: if it is the only one, it goes through the log.
    let mut first: Option<arrow::record_batch::RecordBatch> = None;
    let mut upload: Option<Upload> = None;
    let mut storage_error: Option<Problem> = None;
    // Sum of the valid chunks' digests: the receipt's, when every chunk is stored.
    let mut digest = 0u64;
    while let Some((chunk, chunk_digest)) = chunk_rx.recv().await {
        tally.rows += chunk.rows;
        match chunk.outcome {
            DecodeOutcome::Valid(batch) => {
                tally.valid += batch.num_rows();
                digest = digest.wrapping_add(chunk_digest);
                let storing = !request.dry_run && tally.invalid == 0 && storage_error.is_none();
                if !storing {
                    continue;
                }
                if first.is_none() && upload.is_none() {
                    first = Some(batch);
                    continue;
                }
                let up = upload.get_or_insert_with(|| app.store.begin_upload(&table));
                let held = first.take();
                let staged = async {
                    if let Some(f) = held {
                        app.store.stage(up, f).await?;
                    }
                    app.store.stage(up, batch).await
                }
                .await;
                if let Err(e) = staged {
                    storage_error = Some(e.into());
                    // Stop reading: the parser sees the closed channel and returns.
                    chunk_rx.close();
                }
            }
            DecodeOutcome::Invalid {
                errors,
                invalid_events,
                events,
            } => {
                tally.valid += events - invalid_events;
                tally.invalid += invalid_events;
                let room = MAX_CSV_ERRORS.saturating_sub(tally.errors.len());
                tally.errors.extend(errors.into_iter().take(room));
                first = None;
                if let Some(up) = upload.take() {
                    app.store.abort_upload(up).await;
                }
            }
            DecodeOutcome::TooManyEvents { .. } => {}
        }
    }
    let end = parser
        .await
        .map_err(|e| Problem::internal(format!("CSV parser task failed: {e}")));
    pump.abort();
    let failure = match (storage_error, end) {
        (Some(p), _) | (None, Err(p)) => Some(p),
        (None, Ok(ParseEnd::Done)) => None,
        (None, Ok(ParseEnd::Header(errors))) => Some(
            Problem::new(
                StatusCode::BAD_REQUEST,
                "Invalid CSV header",
                "the header row does not fit the event type; nothing was stored",
            )
            .with_event_errors(&errors),
        ),
        (None, Ok(ParseEnd::Io(e))) => Some(body_error(e, limit)),
    };
    if let Some(problem) = failure {
        if let Some(up) = upload.take() {
            app.store.abort_upload(up).await;
        }
        return Err(problem);
    }
    if request.dry_run {
        return Ok(json_response(
            StatusCode::OK,
            &json!({
                "rows": tally.rows,
                "valid": tally.valid,
                "errors": event_errors_json(&tally.errors),
            }),
        ));
    }
    if tally.invalid > 0 {
        app.metrics.events_rejected.inc_by(tally.invalid as u64);
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "Invalid events",
            format!(
                "{} of {} rows are invalid; nothing from this request was stored",
                tally.invalid, tally.rows
            ),
        )
        .with_event_errors(&tally.errors)
        .with("invalid_events", json!(tally.invalid))
        .with("rows", json!(tally.rows)));
    }
    let (accepted, seqs) = match (upload, first) {
        (Some(up), _) => {
            let c = app.store.commit_upload(up).await?;
            (c.rows, c.seqs)
        }
        (None, Some(batch)) => {
            let n = batch.num_rows();
            let ack = app.store.append(&table, batch).await?;
            (n, Some((ack.seq, ack.seq)))
        }
        (None, None) => (0, None),
    };
    app.metrics.events_ingested.inc_by(accepted as u64);
    let receipt = Receipt {
        count: accepted,
        seqs,
        digest,
    };
    Ok(json_response(
        StatusCode::OK,
        &json!({ "rows": tally.rows, "accepted": accepted, "receipt": receipt.value() }),
    ))
}

fn body_error(e: io::Error, limit: u64) -> Problem {
    if is_too_large(&e) {
        return Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Payload too large",
            format!("the CSV body is larger than {limit} bytes after decompression"),
        );
    }
    Problem::bad_request(format!(
        "could not read the CSV body: {e}; nothing was stored"
    ))
}
