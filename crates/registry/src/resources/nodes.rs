//! core/v1 Node (+status), cluster-scoped, stored under upstream's `minions` prefix.

use k8s_openapi::api::core::v1::Node;
use serde_json::{json, Value};

use super::or_none;
use crate::strategy::*;

pub struct Nodes;

static INFO: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    resource: "nodes",
    singular: "node",
    kind: "Node",
    namespaced: false,
    short_names: &["no"],
    categories: &[],
    subresources: &["status"],
    etcd_prefix: "minions",
};

fn address(obj: &Value, t: &str) -> String {
    obj["status"]["addresses"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["type"] == t))
        .and_then(|x| x["address"].as_str())
        .unwrap_or("<none>")
        .to_string()
}

impl Strategy for Nodes {
    fn info(&self) -> &'static ResourceInfo {
        &INFO
    }
    fn round_trip(&self, obj: &Value) -> Result<Vec<String>, String> {
        typed_round_trip::<Node>(obj)
    }
    fn field_names(&self) -> &'static [&'static str] {
        &["spec.unschedulable"]
    }
    fn fields(&self, obj: &Value) -> Vec<(&'static str, String)> {
        let u = at(obj, "spec.unschedulable") == Some(&json!(true));
        vec![("spec.unschedulable", u.to_string())]
    }
    fn columns(&self) -> Vec<Column> {
        vec![
            NAME_COLUMN,
            col("Status", "string", "The status of the node"),
            col("Roles", "string", "The roles of the node"),
            AGE_COLUMN,
            col("Version", "string", "Kubelet Version reported by the node."),
            wide("Internal-IP", "string", "List of addresses reachable to the node. Queried from cloud provider, if available."),
            wide("External-IP", "string", "List of addresses reachable to the node. Queried from cloud provider, if available."),
            wide("OS-Image", "string", "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy))."),
            wide("Kernel-Version", "string", "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64)."),
            wide("Container-Runtime", "string", "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2)."),
        ]
    }
    fn row(&self, obj: &Value) -> Vec<Value> {
        let ready = obj["status"]["conditions"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["type"] == "Ready"))
            // As upstream's printer: any Ready status but True (Unknown included) is NotReady;
            // only a node without the condition is Unknown.
            .map(|c| match c["status"].as_str() {
                Some("True") => "Ready",
                _ => "NotReady",
            })
            .unwrap_or("Unknown");
        let mut status = ready.to_string();
        if at(obj, "spec.unschedulable") == Some(&json!(true)) {
            status.push_str(",SchedulingDisabled");
        }
        let mut roles: Vec<String> = apimachinery::meta::labels(obj)
            .iter()
            .filter_map(|(k, v)| {
                if let Some(r) = k.strip_prefix("node-role.kubernetes.io/") {
                    Some(r.to_string())
                } else if *k == "kubernetes.io/role" {
                    Some(v.to_string())
                } else {
                    None
                }
            })
            .filter(|r| !r.is_empty())
            .collect();
        roles.sort();
        let info = &obj["status"]["nodeInfo"];
        vec![
            name_cell(obj),
            json!(status),
            json!(or_none(&roles.join(","))),
            age_cell(obj),
            json!(info["kubeletVersion"].as_str().unwrap_or("")),
            json!(address(obj, "InternalIP")),
            json!(address(obj, "ExternalIP")),
            json!(or_none(info["osImage"].as_str().unwrap_or(""))),
            json!(or_none(info["kernelVersion"].as_str().unwrap_or(""))),
            json!(or_none(
                info["containerRuntimeVersion"].as_str().unwrap_or("")
            )),
        ]
    }
}
