//! core/v1 Namespace: phase Active on create, the `kubernetes` finalizer, Terminating on delete.

use k8s_openapi::api::core::v1::Namespace;
use serde_json::{json, Value};

use crate::strategy::*;

pub struct Namespaces;

static INFO: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    resource: "namespaces",
    singular: "namespace",
    kind: "Namespace",
    namespaced: false,
    short_names: &["ns"],
    categories: &[],
    subresources: &["status", "finalize"],
    etcd_prefix: "namespaces",
};

impl Strategy for Namespaces {
    fn info(&self) -> &'static ResourceInfo {
        &INFO
    }
    fn default(&self, obj: &mut Value) {
        let name = apimachinery::meta::name(obj).to_string();
        if !name.is_empty() {
            let labels = apimachinery::meta::metadata_mut(obj)
                .entry("labels")
                .or_insert_with(|| json!({}));
            if labels.is_object() {
                labels["kubernetes.io/metadata.name"] = json!(name);
            }
        }
    }
    fn prepare_for_create(&self, obj: &mut Value) {
        if let Some(m) = obj.as_object_mut() {
            m.remove("status");
        }
        obj["spec"] = json!({"finalizers": ["kubernetes"]});
    }
    fn initial_status(&self, obj: &mut Value) {
        obj["status"] = json!({"phase": "Active"});
    }
    fn prepare_for_update(&self, new: &mut Value, old: &Value) {
        new["status"] = old.get("status").cloned().unwrap_or(json!({}));
        new["spec"] = old.get("spec").cloned().unwrap_or(json!({}));
    }
    fn finalized(&self, obj: &Value) -> bool {
        apimachinery::meta::finalizers(obj).is_empty()
            && obj["spec"]["finalizers"]
                .as_array()
                .is_none_or(|a| a.is_empty())
    }
    fn round_trip(&self, obj: &Value) -> Result<Vec<String>, String> {
        typed_round_trip::<Namespace>(obj)
    }
    fn field_names(&self) -> &'static [&'static str] {
        &["status.phase"]
    }
    fn fields(&self, obj: &Value) -> Vec<(&'static str, String)> {
        vec![("status.phase", str_at(obj, "status.phase").to_string())]
    }
    fn columns(&self) -> Vec<Column> {
        vec![
            NAME_COLUMN,
            col("Status", "string", "The status of the namespace"),
            AGE_COLUMN,
        ]
    }
    fn row(&self, obj: &Value) -> Vec<Value> {
        vec![
            name_cell(obj),
            json!(str_at(obj, "status.phase")),
            age_cell(obj),
        ]
    }
}
