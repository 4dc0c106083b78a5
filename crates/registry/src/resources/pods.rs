//! core/v1 Pod (+status): pod spec defaulting and validation shared with the workload resources,
//! upstream's READY / STATUS / RESTARTS columns, graceful deletion of pods bound to a node.

use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};

use super::or_none;
use crate::strategy::*;
use apimachinery::{meta, FieldError};

pub struct Pods;

static INFO: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    resource: "pods",
    singular: "pod",
    kind: "Pod",
    namespaced: true,
    short_names: &["po"],
    categories: &["all"],
    subresources: &["status", "binding", "eviction"],
    etcd_prefix: "pods",
};

fn default_container(c: &mut Value) {
    default_at(c, "terminationMessagePath", json!("/dev/termination-log"));
    default_at(c, "terminationMessagePolicy", json!("File"));
    default_at(c, "resources", json!({}));
    let image = c["image"].as_str().unwrap_or_default();
    let tag = image.rsplit('/').next().unwrap_or("");
    let policy = if image.contains('@') || (tag.contains(':') && !tag.ends_with(":latest")) {
        "IfNotPresent"
    } else {
        "Always"
    };
    default_at(c, "imagePullPolicy", json!(policy));
    if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports {
            default_at(p, "protocol", json!("TCP"));
        }
    }
}

/// Upstream's defaults for a PodSpec (pods and pod templates).
pub fn default_pod_spec(spec: &mut Value) {
    default_at(spec, "restartPolicy", json!("Always"));
    default_at(spec, "terminationGracePeriodSeconds", json!(30));
    default_at(spec, "dnsPolicy", json!("ClusterFirst"));
    default_at(spec, "securityContext", json!({}));
    default_at(spec, "schedulerName", json!("default-scheduler"));
    for list in ["containers", "initContainers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs {
                default_container(c);
            }
        }
    }
}

/// The checks of a PodSpec at `path` (`spec` or `spec.template.spec`).
pub fn validate_pod_spec(spec: &Value, path: &str) -> Vec<FieldError> {
    let mut errs = vec![];
    let cs = spec.get("containers").and_then(Value::as_array);
    if cs.is_none_or(|c| c.is_empty()) {
        errs.push(FieldError::required(format!("{path}.containers"), ""));
    }
    let mut names = std::collections::BTreeSet::new();
    for list in ["initContainers", "containers"] {
        let Some(cs) = spec.get(list).and_then(Value::as_array) else {
            continue;
        };
        for (i, c) in cs.iter().enumerate() {
            let p = format!("{path}.{list}[{i}]");
            let name = c.get("name").and_then(Value::as_str).unwrap_or("");
            if name.is_empty() {
                errs.push(FieldError::required(format!("{p}.name"), ""));
            } else {
                errs.extend(meta::validate_dns_label(&format!("{p}.name"), name));
                if !names.insert(name.to_string()) {
                    errs.push(FieldError::duplicate(format!("{p}.name"), &json!(name)));
                }
            }
            if c.get("image")
                .and_then(Value::as_str)
                .unwrap_or("")
                .trim()
                .is_empty()
            {
                errs.push(FieldError::required(format!("{p}.image"), ""));
            }
        }
    }
    if let Some(rp) = spec.get("restartPolicy").and_then(Value::as_str) {
        if !["Always", "OnFailure", "Never"].contains(&rp) {
            errs.push(FieldError::unsupported(
                format!("{path}.restartPolicy"),
                &json!(rp),
                &["Always", "OnFailure", "Never"],
            ));
        }
    }
    errs
}

/// Upstream's printed pod STATUS: the phase, a container's waiting/terminated reason, or
/// Terminating.
fn pod_status(obj: &Value) -> String {
    let mut reason = str_at(obj, "status.reason").to_string();
    if reason.is_empty() {
        reason = str_at(obj, "status.phase").to_string();
    }
    if let Some(cs) = obj["status"]["containerStatuses"].as_array() {
        for c in cs.iter().rev() {
            if let Some(r) = c["state"]["waiting"]["reason"].as_str() {
                reason = r.to_string();
            } else if let Some(r) = c["state"]["terminated"]["reason"].as_str() {
                reason = r.to_string();
            }
        }
    }
    if meta::deletion_timestamp(obj).is_some() {
        return if str_at(obj, "status.reason") == "NodeLost" {
            "Unknown".into()
        } else {
            "Terminating".into()
        };
    }
    reason
}

