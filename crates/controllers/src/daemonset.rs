//! daemonset-controller: one pod of a DaemonSet on every eligible node: the node matches the
//! template's nodeSelector and required node affinity, and the pod tolerates the node's
//! NoSchedule/NoExecute taints (with the tolerations upstream adds to every daemon pod). Pods are
//! pinned to their node by node affinity on `metadata.name` (the scheduler binds them), labelled
//! with `controller-revision-hash` of their template; extra pods, pods on nodes no longer
//! eligible and failed pods are deleted. `RollingUpdate` replaces out-of-date pods keeping at most
//! `maxUnavailable` nodes without an available pod, or with `maxSurge` starts the new pod beside
//! the old one (at most `maxSurge` nodes at once) and deletes the old one once the new one is
//! available; `OnDelete` replaces them only once deleted.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodTemplateSpec, Toleration,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::kit::{self, Named, Result};

pub const NAME: &str = "daemonset-controller";
pub const HASH_LABEL: &str = "controller-revision-hash";
const GENERATION_LABEL: &str = "pod-template-generation";

struct Ctx {
    client: Client,
    pods: Store<Pod>,
    nodes: Store<Node>,
    expect: kit::Expectations<String>,
}

impl Named for Ctx {
    fn name(&self) -> &'static str {
        NAME
    }
}

/// Runs the DaemonSet controller until its watches end.
pub async fn run(client: Client) -> anyhow::Result<()> {
    let (pods, pod_events) =
        kit::reflect(Api::<Pod>::all(client.clone()), watcher::Config::default());
    let (nodes, node_events) =
        kit::reflect(Api::<Node>::all(client.clone()), watcher::Config::default());
    let ctl = Controller::new(
        Api::<DaemonSet>::all(client.clone()),
        watcher::Config::default(),
    );
    let sets = ctl.store();
    let ctl = ctl
        .owns_stream(pod_events)
        .watches_stream(node_events, move |_n: Node| {
            sets.state()
                .iter()
                .map(|d| ObjectRef::from_obj(d.as_ref()))
                .collect::<Vec<_>>()
        });
    let ctx = Arc::new(Ctx {
        client,
        pods,
        nodes,
        expect: Default::default(),
    });
    kit::drive(NAME, ctl, reconcile, ctx).await
}

fn tol(key: &str, effect: &str) -> Toleration {
    Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    }
}

/// The tolerations upstream adds to every daemon pod (so daemons survive node conditions).
fn daemon_tolerations(tpl: &PodTemplateSpec) -> Vec<Toleration> {
    let mut out = tpl
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    let mut add = vec![
        tol("node.kubernetes.io/not-ready", "NoExecute"),
        tol("node.kubernetes.io/unreachable", "NoExecute"),
        tol("node.kubernetes.io/disk-pressure", "NoSchedule"),
        tol("node.kubernetes.io/memory-pressure", "NoSchedule"),
        tol("node.kubernetes.io/pid-pressure", "NoSchedule"),
        tol("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if tpl.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
        add.push(tol("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    for t in add {
        if !out.iter().any(|o| o.key == t.key && o.effect == t.effect) {
            out.push(t);
        }
    }
    out
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&String>) -> bool {
    let values = r.values.clone().unwrap_or_default();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(b)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|b| b.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if r.operator == "Gt" {
                v > b
            } else {
                v < b
            }
        }
        _ => false,
    }
}

/// Whether a daemon pod of this template should run on the node.
fn eligible(tpl: &PodTemplateSpec, tolerations: &[Toleration], node: &Node) -> bool {
    let labels = node.labels();
    let spec = tpl.spec.clone().unwrap_or_default();
    if let Some(sel) = &spec.node_selector {
        if !sel.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            return false;
        }
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    if let Some(req) = required {
        let name = node.name_any();
        let any = req.node_selector_terms.iter().any(|t| {
            t.match_expressions
                .iter()
                .flatten()
                .all(|r| requirement_matches(r, labels.get(&r.key)))
                && t.match_fields
                    .iter()
                    .flatten()
                    .all(|r| r.key == "metadata.name" && requirement_matches(r, Some(&name)))
        });
        if !any {
            return false;
        }
    }
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|t| tolerations.iter().any(|tol| kit::tolerates(tol, t)))
}

/// The node a daemon pod is for: its nodeName, or the node its affinity pins it to.
fn target_node(p: &Pod) -> Option<String> {
    let spec = p.spec.as_ref()?;
    if let Some(n) = spec.node_name.clone().filter(|n| !n.is_empty()) {
        return Some(n);
    }
    spec.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == "metadata.name" && r.operator == "In")
        .and_then(|r| r.values.as_ref()?.first().cloned())
}

