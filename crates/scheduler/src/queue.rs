//! The scheduling queue, as upstream's: an active queue (FIFO) of pods to try now, a backoff queue
//! of pods that failed recently (1 s doubling to 10 s per attempt), and the unschedulable pods,
//! which move back when the cluster changes (a node added or changed, a pod deleted) or after at
//! most `MAX_UNSCHEDULABLE` without any change.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;

pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Upstream's podMaxInUnschedulablePodsDuration.
pub const MAX_UNSCHEDULABLE: Duration = Duration::from_secs(300);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Where {
    Active,
    Backoff,
    Unschedulable,
    /// Popped and being scheduled (or bound); a cluster change meanwhile is remembered.
    InFlight,
}

struct Entry {
    at: Where,
    attempts: u32,
    /// When the last attempt failed.
    failed_at: Option<Instant>,
    /// A cluster change happened while the pod was in flight: a failure goes to backoff, not
    /// unschedulable.
    moved_while_in_flight: bool,
}

#[derive(Default)]
struct Inner {
    active: VecDeque<String>,
    backoff: BinaryHeap<Reverse<(Instant, String)>>,
    entries: HashMap<String, Entry>,
}

#[derive(Default)]
pub struct Queue {
    inner: Mutex<Inner>,
    notify: Notify,
}

pub fn backoff_for(attempts: u32) -> Duration {
    let mut d = INITIAL_BACKOFF;
    for _ in 1..attempts {
        d *= 2;
        if d >= MAX_BACKOFF {
            return MAX_BACKOFF;
        }
    }
    d
}

impl Queue {
    /// A pod to schedule appeared or changed: queue it unless it is already queued or in flight.
    pub fn add(&self, key: &str) {
        let mut q = self.inner.lock();
        if let Some(e) = q.entries.get_mut(key) {
            // An update of an unschedulable pod may make it schedulable (upstream moves it too).
            if e.at == Where::Unschedulable {
                e.at = Where::Active;
                q.active.push_back(key.to_string());
                drop(q);
                self.notify.notify_one();
            }
            return;
        }
        q.entries.insert(
            key.to_string(),
            Entry {
                at: Where::Active,
                attempts: 0,
                failed_at: None,
                moved_while_in_flight: false,
            },
        );
        q.active.push_back(key.to_string());
        drop(q);
        self.notify.notify_one();
    }

    /// The pod is gone or was bound by someone: forget it.
    pub fn delete(&self, key: &str) {
        // Stale keys left in the active deque or the backoff heap are skipped when popped.
        self.inner.lock().entries.remove(key);
    }

    /// Waits for the next pod to try; None when `cancel` fires.
    pub async fn pop(&self, cancel: &tokio_util::sync::CancellationToken) -> Option<String> {
        loop {
            let notified = self.notify.notified();
            {
                let mut q = self.inner.lock();
                while let Some(key) = q.active.pop_front() {
                    if let Some(e) = q.entries.get_mut(&key) {
                        if e.at == Where::Active {
                            e.at = Where::InFlight;
                            e.attempts += 1;
                            e.moved_while_in_flight = false;
                            return Some(key);
                        }
                    }
                }
            }
            tokio::select! {
                _ = notified => {}
                _ = cancel.cancelled() => return None,
            }
        }
    }

    /// The attempt is over and the pod was bound (or is gone).
    pub fn done(&self, key: &str) {
        self.delete(key);
    }

    /// The attempt failed. `unschedulable`: no node fits (wait for a cluster change); else an
    /// error (retry after backoff).
    pub fn failed(&self, key: &str, unschedulable: bool) {
        let mut q = self.inner.lock();
        let Some(e) = q.entries.get_mut(key) else {
            return;
        };
        let now = Instant::now();
        e.failed_at = Some(now);
        if unschedulable && !e.moved_while_in_flight {
            e.at = Where::Unschedulable;
        } else {
            e.at = Where::Backoff;
            let at = now + backoff_for(e.attempts);
            q.backoff.push(Reverse((at, key.to_string())));
        }
    }

