//! The pod subresources that are not plain reads and writes of the pod: `binding` (what the
//! scheduler posts: sets spec.nodeName once, and the PodScheduled condition) and `eviction` (what
//! `kubectl drain` posts: a delete that disruption budgets may refuse, once they exist).

use apimachinery::{meta, status, ApiError};
use serde_json::{json, Value};

use crate::kvutil;
use crate::store::{DeleteOptions, GenericStore, MAX_RETRIES};

impl GenericStore {
    /// POST pods/<name>/binding.
    pub async fn bind(
        &self,
        ns: &str,
        name: &str,
        binding: &Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let node = binding["target"]["name"].as_str().unwrap_or("");
        if node.is_empty() {
            return Err(ApiError::invalid(
                "",
                "Binding",
                name,
                vec![apimachinery::FieldError::required("target.name", "")],
            ));
        }
        for _ in 0..MAX_RETRIES {
            let Some((mut pod, mod_rev)) = self.read(ns, name).await? else {
                return Err(self.not_found(name));
            };
            if let Some(uid) = binding["metadata"]["uid"].as_str() {
                if !uid.is_empty() && uid != meta::uid(&pod) {
                    return Err(ApiError::conflict(
                        "",
                        "pods/binding",
                        name,
                        "the UID in the binding does not match the pod",
                    ));
                }
            }
            if meta::deletion_timestamp(&pod).is_some() {
                return Err(ApiError::conflict(
                    "",
                    "pods/binding",
                    name,
                    &format!("pod {name} is being deleted, cannot be assigned to a host"),
                ));
            }
            let current = pod["spec"]["nodeName"].as_str().unwrap_or("");
            if !current.is_empty() {
                return Err(ApiError::conflict(
                    "",
                    "pods/binding",
                    name,
                    &format!("pod {name} is already assigned to node {current:?}"),
                ));
            }
            pod["spec"]["nodeName"] = json!(node);
            if let Some(a) = binding["metadata"]["annotations"].as_object() {
                for (k, v) in a {
                    meta::metadata_mut(&mut pod)
                        .entry("annotations")
                        .or_insert_with(|| json!({}))[k] = v.clone();
                }
            }
            let conds = pod["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut conds: Vec<Value> = conds
                .into_iter()
                .filter(|c| c["type"] != "PodScheduled")
                .collect();
            conds.push(
                json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null,
                "lastTransitionTime": meta::now_rfc3339()}),
            );
            pod["status"]["conditions"] = json!(conds);
            if dry_run {
                break;
            }
            let key = self.key(ns, name);
            if kvutil::update(&*self.kv, key.as_bytes(), mod_rev, self.encode(&key, &pod))
                .await?
                .is_some()
            {
                break;
            }
        }
        let mut s = status::success_status("", "pods", name, "");
        s["code"] = json!(201);
        s["details"] = Value::Null;
        s.as_object_mut().map(|m| m.remove("details"));
        Ok(s)
    }

    /// POST pods/<name>/eviction: deletes the pod (with the eviction's delete options).
    pub async fn evict(
        &self,
        ns: &str,
        name: &str,
        eviction: &Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let d = &eviction["deleteOptions"];
        let opts = DeleteOptions {
            dry_run,
            grace_period_seconds: d["gracePeriodSeconds"].as_i64(),
            precondition_uid: d["preconditions"]["uid"].as_str().map(String::from),
            precondition_rv: d["preconditions"]["resourceVersion"]
                .as_str()
                .map(String::from),
            propagation: d["propagationPolicy"]
                .as_str()
                .and_then(crate::options::Propagation::parse),
        };
        self.delete(ns, name, &opts).await?;
        let mut s = status::success_status("", "pods", name, "");
        s["code"] = json!(201);
        s.as_object_mut().map(|m| m.remove("details"));
        Ok(s)
    }
}
