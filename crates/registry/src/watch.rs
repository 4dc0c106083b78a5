//! Watch: the store's watch over a resource's key range turned into upstream's watch events
//! (ADDED / MODIFIED / DELETED / BOOKMARK / ERROR), with selectors applied to both the new and the
//! previous state, as upstream's cacher does (an object leaving the selector is DELETED for it).

use std::time::Duration;

use apimachinery::{meta, ApiError, FieldSelector, LabelSelector};
use etcd_api::enums::event_type;
use futures::StreamExt;
use serde_json::{json, Value};
use store::WatchSpec;
use tokio::sync::mpsc;

use crate::kvutil;
use crate::store::{GenericStore, ListOptions};

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

#[derive(Clone, Debug, PartialEq)]
pub struct WatchEvent {
    pub type_: &'static str,
    pub object: Value,
}

pub type EventStream = mpsc::Receiver<WatchEvent>;

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
        let prefix = self.prefix(ns);
        // The watch starts AT the requested revision, not after it: the store then refuses it when
        // that revision is compacted (a resourceVersion older than the compaction point is gone even
        // though the next revision may survive it, and the previous state of the events right after
        // it would be missing). Events at the revision itself are skipped below.
        let spec = WatchSpec {
            key: prefix.clone().into_bytes(),
            range_end: kvutil::prefix_end(prefix.as_bytes()),
            start_revision: start_rev.max(1),
            prev_kv: true,
            progress_notify: true,
            ..Default::default()
        };
        let mut stream = self.kv.watch(spec).await.map_err(kvutil::store_err)?;
        let (tx, rx) = mpsc::channel(256);
        let me = self.clone();
        tokio::spawn(async move {
            let mut last_rev = start_rev;
            for obj in initial_items {
                if tx
                    .send(WatchEvent {
                        type_: "ADDED",
                        object: obj,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if opts.send_initial_events == Some(true) && opts.allow_bookmarks {
                let mut b = me.bookmark(last_rev);
                b["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
                if tx
                    .send(WatchEvent {
                        type_: "BOOKMARK",
                        object: b,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            let deadline = opts.timeout.map(|t| tokio::time::Instant::now() + t);
            let every = opts.bookmark_interval.unwrap_or(Duration::from_secs(30));
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                let sleep = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = sleep => return,
                    _ = tick.tick() => {
                        if opts.allow_bookmarks
                            && tx.send(WatchEvent { type_: "BOOKMARK", object: me.bookmark(last_rev) }).await.is_err() {
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
                                    start_rev, resp.compact_revision
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
                            let Some(kv) = ev.kv else { continue };
                            if kv.mod_revision <= start_rev {
                                continue;
                            }
                            last_rev = last_rev.max(kv.mod_revision);
                            if let Some(out) = me.translate(ev.r#type, &kv, ev.prev_kv.as_ref(), &opts) {
                                if tx.send(out).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                }
            }
        });
        Ok(rx)
    }

    fn bookmark(&self, rev: i64) -> Value {
        let info = self.strategy.info();
        json!({
            "kind": info.kind,
            "apiVersion": info.api_version(),
            "metadata": {"resourceVersion": rev.to_string()},
        })
    }

    fn translate(
        &self,
        typ: i32,
        kv: &etcd_api::PbKeyValue,
        prev: Option<&etcd_api::PbKeyValue>,
        opts: &WatchOptions,
    ) -> Option<WatchEvent> {
        let prev_obj = prev.and_then(|p| self.decode(p).ok());
        let prev_match = prev_obj
            .as_ref()
            .is_some_and(|p| self.matches(p, &opts.label, &opts.field));
        if typ == event_type::DELETE {
            let mut obj = prev_obj?;
            if !prev_match {
                return None;
            }
            meta::set_resource_version(&mut obj, kv.mod_revision);
            return Some(WatchEvent {
                type_: "DELETED",
                object: obj,
            });
        }
        let obj = self.decode(kv).ok()?;
        let cur_match = self.matches(&obj, &opts.label, &opts.field);
        let created = kv.create_revision == kv.mod_revision || prev_obj.is_none();
        let type_ = match (cur_match, prev_match, created) {
            (true, _, true) => "ADDED",
            (true, true, false) => "MODIFIED",
            (true, false, false) => "ADDED",
            (false, true, _) => "DELETED",
            (false, false, _) => return None,
        };
        Some(WatchEvent { type_, object: obj })
    }
}

fn error_event(e: ApiError) -> WatchEvent {
    WatchEvent {
        type_: "ERROR",
        object: e.to_status(),
    }
}
