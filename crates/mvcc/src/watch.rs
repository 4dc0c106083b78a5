//! The watch hub (etcd's watchableStore): watchers that are caught up ("synced") get each committed
//! batch of events pushed into a bounded channel without waiting; a watcher whose channel is full,
//! or that starts in the past, is "unsynced" and catches up from the backend in its own task, so a
//! slow watcher never blocks a writer.

use std::collections::HashMap;
use std::sync::Arc;

use etcd_api::enums::event_type;
use etcd_api::{PbEvent, PbKeyValue};
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::index::in_range;
use crate::Store;

/// What a watcher receives: events of one or more revisions, or the end because its start
/// revision was compacted away.
#[derive(Debug, Clone)]
pub enum WatchMsg {
    Events { revision: i64, events: Vec<PbEvent> },
    Compacted { compact_revision: i64 },
}

#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    pub no_put: bool,
    pub no_delete: bool,
}

impl Filter {
    fn matches(&self, ev: &PbEvent) -> bool {
        let Some(kv) = &ev.kv else { return false };
        if ev.r#type == event_type::PUT && self.no_put
            || ev.r#type == event_type::DELETE && self.no_delete
        {
            return false;
        }
        in_range(&kv.key, &self.key, &self.range_end)
    }

    fn select(&self, evs: &[PbEvent], from_rev: i64) -> Vec<PbEvent> {
        evs.iter()
            .filter(|e| {
                e.kv.as_ref().is_some_and(|kv| kv.mod_revision >= from_rev) && self.matches(e)
            })
            .cloned()
            .collect()
    }
}

struct Watcher {
    filter: Filter,
    tx: mpsc::Sender<WatchMsg>,
    /// The first revision not yet delivered.
    next_rev: i64,
    synced: bool,
}

struct Inner {
    watchers: HashMap<u64, Watcher>,
    next_id: u64,
    /// Newest revision whose events were published.
    last_rev: i64,
}

pub struct WatchHub {
    inner: Mutex<Inner>,
}

/// Capacity of a watcher's channel in batches before it falls back to catching up.
const CHANNEL: usize = 1024;
/// Revisions read from the backend per catch-up step.
const CATCHUP_STEP: i64 = 1000;

pub fn event(tomb: bool, kv: PbKeyValue) -> PbEvent {
    if tomb {
        let kv = PbKeyValue {
            key: kv.key,
            mod_revision: kv.mod_revision,
            ..Default::default()
        };
        PbEvent {
            r#type: event_type::DELETE,
            kv: Some(kv),
            prev_kv: None,
        }
    } else {
        PbEvent {
            r#type: event_type::PUT,
            kv: Some(kv),
            prev_kv: None,
        }
    }
}

/// A registered watcher: receive its messages; dropping it unregisters the watcher.
pub struct Subscription {
    pub id: u64,
    pub rx: mpsc::Receiver<WatchMsg>,
    store: Arc<Store>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.store.hub.inner.lock().watchers.remove(&self.id);
    }
}

impl WatchHub {
    pub fn new(rev: i64) -> Self {
        WatchHub {
            inner: Mutex::new(Inner {
                watchers: HashMap::new(),
                next_id: 1,
                last_rev: rev,
            }),
        }
    }

    /// Publishes the events committed at `rev` to synced watchers (called by the apply path).
    pub(crate) fn publish(&self, rev: i64, events: &[PbEvent]) {
        let mut g = self.inner.lock();
        g.last_rev = rev;
        if events.is_empty() {
            return;
        }
        let mut closed = Vec::new();
        for (id, w) in g.watchers.iter_mut().filter(|(_, w)| w.synced) {
            let evs = w.filter.select(events, w.next_rev);
            if evs.is_empty() {
                continue;
            }
            match w.tx.try_send(WatchMsg::Events {
                revision: rev,
                events: evs,
            }) {
                Ok(()) => w.next_rev = rev + 1,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    w.synced = false;
                    w.next_rev = rev;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => closed.push(*id),
            }
        }
        for id in closed {
            g.watchers.remove(&id);
        }
    }