    /// The cluster changed: unschedulable pods go back to backoff (if still backing off) or active.
    pub fn move_all(&self) {
        let mut q = self.inner.lock();
        let now = Instant::now();
        let mut to_active = vec![];
        let mut to_backoff = vec![];
        for (k, e) in q.entries.iter_mut() {
            match e.at {
                Where::Unschedulable => {
                    let until = e.failed_at.map(|t| t + backoff_for(e.attempts));
                    match until {
                        Some(u) if u > now => {
                            e.at = Where::Backoff;
                            to_backoff.push(Reverse((u, k.clone())));
                        }
                        _ => {
                            e.at = Where::Active;
                            to_active.push(k.clone());
                        }
                    }
                }
                Where::InFlight => e.moved_while_in_flight = true,
                _ => {}
            }
        }
        q.backoff.extend(to_backoff);
        let woke = !to_active.is_empty();
        q.active.extend(to_active);
        drop(q);
        if woke {
            self.notify.notify_one();
        }
    }

    /// Moves pods whose backoff ended to active, and pods unschedulable for too long; run every
    /// second as upstream's flush loops do.
    pub fn flush(&self) {
        let mut q = self.inner.lock();
        let now = Instant::now();
        let mut woke = false;
        while let Some(Reverse((at, _))) = q.backoff.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, key))) = q.backoff.pop() else {
                break;
            };
            if let Some(e) = q.entries.get_mut(&key) {
                if e.at == Where::Backoff {
                    e.at = Where::Active;
                    q.active.push_back(key);
                    woke = true;
                }
            }
        }
        let stale: Vec<String> = q
            .entries
            .iter()
            .filter(|(_, e)| {
                e.at == Where::Unschedulable
                    && e.failed_at
                        .is_some_and(|t| now.duration_since(t) >= MAX_UNSCHEDULABLE)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            if let Some(e) = q.entries.get_mut(&k) {
                e.at = Where::Active;
            }
            q.active.push_back(k);
            woke = true;
        }
        drop(q);
        if woke {
            self.notify.notify_one();
        }
    }

    /// (active, backoff, unschedulable) counts, for the pending_pods metric.
    pub fn lengths(&self) -> (usize, usize, usize) {
        let q = self.inner.lock();
        let mut c = (0, 0, 0);
        for e in q.entries.values() {
            match e.at {
                Where::Active => c.0 += 1,
                Where::Backoff => c.1 += 1,
                Where::Unschedulable => c.2 += 1,
                Where::InFlight => {}
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::sync::CancellationToken;

    #[test]
    fn backoff_doubles_to_ten_seconds() {
        assert_eq!(backoff_for(1), Duration::from_secs(1));
        assert_eq!(backoff_for(2), Duration::from_secs(2));
        assert_eq!(backoff_for(4), Duration::from_secs(8));
        assert_eq!(backoff_for(5), Duration::from_secs(10));
        assert_eq!(backoff_for(50), Duration::from_secs(10));
    }

    #[tokio::test]
    async fn unschedulable_waits_for_a_change() {
        let q = Queue::default();
        let c = CancellationToken::new();
        q.add("ns/a");
        q.add("ns/a");
        assert_eq!(q.pop(&c).await.as_deref(), Some("ns/a"));
        q.failed("ns/a", true);
        assert_eq!(q.lengths(), (0, 0, 1));
        q.flush();
        assert_eq!(q.lengths(), (0, 0, 1));
        q.move_all();
        // Still in its 1 s backoff.
        assert_eq!(q.lengths(), (0, 1, 0));
        q.delete("ns/a");
        assert_eq!(q.lengths(), (0, 0, 0));
    }

    #[tokio::test]
    async fn change_while_in_flight_goes_to_backoff() {
        let q = Queue::default();
        let c = CancellationToken::new();
        q.add("ns/b");
        assert_eq!(q.pop(&c).await.as_deref(), Some("ns/b"));
        q.move_all();
        q.failed("ns/b", true);
        assert_eq!(q.lengths(), (0, 1, 0));
    }
}
