//! Filter plugins, in upstream's order: NodeUnschedulable, NodeName, TaintToleration,
//! NodeAffinity (with the node selector), NodePorts, NodeResourcesFit, PodTopologySpread (hard
//! constraints) and InterPodAffinity. A node that fails gives upstream's reason strings, which
//! the failure message counts ("2 Insufficient cpu").

use std::collections::{HashMap, HashSet};

use k8s_openapi::api::core::v1::{
    NodeSelectorTerm, Pod, PodAffinityTerm, Taint, Toleration, TopologySpreadConstraint,
};

use crate::cache::{Cache, NodeInfo, PodInfo};
use crate::labels::{self, node_labels, Labels};

pub const ERR_UNSCHEDULABLE: &str = "node(s) were unschedulable";
pub const ERR_NODE_NAME: &str = "node(s) didn't match the requested node name";
pub const ERR_NODE_AFFINITY: &str = "node(s) didn't match Pod's node affinity/selector";
pub const ERR_NODE_PORTS: &str = "node(s) didn't have free ports for the requested pod ports";
pub const ERR_AFFINITY: &str = "node(s) didn't match pod affinity rules";
pub const ERR_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
pub const ERR_EXISTING_ANTI_AFFINITY: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";
pub const ERR_SPREAD: &str = "node(s) didn't match pod topology spread constraints";
pub const ERR_SPREAD_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";

/// Namespace name -> labels, for affinity terms with a namespaceSelector.
pub type NamespaceLabels<'a> = &'a dyn Fn(&str) -> Option<Labels>;

/// Whether an existing pod is selected by an affinity term of a pod in `owner_ns`.
pub fn term_selects(
    term: &PodAffinityTerm,
    owner_ns: &str,
    other: &PodInfo,
    ns_labels: NamespaceLabels,
) -> bool {
    let names = term.namespaces.as_deref().unwrap_or(&[]);
    let ns_ok = match &term.namespace_selector {
        None if names.is_empty() => other.namespace == owner_ns,
        sel => {
            names.contains(&other.namespace)
                || sel.as_ref().is_some_and(|s| {
                    let empty = s.match_labels.as_ref().is_none_or(|m| m.is_empty())
                        && s.match_expressions.as_ref().is_none_or(|m| m.is_empty());
                    empty
                        || ns_labels(&other.namespace)
                            .is_some_and(|l| labels::selector_matches(Some(s), &l))
                })
        }
    };
    ns_ok && labels::selector_matches(term.label_selector.as_ref(), &other.labels)
}

