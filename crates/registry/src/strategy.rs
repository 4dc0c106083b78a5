//! What makes one resource different from another: its names, defaulting, validation, what create and
//! update may change, status/spec separation, selectable fields and table columns. Everything else
//! (the verbs and their edge cases) is `GenericStore`'s.

use apimachinery::FieldError;
use serde_json::Value;

/// The static description of a resource, used by the store (keys), discovery and routing.
#[derive(Clone, Debug)]
pub struct ResourceInfo {
    pub group: &'static str,
    pub version: &'static str,
    /// The plural, lower-case resource name used in URLs (`pods`).
    pub resource: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Subresources served by the generic store: `status`, `scale`.
    pub subresources: &'static [&'static str],
    /// The key prefix under `/registry/` (upstream's: `services/specs`, `minions`, ...).
    pub etcd_prefix: &'static str,
}

impl ResourceInfo {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn has_status(&self) -> bool {
        self.subresources.contains(&"status")
    }

    pub fn has_scale(&self) -> bool {
        self.subresources.contains(&"scale")
    }
}

/// One column of the server-side table, as `metav1.TableColumnDefinition`.
#[derive(Clone, Debug)]
pub struct Column {
    pub name: &'static str,
    pub type_: &'static str,
    pub format: &'static str,
    pub description: &'static str,
    /// 0: always shown; 1: only with `-o wide`.
    pub priority: u8,
}

pub const fn col(name: &'static str, type_: &'static str, description: &'static str) -> Column {
    Column {
        name,
        type_,
        format: "",
        description,
        priority: 0,
    }
}

pub const fn wide(name: &'static str, type_: &'static str, description: &'static str) -> Column {
    Column {
        name,
        type_,
        format: "",
        description,
        priority: 1,
    }
}

pub const NAME_COLUMN: Column = Column {
    name: "Name",
    type_: "string",
    format: "name",
    description: "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
    priority: 0,
};

pub const AGE_COLUMN: Column = Column {
    name: "Age",
    type_: "string",
    format: "",
    description: "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
    priority: 0,
};

/// What a graceful delete should do with an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteMode {
    /// Remove it from storage now.
    Now,
    /// Set deletionTimestamp and keep it, for this many seconds of grace (pods on a node).
    Graceful(i64),
}

pub trait Strategy: Send + Sync + 'static {
    fn info(&self) -> &'static ResourceInfo;

    /// The verbs served (discovery); most resources serve them all.
    fn verbs(&self) -> &'static [&'static str] {
        &[
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }

    /// Whether `metadata.generation` is kept (set to 1 on create, bumped when the spec changes).
    fn has_generation(&self) -> bool {
        false
    }

    /// Whether PUT of a missing object creates it.
    fn allow_create_on_update(&self) -> bool {
        false
    }

    /// Fills in defaults, as upstream's defaulting functions. Runs on create and update.
    fn default(&self, _obj: &mut Value) {}

    /// Clears what a client may not set on create (e.g. status).
    fn prepare_for_create(&self, obj: &mut Value) {
        if self.info().has_status() {
            if let Some(m) = obj.as_object_mut() {
                m.remove("status");
            }
        }
    }

    /// Sets status (or anything else create cannot set) after prepare, e.g. a pod's Pending phase.
    fn initial_status(&self, _obj: &mut Value) {}

    /// Copies from `old` what an update of the main resource may not change (status, when the
    /// resource has a status subresource).
    fn prepare_for_update(&self, new: &mut Value, old: &Value) {
        if self.info().has_status() {
            if let Some(m) = new.as_object_mut() {
                match old.get("status") {
                    Some(s) => {
                        m.insert("status".into(), s.clone());
                    }
                    None => {
                        m.remove("status");
                    }
                }
            }
        }
    }

    /// The checks upstream's `Validate` does; field paths in the errors.
    fn validate(&self, _obj: &Value) -> Vec<FieldError> {
        vec![]
    }

    /// Extra checks on update (immutable fields); `validate` runs too.
    fn validate_update(&self, _new: &Value, _old: &Value) -> Vec<FieldError> {
        vec![]
    }

    /// Converts the object to its typed form and back: an error when the JSON has a wrong type
    /// somewhere; the fields that did not survive the trip (unknown fields) otherwise.
    fn round_trip(&self, obj: &Value) -> Result<Vec<String>, String>;

    /// Selectable fields beyond `metadata.name` / `metadata.namespace`, with their values.
    fn fields(&self, _obj: &Value) -> Vec<(&'static str, String)> {
        vec![]
    }

    /// Names of the selectable fields beyond `metadata.name` / `metadata.namespace`.
    fn field_names(&self) -> &'static [&'static str] {
        &[]
    }

    /// Table columns (after Name, before Age unless the strategy places Age itself).
    fn columns(&self) -> Vec<Column> {
        vec![NAME_COLUMN, AGE_COLUMN]
    }

    /// The cells of one row, matching `columns()`.
    fn row(&self, obj: &Value) -> Vec<Value> {
        vec![
            Value::String(apimachinery::meta::name(obj).into()),
            age_cell(obj),
        ]
    }

    /// How deleting this object proceeds (pods with a node are deleted gracefully).
    fn delete_mode(&self, _obj: &Value, _grace: Option<i64>) -> DeleteMode {
        DeleteMode::Now
    }

    /// Converts an object of this version to the stored version (for resources served in several
    /// versions from one storage, e.g. autoscaling/v1 HPAs stored as v2).
    fn version_to_storage(&self, obj: Value) -> Value {
        obj
    }

    /// Converts a stored object to this version.
    fn storage_to_version(&self, obj: Value) -> Value {
        obj
    }

    /// Whether an object being deleted has no finalizer left (then it is removed).
    fn finalized(&self, obj: &Value) -> bool {
        apimachinery::meta::finalizers(obj).is_empty()
    }

    /// For the scale subresource: the label selector string of the scaled pods.
    fn scale_selector(&self, _obj: &Value) -> String {
        String::new()
    }
}

