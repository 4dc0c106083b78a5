//! The kybern store member: etcd v3 gRPC services over `mvcc`, and the `Kv` trait.

pub mod kv;
pub mod remote;

pub use kv::{Kv, WatchSpec, WatchStream};
