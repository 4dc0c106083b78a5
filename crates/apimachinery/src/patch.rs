//! PATCH bodies: JSON patch (RFC 6902), JSON merge patch (RFC 7396) and strategic merge patch (ours:
//! lists of the built-in types merged by their merge keys, the `$patch`, `$retainKeys`,
//! `$deleteFromPrimitiveList` and `$setElementOrder` directives).

use serde_json::{Map, Value};

use crate::status::ApiError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let base = ct.split(';').next().unwrap_or("").trim();
        match base {
            "application/json-patch+json" => Some(Self::Json),
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(Self::Apply),
            _ => None,
        }
    }
}

/// How a list field merges under a strategic merge patch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListStrategy {
    /// Atomic: the patch's list replaces the original.
    Replace,
    /// Objects merged by the value of this key.
    MergeKey(&'static str),
    /// A list of scalars merged as a set (e.g. `metadata.finalizers`).
    MergePrimitives,
}

/// The merge strategy of the built-in types' list fields, by the field's path (names only, no
/// indexes). Follows the `patchStrategy`/`patchMergeKey` tags of the upstream types.
pub fn builtin_list_strategy(path: &[String], field: &str) -> ListStrategy {
    let parent = path.last().map(String::as_str).unwrap_or("");
    let in_container = path
        .iter()
        .any(|p| p == "containers" || p == "initContainers" || p == "ephemeralContainers");
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims" => ListStrategy::MergeKey("name"),
        "env" if in_container => ListStrategy::MergeKey("name"),
        "volumeMounts" => ListStrategy::MergeKey("mountPath"),
        "volumeDevices" => ListStrategy::MergeKey("devicePath"),
        "ports" if in_container => ListStrategy::MergeKey("containerPort"),
        "ports" if parent == "spec" => ListStrategy::MergeKey("port"),
        "hostAliases" => ListStrategy::MergeKey("ip"),
        "podIPs" | "hostIPs" => ListStrategy::MergeKey("ip"),
        "topologySpreadConstraints" => ListStrategy::MergeKey("topologyKey"),
        "conditions" => ListStrategy::MergeKey("type"),
        "addresses" if parent == "status" => ListStrategy::MergeKey("type"),
        "ownerReferences" => ListStrategy::MergeKey("uid"),
        "secrets" if parent.is_empty() => ListStrategy::MergeKey("name"),
        "finalizers" if parent == "metadata" || parent == "spec" => ListStrategy::MergePrimitives,
        _ => ListStrategy::Replace,
    }
}

/// Applies a JSON patch.
pub fn json_patch(doc: &mut Value, patch: &Value) -> Result<(), ApiError> {
    let ops: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    json_patch::patch(doc, &ops).map_err(|e| ApiError {
        code: 422,
        reason: "Invalid",
        ..ApiError::bad_request(format!(
            "the server rejected our request due to an error in our request: {e}"
        ))
    })
}

/// Applies a JSON merge patch.
pub fn merge_patch(doc: &mut Value, patch: &Value) -> Result<(), ApiError> {
    if !patch.is_object() {
        return Err(ApiError::bad_request(
            "json: cannot unmarshal into Go value of type map[string]interface {}",
        ));
    }
    json_patch::merge(doc, patch);
    Ok(())
}

/// Applies a strategic merge patch with the built-in types' list strategies.
pub fn strategic_merge_patch(doc: &mut Value, patch: &Value) -> Result<(), ApiError> {
    strategic_merge_with(doc, patch, &builtin_list_strategy)
}

type StrategyFn<'a> = &'a dyn Fn(&[String], &str) -> ListStrategy;

pub fn strategic_merge_with(
    doc: &mut Value,
    patch: &Value,
    strategy: StrategyFn,
) -> Result<(), ApiError> {
    if !patch.is_object() {
        return Err(ApiError::bad_request(
            "unable to find api field in struct: the patch is not a JSON object",
        ));
    }
    let mut path = vec![];
    if merge_map(doc, patch, &mut path, strategy)? == Outcome::Delete {
        *doc = Value::Object(Map::new());
    }
    Ok(())
}

#[derive(PartialEq, Eq)]
enum Outcome {
    Keep,
    Delete,
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

fn merge_map(
    doc: &mut Value,
    patch: &Value,
    path: &mut Vec<String>,
    strategy: StrategyFn,
) -> Result<Outcome, ApiError> {
    let pm = patch.as_object().expect("object patch");
    match pm.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            *doc = strip_directives(patch);
            return Ok(Outcome::Keep);
        }
        Some("delete") => return Ok(Outcome::Delete),
        Some("merge") | None => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Unknown patch type: {other:?}"
            )))
        }
    }
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    if let Some(keep) = pm.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        let dm = doc.as_object_mut().expect("object");
        dm.retain(|k, _| keep.contains(&k.as_str()));
    }
    let mut orders = vec![];
    for (k, v) in pm {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            let dm = doc.as_object_mut().expect("object");
            if let (Some(Value::Array(cur)), Some(del)) = (dm.get_mut(field), v.as_array()) {
                cur.retain(|x| !del.contains(x));
            }
            continue;
        }
        if let Some(field) = k.strip_prefix("$setElementOrder/") {
            orders.push((field.to_string(), v.clone()));
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        let dm = doc.as_object_mut().expect("object");
        match v {
            Value::Null => {
                dm.remove(k);
            }
            Value::Object(_) => {
                let slot = dm.entry(k.clone()).or_insert(Value::Null);
                path.push(k.clone());
                let out = merge_map(slot, v, path, strategy)?;
                path.pop();
                if out == Outcome::Delete {
                    dm.remove(k);
                }
            }
            Value::Array(items) => {
                let slot = dm.entry(k.clone()).or_insert(Value::Null);
                let s = strategy(path, k);
                path.push(k.clone());
                merge_list(slot, items, s, path, strategy)?;
                path.pop();
            }
            other => {
                dm.insert(k.clone(), other.clone());
            }
        }
    }
    for (field, order) in orders {
        let s = strategy(path, &field);
        if let (Some(Value::Array(cur)), Some(order)) = (doc.get_mut(&field), order.as_array()) {
            reorder(cur, order, s);
        }
    }
    Ok(Outcome::Keep)
}

