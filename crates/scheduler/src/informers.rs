//! Informers: kube-runtime reflectors of nodes and pods whose events keep the scheduler cache and
//! queue up to date (as upstream's event handlers do), and plain reflectors of the objects the
//! default spreading reads (Services, ReplicaSets, ReplicationControllers, StatefulSets) and of
//! Namespaces (for affinity terms with a namespaceSelector).

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ReplicationController, Service};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use tokio_util::sync::CancellationToken;

use crate::cache::{pod_key, PodInfo};
use crate::State;

/// The read-only reflector stores.
#[derive(Clone)]
pub struct Stores {
    pub pods: Store<Pod>,
    pub services: Store<Service>,
    pub replica_sets: Store<ReplicaSet>,
    pub controllers: Store<ReplicationController>,
    pub stateful_sets: Store<StatefulSet>,
    pub namespaces: Store<Namespace>,
}

/// Runs a reflector over `api`, calling `on` for every event, until `cancel`.
async fn run<K, F>(
    api: Api<K>,
    writer: reflector::store::Writer<K>,
    mut on: F,
    cancel: CancellationToken,
) where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
    F: FnMut(watcher::Event<K>),
{
    let kind = K::kind(&Default::default()).to_string();
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default()).default_backoff(),
    );
    futures::pin_mut!(stream);
    loop {
        tokio::select! {
            ev = stream.next() => match ev {
                Some(Ok(e)) => on(e),
                Some(Err(e)) => tracing::warn!(kind = %kind, "watch failed (retrying with backoff): {e}"),
                None => return,
            },
            _ = cancel.cancelled() => return,
        }
    }
}

fn store_only<K>(client: &Client, cancel: &CancellationToken) -> Store<K>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    let (store, writer) = reflector::store();
    tokio::spawn(run(
        Api::<K>::all(client.clone()),
        writer,
        |_| {},
        cancel.clone(),
    ));
    store
}

/// Starts every informer; `state.synced` fires once nodes and pods are listed.
pub fn start(client: &Client, state: Arc<State>, cancel: &CancellationToken) -> Stores {
    let (node_store, node_writer) = reflector::store::<Node>();
    drop(node_store);
    let st = state.clone();
    let mut seen_nodes: Option<HashSet<String>> = None;
    tokio::spawn(run(
        Api::<Node>::all(client.clone()),
        node_writer,
        move |e| on_node(&st, e, &mut seen_nodes),
        cancel.clone(),
    ));
    let (pod_store, pod_writer) = reflector::store::<Pod>();
    let st = state.clone();
    let mut h = PodHandler {
        store: Some(pod_store.clone()),
        ..Default::default()
    };
    tokio::spawn(run(
        Api::<Pod>::all(client.clone()),
        pod_writer,
        move |e| h.on_event(&st, e),
        cancel.clone(),
    ));
    Stores {
        pods: pod_store,
        services: store_only(client, cancel),
        replica_sets: store_only(client, cancel),
        controllers: store_only(client, cancel),
        stateful_sets: store_only(client, cancel),
        namespaces: store_only(client, cancel),
    }
}

fn on_node(state: &State, e: watcher::Event<Node>, seen: &mut Option<HashSet<String>>) {
    match e {
        watcher::Event::Apply(n) | watcher::Event::InitApply(n) => {
            let name = n.metadata.name.clone().unwrap_or_default();
            if let Some(s) = seen.as_mut() {
                s.insert(name.clone());
            }
            let changed = state.cache.lock().upsert_node(Arc::new(n));
            if changed {
                tracing::debug!(node = %name, "node added or changed: retrying unschedulable pods");
                state.queue.move_all();
            }
        }
        watcher::Event::Delete(n) => {
            state
                .cache
                .lock()
                .remove_node(n.metadata.name.as_deref().unwrap_or(""));
        }
        watcher::Event::Init => *seen = Some(HashSet::new()),
        watcher::Event::InitDone => {
            if let Some(seen) = seen.take() {
                let mut cache = state.cache.lock();
                let gone: Vec<String> = cache
                    .order
                    .iter()
                    .filter(|n| !seen.contains(*n))
                    .cloned()
                    .collect();
                for n in gone {
                    cache.remove_node(&n);
                }
            }
            state.set_synced(0);
        }
    }
}

fn is_terminal(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Pod events: bound pods go into the cache, pending pods of this scheduler into the queue.
#[derive(Default)]
struct PodHandler {
    /// The reflector's store: the cache shares its copy of each pod instead of keeping another.
    store: Option<Store<Pod>>,
    /// Pending pods: a hash of what may change their fit (labels, spec); a status-only update
    /// (such as our own PodScheduled=False) does not requeue them.
    pending: HashMap<String, u64>,
    seen: Option<HashSet<String>>,
}

fn fit_hash(p: &Pod) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&(&p.metadata.labels, &p.spec))
        .unwrap_or_default()
        .hash(&mut h);
    h.finish()
}

impl PodHandler {
    fn on_event(&mut self, state: &State, e: watcher::Event<Pod>) {
        match e {
            watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                if let Some(s) = self.seen.as_mut() {
                    s.insert(pod_key(&p));
                }
                self.apply(state, p)
            }
            watcher::Event::Delete(p) => self.delete(state, &pod_key(&p)),
            watcher::Event::Init => self.seen = Some(HashSet::new()),
            watcher::Event::InitDone => {
                if let Some(seen) = self.seen.take() {
                    let known: Vec<String> = {
                        let cache = state.cache.lock();
                        cache
                            .pod_nodes
                            .iter()
                            .filter(|(_, (_, assumed))| !assumed)
                            .map(|(k, _)| k.clone())
                            .collect()
                    };
                    let pending: Vec<String> = self.pending.keys().cloned().collect();
                    for k in known.into_iter().chain(pending) {
                        if !seen.contains(&k) {
                            self.delete(state, &k);
                        }
                    }
                }
                state.set_synced(1);
            }
        }
    }

    fn apply(&mut self, state: &State, p: Pod) {
        let key = pod_key(&p);
        let node = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        if is_terminal(&p) {
            // A finished pod frees its node's resources.
            self.delete(state, &key);
            return;
        }
        if !node.is_empty() {
            self.pending.remove(&key);
            state.queue.delete(&key);
            let shared = self
                .store
                .as_ref()
                .and_then(|st| st.get(&reflector::ObjectRef::from_obj(&p)))
                .filter(|s| s.metadata.resource_version == p.metadata.resource_version)
                .unwrap_or_else(|| Arc::new(p));
            state
                .cache
                .lock()
                .add_pod(Arc::new(PodInfo::new(shared)), &node, false);
            return;
        }
        let ours = p
            .spec
            .as_ref()
            .and_then(|s| s.scheduler_name.as_deref())
            .unwrap_or("default-scheduler")
            == state.scheduler_name;
        if !ours || p.metadata.deletion_timestamp.is_some() {
            self.pending.remove(&key);
            state.queue.delete(&key);
            return;
        }
        if state.cache.lock().is_assumed(&key) {
            return; // being bound
        }
        let h = fit_hash(&p);
        if self.pending.insert(key.clone(), h) != Some(h) {
            state.queue.add(&key);
        }
    }

    fn delete(&mut self, state: &State, key: &str) {
        self.pending.remove(key);
        state.queue.delete(key);
        let was_placed = {
            let mut cache = state.cache.lock();
            let placed = cache.pod_nodes.contains_key(key);
            cache.remove_pod(key);
            placed
        };
        if was_placed {
            // Its resources, ports and anti-affinity are free again.
            state.queue.move_all();
        }
    }
}
