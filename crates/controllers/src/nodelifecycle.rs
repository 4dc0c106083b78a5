//! node-lifecycle-controller: watches every node's heartbeats (its Lease in `kube-node-lease`
//! and its Ready condition's `lastHeartbeatTime`). A node whose heartbeats stop for longer than
//! `--node-monitor-grace-period` (`--node-startup-grace-period` for a node that never reported)
//! gets its Ready, MemoryPressure, DiskPressure and PIDPressure conditions set to Unknown and its
//! pods marked not ready. Taints follow the conditions, as upstream: Ready=Unknown gives
//! `node.kubernetes.io/unreachable` NoExecute and NoSchedule, Ready=False gives
//! `node.kubernetes.io/not-ready` NoExecute and NoSchedule, pressure conditions and
//! `spec.unschedulable` give their NoSchedule taints. (Pods are then evicted by the
//! taint-eviction-controller.) Heartbeats are timed by this controller's own clock when it sees
//! them change, so clock skew between nodes and the controller does not matter.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::kit::{self, Named, Result};

pub const NAME: &str = "node-lifecycle-controller";
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
const LEASE_NAMESPACE: &str = "kube-node-lease";

/// The controller's timing (upstream's flags and defaults).
#[derive(Clone, Debug)]
pub struct Config {
    /// --node-monitor-period: how often every node's heartbeats are checked.
    pub monitor_period: Duration,
    /// --node-monitor-grace-period: how long a node may go without a heartbeat before it is
    /// marked Unknown.
    pub grace_period: Duration,
    /// --node-startup-grace-period: the same for a node that never posted its status.
    pub startup_grace_period: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            monitor_period: Duration::from_secs(5),
            grace_period: Duration::from_secs(50),
            startup_grace_period: Duration::from_secs(60),
        }
    }
}

/// The last heartbeat seen of a node and when (by our clock) it last changed.
struct Probe {
    heartbeat: (Option<String>, Option<String>),
    changed: Instant,
}

struct Ctx {
    client: Client,
    leases: Store<Lease>,
    cfg: Config,
    probes: Mutex<HashMap<String, Probe>>,
}

impl Named for Ctx {
    fn name(&self) -> &'static str {
        NAME
    }
}

static CONFIG: std::sync::OnceLock<Config> = std::sync::OnceLock::new();

/// Sets the timing (from the controller-manager's flags) before [`run`]; the first call wins.
pub fn configure(cfg: Config) {
    let _ = CONFIG.set(cfg);
}

/// Runs the node lifecycle controller with the configured timing (upstream's defaults unless
/// [`configure`]d).
pub async fn run(client: Client) -> anyhow::Result<()> {
    run_with(client, CONFIG.get().cloned().unwrap_or_default()).await
}

/// Runs the node lifecycle controller until its watches end.
pub async fn run_with(client: Client, cfg: Config) -> anyhow::Result<()> {
    tracing::info!(
        controller = NAME,
        "monitoring nodes every {:?}, grace period {:?} (startup {:?})",
        cfg.monitor_period,
        cfg.grace_period,
        cfg.startup_grace_period
    );
    let (leases, lease_events) = kit::reflect(
        Api::<Lease>::namespaced(client.clone(), LEASE_NAMESPACE),
        watcher::Config::default(),
    );
    let ctl = Controller::new(Api::<Node>::all(client.clone()), watcher::Config::default())
        .watches_stream(lease_events, |l: Lease| Some(ObjectRef::new(&l.name_any())));
    let ctx = Arc::new(Ctx {
        client,
        leases,
        cfg,
        probes: Mutex::new(HashMap::new()),
    });
    kit::drive(NAME, ctl, reconcile, ctx).await
}

fn ready_condition(node: &Node) -> Option<&NodeCondition> {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
}

fn condition_status<'a>(node: &'a Node, t: &str) -> Option<&'a str> {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == t))
        .map(|c| c.status.as_str())
}

