//! core/v1 ComponentStatus (read-only, deprecated upstream but still what `kubectl get cs` shows).
//! Nothing is stored: the API server builds the items live (store health, scheduler and
//! controller-manager health ports); this strategy names the resource and prints it.

use k8s_openapi::api::core::v1::ComponentStatus;
use serde_json::{json, Value};

use crate::strategy::*;

pub struct ComponentStatuses;

static INFO: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    resource: "componentstatuses",
    singular: "componentstatus",
    kind: "ComponentStatus",
    namespaced: false,
    short_names: &["cs"],
    categories: &[],
    subresources: &[],
    etcd_prefix: "componentstatuses",
};

impl Strategy for ComponentStatuses {
    fn info(&self) -> &'static ResourceInfo {
        &INFO
    }
    fn verbs(&self) -> &'static [&'static str] {
        &["get", "list"]
    }
    fn round_trip(&self, obj: &Value) -> Result<Vec<String>, String> {
        typed_round_trip::<ComponentStatus>(obj)
    }
    fn columns(&self) -> Vec<Column> {
        vec![
            NAME_COLUMN,
            col("Status", "string", "Status of the component conditions"),
            col("Message", "string", "Message of the component conditions"),
            col("Error", "string", "Error of the component conditions"),
        ]
    }
    fn row(&self, obj: &Value) -> Vec<Value> {
        let c = obj["conditions"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["type"] == "Healthy"))
            .cloned()
            .unwrap_or(Value::Null);
        let status = match c["status"].as_str() {
            Some("True") => "Healthy",
            Some("False") => "Unhealthy",
            _ => "Unknown",
        };
        vec![
            name_cell(obj),
            json!(status),
            json!(c["message"].as_str().unwrap_or("")),
            json!(c["error"].as_str().unwrap_or("")),
        ]
    }
}
