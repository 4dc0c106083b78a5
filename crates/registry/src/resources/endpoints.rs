//! core/v1 Endpoints, stored under upstream's `services/endpoints` prefix.

use k8s_openapi::api::core::v1::Endpoints as Typed;
use serde_json::{json, Value};

use crate::strategy::*;

pub struct Endpoints;

static INFO: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    resource: "endpoints",
    singular: "endpoints",
    kind: "Endpoints",
    namespaced: true,
    short_names: &["ep"],
    categories: &[],
    subresources: &[],
    etcd_prefix: "services/endpoints",
};

/// Upstream's ENDPOINTS cell: up to three `ip:port`, then ` + N more...`.
fn endpoints_cell(obj: &Value) -> String {
    let mut list = vec![];
    for s in obj["subsets"].as_array().into_iter().flatten() {
        let ports: Vec<i64> = s["ports"]
            .as_array()
            .map(|a| a.iter().filter_map(|p| p["port"].as_i64()).collect())
            .unwrap_or_default();
        for a in s["addresses"].as_array().into_iter().flatten() {
            let ip = a["ip"].as_str().unwrap_or("");
            if ports.is_empty() {
                list.push(ip.to_string());
            }
            for p in &ports {
                list.push(format!("{ip}:{p}"));
            }
        }
    }
    if list.is_empty() {
        return "<none>".into();
    }
    let more = list.len().saturating_sub(3);
    let mut out = list[..list.len().min(3)].join(",");
    if more > 0 {
        out.push_str(&format!(" + {more} more..."));
    }
    out
}

impl Strategy for Endpoints {
    fn info(&self) -> &'static ResourceInfo {
        &INFO
    }
    fn allow_create_on_update(&self) -> bool {
        true
    }
    fn default(&self, obj: &mut Value) {
        for s in obj["subsets"].as_array_mut().into_iter().flatten() {
            for p in s["ports"].as_array_mut().into_iter().flatten() {
                default_at(p, "protocol", json!("TCP"));
            }
        }
    }
    fn round_trip(&self, obj: &Value) -> Result<Vec<String>, String> {
        typed_round_trip::<Typed>(obj)
    }
    fn columns(&self) -> Vec<Column> {
        vec![
            NAME_COLUMN,
            col(
                "Endpoints",
                "string",
                "Endpoints is the list of endpoints in the endpoints object.",
            ),
            AGE_COLUMN,
        ]
    }
    fn row(&self, obj: &Value) -> Vec<Value> {
        vec![name_cell(obj), json!(endpoints_cell(obj)), age_cell(obj)]
    }
}
