//! coordination.k8s.io/v1 Lease.

use k8s_openapi::api::coordination::v1::Lease;
use serde_json::{json, Value};

use super::or_none;
use crate::strategy::*;

pub struct Leases;

static INFO: ResourceInfo = ResourceInfo {
    group: "coordination.k8s.io",
    version: "v1",
    resource: "leases",
    singular: "lease",
    kind: "Lease",
    namespaced: true,
    short_names: &[],
    categories: &[],
    subresources: &[],
    etcd_prefix: "leases",
};

impl Strategy for Leases {
    fn info(&self) -> &'static ResourceInfo {
        &INFO
    }
    fn allow_create_on_update(&self) -> bool {
        true
    }
    fn round_trip(&self, obj: &Value) -> Result<Vec<String>, String> {
        typed_round_trip::<Lease>(obj)
    }
    fn columns(&self) -> Vec<Column> {
        vec![
            NAME_COLUMN,
            col("Holder", "string", "The holder of the lease"),
            AGE_COLUMN,
        ]
    }
    fn row(&self, obj: &Value) -> Vec<Value> {
        vec![
            name_cell(obj),
            json!(or_none(str_at(obj, "spec.holderIdentity"))),
            age_cell(obj),
        ]
    }
}
