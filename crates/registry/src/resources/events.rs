//! core/v1 Event, with upstream's selectable fields and columns.

use k8s_openapi::api::core::v1::Event;
use serde_json::{json, Value};

use crate::strategy::*;
use apimachinery::FieldError;

pub struct Events;

static INFO: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    resource: "events",
    singular: "event",
    kind: "Event",
    namespaced: true,
    short_names: &["ev"],
    categories: &[],
    subresources: &[],
    etcd_prefix: "events",
};

const FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

fn last_seen(obj: &Value) -> String {
    let t = [
        "series.lastObservedTime",
        "lastTimestamp",
        "eventTime",
        "firstTimestamp",
        "metadata.creationTimestamp",
    ]
    .iter()
    .map(|p| str_at(obj, p))
    .find(|s| !s.is_empty());
    apimachinery::time::age(t)
}

impl Strategy for Events {
    fn info(&self) -> &'static ResourceInfo {
        &INFO
    }
    fn allow_create_on_update(&self) -> bool {
        true
    }
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = vec![];
        let ns = apimachinery::meta::namespace(obj);
        let ions = str_at(obj, "involvedObject.namespace");
        if !ions.is_empty() && ions != ns {
            errs.push(FieldError::invalid(
                "involvedObject.namespace",
                &json!(ions),
                "does not match event.namespace",
            ));
        }
        errs
    }
    fn round_trip(&self, obj: &Value) -> Result<Vec<String>, String> {
        typed_round_trip::<Event>(obj)
    }
    fn field_names(&self) -> &'static [&'static str] {
        FIELDS
    }
    fn fields(&self, obj: &Value) -> Vec<(&'static str, String)> {
        FIELDS
            .iter()
            .map(|f| {
                let v = if *f == "source" {
                    str_at(obj, "source.component").to_string()
                } else {
                    str_at(obj, f).to_string()
                };
                (*f, v)
            })
            .collect()
    }
    fn columns(&self) -> Vec<Column> {
        vec![
            col("Last Seen", "string", "Time when last Event occurred"),
            col(
                "Type",
                "string",
                "Type of this event (Normal, Warning), new types could be added in the future.",
            ),
            col("Reason", "string", "Reason why this event was generated."),
            col("Object", "string", "Object this event is about."),
            wide(
                "Subobject",
                "string",
                "Subobject of the object this event is about.",
            ),
            wide("Source", "string", "Component generating the event."),
            col(
                "Message",
                "string",
                "A human-readable description of the status of this operation.",
            ),
            wide("First Seen", "string", "Time when first Event occurred"),
            wide("Count", "string", "How many times this event occurred."),
            Column {
                format: "name",
                ..wide("Name", "string", "Name of the event")
            },
        ]
    }
    fn row(&self, obj: &Value) -> Vec<Value> {
        let kind = str_at(obj, "involvedObject.kind").to_lowercase();
        let object = format!("{kind}/{}", str_at(obj, "involvedObject.name"));
        let mut source = str_at(obj, "source.component").to_string();
        if source.is_empty() {
            source = str_at(obj, "reportingComponent").to_string();
        }
        let host = str_at(obj, "source.host");
        if !host.is_empty() {
            source = format!("{source}, {host}");
        }
        let first = ["firstTimestamp", "eventTime", "metadata.creationTimestamp"]
            .iter()
            .map(|p| str_at(obj, p))
            .find(|s| !s.is_empty());
        let count = at(obj, "count").and_then(Value::as_i64).unwrap_or(1);
        vec![
            json!(last_seen(obj)),
            json!(str_at(obj, "type")),
            json!(str_at(obj, "reason")),
            json!(object),
            json!(str_at(obj, "involvedObject.fieldPath")),
            json!(source),
            json!(str_at(obj, "message").trim()),
            json!(apimachinery::time::age(first)),
            json!(count.to_string()),
            name_cell(obj),
        ]
    }
}
