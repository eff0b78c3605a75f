//! `meterbase import`: sends a CSV or NDJSON file (plain or gzip), or an Arrow or Parquet file,
//! to a server in batches, with progress. Each batch is one all-or-nothing request; the first
//! failed batch stops the import with the server's errors, translated to lines (rows) of the
//! file. Arrow and Parquet files go as Arrow IPC streams, re-encoded batch by batch. `reconcile`
//! reads files through the same readers (`open`, `detect_format`, `csv_batches`,
//! `ndjson_batches`, `columnar_batches`).

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;
use indicatif::{ProgressBar, ProgressStyle};
use meterbase_schema::CsvLines;
use serde_json::Value;

use crate::args::{Source, Target};

#[derive(clap::Args)]
pub struct ImportArgs {
    #[command(flatten)]
    target: Target,
    /// Rows per request.
    #[arg(long, default_value_t = 50_000)]
    batch_rows: usize,
    #[command(flatten)]
    source: Source,
}

/// Counts the bytes read from the file (compressed, when it is), for progress and ETA.
struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Format {
    Csv,
    Ndjson,
    /// An Arrow IPC stream or file; sent as an IPC stream.
    Arrow,
    /// Sent as an Arrow IPC stream too: cheaper for both ends than a Parquet file per batch.
    Parquet,
}

/// What the server is sent for columnar files.
pub(crate) const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

/// One request's worth of the file.
pub(crate) struct Batch {
    pub(crate) body: Vec<u8>,
    rows: u64,
    /// File line of the batch's first row.
    first_line: u64,
    /// CSV only: `(line in the body, line in the file)` of each record, in order. Quoted cells
    /// may span lines, so a body line is not the file line plus a constant.
    csv_lines: Vec<(u64, u64)>,
}

impl Batch {
    /// The file line of the record a server error names by its line in this batch's body.
    pub(crate) fn file_line(&self, format: Format, body_line: u64) -> u64 {
        match format {
            Format::Ndjson | Format::Arrow | Format::Parquet => {
                self.first_line + body_line.saturating_sub(1)
            }
            Format::Csv => {
                let at = self.csv_lines.partition_point(|(b, _)| *b <= body_line);
                match at.checked_sub(1).map(|i| self.csv_lines[i]) {
                    Some((body, file)) => file + (body_line - body),
                    // The header, repeated as the body's first line.
                    None => 1,
                }
            }
        }
    }
}

pub(crate) fn is_stdin(path: &std::path::Path) -> bool {
    path.as_os_str() == "-"
}

pub(crate) fn open(
    path: &PathBuf,
    read: Arc<AtomicU64>,
) -> Result<Box<dyn BufRead + Send>, String> {
    let file: Box<dyn Read + Send> = if is_stdin(path) {
        Box::new(std::io::stdin())
    } else {
        Box::new(File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?)
    };
    let mut counted = BufReader::with_capacity(1 << 20, Counting { inner: file, read });
    let gzipped = counted
        .fill_buf()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .starts_with(&[0x1f, 0x8b]);
    Ok(if gzipped {
        Box::new(BufReader::with_capacity(
            1 << 20,
            flate2::bufread::MultiGzDecoder::new(counted),
        ))
    } else {
        Box::new(counted)
    })
}

impl Source {
    /// The file's format, refusing the column options for NDJSON.
    pub(crate) fn checked_format(&self) -> Result<Format, String> {
        let format = detect_format(self.format.as_deref(), &self.file)?;
        if format == Format::Ndjson && (!self.map.is_empty() || self.ignore_unknown_columns) {
            return Err(
                "--map and --ignore-unknown-columns apply to CSV, Arrow and Parquet files only"
                    .into(),
            );
        }
        Ok(format)
    }

    /// `--map FIELD=COLUMN` and `--ignore-unknown-columns` as the server's query string.
    pub(crate) fn column_query(&self) -> Result<String, String> {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for m in &self.map {
            let (field, column) = m
                .split_once('=')
                .ok_or_else(|| format!("--map {m:?}: use FIELD=COLUMN"))?;
            q.append_pair(&format!("map.{field}"), column);
        }
        if self.ignore_unknown_columns {
            q.append_pair("ignore_unknown_columns", "true");
        }
        Ok(q.finish())
    }
}

