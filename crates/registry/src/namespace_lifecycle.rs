//! Namespace deletion: once a namespace is Terminating, delete everything in it, then drop the
//! `kubernetes` finalizer so the namespace itself goes. In a cluster the controller-manager's
//! namespace controller does this through the API (as upstream); the API server does not. This
//! in-process version serves tests and tools that run a registry without a controller-manager.

use apimachinery::meta;
use serde_json::json;

use crate::{DeleteOptions, ListOptions, Registry, WriteOptions};

impl Registry {
    /// Empties a Terminating namespace and finalizes it; a no-op for an active or missing one.
    pub async fn finalize_namespace(&self, name: &str) -> Result<(), apimachinery::ApiError> {
        let Some(nss) = self.lookup("", "v1", "namespaces") else {
            return Ok(());
        };
        let ns = match nss.get("", name).await {
            Ok(ns) => ns,
            Err(e) if e.code == 404 => return Ok(()),
            Err(e) => return Err(e),
        };
        if meta::deletion_timestamp(&ns).is_none() {
            return Ok(());
        }
        for _ in 0..20 {
            let mut left = 0;
            for s in self.stores() {
                if !s.strategy.info().namespaced {
                    continue;
                }
                let del = DeleteOptions {
                    grace_period_seconds: Some(0),
                    ..Default::default()
                };
                let res = s
                    .delete_collection(name, &ListOptions::default(), &del)
                    .await?;
                left += res.items.len();
            }
            if left == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        let body = json!({"metadata": {"name": name}, "spec": {"finalizers": []}});
        match nss
            .update("", name, body, Some("finalize"), &WriteOptions::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Creates a namespace if it is missing (the API server's bootstrap namespaces).
    pub async fn ensure_namespace(&self, name: &str) -> Result<(), apimachinery::ApiError> {
        let nss = self
            .lookup("", "v1", "namespaces")
            .expect("namespaces are served");
        let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        match nss.create("", obj, &WriteOptions::default()).await {
            Ok(_) => Ok(()),
            Err(e) if e.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }
}
