//! Server-side tables (`meta.k8s.io/v1` Table), what `kubectl get` prints.

use serde_json::{json, Value};

use crate::strategy::Strategy;

/// What each row carries besides its cells (`includeObject`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    #[default]
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn parse(s: &str) -> Self {
        match s {
            "None" => Self::None,
            "Object" => Self::Object,
            _ => Self::Metadata,
        }
    }
}

fn row_object(obj: &Value, include: IncludeObject) -> Value {
    match include {
        IncludeObject::None => Value::Null,
        IncludeObject::Object => obj.clone(),
        IncludeObject::Metadata => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
        }),
    }
}

/// A Table of `items`; `list_meta` is the ListMeta (resourceVersion, continue, ...).
pub fn table(
    strategy: &dyn Strategy,
    items: &[Value],
    list_meta: Value,
    include: IncludeObject,
    no_headers: bool,
) -> Value {
    let columns: Vec<Value> = if no_headers {
        vec![]
    } else {
        strategy
            .columns()
            .iter()
            .map(|c| {
                json!({
                    "name": c.name, "type": c.type_, "format": c.format,
                    "description": c.description, "priority": c.priority,
                })
            })
            .collect()
    };
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let mut r = json!({"cells": strategy.row(o)});
            let obj = row_object(o, include);
            if !obj.is_null() {
                r["object"] = obj;
            }
            r
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": columns,
        "rows": rows,
    })
}
