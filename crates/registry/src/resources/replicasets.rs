//! apps/v1 ReplicaSet (+status, +scale).

use k8s_openapi::api::apps::v1::ReplicaSet;
use serde_json::{json, Value};

use super::workload::{images_and_containers, selector_string, validate_template};
use crate::strategy::*;
use apimachinery::FieldError;

pub struct ReplicaSets;

static INFO: ResourceInfo = ResourceInfo {
    group: "apps",
    version: "v1",
    resource: "replicasets",
    singular: "replicaset",
    kind: "ReplicaSet",
    namespaced: true,
    short_names: &["rs"],
    categories: &["all"],
    subresources: &["status", "scale"],
    etcd_prefix: "replicasets",
};

impl Strategy for ReplicaSets {
    fn info(&self) -> &'static ResourceInfo {
        &INFO
    }
    fn has_generation(&self) -> bool {
        true
    }
    fn default(&self, obj: &mut Value) {
        default_at(obj, "spec.replicas", json!(1));
        super::pods::default_pod_spec(&mut obj["spec"]["template"]["spec"]);
    }
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        validate_template(obj)
    }
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        if new["spec"]["selector"] != old["spec"]["selector"] {
            return vec![FieldError::invalid(
                "spec.selector",
                &new["spec"]["selector"],
                "field is immutable",
            )];
        }
        vec![]
    }
    fn round_trip(&self, obj: &Value) -> Result<Vec<String>, String> {
        typed_round_trip::<ReplicaSet>(obj)
    }
    fn scale_selector(&self, obj: &Value) -> String {
        selector_string(&obj["spec"]["selector"])
    }
    fn field_names(&self) -> &'static [&'static str] {
        &["status.replicas"]
    }
    fn fields(&self, obj: &Value) -> Vec<(&'static str, String)> {
        vec![(
            "status.replicas",
            int_at(obj, "status.replicas").to_string(),
        )]
    }
    fn columns(&self) -> Vec<Column> {
        vec![
            NAME_COLUMN,
            col("Desired", "integer", "Replicas is the number of desired replicas. This is a pointer to distinguish between explicit zero and unspecified. Defaults to 1."),
            col("Current", "integer", "Replicas is the most recently observed number of replicas."),
            col("Ready", "integer", "The number of ready replicas for this replica set."),
            AGE_COLUMN,
            wide("Containers", "string", "Names of each container in the template."),
            wide("Images", "string", "Images referenced by each container in the template."),
            wide("Selector", "string", "Selector is a label query over pods that should match the replica count."),
        ]
    }
    fn row(&self, obj: &Value) -> Vec<Value> {
        let (names, images) = images_and_containers(obj);
        vec![
            name_cell(obj),
            json!(int_at(obj, "spec.replicas")),
            json!(int_at(obj, "status.replicas")),
            json!(int_at(obj, "status.readyReplicas")),
            age_cell(obj),
            json!(names),
            json!(images),
            json!(selector_string(&obj["spec"]["selector"])),
        ]
    }
}
