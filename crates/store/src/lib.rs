//! The kybern store member: etcd v3 gRPC services over `mvcc`, and the `Kv` trait.

pub mod auth;
pub mod auth_svc;
pub mod config;
pub mod grpc;
pub mod kv;
pub mod member;
pub mod metrics;
pub mod remote;
pub mod server;
pub mod tls;
pub mod watch_svc;

pub use config::{ConfigError, StoreArgs};
pub use kv::{Kv, WatchSpec, WatchStream};
pub use member::{Member, Settings};

/// Restores a snapshot file into a new data directory (`kybern store snapshot restore`).
pub fn restore_snapshot(
    file: &std::path::Path,
    data_dir: &std::path::Path,
    name: &str,
) -> Result<(), mvcc::Error> {
    mvcc::snapshot::restore(file, data_dir, name)
}
