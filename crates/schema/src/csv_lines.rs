//! What the `csv` crate does not say about a CSV file, learned from its raw bytes as they are
//! read: the line each record starts on, and whether the input ends inside a quoted field.
//!
//! `csv` reports a record's position as where its read began, which is before the `\n` of a
//! CRLF line end and before skipped blank lines, so rows of a CRLF file came out one line too
//! low. And at the end of input it closes an open quoted field silently, so one unterminated
//! quote swallowed every row after it into one cell. `CsvLines` follows the same automaton as
//! `csv_core` (comma, double quote, doubled quotes as escapes, CR, LF or CRLF line ends) over
//! the bytes on their way in, so it sees exactly the records the reader will return.

use std::collections::VecDeque;
use std::io::Read;

/// Where a quoted field opened that the input never closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unterminated {
    /// 0-based index of the record holding it (the header is record 0).
    pub record: u64,
    /// 1-based line of its opening quote.
    pub line: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between records: line ends here are skipped.
    StartRecord,
    StartField,
    InField,
    InQuoted,
    /// A quote inside a quoted field: closes it, or escapes a second quote.
    AfterQuote,
    /// After a CR ending a record: an LF right after belongs to the same line end.
    Crlf,
}

/// A `Read` that passes bytes through unchanged and follows the records in them.
pub struct CsvLines<R> {
    inner: R,
    state: State,
    /// 1-based line of the next byte.
    line: u64,
    records_started: u64,
    quote_line: u64,
    /// Start lines of records read from `inner` and not yet claimed by `next_record_line`.
    record_lines: VecDeque<u64>,
    unterminated: Option<Unterminated>,
    at_end: bool,
}

impl<R: Read> CsvLines<R> {
    pub fn new(inner: R) -> CsvLines<R> {
        CsvLines {
            inner,
            state: State::StartRecord,
            line: 1,
            records_started: 0,
            quote_line: 0,
            record_lines: VecDeque::new(),
            unterminated: None,
            at_end: false,
        }
    }

    /// The start line of the next record, in the order the CSV reader returns them. Call once
    /// per record read.
    pub fn next_record_line(&mut self) -> Option<u64> {
        self.record_lines.pop_front()
    }

    /// Set once the input has ended inside a quoted field. A CSV reader can only return the
    /// record holding it after reaching the end of input, so checking after each record is
    /// enough to catch it.
    pub fn unterminated(&self) -> Option<Unterminated> {
        self.unterminated
    }

    fn start_record(&mut self) {
        self.record_lines.push_back(self.line);
        self.records_started += 1;
        self.state = State::StartField;
    }

    fn scan(&mut self, bytes: &[u8]) {
        let mut i = 0;
        while i < bytes.len() {
            let c = bytes[i];
            match self.state {
                State::StartRecord => {
                    if c == b'\r' || c == b'\n' {
                        self.line += u64::from(c == b'\n');
                        i += 1;
                        continue;
                    }
                    self.start_record();
                    // The same byte starts the first field.
                }
                State::Crlf => {
                    self.state = State::StartRecord;
                    if c == b'\n' {
                        self.line += 1;
                        i += 1;
                    }
                }
                State::StartField => {
                    i += 1;
                    match c {
                        b'"' => {
                            self.quote_line = self.line;
                            self.state = State::InQuoted;
                        }
                        b',' => {}
                        b'\r' | b'\n' => self.end_record(c),
                        _ => self.state = State::InField,
                    }
                }
                State::InField => match memchr::memchr3(b',', b'\r', b'\n', &bytes[i..]) {
                    None => i = bytes.len(),
                    Some(at) => {
                        let c = bytes[i + at];
                        i += at + 1;
                        if c == b',' {
                            self.state = State::StartField;
                        } else {
                            self.end_record(c);
                        }
                    }
                },
                State::InQuoted => {
                    let rest = &bytes[i..];
                    let end = memchr::memchr(b'"', rest).unwrap_or(rest.len());
                    self.line += memchr::memchr_iter(b'\n', &rest[..end]).count() as u64;
                    i += end;
                    if i < bytes.len() {
                        i += 1;
                        self.state = State::AfterQuote;
                    }
                }
                State::AfterQuote => {
                    i += 1;
                    match c {
                        b'"' => self.state = State::InQuoted,
                        b',' => self.state = State::StartField,
                        b'\r' | b'\n' => self.end_record(c),
                        _ => self.state = State::InField,
                    }
                }
            }
        }
    }

