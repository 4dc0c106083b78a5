//! core/v1 ReplicationController (+status, +scale): its selector is a plain label map, defaulted
//! from the template's labels.

use k8s_openapi::api::core::v1::ReplicationController;
use serde_json::{json, Value};

use super::workload::images_and_containers;
use crate::strategy::*;
use apimachinery::{FieldError, LabelSelector};

pub struct ReplicationControllers;

static INFO: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    resource: "replicationcontrollers",
    singular: "replicationcontroller",
    kind: "ReplicationController",
    namespaced: true,
    short_names: &["rc"],
    categories: &["all"],
    subresources: &["status", "scale"],
    etcd_prefix: "controllers",
};

fn selector(obj: &Value) -> String {
    let s: Vec<String> = apimachinery::meta::string_map(obj["spec"].get("selector"))
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    s.join(",")
}

impl Strategy for ReplicationControllers {
    fn info(&self) -> &'static ResourceInfo {
        &INFO
    }
    fn has_generation(&self) -> bool {
        true
    }
    fn default(&self, obj: &mut Value) {
        default_at(obj, "spec.replicas", json!(1));
        if obj["spec"]["selector"].is_null() {
            if let Some(l) = at(obj, "spec.template.metadata.labels").cloned() {
                obj["spec"]["selector"] = l;
            }
        }
        if obj["metadata"]["labels"].is_null() {
            if let Some(l) = at(obj, "spec.template.metadata.labels").cloned() {
                obj["metadata"]["labels"] = l;
            }
        }
        super::pods::default_pod_spec(&mut obj["spec"]["template"]["spec"]);
    }
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = vec![];
        let sel = selector(obj);
        if sel.is_empty() {
            errs.push(FieldError::required("spec.selector", ""));
        } else if let Ok(s) = LabelSelector::parse(&sel) {
            let labels =
                apimachinery::meta::string_map(obj["spec"]["template"]["metadata"].get("labels"));
            if !s.matches(&labels) {
                errs.push(FieldError::invalid(
                    "spec.template.metadata.labels",
                    &obj["spec"]["template"]["metadata"]["labels"],
                    "`selector` does not match template `labels`",
                ));
            }
        }
        errs.extend(super::pods::validate_pod_spec(
            &obj["spec"]["template"]["spec"],
            "spec.template.spec",
        ));
        errs
    }
    fn round_trip(&self, obj: &Value) -> Result<Vec<String>, String> {
        typed_round_trip::<ReplicationController>(obj)
    }
    fn scale_selector(&self, obj: &Value) -> String {
        selector(obj)
    }
    fn columns(&self) -> Vec<Column> {
        vec![
            NAME_COLUMN,
            col(
                "Desired",
                "integer",
                "Replicas is the number of desired replicas.",
            ),
            col(
                "Current",
                "integer",
                "Replicas is the most recently observed number of replicas.",
            ),
            col(
                "Ready",
                "integer",
                "The number of ready replicas for this replication controller.",
            ),
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
            wide(
                "Selector",
                "string",
                "Selector is a label query over pods that should match the Replicas count.",
            ),
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
            json!(selector(obj)),
        ]
    }
}
