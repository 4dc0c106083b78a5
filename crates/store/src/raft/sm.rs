//! The state machine: committed commands applied to the mvcc store in log order. The last applied
//! log id and the membership are written in the same backend transaction as the data, so a restart
//! resumes exactly after the last applied entry.

use std::io::Cursor;
use std::path::{Path, PathBuf};
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
    /// `<data-dir>/member`: where snapshots are built and kept.
    pub dir: PathBuf,
}

/// A meta value as stored (absent: the default).
fn dec<T: serde::de::DeserializeOwned + Default>(b: &Option<Vec<u8>>) -> Result<T, StorageError> {
    match b {
        Some(b) => postcard::from_bytes(b).map_err(|e| sm_err(ErrorVerb::Read, e)),
        None => Ok(T::default()),
    }
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

/// Builds a snapshot: the store as a bbolt file in etcd's layout (what `etcdctl snapshot save`
/// gets), with the applied log id and membership read in the same transaction.
pub struct Builder {
    store: Arc<Store>,
    dir: PathBuf,
}

/// Where the newest snapshot (built or installed) is kept: `<data-dir>/member/raft-snapshot.*`.
fn snapshot_files(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("raft-snapshot.db"), dir.join("raft-snapshot.meta"))
}

fn save_current(
    dir: &Path,
    meta: &SnapshotMeta<NodeId, MemberInfo>,
    data: &[u8],
) -> Result<(), StorageError> {
    let (db, m) = snapshot_files(dir);
    let w = |p: &Path, b: &[u8]| -> std::io::Result<()> {
        let tmp = p.with_extension("tmp");
        std::fs::write(&tmp, b)?;
        std::fs::rename(&tmp, p)
    };
    w(&db, data).and_then(|()| w(&m, &enc(meta))).map_err(|e| {
        io_err(
            ErrorSubject::Snapshot(Some(meta.signature())),
            ErrorVerb::Write,
            e,
        )
    })
}

impl RaftSnapshotBuilder<TypeConfig> for Builder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (store, dir) = (self.store.clone(), self.dir.clone());
        let (path, metas) = tokio::task::spawn_blocking(move || {
            store.snapshot_with_meta(&dir, &[APPLIED, MEMBERSHIP])
        })
        .await
        .map_err(|e| sm_err(ErrorVerb::Read, e))?
        .map_err(|e| sm_err(ErrorVerb::Read, e))?;
        let data = std::fs::read(&path).map_err(|e| sm_err(ErrorVerb::Read, e));
        let _ = std::fs::remove_file(&path);
        let data = data?;
        let last_log_id: Option<LogId<NodeId>> = dec(&metas[0])?;
        let last_membership: StoredMembership<NodeId, MemberInfo> = dec(&metas[1])?;
        let meta = SnapshotMeta {
            snapshot_id: format!(
                "{}-{}-{:x}",
                last_log_id.map_or(0, |l| l.leader_id.term),
                last_log_id.map_or(0, |l| l.index),
                rand::random::<u32>()
            ),
            last_log_id,
            last_membership,
        };
        save_current(&self.dir, &meta, &data)?;
        tracing::info!(snapshot = %meta.snapshot_id, bytes = data.len(), "built a raft snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Builder;

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
        let entries: Vec<_> = entries.into_iter().collect();
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || apply_entries(&store, entries))
            .await
            .map_err(|e| sm_err(ErrorVerb::Write, e))?
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        Builder {
            store: self.store.clone(),
            dir: self.dir.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, MemberInfo>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let body = strip_hash(&data)
            .map_err(|e| sm_err(ErrorVerb::Write, e))?
            .to_vec();
        let extra = vec![
            (APPLIED, enc(&meta.last_log_id)),
            (MEMBERSHIP, enc(&meta.last_membership)),
        ];
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.install_snapshot(&body, &extra))
            .await
            .map_err(|e| sm_err(ErrorVerb::Write, e))?
            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        save_current(&self.dir, meta, &data)?;
        tracing::info!(snapshot = %meta.snapshot_id, bytes = data.len(), "installed a raft snapshot from the leader");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let (db, m) = snapshot_files(&self.dir);
        if !m.exists() {
            return Ok(None);
        }
        let meta: SnapshotMeta<NodeId, MemberInfo> = std::fs::read(&m)
            .map_err(|e| sm_err(ErrorVerb::Read, e))
            .and_then(|b| postcard::from_bytes(&b).map_err(|e| sm_err(ErrorVerb::Read, e)))?;
        let data = std::fs::read(&db).map_err(|e| sm_err(ErrorVerb::Read, e))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

