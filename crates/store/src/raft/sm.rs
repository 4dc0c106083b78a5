//! The state machine: committed commands applied to the mvcc store in log order. The last applied
//! log id and the membership are written in the same backend transaction as the data, so a restart
//! resumes exactly after the last applied entry.

use std::io::Cursor;
use std::sync::Arc;

use mvcc::Store;
use openraft::storage::RaftStateMachine;
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot,
    SnapshotMeta, StoredMembership,
};

use super::{enc, io_err, Cmd, MemberInfo, NodeId, Reply, StorageError, TypeConfig};

const APPLIED: &str = "raft_applied";
const MEMBERSHIP: &str = "raft_membership";

pub struct StateMachine {
    pub store: Arc<Store>,
}

fn sm_err(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    io_err(ErrorSubject::StateMachine, verb, e)
}

impl StateMachine {
    fn meta<T: serde::de::DeserializeOwned + Default>(
        &self,
        name: &str,
    ) -> Result<T, StorageError> {
        match self
            .store
            .get_meta(name)
            .map_err(|e| sm_err(ErrorVerb::Read, e))?
        {
            Some(b) => postcard::from_bytes(&b).map_err(|e| sm_err(ErrorVerb::Read, e)),
            None => Ok(T::default()),
        }
    }
}

/// Snapshots are not taken (the log is kept whole), so a lagging member catches up from the log.
pub struct NoSnapshots;

impl RaftSnapshotBuilder<TypeConfig> for NoSnapshots {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        Err(sm_err(
            ErrorVerb::Write,
            "kybern keeps the whole Raft log and builds no Raft snapshots yet",
        ))
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = NoSnapshots;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, MemberInfo>), StorageError> {
        Ok((self.meta(APPLIED)?, self.meta(MEMBERSHIP)?))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Reply>, StorageError>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut ops = Vec::new();
        let mut slots = Vec::new();
        let mut last = None;
        let mut membership = None;
        for e in entries {
            last = Some(e.log_id);
            match e.payload {
                EntryPayload::Blank => slots.push(false),
                EntryPayload::Normal(Cmd(op)) => {
                    ops.push(op);
                    slots.push(true);
                }
                EntryPayload::Membership(m) => {
                    membership = Some(StoredMembership::new(Some(e.log_id), m));
                    slots.push(false);
                }
            }
        }
        if last.is_none() {
            return Ok(Vec::new());
        }
        let mut extra = vec![(APPLIED, enc(&last))];
        if let Some(m) = &membership {
            extra.push((MEMBERSHIP, enc(m)));
        }
        let store = self.store.clone();
        let results = tokio::task::spawn_blocking(move || store.apply_with_meta(ops, &extra))
            .await
            .map_err(|e| sm_err(ErrorVerb::Write, e))?
            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        let mut results = results.into_iter();
        Ok(slots
            .into_iter()
            .map(|has| Reply(if has { results.next() } else { None }))
            .collect())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        NoSnapshots
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        _meta: &SnapshotMeta<NodeId, MemberInfo>,
        _snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        Err(sm_err(
            ErrorVerb::Write,
            "installing a Raft snapshot is not supported yet (members keep the whole log)",
        ))
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(None)
    }
}
