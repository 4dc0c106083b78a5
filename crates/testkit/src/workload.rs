//! A recorded workload for fault tests: clients put, get (linearizable) and compare-and-set a few
//! keys through different members while the test injects faults; every operation is recorded with
//! its outcome (ok, or unknown on an error or timeout). `finish` checks the history is
//! linearizable and that every running member's watch replays the same events, in order, without
//! gaps or duplicates. Seed and length: `KYBERN_FAULT_SEED`, `KYBERN_FAULT_OPS`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_api::enums::{compare_result, compare_target};
use etcd_api::*;
use futures::StreamExt;
use rand::{Rng, SeedableRng};
use store::remote::RemoteKv;
use store::{Kv, WatchSpec};

use crate::cluster::Cluster;
use crate::linearizability::{check, Kind as OpKind, Op};

const KEYS: usize = 8;
const OP_TIMEOUT: Duration = Duration::from_secs(2);

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Recorder {
    start: Instant,
    ops: Mutex<Vec<Op>>,
}

impl Recorder {
    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
}

fn value_of(r: &PbRangeResponse) -> Option<String> {
    r.kvs
        .first()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
}

/// One client: `ops` random puts, linearizable gets and compare-and-sets on a few keys.
async fn client(id: usize, url: String, rec: Arc<Recorder>, ops: u64, seed: u64) {
    let kv = RemoteKv::connect(&[url], None).await.unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed + id as u64);
    for n in 0..ops {
        let key = format!("lin/k{}", rng.random_range(0..KEYS));
        let value = format!("c{id}-{n}");
        let invoke = rec.now();
        let pick = rng.random_range(0..10);
        let kind;
        let outcome: Option<OpKind>;
        if pick < 4 {
            kind = OpKind::Put(value.clone());
            let put = PbPutRequest {
                key: key.clone().into_bytes(),
                value: value.into_bytes(),
                ..Default::default()
            };
            outcome = match tokio::time::timeout(OP_TIMEOUT, kv.put(put)).await {
                Ok(Ok(_)) => Some(kind.clone()),
                _ => None,
            };
        } else if pick < 8 {
            let get = PbRangeRequest {
                key: key.clone().into_bytes(),
                ..Default::default()
            };
            kind = OpKind::Get(None);
            outcome = match tokio::time::timeout(OP_TIMEOUT, kv.range(get)).await {
                Ok(Ok(r)) => Some(OpKind::Get(value_of(&r))),
                // A failed read changes nothing: it is left out.
                _ => continue,
            };
        } else {
            let expect = (rng.random_range(0..3) > 0).then(|| {
                format!(
                    "c{}-{}",
                    rng.random_range(0..3),
                    rng.random_range(0..n.max(1))
                )
            });
            let compare = PbCompare {
                key: key.clone().into_bytes(),
                result: compare_result::EQUAL,
                target: match expect {
                    Some(_) => compare_target::VALUE,
                    None => compare_target::VERSION,
                },
                target_union: Some(match &expect {
                    Some(e) => PbTargetUnion::Value(e.clone().into_bytes()),
                    None => PbTargetUnion::Version(0),
                }),
                ..Default::default()
            };
            let put = PbPutRequest {
                key: key.clone().into_bytes(),
                value: value.clone().into_bytes(),
                ..Default::default()
            };
            let txn = PbTxnRequest {
                compare: vec![compare],
                success: vec![PbTxnRequestOp {
                    request: Some(PbTxnOpRequest::RequestPut(put)),
                }],
                failure: vec![],
            };
            let cas = |succeeded| OpKind::Cas {
                expect: expect.clone(),
                new: value.clone(),
                succeeded,
            };
            kind = cas(None);
            outcome = match tokio::time::timeout(OP_TIMEOUT, kv.txn(txn)).await {
                Ok(Ok(r)) => Some(cas(Some(r.succeeded))),
                _ => None,
            };
        }
        let ret = outcome.as_ref().map(|_| rec.now());
        rec.ops.lock().unwrap().push(Op {
            client: id,
            key,
            kind: outcome.unwrap_or(kind),
            invoke,
            ret,
        });
        tokio::time::sleep(Duration::from_millis(rng.random_range(10..40))).await;
    }
}

