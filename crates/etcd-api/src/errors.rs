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
    root_user_not_exist => FailedPrecondition, "etcdserver: root user does not exist";
    root_role_not_exist => FailedPrecondition, "etcdserver: root user does not have root role";
    user_already_exist => FailedPrecondition, "etcdserver: user name already exists";
    user_empty => InvalidArgument, "etcdserver: user name is empty";
    user_not_found => FailedPrecondition, "etcdserver: user name not found";
    role_already_exist => FailedPrecondition, "etcdserver: role name already exists";
    role_not_found => FailedPrecondition, "etcdserver: role name not found";
    role_empty => InvalidArgument, "etcdserver: role name is empty";
    auth_failed => InvalidArgument, "etcdserver: authentication failed, invalid user ID or password";
    permission_denied => PermissionDenied, "etcdserver: permission denied";
    role_not_granted => FailedPrecondition, "etcdserver: role is not granted to the user";
    permission_not_granted => FailedPrecondition, "etcdserver: permission is not granted to the role";
    invalid_auth_token => Unauthenticated, "etcdserver: invalid auth token";
    invalid_auth_mgmt => InvalidArgument, "etcdserver: invalid auth management";
    auth_old_revision => InvalidArgument, "etcdserver: revision of auth store is old";
    // etcd 3.5's answer to a RoleGrantPermission without a permission (3.4 crashes on it).
    permission_not_given => InvalidArgument, "etcdserver: permission not given";
    // etcd 3.4 has no gRPC mapping for this one and answers it as Unknown with its own text.
    no_password_user => Unknown, "auth: authentication failed, password was given for no password user";
}

/// The text Go's gRPC gives a status error (`status.Error(..).Error()`), as etcd puts it in a
/// watch's cancel reason.
pub fn go_error_text(s: &Status) -> String {
    let code = match s.code() {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    };
    format!("rpc error: code = {code} desc = {}", s.message())
}

/// Text of the watch cancel reason when a client reuses a watch id on one stream.
pub const DUPLICATE_WATCH_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";