async fn reconcile(node: Arc<Node>, ctx: Arc<Ctx>) -> Result<Action> {
    kit::synced(&ctx.leases).await?;
    let name = node.name_any();
    let lease = ctx.leases.get(&kit::obj_ref(LEASE_NAMESPACE, &name));
    let heartbeat = (
        ready_condition(&node)
            .and_then(|c| c.last_heartbeat_time.as_ref())
            .map(|t| t.0.to_string()),
        lease
            .as_ref()
            .and_then(|l| l.spec.as_ref())
            .and_then(|s| s.renew_time.as_ref())
            .map(|t| t.0.to_string()),
    );
    let silent_for = {
        let mut probes = ctx.probes.lock().unwrap_or_else(|e| e.into_inner());
        let p = probes.entry(name.clone()).or_insert_with(|| Probe {
            heartbeat: heartbeat.clone(),
            changed: Instant::now(),
        });
        if p.heartbeat != heartbeat {
            p.heartbeat = heartbeat;
            p.changed = Instant::now();
        }
        p.changed.elapsed()
    };
    let grace = if ready_condition(&node).is_none() {
        ctx.cfg.startup_grace_period
    } else {
        ctx.cfg.grace_period
    };
    let mut node = (*node).clone();
    if silent_for > grace {
        if mark_unknown(&mut node, silent_for) {
            let api: Api<Node> = Api::all(ctx.client.clone());
            node = api
                .replace_status(&name, &PostParams::default(), &node)
                .await?;
            tracing::warn!(
                controller = NAME,
                "node {name} stopped posting status ({}s without a heartbeat): Ready=Unknown",
                silent_for.as_secs()
            );
            kit::record(
                &ctx.client,
                NAME,
                &node,
                false,
                "NodeNotReady",
                format!("Node {name} status is now: NodeNotReady"),
            )
            .await;
        }
        if condition_status(&node, "Ready") == Some("Unknown") {
            mark_pods_not_ready(&ctx.client, &name).await?;
        }
    }
    update_taints(&ctx.client, &node).await?;
    Ok(Action::requeue(ctx.cfg.monitor_period))
}

/// Sets the kubelet-owned conditions to Unknown; whether anything changed.
fn mark_unknown(node: &mut Node, silent: Duration) -> bool {
    let now = kit::now();
    let status = node.status.get_or_insert_with(Default::default);
    let conds = status.conditions.get_or_insert_with(Vec::new);
    let mut changed = false;
    for t in ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"] {
        match conds.iter_mut().find(|c| c.type_ == t) {
            Some(c) if c.status == "Unknown" => {}
            Some(c) => {
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some(format!(
                    "Kubelet stopped posting node status ({}s without a heartbeat).",
                    silent.as_secs()
                ));
                c.last_transition_time = Some(now.clone());
                changed = true;
            }
            None => {
                conds.push(NodeCondition {
                    type_: t.into(),
                    status: "Unknown".into(),
                    reason: Some("NodeStatusNeverUpdated".into()),
                    message: Some("Kubelet never posted node status.".into()),
                    last_heartbeat_time: None,
                    last_transition_time: Some(now.clone()),
                });
                changed = true;
            }
        }
    }
    changed
}