/// Every event under `lin/` a member's watch replays from revision 1 up to `last`.
async fn replay(url: &str, last: i64) -> Vec<(i64, i32, String, String)> {
    let kv = RemoteKv::connect(&[url.to_string()], None).await.unwrap();
    let spec = WatchSpec {
        key: b"lin/".to_vec(),
        range_end: b"lin0".to_vec(),
        start_revision: 1,
        ..Default::default()
    };
    let mut w = kv.watch(spec).await.unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while out
        .last()
        .is_none_or(|e: &(i64, i32, String, String)| e.0 < last)
    {
        let left = deadline.saturating_duration_since(Instant::now());
        let resp = tokio::time::timeout(left, w.next())
            .await
            .unwrap_or_else(|_| panic!("watch on {url} stalled at {:?} of {last}", out.last()))
            .expect("watch ended")
            .expect("watch failed");
        for e in resp.events {
            let kv = e.kv.unwrap_or_default();
            out.push((
                kv.mod_revision,
                e.r#type,
                String::from_utf8_lossy(&kv.key).into_owned(),
                String::from_utf8_lossy(&kv.value).into_owned(),
            ));
        }
    }
    out
}


/// Clients running against the cluster's first three members (one each), started by
/// `start_load` and checked by `finish`.
pub struct Load {
    rec: Arc<Recorder>,
    clients: Vec<tokio::task::JoinHandle<()>>,
    seed: u64,
}

pub fn start_load(c: &Cluster) -> Load {
    let seed = env_u64("KYBERN_FAULT_SEED", 7);
    let ops = env_u64("KYBERN_FAULT_OPS", 150);
    let rec = Arc::new(Recorder {
        start: Instant::now(),
        ops: Mutex::new(Vec::new()),
    });
    let clients = c
        .members
        .iter()
        .take(3)
        .enumerate()
        .map(|(i, m)| tokio::spawn(client(i, m.client_url.clone(), rec.clone(), ops, seed)))
        .collect();
    Load { rec, clients, seed }
}

/// Waits for the clients, closes the history with a read of every key, checks it is
/// linearizable, and checks that every running member's watch replays the same events.
pub async fn finish(c: &Cluster, load: Load) {
    let rec = load.rec;
    for t in load.clients {
        t.await.unwrap();
    }
    let leader = c.leader().await.unwrap();
    let closing = RemoteKv::connect(&[c.members[leader].client_url.clone()], None)
        .await
        .unwrap();
    let mut last = 0;
    for k in 0..KEYS {
        let key = format!("lin/k{k}");
        let invoke = rec.now();
        let r = closing
            .range(PbRangeRequest {
                key: key.clone().into_bytes(),
                ..Default::default()
            })
            .await
            .unwrap();
        last = r.header.as_ref().map_or(0, |h| h.revision);
        rec.ops.lock().unwrap().push(Op {
            client: 99,
            key,
            kind: OpKind::Get(value_of(&r)),
            invoke,
            ret: Some(rec.now()),
        });
    }
    let history = rec.ops.lock().unwrap().clone();
    let unknown = history.iter().filter(|o| o.ret.is_none()).count();
    eprintln!(
        "history: {} operations, {unknown} with unknown outcome, last revision {last}",
        history.len()
    );
    if let Err(v) = check(&history) {
        panic!("not linearizable (seed {}):\n{v}", load.seed);
    }
    let mut streams = Vec::new();
    for m in c.members.iter().filter(|m| m.pid().is_some()) {
        streams.push(replay(&m.client_url, last).await);
    }
    for (i, s) in streams.iter().enumerate() {
        assert_eq!(
            s, &streams[0],
            "running member {i}'s watch differs from the first's"
        );
    }
    let revs: Vec<i64> = streams[0].iter().map(|e| e.0).collect();
    let want: Vec<i64> = (2..=last).collect();
    assert_eq!(revs, want, "watch revisions have gaps or duplicates");
}
