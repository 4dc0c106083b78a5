//! Replication: the store's writes go through openraft. This module owns only what openraft asks
//! of an application (log storage, the state machine over mvcc, the peer network); the algorithm
//! is the library's.
//!
//! - `codec`: a log entry's command and answer as bytes.
//! - `log`: the Raft log, vote and commit point in `<data-dir>/member/raft.db` (redb).
//! - `sm`: the state machine: committed commands applied to the mvcc store, with the last applied
//!   log id and the membership stored in the same backend transaction.
//! - `network`: peer RPCs over HTTP on the peer URLs (postcard bodies), client side.
//! - `peer`: the same RPCs, server side, plus forwarding of writes and read-index to the leader.
//! - `node`: starting a member of a static cluster (`--initial-cluster`).

mod auth_codec;
pub mod codec;
pub mod corrupt;
pub mod log;
pub mod membership;
pub mod network;
pub mod node;
pub mod peer;
pub mod recover;
pub mod sm;

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

pub use codec::{Cmd, Reply};

/// What the cluster knows of a member: etcd's member attributes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub name: String,
    pub peer_urls: Vec<String>,
    /// Added as a voter (not with `--learner`): the leader promotes it once it has caught up.
    pub auto_promote: bool,
}

impl fmt::Display for MemberInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name, self.peer_urls.join(","))
    }
}

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Cmd,
        R = Reply,
        NodeId = u64,
        Node = MemberInfo,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type NodeId = u64;
pub type StorageError = openraft::StorageError<NodeId>;

/// etcd's member id: the first 8 bytes (big-endian) of SHA-1 over the sorted peer URLs and the
/// cluster token.
pub fn member_id(peer_urls: &[String], token: &str) -> u64 {
    use sha1::{Digest, Sha1};
    let mut urls = peer_urls.to_vec();
    urls.sort();
    let mut h = Sha1::new();
    h.update(urls.concat().as_bytes());
    h.update(token.as_bytes());
    u64::from_be_bytes(h.finalize()[..8].try_into().unwrap_or([0; 8]))
}

/// etcd's cluster id: the first 8 bytes of SHA-1 over the sorted member ids (big-endian each).
pub fn cluster_id(member_ids: &[u64]) -> u64 {
    use sha1::{Digest, Sha1};
    let mut ids = member_ids.to_vec();
    ids.sort();
    let mut h = Sha1::new();
    for id in ids {
        h.update(id.to_be_bytes());
    }
    u64::from_be_bytes(h.finalize()[..8].try_into().unwrap_or([0; 8]))
}

/// postcard bytes of a value (encoding into a Vec cannot fail).
pub(crate) fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).expect("postcard encodes to a Vec")
}

/// A storage error for openraft from anything that displays.
pub(crate) fn io_err(
    subject: openraft::ErrorSubject<NodeId>,
    verb: openraft::ErrorVerb,
    e: impl fmt::Display,
) -> StorageError {
    openraft::StorageError::from(openraft::StorageIOError::new(
        subject,
        verb,
        openraft::AnyError::error(e.to_string()),
    ))
}