/// The `Age` cell of an object.
pub fn age_cell(obj: &Value) -> Value {
    Value::String(apimachinery::time::age(
        obj.get("metadata")
            .and_then(|m| m.get("creationTimestamp"))
            .and_then(Value::as_str),
    ))
}

pub fn name_cell(obj: &Value) -> Value {
    Value::String(apimachinery::meta::name(obj).into())
}

/// A JSON string at `path` (dot separated), "" when absent.
pub fn str_at<'a>(obj: &'a Value, path: &str) -> &'a str {
    at(obj, path).and_then(Value::as_str).unwrap_or("")
}

pub fn at<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(obj, |v, k| v.get(k))
}

pub fn int_at(obj: &Value, path: &str) -> i64 {
    at(obj, path).and_then(Value::as_i64).unwrap_or(0)
}

/// Sets `path` (dot separated) to `v` when absent or null, creating objects on the way.
pub fn default_at(obj: &mut Value, path: &str, v: Value) {
    let mut cur = obj;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, p) in parts.iter().enumerate() {
        if !cur.is_object() {
            *cur = Value::Object(Default::default());
        }
        let m = cur.as_object_mut().expect("object");
        if i == parts.len() - 1 {
            let slot = m.entry(p.to_string()).or_insert(Value::Null);
            if slot.is_null() {
                *slot = v;
            }
            return;
        }
        cur = m.entry(p.to_string()).or_insert(Value::Null);
    }
}

/// The typed round trip of `round_trip` for a k8s-openapi type.
pub fn typed_round_trip<T>(obj: &Value) -> Result<Vec<String>, String>
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    let typed: T = serde_json::from_value(obj.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    let mut unknown = vec![];
    missing_fields(obj, &back, &mut String::new(), &mut unknown);
    Ok(unknown)
}

fn missing_fields(orig: &Value, back: &Value, path: &mut String, out: &mut Vec<String>) {
    match (orig, back) {
        (Value::Object(o), Value::Object(b)) => {
            for (k, v) in o {
                if v.is_null() {
                    continue;
                }
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                match b.get(k) {
                    Some(bv) => missing_fields(v, bv, path, out),
                    None if k == "apiVersion" || k == "kind" => {}
                    None => {
                        let empty = matches!(v, Value::Object(m) if m.is_empty())
                            || matches!(v, Value::Array(a) if a.is_empty());
                        if !empty {
                            out.push(path.clone());
                        }
                    }
                }
                path.truncate(len);
            }
        }
        (Value::Array(o), Value::Array(b)) => {
            for (i, (ov, bv)) in o.iter().zip(b.iter()).enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                missing_fields(ov, bv, path, out);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_paths() {
        let mut o = json!({"spec": {}});
        default_at(&mut o, "spec.replicas", json!(1));
        default_at(&mut o, "spec.strategy.type", json!("RollingUpdate"));
        default_at(&mut o, "spec.replicas", json!(5));
        assert_eq!(
            o,
            json!({"spec": {"replicas": 1, "strategy": {"type": "RollingUpdate"}}})
        );
        assert_eq!(int_at(&o, "spec.replicas"), 1);
        assert_eq!(str_at(&o, "spec.strategy.type"), "RollingUpdate");
    }

    #[test]
    fn round_trip_finds_unknown_fields() {
        use k8s_openapi::api::core::v1::ConfigMap;
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "bogus": 1},
            "data": {"k": "v"}, "extra": true});
        let u = typed_round_trip::<ConfigMap>(&cm).unwrap();
        assert_eq!(u, vec!["extra".to_string(), "metadata.bogus".to_string()]);
        assert!(typed_round_trip::<ConfigMap>(&json!({"data": {"k": 5}})).is_err());
    }
}
