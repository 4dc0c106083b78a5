//! One scheduling cycle, as upstream's: take the next pod, filter a sample of the nodes (upstream's
//! percentageOfNodesToScore, from a round-robin start), score the feasible ones, pick the best
//! (ties at random), assume the pod on it and hand it to the binder. Decisions are sequential;
//! bindings run in parallel.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kube::runtime::reflector::ObjectRef;
use rand::Rng;

use crate::cache::{Cache, NodeInfo, PodInfo};
use crate::filter::{self, PodFilter};
use crate::informers::Stores;
use crate::labels::{self, Labels};
use crate::score::{self, SpreadConstraint};

/// Why a pod fits nowhere: nodes considered, and reason -> number of nodes.
pub struct FitError {
    pub total: usize,
    pub reasons: HashMap<String, usize>,
}

impl FitError {
    pub fn message(&self) -> String {
        filter::failure_message(self.total, &self.reasons)
    }
}

/// Upstream's numFeasibleNodesToFind: all nodes below 100; else `pct`% of them (adaptive
/// 50 - nodes/125, at least 5, when `pct` is 0), and never fewer than 100.
pub fn feasible_nodes_to_find(nodes: usize, pct: u32) -> usize {
    const MIN: usize = 100;
    if nodes < MIN || pct >= 100 {
        return nodes;
    }
    let pct = if pct == 0 {
        (50 - (nodes / 125) as i64).max(5) as usize
    } else {
        pct as usize
    };
    (nodes * pct / 100).max(MIN)
}

/// The default spreading selector (upstream's DefaultSelector): the selectors of the Services,
/// ReplicationControllers, ReplicaSets and StatefulSets in the pod's namespace that select it.
pub fn default_selector(pod: &PodInfo, stores: &Stores) -> Option<LabelSelector> {
    let mut match_labels: Labels = Labels::new();
    let mut exprs: Vec<LabelSelectorRequirement> = vec![];
    let mut any = false;
    let ns = pod.namespace.as_str();
    for s in stores.services.state() {
        if s.metadata.namespace.as_deref() != Some(ns) {
            continue;
        }
        if let Some(sel) = s.spec.as_ref().and_then(|s| s.selector.as_ref()) {
            if labels::map_matches(sel, &pod.labels) {
                match_labels.extend(sel.clone());
                any = true;
            }
        }
    }
    for rc in stores.controllers.state() {
        if rc.metadata.namespace.as_deref() != Some(ns) {
            continue;
        }
        if let Some(sel) = rc.spec.as_ref().and_then(|s| s.selector.as_ref()) {
            if labels::map_matches(sel, &pod.labels) {
                match_labels.extend(sel.clone());
                any = true;
            }
        }
    }
    let mut add = |sel: &LabelSelector| {
        let empty = sel.match_labels.as_ref().is_none_or(|m| m.is_empty())
            && sel.match_expressions.as_ref().is_none_or(|m| m.is_empty());
        if !empty && labels::selector_matches(Some(sel), &pod.labels) {
            match_labels.extend(sel.match_labels.clone().unwrap_or_default());
            exprs.extend(sel.match_expressions.clone().unwrap_or_default());
            any = true;
        }
    };
    for rs in stores.replica_sets.state() {
        if rs.metadata.namespace.as_deref() == Some(ns) {
            if let Some(spec) = rs.spec.as_ref() {
                add(&spec.selector);
            }
        }
    }
    for ss in stores.stateful_sets.state() {
        if ss.metadata.namespace.as_deref() == Some(ns) {
            if let Some(spec) = ss.spec.as_ref() {
                add(&spec.selector);
            }
        }
    }
    any.then(|| LabelSelector {
        match_labels: Some(match_labels),
        match_expressions: (!exprs.is_empty()).then_some(exprs),
    })
}

/// The soft spread constraints for scoring: the pod's ScheduleAnyway constraints, else (when it
/// has no constraints at all) the system defaults over its default selector.
pub fn spread_constraints(pod: &PodInfo, stores: &Stores) -> Vec<SpreadConstraint> {
    let own = pod
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_deref())
        .unwrap_or(&[]);
    if !own.is_empty() {
        return own
            .iter()
            .filter(|c| c.when_unsatisfiable == "ScheduleAnyway")
            .map(|c| SpreadConstraint {
                key: c.topology_key.clone(),
                max_skew: c.max_skew as i64,
                selector: c.label_selector.clone().unwrap_or_default(),
            })
            .collect();
    }
    match default_selector(pod, stores) {
        Some(sel) => score::default_constraints(sel),
        None => vec![],
    }
}

/// Round-robin position of the next search, as upstream's nextStartNodeIndex.
#[derive(Default)]
pub struct Cursor {
    next: usize,
}

