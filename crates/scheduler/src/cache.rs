//! The scheduler's view of the cluster: per node, what its pods request and which host ports they
//! hold. Pods the scheduler has chosen a node for but whose binding is not yet seen in the watch
//! are "assumed": they count against their node at once, so the next decision sees them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, PodAffinityTerm};

use crate::labels::Labels;
use crate::resources::{self, Resources};

/// `namespace/name` of a pod.
pub fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

/// (protocol, host IP, host port) a container asks for.
pub type HostPort = (String, String, i32);

/// What the plugins need of one pod, computed once.
pub struct PodInfo {
    pub key: String,
    pub namespace: String,
    pub labels: Labels,
    pub requests: Resources,
    pub non_zero: Resources,
    pub host_ports: Vec<HostPort>,
    pub required_anti_affinity: Vec<PodAffinityTerm>,
    pub pod: Arc<Pod>,
}

impl PodInfo {
    pub fn new(pod: Arc<Pod>) -> PodInfo {
        let spec = pod.spec.as_ref();
        let mut host_ports = vec![];
        for c in spec.map(|s| s.containers.as_slice()).unwrap_or(&[]) {
            for p in c.ports.iter().flatten() {
                if let Some(hp) = p.host_port.filter(|p| *p > 0) {
                    let ip = match p.host_ip.as_deref() {
                        None | Some("") => "0.0.0.0".to_string(),
                        Some(ip) => ip.to_string(),
                    };
                    host_ports.push((p.protocol.clone().unwrap_or_else(|| "TCP".into()), ip, hp));
                }
            }
        }
        let required_anti_affinity = spec
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .clone()
            })
            .unwrap_or_default();
        PodInfo {
            key: pod_key(&pod),
            namespace: pod
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            requests: resources::pod_requests(&pod, false),
            non_zero: resources::pod_requests(&pod, true),
            host_ports,
            required_anti_affinity,
            pod,
        }
    }
}

/// One node and the pods on it.
pub struct NodeInfo {
    pub node: Arc<Node>,
    pub allocatable: Resources,
    pub requested: Resources,
    pub non_zero_requested: Resources,
    /// (protocol, port) -> host IP -> number of pods using it.
    pub ports: HashMap<(String, i32), HashMap<String, u32>>,
    pub pods: HashMap<String, Arc<PodInfo>>,
}

impl NodeInfo {
    fn new(node: Arc<Node>) -> NodeInfo {
        NodeInfo {
            allocatable: resources::node_allocatable(&node),
            node,
            requested: Resources::default(),
            non_zero_requested: Resources::default(),
            ports: HashMap::new(),
            pods: HashMap::new(),
        }
    }

    fn add_pod(&mut self, p: Arc<PodInfo>) {
        self.requested.add(&p.requests);
        self.non_zero_requested.add(&p.non_zero);
        for (proto, ip, port) in &p.host_ports {
            *self
                .ports
                .entry((proto.clone(), *port))
                .or_default()
                .entry(ip.clone())
                .or_default() += 1;
        }
        self.pods.insert(p.key.clone(), p);
    }

    fn remove_pod(&mut self, key: &str) {
        let Some(p) = self.pods.remove(key) else {
            return;
        };
        self.requested.sub(&p.requests);
        self.non_zero_requested.sub(&p.non_zero);
        for (proto, ip, port) in &p.host_ports {
            let k = (proto.clone(), *port);
            if let Some(ips) = self.ports.get_mut(&k) {
                if let Some(n) = ips.get_mut(ip) {
                    *n -= 1;
                    if *n == 0 {
                        ips.remove(ip);
                    }
                }
                if ips.is_empty() {
                    self.ports.remove(&k);
                }
            }
        }
    }

    pub fn name(&self) -> &str {
        self.node.metadata.name.as_deref().unwrap_or("")
    }
}

