//! ObjectMeta helpers on `serde_json::Value`: objects are kept as JSON inside the server (k8s-openapi's
//! typed structs refuse partial objects), so reading and writing metadata happens here.

use serde_json::{Map, Value};

use crate::status::FieldError;

/// `obj.metadata`, created as an empty object when absent or not an object.
pub fn metadata_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    let m = obj.as_object_mut().expect("object");
    let md = m
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !md.is_object() {
        *md = Value::Object(Map::new());
    }
    md.as_object_mut().expect("object")
}

/// A string field of metadata, "" when absent.
pub fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub fn name(obj: &Value) -> &str {
    meta_str(obj, "name")
}

pub fn namespace(obj: &Value) -> &str {
    meta_str(obj, "namespace")
}

pub fn uid(obj: &Value) -> &str {
    meta_str(obj, "uid")
}

pub fn resource_version(obj: &Value) -> &str {
    meta_str(obj, "resourceVersion")
}

pub fn set_meta_str(obj: &mut Value, field: &str, value: &str) {
    metadata_mut(obj).insert(field.into(), Value::String(value.into()));
}

pub fn remove_meta(obj: &mut Value, field: &str) {
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove(field);
    }
}

pub fn set_resource_version(obj: &mut Value, rv: i64) {
    set_meta_str(obj, "resourceVersion", &rv.to_string());
}

/// The labels as (key, value) pairs; non-string values are ignored.
pub fn labels(obj: &Value) -> Vec<(&str, &str)> {
    string_map(obj.get("metadata").and_then(|m| m.get("labels")))
}

pub fn annotations(obj: &Value) -> Vec<(&str, &str)> {
    string_map(obj.get("metadata").and_then(|m| m.get("annotations")))
}

pub fn label<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.get("metadata")?.get("labels")?.get(key)?.as_str()
}

pub fn string_map(v: Option<&Value>) -> Vec<(&str, &str)> {
    match v.and_then(Value::as_object) {
        Some(m) => m
            .iter()
            .filter_map(|(k, v)| v.as_str().map(|s| (k.as_str(), s)))
            .collect(),
        None => vec![],
    }
}

