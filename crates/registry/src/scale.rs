//! The scale subresource (autoscaling/v1 Scale) of resources with `spec.replicas`.

use apimachinery::{meta, ApiError, FieldError};
use serde_json::{json, Value};

use crate::store::{GenericStore, WriteOptions, MAX_RETRIES};

impl GenericStore {
    /// The autoscaling/v1 Scale of an object with `spec.replicas`.
    pub fn scale_of(&self, obj: &Value) -> Value {
        let md = &obj["metadata"];
        json!({
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                "name": md["name"], "namespace": md["namespace"], "uid": md["uid"],
                "resourceVersion": md["resourceVersion"],
                "creationTimestamp": md["creationTimestamp"],
            },
            "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(0)},
            "status": {
                "replicas": obj["status"]["replicas"].as_i64().unwrap_or(0),
                "selector": self.strategy.scale_selector(obj),
            },
        })
    }

    pub(crate) fn apply_scale(&self, old: &Value, scale: &Value) -> Result<Value, ApiError> {
        let Some(r) = scale["spec"]["replicas"].as_i64() else {
            return Err(ApiError::invalid(
                "autoscaling",
                "Scale",
                meta::name(old),
                vec![FieldError::required("spec.replicas", "")],
            ));
        };
        if r < 0 {
            return Err(ApiError::invalid(
                "autoscaling",
                "Scale",
                meta::name(old),
                vec![FieldError::invalid(
                    "spec.replicas",
                    &json!(r),
                    "must be greater than or equal to 0",
                )],
            ));
        }
        let mut new = old.clone();
        new["spec"]["replicas"] = json!(r);
        Ok(new)
    }

    pub async fn get_scale(&self, ns: &str, name: &str) -> Result<Value, ApiError> {
        Ok(self.scale_of(&self.get(ns, name).await?))
    }

    pub async fn update_scale(
        &self,
        ns: &str,
        name: &str,
        scale: &Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let rv = meta::resource_version(scale).to_string();
        for _ in 0..MAX_RETRIES {
            let Some((old, mod_rev)) = self.read(ns, name).await? else {
                return Err(self.not_found(name));
            };
            if !rv.is_empty() && rv != mod_rev.to_string() {
                return Err(ApiError::conflict_modified(
                    self.group(),
                    self.resource(),
                    name,
                ));
            }
            let new = self.apply_scale(&old, scale)?;
            if let Some(w) = self
                .write_update(ns, name, new, &old, mod_rev, None, opts)
                .await?
            {
                return Ok(self.scale_of(&w.object));
            }
        }
        Err(ApiError::conflict_modified(
            self.group(),
            self.resource(),
            name,
        ))
    }
}
