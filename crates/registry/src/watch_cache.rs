//! The watch cache, upstream's cacher reduced to what watch fan-out needs: ONE store watch per
//! resource, shared by every watch of that resource on this API server. Each stored change is
//! decoded once, its selectable attributes (labels, fields) computed once, and each of its event
//! lines (`{"type":..,"object":..}`) serialised at most once, however many watchers receive it.
//! Watchers read a ring of the most recent changes by revision and filter it themselves
//! (namespace, label and field selectors), so the store's watch never waits on a slow client.
//!
//! What stays exact: a watcher starts only from a revision the ring covers completely, after a
//! check that the store has not compacted it; a watcher that falls behind the ring, or whose cache
//! stops (the store ended its watch, or nobody watched for a while), continues on a store watch
//! of its own from the last revision it was sent (`watch.rs`), so no event is lost or repeated and
//! 410 Gone is answered from the store as before.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use apimachinery::{meta, FieldSelector, LabelSelector};
use bytes::Bytes;
use etcd_api::enums::event_type;
use futures::StreamExt;
use parking_lot::Mutex;
use serde_json::Value;
use store::{WatchSpec, WatchStream};
use tokio::sync::watch;

use crate::kvutil;
use crate::store::GenericStore;
use crate::watch::WatchEvent;

/// Changes kept per resource. A watcher more than this many changes behind continues on its own
/// store watch; a new watch from a revision older than the ring is served by the store.
pub(crate) const CAPACITY: usize = 1024;
/// A cache nobody has watched through for this long stops (a later watch starts a new one).
const IDLE: Duration = Duration::from_secs(300);

/// What label and field selectors are matched against, computed once per stored state.
#[derive(Debug, Default)]
pub(crate) struct Attrs {
    labels: Vec<(String, String)>,
    fields: Vec<(&'static str, String)>,
}

impl Attrs {
    pub fn matches(&self, label: &LabelSelector, field: &FieldSelector) -> bool {
        if !label.is_empty() {
            let l: Vec<(&str, &str)> = self
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            if !label.matches(&l) {
                return false;
            }
        }
        field.is_empty() || field.matches(&self.fields)
    }
}

/// One change of one key, decoded, as every watcher of the resource sees it.
pub(crate) struct Change {
    pub rev: i64,
    pub key: Vec<u8>,
    pub delete: bool,
    /// Created by this change (or no previous state is known).
    pub created: bool,
    /// The new state; for a deletion the last state, with the deletion's resourceVersion.
    pub object: Arc<Value>,
    pub attrs: Attrs,
    /// The previous state's attributes, when there was one.
    pub prev: Option<Attrs>,
    /// The event lines, ADDED, MODIFIED and DELETED, serialised on first use.
    lines: [Arc<OnceLock<Bytes>>; 3],
}

impl Change {
    /// The event a watcher with these selectors gets for this change, if any. An object that
    /// starts matching is ADDED and one that stops matching is DELETED, as upstream's cacher does.
    pub fn event_for(&self, label: &LabelSelector, field: &FieldSelector) -> Option<WatchEvent> {
        let prev_match = self.prev.as_ref().is_some_and(|p| p.matches(label, field));
        let (type_, line) = if self.delete {
            if !prev_match {
                return None;
            }
            ("DELETED", 2)
        } else {
            let cur_match = self.attrs.matches(label, field);
            match (cur_match, prev_match, self.created) {
                (true, _, true) | (true, false, false) => ("ADDED", 0),
                (true, true, false) => ("MODIFIED", 1),
                (false, true, _) => ("DELETED", 2),
                (false, false, _) => return None,
            }
        };
        Some(WatchEvent::shared(
            type_,
            self.object.clone(),
            self.lines[line].clone(),
        ))
    }
}

impl GenericStore {
    /// The attributes selectors of this resource match against.
    pub(crate) fn attrs(&self, obj: &Value) -> Attrs {
        Attrs {
            labels: meta::labels(obj)
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            fields: self.selectable_fields(obj),
        }
    }

