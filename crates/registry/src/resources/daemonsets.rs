//! apps/v1 DaemonSet (+status).

use k8s_openapi::api::apps::v1::DaemonSet;
use serde_json::{json, Value};

use super::or_none;
use super::workload::{images_and_containers, selector_string, validate_template};
use crate::strategy::*;
use apimachinery::FieldError;

pub struct DaemonSets;

static INFO: ResourceInfo = ResourceInfo {
    group: "apps",
    version: "v1",
    resource: "daemonsets",
    singular: "daemonset",
    kind: "DaemonSet",
    namespaced: true,
    short_names: &["ds"],
    categories: &["all"],
    subresources: &["status"],
    etcd_prefix: "daemonsets",
};

impl Strategy for DaemonSets {
    fn info(&self) -> &'static ResourceInfo {
        &INFO
    }
    fn has_generation(&self) -> bool {
        true
    }
    fn default(&self, obj: &mut Value) {
        if str_at(obj, "spec.updateStrategy.type").is_empty()
            || str_at(obj, "spec.updateStrategy.type") == "RollingUpdate"
        {
            default_at(obj, "spec.updateStrategy.type", json!("RollingUpdate"));
            default_at(
                obj,
                "spec.updateStrategy.rollingUpdate.maxUnavailable",
                json!(1),
            );
            default_at(obj, "spec.updateStrategy.rollingUpdate.maxSurge", json!(0));
        }
        default_at(obj, "spec.revisionHistoryLimit", json!(10));
        super::pods::default_pod_spec(&mut obj["spec"]["template"]["spec"]);
    }
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        validate_template(obj)
    }
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        super::workload::selector_immutable(new, old)
    }
    fn round_trip(&self, obj: &Value) -> Result<Vec<String>, String> {
        typed_round_trip::<DaemonSet>(obj)
    }
    fn columns(&self) -> Vec<Column> {
        vec![
            NAME_COLUMN,
            col("Desired", "integer", "The total number of nodes that should be running the daemon pod (including nodes correctly running the daemon pod)."),
            col("Current", "integer", "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod."),
            col("Ready", "integer", "numberReady is the number of nodes that should be running the daemon pod and have one or more of the daemon pod running with a Ready Condition."),
            col("Up-to-date", "integer", "The total number of nodes that are running updated daemon pod"),
            col("Available", "integer", "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)"),
            col("Node Selector", "string", "NodeSelector is a selector which must be true for the pod to fit on a node. Selector which must match a node's labels for the pod to be scheduled on that node."),
            AGE_COLUMN,
            wide("Containers", "string", "Names of each container in the template."),
            wide("Images", "string", "Images referenced by each container in the template."),
            wide("Selector", "string", "A label query over pods that are managed by the daemon set."),
        ]
    }
    fn row(&self, obj: &Value) -> Vec<Value> {
        let (names, images) = images_and_containers(obj);
        let ns: Vec<String> =
            apimachinery::meta::string_map(obj["spec"]["template"]["spec"].get("nodeSelector"))
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
        vec![
            name_cell(obj),
            json!(int_at(obj, "status.desiredNumberScheduled")),
            json!(int_at(obj, "status.currentNumberScheduled")),
            json!(int_at(obj, "status.numberReady")),
            json!(int_at(obj, "status.updatedNumberScheduled")),
            json!(int_at(obj, "status.numberAvailable")),
            json!(or_none(&ns.join(","))),
            age_cell(obj),
            json!(names),
            json!(images),
            json!(selector_string(&obj["spec"]["selector"])),
        ]
    }
}
