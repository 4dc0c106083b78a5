//! discovery.k8s.io/v1 EndpointSlice.

use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{json, Value};

use crate::strategy::*;
use apimachinery::FieldError;

pub struct EndpointSlices;

static INFO: ResourceInfo = ResourceInfo {
    group: "discovery.k8s.io",
    version: "v1",
    resource: "endpointslices",
    singular: "endpointslice",
    kind: "EndpointSlice",
    namespaced: true,
    short_names: &[],
    categories: &[],
    subresources: &[],
    etcd_prefix: "endpointslices",
};

impl Strategy for EndpointSlices {
    fn info(&self) -> &'static ResourceInfo {
        &INFO
    }
    fn has_generation(&self) -> bool {
        true
    }
    fn default(&self, obj: &mut Value) {
        for p in obj["ports"].as_array_mut().into_iter().flatten() {
            default_at(p, "protocol", json!("TCP"));
            default_at(p, "name", json!(""));
        }
    }
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let t = str_at(obj, "addressType");
        let ok = ["IPv4", "IPv6", "FQDN"];
        if !ok.contains(&t) {
            return vec![FieldError::unsupported("addressType", &json!(t), &ok)];
        }
        vec![]
    }
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        if new["addressType"] != old["addressType"] {
            return vec![FieldError::immutable("addressType")];
        }
        vec![]
    }
    fn round_trip(&self, obj: &Value) -> Result<Vec<String>, String> {
        typed_round_trip::<EndpointSlice>(obj)
    }
    fn columns(&self) -> Vec<Column> {
        vec![
            NAME_COLUMN,
            col("AddressType", "string", "The IP protocol for this slice"),
            col("Ports", "string", "The ports exposed by this slice"),
            col("Endpoints", "string", "The endpoints exposed by this slice"),
            AGE_COLUMN,
        ]
    }
    fn row(&self, obj: &Value) -> Vec<Value> {
        let ports: Vec<String> = obj["ports"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p["port"].as_i64().map(|n| n.to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let mut addrs = vec![];
        for e in obj["endpoints"].as_array().into_iter().flatten() {
            for a in e["addresses"].as_array().into_iter().flatten() {
                if let Some(s) = a.as_str() {
                    addrs.push(s.to_string());
                }
            }
        }
        let shown = if addrs.is_empty() {
            "<unset>".to_string()
        } else if addrs.len() > 3 {
            format!("{} + {} more...", addrs[..3].join(","), addrs.len() - 3)
        } else {
            addrs.join(",")
        };
        vec![
            name_cell(obj),
            json!(str_at(obj, "addressType")),
            json!(if ports.is_empty() {
                "<unset>".into()
            } else {
                ports.join(",")
            }),
            json!(shown),
            age_cell(obj),
        ]
    }
}