/// Finds the node for `pod`, or why none fits.
pub fn schedule_one(
    cache: &Cache,
    cursor: &mut Cursor,
    info: &PodInfo,
    stores: &Stores,
    pct: u32,
) -> Result<String, FitError> {
    let ns_labels = |name: &str| -> Option<Labels> {
        stores
            .namespaces
            .get(&ObjectRef::new(name))
            .map(|n| n.metadata.labels.clone().unwrap_or_default())
    };
    let total = cache.order.len();
    let mut reasons: HashMap<String, usize> = HashMap::new();
    if total == 0 {
        return Err(FitError { total, reasons });
    }
    let pf = PodFilter::new(info, cache, &ns_labels);
    let want = feasible_nodes_to_find(total, pct);
    let start = cursor.next % total;
    let mut feasible: Vec<&NodeInfo> = Vec::with_capacity(want.min(total));
    let mut processed = 0;
    for i in 0..total {
        let name = &cache.order[(start + i) % total];
        processed += 1;
        let Some(n) = cache.nodes.get(name) else {
            continue;
        };
        match pf.filter(n) {
            Ok(()) => {
                feasible.push(n);
                if feasible.len() >= want {
                    break;
                }
            }
            Err(rs) => {
                for r in rs {
                    *reasons.entry(r).or_default() += 1;
                }
            }
        }
    }
    cursor.next = (start + processed) % total;
    if feasible.is_empty() {
        return Err(FitError { total, reasons });
    }
    if feasible.len() == 1 {
        return Ok(feasible[0].name().to_string());
    }
    let spread = spread_constraints(info, stores);
    let scores = score::score(info, &feasible, cache, &spread);
    // The best score; ties broken at random (reservoir sampling), as upstream's selectHost.
    let mut rng = rand::rng();
    let mut best = 0;
    let mut ties = 0u32;
    for (i, s) in scores.iter().enumerate() {
        if *s > scores[best] {
            best = i;
            ties = 1;
        } else if *s == scores[best] {
            ties += 1;
            if rng.random_range(0..ties) == 0 {
                best = i;
            }
        }
    }
    Ok(feasible[best].name().to_string())
}

/// A pod the loop popped, with what it needs to bind or report.
pub struct Decision {
    pub pod: Arc<Pod>,
    pub info: Arc<PodInfo>,
    pub result: Result<String, FitError>,
    pub started: Instant,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nodes_to_find_as_upstream() {
        assert_eq!(feasible_nodes_to_find(50, 0), 50);
        assert_eq!(feasible_nodes_to_find(1000, 0), 420);
        assert_eq!(feasible_nodes_to_find(5000, 0), 500);
        assert_eq!(feasible_nodes_to_find(100_000, 0), 5000);
        assert_eq!(feasible_nodes_to_find(200, 10), 100);
        assert_eq!(feasible_nodes_to_find(5000, 100), 5000);
    }

    fn cache_with(nodes: &[(&str, &str)]) -> Cache {
        let mut c = Cache::default();
        for (name, zone) in nodes {
            let n = serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "zone": zone}},
                "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "10"}}}))
            .unwrap();
            c.upsert_node(Arc::new(n));
        }
        c
    }

    fn pod(name: &str, labels: serde_json::Value, spec: serde_json::Value) -> Arc<PodInfo> {
        let mut spec = spec;
        spec["containers"] = json!([{"name": "c"}]);
        let p = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "labels": labels}, "spec": spec}))
        .unwrap();
        Arc::new(PodInfo::new(Arc::new(p)))
    }

    fn feasible(c: &Cache, p: &PodInfo) -> Vec<String> {
        let none = |_: &str| None;
        let f = PodFilter::new(p, c, &none);
        let mut v: Vec<String> = c
            .nodes
            .values()
            .filter(|n| f.filter(n).is_ok())
            .map(|n| n.name().to_string())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn required_pod_affinity_follows_the_zone_of_matching_pods() {
        let mut c = cache_with(&[("a", "z1"), ("b", "z1"), ("c", "z2")]);
        let web = pod(
            "web",
            json!({"app": "web"}),
            json!({
            "affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone"}]}}}),
        );
        // No db pod anywhere and web does not match its own term: nowhere.
        assert!(feasible(&c, &web).is_empty());
        c.add_pod(pod("db", json!({"app": "db"}), json!({})), "c", false);
        assert_eq!(feasible(&c, &web), vec!["c"]);
        // An existing pod's anti-affinity keeps matching pods out of its zone.
        let loner = pod(
            "loner",
            json!({}),
            json!({
            "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "zone"}]}}}),
        );
        c.add_pod(loner, "c", true);
        assert!(feasible(&c, &web).is_empty());
        c.remove_pod("ns/loner");
        assert_eq!(feasible(&c, &web), vec!["c"]);
    }

    #[test]
    fn resources_count_assumed_pods() {
        let mut c = cache_with(&[("a", "z1")]);
        let big = pod("big", json!({}), json!({}));
        let mut p: Pod = (*big.pod).clone();
        p.spec.as_mut().unwrap().containers[0].resources =
            Some(serde_json::from_value(json!({"requests": {"cpu": "3"}})).unwrap());
        let big = Arc::new(PodInfo::new(Arc::new(p)));
        assert_eq!(feasible(&c, &big), vec!["a"]);
        c.add_pod(big.clone(), "a", true);
        let mut p2: Pod = (*big.pod).clone();
        p2.metadata.name = Some("big2".into());
        let big2 = PodInfo::new(Arc::new(p2));
        let none = |_: &str| None;
        let f = PodFilter::new(&big2, &c, &none);
        assert_eq!(
            f.filter(&c.nodes["a"]),
            Err(vec!["Insufficient cpu".to_string()])
        );
    }
}