impl Strategy for Pods {
    fn info(&self) -> &'static ResourceInfo {
        &INFO
    }
    fn default(&self, obj: &mut Value) {
        default_pod_spec(&mut obj["spec"]);
        default_at(obj, "spec.enableServiceLinks", json!(true));
        default_at(obj, "spec.preemptionPolicy", json!("PreemptLowerPriority"));
        default_at(obj, "spec.priority", json!(0));
        default_at(obj, "spec.serviceAccountName", json!("default"));
        default_at(obj, "spec.serviceAccount", json!("default"));
        default_at(
            obj,
            "spec.tolerations",
            json!([
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
            ]),
        );
    }
    fn initial_status(&self, obj: &mut Value) {
        obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
    }
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        validate_pod_spec(&obj["spec"], "spec")
    }
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        // Only images (and a few scheduling fields) of a pod may change.
        let strip = |v: &Value| {
            let mut s = v["spec"].clone();
            for list in ["containers", "initContainers"] {
                if let Some(cs) = s.get_mut(list).and_then(Value::as_array_mut) {
                    for c in cs {
                        c.as_object_mut().map(|m| m.remove("image"));
                    }
                }
            }
            for f in [
                "activeDeadlineSeconds",
                "tolerations",
                "terminationGracePeriodSeconds",
            ] {
                s.as_object_mut().map(|m| m.remove(f));
            }
            s
        };
        if strip(new) != strip(old) {
            return vec![FieldError::forbidden("spec", "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)")];
        }
        vec![]
    }
    fn round_trip(&self, obj: &Value) -> Result<Vec<String>, String> {
        typed_round_trip::<Pod>(obj)
    }
    fn field_names(&self) -> &'static [&'static str] {
        &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ]
    }
    fn fields(&self, obj: &Value) -> Vec<(&'static str, String)> {
        vec![
            ("spec.nodeName", str_at(obj, "spec.nodeName").into()),
            (
                "spec.restartPolicy",
                str_at(obj, "spec.restartPolicy").into(),
            ),
            (
                "spec.schedulerName",
                str_at(obj, "spec.schedulerName").into(),
            ),
            (
                "spec.serviceAccountName",
                str_at(obj, "spec.serviceAccountName").into(),
            ),
            (
                "spec.hostNetwork",
                (at(obj, "spec.hostNetwork") == Some(&json!(true))).to_string(),
            ),
            ("status.phase", str_at(obj, "status.phase").into()),
            ("status.podIP", str_at(obj, "status.podIP").into()),
            (
                "status.nominatedNodeName",
                str_at(obj, "status.nominatedNodeName").into(),
            ),
        ]
    }
    fn columns(&self) -> Vec<Column> {
        vec![
            NAME_COLUMN,
            col("Ready", "string", "The aggregate readiness state of this pod for accepting traffic."),
            col("Status", "string", "The aggregate status of the containers in this pod."),
            col("Restarts", "string", "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
            AGE_COLUMN,
            wide("IP", "string", "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated."),
            wide("Node", "string", "NodeName is a request to schedule this pod onto a specific node."),
            wide("Nominated Node", "string", "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods."),
            wide("Readiness Gates", "string", "If specified, all readiness gates will be evaluated for pod readiness."),
        ]
    }
    fn row(&self, obj: &Value) -> Vec<Value> {
        let total = obj["spec"]["containers"].as_array().map_or(0, Vec::len);
        let statuses = obj["status"]["containerStatuses"].as_array();
        let ready = statuses.map_or(0, |s| {
            s.iter().filter(|c| c["ready"] == json!(true)).count()
        });
        let restarts: i64 = statuses.map_or(0, |s| {
            s.iter()
                .map(|c| c["restartCount"].as_i64().unwrap_or(0))
                .sum()
        });
        let gates = match obj["spec"]["readinessGates"].as_array() {
            Some(g) if !g.is_empty() => format!("0/{}", g.len()),
            _ => "<none>".into(),
        };
        vec![
            name_cell(obj),
            json!(format!("{ready}/{total}")),
            json!(pod_status(obj)),
            json!(restarts.to_string()),
            age_cell(obj),
            json!(or_none(str_at(obj, "status.podIP"))),
            json!(or_none(str_at(obj, "spec.nodeName"))),
            json!(or_none(str_at(obj, "status.nominatedNodeName"))),
            json!(gates),
        ]
    }
    fn delete_mode(&self, obj: &Value, grace: Option<i64>) -> DeleteMode {
        // A pod no kubelet runs (unscheduled, or already finished) goes at once.
        let phase = str_at(obj, "status.phase");
        if str_at(obj, "spec.nodeName").is_empty() || phase == "Succeeded" || phase == "Failed" {
            return DeleteMode::Now;
        }
        let g = grace.unwrap_or_else(|| {
            at(obj, "spec.terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(30)
        });
        if g <= 0 {
            DeleteMode::Now
        } else {
            DeleteMode::Graceful(g)
        }
    }
}
