//! core/v1 ConfigMap.

use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::{json, Value};

use super::count;
use crate::strategy::*;
use apimachinery::FieldError;

pub struct ConfigMaps;

static INFO: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    resource: "configmaps",
    singular: "configmap",
    kind: "ConfigMap",
    namespaced: true,
    short_names: &["cm"],
    categories: &[],
    subresources: &[],
    etcd_prefix: "configmaps",
};

/// Keys of `data`, `binaryData` and `stringData`: `[-._a-zA-Z0-9]+`, unique across the maps.
pub(crate) fn validate_keys(obj: &Value, maps: &[&str]) -> Vec<FieldError> {
    let mut errs = vec![];
    let mut seen = std::collections::BTreeSet::new();
    for field in maps {
        let Some(m) = obj.get(*field).and_then(Value::as_object) else {
            continue;
        };
        for k in m.keys() {
            let ok = !k.is_empty()
                && k.len() <= 253
                && k.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
                && k != "."
                && k != "..";
            if !ok {
                errs.push(FieldError::invalid(format!("{field}[{k}]"), &json!(k), "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"));
            } else if !seen.insert(k.clone()) {
                errs.push(FieldError::invalid(
                    format!("{field}[{k}]"),
                    &json!(k),
                    "duplicate of key present in another map",
                ));
            }
        }
    }
    errs
}

impl Strategy for ConfigMaps {
    fn info(&self) -> &'static ResourceInfo {
        &INFO
    }
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        validate_keys(obj, &["data", "binaryData"])
    }
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        if old.get("immutable") == Some(&json!(true))
            && (new.get("data") != old.get("data")
                || new.get("binaryData") != old.get("binaryData"))
        {
            return vec![FieldError::forbidden(
                "data",
                "field is immutable when `immutable` is set",
            )];
        }
        vec![]
    }
    fn round_trip(&self, obj: &Value) -> Result<Vec<String>, String> {
        typed_round_trip::<ConfigMap>(obj)
    }
    fn columns(&self) -> Vec<Column> {
        vec![
            NAME_COLUMN,
            col("Data", "integer", "Data contains the configuration data."),
            AGE_COLUMN,
        ]
    }
    fn row(&self, obj: &Value) -> Vec<Value> {
        let n = count(obj.get("data")) + count(obj.get("binaryData"));
        vec![name_cell(obj), json!(n), age_cell(obj)]
    }
}
