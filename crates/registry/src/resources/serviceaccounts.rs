//! core/v1 ServiceAccount.

use k8s_openapi::api::core::v1::ServiceAccount;
use serde_json::{json, Value};

use super::count;
use crate::strategy::*;

pub struct ServiceAccounts;

static INFO: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    resource: "serviceaccounts",
    singular: "serviceaccount",
    kind: "ServiceAccount",
    namespaced: true,
    short_names: &["sa"],
    categories: &[],
    subresources: &[],
    etcd_prefix: "serviceaccounts",
};

impl Strategy for ServiceAccounts {
    fn info(&self) -> &'static ResourceInfo {
        &INFO
    }
    fn round_trip(&self, obj: &Value) -> Result<Vec<String>, String> {
        typed_round_trip::<ServiceAccount>(obj)
    }
    fn columns(&self) -> Vec<Column> {
        vec![
            NAME_COLUMN,
            col("Secrets", "string", "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use."),
            AGE_COLUMN,
        ]
    }
    fn row(&self, obj: &Value) -> Vec<Value> {
        vec![
            name_cell(obj),
            json!(count(obj.get("secrets"))),
            age_cell(obj),
        ]
    }
}
