//! replicationcontroller-controller: keeps `spec.replicas` active pods matching a
//! ReplicationController's (map) selector, created from its template and owned by it. Orphans
//! that match are adopted, owned pods that no longer match are released, surplus pods are deleted
//! (unscheduled, pending, not ready and young ones first), and the status counts replicas,
//! fully-labelled, ready and available pods.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, ReplicationController, ReplicationControllerStatus};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::kit::{self, Named, Result};

pub const NAME: &str = "replicationcontroller-controller";
/// Upstream creates and deletes at most this many pods per sync ("burst replicas").
const BURST: usize = 500;

struct Ctx {
    client: Client,
    pods: Store<Pod>,
    expect: kit::Expectations<String>,
}

impl Named for Ctx {
    fn name(&self) -> &'static str {
        NAME
    }
}

/// Runs the ReplicationController controller until its watches end.
pub async fn run(client: Client) -> anyhow::Result<()> {
    let (pods, pod_events) =
        kit::reflect(Api::<Pod>::all(client.clone()), watcher::Config::default());
    let ctl = Controller::new(
        Api::<ReplicationController>::all(client.clone()),
        watcher::Config::default(),
    );
    let rcs = ctl.store();
    let ctl = ctl.watches_stream(pod_events, move |p: Pod| {
        let ns = p.namespace().unwrap_or_default();
        if let Some(owner) = kit::controller_of(&p) {
            if owner.kind == "ReplicationController" {
                return vec![ObjectRef::new(&owner.name).within(&ns)];
            }
            return vec![];
        }
        // An orphan: every controller whose selector it matches may adopt it.
        let labels = p.labels().clone();
        rcs.state_filter(|rc| {
            rc.metadata.namespace.as_deref() == Some(ns.as_str())
                && kit::map_selects(rc.spec.as_ref().and_then(|s| s.selector.as_ref()), &labels)
        })
        .iter()
        .map(|rc| ObjectRef::from_obj(rc.as_ref()))
        .collect()
    });
    let ctx = Arc::new(Ctx {
        client,
        pods,
        expect: Default::default(),
    });
    kit::drive(NAME, ctl, reconcile, ctx).await
}

