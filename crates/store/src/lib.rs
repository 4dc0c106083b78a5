//! The kybern store member: etcd v3 gRPC services over `mvcc`, and the `Kv` trait.

pub mod auth;
pub mod auth_svc;
pub mod authority;
pub mod config;
pub mod grpc;
pub mod kv;
pub mod member;
pub mod metrics;
pub mod raft;
pub mod remote;
pub mod server;
pub mod tls;
pub mod watch_svc;

pub use config::{ConfigError, StoreArgs};
pub use kv::{Kv, WatchSpec, WatchStream};
pub use member::{Member, Settings};

pub use mvcc::etcd_import::Imported;
pub use mvcc::snapshot::{RestoreOptions, Restored};

/// Restores a snapshot file, kybern's or etcd's, into a new data directory (`kybern store
/// snapshot restore`).
pub fn restore_snapshot(
    file: &std::path::Path,
    data_dir: &std::path::Path,
    opts: &RestoreOptions,
) -> Result<Restored, mvcc::Error> {
    mvcc::snapshot::restore(file, data_dir, opts)
}
