//! autoscaling/v2 HorizontalPodAutoscaler (+status). Only v2 is served for now; autoscaling/v1 (the
//! same objects converted) comes with multi-version storage.

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use serde_json::{json, Value};

use crate::strategy::*;
use apimachinery::FieldError;

pub struct HorizontalPodAutoscalers;

static INFO: ResourceInfo = ResourceInfo {
    group: "autoscaling",
    version: "v2",
    resource: "horizontalpodautoscalers",
    singular: "horizontalpodautoscaler",
    kind: "HorizontalPodAutoscaler",
    namespaced: true,
    short_names: &["hpa"],
    categories: &["all"],
    subresources: &["status"],
    etcd_prefix: "horizontalpodautoscalers",
};

fn targets(obj: &Value) -> String {
    let metrics = obj["spec"]["metrics"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if metrics.is_empty() {
        return "<none>".into();
    }
    let current = obj["status"]["currentMetrics"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let parts: Vec<String> = metrics
        .iter()
        .enumerate()
        .map(|(i, m)| {
            if m["type"] == "Resource" {
                let name = m["resource"]["name"].as_str().unwrap_or("");
                let want = &m["resource"]["target"];
                let cur = current
                    .get(i)
                    .and_then(|c| c["resource"]["current"]["averageUtilization"].as_i64())
                    .map(|u| format!("{u}%"))
                    .unwrap_or_else(|| "<unknown>".into());
                match want["averageUtilization"].as_i64() {
                    Some(u) => format!("{name}: {cur}/{u}%"),
                    None => format!(
                        "{name}: {cur}/{}",
                        want["averageValue"].as_str().unwrap_or("")
                    ),
                }
            } else {
                "<unknown>/<unknown>".to_string()
            }
        })
        .collect();
    parts.join(", ")
}

impl Strategy for HorizontalPodAutoscalers {
    fn info(&self) -> &'static ResourceInfo {
        &INFO
    }
    fn default(&self, obj: &mut Value) {
        default_at(obj, "spec.minReplicas", json!(1));
        if obj["spec"]["metrics"].is_null() {
            obj["spec"]["metrics"] = json!([{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 80}}}]);
        }
    }
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = vec![];
        if str_at(obj, "spec.scaleTargetRef.kind").is_empty() {
            errs.push(FieldError::required("spec.scaleTargetRef.kind", ""));
        }
        if str_at(obj, "spec.scaleTargetRef.name").is_empty() {
            errs.push(FieldError::required("spec.scaleTargetRef.name", ""));
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
    fn columns(&self) -> Vec<Column> {
        vec![
            NAME_COLUMN,
            col("Reference", "string", "reference to the target resource"),
            col("Targets", "string", "the current and target metric values"),
            col("MinPods", "string", "minimum number of replicas"),
            col("MaxPods", "integer", "maximum number of replicas"),
            col("Replicas", "integer", "current number of replicas"),
            AGE_COLUMN,
        ]
    }
    fn row(&self, obj: &Value) -> Vec<Value> {
        let r = &obj["spec"]["scaleTargetRef"];
        vec![
            name_cell(obj),
            json!(format!(
                "{}/{}",
                r["kind"].as_str().unwrap_or(""),
                r["name"].as_str().unwrap_or("")
            )),
            json!(targets(obj)),
            json!(int_at(obj, "spec.minReplicas").to_string()),
            json!(int_at(obj, "spec.maxReplicas")),
            json!(int_at(obj, "status.currentReplicas")),
            age_cell(obj),
        ]
    }
}