/// `--format` when given, else from the file name.
pub(crate) fn detect_format(
    format: Option<&str>,
    file: &std::path::Path,
) -> Result<Format, String> {
    match format {
        Some("csv") => return Ok(Format::Csv),
        Some("ndjson") => return Ok(Format::Ndjson),
        Some("arrow") => return Ok(Format::Arrow),
        Some("parquet") => return Ok(Format::Parquet),
        _ => {}
    }
    if is_stdin(file) {
        return Err("reading standard input: pass --format csv, ndjson, arrow or parquet".into());
    }
    let name = file.to_string_lossy().to_ascii_lowercase();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    if name.ends_with(".csv") {
        Ok(Format::Csv)
    } else if name.ends_with(".ndjson") || name.ends_with(".jsonl") || name.ends_with(".json") {
        Ok(Format::Ndjson)
    } else if name.ends_with(".parquet") || name.ends_with(".pq") {
        Ok(Format::Parquet)
    } else if name.ends_with(".arrow")
        || name.ends_with(".arrows")
        || name.ends_with(".ipc")
        || name.ends_with(".feather")
    {
        Ok(Format::Arrow)
    } else {
        Err(format!(
            "cannot tell the format of {}: pass --format csv, ndjson, arrow or parquet",
            file.display()
        ))
    }
}

/// Reads CSV records and writes each batch back out as CSV with the header, so quoting,
/// embedded newlines and the server's validation all stay exactly as in the file.
pub(crate) fn csv_batches(
    input: Box<dyn BufRead + Send>,
    batch_rows: usize,
) -> impl Iterator<Item = Result<Batch, String>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(CsvLines::new(input));
    let mut header = csv::ByteRecord::new();
    let header_ok = match reader.read_byte_record(&mut header) {
        Ok(true) => match reader.get_mut().unterminated() {
            Some(open) => Err(unterminated(open.line)),
            None => {
                reader.get_mut().next_record_line();
                Ok(())
            }
        },
        Ok(false) => Err("the file is empty: a header row is required".to_string()),
        Err(e) => Err(format!("unreadable CSV header: {e}")),
    };
    // The header is record 0.
    let mut records = 1u64;
    let mut record = csv::ByteRecord::new();
    let mut next = move || -> Result<Option<Batch>, String> {
        header_ok.clone()?;
        let mut w = csv::WriterBuilder::new()
            .flexible(true)
            .from_writer(Vec::with_capacity(4 << 20));
        let mut rows = 0u64;
        let mut csv_lines = Vec::new();
        // The header takes the body's line 1.
        let mut body_line = 2u64;
        while rows < batch_rows as u64
            && reader
                .read_byte_record(&mut record)
                .map_err(|e| format!("unreadable CSV: {e}"))?
        {
            let lines = reader.get_mut();
            let file_line = lines.next_record_line().unwrap_or(0);
            if let Some(open) = lines.unterminated().filter(|u| u.record == records) {
                return Err(unterminated(open.line));
            }
            records += 1;
            if rows == 0 {
                w.write_byte_record(&header).map_err(|e| e.to_string())?;
            }
            w.write_byte_record(&record).map_err(|e| e.to_string())?;
            csv_lines.push((body_line, file_line));
            body_line += 1 + record
                .iter()
                .map(|cell| memchr::memchr_iter(b'\n', cell).count() as u64)
                .sum::<u64>();
            rows += 1;
        }
        if rows == 0 {
            return Ok(None);
        }
        let body = w.into_inner().map_err(|e| e.to_string())?;
        Ok(Some(Batch {
            body,
            rows,
            first_line: csv_lines.first().map_or(0, |(_, f)| *f),
            csv_lines,
        }))
    };
    std::iter::from_fn(move || next().transpose())
}

fn unterminated(quote_line: u64) -> String {
    format!(
        "line {quote_line}: the quoted field opened here is never closed, so the rest of the file would be one cell; close the quote (or double a quote inside the field)"
    )
}