/// A stable hash of the pod template (FNV-1a over its JSON), the revision pods are labelled with.
fn template_hash(tpl: &PodTemplateSpec) -> String {
    let bytes = serde_json::to_vec(tpl).unwrap_or_default();
    let mut h: u32 = 0x811c9dc5;
    for b in bytes {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x01000193);
    }
    format!("{h:x}")
}

/// The daemon pod for one node.
fn daemon_pod(
    ds: &DaemonSet,
    tpl: &PodTemplateSpec,
    tols: &[Toleration],
    hash: &str,
    node: &str,
) -> Pod {
    let mut pod = kit::pod_from_template(tpl, &ds.name_any(), kit::owner_ref(ds));
    let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(HASH_LABEL.into(), hash.into());
    if let Some(g) = ds.metadata.generation {
        labels.insert(GENERATION_LABEL.into(), g.to_string());
    }
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.tolerations = Some(tols.to_vec());
    let pin = NodeSelectorRequirement {
        key: "metadata.name".into(),
        operator: "In".into(),
        values: Some(vec![node.into()]),
    };
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let na = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    let req = na
        .required_during_scheduling_ignored_during_execution
        .get_or_insert_with(|| NodeSelector {
            node_selector_terms: vec![],
        });
    if req.node_selector_terms.is_empty() {
        req.node_selector_terms.push(NodeSelectorTerm::default());
    }
    for t in &mut req.node_selector_terms {
        t.match_fields = Some(vec![pin.clone()]);
    }
    pod
}

/// maxSurge: a count, or a percentage of the desired pods rounded up; 0 by default.
fn max_surge(ds: &DaemonSet, desired: usize) -> usize {
    let v = ds
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.max_surge.clone());
    match v {
        None => 0,
        Some(IntOrString::Int(n)) => n.max(0) as usize,
        Some(IntOrString::String(s)) => {
            let pct = s.trim_end_matches('%').parse::<usize>().unwrap_or(0);
            (desired * pct).div_ceil(100)
        }
    }
}

fn max_unavailable(ds: &DaemonSet, desired: usize) -> usize {
    let v = ds
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.max_unavailable.clone())
        .unwrap_or(IntOrString::Int(1));
    let n = match v {
        IntOrString::Int(n) => n.max(0) as usize,
        IntOrString::String(s) => {
            let pct = s.trim_end_matches('%').parse::<usize>().unwrap_or(0);
            // Percentages round up, as upstream's for maxUnavailable of daemon sets.
            (desired * pct).div_ceil(100)
        }
    };
    // Without surge a budget of 0 could never progress (validation forbids both 0).
    n.max(1)
}

