//! Score plugins with upstream's default weights: NodeResourcesFit (LeastAllocated, 1),
//! NodeResourcesBalancedAllocation (1), TaintToleration (3, PreferNoSchedule taints),
//! NodeAffinity (2, preferred terms) and PodTopologySpread (2, the pod's ScheduleAnyway
//! constraints, or the system defaults over the pods of the same Service/ReplicaSet/...).
//! Each plugin scores 0..=100 after normalizing.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{PreferredSchedulingTerm, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::cache::{Cache, NodeInfo, PodInfo};
use crate::labels::{self, node_labels};

pub const MAX_NODE_SCORE: i64 = 100;
const W_FIT: i64 = 1;
const W_BALANCED: i64 = 1;
const W_TAINT: i64 = 3;
const W_NODE_AFFINITY: i64 = 2;
const W_SPREAD: i64 = 2;

pub const HOSTNAME: &str = "kubernetes.io/hostname";
pub const ZONE: &str = "topology.kubernetes.io/zone";

/// A soft spread constraint: topology key, max skew, selector.
pub struct SpreadConstraint {
    pub key: String,
    pub max_skew: i64,
    pub selector: LabelSelector,
}

/// The system default constraints (upstream's): skew 3 across hostnames, 5 across zones.
pub fn default_constraints(selector: LabelSelector) -> Vec<SpreadConstraint> {
    vec![
        SpreadConstraint {
            key: HOSTNAME.into(),
            max_skew: 3,
            selector: selector.clone(),
        },
        SpreadConstraint {
            key: ZONE.into(),
            max_skew: 5,
            selector,
        },
    ]
}

fn least_allocated(pod: &PodInfo, n: &NodeInfo) -> i64 {
    let one = |req: i64, alloc: i64| -> i64 {
        if alloc <= 0 || req > alloc {
            0
        } else {
            (alloc - req) * MAX_NODE_SCORE / alloc
        }
    };
    let cpu = one(
        n.non_zero_requested.milli_cpu + pod.non_zero.milli_cpu,
        n.allocatable.milli_cpu,
    );
    let mem = one(
        n.non_zero_requested.memory + pod.non_zero.memory,
        n.allocatable.memory,
    );
    (cpu + mem) / 2
}

fn balanced(pod: &PodInfo, n: &NodeInfo) -> i64 {
    let frac = |req: i64, alloc: i64| -> f64 {
        if alloc <= 0 {
            1.0
        } else {
            (req as f64 / alloc as f64).min(1.0)
        }
    };
    let c = frac(
        n.requested.milli_cpu + pod.requests.milli_cpu,
        n.allocatable.milli_cpu,
    );
    let m = frac(
        n.requested.memory + pod.requests.memory,
        n.allocatable.memory,
    );
    let std = (c - m).abs() / 2.0;
    ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
}

/// Scores the feasible nodes; returns the total weighted score of each, in the same order.
pub fn score(
    pod: &PodInfo,
    nodes: &[&NodeInfo],
    cache: &Cache,
    spread: &[SpreadConstraint],
) -> Vec<i64> {
    let spec = pod.pod.spec.as_ref();
    let tolerations: Vec<&Toleration> = spec
        .and_then(|s| s.tolerations.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| {
            t.effect
                .as_deref()
                .is_none_or(|e| e.is_empty() || e == "PreferNoSchedule")
        })
        .collect();
    let preferred: &[PreferredSchedulingTerm] = spec
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_deref()
        })
        .unwrap_or(&[]);
    let mut totals = vec![0i64; nodes.len()];
    let mut taint_counts = Vec::with_capacity(nodes.len());
    let mut affinity_sums = Vec::with_capacity(nodes.len());
    for (i, n) in nodes.iter().enumerate() {
        totals[i] += W_FIT * least_allocated(pod, n) + W_BALANCED * balanced(pod, n);
        let taints = n
            .node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_deref())
            .unwrap_or(&[]);
        taint_counts.push(
            taints
                .iter()
                .filter(|t| t.effect == "PreferNoSchedule")
                .filter(|t| !tolerations.iter().any(|tol| labels::tolerates(tol, t)))
                .count() as i64,
        );
        affinity_sums.push(
            preferred
                .iter()
                .filter(|p| labels::term_matches(&p.preference, &n.node))
                .map(|p| p.weight as i64)
                .sum::<i64>(),
        );
    }
    // TaintToleration: fewer intolerable taints is better (reverse normalize).
    let max_taints = taint_counts.iter().copied().max().unwrap_or(0);
    for (i, c) in taint_counts.iter().enumerate() {
        totals[i] += W_TAINT
            * if max_taints == 0 {
                MAX_NODE_SCORE
            } else {
                (max_taints - c) * MAX_NODE_SCORE / max_taints
            };
    }
    // NodeAffinity: the matched weights, scaled to the best node.
    let max_aff = affinity_sums.iter().copied().max().unwrap_or(0);
    if max_aff > 0 {
        for (i, s) in affinity_sums.iter().enumerate() {
            totals[i] += W_NODE_AFFINITY * s * MAX_NODE_SCORE / max_aff;
        }
    }
    if !spread.is_empty() {
        for (i, s) in spread_scores(pod, nodes, cache, spread).iter().enumerate() {
            totals[i] += W_SPREAD * s;
        }
    }
    totals
}

