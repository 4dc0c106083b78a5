//! batch/v1 Job (+status): the generated selector and labels, defaults, upstream's columns.

use k8s_openapi::api::batch::v1::Job;
use serde_json::{json, Value};

use super::workload::{images_and_containers, selector_string, validate_template};
use crate::strategy::*;
use apimachinery::{meta, FieldError};

pub struct Jobs;

static INFO: ResourceInfo = ResourceInfo {
    group: "batch",
    version: "v1",
    resource: "jobs",
    singular: "job",
    kind: "Job",
    namespaced: true,
    short_names: &[],
    categories: &["all"],
    subresources: &["status"],
    etcd_prefix: "jobs",
};

fn condition(obj: &Value, t: &str) -> bool {
    obj["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == t && c["status"] == "True"))
}

impl Strategy for Jobs {
    fn info(&self) -> &'static ResourceInfo {
        &INFO
    }
    fn has_generation(&self) -> bool {
        true
    }
    fn prepare_for_create(&self, obj: &mut Value) {
        obj.as_object_mut().map(|m| m.remove("status"));
        // The selector is generated from the job's uid unless the user manages it.
        if at(obj, "spec.manualSelector") != Some(&json!(true)) {
            obj["spec"]["selector"] = Value::Null;
        }
    }
    fn default(&self, obj: &mut Value) {
        let uid = meta::uid(obj).to_string();
        let name = meta::name(obj).to_string();
        if at(obj, "spec.manualSelector") != Some(&json!(true)) && !uid.is_empty() {
            if obj["spec"]["selector"].is_null() {
                obj["spec"]["selector"] =
                    json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
            }
            let labels = &mut obj["spec"]["template"]["metadata"]["labels"];
            if !labels.is_object() {
                *labels = json!({});
            }
            for (k, v) in [
                ("batch.kubernetes.io/controller-uid", uid.as_str()),
                ("batch.kubernetes.io/job-name", name.as_str()),
                ("controller-uid", uid.as_str()),
                ("job-name", name.as_str()),
            ] {
                if labels.get(k).is_none() {
                    labels[k] = json!(v);
                }
            }
        }
        default_at(obj, "spec.parallelism", json!(1));
        default_at(obj, "spec.completions", json!(1));
        default_at(obj, "spec.backoffLimit", json!(6));
        default_at(obj, "spec.completionMode", json!("NonIndexed"));
        default_at(obj, "spec.suspend", json!(false));
        default_at(
            obj,
            "spec.podReplacementPolicy",
            json!("TerminatingOrFailed"),
        );
        super::pods::default_pod_spec(&mut obj["spec"]["template"]["spec"]);
    }
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = validate_template(obj);
        let rp = str_at(obj, "spec.template.spec.restartPolicy");
        if rp != "Never" && rp != "OnFailure" {
            errs.push(FieldError::unsupported(
                "spec.template.spec.restartPolicy",
                &json!(rp),
                &["OnFailure", "Never"],
            ));
        }
        errs
    }
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        let mut errs = super::workload::selector_immutable(new, old);
        if new["spec"]["completions"] != old["spec"]["completions"] {
            errs.push(FieldError::immutable("spec.completions"));
        }
        errs
    }
    fn round_trip(&self, obj: &Value) -> Result<Vec<String>, String> {
        typed_round_trip::<Job>(obj)
    }
    fn columns(&self) -> Vec<Column> {
        vec![
            NAME_COLUMN,
            col("Status", "string", "Status of the job."),
            col("Completions", "string", "The completion status of the job."),
            col("Duration", "string", "Time required to complete the job."),
            AGE_COLUMN,
            wide(
                "Containers",
                "string",
                "Names of each container in the template.",
            ),
            wide(
                "Images",
                "string",
                "Images referenced by each container in the template.",
            ),
            wide(
                "Selector",
                "string",
                "A label query over pods that should match the pod count.",
            ),
        ]
    }
    fn row(&self, obj: &Value) -> Vec<Value> {
        let (names, images) = images_and_containers(obj);
        let status = if condition(obj, "Complete") {
            "Complete"
        } else if condition(obj, "Failed") {
            "Failed"
        } else if condition(obj, "FailureTarget") {
            "FailureTarget"
        } else if condition(obj, "SuccessCriteriaMet") {
            "SuccessCriteriaMet"
        } else if at(obj, "spec.suspend") == Some(&json!(true)) {
            "Suspended"
        } else {
            "Running"
        };
        let completions = match at(obj, "spec.completions").and_then(Value::as_i64) {
            Some(c) => format!("{}/{c}", int_at(obj, "status.succeeded")),
            None => format!(
                "{}/1 of {}",
                int_at(obj, "status.succeeded"),
                int_at(obj, "spec.parallelism")
            ),
        };
        let start = meta::parse_time(str_at(obj, "status.startTime"));
        let end = meta::parse_time(str_at(obj, "status.completionTime"))
            .or_else(|| start.map(|_| jiff::Timestamp::now()));
        let duration = match (start, end) {
            (Some(s), Some(e)) => apimachinery::time::human_duration(e.as_second() - s.as_second()),
            _ => String::new(),
        };
        vec![
            name_cell(obj),
            json!(status),
            json!(completions),
            json!(duration),
            age_cell(obj),
            json!(names),
            json!(images),
            json!(selector_string(&obj["spec"]["selector"])),
        ]
    }
}
