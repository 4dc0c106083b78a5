//! `kybern store recover`: after a quorum is lost for good, the most up-to-date survivor becomes
//! a one-member cluster that keeps every entry of its log (as etcd's --force-new-cluster does, but
//! as one command on the stopped member instead of a flag to remember to take off again).
//!
//! The member's Raft log gets one more entry, written here: a membership of this member alone,
//! under a new term this member has voted for, and marked committed. When the member starts with
//! its usual flags it applies its whole log, ends up the only voter and elects itself. The others
//! rejoin as new members (`etcdctl member add`, then start with an empty data dir and
//! `--initial-cluster-state existing`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{bail, Context};
use openraft::storage::RaftLogStorage;
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, LogId, Membership, RaftLogReader, StoredMembership,
    Vote,
};

use super::log::LogStore;
use super::{MemberInfo, NodeId, TypeConfig};

/// What `recover` did.
pub struct Recovered {
    pub member_id: NodeId,
    pub cluster_id: u64,
    pub last_index: u64,
}

pub async fn recover(data_dir: &Path) -> anyhow::Result<Recovered> {
    if !super::log::path(data_dir).exists() {
        bail!(
            "{} holds no replicated store member (no {}): recover works on a data dir of a member \
             of a cluster",
            data_dir.display(),
            super::log::path(data_dir).display()
        );
    }
    let store = mvcc::Store::open(data_dir)
        .with_context(|| format!("opening the store in {}", data_dir.display()))?;
    let me = store.member_id;
    let mut log =
        LogStore::open(data_dir).context("opening the raft log (is the member still running?)")?;
    let vote = log.read_vote().await?.unwrap_or_default();
    let state = log.get_log_state().await?;
    let last = state.last_log_id;
    // The newest membership: the last one in the log, else the one the store applied.
    let mut membership: Option<Membership<NodeId, MemberInfo>> = None;
    for e in log.try_get_log_entries(..).await? {
        if let EntryPayload::Membership(m) = e.payload {
            membership = Some(m);
        }
    }
    let membership = match membership {
        Some(m) => m,
        None => {
            let stored: StoredMembership<NodeId, MemberInfo> = match store
                .get_meta("raft_membership")?
            {
                Some(b) => postcard::from_bytes(&b).context("reading the applied membership")?,
                None => bail!(
                    "{} has no cluster membership to recover from",
                    data_dir.display()
                ),
            };
            stored.membership().clone()
        }
    };
    let Some(info) = membership.get_node(&me).cloned() else {
        bail!("member {me:x} is not in its own cluster's membership (it was removed); nothing to recover");
    };
    let term = vote.leader_id().term + 1;
    let index = last.map_or(0, |l| l.index + 1);
    let log_id = LogId::new(CommittedLeaderId::new(term, me), index);
    let alone = Membership::new(vec![BTreeSet::from([me])], BTreeMap::from([(me, info)]));
    let entry = Entry::<TypeConfig> {
        log_id,
        payload: EntryPayload::Membership(alone),
    };
    log.append_now(vec![entry]).await?;
    log.save_vote(&Vote::new_committed(term, me)).await?;
    log.save_committed(Some(log_id)).await?;
    Ok(Recovered {
        member_id: me,
        cluster_id: store.cluster_id,
        last_index: index,
    })
}
