//! The etcd v3 API as kybern speaks it: the generated messages and service traits (re-exported from
//! etcd-client's `build-server` feature, so the project carries no .proto of its own), the error texts
//! etcd answers with, and a few message types etcd-client does not export.

pub use etcd_client::proto::*;

pub mod auth_msgs;
pub mod errors;
pub mod watch_msgs;

/// Numeric values of the enums carried as `i32` in the messages.
pub mod enums {
    pub mod sort_order {
        pub const NONE: i32 = 0;
        pub const ASCEND: i32 = 1;
        pub const DESCEND: i32 = 2;
    }
    pub mod sort_target {
        pub const KEY: i32 = 0;
        pub const VERSION: i32 = 1;
        pub const CREATE: i32 = 2;
        pub const MOD: i32 = 3;
        pub const VALUE: i32 = 4;
    }
    pub mod compare_result {
        pub const EQUAL: i32 = 0;
        pub const GREATER: i32 = 1;
        pub const LESS: i32 = 2;
        pub const NOT_EQUAL: i32 = 3;
    }
    pub mod compare_target {
        pub const VERSION: i32 = 0;
        pub const CREATE: i32 = 1;
        pub const MOD: i32 = 2;
        pub const VALUE: i32 = 3;
        pub const LEASE: i32 = 4;
    }
    pub mod event_type {
        pub const PUT: i32 = 0;
        pub const DELETE: i32 = 1;
    }
    pub mod watch_filter {
        pub const NOPUT: i32 = 0;
        pub const NODELETE: i32 = 1;
    }
    pub mod alarm_type {
        pub const NONE: i32 = 0;
        pub const NOSPACE: i32 = 1;
        pub const CORRUPT: i32 = 2;
    }
    pub mod alarm_action {
        pub const GET: i32 = 0;
        pub const ACTIVATE: i32 = 1;
        pub const DEACTIVATE: i32 = 2;
    }
}

/// The etcd API version kybern reports in `Status` (clients gate features on it).
pub const ETCD_VERSION: &str = "3.5.17";
