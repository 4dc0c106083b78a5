//! etcd's `authpb` records (users, roles, permissions) and the `AuthStatus` messages, which
//! etcd-client does not export. Field numbers are etcd's, so the stored records are etcd's encoding.

/// A user as stored in the backend (`authpb.User`).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct User {
    #[prost(bytes = "vec", tag = "1")]
    pub name: Vec<u8>,
    /// bcrypt hash (`$2a$<cost>$...`), empty for a user without a password.
    #[prost(bytes = "vec", tag = "2")]
    pub password: Vec<u8>,
    /// Role names, sorted.
    #[prost(string, repeated, tag = "3")]
    pub roles: Vec<String>,
    #[prost(message, optional, tag = "4")]
    pub options: Option<UserAddOptions>,
}

impl User {
    pub fn no_password(&self) -> bool {
        self.options.as_ref().is_some_and(|o| o.no_password)
    }
}

#[derive(Clone, Copy, PartialEq, ::prost::Message)]
pub struct UserAddOptions {
    #[prost(bool, tag = "1")]
    pub no_password: bool,
}

/// A key permission of a role (`authpb.Permission`): `perm_type` is one of `perm_type::*`; an
/// empty `range_end` means the single key, `"\0"` every key from `key` on.
#[derive(Clone, PartialEq, Eq, ::prost::Message)]
pub struct Permission {
    #[prost(int32, tag = "1")]
    pub perm_type: i32,
    #[prost(bytes = "vec", tag = "2")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    pub range_end: Vec<u8>,
}

/// A role as stored in the backend (`authpb.Role`); permissions sorted by key.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Role {
    #[prost(bytes = "vec", tag = "1")]
    pub name: Vec<u8>,
    #[prost(message, repeated, tag = "2")]
    pub key_permission: Vec<Permission>,
}

/// Values of `Permission::perm_type`.
pub mod perm_type {
    pub const READ: i32 = 0;
    pub const WRITE: i32 = 1;
    pub const READWRITE: i32 = 2;
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct AuthStatusRequest {}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct AuthStatusResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<crate::PbResponseHeader>,
    #[prost(bool, tag = "2")]
    pub enabled: bool,
    #[prost(uint64, tag = "3")]
    pub auth_revision: u64,
}

/// Re-encodes a message as another with the same wire format: how kybern fills etcd-client's
/// message fields whose types it cannot name (e.g. the `authpb.Permission` of a RoleGet answer).
pub fn recode<A: prost::Message, B: prost::Message + Default>(a: &A) -> B {
    B::decode(a.encode_to_vec().as_slice()).unwrap_or_default()
}