/// What the filters precompute once per pod (upstream's PreFilter).
pub struct PodFilter<'a> {
    pub info: &'a PodInfo,
    tolerations: &'a [Toleration],
    node_selector: Option<&'a Labels>,
    required_terms: Option<&'a [NodeSelectorTerm]>,
    /// (topology key, value) pairs that existing pods' anti-affinity forbids for this pod.
    existing_anti: HashSet<(String, String)>,
    /// Per required affinity term: topology value -> matching pods.
    affinity: Vec<(&'a PodAffinityTerm, HashMap<String, usize>)>,
    /// No pod matches any affinity term, but the pod matches its own terms: it may go anywhere.
    affinity_self_ok: bool,
    anti: Vec<(&'a PodAffinityTerm, HashMap<String, usize>)>,
    /// Hard spread constraints: (constraint, domain value -> matching pods, min over domains).
    spread: Vec<(
        &'a TopologySpreadConstraint,
        HashMap<String, usize>,
        usize,
        bool,
    )>,
}

fn spec(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::PodSpec> {
    pod.spec.as_ref()
}

impl<'a> PodFilter<'a> {
    pub fn new(info: &'a PodInfo, cache: &Cache, ns_labels: NamespaceLabels) -> PodFilter<'a> {
        let s = spec(&info.pod);
        let affinity = s.and_then(|s| s.affinity.as_ref());
        let required_terms = affinity
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| {
                n.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(|r| r.node_selector_terms.as_slice());
        let mut f = PodFilter {
            info,
            tolerations: s.and_then(|s| s.tolerations.as_deref()).unwrap_or(&[]),
            node_selector: s.and_then(|s| s.node_selector.as_ref()),
            required_terms,
            existing_anti: HashSet::new(),
            affinity: vec![],
            affinity_self_ok: false,
            anti: vec![],
            spread: vec![],
        };
        // Existing pods whose required anti-affinity selects this pod.
        for key in &cache.with_anti_affinity {
            let (Some(other), Some((node, _))) = (cache.pod_info(key), cache.pod_nodes.get(key))
            else {
                continue;
            };
            let Some(node) = cache.nodes.get(node) else {
                continue;
            };
            for t in &other.required_anti_affinity {
                if term_selects(t, &other.namespace, info, ns_labels) {
                    if let Some(v) = node_labels(&node.node).get(&t.topology_key) {
                        f.existing_anti.insert((t.topology_key.clone(), v.clone()));
                    }
                }
            }
        }
        let pod_aff = affinity.and_then(|a| a.pod_affinity.as_ref());
        let aff_terms = pod_aff
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_deref()
            })
            .unwrap_or(&[]);
        let anti_terms = info.required_anti_affinity.as_slice();
        for t in aff_terms {
            f.affinity.push((t, HashMap::new()));
        }
        for t in anti_terms {
            f.anti.push((t, HashMap::new()));
        }
        if !f.affinity.is_empty() || !f.anti.is_empty() {
            for (other, node) in cache.all_pods() {
                let Some(node) = node else { continue };
                let nl = node_labels(&node.node);
                for (t, counts) in f.affinity.iter_mut().chain(f.anti.iter_mut()) {
                    if term_selects(t, &info.namespace, other, ns_labels) {
                        if let Some(v) = nl.get(&t.topology_key) {
                            *counts.entry(v.clone()).or_default() += 1;
                        }
                    }
                }
            }
            f.affinity_self_ok = f.affinity.iter().all(|(_, c)| c.is_empty())
                && aff_terms
                    .iter()
                    .all(|t| term_selects(t, &info.namespace, info, ns_labels));
        }
        let hard: Vec<&TopologySpreadConstraint> = s
            .and_then(|s| s.topology_spread_constraints.as_deref())
            .unwrap_or(&[])
            .iter()
            .filter(|c| c.when_unsatisfiable == "DoNotSchedule")
            .collect();
        for c in hard {
            let mut counts: HashMap<String, usize> = HashMap::new();
            for n in cache.nodes.values() {
                // Only nodes the pod's node affinity/selector admits (nodeAffinityPolicy Honor).
                if !f.node_affinity_ok(n) {
                    continue;
                }
                let Some(v) = node_labels(&n.node).get(&c.topology_key) else {
                    continue;
                };
                let matching = n
                    .pods
                    .values()
                    .filter(|p| {
                        p.namespace == info.namespace
                            && p.pod.metadata.deletion_timestamp.is_none()
                            && labels::selector_matches(c.label_selector.as_ref(), &p.labels)
                    })
                    .count();
                *counts.entry(v.clone()).or_default() += matching;
            }
            let min = counts.values().copied().min().unwrap_or(0);
            let self_match = labels::selector_matches(c.label_selector.as_ref(), &info.labels);
            f.spread.push((c, counts, min, self_match));
        }
        f
    }

    fn node_affinity_ok(&self, n: &NodeInfo) -> bool {
        let nl = node_labels(&n.node);
        if let Some(sel) = self.node_selector {
            if !sel.iter().all(|(k, v)| nl.get(k) == Some(v)) {
                return false;
            }
        }
        if let Some(terms) = self.required_terms {
            if !terms.iter().any(|t| labels::term_matches(t, &n.node)) {
                return false;
            }
        }
        true
    }

    /// Runs the filters on one node: Ok, or the failing plugin's reasons.
    pub fn filter(&self, n: &NodeInfo) -> Result<(), Vec<String>> {
        let node_spec = n.node.spec.as_ref();
        let taints: &[Taint] = node_spec.and_then(|s| s.taints.as_deref()).unwrap_or(&[]);
        // NodeUnschedulable.
        if node_spec.and_then(|s| s.unschedulable).unwrap_or(false) {
            let t = Taint {
                key: "node.kubernetes.io/unschedulable".into(),
                effect: "NoSchedule".into(),
                ..Default::default()
            };
            if !self
                .tolerations
                .iter()
                .any(|tol| labels::tolerates(tol, &t))
            {
                return Err(vec![ERR_UNSCHEDULABLE.into()]);
            }
        }
        // NodeName.
        if let Some(want) = spec(&self.info.pod).and_then(|s| s.node_name.as_deref()) {
            if !want.is_empty() && want != n.name() {
                return Err(vec![ERR_NODE_NAME.into()]);
            }
        }
        // TaintToleration.
        if let Some(t) = labels::untolerated(taints, self.tolerations, &["NoSchedule", "NoExecute"])
        {
            return Err(vec![format!(
                "node(s) had untolerated taint {{{}: {}}}",
                t.key,
                t.value.as_deref().unwrap_or("")
            )]);
        }
        // NodeAffinity.
        if !self.node_affinity_ok(n) {
            return Err(vec![ERR_NODE_AFFINITY.into()]);
        }
        // NodePorts.
        for (proto, ip, port) in &self.info.host_ports {
            if let Some(used) = n.ports.get(&(proto.clone(), *port)) {
                let conflict = ip == "0.0.0.0"
                    || used.contains_key("0.0.0.0")
                    || used.contains_key(ip.as_str());
                if conflict && !used.is_empty() {
                    return Err(vec![ERR_NODE_PORTS.into()]);
                }
            }
        }
        // NodeResourcesFit.
        let mut insufficient = vec![];
        let (req, alloc, used) = (&self.info.requests, &n.allocatable, &n.requested);
        if used.pods + 1 > alloc.pods {
            insufficient.push("Too many pods".to_string());
        }
        if req.milli_cpu > 0 && req.milli_cpu > alloc.milli_cpu - used.milli_cpu {
            insufficient.push("Insufficient cpu".to_string());
        }
        if req.memory > 0 && req.memory > alloc.memory - used.memory {
            insufficient.push("Insufficient memory".to_string());
        }
        if !insufficient.is_empty() {
            return Err(insufficient);
        }
        // PodTopologySpread (DoNotSchedule constraints).
        let nl = node_labels(&n.node);
        for (c, counts, min, self_match) in &self.spread {
            let Some(v) = nl.get(&c.topology_key) else {
                return Err(vec![ERR_SPREAD_LABEL.into()]);
            };
            let here = counts.get(v).copied().unwrap_or(0) + usize::from(*self_match);
            let min_domains = c.min_domains.unwrap_or(1).max(1) as usize;
            let global_min = if counts.len() < min_domains { 0 } else { *min };
            if here as i64 - global_min as i64 > c.max_skew as i64 {
                return Err(vec![ERR_SPREAD.into()]);
            }
        }
        // InterPodAffinity.
        if self.existing_anti.iter().any(|(k, v)| nl.get(k) == Some(v)) {
            return Err(vec![ERR_EXISTING_ANTI_AFFINITY.into()]);
        }
        if !self.affinity_self_ok {
            for (t, counts) in &self.affinity {
                let ok = nl
                    .get(&t.topology_key)
                    .is_some_and(|v| counts.get(v).copied().unwrap_or(0) > 0);
                if !ok {
                    return Err(vec![ERR_AFFINITY.into()]);
                }
            }
        } else if self
            .affinity
            .iter()
            .any(|(t, _)| !nl.contains_key(&t.topology_key))
        {
            return Err(vec![ERR_AFFINITY.into()]);
        }
        for (t, counts) in &self.anti {
            if nl
                .get(&t.topology_key)
                .is_some_and(|v| counts.get(v).copied().unwrap_or(0) > 0)
            {
                return Err(vec![ERR_ANTI_AFFINITY.into()]);
            }
        }
        Ok(())
    }
}

/// Upstream's failure message: "0/3 nodes are available: 1 node(s) had untolerated taint {a: b},
/// 2 Insufficient cpu." (reasons sorted, each with the number of nodes that gave it).
pub fn failure_message(total: usize, reasons: &HashMap<String, usize>) -> String {
    let mut parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    if parts.is_empty() {
        if total == 0 {
            return "0/0 nodes are available: no nodes available to schedule pods.".into();
        }
        return format!("0/{total} nodes are available.");
    }
    format!("0/{total} nodes are available: {}.", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_as_upstream() {
        let mut r = HashMap::new();
        r.insert("Insufficient cpu".to_string(), 2);
        r.insert("node(s) had untolerated taint {a: b}".to_string(), 1);
        assert_eq!(
            failure_message(3, &r),
            "0/3 nodes are available: 1 node(s) had untolerated taint {a: b}, 2 Insufficient cpu."
        );
    }
}
