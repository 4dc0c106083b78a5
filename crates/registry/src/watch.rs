//! Watch: a resource's changes as upstream's watch events (ADDED / MODIFIED / DELETED / BOOKMARK /
//! ERROR), with selectors applied to both the new and the previous state, as upstream's cacher does
//! (an object leaving the selector is DELETED for it).
//!
//! A watch is served from the resource's watch cache (`watch_cache.rs`: one store watch shared by
//! every watcher) whenever the cache covers its start; otherwise, and from the point a watcher
//! falls behind the cache, from a store watch of its own. Both paths give the same events.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use apimachinery::{ApiError, FieldSelector, LabelSelector};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};
use store::WatchSpec;
use tokio::sync::mpsc;
use tokio::time::{Instant, Interval, Sleep};

use crate::kvutil;
use crate::store::{GenericStore, ListOptions};
use crate::watch_cache::{Cache, Read};

#[derive(Clone, Debug, Default)]
pub struct WatchOptions {
    pub label: LabelSelector,
    pub field: FieldSelector,
    pub resource_version: String,
    pub allow_bookmarks: bool,
    /// `sendInitialEvents`: None when the parameter is absent.
    pub send_initial_events: Option<bool>,
    pub timeout: Option<Duration>,
    pub bookmark_interval: Option<Duration>,
}

/// One watch event. Events of one change are shared by the watchers that receive them: the
/// object is reference counted and the JSON line is made once, by the first watcher to send it.
#[derive(Clone, Debug)]
pub struct WatchEvent {
    pub type_: &'static str,
    pub object: Arc<Value>,
    line: Arc<OnceLock<Bytes>>,
}

impl PartialEq for WatchEvent {
    fn eq(&self, other: &Self) -> bool {
        self.type_ == other.type_ && self.object == other.object
    }
}

impl WatchEvent {
    pub fn new(type_: &'static str, object: Value) -> Self {
        WatchEvent {
            type_,
            object: Arc::new(object),
            line: Default::default(),
        }
    }

    pub(crate) fn shared(
        type_: &'static str,
        object: Arc<Value>,
        line: Arc<OnceLock<Bytes>>,
    ) -> Self {
        WatchEvent {
            type_,
            object,
            line,
        }
    }

    /// The event as one line of a JSON watch stream: `{"type":..,"object":..}` and a newline.
    pub fn json_line(&self) -> Bytes {
        self.line
            .get_or_init(|| {
                let mut line =
                    serde_json::to_vec(&json!({"type": self.type_, "object": &*self.object}))
                        .expect("a JSON value serialises");
                line.push(b'\n');
                Bytes::from(line)
            })
            .clone()
    }
}

pub type EventStream = mpsc::Receiver<WatchEvent>;
type Out = mpsc::Sender<WatchEvent>;

/// The watch's end (`timeoutSeconds`) and its bookmark ticks.
struct Pace {
    /// One timer for the whole watch (not one per wake-up: a watcher wakes for every change).
    deadline: Option<Pin<Box<Sleep>>>,
    tick: Interval,
    bookmarks: bool,
}

/// Sleeps until the deadline, if there is one.
async fn until(deadline: &mut Option<Pin<Box<Sleep>>>) {
    match deadline {
        Some(d) => d.await,
        None => std::future::pending().await,
    }
}

/// How a phase of a watch ended.
enum Next {
    /// The watch is over (client gone, timeout, error sent).
    Done,
    /// Continue from the store after this revision (events up to it were sent), with the
    /// revision a bookmark may carry.
    FromStore { after: i64, bookmark: i64 },
}