/// Batches of non-blank lines, also cut at 16 MiB so a batch stays under the body limit.
pub(crate) fn ndjson_batches(
    mut input: Box<dyn BufRead + Send>,
    batch_rows: usize,
) -> impl Iterator<Item = Result<Batch, String>> {
    let mut line_no = 0u64;
    let mut line = Vec::new();
    let mut next = move || -> Result<Option<Batch>, String> {
        let mut body = Vec::with_capacity(4 << 20);
        let mut rows = 0u64;
        let mut first_line = 0;
        while rows < batch_rows as u64 && body.len() < 16 << 20 {
            line.clear();
            let read = input
                .read_until(b'\n', &mut line)
                .map_err(|e| format!("cannot read the file: {e}"))?;
            if read == 0 {
                break;
            }
            line_no += 1;
            if rows == 0 {
                if line.trim_ascii().is_empty() {
                    continue;
                }
                first_line = line_no;
            }
            body.extend_from_slice(&line);
            if !line.ends_with(b"\n") {
                body.push(b'\n');
            }
            rows += u64::from(!line.trim_ascii().is_empty());
        }
        Ok((rows > 0).then_some(Batch {
            body,
            rows,
            first_line,
            csv_lines: Vec::new(),
        }))
    };
    std::iter::from_fn(move || next().transpose())
}

/// Rows an Arrow IPC batch is written in: a request's body grows by at most this many rows
/// past the size cut.
const SLICE_ROWS: usize = 8192;

/// Batches of an Arrow (IPC stream or file, the stream also gzipped) or Parquet file, each
/// re-encoded as an Arrow IPC stream of at most `batch_rows` rows, cut at 16 MiB so a batch
/// stays under the server's body limit. Rows are read as they are sent: the file is never
/// held whole (but a Parquet file on standard input is, as Parquet needs to seek).
pub(crate) fn columnar_batches(
    path: &Path,
    format: Format,
    read: Arc<AtomicU64>,
    batch_rows: usize,
) -> Result<Box<dyn Iterator<Item = Result<Batch, String>>>, String> {
    let cannot = |e: &dyn std::fmt::Display| format!("cannot read {}: {e}", path.display());
    let (schema, input): (SchemaRef, RecordBatches) = if format == Format::Parquet {
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let (builder, size) = if is_stdin(path) {
            let mut all = Vec::new();
            std::io::stdin()
                .read_to_end(&mut all)
                .map_err(|e| cannot(&e))?;
            let size = all.len() as u64;
            let b = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(all))
                .map_err(|e| cannot(&e))?;
            (ParquetRows::Memory(b), size)
        } else {
            let file = File::open(path).map_err(|e| cannot(&e))?;
            let size = file.metadata().map_err(|e| cannot(&e))?.len();
            let b = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| cannot(&e))?;
            (ParquetRows::File(b), size)
        };
        builder
            .open(size, read, SLICE_ROWS)
            .map_err(|e| cannot(&e))?
    } else {
        let mut input = open(&path.to_path_buf(), read)?;
        let is_file_format = input
            .fill_buf()
            .map_err(|e| cannot(&e))?
            .starts_with(b"ARROW1");
        if is_file_format {
            // The IPC file format keeps its index at the end: read it from the file.
            let file = File::open(path).map_err(|e| cannot(&e))?;
            let r = arrow::ipc::reader::FileReader::try_new(file, None).map_err(|e| cannot(&e))?;
            (r.schema(), Box::new(r))
        } else {
            let r =
                arrow::ipc::reader::StreamReader::try_new(input, None).map_err(|e| cannot(&e))?;
            (r.schema(), Box::new(r))
        }
    };
    let mut rechunk = Rechunk {
        input,
        pending: None,
        schema,
        batch_rows: batch_rows.max(1),
        rows_read: 0,
    };
    Ok(Box::new(std::iter::from_fn(move || {
        rechunk.next_batch().transpose()
    })))
}

/// Record batches as a file's reader yields them.
type RecordBatches = Box<dyn Iterator<Item = Result<RecordBatch, ArrowError>>>;

/// A Parquet file's reader, from a file or from memory.
enum ParquetRows {
    File(parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder<File>),
    Memory(parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder<bytes::Bytes>),
}

impl ParquetRows {
    /// The batches, with the bytes read estimated from the rows (the reader seeks, so
    /// counting bytes would say little) for the progress line.
    fn open(
        self,
        size: u64,
        read: Arc<AtomicU64>,
        batch_size: usize,
    ) -> Result<(SchemaRef, RecordBatches), parquet::errors::ParquetError> {
        let (schema, total, reader): (SchemaRef, i64, RecordBatches) = match self {
            ParquetRows::File(b) => {
                let total = b.metadata().file_metadata().num_rows();
                (
                    b.schema().clone(),
                    total,
                    Box::new(b.with_batch_size(batch_size).build()?),
                )
            }
            ParquetRows::Memory(b) => {
                let total = b.metadata().file_metadata().num_rows();
                (
                    b.schema().clone(),
                    total,
                    Box::new(b.with_batch_size(batch_size).build()?),
                )
            }
        };
        let total = total.max(1) as u64;
        let mut rows = 0u64;
        let counted = reader.inspect(move |b| {
            if let Ok(b) = b {
                rows += b.num_rows() as u64;
                read.store(size * rows.min(total) / total, Ordering::Relaxed);
            }
        });
        Ok((schema, Box::new(counted)))
    }
}

