//! Request and response compression. Limits apply to the inflated bytes, counted while
//! inflating, so a small body that expands past the limit is refused without ever being held
//! whole in memory.

use std::io::Read;

use bytes::Bytes;
use hyper::{StatusCode, header};

use crate::problem::Problem;
use crate::routes::Req;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Identity,
    Gzip,
    Zstd,
}

pub(crate) fn request_encoding(req: &Req) -> Result<Encoding, Problem> {
    let Some(v) = req.headers().get(header::CONTENT_ENCODING) else {
        return Ok(Encoding::Identity);
    };
    let v = v.to_str().unwrap_or("").trim().to_ascii_lowercase();
    match v.as_str() {
        "" | "identity" => Ok(Encoding::Identity),
        "gzip" | "x-gzip" => Ok(Encoding::Gzip),
        "zstd" => Ok(Encoding::Zstd),
        other => Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported media type",
            format!("Content-Encoding {other:?} is not supported: use gzip or zstd"),
        )),
    }
}

fn too_large(limit: usize) -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "Payload too large",
        format!("the request body is larger than {limit} bytes after decompression"),
    )
}

/// Inflates `body`, refusing (413) as soon as more than `limit` bytes come out.
pub(crate) fn inflate(body: Bytes, encoding: Encoding, limit: usize) -> Result<Bytes, Problem> {
    let mut reader: Box<dyn Read> = match encoding {
        Encoding::Identity => return Ok(body),
        Encoding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&body[..])),
        Encoding::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(&body[..])
                .map_err(|e| Problem::bad_request(format!("invalid zstd body: {e}")))?,
        ),
    };
    let mut out = Vec::with_capacity((body.len() * 4).min(limit));
    let read = reader
        .by_ref()
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| {
            Problem::bad_request(format!("the compressed body does not decompress: {e}"))
        })?;
    if read > limit {
        return Err(too_large(limit));
    }
    Ok(Bytes::from(out))
}

/// Gzip for responses over 1000 bytes when the client accepts it.
pub(crate) fn accepts_gzip(req: &Req) -> bool {
    req.headers()
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',').any(|part| {
                let mut it = part.split(';');
                let name = it.next().unwrap_or("").trim();
                let q_zero = it.any(|p| p.trim().replace(' ', "") == "q=0");
                (name.eq_ignore_ascii_case("gzip") || name == "*") && !q_zero
            })
        })
}

pub(crate) fn gzip(body: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    enc.write_all(body).ok()?;
    enc.finish().ok()
}