    /// A store event decoded into a change; None when it cannot be (logged: a value that is not
    /// this resource's JSON, or a deletion whose previous state is gone).
    pub(crate) fn change(&self, ev: etcd_api::PbEvent) -> Option<Change> {
        let kv = ev.kv?;
        let decode = |kv: &etcd_api::PbKeyValue| match self.decode(kv) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(
                    key = %String::from_utf8_lossy(&kv.key),
                    revision = kv.mod_revision,
                    "watch: skipping a change that cannot be decoded: {}",
                    e.message
                );
                None
            }
        };
        let prev = ev.prev_kv.as_ref().and_then(decode);
        let prev_attrs = prev.as_ref().map(|p| self.attrs(p));
        let delete = ev.r#type == event_type::DELETE;
        let object = if delete {
            let mut obj = prev?;
            meta::set_resource_version(&mut obj, kv.mod_revision);
            obj
        } else {
            decode(&kv)?
        };
        Some(Change {
            rev: kv.mod_revision,
            created: kv.create_revision == kv.mod_revision || prev_attrs.is_none(),
            attrs: self.attrs(&object),
            object: Arc::new(object),
            prev: prev_attrs,
            key: kv.key,
            delete,
            lines: Default::default(),
        })
    }
}

struct Ring {
    changes: VecDeque<Arc<Change>>,
    /// Every change with a revision above this one is in `changes` (or still to come).
    oldest: i64,
    /// The cache has every change up to this revision.
    complete: i64,
    closed: bool,
}

/// What a watcher reads from the cache.
pub(crate) enum Read {
    /// The changes after the watcher's revision, and the revision the cache is complete up to.
    Changes(Vec<Arc<Change>>, i64),
    /// The watcher's revision is older than the ring, or the cache stopped.
    Gone,
}

/// One resource's watch cache.
pub(crate) struct Cache {
    ring: Mutex<Ring>,
    /// Carries `complete`: every watcher waits on it for new changes.
    notify: watch::Sender<i64>,
}

impl Cache {
    fn new(start: i64) -> Self {
        Cache {
            ring: Mutex::new(Ring {
                changes: VecDeque::new(),
                oldest: start,
                complete: start,
                closed: false,
            }),
            notify: watch::Sender::new(start),
        }
    }

    fn is_closed(&self) -> bool {
        self.ring.lock().closed
    }

    /// The changes after revision `after`.
    pub fn read(&self, after: i64) -> Read {
        let r = self.ring.lock();
        if r.closed || after < r.oldest {
            return Read::Gone;
        }
        let i = r.changes.partition_point(|c| c.rev <= after);
        Read::Changes(r.changes.range(i..).cloned().collect(), r.complete)
    }

    /// Wakes on every new change, and ends (Err) once the cache has stopped.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.notify.subscribe()
    }

    fn append(&self, changes: Vec<Change>, complete: i64) {
        let mut r = self.ring.lock();
        for c in changes {
            r.complete = r.complete.max(c.rev);
            r.changes.push_back(Arc::new(c));
        }
        while r.changes.len() > CAPACITY {
            if let Some(c) = r.changes.pop_front() {
                r.oldest = c.rev;
            }
        }
        r.complete = r.complete.max(complete);
        let complete = r.complete;
        drop(r);
        self.notify.send_replace(complete);
    }

    /// Stops the cache and wakes its watchers (who then continue on store watches of their own).
    fn close(&self) {
        let mut r = self.ring.lock();
        r.closed = true;
        r.changes.clear();
        drop(r);
        self.notify.send_modify(|_| {});
    }
}

/// Each resource's slot for its cache (shared by the clones of its `GenericStore`).
#[derive(Default)]
pub(crate) struct Slot(tokio::sync::Mutex<Option<Arc<Cache>>>);

impl GenericStore {
    /// The cache to serve a watch from after revision `rev` (started when this resource has none
    /// running), with the watcher's subscription; None when the watch is for the store to serve:
    /// `rev` is older than the ring, compacted, or the store cannot be watched.
    pub(crate) async fn cache_for(&self, rev: i64) -> Option<(Arc<Cache>, watch::Receiver<i64>)> {
        let mut slot = self.watch_cache.0.lock().await;
        if slot.as_ref().is_some_and(|c| c.is_closed()) {
            *slot = None;
        }
        if slot.is_none() {
            *slot = Some(self.start_cache(rev).await?);
        }
        let cache = (*slot).clone()?;
        let rx = cache.subscribe();
        drop(slot);
        if cache.ring.lock().oldest > rev || !self.revision_kept(rev).await {
            return None;
        }
        Some((cache, rx))
    }