    /// After the store's contents were replaced (a snapshot installed), every watcher catches up
    /// from the backend from where it was, up to `rev`.
    pub(crate) fn desync_all(&self, rev: i64) {
        let mut g = self.inner.lock();
        g.last_rev = rev;
        for w in g.watchers.values_mut().filter(|w| w.synced) {
            w.synced = false;
        }
    }

    pub fn watcher_count(&self) -> usize {
        self.inner.lock().watchers.len()
    }
}

impl Store {
    /// Registers a watcher from `start_rev` (0: the next revision on).
    pub fn watch(self: &Arc<Self>, filter: Filter, start_rev: i64) -> Subscription {
        let (tx, rx) = mpsc::channel(CHANNEL);
        let mut g = self.hub.inner.lock();
        let id = g.next_id;
        g.next_id += 1;
        let next_rev = if start_rev <= 0 {
            g.last_rev + 1
        } else {
            start_rev
        };
        let synced = next_rev > g.last_rev;
        g.watchers.insert(
            id,
            Watcher {
                filter,
                tx,
                next_rev,
                synced,
            },
        );
        drop(g);
        let sub = Subscription {
            id,
            rx,
            store: self.clone(),
        };
        if !synced {
            self.spawn_catchup(id);
        }
        sub
    }

    /// Finds unsynced watchers that fell behind and starts their catch-up (called after publish).
    pub(crate) fn resync(self: &Arc<Self>) {
        let ids: Vec<u64> = {
            let mut g = self.hub.inner.lock();
            let ids = g
                .watchers
                .iter_mut()
                .filter(|(_, w)| !w.synced && w.next_rev > 0)
                .map(|(id, _)| *id);
            let ids: Vec<u64> = ids.collect();
            for id in &ids {
                // next_rev = -next_rev marks "catch-up running" so it is started only once.
                if let Some(w) = g.watchers.get_mut(id) {
                    w.next_rev = -w.next_rev;
                }
            }
            ids
        };
        for id in ids {
            self.clone().run_catchup(id);
        }
    }

    fn spawn_catchup(self: &Arc<Self>, id: u64) {
        if let Some(w) = self.hub.inner.lock().watchers.get_mut(&id) {
            w.next_rev = -w.next_rev;
        }
        self.clone().run_catchup(id);
    }

    fn run_catchup(self: Arc<Self>, id: u64) {
        tokio::spawn(async move {
            loop {
                let (filter, tx, from, last) = {
                    let g = self.hub.inner.lock();
                    let Some(w) = g.watchers.get(&id) else { return };
                    (w.filter.clone(), w.tx.clone(), -w.next_rev, g.last_rev)
                };
                let compact = self.compact_revision();
                if from < compact {
                    let _ = tx
                        .send(WatchMsg::Compacted {
                            compact_revision: compact,
                        })
                        .await;
                    self.hub.inner.lock().watchers.remove(&id);
                    return;
                }
                let to = last.min(from + CATCHUP_STEP - 1);
                if from <= to {
                    let evs = match self.events(from, to) {
                        Ok(evs) => evs,
                        Err(e) => {
                            tracing::warn!(watcher = id, "watch catch-up read failed: {e}");
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let evs = filter.select(&evs, from);
                    if !evs.is_empty()
                        && tx
                            .send(WatchMsg::Events {
                                revision: to,
                                events: evs,
                            })
                            .await
                            .is_err()
                    {
                        return;
                    }
                }
                let mut g = self.hub.inner.lock();
                let last_now = g.last_rev;
                let Some(w) = g.watchers.get_mut(&id) else {
                    return;
                };
                w.next_rev = -(to + 1);
                if to >= last_now {
                    w.next_rev = to + 1;
                    w.synced = true;
                    return;
                }
            }
        });
    }
}