fn key_of(v: &Value, s: ListStrategy) -> Option<&Value> {
    match s {
        ListStrategy::MergeKey(k) => v.get(k),
        ListStrategy::MergePrimitives => Some(v),
        ListStrategy::Replace => None,
    }
}

fn reorder(cur: &mut Vec<Value>, order: &[Value], s: ListStrategy) {
    if s == ListStrategy::Replace {
        return;
    }
    let mut out = Vec::with_capacity(cur.len());
    for o in order {
        let want = key_of(o, s);
        if let Some(i) = cur
            .iter()
            .position(|c| key_of(c, s) == want && want.is_some())
        {
            out.push(cur.remove(i));
        }
    }
    out.append(cur);
    *cur = out;
}

fn merge_list(
    doc: &mut Value,
    items: &[Value],
    s: ListStrategy,
    path: &mut Vec<String>,
    strategy: StrategyFn,
) -> Result<(), ApiError> {
    let replace_all = items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"));
    if s == ListStrategy::Replace || replace_all || !doc.is_array() {
        let kept: Vec<Value> = items
            .iter()
            .filter(|i| i.get("$patch").is_none())
            .map(strip_directives)
            .collect();
        *doc = Value::Array(kept);
        return Ok(());
    }
    let cur = doc.as_array_mut().expect("array");
    for item in items {
        match s {
            ListStrategy::MergePrimitives => {
                if !cur.contains(item) {
                    cur.push(item.clone());
                }
            }
            ListStrategy::MergeKey(key) => {
                let Some(kv) = item.get(key) else {
                    return Err(ApiError::bad_request(format!(
                        "map: {item} does not contain declared merge key: {key}"
                    )));
                };
                let pos = cur.iter().position(|c| c.get(key) == Some(kv));
                if item.get("$patch").and_then(Value::as_str) == Some("delete") {
                    cur.retain(|c| c.get(key) != Some(kv));
                    continue;
                }
                match pos {
                    Some(i) => {
                        if merge_map(&mut cur[i], item, path, strategy)? == Outcome::Delete {
                            cur.remove(i);
                        }
                    }
                    None => cur.push(strip_directives(item)),
                }
            }
            ListStrategy::Replace => unreachable!(),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containers_merge_by_name() {
        let mut d = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
            {"name": "b", "image": "b:1"}]}}}});
        let p = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "a:2", "env": [{"name": "Y", "value": "2"}]}]}}}});
        strategic_merge_patch(&mut d, &p).unwrap();
        let cs = &d["spec"]["template"]["spec"]["containers"];
        assert_eq!(cs.as_array().unwrap().len(), 2);
        assert_eq!(cs[0]["image"], "a:2");
        assert_eq!(cs[0]["env"].as_array().unwrap().len(), 2);
        assert_eq!(cs[1]["image"], "b:1");
    }

    #[test]
    fn directives() {
        let mut d = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}],
            "args": ["x"]}, "metadata": {"finalizers": ["f1"], "labels": {"a": "1", "b": "2"}}});
        let p = json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}], "args": ["y"]},
            "metadata": {"finalizers": ["f2"], "labels": {"a": null}}});
        strategic_merge_patch(&mut d, &p).unwrap();
        assert_eq!(d["spec"]["containers"], json!([{"name": "b"}]));
        assert_eq!(d["spec"]["args"], json!(["y"]));
        assert_eq!(d["metadata"]["finalizers"], json!(["f1", "f2"]));
        assert_eq!(d["metadata"]["labels"], json!({"b": "2"}));
        let p = json!({"$deleteFromPrimitiveList/finalizers": ["f1"]});
        let mut m = d["metadata"].clone();
        strategic_merge_patch(&mut m, &p).unwrap();
        assert_eq!(m["finalizers"], json!(["f2"]));
    }

    #[test]
    fn json_and_merge() {
        let mut d = json!({"a": 1, "b": {"c": 2}});
        json_patch(
            &mut d,
            &json!([{"op": "replace", "path": "/a", "value": 5}]),
        )
        .unwrap();
        assert_eq!(d["a"], 5);
        merge_patch(&mut d, &json!({"b": {"c": null, "d": 1}})).unwrap();
        assert_eq!(d["b"], json!({"d": 1}));
        assert!(json_patch(&mut d, &json!([{"op": "remove", "path": "/zz"}])).is_err());
    }
}
