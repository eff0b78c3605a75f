//! Which queries may run now. At most `max_running` at once, and at most `per_org` of one
//! organisation, so there is always room for another tenant: a tenant's heavy queries queue
//! behind each other, not in front of everyone's invoices. When a query ends, the next to
//! start is taken from the organisations in turn (first come first served within one), so a
//! tenant with a long queue does not starve one with a short one. A query that cannot start
//! before its deadline is refused (the caller answers 503 with `Retry-After`).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::oneshot;

/// How many queries run and wait now, and how many were refused a start so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    pub running: usize,
    pub queued: usize,
    pub refused: u64,
}

#[derive(Default)]
struct State {
    running: usize,
    running_by_org: HashMap<String, usize>,
    waiting: HashMap<String, VecDeque<oneshot::Sender<Permit>>>,
    /// Organisations with someone waiting, in the order they get the next free slot.
    turn: VecDeque<String>,
    queued: usize,
}

pub(crate) struct Admission {
    state: Mutex<State>,
    max_running: usize,
    per_org: usize,
    refused: AtomicU64,
}

/// A running query's slot, given back when dropped (also if it was never received: a permit
/// left in the channel of a caller that went away is dropped with the channel).
pub(crate) struct Permit {
    /// `None` once the slot was given back by other means (see `dispatch`).
    admission: Option<Arc<Admission>>,
    org: String,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(a) = self.admission.take() {
            a.release(&self.org);
        }
    }
}

/// Could not start before the deadline.
#[derive(Debug)]
pub(crate) struct Busy;

impl Admission {
    pub(crate) fn new(max_running: usize, per_org: usize) -> Arc<Admission> {
        let max_running = max_running.max(1);
        Arc::new(Admission {
            state: Mutex::new(State::default()),
            max_running,
            per_org: per_org.clamp(1, max_running),
            refused: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn load(&self) -> Load {
        let st = self.lock();
        Load {
            running: st.running,
            queued: st.queued,
            refused: self.refused.load(Ordering::Relaxed),
        }
    }

    fn may_start(&self, st: &State, org: &str) -> bool {
        st.running < self.max_running
            && st.running_by_org.get(org).copied().unwrap_or(0) < self.per_org
    }

    fn start(self: &Arc<Self>, st: &mut State, org: &str) -> Permit {
        st.running += 1;
        *st.running_by_org.entry(org.to_string()).or_default() += 1;
        Permit {
            admission: Some(self.clone()),
            org: org.to_string(),
        }
    }

    /// A slot for one query of `org`, waiting for one until `deadline` at most.
    pub(crate) async fn admit(
        self: &Arc<Self>,
        org: &str,
        deadline: Instant,
    ) -> Result<Permit, Busy> {
        let rx = {
            let mut st = self.lock();
            let nobody_of_org_waits = st.waiting.get(org).is_none_or(|q| q.is_empty());
            if nobody_of_org_waits && self.may_start(&st, org) {
                return Ok(self.start(&mut st, org));
            }
            let (tx, rx) = oneshot::channel();
            if nobody_of_org_waits {
                st.turn.push_back(org.to_string());
            }
            st.waiting.entry(org.to_string()).or_default().push_back(tx);
            st.queued += 1;
            rx
        };
        match tokio::time::timeout_at(deadline.into(), rx).await {
            Ok(Ok(permit)) => Ok(permit),
            // Timed out, or (cannot happen while we hold the receiver) the sender was dropped.
            _ => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                // Our sender is still queued unless a permit was just sent to it; either way
                // `dispatch` skips senders whose receiver is gone.
                self.forget_closed();
                Err(Busy)
            }
        }
    }

    fn release(self: &Arc<Self>, org: &str) {
        let mut st = self.lock();
        st.running = st.running.saturating_sub(1);
        if let Some(n) = st.running_by_org.get_mut(org) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                st.running_by_org.remove(org);
            }
        }
        self.dispatch(&mut st);
    }

    /// Starts waiting queries while there is room, taking organisations in turn.
    fn dispatch(self: &Arc<Self>, st: &mut State) {
        let mut passes_without_start = 0;
        while st.running < self.max_running && passes_without_start < st.turn.len() {
            let Some(org) = st.turn.pop_front() else {
                break;
            };
            if !self.may_start(st, &org) {
                st.turn.push_back(org);
                passes_without_start += 1;
                continue;
            }
            let Some(tx) = st.waiting.get_mut(&org).and_then(|q| q.pop_front()) else {
                continue;
            };
            st.queued = st.queued.saturating_sub(1);
            let more = st.waiting.get(&org).is_some_and(|q| !q.is_empty());
            if more {
                st.turn.push_back(org.clone());
            } else {
                st.waiting.remove(&org);
            }
            if tx.is_closed() {
                continue;
            }
            let permit = self.start(st, &org);
            // A receiver dropped between the check and the send hands the permit back; its
            // drop would take this lock again, so the slot is given back here instead.
            if let Err(mut unsent) = tx.send(permit) {
                unsent.admission = None;
                st.running -= 1;
                if let Some(n) = st.running_by_org.get_mut(&org) {
                    *n -= 1;
                }
            }
            passes_without_start = 0;
        }
    }

    /// Drops waiters whose caller stopped waiting.
    fn forget_closed(self: &Arc<Self>) {
        let mut st = self.lock();
        let mut gone = 0;
        st.waiting.retain(|_, q| {
            let before = q.len();
            q.retain(|tx| !tx.is_closed());
            gone += before - q.len();
            !q.is_empty()
        });
        st.queued = st.queued.saturating_sub(gone);
        let waiting: Vec<String> = st.waiting.keys().cloned().collect();
        st.turn.retain(|o| waiting.contains(o));
        self.dispatch(&mut st);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn soon(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    #[tokio::test]
    async fn a_tenant_with_a_queue_does_not_delay_another() {
        let a = Admission::new(2, 1);
        let heavy = a.admit("acme", soon(1000)).await.expect("first");
        // acme's second query waits: acme may run one at a time.
        let waiting = tokio::spawn({
            let a = a.clone();
            async move { a.admit("acme", soon(5000)).await.is_ok() }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(a.load().queued, 1);
        // Another tenant starts at once.
        let other = a
            .admit("globex", soon(10))
            .await
            .expect("room for another tenant");
        drop(heavy);
        assert!(waiting.await.expect("task"));
        drop(other);
        assert_eq!(
            a.load(),
            Load {
                running: 0,
                queued: 0,
                refused: 0
            }
        );
    }

    #[tokio::test]
    async fn waiting_past_the_deadline_is_refused_and_forgotten() {
        let a = Admission::new(1, 1);
        let held = a.admit("acme", soon(100)).await.expect("first");
        assert!(a.admit("globex", soon(30)).await.is_err());
        assert_eq!(a.load().refused, 1);
        assert_eq!(a.load().queued, 0);
        drop(held);
        assert!(a.admit("globex", soon(30)).await.is_ok());
    }

    #[tokio::test]
    async fn organisations_take_turns_for_free_slots() {
        let a = Admission::new(1, 1);
        let held = a.admit("x", soon(1000)).await.expect("first");
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (org, n) in [("a", 0), ("a", 1), ("a", 2), ("b", 0)] {
            let (a, order) = (a.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let p = a.admit(org, soon(5000)).await.expect("admitted");
                order.lock().unwrap().push(format!("{org}{n}"));
                tokio::time::sleep(Duration::from_millis(5)).await;
                drop(p);
            }));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(held);
        for t in tasks {
            t.await.expect("task");
        }
        assert_eq!(*order.lock().unwrap(), ["a0", "b0", "a1", "a2"]);
    }
}