/// PodTopologySpread scoring: fewer matching pods in a node's domains is better, each constraint
/// weighted by log(number of domains + 2) as upstream; nodes without the keys score 0.
fn spread_scores(
    pod: &PodInfo,
    nodes: &[&NodeInfo],
    cache: &Cache,
    constraints: &[SpreadConstraint],
) -> Vec<i64> {
    let matches = |n: &NodeInfo, sel: &LabelSelector| -> usize {
        n.pods
            .values()
            .filter(|p| {
                p.namespace == pod.namespace
                    && p.pod.metadata.deletion_timestamp.is_none()
                    && labels::selector_matches(Some(sel), &p.labels)
            })
            .count()
    };
    // Constraints the candidate nodes carry the key of (upstream ignores a default constraint no
    // node has the label of, e.g. zones in a zoneless cluster).
    let active: Vec<&SpreadConstraint> = constraints
        .iter()
        .filter(|c| {
            nodes
                .iter()
                .any(|n| node_labels(&n.node).contains_key(&c.key))
        })
        .collect();
    let mut per_constraint: Vec<(HashMap<String, usize>, f64)> = vec![];
    for c in &active {
        let mut counts: HashMap<String, usize> = HashMap::new();
        if c.key == HOSTNAME {
            for n in nodes {
                if let Some(v) = node_labels(&n.node).get(&c.key) {
                    counts.insert(v.clone(), matches(n, &c.selector));
                }
            }
        } else {
            for n in nodes {
                if let Some(v) = node_labels(&n.node).get(&c.key) {
                    counts.entry(v.clone()).or_insert(0);
                }
            }
            for n in cache.nodes.values() {
                if let Some(v) = node_labels(&n.node).get(&c.key) {
                    if let Some(e) = counts.get_mut(v) {
                        *e += matches(n, &c.selector);
                    }
                }
            }
        }
        let weight = ((counts.len() + 2) as f64).ln();
        per_constraint.push((counts, weight));
    }
    let mut raw: Vec<Option<f64>> = Vec::with_capacity(nodes.len());
    for n in nodes {
        let nl = node_labels(&n.node);
        let mut s = 0.0;
        let mut ok = true;
        for (c, (counts, w)) in active.iter().zip(&per_constraint) {
            match nl.get(&c.key) {
                Some(v) => {
                    let cnt = counts.get(v).copied().unwrap_or(0) as f64;
                    s += cnt * w + (c.max_skew - 1) as f64;
                }
                None => ok = false,
            }
        }
        raw.push(ok.then_some(s));
    }
    let vals: Vec<f64> = raw.iter().flatten().copied().collect();
    let (min, max) = vals
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    raw.iter()
        .map(|r| match r {
            None => 0,
            Some(_) if max <= 0.0 => MAX_NODE_SCORE,
            Some(s) => (MAX_NODE_SCORE as f64 * (max + min - s) / max) as i64,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn node(name: &str, cpu: &str, mem: &str) -> NodeInfo {
        let n: k8s_openapi::api::core::v1::Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {HOSTNAME: name}},
            "status": {"allocatable": {"cpu": cpu, "memory": mem, "pods": "110"}}}))
        .unwrap();
        let mut c = Cache::default();
        c.upsert_node(Arc::new(n));
        c.nodes.remove(name).unwrap()
    }

    #[test]
    fn emptier_node_scores_higher() {
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "d"},
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]}}))
        .unwrap();
        let p = PodInfo::new(Arc::new(pod));
        let small = node("a", "2", "4Gi");
        let big = node("b", "8", "16Gi");
        let s = score(&p, &[&small, &big], &Cache::default(), &[]);
        assert!(s[1] > s[0], "{s:?}");
    }
}
