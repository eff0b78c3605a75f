//! The properties the fuzz targets in `fuzz/` check, shared with the test that replays the
//! committed corpus, so both assert exactly the same thing.

use crate::timestamp::{
    format_micros, parse_date, parse_epoch_seconds, parse_instant_utc, parse_timestamp,
};
use crate::{
    CsvLines, CsvOptions, CsvStream, DecodeLimits, DecodeOutcome, EventDecoder, EventTypeDef,
    EventTypeSpec, InputFormat, decode_arrow_stream, split_ndjson,
};

/// An event type with one field for each value parser.
pub fn decoder() -> EventDecoder {
    let spec: EventTypeSpec = serde_json::from_str(
        r#"{"name":"fuzz","dataschema":{"data":{
            "f":"Float64","d":"Nullable(Decimal(12,3))","i":"Nullable(Int16)","u":"Nullable(UInt64)",
            "s":"Nullable(String)","b":"Nullable(Bool)","day":"Nullable(Date)","at":"Nullable(DateTime64)",
            "id":"Nullable(UUID)"}}}"#,
    )
    .expect("the fuzzing event type is valid JSON");
    let def = EventTypeDef::from_spec(spec, "fuzz".into(), chrono::DateTime::UNIX_EPOCH)
        .expect("the fuzzing event type is a valid definition");
    EventDecoder::new(&def).expect("the fuzzing event type has a decoder")
}

pub fn limits() -> DecodeLimits {
    DecodeLimits {
        max_events: 1000,
        now: 1_750_000_000_000_000,
        ..DecodeLimits::default()
    }
}

/// Never panics; an accepted body has every column.
pub fn check_json(dec: &EventDecoder, data: &[u8]) {
    if let DecodeOutcome::Valid(batch) = dec.decode(data, InputFormat::Json, limits()) {
        assert_eq!(batch.num_columns(), dec.schema().fields().len());
    }
}

/// Never panics; an accepted body has one row per non-blank line; errors name real lines.
pub fn check_ndjson(dec: &EventDecoder, data: &[u8]) {
    let lines = data.split(|b| *b == b'\n').count();
    let non_blank = split_ndjson(data).count();
    assert!(non_blank <= lines);
    match dec.decode(data, InputFormat::Ndjson, limits()) {
        DecodeOutcome::Valid(batch) => assert_eq!(batch.num_rows(), non_blank),
        DecodeOutcome::Invalid { errors, .. } => {
            assert!(
                errors
                    .iter()
                    .all(|e| e.line.is_some_and(|l| l >= 1 && l <= lines))
            );
        }
        DecodeOutcome::TooManyEvents { .. } => {}
    }
}

/// Never panics; whatever parses formats back to the same instant; a query parameter's
/// instant (`as_of`, `from`, `to`) is a timestamp or a date's midnight.
pub fn check_timestamp(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(us) = parse_timestamp(text) {
        assert_eq!(parse_timestamp(&format_micros(us)), Ok(us));
    }
    if let Ok(us) = parse_instant_utc(text) {
        let midnight = parse_date(text).map(|d| i64::from(d) * 86_400_000_000);
        assert!(parse_timestamp(text) == Ok(us) || midnight == Ok(us));
    }
    let _ = parse_date(text);
    let _ = parse_epoch_seconds(text);
}

/// Never panics; a Zuora-shaped body becomes one NDJSON line per event, which the decoder
/// reads as as many events (valid or not).
pub fn check_zuora(dec: &EventDecoder, data: &[u8]) {
    let Ok(ndjson) = crate::zuora::to_ndjson(data) else {
        return;
    };
    let lines = ndjson.iter().filter(|b| **b == b'\n').count();
    match dec.decode(&ndjson, InputFormat::Ndjson, limits()) {
        DecodeOutcome::Valid(batch) => assert_eq!(batch.num_rows(), lines),
        DecodeOutcome::Invalid { events, .. } => assert_eq!(events, lines),
        DecodeOutcome::TooManyEvents { .. } => assert!(lines > limits().max_events),
    }
}

/// Never panics; chunks account for every row, and the rows reported are the records a
/// plain CSV reader finds after the header; an accepted chunk has one row per CSV row; errors
/// name real lines; a file ending inside a quoted field is never accepted whole.
pub fn check_csv(dec: &EventDecoder, data: &[u8]) {
    let options = CsvOptions {
        field_columns: Vec::new(),
        ignore_unknown_columns: data.first().is_some_and(|b| b % 2 == 1),
    };
    // Rows end at LF, CR or CRLF, but lines are counted at LF: rows of a file with bare-CR
    // line ends all report the line they share.
    let lines = data.split(|b| *b == b'\n').count();
    let Ok(mut stream) = CsvStream::open(dec, data, &options) else {
        return;
    };
    let mut rows = 0;
    let mut rejected = false;
    while let Ok(Some(chunk)) = stream.next_chunk(dec, 7, limits()) {
        assert!(chunk.rows >= 1 && chunk.rows <= 7);
        rows += chunk.rows;
        match chunk.outcome {
            DecodeOutcome::Valid(batch) => assert_eq!(batch.num_rows(), chunk.rows),
            DecodeOutcome::Invalid { errors, events, .. } => {
                rejected = true;
                assert_eq!(events, chunk.rows);
                assert!(
                    errors
                        .iter()
                        .all(|e| e.line.is_some_and(|l| l >= 1 && l <= lines)),
                    "{errors:?} with {lines} lines"
                );
            }
            DecodeOutcome::TooManyEvents { .. } => panic!("CSV chunks have no event limit"),
        }
    }
    assert_eq!(rows, plain_records(data).saturating_sub(1));
    let mut scan = CsvLines::new(data);
    let _ = std::io::copy(&mut scan, &mut std::io::sink());
    if scan.unterminated().is_some() {
        assert!(rejected, "a file ending inside a quoted field was accepted");
    }
}

