//! The garbage collector: a graph of every object's ownerReferences over every resource the
//! API server can list, watch and delete (found by discovery), acting as upstream's:
//!
//! * a dependent whose owners are all gone is deleted (Background, or Foreground when an
//!   owner waits for its dependents); one with some owners left loses the references to the
//!   gone ones;
//! * an owner being deleted with the `orphan` finalizer has its dependents' references to it
//!   removed, then the finalizer;
//! * an owner being deleted with the `foregroundDeletion` finalizer has its dependents deleted
//!   (in the foreground too), and loses the finalizer once no dependent that blocks its
//!   deletion (`blockOwnerDeletion: true`) is left.
//!
//! An owner missing from the graph is looked up on the API server before anything is deleted,
//! so a watch that lags never makes it delete a dependent of a live owner.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy,
};
use kube::discovery::{verbs, ApiResource, Discovery, Scope};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

pub const NAME: &str = "garbage-collector-controller";
const ORPHAN: &str = "orphan";
const FOREGROUND: &str = "foregroundDeletion";
/// Resources upstream's collector ignores.
const IGNORED: &[(&str, &str)] = &[("", "events"), ("events.k8s.io", "events")];

/// A watched resource.
struct Res {
    ar: ApiResource,
    namespaced: bool,
}

/// One object in the graph.
#[derive(Clone)]
struct Node {
    res: usize,
    ns: Option<String>,
    name: String,
    uid: String,
    rv: Option<String>,
    owners: Vec<OwnerReference>,
    finalizers: Vec<String>,
    deleting: bool,
}

#[derive(Default)]
struct Graph {
    nodes: HashMap<String, Node>,
    /// owner uid -> dependent uids
    dependents: HashMap<String, HashSet<String>>,
    queue: VecDeque<String>,
    queued: HashSet<String>,
    /// Resources whose first list completed.
    synced: HashSet<usize>,
    /// Objects seen during a re-list in progress, per resource.
    relist: HashMap<usize, HashSet<String>>,
}

impl Graph {
    fn enqueue(&mut self, uid: &str) {
        if self.queued.insert(uid.to_string()) {
            self.queue.push_back(uid.to_string());
        }
    }

    fn upsert(&mut self, n: Node) {
        if let Some(old) = self.nodes.get(&n.uid) {
            for o in &old.owners {
                if let Some(d) = self.dependents.get_mut(&o.uid) {
                    d.remove(&n.uid);
                }
            }
        }
        for o in &n.owners {
            self.dependents
                .entry(o.uid.clone())
                .or_default()
                .insert(n.uid.clone());
        }
        let interesting = !n.owners.is_empty()
            || (n.deleting && n.finalizers.iter().any(|f| f == ORPHAN || f == FOREGROUND));
        let uid = n.uid.clone();
        self.nodes.insert(uid.clone(), n);
        if interesting {
            self.enqueue(&uid);
        }
    }

    fn remove(&mut self, uid: &str) {
        let Some(n) = self.nodes.remove(uid) else {
            return;
        };
        for o in &n.owners {
            if let Some(d) = self.dependents.get_mut(&o.uid) {
                d.remove(uid);
                if d.is_empty() {
                    self.dependents.remove(&o.uid);
                }
            }
            // An owner waiting for its dependents may now be free to go.
            if self.nodes.get(&o.uid).is_some_and(|o| o.deleting) {
                self.enqueue(&o.uid.clone());
            }
        }
        // Its dependents may now be dangling.
        for d in self.dependents.get(uid).cloned().unwrap_or_default() {
            self.enqueue(&d);
        }
    }
}

fn node_of(res: usize, obj: &DynamicObject) -> Option<Node> {
    let m = &obj.metadata;
    Some(Node {
        res,
        ns: m.namespace.clone(),
        name: m.name.clone()?,
        uid: m.uid.clone()?,
        rv: m.resource_version.clone(),
        owners: m.owner_references.clone().unwrap_or_default(),
        finalizers: m.finalizers.clone().unwrap_or_default(),
        deleting: m.deletion_timestamp.is_some(),
    })
}

