//! core/v1 Service (+status): defaults, port validation, upstream's columns. ClusterIP allocation
//! from `--service-cluster-ip-range` is added by the API server's allocator (not yet: "None"/given
//! IPs are kept as sent).

use k8s_openapi::api::core::v1::Service;
use serde_json::{json, Value};

use super::or_none;
use crate::strategy::*;
use apimachinery::FieldError;

pub struct Services;

static INFO: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    resource: "services",
    singular: "service",
    kind: "Service",
    namespaced: true,
    short_names: &["svc"],
    categories: &["all"],
    subresources: &["status"],
    etcd_prefix: "services/specs",
};

impl Strategy for Services {
    fn info(&self) -> &'static ResourceInfo {
        &INFO
    }
    fn default(&self, obj: &mut Value) {
        default_at(obj, "spec.type", json!("ClusterIP"));
        default_at(obj, "spec.sessionAffinity", json!("None"));
        let t = str_at(obj, "spec.type").to_string();
        if t != "ExternalName" {
            default_at(obj, "spec.internalTrafficPolicy", json!("Cluster"));
            default_at(obj, "spec.ipFamilyPolicy", json!("SingleStack"));
            default_at(obj, "spec.ipFamilies", json!(["IPv4"]));
        }
        if t == "NodePort" || t == "LoadBalancer" {
            default_at(obj, "spec.externalTrafficPolicy", json!("Cluster"));
        }
        if let Some(ports) = obj["spec"].get_mut("ports").and_then(Value::as_array_mut) {
            for p in ports {
                default_at(p, "protocol", json!("TCP"));
                let port = p["port"].clone();
                default_at(p, "targetPort", port);
            }
        }
        default_at(obj, "status.loadBalancer", json!({}));
    }
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = vec![];
        let t = str_at(obj, "spec.type");
        let types = ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];
        if !types.contains(&t) {
            errs.push(FieldError::unsupported("spec.type", &json!(t), &types));
        }
        let ports = obj["spec"]["ports"].as_array();
        if t != "ExternalName"
            && str_at(obj, "spec.clusterIP") != "None"
            && ports.is_none_or(|p| p.is_empty())
        {
            errs.push(FieldError::required("spec.ports", ""));
        }
        for (i, p) in ports.into_iter().flatten().enumerate() {
            match p["port"].as_i64() {
                Some(n) if (1..=65535).contains(&n) => {}
                Some(n) => errs.push(FieldError::invalid(
                    format!("spec.ports[{i}].port"),
                    &json!(n),
                    "must be between 1 and 65535, inclusive",
                )),
                None => errs.push(FieldError::required(format!("spec.ports[{i}].port"), "")),
            }
            if ports.is_some_and(|a| a.len() > 1) && p["name"].as_str().unwrap_or("").is_empty() {
                errs.push(FieldError::required(format!("spec.ports[{i}].name"), ""));
            }
        }
        errs
    }
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        let (n, o) = (str_at(new, "spec.clusterIP"), str_at(old, "spec.clusterIP"));
        if !o.is_empty() && n != o {
            return vec![FieldError::immutable("spec.clusterIPs[0]")];
        }
        vec![]
    }
    fn prepare_for_update(&self, new: &mut Value, old: &Value) {
        new["status"] = old.get("status").cloned().unwrap_or(json!({}));
        if str_at(new, "spec.clusterIP").is_empty() {
            if let Some(ip) = at(old, "spec.clusterIP") {
                new["spec"]["clusterIP"] = ip.clone();
            }
            if let Some(ips) = at(old, "spec.clusterIPs") {
                new["spec"]["clusterIPs"] = ips.clone();
            }
        }
    }
    fn round_trip(&self, obj: &Value) -> Result<Vec<String>, String> {
        typed_round_trip::<Service>(obj)
    }
    fn field_names(&self) -> &'static [&'static str] {
        &["spec.clusterIP", "spec.type"]
    }
    fn fields(&self, obj: &Value) -> Vec<(&'static str, String)> {
        vec![
            ("spec.clusterIP", str_at(obj, "spec.clusterIP").into()),
            ("spec.type", str_at(obj, "spec.type").into()),
        ]
    }
    fn columns(&self) -> Vec<Column> {
        vec![
            NAME_COLUMN,
            col("Type", "string", "type determines how the Service is exposed."),
            col("Cluster-IP", "string", "clusterIP is the IP address of the service and is usually assigned randomly by the master."),
            col("External-IP", "string", "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service."),
            col("Port(s)", "string", "The list of ports that are exposed by this service."),
            AGE_COLUMN,
            wide("Selector", "string", "Route service traffic to pods with label keys and values matching this selector."),
        ]
    }
    fn row(&self, obj: &Value) -> Vec<Value> {
        let t = str_at(obj, "spec.type");
        let mut ext: Vec<String> = obj["spec"]["externalIPs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(ing) = obj["status"]["loadBalancer"]["ingress"].as_array() {
            for i in ing {
                if let Some(ip) = i["ip"].as_str().or(i["hostname"].as_str()) {
                    ext.push(ip.to_string());
                }
            }
        }
        let external = match t {
            "ExternalName" => str_at(obj, "spec.externalName").to_string(),
            "LoadBalancer" if ext.is_empty() => "<pending>".into(),
            _ if ext.is_empty() => "<none>".into(),
            _ => ext.join(","),
        };
        let ports: Vec<String> = obj["spec"]["ports"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|p| {
                        let proto = p["protocol"].as_str().unwrap_or("TCP");
                        match p["nodePort"].as_i64() {
                            Some(np) => format!("{}:{np}/{proto}", p["port"]),
                            None => format!("{}/{proto}", p["port"]),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let sel: Vec<String> = apimachinery::meta::string_map(obj["spec"].get("selector"))
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        vec![
            name_cell(obj),
            json!(t),
            json!(or_none(str_at(obj, "spec.clusterIP"))),
            json!(external),
            json!(or_none(&ports.join(","))),
            age_cell(obj),
            json!(or_none(&sel.join(","))),
        ]
    }
}
