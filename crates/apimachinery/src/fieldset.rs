//! Field sets for managed fields (server-side apply): the leaf paths an object sets, in upstream's
//! FieldsV1 form (`{"f:spec":{"f:containers":{"k:{\"name\":\"c\"}":{".":{},"f:image":{}}}}}`).
//! Lists merge by the built-in types' keys (`patch::builtin_list_strategy`); atomic lists are leaves.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::patch::{builtin_list_strategy, ListStrategy};

/// One step of a path: a field, a list element by its key fields, or a set element by value.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Seg {
    F(String),
    /// The JSON of the element's key fields, e.g. `{"name":"c"}`.
    K(String),
    /// The JSON of a set member, e.g. `"finalizer.example.com"`.
    V(String),
}

pub type Path = Vec<Seg>;
pub type FieldSet = BTreeSet<Path>;

/// Fields that are not owned by anyone: identity and server-maintained metadata.
fn skipped(path: &[String], k: &str) -> bool {
    if path.is_empty() {
        return matches!(k, "apiVersion" | "kind" | "status");
    }
    path.len() == 1
        && path[0] == "metadata"
        && matches!(
            k,
            "name"
                | "namespace"
                | "uid"
                | "resourceVersion"
                | "generation"
                | "creationTimestamp"
                | "deletionTimestamp"
                | "deletionGracePeriodSeconds"
                | "managedFields"
                | "selfLink"
        )
}

/// The leaf paths `obj` sets (status and identity excluded).
pub fn field_set(obj: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    walk(obj, &mut vec![], &mut vec![], &mut out);
    out
}

fn walk(v: &Value, names: &mut Vec<String>, path: &mut Path, out: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                if skipped(names, k) || child.is_null() {
                    continue;
                }
                path.push(Seg::F(k.clone()));
                match child {
                    Value::Array(items) => list(items, names, k, path, out),
                    _ => {
                        names.push(k.clone());
                        walk(child, names, path, out);
                        names.pop();
                    }
                }
                path.pop();
            }
        }
        _ => {
            out.insert(path.clone());
        }
    }
}

fn list(
    items: &[Value],
    names: &mut Vec<String>,
    field: &str,
    path: &mut Path,
    out: &mut FieldSet,
) {
    match builtin_list_strategy(names, field) {
        ListStrategy::MergeKey(key) => {
            names.push(field.to_string());
            for it in items {
                let Some(kv) = it.get(key) else { continue };
                let mut km = Map::new();
                km.insert(key.to_string(), kv.clone());
                path.push(Seg::K(Value::Object(km).to_string()));
                out.insert(path.clone());
                walk(it, names, path, out);
                path.pop();
            }
            names.pop();
        }
        ListStrategy::MergePrimitives => {
            for it in items {
                path.push(Seg::V(it.to_string()));
                out.insert(path.clone());
                path.pop();
            }
        }
        ListStrategy::Replace => {
            out.insert(path.clone());
        }
    }
}

/// The FieldsV1 JSON of a set.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for p in set {
        let mut cur = &mut root;
        for (i, s) in p.iter().enumerate() {
            let k = match s {
                Seg::F(f) => format!("f:{f}"),
                Seg::K(j) => format!("k:{j}"),
                Seg::V(j) => format!("v:{j}"),
            };
            let e = cur.entry(k).or_insert_with(|| Value::Object(Map::new()));
            let m = e.as_object_mut().expect("object");
            let last = i == p.len() - 1;
            if last
                && set
                    .range(p.clone()..)
                    .nth(1)
                    .is_some_and(|n| n.starts_with(p))
            {
                m.insert(".".into(), Value::Object(Map::new()));
            }
            cur = m;
        }
    }
    Value::Object(root)
}

/// A set from FieldsV1 JSON.
pub fn from_fields_v1(v: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    fn rec(v: &Value, path: &mut Path, out: &mut FieldSet) {
        let Some(m) = v.as_object() else { return };
        if (m.is_empty() || m.contains_key(".")) && !path.is_empty() {
            out.insert(path.clone());
        }
        for (k, child) in m {
            let seg = if let Some(f) = k.strip_prefix("f:") {
                Seg::F(f.into())
            } else if let Some(j) = k.strip_prefix("k:") {
                Seg::K(j.into())
            } else if let Some(j) = k.strip_prefix("v:") {
                Seg::V(j.into())
            } else {
                continue;
            };
            path.push(seg);
            rec(child, path, out);
            path.pop();
        }
    }
    rec(v, &mut vec![], &mut out);
    out
}

