//! The Deployment controller: one ReplicaSet per pod template (named by its pod-template-hash),
//! rolled from old to new by RollingUpdate (maxSurge/maxUnavailable) or Recreate, with revision
//! annotations (`deployment.kubernetes.io/revision`, which `kubectl rollout history/undo` read),
//! proportional scaling of a rollout in progress, revisionHistoryLimit cleanup, paused
//! deployments, minReadySeconds and the Progressing/Available conditions with
//! progressDeadlineSeconds, as upstream's deployment controller.
//!
//! One deliberate difference: the surge and availability budgets count what the ReplicaSets'
//! status reports as well as what their spec asks (the larger pod count, the smaller available
//! count), so a ReplicaSet controller that has not caught up yet never lets the real pod count
//! pass replicas+maxSurge or fall below replicas-maxUnavailable.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use serde_json::json;
use tracing::{info, warn};

use crate::util::{self as cu, Claim, Error};

mod replicasets;
mod rollout;
pub mod util;

use util::*;

pub const NAME: &str = "deployment-controller";

pub(crate) struct Ctx {
    client: kube::Client,
    sets: Store<ReplicaSet>,
    pods: Store<Pod>,
}

/// Runs the Deployment controller until its watches fail for good.
pub async fn run(client: kube::Client) -> anyhow::Result<()> {
    // Both caches complete before the first sync (after a leader change they start empty).
    let sets = cu::reflect(Api::<ReplicaSet>::all(client.clone()), "replicasets").await?;
    let pods = cu::reflect(Api::<Pod>::all(client.clone()), "pods").await?;
    let (_rs_watch, _pod_watch) = (sets.guard, pods.guard);
    let rs_events = sets.changes.map(Ok::<_, watcher::Error>);
    let pod_events = pods.changes.map(Ok::<_, watcher::Error>);
    let (sets, pods) = (sets.store, pods.store);
    let controller = Controller::new(
        Api::<Deployment>::all(client.clone()),
        watcher::Config::default(),
    )
    .with_config(kube::runtime::controller::Config::default().concurrency(5));
    let deployments = controller.store();
    let by_rs = sets.clone();
    let ctx = Arc::new(Ctx { client, sets, pods });
    controller
        .watches_stream(rs_events, move |rs: ReplicaSet| {
            rs_owners(&deployments, &rs)
        })
        .watches_stream(pod_events, move |pod: Pod| pod_owner(&by_rs, &pod))
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!("{NAME}: {e}");
            }
        })
        .await;
    anyhow::bail!("{NAME}: its watch streams ended")
}

/// The Deployment a ReplicaSet event concerns: its controller, or for an orphan every
/// Deployment of its namespace whose selector matches.
fn rs_owners(deps: &Store<Deployment>, rs: &ReplicaSet) -> Vec<ObjectRef<Deployment>> {
    let ns = cu::namespace(&rs.metadata);
    if let Some(r) = cu::controller_of(&rs.metadata) {
        if r.kind == "Deployment" {
            return vec![ObjectRef::new(&r.name).within(ns)];
        }
        return vec![];
    }
    deps.state()
        .iter()
        .filter(|d| cu::namespace(&d.metadata) == ns)
        .filter(|d| {
            d.spec
                .as_ref()
                .is_some_and(|s| cu::selector_matches(&s.selector, rs.metadata.labels.as_ref()))
        })
        .map(|d| ObjectRef::from_obj(d.as_ref()))
        .collect()
}

/// A pod event matters to the Deployment of its ReplicaSet (Recreate waits for old pods).
fn pod_owner(sets: &Store<ReplicaSet>, pod: &Pod) -> Option<ObjectRef<Deployment>> {
    let ns = cu::namespace(&pod.metadata);
    let r = cu::controller_of(&pod.metadata)?;
    if r.kind != "ReplicaSet" {
        return None;
    }
    let rs = sets.get(&ObjectRef::new(&r.name).within(ns))?;
    let d = cu::controller_of(&rs.metadata)?;
    (d.kind == "Deployment").then(|| ObjectRef::new(&d.name).within(ns))
}

fn error_policy(d: Arc<Deployment>, e: &Error, _ctx: Arc<Ctx>) -> Action {
    warn!(
        "{NAME}: syncing Deployment {}/{}: {e}",
        cu::namespace(&d.metadata),
        cu::name(&d.metadata)
    );
    crate::metrics::synced(NAME, false);
    Action::requeue(Duration::from_secs(2))
}