/// Runs the garbage collector until its watches fail for good.
pub async fn run(client: kube::Client) -> anyhow::Result<()> {
    let resources = discover(&client).await?;
    info!(
        "{NAME}: watching {} resources: {}",
        resources.len(),
        resources
            .iter()
            .map(|r| r.ar.plural.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    collect(client, resources).await
}

/// Every resource that can be listed, watched and deleted (but events).
async fn discover(client: &kube::Client) -> anyhow::Result<Vec<Res>> {
    let discovery = Discovery::new(client.clone()).run().await?;
    let mut resources = vec![];
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            let ops = [verbs::LIST, verbs::WATCH, verbs::DELETE];
            if !ops.iter().all(|v| caps.supports_operation(v))
                || IGNORED.contains(&(ar.group.as_str(), ar.plural.as_str()))
            {
                continue;
            }
            let namespaced = caps.scope == Scope::Namespaced;
            resources.push(Res { ar, namespaced });
        }
    }
    Ok(resources)
}

/// Names a resource set can be compared by.
fn names(resources: &[Res]) -> Vec<String> {
    let mut v: Vec<String> = resources
        .iter()
        .map(|r| format!("{}/{}/{}", r.ar.group, r.ar.version, r.ar.plural))
        .collect();
    v.sort();
    v
}

/// Builds and acts on the graph of `resources` until the watches end or discovery finds
/// another set of resources (new CRDs): then it returns, to be started again over the new set.
async fn collect(client: kube::Client, resources: Vec<Res>) -> anyhow::Result<()> {
    let watched = names(&resources);
    let resources = Arc::new(resources);
    let graph = Arc::new(Mutex::new(Graph::default()));
    let wake = Arc::new(Notify::new());
    let streams = resources.iter().enumerate().map(|(i, r)| {
        let api = Api::<DynamicObject>::all_with(client.clone(), &r.ar);
        watcher(api, watcher::Config::default())
            .default_backoff()
            .map(move |e| (i, e))
            .boxed()
    });
    let mut events = futures::stream::select_all(streams);
    let worker = tokio::spawn(work(
        client.clone(),
        resources.clone(),
        graph.clone(),
        wake.clone(),
    ));
    let mut resync = tokio::time::interval(Duration::from_secs(30));
    // Upstream rediscovers every 30 s (--garbage-collector resource sync); so do we.
    let mut rediscover = tokio::time::interval(Duration::from_secs(30));
    rediscover.tick().await;
    loop {
        tokio::select! {
            ev = events.next() => {
                let Some((i, ev)) = ev else { break };
                match ev {
                    Ok(ev) => apply_event(&mut graph.lock(), i, ev),
                    Err(e) => warn!("{NAME}: watching {}: {e}", resources[i].ar.plural),
                }
                wake.notify_one();
            }
            _ = rediscover.tick() => {
                match discover(&client).await {
                    Ok(now) if names(&now) != watched => {
                        info!("{NAME}: the API server's resources changed; restarting over the new set");
                        worker.abort();
                        return Ok(());
                    }
                    Ok(_) => {}
                    Err(e) => warn!("{NAME}: discovery: {e}"),
                }
            }
            _ = resync.tick() => {
                let mut g = graph.lock();
                let uids: Vec<String> = g.nodes.values()
                    .filter(|n| !n.owners.is_empty() || n.deleting)
                    .map(|n| n.uid.clone())
                    .collect();
                for u in uids { g.enqueue(&u); }
                wake.notify_one();
            }
        }
    }
    worker.abort();
    anyhow::bail!("{NAME}: its watch streams ended")
}

fn apply_event(g: &mut Graph, i: usize, ev: Event<DynamicObject>) {
    match ev {
        Event::Init => {
            g.relist.insert(i, HashSet::new());
        }
        Event::InitApply(obj) | Event::Apply(obj) => {
            if let Some(n) = node_of(i, &obj) {
                if let Some(s) = g.relist.get_mut(&i) {
                    s.insert(n.uid.clone());
                }
                g.upsert(n);
            }
        }
        Event::InitDone => {
            if let Some(seen) = g.relist.remove(&i) {
                let gone: Vec<String> = g
                    .nodes
                    .values()
                    .filter(|n| n.res == i && !seen.contains(&n.uid))
                    .map(|n| n.uid.clone())
                    .collect();
                for u in gone {
                    g.remove(&u);
                }
            }
            g.synced.insert(i);
        }
        Event::Delete(obj) => {
            if let Some(uid) = obj.metadata.uid.as_deref() {
                g.remove(uid);
            }
        }
    }
}

