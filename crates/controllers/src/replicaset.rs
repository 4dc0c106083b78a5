//! The ReplicaSet controller: keeps `spec.replicas` active pods of the template for every
//! ReplicaSet, adopting matching orphans and releasing pods whose labels stopped matching, and
//! reports replicas, fullyLabeledReplicas, readyReplicas, availableReplicas (after
//! minReadySeconds) and observedGeneration.
//!
//! Expectations, as upstream: after creating or deleting pods it acts on a ReplicaSet again only
//! once its pod cache has seen those creations and deletions (or 5 minutes passed), so a lagging
//! cache never makes it create or delete twice.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use parking_lot::Mutex;
use serde_json::json;
use tracing::{info, warn};

use crate::events;
use crate::util::{self, Claim, Error};

pub const NAME: &str = "replicaset-controller";
/// The most pods created or deleted in one sync (upstream's BurstReplicas).
const BURST_REPLICAS: usize = 500;
/// How long unmet expectations hold a ReplicaSet back before it acts regardless.
const EXPECTATIONS_TTL: Duration = Duration::from_secs(300);

/// Creations and deletions a ReplicaSet waits to see in its cache.
#[derive(Default)]
pub struct Expectations {
    map: Mutex<HashMap<String, Pending>>,
}

struct Pending {
    /// Names of pods created and not yet seen.
    adds: HashSet<String>,
    /// UIDs of pods deleted and possibly still cached as live.
    dels: HashSet<String>,
    since: Instant,
}

impl Expectations {
    fn expect(&self, key: &str, adds: Vec<String>, dels: Vec<String>) {
        let mut m = self.map.lock();
        let p = m.entry(key.to_string()).or_insert_with(|| Pending {
            adds: HashSet::new(),
            dels: HashSet::new(),
            since: Instant::now(),
        });
        p.adds.extend(adds);
        p.dels.extend(dels);
        p.since = Instant::now();
    }

    /// A pod event for `key`'s pod `name` arrived.
    pub fn observed(&self, key: &str, name: &str) {
        if let Some(p) = self.map.lock().get_mut(key) {
            p.adds.remove(name);
        }
    }

    /// Whether `key` may act: every expected creation is seen and no pod deleted is still
    /// cached live (or the expectations expired).
    fn satisfied(&self, key: &str, cached: &[Arc<Pod>]) -> bool {
        let mut m = self.map.lock();
        let Some(p) = m.get_mut(key) else {
            return true;
        };
        for pod in cached {
            p.adds.remove(util::name(&pod.metadata));
        }
        p.dels.retain(|uid| {
            cached
                .iter()
                .any(|pod| util::uid(&pod.metadata) == uid && util::pod_active(pod))
        });
        if (p.adds.is_empty() && p.dels.is_empty()) || p.since.elapsed() > EXPECTATIONS_TTL {
            m.remove(key);
            return true;
        }
        false
    }

    fn forget(&self, key: &str) {
        self.map.lock().remove(key);
    }
}

struct Ctx {
    client: kube::Client,
    pods: Store<Pod>,
    exp: Arc<Expectations>,
}

fn key(meta: &ObjectMeta) -> String {
    format!("{}/{}", util::namespace(meta), util::name(meta))
}

/// Runs the ReplicaSet controller until its watches fail for good.
pub async fn run(client: kube::Client) -> anyhow::Result<()> {
    let pods = util::reflect(Api::<Pod>::all(client.clone()), "pods").await?;
    let _pods_watch = pods.guard;
    let pod_events = pods.changes.map(Ok::<_, watcher::Error>);
    let pods = pods.store;
    let controller = Controller::new(
        Api::<ReplicaSet>::all(client.clone()),
        watcher::Config::default(),
    )
    .with_config(kube::runtime::controller::Config::default().concurrency(5));
    let sets = controller.store();
    let exp = Arc::new(Expectations::default());
    let seen = exp.clone();
    let ctx = Arc::new(Ctx { client, pods, exp });
    controller
        .watches_stream(pod_events, move |pod: Pod| pod_owners(&sets, &seen, &pod))
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!("{NAME}: {e}");
            }
        })
        .await;
    anyhow::bail!("{NAME}: its watch streams ended")
}

/// The ReplicaSets a pod event concerns: its controller, or for an orphan every ReplicaSet of
/// its namespace whose selector matches (it may adopt it).
fn pod_owners(
    sets: &Store<ReplicaSet>,
    exp: &Expectations,
    pod: &Pod,
) -> Vec<ObjectRef<ReplicaSet>> {
    let ns = util::namespace(&pod.metadata);
    if let Some(r) = util::controller_of(&pod.metadata) {
        if r.kind != "ReplicaSet" {
            return vec![];
        }
        exp.observed(&format!("{ns}/{}", r.name), util::name(&pod.metadata));
        return vec![ObjectRef::new(&r.name).within(ns)];
    }
    sets.state()
        .iter()
        .filter(|rs| util::namespace(&rs.metadata) == ns)
        .filter(|rs| {
            rs.spec
                .as_ref()
                .is_some_and(|s| util::selector_matches(&s.selector, pod.metadata.labels.as_ref()))
        })
        .map(|rs| ObjectRef::from_obj(rs.as_ref()))
        .collect()
}