/// Record batches regrouped into requests: an IPC stream each.
struct Rechunk {
    input: RecordBatches,
    /// The rest of a batch the previous request had no room for.
    pending: Option<RecordBatch>,
    schema: SchemaRef,
    batch_rows: usize,
    rows_read: u64,
}

impl Rechunk {
    fn next_batch(&mut self) -> Result<Option<Batch>, String> {
        let encode = |e: ArrowError| format!("cannot encode an Arrow batch: {e}");
        let mut w =
            StreamWriter::try_new(Vec::with_capacity(1 << 20), &self.schema).map_err(encode)?;
        let mut rows = 0usize;
        while rows < self.batch_rows && w.get_ref().len() < 16 << 20 {
            let batch = match self.pending.take() {
                Some(b) => b,
                None => match self.input.next() {
                    None => break,
                    Some(b) => b.map_err(|e| {
                        format!("cannot read the file after row {}: {e}", self.rows_read)
                    })?,
                },
            };
            let take = (self.batch_rows - rows)
                .min(SLICE_ROWS)
                .min(batch.num_rows());
            if take < batch.num_rows() {
                self.pending = Some(batch.slice(take, batch.num_rows() - take));
            }
            if take > 0 {
                w.write(&batch.slice(0, take)).map_err(encode)?;
                rows += take;
            }
        }
        if rows == 0 {
            return Ok(None);
        }
        w.finish().map_err(encode)?;
        let body = w.into_inner().map_err(encode)?;
        let first_line = self.rows_read + 1;
        self.rows_read += rows as u64;
        Ok(Some(Batch {
            body,
            rows: rows as u64,
            first_line,
            csv_lines: Vec::new(),
        }))
    }
}

/// Hands batches to the sender until the input ends, fails, or the sender is gone.
fn feed(
    batches: impl Iterator<Item = Result<Batch, String>>,
    out: std::sync::mpsc::SyncSender<Result<Batch, String>>,
) {
    for b in batches {
        let failed = b.is_err();
        if out.send(b).is_err() || failed {
            return;
        }
    }
}

