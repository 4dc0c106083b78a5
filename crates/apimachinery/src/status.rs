//! Errors as upstream's `metav1.Status`: the HTTP code, the machine-readable reason, the message kubectl
//! prints after `Error from server (<Reason>):`, and details (group, kind, name, causes).

use serde_json::{json, Value};

/// One field-level cause of an `Invalid` error, as upstream's `field.Error`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Upstream's cause reason: `FieldValueRequired`, `FieldValueInvalid`, ...
    pub reason: &'static str,
    /// The field path, e.g. `metadata.name` or `spec.containers[0].image`.
    pub field: String,
    /// The message without the field prefix, e.g. `Required value: name or generateName is required`.
    pub message: String,
}

impl FieldError {
    pub fn required(field: impl Into<String>, detail: &str) -> Self {
        let message = if detail.is_empty() {
            "Required value".to_string()
        } else {
            format!("Required value: {detail}")
        };
        FieldError {
            reason: "FieldValueRequired",
            field: field.into(),
            message,
        }
    }

    pub fn invalid(field: impl Into<String>, value: &Value, detail: &str) -> Self {
        let shown = match value {
            Value::String(s) => format!("{s:?}"),
            other => other.to_string(),
        };
        let message = if detail.is_empty() {
            format!("Invalid value: {shown}")
        } else {
            format!("Invalid value: {shown}: {detail}")
        };
        FieldError {
            reason: "FieldValueInvalid",
            field: field.into(),
            message,
        }
    }

    pub fn unsupported(field: impl Into<String>, value: &Value, allowed: &[&str]) -> Self {
        let shown = match value {
            Value::String(s) => format!("{s:?}"),
            other => other.to_string(),
        };
        let list: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
        FieldError {
            reason: "FieldValueNotSupported",
            field: field.into(),
            message: format!(
                "Unsupported value: {shown}: supported values: {}",
                list.join(", ")
            ),
        }
    }

    pub fn forbidden(field: impl Into<String>, detail: &str) -> Self {
        FieldError {
            reason: "FieldValueForbidden",
            field: field.into(),
            message: format!("Forbidden: {detail}"),
        }
    }

    pub fn duplicate(field: impl Into<String>, value: &Value) -> Self {
        let shown = match value {
            Value::String(s) => format!("{s:?}"),
            other => other.to_string(),
        };
        FieldError {
            reason: "FieldValueDuplicate",
            field: field.into(),
            message: format!("Duplicate value: {shown}"),
        }
    }

    pub fn immutable(field: impl Into<String>) -> Self {
        FieldError {
            reason: "FieldValueInvalid",
            field: field.into(),
            message: "Invalid value: field is immutable".into(),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// An API error; `to_status()` gives the JSON body, `code` the HTTP status.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub group: String,
    /// The resource (for NotFound, Conflict, ...) or the kind (for Invalid), as upstream.
    pub kind: String,
    pub name: String,
    pub causes: Vec<FieldError>,
    pub retry_after_seconds: Option<u32>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiError {}

/// `resource` or `resource.group` as upstream's `GroupResource.String()`.
pub fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: String) -> Self {
        ApiError {
            code,
            reason,
            message,
            group: String::new(),
            kind: String::new(),
            name: String::new(),
            causes: vec![],
            retry_after_seconds: None,
        }
    }

    fn with_details(mut self, group: &str, kind: &str, name: &str) -> Self {
        self.group = group.into();
        self.kind = kind.into();
        self.name = name.into();
        self
    }

    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        let msg = format!("{} {name:?} not found", qualified(group, resource));
        Self::new(404, "NotFound", msg).with_details(group, resource, name)
    }

    pub fn already_exists(group: &str, resource: &str, name: &str) -> Self {
        let msg = format!("{} {name:?} already exists", qualified(group, resource));
        Self::new(409, "AlreadyExists", msg).with_details(group, resource, name)
    }