/// Sets Ready=False on the pods of an unresponsive node, so endpoints drop them.
async fn mark_pods_not_ready(client: &Client, node: &str) -> Result<()> {
    let pods: Api<Pod> = Api::all(client.clone());
    let lp = ListParams::default().fields(&format!("spec.nodeName={node}"));
    for p in pods.list(&lp).await?.items {
        if !kit::pod_ready(&p) || kit::terminating(&p) {
            continue;
        }
        let mut conds = p
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        for c in conds.iter_mut().filter(|c| c.type_ == "Ready") {
            c.status = "False".into();
            c.last_transition_time = Some(kit::now());
        }
        let api: Api<Pod> = Api::namespaced(client.clone(), &p.namespace().unwrap_or_default());
        let patch = json!({"status": {"conditions": conds}});
        match api
            .patch_status(
                &p.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => tracing::info!(
                controller = NAME,
                "pod {}/{} on unresponsive node {node} marked not ready",
                p.namespace().unwrap_or_default(),
                p.name_any()
            ),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The taints this controller owns, from the node's conditions and `spec.unschedulable`.
fn desired_taints(node: &Node) -> Vec<(&'static str, &'static str)> {
    let mut out = vec![];
    match condition_status(node, "Ready") {
        Some("False") => out.extend([(NOT_READY, "NoExecute"), (NOT_READY, "NoSchedule")]),
        Some("Unknown") => out.extend([(UNREACHABLE, "NoExecute"), (UNREACHABLE, "NoSchedule")]),
        _ => {}
    }
    for (cond, key) in [
        ("MemoryPressure", "node.kubernetes.io/memory-pressure"),
        ("DiskPressure", "node.kubernetes.io/disk-pressure"),
        ("PIDPressure", "node.kubernetes.io/pid-pressure"),
        (
            "NetworkUnavailable",
            "node.kubernetes.io/network-unavailable",
        ),
    ] {
        if condition_status(node, cond) == Some("True") {
            out.push((key, "NoSchedule"));
        }
    }
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        out.push(("node.kubernetes.io/unschedulable", "NoSchedule"));
    }
    out
}

const MANAGED: &[&str] = &[
    NOT_READY,
    UNREACHABLE,
    "node.kubernetes.io/memory-pressure",
    "node.kubernetes.io/disk-pressure",
    "node.kubernetes.io/pid-pressure",
    "node.kubernetes.io/network-unavailable",
    "node.kubernetes.io/unschedulable",
];

async fn update_taints(client: &Client, node: &Node) -> Result<()> {
    let current = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let want = desired_taints(node);
    let mut next: Vec<Taint> = current
        .iter()
        .filter(|t| {
            !MANAGED.contains(&t.key.as_str())
                || want.iter().any(|(k, e)| *k == t.key && *e == t.effect)
        })
        .cloned()
        .collect();
    for (k, e) in &want {
        if !next.iter().any(|t| t.key == *k && t.effect == *e) {
            next.push(Taint {
                key: k.to_string(),
                effect: e.to_string(),
                value: None,
                time_added: (*e == "NoExecute").then(kit::now),
            });
        }
    }
    if next == current {
        return Ok(());
    }
    let added: Vec<String> = next
        .iter()
        .filter(|t| !current.contains(t))
        .map(|t| format!("{}:{}", t.key, t.effect))
        .collect();
    let removed: Vec<String> = current
        .iter()
        .filter(|t| !next.contains(t))
        .map(|t| format!("{}:{}", t.key, t.effect))
        .collect();
    let mut n = node.clone();
    n.spec.get_or_insert_with(Default::default).taints = (!next.is_empty()).then_some(next);
    let api: Api<Node> = Api::all(client.clone());
    api.replace(&node.name_any(), &PostParams::default(), &n)
        .await?;
    tracing::info!(
        controller = NAME,
        "node {}: taints added {added:?}, removed {removed:?}",
        node.name_any()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(ready: &str, unschedulable: bool) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n"},
            "spec": {"unschedulable": unschedulable},
            "status": {"conditions": [{"type": "Ready", "status": ready}, {"type": "DiskPressure", "status": "True"}]}
        }))
        .unwrap()
    }

    #[test]
    fn taints_follow_conditions() {
        assert_eq!(
            desired_taints(&node("Unknown", false)),
            [
                (UNREACHABLE, "NoExecute"),
                (UNREACHABLE, "NoSchedule"),
                ("node.kubernetes.io/disk-pressure", "NoSchedule")
            ]
        );
        assert_eq!(
            desired_taints(&node("False", true))[..2],
            [(NOT_READY, "NoExecute"), (NOT_READY, "NoSchedule")]
        );
        assert!(desired_taints(&node("False", true))
            .contains(&("node.kubernetes.io/unschedulable", "NoSchedule")));
        assert_eq!(
            desired_taints(&node("True", false)),
            [("node.kubernetes.io/disk-pressure", "NoSchedule")]
        );
    }

    #[test]
    fn unknown_marks_kubelet_conditions_once() {
        let mut n = node("True", false);
        assert!(mark_unknown(&mut n, Duration::from_secs(60)));
        assert_eq!(condition_status(&n, "Ready"), Some("Unknown"));
        assert_eq!(condition_status(&n, "MemoryPressure"), Some("Unknown"));
        assert!(!mark_unknown(&mut n, Duration::from_secs(61)));
    }
}