/// Takes queued objects one at a time, once every resource has been listed.
async fn work(
    client: kube::Client,
    resources: Arc<Vec<Res>>,
    graph: Arc<Mutex<Graph>>,
    wake: Arc<Notify>,
) {
    // Wait for every first list; a resource that cannot be listed holds the collector back at
    // most a minute (owners missing from the graph are checked on the API server anyway).
    let started = std::time::Instant::now();
    loop {
        let next = {
            let mut g = graph.lock();
            if g.synced.len() < resources.len() && started.elapsed() < Duration::from_secs(60) {
                None
            } else {
                let u = g.queue.pop_front();
                if let Some(u) = &u {
                    g.queued.remove(u);
                }
                u
            }
        };
        let Some(uid) = next else {
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            continue;
        };
        let gc = Gc {
            client: &client,
            resources: &resources,
            graph: &graph,
        };
        if let Err(e) = gc.attempt(&uid).await {
            crate::metrics::synced(NAME, false);
            warn!("{NAME}: processing {uid}: {e:#}; retrying");
            let graph = graph.clone();
            let wake = wake.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                graph.lock().enqueue(&uid);
                wake.notify_one();
            });
        }
    }
}

struct Gc<'a> {
    client: &'a kube::Client,
    resources: &'a [Res],
    graph: &'a Mutex<Graph>,
}

enum OwnerState {
    Solid,
    Dangling,
    /// Being deleted in the foreground: waits for its dependents.
    Waiting,
}

