//! networking.k8s.io/v1 IngressClass (cluster-scoped).

use k8s_openapi::api::networking::v1::IngressClass;
use serde_json::{json, Value};

use crate::strategy::*;
use apimachinery::FieldError;

pub struct IngressClasses;

static INFO: ResourceInfo = ResourceInfo {
    group: "networking.k8s.io",
    version: "v1",
    resource: "ingressclasses",
    singular: "ingressclass",
    kind: "IngressClass",
    namespaced: false,
    short_names: &[],
    categories: &[],
    subresources: &[],
    etcd_prefix: "ingressclasses",
};

impl Strategy for IngressClasses {
    fn info(&self) -> &'static ResourceInfo {
        &INFO
    }
    fn has_generation(&self) -> bool {
        true
    }
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        if str_at(obj, "spec.controller").is_empty() {
            return vec![FieldError::required("spec.controller", "")];
        }
        vec![]
    }
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        if new["spec"]["controller"] != old["spec"]["controller"] {
            return vec![FieldError::immutable("spec.controller")];
        }
        vec![]
    }
    fn round_trip(&self, obj: &Value) -> Result<Vec<String>, String> {
        typed_round_trip::<IngressClass>(obj)
    }
    fn columns(&self) -> Vec<Column> {
        vec![
            NAME_COLUMN,
            col(
                "Controller",
                "string",
                "Controller that is responsible for handling this class",
            ),
            col(
                "Parameters",
                "string",
                "A reference to a resource with additional parameters",
            ),
            AGE_COLUMN,
        ]
    }
    fn row(&self, obj: &Value) -> Vec<Value> {
        let p = &obj["spec"]["parameters"];
        let params = if p.is_null() {
            "<none>".to_string()
        } else {
            let kind = p["kind"].as_str().unwrap_or("");
            let group = p["apiGroup"].as_str().unwrap_or("");
            let name = p["name"].as_str().unwrap_or("");
            if group.is_empty() {
                format!("{kind}/{name}")
            } else {
                format!("{kind}.{group}/{name}")
            }
        };
        vec![
            name_cell(obj),
            json!(str_at(obj, "spec.controller")),
            json!(params),
            age_cell(obj),
        ]
    }
}
