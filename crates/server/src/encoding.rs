//! Compressed request bodies (gzip, zstd). Limits apply to the inflated bytes, counted while
//! inflating, so a small body that expands past the limit is refused without ever being held
//! whole in memory. (Responses are compressed by `tower_http`'s layer, see `routes`.)

use std::io::Read;

use bytes::Bytes;
use hyper::{HeaderMap, StatusCode, header};

use crate::problem::Problem;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Identity,
    Gzip,
    Zstd,
}

pub(crate) fn request_encoding(headers: &HeaderMap) -> Result<Encoding, Problem> {
    let Some(v) = headers.get(header::CONTENT_ENCODING) else {
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

/// Marks the inflated stream passing its limit.
#[derive(Debug)]
struct BodyTooLarge;

impl std::fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("body too large")
    }
}

impl std::error::Error for BodyTooLarge {}

/// Whether a read failed because the inflated stream passed its limit.
pub(crate) fn is_too_large(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<BodyTooLarge>())
}

/// Fails once more than `left` bytes have come out of `inner`.
struct Capped<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.left = self
            .left
            .checked_sub(n as u64)
            .ok_or_else(|| std::io::Error::other(BodyTooLarge))?;
        Ok(n)
    }
}

/// A streaming body, inflated as it is read and cut (`is_too_large`) past `limit` bytes.
pub(crate) fn inflating<R: Read + 'static>(
    input: R,
    encoding: Encoding,
    limit: u64,
) -> std::io::Result<Box<dyn Read>> {
    let inner: Box<dyn Read> = match encoding {
        Encoding::Identity => Box::new(input),
        Encoding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
        Encoding::Zstd => Box::new(zstd::stream::read::Decoder::new(input)?),
    };
    Ok(Box::new(Capped { inner, left: limit }))
}