/// The value at a path, if the object has it.
pub fn get<'a>(obj: &'a Value, path: &[Seg]) -> Option<&'a Value> {
    let mut cur = obj;
    for s in path {
        cur = match s {
            Seg::F(f) => cur.get(f)?,
            Seg::K(j) => {
                let want: Value = serde_json::from_str(j).ok()?;
                let want = want.as_object()?;
                cur.as_array()?
                    .iter()
                    .find(|it| want.iter().all(|(k, v)| it.get(k) == Some(v)))?
            }
            Seg::V(j) => {
                let want: Value = serde_json::from_str(j).ok()?;
                cur.as_array()?.iter().find(|it| **it == want)?
            }
        };
    }
    Some(cur)
}

/// Removes the value at a path (a field, list element or set member); false when absent.
pub fn remove(obj: &mut Value, path: &[Seg]) -> bool {
    let Some((last, parent)) = path.split_last() else {
        return false;
    };
    let mut cur = obj;
    for s in parent {
        let next = match s {
            Seg::F(f) => cur.get_mut(f),
            Seg::K(_) | Seg::V(_) => {
                let idx = index_of(cur, s);
                match (idx, cur.as_array_mut()) {
                    (Some(i), Some(a)) => a.get_mut(i),
                    _ => None,
                }
            }
        };
        match next {
            Some(n) => cur = n,
            None => return false,
        }
    }
    match last {
        Seg::F(f) => cur.as_object_mut().and_then(|m| m.remove(f)).is_some(),
        s => match (index_of(cur, s), cur.as_array_mut()) {
            (Some(i), Some(a)) => {
                a.remove(i);
                true
            }
            _ => false,
        },
    }
}

fn index_of(list: &Value, s: &Seg) -> Option<usize> {
    let a = list.as_array()?;
    match s {
        Seg::K(j) => {
            let want: Value = serde_json::from_str(j).ok()?;
            let want = want.as_object()?;
            a.iter()
                .position(|it| want.iter().all(|(k, v)| it.get(k) == Some(v)))
        }
        Seg::V(j) => {
            let want: Value = serde_json::from_str(j).ok()?;
            a.iter().position(|it| *it == want)
        }
        Seg::F(_) => None,
    }
}

/// A path as upstream prints it in conflicts: `.spec.containers[name="c"].image`.
pub fn display(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::F(f) => {
                s.push('.');
                s.push_str(f);
            }
            Seg::K(j) => {
                let v: Value = serde_json::from_str(j).unwrap_or(Value::Null);
                let parts: Vec<String> = v
                    .as_object()
                    .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
                    .unwrap_or_default();
                s.push_str(&format!("[{}]", parts.join(",")));
            }
            Seg::V(j) => s.push_str(&format!("[{j}]")),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sets_round_trip_through_fields_v1() {
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "c", "image": "i", "args": ["a"]}]}}}});
        let s = field_set(&d);
        let f = to_fields_v1(&s);
        assert_eq!(
            f,
            json!({"f:metadata": {"f:labels": {"f:app": {}}}, "f:spec": {"f:replicas": {},
                "f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {".": {}, "f:args": {}, "f:image": {}, "f:name": {}}}}}}})
        );
        assert_eq!(from_fields_v1(&f), s);
        let p: Path = vec![
            Seg::F("spec".into()),
            Seg::F("template".into()),
            Seg::F("spec".into()),
            Seg::F("containers".into()),
            Seg::K("{\"name\":\"c\"}".into()),
            Seg::F("image".into()),
        ];
        assert_eq!(get(&d, &p), Some(&json!("i")));
        assert_eq!(
            display(&p),
            ".spec.template.spec.containers[name=\"c\"].image"
        );
        let mut d2 = d.clone();
        assert!(remove(&mut d2, &p));
        assert!(get(&d2, &p).is_none());
    }
}
