//! networking.k8s.io/v1 Ingress (+status).

use k8s_openapi::api::networking::v1::Ingress;
use serde_json::{json, Value};

use super::or_none;
use crate::strategy::*;
use apimachinery::FieldError;

pub struct Ingresses;

static INFO: ResourceInfo = ResourceInfo {
    group: "networking.k8s.io",
    version: "v1",
    resource: "ingresses",
    singular: "ingress",
    kind: "Ingress",
    namespaced: true,
    short_names: &["ing"],
    categories: &[],
    subresources: &["status"],
    etcd_prefix: "ingress",
};

impl Strategy for Ingresses {
    fn info(&self) -> &'static ResourceInfo {
        &INFO
    }
    fn has_generation(&self) -> bool {
        true
    }
    fn default(&self, obj: &mut Value) {
        for r in obj["spec"]["rules"].as_array_mut().into_iter().flatten() {
            for p in r["http"]["paths"].as_array_mut().into_iter().flatten() {
                default_at(p, "pathType", json!("ImplementationSpecific"));
            }
        }
    }
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = vec![];
        let rules = obj["spec"]["rules"].as_array();
        if obj["spec"]["defaultBackend"].is_null() && rules.is_none_or(|r| r.is_empty()) {
            errs.push(FieldError::invalid(
                "spec",
                &obj["spec"],
                "either `defaultBackend` or `rules` must be specified",
            ));
        }
        for (i, r) in rules.into_iter().flatten().enumerate() {
            for (j, p) in r["http"]["paths"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                let t = p["pathType"].as_str().unwrap_or("");
                let ok = ["Exact", "Prefix", "ImplementationSpecific"];
                if !ok.contains(&t) {
                    errs.push(FieldError::unsupported(
                        format!("spec.rules[{i}].http.paths[{j}].pathType"),
                        &json!(t),
                        &ok,
                    ));
                }
            }
        }
        errs
    }
    fn round_trip(&self, obj: &Value) -> Result<Vec<String>, String> {
        typed_round_trip::<Ingress>(obj)
    }
    fn columns(&self) -> Vec<Column> {
        vec![
            NAME_COLUMN,
            col(
                "Class",
                "string",
                "The name of the IngressClass resource that should be used for this Ingress.",
            ),
            col(
                "Hosts",
                "string",
                "Hosts that incoming requests are matched against before the ingress rule",
            ),
            col(
                "Address",
                "string",
                "Address is a list containing ingress points for the load-balancer",
            ),
            col("Ports", "string", "Ports of TLS configurations that open"),
            AGE_COLUMN,
        ]
    }
    fn row(&self, obj: &Value) -> Vec<Value> {
        let hosts: Vec<&str> = obj["spec"]["rules"]
            .as_array()
            .map(|rs| rs.iter().filter_map(|r| r["host"].as_str()).collect())
            .unwrap_or_default();
        let hosts = if hosts.is_empty() && !obj["spec"]["rules"].is_null() {
            "*".to_string()
        } else if hosts.len() > 4 {
            format!("{} + {} more...", hosts[..4].join(","), hosts.len() - 4)
        } else {
            hosts.join(",")
        };
        let addrs: Vec<&str> = obj["status"]["loadBalancer"]["ingress"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|i| i["ip"].as_str().or(i["hostname"].as_str()))
                    .collect()
            })
            .unwrap_or_default();
        let ports = if obj["spec"]["tls"].as_array().is_some_and(|t| !t.is_empty()) {
            "80, 443"
        } else {
            "80"
        };
        vec![
            name_cell(obj),
            json!(or_none(str_at(obj, "spec.ingressClassName"))),
            json!(if hosts.is_empty() { "*".into() } else { hosts }),
            json!(addrs.join(",")),
            json!(ports),
            age_cell(obj),
        ]
    }
}
