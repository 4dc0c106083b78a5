//! Divergence detection: the leader periodically asks every member for the hash of its key-value
//! history up to a revision they all have (etcd's HashKV) and raises the CORRUPT alarm for a member
//! whose hash differs at the same compaction point, so silent divergence shows in
//! `etcdctl alarm list` and in the logs instead of in wrong answers months later.

use std::sync::Weak;
use std::time::{Duration, Instant};

use etcd_api::enums::{alarm_action, alarm_type};
use etcd_api::PbAlarmRequest;
use mvcc::Op;

use super::node::RaftNode;

/// (hash, revision, compact revision) of a member's history up to a revision.
pub type HashKv = (u32, i64, i64);

/// Answers a leader's HashKV request once this member has applied `rev` (bounded wait).
pub async fn hash_at(node: &RaftNode, rev: i64) -> Result<HashKv, String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while node.store.revision() < rev {
        if Instant::now() > deadline {
            return Err(format!("revision {rev} not applied here yet"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node.store.hash_kv(rev).map_err(|e| e.message().to_string())
}

/// On the leader, every `every`: compare each member's HashKV with the leader's own.
pub async fn check_loop(node: Weak<RaftNode>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(n) = node.upgrade() else { return };
        if !n.is_leader() {
            continue;
        }
        let rev = n.store.revision();
        let Ok(mine) = n.store.hash_kv(rev) else {
            continue;
        };
        for (id, info, _) in n.members() {
            if id == n.id {
                continue;
            }
            let theirs = n
                .peers
                .call::<i64, Result<HashKv, String>>(
                    &info,
                    "/raft/hashkv",
                    &rev,
                    Duration::from_secs(10),
                )
                .await;
            let Ok(Ok(theirs)) = theirs else { continue };
            if theirs.2 != mine.2 || theirs.0 == mine.0 {
                continue;
            }
            tracing::error!(
                member = %format!("{id:x}"), revision = rev, leader_hash = mine.0, member_hash = theirs.0,
                "member's data differs from the leader's at the same revision: raising the CORRUPT alarm. \
                 Compare `etcdctl endpoint hashkv --cluster`; replace the member (etcdctl member remove, \
                 then member add and start it with an empty --data-dir)"
            );
            let alarm = PbAlarmRequest {
                action: alarm_action::ACTIVATE,
                member_id: id,
                alarm: alarm_type::CORRUPT,
            };
            if let Err(e) = n.write(Op::Alarm(alarm), 0).await {
                tracing::warn!("raising the CORRUPT alarm failed: {}", e.message());
            }
        }
    }
}
