//! apps/v1 StatefulSet (+status, +scale).

use k8s_openapi::api::apps::v1::StatefulSet;
use serde_json::{json, Value};

use super::workload::{images_and_containers, selector_string, validate_template};
use crate::strategy::*;
use apimachinery::FieldError;

pub struct StatefulSets;

static INFO: ResourceInfo = ResourceInfo {
    group: "apps",
    version: "v1",
    resource: "statefulsets",
    singular: "statefulset",
    kind: "StatefulSet",
    namespaced: true,
    short_names: &["sts"],
    categories: &["all"],
    subresources: &["status", "scale"],
    etcd_prefix: "statefulsets",
};

impl Strategy for StatefulSets {
    fn info(&self) -> &'static ResourceInfo {
        &INFO
    }
    fn has_generation(&self) -> bool {
        true
    }
    fn default(&self, obj: &mut Value) {
        default_at(obj, "spec.replicas", json!(1));
        default_at(obj, "spec.podManagementPolicy", json!("OrderedReady"));
        if str_at(obj, "spec.updateStrategy.type").is_empty()
            || str_at(obj, "spec.updateStrategy.type") == "RollingUpdate"
        {
            default_at(obj, "spec.updateStrategy.type", json!("RollingUpdate"));
            default_at(obj, "spec.updateStrategy.rollingUpdate.partition", json!(0));
        }
        default_at(obj, "spec.revisionHistoryLimit", json!(10));
        default_at(
            obj,
            "spec.persistentVolumeClaimRetentionPolicy",
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
        );
        super::pods::default_pod_spec(&mut obj["spec"]["template"]["spec"]);
    }
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        validate_template(obj)
    }
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        super::workload::selector_immutable(new, old)
    }
    fn round_trip(&self, obj: &Value) -> Result<Vec<String>, String> {
        typed_round_trip::<StatefulSet>(obj)
    }
    fn scale_selector(&self, obj: &Value) -> String {
        selector_string(&obj["spec"]["selector"])
    }
    fn columns(&self) -> Vec<Column> {
        vec![
            NAME_COLUMN,
            col("Ready", "string", "Number of the pod with ready state"),
            AGE_COLUMN,
            wide(
                "Containers",
                "string",
                "Names of each container in the template.",
            ),
            wide(
                "Images",
                "string",
                "Images referenced by each container in the template.",
            ),
        ]
    }
    fn row(&self, obj: &Value) -> Vec<Value> {
        let (names, images) = images_and_containers(obj);
        vec![
            name_cell(obj),
            json!(format!(
                "{}/{}",
                int_at(obj, "status.readyReplicas"),
                int_at(obj, "spec.replicas")
            )),
            age_cell(obj),
            json!(names),
            json!(images),
        ]
    }
}
