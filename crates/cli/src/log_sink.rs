//! Where the server's log lines go: standard error, written a batch at a time.
//!
//! Every request logs one info line. Written straight to stderr, each line was a `write`
//! syscall on the request's thread, and a logging thread fed line by line (tracing-appender)
//! paid a wake-up per line instead: either way about a fifth of a single-event POST's CPU.
//! Here info and debug lines collect in a buffer that a flusher thread writes every
//! `FLUSH_EVERY` (or sooner, when it fills up); a warning or an error flushes the buffer at
//! once, with everything logged before it, so what precedes a failure is never held back.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// A buffer this full is written by the thread that filled it.
const FULL: usize = 256 << 10;

#[derive(Default)]
struct State {
    lines: Vec<u8>,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Held while writing, so two flushes cannot reorder lines.
    out: Mutex<()>,
    wake: Condvar,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes what is buffered. A failed write to stderr has nowhere to be reported.
    fn flush(&self) {
        let _out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let lines = std::mem::take(&mut self.state().lines);
        if !lines.is_empty() {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(&lines);
            let _ = err.flush();
        }
    }
}

/// The `MakeWriter` handed to tracing-subscriber.
#[derive(Clone)]
pub struct LogSink(Arc<Shared>);

/// Flushes what is buffered and stops the flusher when dropped: keep it alive until exit.
pub struct FlushOnDrop {
    shared: Arc<Shared>,
    flusher: Option<std::thread::JoinHandle<()>>,
}

impl LogSink {
    pub fn start() -> (Self, FlushOnDrop) {
        let shared = Arc::new(Shared::default());
        let flusher = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("meterbase-log".into())
                .spawn(move || {
                    loop {
                        let state = shared.state();
                        let (state, _) = shared
                            .wake
                            .wait_timeout(state, FLUSH_EVERY)
                            .unwrap_or_else(|p| p.into_inner());
                        let closed = state.closed;
                        drop(state);
                        shared.flush();
                        if closed {
                            return;
                        }
                    }
                })
                .ok()
        };
        (LogSink(shared.clone()), FlushOnDrop { shared, flusher })
    }
}

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        self.shared.state().closed = true;
        self.shared.wake.notify_one();
        if let Some(flusher) = self.flusher.take() {
            let _ = flusher.join();
        }
        self.shared.flush();
    }
}

/// One event's writer: appends to the buffer; a warning or an error flushes when done.
pub struct LineWriter {
    shared: Arc<Shared>,
    urgent: bool,
}

impl Write for LineWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let full = {
            let mut state = self.shared.state();
            state.lines.extend_from_slice(bytes);
            state.lines.len() >= FULL
        };
        if full {
            self.shared.flush();
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if self.urgent {
            self.shared.flush();
        }
    }
}

impl<'a> MakeWriter<'a> for LogSink {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter {
            shared: self.0.clone(),
            urgent: true,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> LineWriter {
        LineWriter {
            shared: self.0.clone(),
            urgent: *meta.level() <= Level::WARN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_kept_in_order_until_flushed() {
        let (sink, guard) = LogSink::start();
        for i in 0..3 {
            let mut w = sink.make_writer();
            w.urgent = false;
            writeln!(w, "line {i}").unwrap();
        }
        assert_eq!(sink.0.state().lines, b"line 0\nline 1\nline 2\n");
        drop(guard);
        assert!(sink.0.state().lines.is_empty());
    }

    #[test]
    fn a_warning_flushes_what_came_before_it() {
        let (sink, _guard) = LogSink::start();
        let mut info = sink.make_writer();
        info.urgent = false;
        info.write_all(b"info\n").unwrap();
        drop(info);
        let mut warn = sink.make_writer();
        warn.write_all(b"warn\n").unwrap();
        drop(warn);
        assert!(sink.0.state().lines.is_empty());
    }
}