/// One sync of one Deployment: its state and the ReplicaSets it owns.
pub(crate) struct Sync<'a> {
    ctx: &'a Ctx,
    d: Deployment,
    rss: Vec<ReplicaSet>,
    rs_api: Api<ReplicaSet>,
    d_api: Api<Deployment>,
}

async fn reconcile(d: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let ns = cu::namespace(&d.metadata).to_string();
    let Some(spec) = d.spec.as_ref() else {
        return Ok(Action::await_change());
    };
    let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
    let d_api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let mut owned = vec![];
    for rs in ctx.sets.state() {
        if cu::namespace(&rs.metadata) != ns {
            continue;
        }
        if let Claim::Owned = cu::claim(&rs_api, d.as_ref(), &spec.selector, rs.as_ref()).await? {
            owned.push(rs.as_ref().clone());
        }
    }
    let mut s = Sync {
        ctx: &ctx,
        d: d.as_ref().clone(),
        rss: owned,
        rs_api,
        d_api,
    };
    let empty_selector = spec
        .selector
        .match_labels
        .as_ref()
        .is_none_or(|m| m.is_empty())
        && spec
            .selector
            .match_expressions
            .as_ref()
            .is_none_or(|m| m.is_empty());
    if empty_selector {
        warn!(
            "{NAME}: Deployment {ns}/{} selects all pods; refusing to act",
            cu::name(&d.metadata)
        );
        return Ok(Action::await_change());
    }
    if d.metadata.deletion_timestamp.is_some() {
        let new = s.new_index();
        s.sync_status(new, false).await?;
        return Ok(Action::await_change());
    }
    s.check_paused_conditions().await?;
    let paused = spec.paused.unwrap_or(false);
    if paused || s.is_scaling_event() {
        s.sync(paused).await?;
    } else if is_rolling(&s.d) {
        s.rollout_rolling().await?;
    } else {
        s.rollout_recreate().await?;
    }
    crate::metrics::synced(NAME, true);
    let status = s.d.status.clone().unwrap_or_default();
    Ok(match deadline_in(&s.d, &status) {
        Some(secs) if !paused => Action::requeue(Duration::from_secs(secs.max(0) as u64 + 1)),
        _ => Action::await_change(),
    })
}

