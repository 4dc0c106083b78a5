//! The Raft log, the vote and the commit point, in their own redb file beside the mvcc backend
//! (`<data-dir>/member/raft.db`). Every append and vote is durable before openraft is told so.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader, Vote};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;

use super::{enc, io_err, NodeId, StorageError, TypeConfig};

/// index -> postcard(Entry)
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
/// name -> postcard(value): "vote", "committed", "purged"
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");

const LOG_CACHE_BYTES: usize = 32 << 20;

#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

fn dec<T: DeserializeOwned>(b: &[u8]) -> Result<T, StorageError> {
    postcard::from_bytes(b).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))
}

fn read_err(e: impl std::fmt::Display) -> StorageError {
    io_err(ErrorSubject::Logs, ErrorVerb::Read, e)
}

fn write_err(e: impl std::fmt::Display) -> StorageError {
    io_err(ErrorSubject::Logs, ErrorVerb::Write, e)
}

pub fn path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("member").join("raft.db")
}

impl LogStore {
    pub fn open(data_dir: &Path) -> Result<LogStore, redb::Error> {
        let p = path(data_dir);
        // The log is written once and read back soon (replication) or never: redb's default
        // 1 GiB page cache only grew the member's memory.
        let db = Database::builder()
            .set_cache_size(LOG_CACHE_BYTES)
            .create(&p)?;
        let tx = db.begin_write()?;
        tx.open_table(LOG)?;
        tx.open_table(STATE)?;
        tx.commit()?;
        Ok(LogStore { db: Arc::new(db) })
    }

    fn get_state<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, StorageError> {
        let tx = self.db.begin_read().map_err(read_err)?;
        let t = tx.open_table(STATE).map_err(read_err)?;
        match t.get(name).map_err(read_err)? {
            Some(v) => Ok(Some(dec(v.value())?)),
            None => Ok(None),
        }
    }

    /// Runs a durable write transaction off the async threads.
    async fn write(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error> + Send + 'static,
    ) -> Result<(), StorageError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || -> Result<(), redb::Error> {
            let tx = db.begin_write()?;
            f(&tx)?;
            tx.commit()?;
            Ok(())
        })
        .await
        .map_err(write_err)?
        .map_err(write_err)
    }

    /// Appends entries durably outside of Raft (`kybern store recover` on a stopped member).
    pub async fn append_now(&self, entries: Vec<Entry<TypeConfig>>) -> Result<(), StorageError> {
        let rows: Vec<(u64, Vec<u8>)> = entries.iter().map(|e| (e.log_id.index, enc(e))).collect();
        self.write(move |tx| {
            let mut t = tx.open_table(LOG)?;
            for (i, b) in &rows {
                t.insert(*i, b.as_slice())?;
            }
            Ok(())
        })
        .await
    }

    async fn put_state(&self, name: &'static str, value: Vec<u8>) -> Result<(), StorageError> {
        self.write(move |tx| {
            tx.open_table(STATE)?.insert(name, value.as_slice())?;
            Ok(())
        })
        .await
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        let tx = self.db.begin_read().map_err(read_err)?;
        let t = tx.open_table(LOG).map_err(read_err)?;
        let start = match range.start_bound() {
            Bound::Included(s) => *s,
            Bound::Excluded(s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let mut out = Vec::new();
        for row in t.range(start..).map_err(read_err)? {
            let (k, v) = row.map_err(read_err)?;
            if !range.contains(&k.value()) {
                break;
            }
            out.push(dec(v.value())?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let purged: Option<LogId<NodeId>> = self.get_state("purged")?;
        let tx = self.db.begin_read().map_err(read_err)?;
        let t = tx.open_table(LOG).map_err(read_err)?;
        let last = match t.last().map_err(read_err)? {
            Some((_, v)) => Some(dec::<Entry<TypeConfig>>(v.value())?.log_id),
            None => purged,
        };
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.put_state("vote", enc(vote)).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.get_state("vote")
    }

    async fn save_committed(&mut self, c: Option<LogId<NodeId>>) -> Result<(), StorageError> {
        self.put_state("committed", enc(&c)).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError> {
        Ok(self
            .get_state::<Option<LogId<NodeId>>>("committed")?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let rows: Vec<(u64, Vec<u8>)> = entries
            .into_iter()
            .map(|e| (e.log_id.index, enc(&e)))
            .collect();
        let res = self
            .write(move |tx| {
                let mut t = tx.open_table(LOG)?;
                for (i, b) in &rows {
                    t.insert(*i, b.as_slice())?;
                }
                Ok(())
            })
            .await;
        callback.log_io_completed(
            res.as_ref()
                .map(|_| ())
                .map_err(|e| std::io::Error::other(e.to_string())),
        );
        res
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError> {
        self.write(move |tx| {
            let mut t = tx.open_table(LOG)?;
            t.retain_in(log_id.index.., |_, _| false)?;
            Ok(())
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError> {
        let purged = enc(&log_id);
        self.write(move |tx| {
            tx.open_table(STATE)?.insert("purged", purged.as_slice())?;
            let mut t = tx.open_table(LOG)?;
            t.retain_in(..=log_id.index, |_, _| false)?;
            Ok(())
        })
        .await
    }
}