async fn reconcile(rc: Arc<ReplicationController>, ctx: Arc<Ctx>) -> Result<Action> {
    kit::synced(&ctx.pods).await?;
    let ns = rc.namespace().unwrap_or_default();
    let name = rc.name_any();
    let uid = rc.uid().unwrap_or_default();
    let spec = rc.spec.clone().unwrap_or_default();
    let selector = spec.selector.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let key = uid.clone();
    let cached = |n: &str| ctx.pods.get(&kit::obj_ref(&ns, n));
    let in_sync = ctx.expect.satisfied(
        &key,
        |n| cached(n).is_some(),
        |n| cached(n).is_none_or(|p| kit::terminating(&p)),
    );

    // Claim: adopt matching orphans, release owned pods that stopped matching.
    let mut mine = vec![];
    let in_ns = ctx
        .pods
        .state_filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str()));
    for p in in_ns {
        let matches = kit::map_selects(Some(&selector), p.labels());
        match kit::controller_of(p.as_ref()) {
            Some(r) if r.uid == uid => {
                if matches {
                    mine.push(p);
                } else if rc.metadata.deletion_timestamp.is_none() {
                    release(&api, &p, &uid).await?;
                }
            }
            None if matches
                && !kit::terminating(&p)
                && rc.metadata.deletion_timestamp.is_none() =>
            {
                adopt(&api, &p, rc.as_ref()).await?;
                mine.push(p);
            }
            _ => {}
        }
    }
    let active: Vec<&Arc<Pod>> = mine.iter().filter(|p| kit::pod_active(p)).collect();
    let want = spec.replicas.unwrap_or(1).max(0) as usize;
    let mut requeue = None;
    if rc.metadata.deletion_timestamp.is_none() && in_sync {
        if active.len() < want {
            let Some(tpl) = spec.template.as_ref() else {
                return Err(kit::Error(anyhow::anyhow!(
                    "{ns}/{name} has no pod template"
                )));
            };
            let n = (want - active.len()).min(BURST);
            let pod = kit::pod_from_template(tpl, &name, kit::owner_ref(rc.as_ref()));
            let mut created = vec![];
            let mut err = None;
            for _ in 0..n {
                match kit::create_pod(&api, &pod).await {
                    Ok(n) => created.push(n),
                    Err(e) => {
                        err = Some(e);
                        break;
                    }
                }
            }
            tracing::info!(
                controller = NAME,
                "{ns}/{name}: created {} pod(s) for {want} replicas",
                created.len()
            );
            kit::record_pods(&ctx.client, NAME, rc.as_ref(), &created, &[], err.as_ref()).await;
            ctx.expect.expect(&key, created, vec![]);
            if let Some(e) = err {
                return Err(e);
            }
        } else if active.len() > want {
            let mut victims = active.clone();
            victims.sort_by_key(|p| kit::deletion_rank(p));
            let victims: Vec<String> = victims
                .iter()
                .take((active.len() - want).min(BURST))
                .map(|p| p.name_any())
                .collect();
            for v in &victims {
                kit::delete_pod(&api, v).await?;
            }
            tracing::info!(
                controller = NAME,
                "{ns}/{name}: deleted {} pod(s) for {want} replicas",
                victims.len()
            );
            kit::record_pods(&ctx.client, NAME, rc.as_ref(), &[], &victims, None).await;
            ctx.expect.expect(&key, vec![], victims);
        }
    } else if !in_sync {
        requeue = Some(Duration::from_secs(1));
    }

    // Status, from the cache as it is now.
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let tpl_labels: BTreeMap<String, String> = spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let status = ReplicationControllerStatus {
        replicas: active.len() as i32,
        fully_labeled_replicas: Some(
            active
                .iter()
                .filter(|p| tpl_labels.iter().all(|(k, v)| p.labels().get(k) == Some(v)))
                .count() as i32,
        ),
        ready_replicas: Some(active.iter().filter(|p| kit::pod_ready(p)).count() as i32),
        available_replicas: Some(
            active
                .iter()
                .filter(|p| kit::pod_available(p, min_ready))
                .count() as i32,
        ),
        observed_generation: rc.metadata.generation,
        conditions: rc.status.as_ref().and_then(|s| s.conditions.clone()),
    };
    if rc.status.as_ref() != Some(&status) {
        let rcs: Api<ReplicationController> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = json!({"status": status});
        match rcs
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    // Pods becoming available after minReadySeconds change no object: look again then.
    let not_yet_available = min_ready > 0
        && active
            .iter()
            .any(|p| kit::pod_ready(p) && !kit::pod_available(p, min_ready));
    Ok(match (requeue, not_yet_available) {
        (Some(d), _) => Action::requeue(d),
        (None, true) => Action::requeue(Duration::from_secs(1)),
        _ => Action::await_change(),
    })
}

/// Makes `owner` the controller of an orphan pod (its uid guards against a replaced pod).
pub(crate) async fn adopt<K>(api: &Api<Pod>, pod: &Pod, owner: &K) -> Result<()>
where
    K: kube::Resource<DynamicType = ()>,
{
    let mut refs = pod.metadata.owner_references.clone().unwrap_or_default();
    refs.push(kit::owner_ref(owner));
    let patch = json!({"metadata": {"ownerReferences": refs, "uid": pod.metadata.uid}});
    match api
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => {
            tracing::info!(
                controller = NAME,
                "adopted pod {}/{}",
                pod.namespace().unwrap_or_default(),
                pod.name_any()
            );
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Drops the owner reference of `uid` from a pod that no longer matches its selector.
pub(crate) async fn release(api: &Api<Pod>, pod: &Pod, uid: &str) -> Result<()> {
    let refs: Vec<_> = pod
        .metadata
        .owner_references
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.uid != uid)
        .collect();
    let patch = json!({"metadata": {"ownerReferences": refs, "uid": pod.metadata.uid}});
    match api
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => {
            tracing::info!(
                controller = NAME,
                "released pod {}/{}",
                pod.namespace().unwrap_or_default(),
                pod.name_any()
            );
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