pub fn generation(obj: &Value) -> i64 {
    obj.get("metadata")
        .and_then(|m| m.get("generation"))
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

pub fn deletion_timestamp(obj: &Value) -> Option<&str> {
    obj.get("metadata")?.get("deletionTimestamp")?.as_str()
}

pub fn finalizers(obj: &Value) -> Vec<&str> {
    obj.get("metadata")
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// A new random UID in upstream's form (a UUID v4).
pub fn new_uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Now, as RFC 3339 with second precision in UTC (metav1.Time).
pub fn now_rfc3339() -> String {
    format_time(jiff::Timestamp::now())
}

pub fn format_time(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Now with microseconds (metav1.MicroTime, used by events and leases).
pub fn now_micro() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S.%6fZ")
        .to_string()
}

pub fn parse_time(s: &str) -> Option<jiff::Timestamp> {
    s.parse().ok()
}

/// `generateName` + 5 random characters from upstream's alphabet (no vowels, no confusable digits).
pub fn generate_name(base: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let base = if base.len() > 58 { &base[..58] } else { base };
    let mut out = base.to_string();
    let bytes = uuid::Uuid::new_v4().into_bytes();
    for b in bytes.iter().take(5) {
        out.push(ALPHABET[*b as usize % ALPHABET.len()] as char);
    }
    out
}

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Errors for a DNS-1123 label (namespaces, services): empty when valid.
pub fn validate_dns_label(field: &str, s: &str) -> Vec<FieldError> {
    let mut errs = vec![];
    if s.len() > 63 {
        errs.push(FieldError::invalid(
            field,
            &Value::String(s.into()),
            "must be no more than 63 characters",
        ));
    }
    if !is_label(s) {
        errs.push(FieldError::invalid(
            field,
            &Value::String(s.into()),
            DNS1123_LABEL_MSG,
        ));
    }
    errs
}

/// Errors for a DNS-1123 subdomain (most object names): empty when valid.
pub fn validate_dns_subdomain(field: &str, s: &str) -> Vec<FieldError> {
    let mut errs = vec![];
    if s.len() > 253 {
        errs.push(FieldError::invalid(
            field,
            &Value::String(s.into()),
            "must be no more than 253 characters",
        ));
    }
    if s.is_empty() || !s.split('.').all(is_label) {
        errs.push(FieldError::invalid(
            field,
            &Value::String(s.into()),
            DNS1123_SUBDOMAIN_MSG,
        ));
    }
    errs
}

/// A qualified name (label keys, annotation keys): `[prefix/]name`.
pub fn validate_qualified_name(field: &str, key: &str) -> Vec<FieldError> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let mut errs = vec![];
    if let Some(p) = prefix {
        if p.is_empty() {
            errs.push(FieldError::invalid(
                field,
                &Value::String(key.into()),
                "prefix part must be non-empty",
            ));
        } else {
            errs.extend(validate_dns_subdomain(field, p));
        }
    }
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
    if !ok {
        errs.push(FieldError::invalid(field, &Value::String(key.into()), "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"));
    }
    errs
}

/// A label value: empty, or up to 63 of `[-A-Za-z0-9_.]` starting and ending alphanumeric.
pub fn validate_label_value(field: &str, v: &str) -> Vec<FieldError> {
    if v.is_empty() {
        return vec![];
    }
    let ok = v.len() <= 63
        && v.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.')
        && v.as_bytes()[0].is_ascii_alphanumeric()
        && v.as_bytes()[v.len() - 1].is_ascii_alphanumeric();
    if ok {
        vec![]
    } else {
        vec![FieldError::invalid(field, &Value::String(v.into()), "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")]
    }
}

/// Checks common to every object's metadata: labels and annotations keys, label values, types.
pub fn validate_object_meta(obj: &Value) -> Vec<FieldError> {
    let mut errs = vec![];
    let Some(md) = obj.get("metadata") else {
        return errs;
    };
    for (field, is_labels) in [("labels", true), ("annotations", false)] {
        match md.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    let path = format!("metadata.{field}");
                    errs.extend(validate_qualified_name(&path, k));
                    match v {
                        Value::String(s) if is_labels => {
                            errs.extend(validate_label_value(&format!("{path}.{k}"), s))
                        }
                        Value::String(_) => {}
                        other => errs.push(FieldError::invalid(
                            format!("{path}.{k}"),
                            other,
                            "must be a string",
                        )),
                    }
                }
            }
            Some(other) => errs.push(FieldError::invalid(
                format!("metadata.{field}"),
                other,
                "must be an object",
            )),
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn helpers_read_and_write() {
        let mut o = json!({"metadata": {"name": "a", "labels": {"app": "x"}}});
        assert_eq!(name(&o), "a");
        assert_eq!(namespace(&o), "");
        set_resource_version(&mut o, 7);
        assert_eq!(resource_version(&o), "7");
        assert_eq!(labels(&o), vec![("app", "x")]);
        let mut e = json!(null);
        set_meta_str(&mut e, "name", "b");
        assert_eq!(name(&e), "b");
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_dns_subdomain("metadata.name", "my.app-1").is_empty());
        assert!(!validate_dns_subdomain("metadata.name", "My_App").is_empty());
        assert!(validate_dns_label("metadata.name", "kube-system").is_empty());
        assert!(!validate_dns_label("metadata.name", "a.b").is_empty());
        assert!(validate_qualified_name("k", "app.kubernetes.io/name").is_empty());
        assert!(!validate_qualified_name("k", "-bad").is_empty());
        let g = generate_name("web-");
        assert_eq!(g.len(), 9);
        assert!(g.starts_with("web-"));
    }

    #[test]
    fn time_format() {
        let t: jiff::Timestamp = "2024-05-01T10:11:12.5Z".parse().unwrap();
        assert_eq!(format_time(t), "2024-05-01T10:11:12Z");
    }
}