impl Sync<'_> {
    fn key(&self) -> String {
        format!(
            "{}/{}",
            cu::namespace(&self.d.metadata),
            cu::name(&self.d.metadata)
        )
    }

    /// Status as the ReplicaSets report it (upstream's calculateStatus), with Available.
    fn calculate_status(&self, new: Option<usize>) -> DeploymentStatus {
        let mut st = self.d.status.clone().unwrap_or_default();
        let (mut total, mut ready, mut available) = (0, 0, 0);
        for rs in &self.rss {
            let (r, rd, a) = rs_status(rs);
            total += r;
            ready += rd;
            available += a;
        }
        let want = replicas(&self.d);
        st.observed_generation = self.d.metadata.generation;
        st.replicas = Some(total);
        st.updated_replicas = Some(new.map_or(0, |i| rs_status(&self.rss[i]).0));
        st.ready_replicas = Some(ready);
        st.available_replicas = Some(available);
        st.unavailable_replicas = Some((want - available).max(0));
        if available >= want - max_unavailable(&self.d) {
            set_condition(
                &mut st,
                new_condition(
                    "Available",
                    "True",
                    "MinimumReplicasAvailable",
                    "Deployment has minimum availability.".into(),
                ),
            );
        } else {
            set_condition(
                &mut st,
                new_condition(
                    "Available",
                    "False",
                    "MinimumReplicasUnavailable",
                    "Deployment does not have minimum availability.".into(),
                ),
            );
        }
        st
    }

    /// Writes the status the ReplicaSets imply; with `rollout`, also the Progressing condition
    /// (upstream's syncRolloutStatus), else only counts and Available (syncDeploymentStatus).
    pub(crate) async fn sync_status(
        &mut self,
        new: Option<usize>,
        rollout: bool,
    ) -> Result<(), Error> {
        let old = self.d.status.clone().unwrap_or_default();
        let mut st = self.calculate_status(new);
        let has_deadline = self
            .d
            .spec
            .as_ref()
            .and_then(|s| s.progress_deadline_seconds)
            .is_some();
        let paused = self.d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
        if rollout && has_deadline && !paused {
            let name = new
                .map(|i| cu::name(&self.rss[i].metadata).to_string())
                .unwrap_or_default();
            if complete(&self.d, &st) {
                set_condition(
                    &mut st,
                    new_condition(
                        "Progressing",
                        "True",
                        "NewReplicaSetAvailable",
                        format!("ReplicaSet \"{name}\" has successfully progressed."),
                    ),
                );
            } else if progressing(&old, &st) {
                let mut c = new_condition(
                    "Progressing",
                    "True",
                    "ReplicaSetUpdated",
                    format!("ReplicaSet \"{name}\" is progressing."),
                );
                if let Some(cur) = condition(&st, "Progressing").filter(|c| c.status == "True") {
                    c.last_transition_time = cur.last_transition_time.clone();
                }
                remove_condition(&mut st, "Progressing");
                set_condition(&mut st, c);
            } else if deadline_in(&self.d, &st).is_some_and(|s| s < 0) {
                set_condition(
                    &mut st,
                    new_condition(
                        "Progressing",
                        "False",
                        "ProgressDeadlineExceeded",
                        format!("ReplicaSet \"{name}\" has timed out progressing."),
                    ),
                );
                warn!(
                    "{NAME}: Deployment {} exceeded its progress deadline",
                    self.key()
                );
            }
        }
        // A new ReplicaSet that cannot create pods makes the Deployment report it.
        let failure = new.and_then(|i| {
            self.rss[i]
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| {
                    c.iter()
                        .find(|c| c.type_ == "ReplicaFailure" && c.status == "True")
                })
                .cloned()
        });
        match failure {
            Some(f) => set_condition(
                &mut st,
                new_condition(
                    "ReplicaFailure",
                    "True",
                    f.reason.as_deref().unwrap_or("FailedCreate"),
                    f.message.unwrap_or_default(),
                ),
            ),
            None => remove_condition(&mut st, "ReplicaFailure"),
        }
        self.write_status(st).await
    }

    /// Writes the status when it changed.
    pub(crate) async fn write_status(&mut self, st: DeploymentStatus) -> Result<(), Error> {
        if self.d.status.as_ref() == Some(&st) {
            return Ok(());
        }
        let body = json!({ "status": st });
        match self
            .d_api
            .patch_status(
                cu::name(&self.d.metadata),
                &PatchParams::default(),
                &Patch::Merge(&body),
            )
            .await
        {
            Ok(d) => {
                self.d.status = d.status;
                self.d.metadata.resource_version = d.metadata.resource_version;
                Ok(())
            }
            Err(e) if cu::is_conflict_or_gone(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Progressing=Unknown with DeploymentPaused / DeploymentResumed as the pause flips.
    async fn check_paused_conditions(&mut self) -> Result<(), Error> {
        if self
            .d
            .spec
            .as_ref()
            .and_then(|s| s.progress_deadline_seconds)
            .is_none()
        {
            return Ok(());
        }
        let paused = self.d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
        let mut st = self.d.status.clone().unwrap_or_default();
        let reason = condition(&st, "Progressing").and_then(|c| c.reason.clone());
        let paused_cond = reason.as_deref() == Some("DeploymentPaused");
        if paused && !paused_cond {
            set_condition(
                &mut st,
                new_condition(
                    "Progressing",
                    "Unknown",
                    "DeploymentPaused",
                    "Deployment is paused".into(),
                ),
            );
            info!("{NAME}: Deployment {} is paused", self.key());
        } else if !paused && paused_cond {
            set_condition(
                &mut st,
                new_condition(
                    "Progressing",
                    "Unknown",
                    "DeploymentResumed",
                    "Deployment is resumed".into(),
                ),
            );
            info!("{NAME}: Deployment {} is resumed", self.key());
        } else {
            return Ok(());
        }
        self.write_status(st).await
    }

    /// Scaling without a rollout (paused, or spec.replicas changed): upstream's sync.
    async fn sync(&mut self, paused: bool) -> Result<(), Error> {
        let mut new = self.get_all(false).await?;
        self.scale(new).await?;
        if paused {
            self.cleanup(new).await?;
            new = self.new_index();
        }
        self.sync_status(new, false).await
    }

    /// Whether a ReplicaSet with replicas was sized for another spec.replicas.
    fn is_scaling_event(&self) -> bool {
        let want = replicas(&self.d);
        self.rss
            .iter()
            .filter(|rs| rs_replicas(rs) > 0)
            .any(|rs| annotation_i32(rs, DESIRED_REPLICAS).is_some_and(|d| d != want))
    }
}
