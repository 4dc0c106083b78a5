//! apps/v1 Deployment (+status, +scale).

use k8s_openapi::api::apps::v1::Deployment;
use serde_json::{json, Value};

use super::workload::{images_and_containers, selector_string, validate_template};
use crate::strategy::*;
use apimachinery::FieldError;

pub struct Deployments;

static INFO: ResourceInfo = ResourceInfo {
    group: "apps",
    version: "v1",
    resource: "deployments",
    singular: "deployment",
    kind: "Deployment",
    namespaced: true,
    short_names: &["deploy"],
    categories: &["all"],
    subresources: &["status", "scale"],
    etcd_prefix: "deployments",
};

impl Strategy for Deployments {
    fn info(&self) -> &'static ResourceInfo {
        &INFO
    }
    fn has_generation(&self) -> bool {
        true
    }
    fn default(&self, obj: &mut Value) {
        default_at(obj, "spec.replicas", json!(1));
        if str_at(obj, "spec.strategy.type").is_empty()
            || str_at(obj, "spec.strategy.type") == "RollingUpdate"
        {
            default_at(obj, "spec.strategy.type", json!("RollingUpdate"));
            default_at(
                obj,
                "spec.strategy.rollingUpdate.maxUnavailable",
                json!("25%"),
            );
            default_at(obj, "spec.strategy.rollingUpdate.maxSurge", json!("25%"));
        }
        default_at(obj, "spec.revisionHistoryLimit", json!(10));
        default_at(obj, "spec.progressDeadlineSeconds", json!(600));
        super::pods::default_pod_spec(&mut obj["spec"]["template"]["spec"]);
    }
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = validate_template(obj);
        if let Some(r) = obj["spec"]["replicas"].as_i64() {
            if r < 0 {
                errs.push(FieldError::invalid(
                    "spec.replicas",
                    &json!(r),
                    "must be greater than or equal to 0",
                ));
            }
        }
        errs
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
        typed_round_trip::<Deployment>(obj)
    }
    fn scale_selector(&self, obj: &Value) -> String {
        selector_string(&obj["spec"]["selector"])
    }
    fn columns(&self) -> Vec<Column> {
        vec![
            NAME_COLUMN,
            col("Ready", "string", "Number of the pod with ready state"),
            col("Up-to-date", "string", "Total number of non-terminated pods targeted by this deployment that have the desired template spec."),
            col("Available", "string", "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment."),
            AGE_COLUMN,
            wide("Containers", "string", "Names of each container in the template."),
            wide("Images", "string", "Images referenced by each container in the template."),
            wide("Selector", "string", "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment."),
        ]
    }
    fn row(&self, obj: &Value) -> Vec<Value> {
        let s = &obj["status"];
        let (names, images) = images_and_containers(obj);
        vec![
            name_cell(obj),
            json!(format!(
                "{}/{}",
                s["readyReplicas"].as_i64().unwrap_or(0),
                obj["spec"]["replicas"].as_i64().unwrap_or(0)
            )),
            json!(s["updatedReplicas"].as_i64().unwrap_or(0)),
            json!(s["availableReplicas"].as_i64().unwrap_or(0)),
            age_cell(obj),
            json!(names),
            json!(images),
            json!(selector_string(&obj["spec"]["selector"])),
        ]
    }
}