/// Nodes, the pods on them (bound or assumed), and the pods that carry required anti-affinity
/// (few in practice; every incoming pod must be checked against them).
#[derive(Default)]
pub struct Cache {
    pub nodes: HashMap<String, NodeInfo>,
    /// Node names in a stable order, for the round-robin start of each search.
    pub order: Vec<String>,
    /// pod key -> (node name, assumed and not yet seen bound).
    pub pod_nodes: HashMap<String, (String, bool)>,
    /// Pods placed on a node this cache does not know (yet).
    orphans: HashMap<String, Vec<Arc<PodInfo>>>,
    pub with_anti_affinity: HashSet<String>,
}

impl Cache {
    /// Adds or updates a node; returns true when something the filters look at changed (labels,
    /// taints, allocatable, unschedulable), so unschedulable pods are worth retrying.
    pub fn upsert_node(&mut self, node: Arc<Node>) -> bool {
        let name = node.metadata.name.clone().unwrap_or_default();
        match self.nodes.get_mut(&name) {
            Some(info) => {
                let changed = scheduling_view(&info.node) != scheduling_view(&node);
                info.allocatable = resources::node_allocatable(&node);
                info.node = node;
                changed
            }
            None => {
                let mut info = NodeInfo::new(node);
                for p in self.orphans.remove(&name).unwrap_or_default() {
                    info.add_pod(p);
                }
                self.nodes.insert(name.clone(), info);
                self.order.push(name);
                true
            }
        }
    }

    pub fn remove_node(&mut self, name: &str) {
        if let Some(info) = self.nodes.remove(name) {
            self.order.retain(|n| n != name);
            // Its pods stay known (they may yet be deleted, or the node come back).
            self.orphans
                .insert(name.to_string(), info.pods.into_values().collect());
        }
    }

    /// Records a pod on a node (bound, or `assumed` by this scheduler).
    pub fn add_pod(&mut self, p: Arc<PodInfo>, node: &str, assumed: bool) {
        self.remove_pod(&p.key);
        if !p.required_anti_affinity.is_empty() {
            self.with_anti_affinity.insert(p.key.clone());
        }
        self.pod_nodes
            .insert(p.key.clone(), (node.to_string(), assumed));
        match self.nodes.get_mut(node) {
            Some(info) => info.add_pod(p),
            None => self.orphans.entry(node.to_string()).or_default().push(p),
        }
    }

    pub fn remove_pod(&mut self, key: &str) {
        let Some((node, _)) = self.pod_nodes.remove(key) else {
            return;
        };
        self.with_anti_affinity.remove(key);
        if let Some(info) = self.nodes.get_mut(&node) {
            info.remove_pod(key);
        } else if let Some(list) = self.orphans.get_mut(&node) {
            list.retain(|p| p.key != key);
            if list.is_empty() {
                self.orphans.remove(&node);
            }
        }
    }

    pub fn is_assumed(&self, key: &str) -> bool {
        self.pod_nodes.get(key).is_some_and(|(_, a)| *a)
    }

    pub fn pod_info(&self, key: &str) -> Option<&Arc<PodInfo>> {
        let (node, _) = self.pod_nodes.get(key)?;
        match self.nodes.get(node) {
            Some(info) => info.pods.get(key),
            None => self.orphans.get(node)?.iter().find(|p| p.key == key),
        }
    }

    /// Every known pod with its node's labels (empty for a node not known).
    pub fn all_pods(&self) -> impl Iterator<Item = (&Arc<PodInfo>, Option<&NodeInfo>)> {
        self.nodes
            .values()
            .flat_map(|n| n.pods.values().map(move |p| (p, Some(n))))
    }
}

/// The parts of a node the filters read; a heartbeat changes none of them.
fn scheduling_view(n: &Node) -> (Option<&Labels>, String, String, bool) {
    let spec = n.spec.as_ref();
    (
        n.metadata.labels.as_ref(),
        serde_json::to_string(&spec.and_then(|s| s.taints.as_ref())).unwrap_or_default(),
        serde_json::to_string(&n.status.as_ref().and_then(|s| s.allocatable.as_ref()))
            .unwrap_or_default(),
        spec.and_then(|s| s.unschedulable).unwrap_or(false),
    )
}
