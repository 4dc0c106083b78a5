//! core/v1 Secret: `stringData` folded into `data` (base64) on write, as upstream.

use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret;
use serde_json::{json, Value};

use super::count;
use crate::strategy::*;
use apimachinery::FieldError;

pub struct Secrets;

static INFO: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    resource: "secrets",
    singular: "secret",
    kind: "Secret",
    namespaced: true,
    short_names: &[],
    categories: &[],
    subresources: &[],
    etcd_prefix: "secrets",
};

impl Strategy for Secrets {
    fn info(&self) -> &'static ResourceInfo {
        &INFO
    }
    fn default(&self, obj: &mut Value) {
        default_at(obj, "type", json!("Opaque"));
        if let Some(Value::Object(sd)) = obj.as_object_mut().and_then(|m| m.remove("stringData")) {
            for (k, v) in sd {
                let enc = base64::engine::general_purpose::STANDARD
                    .encode(v.as_str().unwrap_or_default());
                default_at(obj, "data", json!({}));
                obj["data"][k] = json!(enc);
            }
        }
    }
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = super::configmaps::validate_keys(obj, &["data"]);
        if let Some(m) = obj.get("data").and_then(Value::as_object) {
            for (k, v) in m {
                let ok = v
                    .as_str()
                    .is_some_and(|s| base64::engine::general_purpose::STANDARD.decode(s).is_ok());
                if !ok {
                    errs.push(FieldError::invalid(
                        format!("data[{k}]"),
                        v,
                        "must be a base64-encoded string",
                    ));
                }
            }
        }
        errs
    }
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        let mut errs = vec![];
        if new.get("type") != old.get("type") {
            errs.push(FieldError::immutable("type"));
        }
        if old.get("immutable") == Some(&json!(true)) && new.get("data") != old.get("data") {
            errs.push(FieldError::forbidden(
                "data",
                "field is immutable when `immutable` is set",
            ));
        }
        errs
    }
    fn round_trip(&self, obj: &Value) -> Result<Vec<String>, String> {
        typed_round_trip::<Secret>(obj)
    }
    fn field_names(&self) -> &'static [&'static str] {
        &["type"]
    }
    fn fields(&self, obj: &Value) -> Vec<(&'static str, String)> {
        vec![("type", str_at(obj, "type").to_string())]
    }
    fn columns(&self) -> Vec<Column> {
        vec![
            NAME_COLUMN,
            col("Type", "string", "The type of the secret"),
            col(
                "Data",
                "integer",
                "The number of entries in the secret data",
            ),
            AGE_COLUMN,
        ]
    }
    fn row(&self, obj: &Value) -> Vec<Value> {
        vec![
            name_cell(obj),
            json!(str_at(obj, "type")),
            json!(count(obj.get("data"))),
            age_cell(obj),
        ]
    }
}