fn error_policy(rs: Arc<ReplicaSet>, e: &Error, _ctx: Arc<Ctx>) -> Action {
    warn!("{NAME}: syncing ReplicaSet {}: {e}", key(&rs.metadata));
    crate::metrics::synced(NAME, false);
    Action::requeue(Duration::from_secs(2))
}

async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let k = key(&rs.metadata);
    let ns = util::namespace(&rs.metadata).to_string();
    let Some(spec) = rs.spec.as_ref() else {
        return Ok(Action::await_change());
    };
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let in_ns: Vec<Arc<Pod>> = ctx
        .pods
        .state()
        .into_iter()
        .filter(|p| util::namespace(&p.metadata) == ns)
        .collect();
    let may_act = ctx.exp.satisfied(&k, &in_ns);
    let mut owned: Vec<Arc<Pod>> = vec![];
    for p in in_ns.iter().filter(|p| util::pod_active(p)) {
        match util::claim(&pods_api, rs.as_ref(), &spec.selector, p.as_ref()).await {
            Ok(Claim::Owned) => owned.push(p.clone()),
            Ok(Claim::Skip) => {}
            Err(e) => warn!(
                "{NAME}: claiming pod {ns}/{}: {e:#}",
                util::name(&p.metadata)
            ),
        }
    }
    let mut failure = None;
    if may_act && rs.metadata.deletion_timestamp.is_none() {
        if let Err(e) = manage_replicas(&ctx, &rs, &owned, &pods_api).await {
            failure = Some(e);
        }
    }
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let (status, recheck) = status_of(&rs, &owned, min_ready, failure.as_ref());
    update_status(&ctx, &rs, status).await?;
    crate::metrics::synced(NAME, failure.is_none());
    if let Some(e) = failure {
        return Err(Error(e));
    }
    Ok(match recheck {
        Some(d) => Action::requeue(d),
        None if !may_act => Action::requeue(Duration::from_secs(5)),
        None => Action::await_change(),
    })
}

/// Creates or deletes pods so that `owned` (the active pods we control) reaches spec.replicas.
async fn manage_replicas(
    ctx: &Ctx,
    rs: &ReplicaSet,
    owned: &[Arc<Pod>],
    api: &Api<Pod>,
) -> anyhow::Result<()> {
    let k = key(&rs.metadata);
    let want = rs
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1)
        .max(0) as usize;
    if owned.len() < want {
        let n = (want - owned.len()).min(BURST_REPLICAS);
        let template = rs
            .spec
            .as_ref()
            .and_then(|s| s.template.clone())
            .unwrap_or_default();
        let pod = pod_from_template(&template, rs);
        let pp = PostParams::default();
        // Slow start, as upstream: batches of 1, 2, 4, ... stop at the first failure.
        let (mut done, mut batch) = (0, 1);
        while done < n {
            let size = batch.min(n - done);
            let results = futures::future::join_all((0..size).map(|_| api.create(&pp, &pod))).await;
            let mut created = vec![];
            let mut err = None;
            for r in results {
                match r {
                    Ok(p) => {
                        let name = util::name(&p.metadata).to_string();
                        let msg = format!("Created pod: {name}");
                        events::record(&ctx.client, NAME, rs, false, "SuccessfulCreate", msg);
                        created.push(name);
                    }
                    Err(e) => {
                        let msg = format!("Error creating: {e}");
                        events::record(&ctx.client, NAME, rs, true, "FailedCreate", msg);
                        err = Some(e);
                    }
                }
            }
            done += created.len();
            ctx.exp.expect(&k, created, vec![]);
            if let Some(e) = err {
                return Err(anyhow::anyhow!("creating pods: {e}"));
            }
            batch *= 2;
        }
        info!(
            "{NAME}: ReplicaSet {k}: created {n} pods (want {want}, had {})",
            owned.len()
        );
    } else if owned.len() > want {
        let n = (owned.len() - want).min(BURST_REPLICAS);
        let mut ranked: Vec<&Arc<Pod>> = owned.iter().collect();
        ranked.sort_by_key(|p| deletion_rank(p));
        let victims: Vec<&Arc<Pod>> = ranked.into_iter().take(n).collect();
        ctx.exp.expect(
            &k,
            vec![],
            victims
                .iter()
                .map(|p| util::uid(&p.metadata).to_string())
                .collect(),
        );
        let dp = DeleteParams::default();
        let results = futures::future::join_all(
            victims
                .iter()
                .map(|p| api.delete(util::name(&p.metadata), &dp)),
        )
        .await;
        for (r, p) in results.into_iter().zip(&victims) {
            match r {
                Ok(_) => {
                    let msg = format!("Deleted pod: {}", util::name(&p.metadata));
                    events::record(&ctx.client, NAME, rs, false, "SuccessfulDelete", msg);
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => {
                    ctx.exp.forget(&k);
                    return Err(anyhow::anyhow!("deleting pods: {e}"));
                }
            }
        }
        info!(
            "{NAME}: ReplicaSet {k}: deleted {n} pods (want {want}, had {})",
            owned.len()
        );
    }
    Ok(())
}

