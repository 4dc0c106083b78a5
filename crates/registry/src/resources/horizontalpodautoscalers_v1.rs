//! autoscaling/v1 HorizontalPodAutoscaler: the v2 objects seen through v1 (a CPU utilization
//! target), stored as v2 like upstream's storage version.

use k8s_openapi::api::autoscaling::v1::HorizontalPodAutoscaler;
use serde_json::{json, Map, Value};

use crate::strategy::*;
use apimachinery::FieldError;

pub struct HorizontalPodAutoscalersV1;

static INFO: ResourceInfo = ResourceInfo {
    group: "autoscaling",
    version: "v1",
    resource: "horizontalpodautoscalers",
    singular: "horizontalpodautoscaler",
    kind: "HorizontalPodAutoscaler",
    namespaced: true,
    short_names: &["hpa"],
    categories: &["all"],
    subresources: &["status"],
    etcd_prefix: "horizontalpodautoscalers",
};

fn cpu_metric(list: &Value, part: &str) -> Option<i64> {
    list.as_array()?
        .iter()
        .find(|m| m["type"] == "Resource" && m["resource"]["name"] == "cpu")?["resource"][part]
        ["averageUtilization"]
        .as_i64()
}

fn copy(from: &Value, to: &mut Map<String, Value>, keys: &[&str]) {
    for k in keys {
        if let Some(v) = from.get(*k) {
            to.insert(k.to_string(), v.clone());
        }
    }
}

impl Strategy for HorizontalPodAutoscalersV1 {
    fn info(&self) -> &'static ResourceInfo {
        &INFO
    }
    fn default(&self, obj: &mut Value) {
        default_at(obj, "spec.minReplicas", json!(1));
    }
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = vec![];
        for f in ["kind", "name"] {
            if str_at(obj, &format!("spec.scaleTargetRef.{f}")).is_empty() {
                errs.push(FieldError::required(format!("spec.scaleTargetRef.{f}"), ""));
            }
        }
        let (min, max) = (
            int_at(obj, "spec.minReplicas"),
            int_at(obj, "spec.maxReplicas"),
        );
        if max < 1 {
            errs.push(FieldError::invalid(
                "spec.maxReplicas",
                &json!(max),
                "must be greater than or equal to 1",
            ));
        } else if min > max {
            errs.push(FieldError::invalid(
                "spec.maxReplicas",
                &json!(max),
                "must be greater than or equal to `minReplicas`",
            ));
        }
        errs
    }
    fn round_trip(&self, obj: &Value) -> Result<Vec<String>, String> {
        typed_round_trip::<HorizontalPodAutoscaler>(obj)
    }
    fn version_to_storage(&self, obj: Value) -> Value {
        let mut spec = Map::new();
        copy(
            &obj["spec"],
            &mut spec,
            &["scaleTargetRef", "minReplicas", "maxReplicas"],
        );
        let cpu = obj["spec"]["targetCPUUtilizationPercentage"]
            .as_i64()
            .unwrap_or(80);
        spec.insert(
            "metrics".into(),
            json!([{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": cpu}}}]),
        );
        let mut status = Map::new();
        copy(
            &obj["status"],
            &mut status,
            &[
                "observedGeneration",
                "lastScaleTime",
                "currentReplicas",
                "desiredReplicas",
            ],
        );
        if let Some(c) = obj["status"]["currentCPUUtilizationPercentage"].as_i64() {
            status.insert(
                "currentMetrics".into(),
                json!([{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": c}}}]),
            );
        }
        let mut out = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": obj["metadata"], "spec": spec});
        if !status.is_empty() || obj.get("status").is_some() {
            out["status"] = Value::Object(status);
        }
        out
    }
    fn storage_to_version(&self, obj: Value) -> Value {
        let mut spec = Map::new();
        copy(
            &obj["spec"],
            &mut spec,
            &["scaleTargetRef", "minReplicas", "maxReplicas"],
        );
        if let Some(c) = cpu_metric(&obj["spec"]["metrics"], "target") {
            spec.insert("targetCPUUtilizationPercentage".into(), json!(c));
        }
        let mut status = Map::new();
        copy(
            &obj["status"],
            &mut status,
            &[
                "observedGeneration",
                "lastScaleTime",
                "currentReplicas",
                "desiredReplicas",
            ],
        );
        if let Some(c) = cpu_metric(&obj["status"]["currentMetrics"], "current") {
            status.insert("currentCPUUtilizationPercentage".into(), json!(c));
        }
        let mut out = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": obj["metadata"], "spec": spec});
        if obj.get("status").is_some() {
            out["status"] = Value::Object(status);
        }
        out
    }
    fn columns(&self) -> Vec<Column> {
        super::horizontalpodautoscalers::HorizontalPodAutoscalers.columns()
    }
    fn row(&self, obj: &Value) -> Vec<Value> {
        super::horizontalpodautoscalers::HorizontalPodAutoscalers
            .row(&self.version_to_storage(obj.clone()))
    }
}