    /// A record ends at CR or LF (consumed); a CR may be followed by the LF of a CRLF.
    fn end_record(&mut self, c: u8) {
        if c == b'\n' {
            self.line += 1;
            self.state = State::StartRecord;
        } else {
            self.state = State::Crlf;
        }
    }

    fn finish(&mut self) {
        if self.at_end {
            return;
        }
        self.at_end = true;
        if self.state == State::InQuoted {
            self.unterminated = Some(Unterminated {
                record: self.records_started.saturating_sub(1),
                line: self.quote_line,
            });
        }
    }
}

impl<R: Read> Read for CsvLines<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.finish();
        } else {
            self.scan(&buf[..n]);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Record start lines and the unterminated quote, reading `data` in pieces of `step`.
    fn scan(data: &[u8], step: usize) -> (Vec<u64>, Option<Unterminated>) {
        let mut lines = CsvLines::new(data);
        let mut buf = vec![0; step];
        while lines.read(&mut buf).unwrap() > 0 {}
        let mut starts = Vec::new();
        while let Some(l) = lines.next_record_line() {
            starts.push(l);
        }
        (starts, lines.unterminated())
    }

    #[test]
    fn lf_crlf_and_cr_line_ends() {
        for step in [1, 2, 3, 64] {
            assert_eq!(scan(b"h,i\na,b\nc,d\n", step).0, vec![1, 2, 3]);
            assert_eq!(scan(b"h,i\r\na,b\r\nc,d\r\n", step).0, vec![1, 2, 3]);
            // Rows of a file with bare-CR line ends share one line: lines count LFs.
            assert_eq!(scan(b"h,i\ra,b\rc,d", step).0, vec![1, 1, 1]);
            assert_eq!(scan(b"h,i\n\na,b\n\r\n\r\nc,d", step).0, vec![1, 3, 6]);
        }
    }

    #[test]
    fn quoted_line_ends_stay_in_their_record() {
        let data = b"h,i\r\n\"a\r\nb\",\"x\"\"y\"\r\nc,d\r\n";
        assert_eq!(scan(data, 1), (vec![1, 2, 4], None));
    }

    #[test]
    fn an_unclosed_quote_is_reported_with_its_line() {
        let data = b"customer_id,timestamp,cpu,region\nc_unterm,2025-06-17T14:03:12Z,1,\"oops\nc_next,2025-06-17T14:03:12Z,1,x\n";
        for step in [1, 5, 4096] {
            let (starts, open) = scan(data, step);
            assert_eq!(starts, vec![1, 2]);
            assert_eq!(open, Some(Unterminated { record: 1, line: 2 }));
        }
        // A closed quote at the very end is fine.
        assert_eq!(scan(b"h\n\"a\"", 1).1, None);
        assert_eq!(scan(b"\"h", 1).1, Some(Unterminated { record: 0, line: 1 }));
    }

    #[test]
    fn the_same_records_as_the_csv_reader() {
        let cases: [&[u8]; 6] = [
            b"a,b\n\"x\ny\",z\n",
            b"a\r\r\n\nb",
            b"\"a\"b,\"c\"\"\r\nd",
            b"a,\"\"\"\"\n,\n,,\r\n",
            b"\n\n\r\r",
            b"x\"y,\"z\n",
        ];
        for data in cases {
            let mut reader = ::csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(CsvLines::new(data));
            let mut record = ::csv::ByteRecord::new();
            let mut records = 0;
            while reader.read_byte_record(&mut record).unwrap() {
                records += 1;
                assert!(reader.get_mut().next_record_line().is_some());
            }
            assert_eq!(reader.get_mut().next_record_line(), None, "{data:?}");
            assert!(records > 0 || data.iter().all(|b| *b == b'\r' || *b == b'\n'));
        }
    }
}
