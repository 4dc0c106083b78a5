//! What the workload resources (deployments, replicasets, ...) share: the pod template checks and
//! the selector / containers / images cells.

use apimachinery::{FieldError, LabelSelector};
use serde_json::Value;

/// spec.selector required and non-empty, matching spec.template.metadata.labels; the template's
/// pod spec valid.
pub fn validate_template(obj: &Value) -> Vec<FieldError> {
    let mut errs = vec![];
    let sel = &obj["spec"]["selector"];
    let labels = apimachinery::meta::string_map(obj["spec"]["template"]["metadata"].get("labels"));
    match LabelSelector::from_api(sel) {
        Ok(None) => errs.push(FieldError::required("spec.selector", "")),
        Ok(Some(s)) if s.is_empty() => errs.push(FieldError::invalid(
            "spec.selector",
            sel,
            "empty selector is invalid for deployment",
        )),
        Ok(Some(s)) => {
            if !s.matches(&labels) {
                let shown: Vec<String> =
                    labels.iter().map(|(k, v)| format!("{k:?}:{v:?}")).collect();
                errs.push(FieldError {
                    reason: "FieldValueInvalid",
                    field: "spec.template.metadata.labels".into(),
                    message: format!(
                        "Invalid value: map[string]string{{{}}}: `selector` does not match template `labels`",
                        shown.join(", ")
                    ),
                });
            }
        }
        Err(e) => errs.push(FieldError::invalid("spec.selector", sel, &e)),
    }
    errs.extend(super::pods::validate_pod_spec(
        &obj["spec"]["template"]["spec"],
        "spec.template.spec",
    ));
    errs
}

/// A `metav1.LabelSelector` in the string form kubectl shows (`app=web,tier in (a,b)`).
pub fn selector_string(sel: &Value) -> String {
    let mut parts = vec![];
    for (k, v) in apimachinery::meta::string_map(sel.get("matchLabels")) {
        parts.push(format!("{k}={v}"));
    }
    for e in sel["matchExpressions"].as_array().into_iter().flatten() {
        let key = e["key"].as_str().unwrap_or("");
        let vals: Vec<&str> = e["values"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        parts.push(match e["operator"].as_str().unwrap_or("") {
            "In" => format!("{key} in ({})", vals.join(",")),
            "NotIn" => format!("{key} notin ({})", vals.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            _ => continue,
        });
    }
    if parts.is_empty() {
        return "<none>".into();
    }
    parts.join(",")
}

/// The template's container names and images, comma separated.
pub fn images_and_containers(obj: &Value) -> (String, String) {
    let cs = obj["spec"]["template"]["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = cs.iter().filter_map(|c| c["name"].as_str()).collect();
    let images: Vec<&str> = cs.iter().filter_map(|c| c["image"].as_str()).collect();
    (names.join(","), images.join(","))
}

/// spec.selector of a workload cannot change.
pub fn selector_immutable(new: &Value, old: &Value) -> Vec<FieldError> {
    if new["spec"]["selector"] != old["spec"]["selector"] {
        return vec![FieldError::invalid(
            "spec.selector",
            &new["spec"]["selector"],
            "field is immutable",
        )];
    }
    vec![]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selector_strings() {
        assert_eq!(
            selector_string(&json!({"matchLabels": {"app": "web"}})),
            "app=web"
        );
        assert_eq!(selector_string(&json!({})), "<none>");
    }
}