/// Problem details, with `line`s moved from the batch to the file.
fn describe_failure(status: u16, body: &[u8], format: Format, batch: &Batch) -> String {
    let problem: Value = serde_json::from_slice(body).unwrap_or_default();
    let mut text = format!(
        "the server refused a batch ({status} {}): {}",
        problem["title"].as_str().unwrap_or(""),
        problem["detail"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
    );
    let errors = problem["errors"].as_array().cloned().unwrap_or_default();
    for e in errors.iter().take(50) {
        let line = e["line"].as_u64().map(|l| batch.file_line(format, l));
        let at = match line {
            Some(l) => format!("line {l}"),
            None => "body".to_string(),
        };
        text.push_str(&format!(
            "\n  {at}, {}: {}",
            e["pointer"]
                .as_str()
                .filter(|p| !p.is_empty())
                .unwrap_or("-"),
            e["message"].as_str().unwrap_or("")
        ));
    }
    if errors.len() > 50 {
        text.push_str(&format!("\n  … and {} more", errors.len() - 50));
    }
    text
}

struct Progress {
    bar: Option<ProgressBar>,
    started: Instant,
    last_line: Instant,
    total_bytes: u64,
}

impl Progress {
    /// `total_bytes` 0: the size is unknown (standard input).
    fn new(total_bytes: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let (bar, template) = if total_bytes == 0 {
                (
                    ProgressBar::new_spinner(),
                    "{spinner} {bytes} {msg} {binary_bytes_per_sec}",
                )
            } else {
                (
                    ProgressBar::new(total_bytes),
                    "{bar:30} {bytes}/{total_bytes} {msg} {binary_bytes_per_sec} ETA {eta}",
                )
            };
            let style = ProgressStyle::with_template(template)
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar
        });
        Progress {
            bar,
            started: Instant::now(),
            last_line: Instant::now(),
            total_bytes,
        }
    }

    fn update(&mut self, bytes: u64, rows: u64) {
        let rate = rows as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
        if let Some(bar) = &self.bar {
            bar.set_position(bytes);
            bar.set_message(format!("{rows} rows ({rate:.0} rows/s)"));
        } else if self.last_line.elapsed() >= Duration::from_secs(2) {
            self.last_line = Instant::now();
            let of = if self.total_bytes == 0 {
                String::new()
            } else {
                format!(" of {:.1}", self.total_bytes as f64 / 1e6)
            };
            eprintln!(
                "imported {rows} rows, {:.1}{of} MB read, {rate:.0} rows/s",
                bytes as f64 / 1e6
            );
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Runs the import; the summary line on success.
pub fn run(a: ImportArgs) -> Result<String, String> {
    let format = a.source.checked_format()?;
    let total_bytes = if is_stdin(&a.source.file) {
        0
    } else {
        std::fs::metadata(&a.source.file)
            .map_err(|e| format!("cannot open {}: {e}", a.source.file.display()))?
            .len()
    };
    let read = Arc::new(AtomicU64::new(0));
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let batch_rows = a.batch_rows.max(1);
    let base = crate::client::base_url(&a.target.url)?;
    let url = match format {
        Format::Csv => format!(
            "{base}/usage/{}/csv?{}",
            a.target.event,
            a.source.column_query()?
        ),
        Format::Ndjson => format!("{base}/usage/{}", a.target.event),
        Format::Arrow | Format::Parquet => {
            format!(
                "{base}/usage/{}?{}",
                a.target.event,
                a.source.column_query()?
            )
        }
    };
    let content_type = match format {
        Format::Csv => "text/csv",
        Format::Ndjson => "application/x-ndjson",
        Format::Arrow | Format::Parquet => ARROW_STREAM,
    };
    let reader = match format {
        Format::Csv | Format::Ndjson => {
            let input = open(&a.source.file, read.clone())?;
            std::thread::spawn(move || match format {
                Format::Csv => feed(csv_batches(input, batch_rows), tx),
                _ => feed(ndjson_batches(input, batch_rows), tx),
            })
        }
        Format::Arrow | Format::Parquet => {
            let path = a.source.file.clone();
            let read = read.clone();
            // Opened on the reader's thread: the readers need not be `Send`.
            std::thread::spawn(
                move || match columnar_batches(&path, format, read, batch_rows) {
                    Ok(batches) => feed(batches, tx),
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                },
            )
        }
    };
    let agent = crate::client::agent(Some(Duration::from_secs(600)));
    let mut progress = Progress::new(total_bytes);
    let mut committed = 0u64;
    let mut batches = 0u64;
    let outcome = (|| -> Result<(), String> {
        for batch in rx {
            let batch = batch?;
            send(
                &agent,
                &url,
                &a.target.api_key,
                content_type,
                &batch,
                format,
                committed,
            )?;
            committed += batch.rows;
            batches += 1;
            progress.update(read.load(Ordering::Relaxed), committed);
        }
        Ok(())
    })();
    progress.finish();
    // The reader stops at its next send once the receiver is gone.
    let _ = reader.join();
    let secs = progress.started.elapsed().as_secs_f64();
    match outcome {
        Ok(()) => Ok(format!(
            "imported {committed} rows in {batches} batches in {secs:.1} s ({:.0} rows/s)",
            committed as f64 / secs.max(1e-3)
        )),
        Err(e) => Err(format!(
            "{e}\n{committed} rows in {batches} earlier batches were committed; nothing of the failed batch was stored"
        )),
    }
}

/// Posts one batch; waits and retries while the server says it is overloaded.
fn send(
    agent: &ureq::Agent,
    url: &str,
    api_key: &str,
    content_type: &str,
    batch: &Batch,
    format: Format,
    committed: u64,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let mut resp = agent
            .post(url)
            .header("x-api-key", api_key)
            .header("content-type", content_type)
            .send(&batch.body[..])
            .map_err(|e| {
                format!("cannot reach the server after {committed} committed rows: {e}")
            })?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let body = resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .unwrap_or_default();
        match status {
            200 => return Ok(()),
            429 | 503 if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_secs(retry_after.unwrap_or(1).clamp(1, 30)));
            }
            _ => return Err(describe_failure(status, &body, format, batch)),
        }
    }
}