impl Gc<'_> {
    fn api(&self, n: &Node) -> Api<DynamicObject> {
        let r = &self.resources[n.res];
        match (&n.ns, r.namespaced) {
            (Some(ns), true) => Api::namespaced_with(self.client.clone(), ns, &r.ar),
            _ => Api::all_with(self.client.clone(), &r.ar),
        }
    }

    fn describe(&self, n: &Node) -> String {
        let kind = &self.resources[n.res].ar.kind;
        match &n.ns {
            Some(ns) => format!("{kind} {ns}/{}", n.name),
            None => format!("{kind} {}", n.name),
        }
    }

    async fn attempt(&self, uid: &str) -> anyhow::Result<()> {
        let Some(n) = self.graph.lock().nodes.get(uid).cloned() else {
            return Ok(());
        };
        if n.deleting {
            if n.finalizers.iter().any(|f| f == ORPHAN) {
                return self.orphan_dependents(&n).await;
            }
            if n.finalizers.iter().any(|f| f == FOREGROUND) {
                return self.delete_dependents(&n).await;
            }
            return Ok(());
        }
        if n.owners.is_empty() {
            return Ok(());
        }
        let mut solid = 0;
        let (mut dangling, mut waiting) = (vec![], vec![]);
        for o in &n.owners {
            match self.owner_state(&n, o).await? {
                OwnerState::Solid => solid += 1,
                OwnerState::Dangling => dangling.push(o.uid.clone()),
                OwnerState::Waiting => waiting.push(o.uid.clone()),
            }
        }
        if dangling.is_empty() && waiting.is_empty() {
            return Ok(());
        }
        if solid > 0 {
            let keep: Vec<&OwnerReference> = n
                .owners
                .iter()
                .filter(|o| !dangling.contains(&o.uid) && !waiting.contains(&o.uid))
                .collect();
            info!(
                "{NAME}: removing references to gone or deleting owners from {}",
                self.describe(&n)
            );
            let body = json!({"metadata": {"ownerReferences": keep, "uid": n.uid}});
            return self.patch(&n, body).await;
        }
        let policy = if !waiting.is_empty() || n.finalizers.iter().any(|f| f == FOREGROUND) {
            PropagationPolicy::Foreground
        } else if n.finalizers.iter().any(|f| f == ORPHAN) {
            PropagationPolicy::Orphan
        } else {
            PropagationPolicy::Background
        };
        info!(
            "{NAME}: deleting {} (its owners are gone or being deleted; propagation {policy:?})",
            self.describe(&n)
        );
        self.delete(&n, policy).await
    }

    /// Whether the owner exists (by the graph, else by asking the API server), and whether it
    /// waits for its dependents.
    async fn owner_state(&self, n: &Node, o: &OwnerReference) -> anyhow::Result<OwnerState> {
        if let Some(owner) = self.graph.lock().nodes.get(&o.uid) {
            return Ok(
                if owner.deleting && owner.finalizers.iter().any(|f| f == FOREGROUND) {
                    OwnerState::Waiting
                } else {
                    OwnerState::Solid
                },
            );
        }
        let (group, version) = match o.api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", o.api_version.as_str()),
        };
        let Some(r) = self
            .resources
            .iter()
            .find(|r| r.ar.group == group && r.ar.kind == o.kind && r.ar.version == version)
            .or_else(|| {
                self.resources
                    .iter()
                    .find(|r| r.ar.group == group && r.ar.kind == o.kind)
            })
        else {
            debug!(
                "{NAME}: owner kind {} {} is not served; leaving {} alone",
                o.api_version, o.kind, n.name
            );
            return Ok(OwnerState::Solid);
        };
        let api: Api<DynamicObject> = match (&n.ns, r.namespaced) {
            (Some(ns), true) => Api::namespaced_with(self.client.clone(), ns, &r.ar),
            (None, true) => return Ok(OwnerState::Dangling),
            _ => Api::all_with(self.client.clone(), &r.ar),
        };
        match api.get_opt(&o.name).await? {
            Some(obj) if obj.metadata.uid.as_deref() == Some(o.uid.as_str()) => {
                let waiting = obj.metadata.deletion_timestamp.is_some()
                    && obj
                        .metadata
                        .finalizers
                        .iter()
                        .flatten()
                        .any(|f| f == FOREGROUND);
                Ok(if waiting {
                    OwnerState::Waiting
                } else {
                    OwnerState::Solid
                })
            }
            _ => Ok(OwnerState::Dangling),
        }
    }

    fn dependents(&self, n: &Node) -> Vec<Node> {
        let g = self.graph.lock();
        g.dependents
            .get(&n.uid)
            .into_iter()
            .flatten()
            .filter_map(|u| g.nodes.get(u).cloned())
            .collect()
    }

    /// Removes every dependent's reference to `n`, then `n`'s orphan finalizer.
    async fn orphan_dependents(&self, n: &Node) -> anyhow::Result<()> {
        for d in self.dependents(n) {
            let keep: Vec<&OwnerReference> = d.owners.iter().filter(|o| o.uid != n.uid).collect();
            let body = json!({"metadata": {"ownerReferences": keep, "uid": d.uid}});
            self.patch(&d, body).await?;
        }
        info!("{NAME}: orphaned the dependents of {}", self.describe(n));
        self.remove_finalizer(n, ORPHAN).await
    }

    /// Deletes `n`'s dependents (in the foreground); drops its foregroundDeletion finalizer
    /// once none that blocks it is left.
    async fn delete_dependents(&self, n: &Node) -> anyhow::Result<()> {
        let deps = self.dependents(n);
        let mut blocking = 0;
        for d in &deps {
            let blocks = d
                .owners
                .iter()
                .any(|o| o.uid == n.uid && o.block_owner_deletion == Some(true));
            if blocks {
                blocking += 1;
            }
            if !d.deleting {
                info!(
                    "{NAME}: deleting {} (its owner {} is being deleted in the foreground)",
                    self.describe(d),
                    self.describe(n)
                );
                self.delete(d, PropagationPolicy::Foreground).await?;
            }
        }
        if blocking == 0 {
            info!(
                "{NAME}: no dependent blocks {} any longer",
                self.describe(n)
            );
            return self.remove_finalizer(n, FOREGROUND).await;
        }
        Ok(())
    }

    async fn remove_finalizer(&self, n: &Node, f: &str) -> anyhow::Result<()> {
        let keep: Vec<&String> = n.finalizers.iter().filter(|x| *x != f).collect();
        let body = json!({"metadata": {
            "finalizers": if keep.is_empty() { serde_json::Value::Null } else { json!(keep) },
            "resourceVersion": n.rv,
        }});
        self.patch(n, body).await
    }

    async fn patch(&self, n: &Node, body: serde_json::Value) -> anyhow::Result<()> {
        match self
            .api(n)
            .patch(&n.name, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            Ok(_) => {
                crate::metrics::synced(NAME, true);
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete(&self, n: &Node, policy: PropagationPolicy) -> anyhow::Result<()> {
        let dp = DeleteParams {
            propagation_policy: Some(policy),
            preconditions: Some(Preconditions {
                uid: Some(n.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match self.api(n).delete(&n.name, &dp).await {
            Ok(_) => {
                crate::metrics::synced(NAME, true);
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