/// Which pods go first when scaling down (smaller first), after upstream's ActivePods order:
/// unscheduled before scheduled, pending before unknown before running, not ready before
/// ready, ready for less time first, more restarts first, newer first.
fn deletion_rank(p: &Pod) -> (u8, u8, u8, i64, i64, i64) {
    let scheduled = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() as u8;
    let phase = match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Running") => 2,
        Some("Unknown") => 1,
        _ => 0,
    };
    let ready = util::ready_since(p);
    let ready_since = match &ready {
        Some(Some(t)) => -t.as_second(),
        _ => 0,
    };
    let restarts: i64 = p
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count as i64).sum())
        .unwrap_or(0);
    let created = p
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .unwrap_or(0);
    (
        scheduled,
        phase,
        ready.is_some() as u8,
        -ready_since,
        -restarts,
        -created,
    )
}

/// A new pod of `rs`: the template's labels, annotations and spec, named `<rs>-<random>`, with
/// a controller reference to `rs`.
pub fn pod_from_template<O: kube::Resource<DynamicType = ()>>(
    template: &PodTemplateSpec,
    owner: &O,
) -> Pod {
    let tm = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", util::name(owner.meta()))),
            namespace: owner.meta().namespace.clone(),
            labels: tm.labels,
            annotations: tm.annotations,
            finalizers: tm.finalizers,
            owner_references: Some(vec![util::controller_ref(owner)]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// The status the pods imply, and when to look again (a ready pod becoming available).
fn status_of(
    rs: &ReplicaSet,
    owned: &[Arc<Pod>],
    min_ready: i32,
    failure: Option<&anyhow::Error>,
) -> (serde_json::Value, Option<Duration>) {
    let template_labels = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let mut recheck: Option<Duration> = None;
    let (mut ready, mut available, mut labeled) = (0, 0, 0);
    for p in owned {
        let labels = p.metadata.labels.clone().unwrap_or_default();
        if template_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
        {
            labeled += 1;
        }
        if util::pod_ready(p) {
            ready += 1;
        }
        match util::pod_available(p, min_ready) {
            (true, _) => available += 1,
            (false, Some(wait)) => recheck = Some(recheck.map_or(wait, |r| r.min(wait))),
            _ => {}
        }
    }
    let old_conds = rs
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut conds: Vec<serde_json::Value> = vec![];
    if let Some(e) = failure {
        let prior = old_conds.iter().find(|c| c.type_ == "ReplicaFailure");
        let reason = if e.to_string().contains("deleting") {
            "FailedDelete"
        } else {
            "FailedCreate"
        };
        conds.push(json!({
            "type": "ReplicaFailure",
            "status": "True",
            "reason": reason,
            "message": format!("{e:#}"),
            "lastTransitionTime": prior
                .and_then(|c| c.last_transition_time.clone())
                .map(|t| util::time_str(t.0))
                .unwrap_or_else(|| util::time_str(util::now())),
        }));
    }
    let status = json!({
        "replicas": owned.len(),
        "fullyLabeledReplicas": labeled,
        "readyReplicas": ready,
        "availableReplicas": available,
        "observedGeneration": rs.metadata.generation,
        "conditions": if conds.is_empty() { serde_json::Value::Null } else { json!(conds) },
    });
    (status, recheck)
}

/// The fields a sync decides, in one comparable shape (absent counts are 0; conditions by
/// type, status, reason and message).
fn comparable(status: &serde_json::Value) -> serde_json::Value {
    let count = |f: &str| status.get(f).and_then(|v| v.as_i64()).unwrap_or(0);
    let conds: Vec<serde_json::Value> = status
        .get("conditions")
        .and_then(|c| c.as_array())
        .into_iter()
        .flatten()
        .map(|c| json!([c["type"], c["status"], c["reason"], c["message"]]))
        .collect();
    json!([
        count("replicas"),
        count("fullyLabeledReplicas"),
        count("readyReplicas"),
        count("availableReplicas"),
        count("observedGeneration"),
        conds,
    ])
}

async fn update_status(ctx: &Ctx, rs: &ReplicaSet, status: serde_json::Value) -> Result<(), Error> {
    let current =
        serde_json::to_value(rs.status.clone().unwrap_or_default()).map_err(anyhow::Error::from)?;
    if comparable(&current) == comparable(&status) {
        return Ok(());
    }
    let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), util::namespace(&rs.metadata));
    match api
        .patch_status(
            util::name(&rs.metadata),
            &PatchParams::default(),
            &Patch::Merge(&json!({ "status": status })),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if matches!(&e, kube::Error::Api(s) if s.code == 404) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
