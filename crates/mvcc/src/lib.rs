//! etcd-style multi-version key-value store on redb.

pub mod apply;
pub mod auth;
pub mod backend;
pub mod bbolt;
pub mod bolt_writer;
mod error;
pub mod etcd_import;
pub mod index;
mod install;
pub mod lease;
pub mod rev;
pub mod snapshot;
pub mod store;
pub mod txn;
pub mod watch;

pub use apply::{Op, OpResult};
pub use auth::{Access, AuthOp, AuthState, Caller};
pub use error::Error;
pub use store::Store;
pub use watch::{Filter, Subscription, WatchMsg};