    /// The optimistic-concurrency conflict, worded as upstream.
    pub fn conflict_modified(group: &str, resource: &str, name: &str) -> Self {
        Self::conflict(
            group,
            resource,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub fn conflict(group: &str, resource: &str, name: &str, why: &str) -> Self {
        let msg = format!(
            "Operation cannot be fulfilled on {} {name:?}: {why}",
            qualified(group, resource)
        );
        Self::new(409, "Conflict", msg).with_details(group, resource, name)
    }

    /// 422 with causes; `kind` is the Kind (e.g. `ConfigMap`), as upstream's qualified kind.
    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<FieldError>) -> Self {
        let what = if causes.len() == 1 {
            causes[0].to_string()
        } else {
            let all: Vec<String> = causes.iter().map(|c| c.to_string()).collect();
            format!("[{}]", all.join(", "))
        };
        let msg = format!("{} {name:?} is invalid: {what}", qualified(group, kind));
        let mut e = Self::new(422, "Invalid", msg).with_details(group, kind, name);
        e.causes = causes;
        e
    }

    pub fn forbidden(group: &str, resource: &str, name: &str, why: &str) -> Self {
        let msg = format!(
            "{} {name:?} is forbidden: {why}",
            qualified(group, resource)
        );
        Self::new(403, "Forbidden", msg).with_details(group, resource, name)
    }

    /// 401: the request carried no credentials the server accepts (upstream's body says only
    /// "Unauthorized").
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized".into())
    }

    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", msg.into())
    }

    /// 410 with reason `Expired` (too old resource version, expired continue token).
    pub fn expired(msg: impl Into<String>) -> Self {
        Self::new(410, "Expired", msg.into())
    }

    pub fn gone(msg: impl Into<String>) -> Self {
        Self::new(410, "Gone", msg.into())
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource".into(),
        )
    }

    /// 404 for a path the server does not serve at all.
    pub fn path_not_found() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource".into(),
        )
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {content_type:?})"),
        )
    }

    pub fn not_acceptable(msg: impl Into<String>) -> Self {
        Self::new(406, "NotAcceptable", msg.into())
    }

    pub fn too_large() -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            "Request entity too large: limit is 3145728".into(),
        )
    }

    pub fn internal(msg: impl Into<String>) -> Self {
        let m = msg.into();
        let mut e = Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {m}"),
        );
        e.causes = vec![FieldError {
            reason: "",
            field: String::new(),
            message: m,
        }];
        e
    }

    pub fn timeout(msg: impl Into<String>) -> Self {
        let mut e = Self::new(504, "Timeout", msg.into());
        e.retry_after_seconds = Some(1);
        e
    }

    pub fn unavailable(msg: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", msg.into())
    }

    /// The `metav1.Status` JSON body.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        let mut details = serde_json::Map::new();
        if !self.name.is_empty() {
            details.insert("name".into(), json!(self.name));
        }
        if !self.group.is_empty() {
            details.insert("group".into(), json!(self.group));
        }
        if !self.kind.is_empty() {
            details.insert("kind".into(), json!(self.kind));
        }
        if !self.causes.is_empty() {
            let causes: Vec<Value> = self
                .causes
                .iter()
                .map(|c| {
                    let mut m = serde_json::Map::new();
                    if !c.reason.is_empty() {
                        m.insert("reason".into(), json!(c.reason));
                    }
                    m.insert("message".into(), json!(c.message));
                    if !c.field.is_empty() {
                        m.insert("field".into(), json!(c.field));
                    }
                    Value::Object(m)
                })
                .collect();
            details.insert("causes".into(), Value::Array(causes));
        }
        if let Some(r) = self.retry_after_seconds {
            details.insert("retryAfterSeconds".into(), json!(r));
        }
        if !details.is_empty() {
            s["details"] = Value::Object(details);
        }
        s
    }
}

/// The `Success` Status that DELETE answers with when the object is gone at once.
pub fn success_status(group: &str, resource: &str, name: &str, uid: &str) -> Value {
    let mut details = json!({"name": name, "kind": resource});
    if !group.is_empty() {
        details["group"] = json!(group);
    }
    if !uid.is_empty() {
        details["uid"] = json!(uid);
    }
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_text_as_upstream() {
        let e = ApiError::not_found("", "configmaps", "x");
        assert_eq!(e.message, "configmaps \"x\" not found");
        let s = e.to_status();
        assert_eq!(s["code"], 404);
        assert_eq!(s["reason"], "NotFound");
        assert_eq!(s["details"]["kind"], "configmaps");
        let e = ApiError::not_found("apps", "deployments", "web");
        assert_eq!(e.message, "deployments.apps \"web\" not found");
    }

    #[test]
    fn conflict_text_as_upstream() {
        let e = ApiError::conflict_modified("", "configmaps", "c");
        assert_eq!(
            e.message,
            "Operation cannot be fulfilled on configmaps \"c\": the object has been modified; please apply your changes to the latest version and try again"
        );
    }

    #[test]
    fn invalid_names_fields() {
        let e = ApiError::invalid(
            "",
            "ConfigMap",
            "",
            vec![FieldError::required(
                "metadata.name",
                "name or generateName is required",
            )],
        );
        assert_eq!(
            e.message,
            "ConfigMap \"\" is invalid: metadata.name: Required value: name or generateName is required"
        );
        let s = e.to_status();
        assert_eq!(s["details"]["causes"][0]["field"], "metadata.name");
        assert_eq!(s["details"]["causes"][0]["reason"], "FieldValueRequired");
        assert_eq!(s["code"], 422);
    }
}
