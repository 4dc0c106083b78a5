//! The Watch service: one bidirectional stream carrying many watches, each a subscription to the
//! store's watch hub forwarded by its own task (so one slow watch never holds up another or a writer).

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use etcd_api::*;
use mvcc::{Filter, Store, Subscription, WatchMsg};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::Credentials;
use crate::kv::{WatchSpec, WatchStream};
use crate::member::Member;

type Out = mpsc::Sender<Result<PbWatchResponse, Status>>;

/// What a response header carries besides the revision.
#[derive(Clone, Copy)]
pub struct Hdr {
    pub cluster_id: u64,
    pub member_id: u64,
    pub term: u64,
}

impl Hdr {
    pub fn of(m: &Member) -> Hdr {
        Hdr {
            cluster_id: m.store.cluster_id,
            member_id: m.store.member_id,
            term: m.term(),
        }
    }
    fn at(self, revision: i64) -> Option<PbResponseHeader> {
        Some(PbResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: self.term,
        })
    }
}

struct Watch {
    prev_kv: bool,
    progress_notify: bool,
}

fn normalize(key: Vec<u8>, range_end: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
    // As etcd: an empty key is the smallest key, "\0".
    let key = if key.is_empty() { vec![0] } else { key };
    (key, range_end)
}

/// Forwards one watch's messages to `out` until the watch ends, the stream closes, or it is aborted.
async fn forward(
    store: Arc<Store>,
    hdr: Hdr,
    id: i64,
    w: Watch,
    mut sub: Subscription,
    out: Out,
    progress_every: Duration,
) {
    let mut tick = tokio::time::interval(progress_every);
    tick.tick().await;
    let mut quiet = true;
    loop {
        let msg = tokio::select! {
            m = sub.rx.recv() => m,
            _ = tick.tick(), if w.progress_notify => {
                if quiet {
                    let resp = PbWatchResponse { header: hdr.at(store.revision()), watch_id: id, ..Default::default() };
                    if out.send(Ok(resp)).await.is_err() { return; }
                }
                quiet = true;
                continue;
            }
        };
        let resp = match msg {
            None => return,
            Some(WatchMsg::Compacted { compact_revision }) => PbWatchResponse {
                header: hdr.at(store.revision()),
                watch_id: id,
                compact_revision,
                canceled: true,
                ..Default::default()
            },
            Some(WatchMsg::Events {
                revision,
                mut events,
            }) => {
                if w.prev_kv {
                    for e in &mut events {
                        if let Some(kv) = &e.kv {
                            e.prev_kv = store.prev_kv(&kv.key, kv.mod_revision);
                        }
                    }
                }
                quiet = false;
                PbWatchResponse {
                    header: hdr.at(revision),
                    watch_id: id,
                    events,
                    ..Default::default()
                }
            }
        };
        let end = resp.canceled;
        if out.send(Ok(resp)).await.is_err() || end {
            return;
        }
    }
}

pub struct WatchService {
    pub member: Arc<Member>,
}

#[tonic::async_trait]
impl PbWatchService for WatchService {
    type WatchStream = ReceiverStream<Result<PbWatchResponse, Status>>;

