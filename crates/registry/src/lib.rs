//! kybern's registry: one `GenericStore` per resource over the `Kv` trait, each configured by a small
//! strategy (`resources/`). The API server routes to these stores; nothing else touches storage.

pub mod kvutil;
pub mod namespace_lifecycle;
pub mod resources;
pub mod store;
pub mod strategy;
pub mod table;
pub mod watch;

use std::sync::Arc;

pub use store::{
    DeleteOptions, Deleted, FieldValidation, GenericStore, ListOptions, ListResult, WriteOptions,
    Written,
};
pub use strategy::{ResourceInfo, Strategy};
pub use watch::{WatchEvent, WatchOptions};

/// Every resource's store, looked up by group, version and plural resource name.
pub struct Registry {
    pub kv: Arc<dyn ::store::Kv>,
    stores: Vec<GenericStore>,
}

impl Registry {
    pub fn new(kv: Arc<dyn ::store::Kv>) -> Arc<Self> {
        let stores = resources::all()
            .into_iter()
            .map(|s| GenericStore::new(kv.clone(), s))
            .collect();
        Arc::new(Registry { kv, stores })
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