/// Records as the `csv` crate reads them, with nothing of ours in between.
fn plain_records(data: &[u8]) -> usize {
    let mut reader = ::csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(data);
    let mut record = ::csv::ByteRecord::new();
    let mut n = 0;
    while let Ok(true) = reader.read_byte_record(&mut record) {
        n += 1;
    }
    n
}

/// Runs `f` with its panics caught instead of aborting the fuzzer (libFuzzer's panic hook
/// aborts, even for a panic the code under test catches itself; fuzzing is single-threaded,
/// so swapping the hook for the call is safe).
pub fn caught<T>(f: impl FnOnce() -> T) -> Option<T> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok();
    std::panic::set_hook(hook);
    out
}

/// Never panics where arrow itself does not; an accepted Arrow IPC stream has as many rows
/// as its batches, as arrow reads them with nothing of ours in between; errors name rows that
/// were read. arrow-ipc 59 panics on some malformed streams (a buffer slice past the body's
/// end, found by this target): the server catches that and answers 400
/// (`server::columnar::decode`), so on those inputs only arrow's own panic is allowed.
pub fn check_arrow_stream(dec: &EventDecoder, data: &[u8]) {
    let options = CsvOptions {
        field_columns: Vec::new(),
        ignore_unknown_columns: data.get(8).is_some_and(|b| b % 2 == 1),
    };
    if crate::columnar::check_framing(data).is_err() {
        // A message claiming more bytes than there are: refused before arrow reads it (arrow
        // would allocate the claimed size first).
        let outcome = decode_arrow_stream(dec, data, &options, limits());
        assert!(
            matches!(outcome, DecodeOutcome::Invalid { .. }),
            "{outcome:?}"
        );
        return;
    }
    let plain = caught(|| {
        arrow::ipc::reader::StreamReader::try_new(data, None)
            .ok()
            .map(|r| r.map_while(Result::ok).map(|b| b.num_rows()).sum::<usize>())
    });
    let Some(rows) = plain else {
        let _ = caught(|| decode_arrow_stream(dec, data, &options, limits()));
        return;
    };
    match decode_arrow_stream(dec, data, &options, limits()) {
        DecodeOutcome::Valid(batch) => assert_eq!(Some(batch.num_rows()), rows),
        DecodeOutcome::Invalid { errors, .. } => assert!(
            errors.iter().all(|e| e
                .line
                .is_none_or(|l| l >= 1 && rows.is_some_and(|n| l <= n))),
            "{errors:?} with {rows:?} rows"
        ),
        DecodeOutcome::TooManyEvents { .. } => {
            assert!(rows.is_none_or(|n| n > limits().max_events))
        }
    }
}

/// A Parquet body on arbitrary bytes. Like the server, a panic inside parquet-rs is the
/// body's fault (the server answers 400); what must never happen is an abort (an allocation
/// sized by a corrupt header), a hang, or an answer that disagrees with what a plain reader
/// of the same bytes finds: all rows stored or a row number within the file.
pub fn check_parquet(dec: &EventDecoder, data: &[u8]) {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let options = CsvOptions {
        field_columns: Vec::new(),
        ignore_unknown_columns: data.len() % 2 == 1,
    };
    let body = bytes::Bytes::copy_from_slice(data);
    // The reference runs only on bodies the decoder read: on one it refused for its Thrift
    // structures (`parquet_framing`), parquet-rs itself may spin for seconds.
    let plain = |body: bytes::Bytes| {
        caught(|| {
            let reader = ParquetRecordBatchReaderBuilder::try_new(body)
                .ok()?
                .build()
                .ok()?;
            let mut rows = 0;
            for batch in reader {
                rows += batch.ok()?.num_rows();
            }
            Some(rows)
        })
        .flatten()
    };
    let Some(outcome) = caught(|| crate::decode_parquet(dec, body.clone(), &options, limits()))
    else {
        return;
    };
    match outcome {
        DecodeOutcome::Valid(batch) => assert_eq!(Some(batch.num_rows()), plain(body)),
        DecodeOutcome::Invalid { errors, .. } if errors.iter().any(|e| e.line.is_some()) => {
            let rows = plain(body);
            assert!(
                errors
                    .iter()
                    .all(|e| e.line.is_none_or(|l| l >= 1 && rows.is_none_or(|n| l <= n))),
                "{errors:?} with {rows:?} rows"
            )
        }
        DecodeOutcome::Invalid { .. } | DecodeOutcome::TooManyEvents { .. } => {}
    }
}