    async fn watch(
        &self,
        req: Request<Streaming<PbWatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (out, rx) = mpsc::channel(256);
        let creds = Credentials::of(&req);
        tokio::spawn(serve_stream(
            self.member.clone(),
            creds,
            req.into_inner(),
            out,
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

async fn serve_stream(
    m: Arc<Member>,
    creds: Credentials,
    mut input: Streaming<PbWatchRequest>,
    out: Out,
) {
    let hdr = Hdr::of(&m);
    let mut watches: HashMap<i64, JoinHandle<()>> = HashMap::new();
    let mut next_id = 0i64;
    while let Some(Ok(req)) = tokio::select! { r = input.next() => r, _ = out.closed() => None } {
        watches.retain(|_, h| !h.is_finished());
        let resp = match req.request_union {
            Some(PbWatchRequestUnion::CreateRequest(c)) => {
                let (key, range_end) = normalize(c.key, c.range_end);
                // As etcd: a watch the caller may not read is answered created and cancelled.
                let allowed = m.authorize(&creds, |a, who| {
                    a.check(who, &key, &range_end, mvcc::Access::Read)
                });
                if let Err(e) = allowed {
                    let resp = PbWatchResponse {
                        header: hdr.at(m.store.revision()),
                        watch_id: -1,
                        created: true,
                        canceled: true,
                        cancel_reason: errors::go_error_text(&e),
                        ..Default::default()
                    };
                    if out.send(Ok(resp)).await.is_err() {
                        break;
                    }
                    continue;
                }
                let filter = Filter {
                    key,
                    range_end,
                    no_put: c.filters.contains(&enums::watch_filter::NOPUT),
                    no_delete: c.filters.contains(&enums::watch_filter::NODELETE),
                };
                let w = Watch {
                    prev_kv: c.prev_kv,
                    progress_notify: c.progress_notify,
                };
                let id = if c.watch_id != 0 {
                    c.watch_id
                } else {
                    while watches.contains_key(&next_id) {
                        next_id += 1;
                    }
                    next_id += 1;
                    next_id - 1
                };
                let header = hdr.at(m.store.revision());
                match watches.entry(id) {
                    Entry::Occupied(_) => PbWatchResponse {
                        header,
                        watch_id: id,
                        created: true,
                        canceled: true,
                        cancel_reason: errors::DUPLICATE_WATCH_ID.into(),
                        ..Default::default()
                    },
                    Entry::Vacant(slot) => {
                        // Registered before `created` is sent, so no write after it can be missed.
                        let sub = m.store.watch(filter, c.start_revision);
                        let created = PbWatchResponse {
                            header,
                            watch_id: id,
                            created: true,
                            ..Default::default()
                        };
                        if out.send(Ok(created)).await.is_err() {
                            break;
                        }
                        let task = forward(
                            m.store.clone(),
                            hdr,
                            id,
                            w,
                            sub,
                            out.clone(),
                            m.settings.progress_interval,
                        );
                        slot.insert(tokio::spawn(task));
                        continue;
                    }
                }
            }
            Some(PbWatchRequestUnion::CancelRequest(c)) => match watches.remove(&c.watch_id) {
                Some(h) => {
                    h.abort();
                    let _ = h.await;
                    PbWatchResponse {
                        header: hdr.at(m.store.revision()),
                        watch_id: c.watch_id,
                        canceled: true,
                        ..Default::default()
                    }
                }
                None => continue,
            },
            Some(PbWatchRequestUnion::ProgressRequest(_)) => PbWatchResponse {
                header: hdr.at(m.store.revision()),
                watch_id: -1,
                ..Default::default()
            },
            None => continue,
        };
        if out.send(Ok(resp)).await.is_err() {
            break;
        }
    }
    for (_, h) in watches {
        h.abort();
    }
}

/// One watch as a stream (the `Kv` trait's watch): the created response, then its events.
pub fn single_watch(m: &Member, spec: WatchSpec) -> WatchStream {
    let (out, rx) = mpsc::channel(256);
    let (key, range_end) = normalize(spec.key, spec.range_end);
    let filter = Filter {
        key,
        range_end,
        no_put: spec.no_put,
        no_delete: spec.no_delete,
    };
    let w = Watch {
        prev_kv: spec.prev_kv,
        progress_notify: spec.progress_notify,
    };
    let hdr = Hdr::of(m);
    let store = m.store.clone();
    let sub = store.watch(filter, spec.start_revision);
    let every = m.settings.progress_interval;
    let created = PbWatchResponse {
        header: hdr.at(store.revision()),
        watch_id: 0,
        created: true,
        ..Default::default()
    };
    tokio::spawn(async move {
        if out.send(Ok(created)).await.is_ok() {
            forward(store, hdr, 0, w, sub, out, every).await;
        }
    });
    Box::pin(ReceiverStream::new(rx))
}
