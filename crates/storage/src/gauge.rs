//! Buffer memory accounting: bytes buffered in all tables, and writes waiting for room.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes buffered in all tables, with a wake-up for writes waiting for room: a write that
/// finds the buffer full waits (bounded) for a persist to free some instead of being refused
/// at once, so a client under load is slowed, not bounced for a whole `Retry-After`.
#[derive(Debug, Default)]
pub(crate) struct BufferGauge {
    bytes: AtomicUsize,
    /// Bytes of writes waiting for room (held in memory outside the buffer).
    waiting: AtomicUsize,
    room: tokio::sync::Notify,
}

/// A write's place among those waiting for room; gives it back when dropped.
pub(crate) struct Waiting<'a> {
    gauge: &'a BufferGauge,
    bytes: usize,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.gauge.waiting.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

impl BufferGauge {
    pub(crate) fn get(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn add(&self, n: usize) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// Follows a chunk whose size went from `before` to `after` bytes (a merge of small
    /// writes can shrink it).
    pub(crate) fn resize(&self, before: usize, after: usize) {
        if after >= before {
            self.add(after - before);
        } else {
            self.release(before - after);
        }
    }

    pub(crate) fn release(&self, n: usize) {
        self.bytes.fetch_sub(n, Ordering::Relaxed);
        self.room.notify_waiters();
    }

    /// Joins the writes waiting for room unless `limit` bytes already wait.
    pub(crate) fn wait_in_line(&self, bytes: usize, limit: usize) -> Option<Waiting<'_>> {
        self.waiting
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
                (w == 0 || w + bytes <= limit).then_some(w + bytes)
            })
            .ok()
            .map(|_| Waiting { gauge: self, bytes })
    }

    /// Resolves once the buffer holds fewer than `limit` bytes.
    pub(crate) async fn room_below(&self, limit: usize) {
        loop {
            let mut notified = std::pin::pin!(self.room.notified());
            // Registered before the check, so a release between the check and the wait
            // still wakes it.
            notified.as_mut().enable();
            if self.get() < limit {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn a_write_waiting_for_room_wakes_when_a_persist_frees_bytes() {
        let gauge = Arc::new(BufferGauge::default());
        gauge.add(100);
        let waiter = tokio::spawn({
            let gauge = gauge.clone();
            async move { gauge.room_below(100).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        gauge.release(1);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken by the release")
            .expect("no panic");
    }

    #[test]
    fn writes_waiting_for_room_are_capped_but_one_always_may() {
        let gauge = BufferGauge::default();
        let big = gauge
            .wait_in_line(1_000, 10)
            .expect("the first waits whatever its size");
        assert!(gauge.wait_in_line(1, 10).is_none());
        drop(big);
        let a = gauge.wait_in_line(6, 10).expect("room in line");
        assert!(gauge.wait_in_line(5, 10).is_none());
        let _b = gauge.wait_in_line(4, 10).expect("fits");
        drop(a);
        assert_eq!(gauge.waiting.load(Ordering::Relaxed), 4);
    }
}
