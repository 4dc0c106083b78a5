//! kybern's registry: one `GenericStore` per resource over the `Kv` trait, each configured by a small
//! strategy (`resources/`). The API server routes to these stores; nothing else touches storage.

// ApiError (a Status with details) is returned on cold paths only; boxing it buys nothing.
#![allow(clippy::result_large_err)]

pub mod allocator;
pub mod apply;
mod delete;
pub mod encryption;
pub mod kvutil;
pub mod namespace_lifecycle;
pub mod options;
mod pod_subresources;
pub mod resources;
mod scale;
pub mod store;
pub mod strategy;
pub mod table;
pub mod watch;
mod watch_cache;

use std::sync::Arc;

pub use store::{
    DeleteOptions, Deleted, FieldValidation, GenericStore, ListOptions, ListResult, Propagation,
    WriteOptions, Written,
};
pub use strategy::{ResourceInfo, Strategy};
pub use watch::{WatchEvent, WatchOptions};

/// Every resource's store, looked up by group, version and plural resource name.
pub struct Registry {
    pub kv: Arc<dyn ::store::Kv>,
    stores: Vec<GenericStore>,
}

/// Settings of the registry (kube-apiserver's flags of the same names).
#[derive(Clone, Debug)]
pub struct RegistryOptions {
    pub service_cluster_ip_range: String,
    pub service_node_port_range: (u16, u16),
    /// How long events are kept after their last write (`--event-ttl`).
    pub event_ttl: std::time::Duration,
    /// Encryption at rest per resource (`--encryption-provider-config`).
    pub encryption: encryption::Encryption,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            service_cluster_ip_range: "10.96.0.0/12".into(),
            service_node_port_range: (30000, 32767),
            event_ttl: std::time::Duration::from_secs(3600),
            encryption: Default::default(),
        }
    }
}

impl Registry {
    pub fn new(kv: Arc<dyn ::store::Kv>) -> Arc<Self> {
        Self::with_options(kv, &RegistryOptions::default()).expect("default options are valid")
    }

    pub fn with_options(
        kv: Arc<dyn ::store::Kv>,
        opts: &RegistryOptions,
    ) -> Result<Arc<Self>, String> {
        let ips = allocator::Ipv4Range::parse(&opts.service_cluster_ip_range)?;
        let services: Arc<dyn allocator::Hooks> = Arc::new(allocator::ServiceAllocator {
            kv: kv.clone(),
            ips,
            node_ports: opts.service_node_port_range,
        });
        let stores = resources::all()
            .into_iter()
            .map(|s| {
                let mut g = GenericStore::new(kv.clone(), s);
                let info = g.strategy.info();
                g.transformer = opts.encryption.for_resource(info.group, info.resource);
                g.namespace_transformer = opts.encryption.for_resource("", "namespaces");
                match g.strategy.info().resource {
                    "services" => g.hooks = Some(services.clone()),
                    "events" => g.ttl_seconds = Some(opts.event_ttl.as_secs().max(1) as i64),
                    _ => {}
                }
                g
            })
            .collect();
        Ok(Arc::new(Registry { kv, stores }))
    }

    /// The first address of the service range: the `kubernetes` service's ClusterIP.
    pub fn kubernetes_service_ip(opts: &RegistryOptions) -> Result<String, String> {
        Ok(allocator::Ipv4Range::parse(&opts.service_cluster_ip_range)?
            .nth(1)
            .to_string())
    }

    pub fn stores(&self) -> &[GenericStore] {
        &self.stores
    }

    pub fn lookup(&self, group: &str, version: &str, resource: &str) -> Option<&GenericStore> {
        self.stores.iter().find(|s| {
            let i = s.strategy.info();
            i.group == group && i.version == version && i.resource == resource
        })
    }

    /// The (group, version) pairs served, core first, in a stable order.
    pub fn group_versions(&self) -> Vec<(&'static str, &'static str)> {
        let mut out: Vec<(&'static str, &'static str)> = vec![];
        for s in &self.stores {
            let i = s.strategy.info();
            if !out.contains(&(i.group, i.version)) {
                out.push((i.group, i.version));
            }
        }
        out
    }
}
