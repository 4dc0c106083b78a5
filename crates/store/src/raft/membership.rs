//! Membership changes as etcd's Cluster API asks for them (member add, remove, update, promote),
//! made by the leader (other members forward them), and the leader's promotion of learners once
//! they have caught up: a new member always joins as a learner, so it never counts towards quorum
//! before it holds the log, and one added without `--learner` becomes a voter by itself.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::ChangeMembers;
use serde::{Deserialize, Serialize};
use tonic::{Code, Status};

use super::node::RaftNode;
use super::{MemberInfo, NodeId};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Change {
    Add {
        peer_urls: Vec<String>,
        learner: bool,
    },
    Remove(NodeId),
    Update {
        id: NodeId,
        peer_urls: Vec<String>,
    },
    Promote(NodeId),
}

/// A refused change as (gRPC code, etcd's message), so that it survives forwarding.
pub type Refusal = (i32, String);

fn refuse(code: Code, msg: &str) -> Refusal {
    (code as i32, msg.to_string())
}

pub fn status(r: Refusal) -> Status {
    Status::new(Code::from_i32(r.0), r.1)
}

/// How far behind the leader's log a learner may be and still count as in sync.
const IN_SYNC_SLACK: u64 = 16;

impl RaftNode {
    /// Makes `change` as the leader; the id of the member concerned.
    pub async fn change_as_leader(&self, change: Change) -> Result<NodeId, Refusal> {
        let members = self.members();
        let known = |id: NodeId| members.iter().find(|(m, _, _)| *m == id).cloned();
        let (id, res) = match change {
            Change::Add { peer_urls, learner } => {
                let urls: Vec<String> = peer_urls
                    .iter()
                    .map(|u| u.trim_end_matches('/').to_string())
                    .collect();
                if members
                    .iter()
                    .any(|(_, m, _)| m.peer_urls.iter().any(|u| urls.contains(u)))
                {
                    return Err(refuse(
                        Code::FailedPrecondition,
                        "etcdserver: Peer URLs already exists",
                    ));
                }
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                let id = super::member_id(&urls, &format!("{}{nanos}", self.token));
                let info = MemberInfo {
                    name: String::new(),
                    peer_urls: urls,
                    auto_promote: !learner,
                };
                (id, self.raft.add_learner(id, info, false).await)
            }
            Change::Remove(id) => {
                let (_, _, is_learner) = known(id)
                    .ok_or_else(|| refuse(Code::NotFound, "etcdserver: member not found"))?;
                let change = if is_learner {
                    ChangeMembers::RemoveNodes(BTreeSet::from([id]))
                } else {
                    ChangeMembers::RemoveVoters(BTreeSet::from([id]))
                };
                (id, self.raft.change_membership(change, false).await)
            }
            Change::Update { id, peer_urls } => {
                let (_, mut info, _) = known(id)
                    .ok_or_else(|| refuse(Code::NotFound, "etcdserver: member not found"))?;
                info.peer_urls = peer_urls
                    .iter()
                    .map(|u| u.trim_end_matches('/').to_string())
                    .collect();
                let change = ChangeMembers::SetNodes(BTreeMap::from([(id, info)]));
                (id, self.raft.change_membership(change, true).await)
            }
            Change::Promote(id) => {
                let (_, _, is_learner) = known(id)
                    .ok_or_else(|| refuse(Code::NotFound, "etcdserver: member not found"))?;
                if !is_learner {
                    return Err(refuse(
                        Code::FailedPrecondition,
                        "etcdserver: can only promote a learner member",
                    ));
                }
                if !self.in_sync(id) {
                    return Err(refuse(
                        Code::FailedPrecondition,
                        "etcdserver: can only promote a learner member which is in sync with leader",
                    ));
                }
                let change = ChangeMembers::AddVoterIds(BTreeSet::from([id]));
                (id, self.raft.change_membership(change, false).await)
            }
        };
        match res {
            Ok(_) => Ok(id),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                Err(refuse(Code::Unavailable, "etcdserver: leader changed"))
            }
            Err(e) => Err(refuse(
                Code::FailedPrecondition,
                &format!("etcdserver: {e}"),
            )),
        }
    }

    /// Makes `change` through the leader.
    pub async fn change(&self, change: Change) -> Result<NodeId, Status> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if self.is_leader() {
                return self.change_as_leader(change).await.map_err(status);
            }
            if let Some((_, node)) = self.leader() {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                match self
                    .peers
                    .call::<Change, Result<NodeId, Refusal>>(&node, "/raft/member", &change, left)
                    .await
                {
                    Ok(r) => return r.map_err(status),
                    Err(super::network::CallError::Unknown(..)) => {
                        return Err(etcd_api::errors::timeout())
                    }
                    Err(_) => {}
                }
            }
            if std::time::Instant::now() >= deadline {
                return Err(etcd_api::errors::no_leader());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether learner `id` has (nearly) all of the leader's log.
    fn in_sync(&self, id: NodeId) -> bool {
        let m = self.raft.metrics().borrow().clone();
        let last = m.last_log_index.unwrap_or(0);
        let matched = m
            .replication
            .as_ref()
            .and_then(|r| r.get(&id).cloned().flatten())
            .map_or(0, |l| l.index);
        matched + IN_SYNC_SLACK >= last
    }
}

/// On the leader: promotes every learner added to become a voter once it has caught up.
pub async fn promote_learners(node: std::sync::Weak<RaftNode>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let Some(n) = node.upgrade() else { return };
        if !n.is_leader() {
            continue;
        }
        for (id, info, is_learner) in n.members() {
            if is_learner && info.auto_promote && n.in_sync(id) {
                match n.change_as_leader(Change::Promote(id)).await {
                    Ok(_) => {
                        tracing::info!(member = %format!("{id:x}"), "learner caught up with the leader; promoted it to voting member")
                    }
                    Err((_, e)) => {
                        tracing::warn!(member = %format!("{id:x}"), "promoting a caught-up learner failed: {e}; will retry")
                    }
                }
            }
        }
    }
}