/// Applies committed entries in order, in as few backend transactions as auth allows: an auth
/// change is applied alone, and each command's auth revision is checked against the auth store
/// as it is just before the command (so every member refuses the same commands). The last
/// applied log id and a new membership go into the transaction of the entries they follow.
fn apply_entries(
    store: &Arc<Store>,
    entries: Vec<openraft::Entry<TypeConfig>>,
) -> Result<Vec<Reply>, StorageError> {
    let mut replies: Vec<Reply> = Vec::with_capacity(entries.len());
    // Commands waiting to be applied together, with the index of their reply.
    let mut batch: Vec<(usize, mvcc::Op)> = Vec::new();
    let mut last = None;
    let mut membership = None;
    let flush = |batch: &mut Vec<(usize, mvcc::Op)>,
                 replies: &mut Vec<Reply>,
                 last: &Option<LogId<NodeId>>,
                 membership: &mut Option<StoredMembership<NodeId, MemberInfo>>|
     -> Result<(), StorageError> {
        let mut extra = vec![(APPLIED, enc(last))];
        if let Some(m) = membership.take() {
            extra.push((MEMBERSHIP, enc(&m)));
        }
        let (slots, ops): (Vec<usize>, Vec<mvcc::Op>) = std::mem::take(batch).into_iter().unzip();
        let results = store
            .apply_with_meta(ops, &extra)
            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        for (slot, r) in slots.into_iter().zip(results) {
            replies[slot] = Reply(Some(r));
        }
        Ok(())
    };
    let mut unflushed = false;
    for e in entries {
        let previous = last;
        last = Some(e.log_id);
        unflushed = true;
        let slot = replies.len();
        replies.push(Reply(None));
        match e.payload {
            EntryPayload::Blank => {}
            EntryPayload::Membership(m) => {
                membership = Some(StoredMembership::new(Some(e.log_id), m));
            }
            EntryPayload::Normal(Cmd(op, rev)) => {
                let is_auth = matches!(op, mvcc::Op::Auth(_));
                if is_auth && !batch.is_empty() {
                    // The commands before it, up to the entry before this one.
                    let before = last;
                    last = previous;
                    flush(&mut batch, &mut replies, &last, &mut membership)?;
                    last = before;
                }
                let stale = rev != 0 && {
                    let a = store.auth();
                    a.enabled() && rev < a.revision()
                };
                if stale {
                    replies[slot] = Reply(Some(Err(etcd_api::errors::auth_old_revision())));
                } else {
                    batch.push((slot, op));
                }
                if is_auth {
                    flush(&mut batch, &mut replies, &last, &mut membership)?;
                    unflushed = false;
                }
            }
        }
    }
    // Entries after the last flush (commands, blanks, memberships, refusals) are recorded too.
    if unflushed {
        flush(&mut batch, &mut replies, &last, &mut membership)?;
    }
    Ok(replies)
}

/// The database of a snapshot without its SHA-256 trailer, which must match.
fn strip_hash(data: &[u8]) -> Result<&[u8], String> {
    use sha2::{Digest, Sha256};
    if data.len() % 512 != 32 {
        return Err(format!("snapshot of {} bytes carries no hash", data.len()));
    }
    let (body, sum) = data.split_at(data.len() - 32);
    if Sha256::digest(body).as_slice() != sum {
        return Err("snapshot hash mismatch: the snapshot was damaged in transfer".into());
    }
    Ok(body)
}