    /// Starts the cache at `rev` when the store's history since then is short, else at the
    /// store's current revision.
    async fn start_cache(&self, rev: i64) -> Option<Arc<Cache>> {
        let prefix = self.prefix("");
        let current = self.current_revision().await?;
        let start = if rev <= current && current - rev <= CAPACITY as i64 {
            rev
        } else {
            current
        };
        // As the direct watch, the store watch starts AT `start` (refused when it is compacted);
        // changes at `start` itself are skipped.
        let spec = WatchSpec {
            key: prefix.clone().into_bytes(),
            range_end: kvutil::prefix_end(prefix.as_bytes()),
            start_revision: start.max(1),
            prev_kv: true,
            progress_notify: true,
            ..Default::default()
        };
        let stream = match self.kv.watch(spec).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%prefix, "watch cache: cannot watch the store: {}", e.message());
                return None;
            }
        };
        let cache = Arc::new(Cache::new(start));
        tracing::debug!(%prefix, revision = start, "watch cache started");
        tokio::spawn(run(cache.clone(), self.clone(), stream, start));
        Some(cache)
    }

    async fn current_revision(&self) -> Option<i64> {
        let req = etcd_api::PbRangeRequest {
            key: self.prefix("").into_bytes(),
            count_only: true,
            ..Default::default()
        };
        match self.kv.range(req).await {
            Ok(r) => Some(kvutil::header_rev(&r.header)),
            Err(e) => {
                tracing::warn!(
                    "watch cache: cannot read the store's revision: {}",
                    e.message()
                );
                None
            }
        }
    }

    /// Whether the store still has revision `rev` (not compacted; a future one counts as kept, the
    /// watch waits for it as a store watch would).
    async fn revision_kept(&self, rev: i64) -> bool {
        let req = etcd_api::PbRangeRequest {
            key: self.prefix("").into_bytes(),
            revision: rev,
            count_only: true,
            ..Default::default()
        };
        match self.kv.range(req).await {
            Ok(_) => true,
            Err(e) => e.message().contains("future revision"),
        }
    }
}

/// Feeds the cache from its store watch until the watch ends or nobody watched for `IDLE`.
async fn run(cache: Arc<Cache>, store: GenericStore, mut stream: WatchStream, start: i64) {
    let prefix = store.prefix("");
    let mut idle = tokio::time::interval(IDLE / 10);
    let mut idle_ticks = 0;
    let why = loop {
        let msg = tokio::select! {
            m = stream.next() => m,
            _ = idle.tick() => {
                if cache.notify.receiver_count() > 0 {
                    idle_ticks = 0;
                } else {
                    idle_ticks += 1;
                    if idle_ticks > 10 {
                        break "nobody watched for 5m".to_string();
                    }
                }
                continue;
            }
        };
        let resp = match msg {
            None => break "the store ended the watch".to_string(),
            Some(Err(e)) => break format!("store watch failed: {}", e.message()),
            Some(Ok(r)) => r,
        };
        if resp.canceled {
            break format!(
                "the store cancelled the watch (compacted at {}): {}",
                resp.compact_revision, resp.cancel_reason
            );
        }
        // A progress notification's revision, or the newest change's: the cache is complete up
        // to it (a `created` response's header is the store's revision, not the watch's).
        let complete = if resp.events.is_empty() && !resp.created {
            kvutil::header_rev(&resp.header)
        } else {
            let newest = resp.events.iter().filter_map(|e| e.kv.as_ref());
            newest.map(|kv| kv.mod_revision).max().unwrap_or(0)
        };
        let changes: Vec<Change> = resp
            .events
            .into_iter()
            .filter(|e| e.kv.as_ref().is_some_and(|kv| kv.mod_revision > start))
            .filter_map(|e| store.change(e))
            .collect();
        if !changes.is_empty() || complete > 0 {
            cache.append(changes, complete);
        }
    };
    cache.close();
    tracing::info!(%prefix, "watch cache stopped: {why}");
}
