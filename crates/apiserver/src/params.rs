//! Query parameters of resource requests, parsed into the registry's option structs.

use std::collections::HashMap;
use std::time::Duration;

use apimachinery::{ApiError, FieldSelector, LabelSelector};
use registry::{
    DeleteOptions, FieldValidation, ListOptions, Propagation, WatchOptions, WriteOptions,
};
use serde_json::Value;

pub struct Query(HashMap<String, String>);

impl Query {
    pub fn parse(raw: Option<&str>) -> Self {
        let mut m = HashMap::new();
        if let Some(q) = raw {
            for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
                m.insert(k.into_owned(), v.into_owned());
            }
        }
        Query(m)
    }

    pub fn get(&self, k: &str) -> &str {
        self.0.get(k).map(String::as_str).unwrap_or("")
    }

    pub fn has(&self, k: &str) -> bool {
        self.0.contains_key(k)
    }

    pub fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), "true" | "1")
    }

    fn dry_run(&self) -> Result<bool, ApiError> {
        match self.get("dryRun") {
            "" => Ok(false),
            "All" => Ok(true),
            other => Err(ApiError::bad_request(format!(
                "Invalid dryRun value: {other:?}: supported values: \"All\""
            ))),
        }
    }

    /// Write options; the field manager defaults to the User-Agent's product, as upstream.
    pub fn write(&self, user_agent: &str) -> Result<WriteOptions, ApiError> {
        let mut field_manager = self.get("fieldManager").to_string();
        if field_manager.len() > 128 {
            return Err(ApiError::bad_request(
                "fieldManager: Too long: may not be more than 128 bytes",
            ));
        }
        if field_manager.is_empty() {
            field_manager = user_agent.split('/').next().unwrap_or("").to_string();
        }
        Ok(WriteOptions {
            dry_run: self.dry_run()?,
            field_validation: FieldValidation::parse(self.get("fieldValidation"))?,
            field_manager,
        })
    }

    fn selectors(&self) -> Result<(LabelSelector, FieldSelector), ApiError> {
        let label = LabelSelector::parse(self.get("labelSelector"))
            .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
        let field =
            FieldSelector::parse(self.get("fieldSelector")).map_err(ApiError::bad_request)?;
        Ok((label, field))
    }

    pub fn list(&self) -> Result<ListOptions, ApiError> {
        let (label, field) = self.selectors()?;
        let limit = match self.get("limit") {
            "" => 0,
            l => l
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
        };
        Ok(ListOptions {
            label,
            field,
            limit,
            continue_token: self.get("continue").to_string(),
            resource_version: self.get("resourceVersion").to_string(),
            resource_version_match: self.get("resourceVersionMatch").to_string(),
        })
    }

    pub fn watch(&self) -> Result<WatchOptions, ApiError> {
        let (label, field) = self.selectors()?;
        let timeout = match self.get("timeoutSeconds") {
            "" => None,
            t => Some(Duration::from_secs(t.parse().map_err(|_| {
                ApiError::bad_request(format!("invalid timeoutSeconds {t:?}"))
            })?)),
        };
        let send_initial_events = match self.get("sendInitialEvents") {
            "" => None,
            v => Some(v == "true"),
        };
        Ok(WatchOptions {
            label,
            field,
            resource_version: self.get("resourceVersion").to_string(),
            allow_bookmarks: self.flag("allowWatchBookmarks"),
            send_initial_events,
            timeout,
            bookmark_interval: None,
        })
    }

    /// DeleteOptions from the query and, when given, the body (`metav1.DeleteOptions`).
    pub fn delete(&self, body: Option<&Value>) -> Result<DeleteOptions, ApiError> {
        let mut o = DeleteOptions {
            dry_run: self.dry_run()?,
            ..Default::default()
        };
        if let Ok(g) = self.get("gracePeriodSeconds").parse() {
            o.grace_period_seconds = Some(g);
        }
        let propagation = |policy: Option<&str>, orphan: Option<bool>| {
            match (policy, orphan) {
            (Some(p), None) if !p.is_empty() => Propagation::parse(p).map(Some).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "propagationPolicy: Unsupported value: \"{p}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
                ))
            }),
            (Some(p), Some(_)) if !p.is_empty() => Err(ApiError::bad_request(
                "orphanDependents and propagationPolicy cannot both be set".to_string(),
            )),
            (_, Some(true)) => Ok(Some(Propagation::Orphan)),
            (_, Some(false)) => Ok(Some(Propagation::Background)),
            _ => Ok(None),
        }
        };
        let orphan_q = match self.get("orphanDependents") {
            "" => None,
            v => Some(v == "true"),
        };
        o.propagation = propagation(Some(self.get("propagationPolicy")), orphan_q)?;
        if let Some(b) = body {
            let p = b.get("propagationPolicy").and_then(Value::as_str);
            let orphan = b.get("orphanDependents").and_then(Value::as_bool);
            if p.is_some() || orphan.is_some() {
                o.propagation = propagation(p, orphan)?;
            }
            if let Some(g) = b.get("gracePeriodSeconds").and_then(Value::as_i64) {
                o.grace_period_seconds = Some(g);
            }
            if let Some(p) = b.get("preconditions") {
                o.precondition_uid = p.get("uid").and_then(Value::as_str).map(String::from);
                o.precondition_rv = p
                    .get("resourceVersion")
                    .and_then(Value::as_str)
                    .map(String::from);
            }
            if let Some(d) = b.get("dryRun").and_then(Value::as_array) {
                o.dry_run |= d.iter().any(|x| x == "All");
            }
        }
        Ok(o)
    }
}