impl GenericStore {
    /// Starts a watch; events arrive on the returned channel until the client goes away, the
    /// timeout passes, or the store ends the watch (an ERROR event says why).
    pub async fn watch(&self, ns: &str, opts: WatchOptions) -> Result<EventStream, ApiError> {
        self.check_field_selector(&opts.field)?;
        let initial = match opts.send_initial_events {
            Some(v) => v,
            None => opts.resource_version.is_empty() || opts.resource_version == "0",
        };
        let mut initial_items = vec![];
        let start_rev =
            if initial || opts.resource_version.is_empty() || opts.resource_version == "0" {
                let l = self
                    .list(
                        ns,
                        &ListOptions {
                            label: opts.label.clone(),
                            field: opts.field.clone(),
                            ..Default::default()
                        },
                    )
                    .await?;
                if initial {
                    initial_items = l.items;
                }
                l.resource_version
            } else {
                opts.resource_version.parse::<i64>().map_err(|_| {
                    ApiError::bad_request(format!(
                        "invalid resource version {:?}",
                        opts.resource_version
                    ))
                })?
            };
        let cached = self.cache_for(start_rev).await;
        let (tx, rx) = mpsc::channel(256);
        let me = self.clone();
        let ns = ns.to_string();
        tokio::spawn(async move {
            for obj in initial_items {
                if tx.send(WatchEvent::new("ADDED", obj)).await.is_err() {
                    return;
                }
            }
            if opts.send_initial_events == Some(true) && opts.allow_bookmarks {
                let mut b = me.bookmark(start_rev);
                b["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
                if tx.send(WatchEvent::new("BOOKMARK", b)).await.is_err() {
                    return;
                }
            }
            let every = opts.bookmark_interval.unwrap_or(Duration::from_secs(30));
            let mut pace = Pace {
                deadline: opts.timeout.map(|t| Box::pin(tokio::time::sleep(t))),
                tick: tokio::time::interval_at(Instant::now() + every, every),
                bookmarks: opts.allow_bookmarks,
            };
            let (after, bookmark) = match cached {
                Some((cache, sub)) => {
                    match me
                        .from_cache(&cache, sub, &ns, start_rev, &opts, &tx, &mut pace)
                        .await
                    {
                        Next::Done => return,
                        Next::FromStore { after, bookmark } => (after, bookmark),
                    }
                }
                None => (start_rev, start_rev),
            };
            me.from_store(&ns, after, bookmark, &opts, &tx, &mut pace)
                .await;
        });
        Ok(rx)
    }

    /// Serves the watch from the resource's cache until it is over, or until the watcher fell
    /// behind the cache or the cache stopped (then the store takes over).
    #[allow(clippy::too_many_arguments)]
    async fn from_cache(
        &self,
        cache: &Cache,
        mut sub: tokio::sync::watch::Receiver<i64>,
        ns: &str,
        mut after: i64,
        opts: &WatchOptions,
        tx: &Out,
        pace: &mut Pace,
    ) -> Next {
        let prefix = self.prefix(ns).into_bytes();
        let mut bookmark = after;
        loop {
            sub.borrow_and_update();
            let (changes, complete) = match cache.read(after) {
                Read::Changes(c, complete) => (c, complete),
                Read::Gone => return Next::FromStore { after, bookmark },
            };
            for c in changes {
                if c.key.starts_with(&prefix) {
                    if let Some(ev) = c.event_for(&opts.label, &opts.field) {
                        if tx.send(ev).await.is_err() {
                            return Next::Done;
                        }
                    }
                }
                after = c.rev;
            }
            after = after.max(complete);
            bookmark = after;
            tokio::select! {
                _ = tx.closed() => return Next::Done,
                _ = until(&mut pace.deadline) => return Next::Done,
                _ = pace.tick.tick() => {
                    if pace.bookmarks
                        && tx.send(WatchEvent::new("BOOKMARK", self.bookmark(bookmark))).await.is_err() {
                        return Next::Done;
                    }
                }
                _ = sub.changed() => {}
            }
        }
    }

    /// Serves the watch from a store watch of its own, from after revision `after`.
    async fn from_store(
        &self,
        ns: &str,
        after: i64,
        mut last_rev: i64,
        opts: &WatchOptions,
        tx: &Out,
        pace: &mut Pace,
    ) {
        let prefix = self.prefix(ns);
        // The watch starts AT the revision, not after it: the store then refuses it when that
        // revision is compacted (a resourceVersion older than the compaction point is gone even
        // though the next revision may survive it, and the previous state of the events right
        // after it would be missing). Events at the revision itself are skipped below.
        let spec = WatchSpec {
            key: prefix.clone().into_bytes(),
            range_end: kvutil::prefix_end(prefix.as_bytes()),
            start_revision: after.max(1),
            prev_kv: true,
            progress_notify: true,
            ..Default::default()
        };
        let mut stream = match self.kv.watch(spec).await {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.send(error_event(kvutil::store_err(e))).await;
                return;
            }
        };
        loop {
            tokio::select! {
                _ = tx.closed() => return,
                _ = until(&mut pace.deadline) => return,
                _ = pace.tick.tick() => {
                    if pace.bookmarks
                        && tx.send(WatchEvent::new("BOOKMARK", self.bookmark(last_rev))).await.is_err() {
                        return;
                    }
                }
                msg = stream.next() => {
                    let Some(msg) = msg else { return };
                    let resp = match msg {
                        Ok(r) => r,
                        Err(e) => {
                            let _ = tx.send(error_event(kvutil::store_err(e))).await;
                            return;
                        }
                    };
                    if resp.canceled {
                        let err = if resp.compact_revision > 0 {
                            ApiError::expired(format!(
                                "too old resource version: {} ({})",
                                after, resp.compact_revision
                            ))
                        } else {
                            ApiError::internal(format!("watch canceled: {}", resp.cancel_reason))
                        };
                        let _ = tx.send(error_event(err)).await;
                        return;
                    }
                    if resp.events.is_empty() {
                        let r = kvutil::header_rev(&resp.header);
                        if r > last_rev && !resp.created {
                            last_rev = r;
                        }
                        continue;
                    }
                    for ev in resp.events {
                        let Some(kv) = &ev.kv else { continue };
                        if kv.mod_revision <= after {
                            continue;
                        }
                        last_rev = last_rev.max(kv.mod_revision);
                        let Some(change) = self.change(ev) else { continue };
                        if let Some(out) = change.event_for(&opts.label, &opts.field) {
                            if tx.send(out).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        }
    }

    fn bookmark(&self, rev: i64) -> Value {
        let info = self.strategy.info();
        json!({
            "kind": info.kind,
            "apiVersion": info.api_version(),
            "metadata": {"resourceVersion": rev.to_string()},
        })
    }
}

fn error_event(e: ApiError) -> WatchEvent {
    WatchEvent::new("ERROR", e.to_status())
}
