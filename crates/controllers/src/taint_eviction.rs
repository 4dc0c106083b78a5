//! taint-eviction-controller: deletes the pods of a node with NoExecute taints they do not
//! tolerate, at once, or once the smallest `tolerationSeconds` of their matching tolerations has
//! passed since the taint was added (a toleration without seconds tolerates for ever). Before
//! deleting, the pod gets the `DisruptionTarget` condition with reason `DeletionByTaintManager`,
//! as upstream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod, PodCondition, Taint};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::kit::{self, Named, Result};

pub const NAME: &str = "taint-eviction-controller";

struct Ctx {
    client: Client,
    nodes: Store<Node>,
    /// When a NoExecute taint without `timeAdded` was first seen: (node, key, effect) -> time.
    first_seen: Mutex<HashMap<(String, String), jiff::Timestamp>>,
    /// Pods (by uid) this controller has already evicted: its cache may show one again (the
    /// DisruptionTarget patch) before the deletion reaches it, and it must not evict twice.
    evicted: Mutex<HashMap<String, std::time::Instant>>,
}

impl Named for Ctx {
    fn name(&self) -> &'static str {
        NAME
    }
}

/// Runs the taint eviction controller until its watches end.
pub async fn run(client: Client) -> anyhow::Result<()> {
    let (nodes, node_events) =
        kit::reflect(Api::<Node>::all(client.clone()), watcher::Config::default());
    let scheduled = watcher::Config::default().fields("spec.nodeName!=");
    let ctl = Controller::new(Api::<Pod>::all(client.clone()), scheduled);
    let pods = ctl.store();
    let ctl = ctl.watches_stream(node_events, move |n: Node| {
        // Only a node with NoExecute taints concerns its pods (heartbeats of healthy nodes do
        // not); pods waiting out a removed taint look again at their timer anyway.
        let tainted = n
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|ts| ts.iter().any(|t| t.effect == "NoExecute"));
        if !tainted {
            return vec![];
        }
        let name = n.name_any();
        pods.state_filter(|p| {
            p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name.as_str())
        })
        .iter()
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect::<Vec<_>>()
    });
    let ctx = Arc::new(Ctx {
        client,
        nodes,
        first_seen: Mutex::new(HashMap::new()),
        evicted: Mutex::new(HashMap::new()),
    });
    kit::drive(NAME, ctl, reconcile, ctx).await
}

fn taint_added(ctx: &Ctx, node: &str, t: &Taint) -> jiff::Timestamp {
    if let Some(at) = &t.time_added {
        return at.0;
    }
    *ctx.first_seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry((node.to_string(), t.key.clone()))
        .or_insert_with(jiff::Timestamp::now)
}

async fn reconcile(pod: Arc<Pod>, ctx: Arc<Ctx>) -> Result<Action> {
    if kit::terminating(&pod) || matches!(kit::phase(&pod), "Succeeded" | "Failed") {
        return Ok(Action::await_change());
    }
    let Some(node_name) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
        return Ok(Action::await_change());
    };
    kit::synced(&ctx.nodes).await?;
    let Some(node) = ctx.nodes.get(&ObjectRef::new(&node_name)) else {
        return Ok(Action::await_change());
    };
    let taints: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t.effect == "NoExecute")
        .collect();
    if taints.is_empty() {
        return Ok(Action::await_change());
    }
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    let now = jiff::Timestamp::now();
    // The earliest moment any taint stops being tolerated (None: tolerated for ever).
    let mut evict_at: Option<(jiff::Timestamp, String)> = None;
    for t in &taints {
        let matching: Vec<_> = tolerations
            .iter()
            .filter(|tol| kit::tolerates(tol, t))
            .collect();
        let at = if matching.is_empty() {
            Some(now)
        } else if matching.iter().any(|m| m.toleration_seconds.is_none()) {
            None
        } else {
            let secs = matching
                .iter()
                .filter_map(|m| m.toleration_seconds)
                .min()
                .unwrap_or(0)
                .max(0);
            taint_added(&ctx, &node_name, t)
                .checked_add(jiff::SignedDuration::from_secs(secs))
                .ok()
        };
        if let Some(at) = at {
            if evict_at.as_ref().is_none_or(|(e, _)| at < *e) {
                evict_at = Some((at, t.key.clone()));
            }
        }
    }
    let Some((at, key)) = evict_at else {
        return Ok(Action::await_change());
    };
    if at > now {
        let wait = now.duration_until(at).as_secs_f64().max(0.0);
        return Ok(Action::requeue(
            Duration::from_secs_f64(wait) + Duration::from_millis(100),
        ));
    }
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    {
        let mut evicted = ctx.evicted.lock().unwrap_or_else(|e| e.into_inner());
        evicted.retain(|_, at| at.elapsed() < Duration::from_secs(300));
        if evicted.contains_key(&uid) {
            return Ok(Action::await_change());
        }
    }
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let mut conds = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    conds.retain(|c| c.type_ != "DisruptionTarget");
    conds.push(PodCondition {
        type_: "DisruptionTarget".into(),
        status: "True".into(),
        reason: Some("DeletionByTaintManager".into()),
        message: Some(format!(
            "Taint manager: deleting due to NoExecute taint {key}"
        )),
        last_transition_time: Some(kit::now()),
        ..Default::default()
    });
    let patch = json!({"status": {"conditions": conds}});
    match api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Action::await_change()),
        Err(e) => return Err(e.into()),
    }
    kit::record(
        &ctx.client,
        NAME,
        pod.as_ref(),
        false,
        "TaintManagerEviction",
        format!("Marking for deletion Pod {ns}/{name}"),
    )
    .await;
    kit::delete_pod(&api, &name).await?;
    ctx.evicted
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(uid, std::time::Instant::now());
    tracing::info!(
        controller = NAME,
        "evicted pod {ns}/{name} from node {node_name}: NoExecute taint {key} no longer tolerated"
    );
    Ok(Action::await_change())
}