async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Ctx>) -> Result<Action> {
    kit::synced(&ctx.pods).await?;
    kit::synced(&ctx.nodes).await?;
    let ns = ds.namespace().unwrap_or_default();
    let name = ds.name_any();
    let uid = ds.uid().unwrap_or_default();
    let spec = ds.spec.clone().unwrap_or_default();
    let tpl = spec.template.clone();
    let tols = daemon_tolerations(&tpl);
    let hash = template_hash(&tpl);
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let cached = |n: &str| ctx.pods.get(&kit::obj_ref(&ns, n));
    let in_sync = ctx.expect.satisfied(
        &uid,
        |n| cached(n).is_some(),
        |n| cached(n).is_none_or(|p| kit::terminating(&p)),
    );

    // node -> its live daemon pods
    let mut by_node: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
    let mut failed = vec![];
    for p in kit::owned_pods(&ctx.pods, &ns, &uid) {
        if kit::terminating(&p) {
            continue;
        }
        if kit::phase(&p) == "Failed" {
            failed.push(p.name_any());
            continue;
        }
        if let Some(n) = target_node(&p) {
            by_node.entry(n).or_default().push(p);
        }
    }
    let nodes = ctx.nodes.state();
    let mut create_on = vec![];
    let mut delete: Vec<String> = failed.clone();
    let mut status = DaemonSetStatus {
        observed_generation: ds.metadata.generation,
        collision_count: ds.status.as_ref().and_then(|s| s.collision_count),
        conditions: ds.status.as_ref().and_then(|s| s.conditions.clone()),
        ..Default::default()
    };
    let (mut current, mut misscheduled, mut ready, mut available, mut updated) = (0, 0, 0, 0, 0);
    let mut desired: usize = 0;
    // Out-of-date pods on eligible nodes: (name, available)
    let mut old = vec![];
    let mut unavailable_nodes = 0;
    let rolling = spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate";
    let eligible_nodes = nodes.iter().filter(|n| eligible(&tpl, &tols, n)).count();
    let surge = if rolling {
        max_surge(&ds, eligible_nodes)
    } else {
        0
    };
    let mut surging = 0;
    for node in &nodes {
        let n = node.name_any();
        let mut pods = by_node.remove(&n).unwrap_or_default();
        if !eligible(&tpl, &tols, node) {
            if !pods.is_empty() {
                misscheduled += 1;
                delete.extend(pods.iter().map(|p| p.name_any()));
            }
            continue;
        }
        desired += 1;
        if pods.is_empty() {
            create_on.push(n);
            unavailable_nodes += 1;
            continue;
        }
        current += 1;
        // Keep one pod per node: the up-to-date, then the oldest.
        pods.sort_by_key(|p| {
            (
                p.labels().get(HASH_LABEL) != Some(&hash),
                p.metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.as_second())
                    .unwrap_or(0),
            )
        });
        let is_new = |p: &Arc<Pod>| p.labels().get(HASH_LABEL) == Some(&hash);
        // Under maxSurge a node may briefly run an old pod beside its new one: the old one
        // serves until the new one is available, then goes.
        let mut keep = 1;
        if surge > 0 && is_new(&pods[0]) {
            let first_old = pods.iter().position(|p| !is_new(p));
            let new_available = kit::pod_available(&pods[0], min_ready);
            match first_old {
                Some(i) if !new_available && kit::pod_available(&pods[i], min_ready) => {
                    // Keep [new, old]: drop other new duplicates and other old pods.
                    delete.extend(pods[1..i].iter().map(|p| p.name_any()));
                    delete.extend(pods[i + 1..].iter().map(|p| p.name_any()));
                    let old_pod = pods.remove(i);
                    pods.truncate(1);
                    pods.push(old_pod);
                    surging += 1;
                    keep = 2;
                }
                _ => {}
            }
        }
        delete.extend(pods.iter().skip(keep).map(|p| p.name_any()));
        // The pod that serves the node: the new one once available, else the old one kept.
        let serving = if keep == 2 { &pods[1] } else { &pods[0] };
        let is_ready = kit::pod_ready(serving);
        let is_available = kit::pod_available(serving, min_ready);
        ready += is_ready as i32;
        available += is_available as i32;
        if !is_available {
            unavailable_nodes += 1;
        }
        if is_new(&pods[0]) {
            // A node still served by its old pod is not updated yet.
            updated += (keep == 1) as i32;
        } else {
            old.push((n.clone(), pods[0].name_any(), is_available));
        }
    }
    // Pods pinned to nodes that no longer exist.
    for pods in by_node.into_values() {
        misscheduled += 1;
        delete.extend(pods.iter().map(|p| p.name_any()));
    }
    if rolling && surge > 0 {
        // Surge: an available old pod gets a new pod beside it, at most maxSurge nodes at once;
        // an unavailable old pod is simply replaced.
        for (node, pod, avail) in &old {
            if !avail {
                delete.push(pod.clone());
            } else if surging < surge {
                create_on.push(node.clone());
                surging += 1;
            }
        }
    } else if rolling {
        let budget = max_unavailable(&ds, desired);
        // Unavailable old pods cost nothing to replace; available ones use the budget.
        for (_, pod, avail) in &old {
            if !avail {
                delete.push(pod.clone());
            }
        }
        let mut unavailable = unavailable_nodes;
        for (_, pod, avail) in &old {
            if *avail && unavailable < budget {
                delete.push(pod.clone());
                unavailable += 1;
            }
        }
    }
    let mut requeue = None;
    if in_sync && ds.metadata.deletion_timestamp.is_none() {
        let mut created = vec![];
        let mut err = None;
        for n in &create_on {
            let pod = daemon_pod(&ds, &tpl, &tols, &hash, n);
            match kit::create_pod(&api, &pod).await {
                Ok(p) => created.push(p),
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = err {
            kit::record_pods(&ctx.client, NAME, ds.as_ref(), &created, &[], Some(&e)).await;
            ctx.expect.expect(&uid, created, vec![]);
            return Err(e);
        }
        delete.sort();
        delete.dedup();
        for p in &delete {
            kit::delete_pod(&api, p).await?;
        }
        if !created.is_empty() || !delete.is_empty() {
            tracing::info!(
                controller = NAME,
                "daemonset {ns}/{name}: created {} pod(s), deleted {}",
                created.len(),
                delete.len()
            );
        }
        kit::record_pods(&ctx.client, NAME, ds.as_ref(), &created, &delete, None).await;
        ctx.expect.expect(&uid, created, delete);
    } else if !in_sync {
        requeue = Some(Duration::from_secs(1));
    }
    status.desired_number_scheduled = desired as i32;
    status.current_number_scheduled = current;
    status.number_misscheduled = misscheduled;
    status.number_ready = ready;
    status.number_available = Some(available);
    status.number_unavailable = Some(desired as i32 - available);
    status.updated_number_scheduled = Some(updated);
    if ds.status.as_ref() != Some(&status) {
        let mut d = (*ds).clone();
        d.status = Some(status);
        let sets: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &ns);
        match sets.replace_status(&name, &PostParams::default(), &d).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    if requeue.is_none() && min_ready > 0 && ready > available {
        requeue = Some(Duration::from_secs(1));
    }
    Ok(requeue
        .map(Action::requeue)
        .unwrap_or_else(Action::await_change))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tpl(extra: serde_json::Value) -> PodTemplateSpec {
        let mut spec = json!({"containers": [{"name": "c"}]});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        serde_json::from_value(json!({"spec": spec})).unwrap()
    }

    fn node(labels: serde_json::Value, taints: serde_json::Value) -> Node {
        serde_json::from_value(
            json!({"metadata": {"name": "n1", "labels": labels}, "spec": {"taints": taints}}),
        )
        .unwrap()
    }

    #[test]
    fn eligibility_by_selector_affinity_and_taints() {
        let t = tpl(json!({"nodeSelector": {"disk": "ssd"}}));
        let tols = daemon_tolerations(&t);
        assert!(eligible(
            &t,
            &tols,
            &node(json!({"disk": "ssd"}), json!([]))
        ));
        assert!(!eligible(
            &t,
            &tols,
            &node(json!({"disk": "hdd"}), json!([]))
        ));
        // Daemon pods tolerate the node condition taints, not others.
        let unreachable = json!([{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"},
            {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]);
        assert!(eligible(
            &t,
            &tols,
            &node(json!({"disk": "ssd"}), unreachable)
        ));
        let dedicated = json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]);
        assert!(!eligible(
            &t,
            &tols,
            &node(json!({"disk": "ssd"}), dedicated.clone())
        ));
        let t2 =
            tpl(json!({"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db"}]}));
        assert!(eligible(
            &t2,
            &daemon_tolerations(&t2),
            &node(json!({}), dedicated)
        ));
        // PreferNoSchedule does not keep daemons away.
        let soft = json!([{"key": "x", "effect": "PreferNoSchedule"}]);
        assert!(eligible(
            &t2,
            &daemon_tolerations(&t2),
            &node(json!({}), soft)
        ));
        let aff = tpl(
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}}}),
        );
        assert!(eligible(&aff, &[], &node(json!({"zone": "a"}), json!([]))));
        assert!(!eligible(&aff, &[], &node(json!({"zone": "b"}), json!([]))));
    }

    #[test]
    fn daemon_pods_are_pinned_by_affinity() {
        let ds: DaemonSet = serde_json::from_value(
            json!({"metadata": {"name": "agent", "uid": "u", "generation": 3},
            "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "c"}]}}}}),
        )
        .unwrap();
        let t = ds.spec.as_ref().unwrap().template.clone();
        let p = daemon_pod(&ds, &t, &daemon_tolerations(&t), "h", "n7");
        assert_eq!(target_node(&p).as_deref(), Some("n7"));
        assert_eq!(p.labels().get(HASH_LABEL).map(String::as_str), Some("h"));
        assert_eq!(template_hash(&t), template_hash(&t.clone()));
    }

    #[test]
    fn max_unavailable_rounds_percentages_up() {
        let ds = |v: serde_json::Value| -> DaemonSet {
            serde_json::from_value(json!({"metadata": {"name": "a"}, "spec": {"selector": {},
                "template": {"spec": {"containers": []}},
                "updateStrategy": {"rollingUpdate": {"maxUnavailable": v}}}}))
            .unwrap()
        };
        assert_eq!(max_unavailable(&ds(json!("10%")), 15), 2);
        assert_eq!(max_unavailable(&ds(json!(3)), 15), 3);
        assert_eq!(max_unavailable(&ds(json!(0)), 15), 1);
    }
}
