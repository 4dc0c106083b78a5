//! The gRPC status codes and texts etcd answers with (etcd's `rpctypes`), so clients that match on the
//! message text (etcdctl, the Kubernetes storage layer) behave the same against kybern.

use tonic::{Code, Status};

macro_rules! etcd_errors {
    ($($name:ident => $code:ident, $msg:literal;)*) => {
        $(pub fn $name() -> Status { Status::new(Code::$code, $msg) })*
    };
}

etcd_errors! {
    empty_key => InvalidArgument, "etcdserver: key is not provided";
    key_not_found => InvalidArgument, "etcdserver: key not found";
    value_provided => InvalidArgument, "etcdserver: value is provided";
    lease_provided => InvalidArgument, "etcdserver: lease is provided";
    too_many_ops => InvalidArgument, "etcdserver: too many operations in txn request";
    duplicate_key => InvalidArgument, "etcdserver: duplicate key given in txn request";
    invalid_sort_option => InvalidArgument, "etcdserver: invalid sort option";
    compacted => OutOfRange, "etcdserver: mvcc: required revision has been compacted";
    future_rev => OutOfRange, "etcdserver: mvcc: required revision is a future revision";
    no_space => ResourceExhausted, "etcdserver: mvcc: database space exceeded";
    lease_not_found => NotFound, "etcdserver: requested lease not found";
    lease_exist => FailedPrecondition, "etcdserver: lease already exists";
    lease_ttl_too_large => OutOfRange, "etcdserver: too large lease TTL";
    request_too_large => InvalidArgument, "etcdserver: request is too large";
    member_not_found => NotFound, "etcdserver: member not found";
    not_capable => FailedPrecondition, "etcdserver: not capable";
    stopped => Unavailable, "etcdserver: server stopped";
    corrupt => DataLoss, "etcdserver: corrupt cluster";
    no_leader => Unavailable, "etcdserver: no leader";
    timeout => Unavailable, "etcdserver: request timed out";
    leader_changed => Unavailable, "etcdserver: leader changed";
    auth_not_enabled => FailedPrecondition, "etcdserver: authentication is not enabled";
    unimplemented_auth => Unimplemented, "etcdserver: authentication is not supported by kybern yet";
}

/// Text of the watch cancel reason when a client reuses a watch id on one stream.
pub const DUPLICATE_WATCH_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";
