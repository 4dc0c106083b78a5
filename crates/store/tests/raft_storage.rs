//! openraft's own storage test suite over kybern's Raft log (redb) and state machine (mvcc):
//! vote, log append/truncate/purge, applied state, membership, snapshot build and install.

use std::sync::Arc;

use mvcc::Store;
use openraft::testing::{StoreBuilder, Suite};
use store::raft::log::LogStore;
use store::raft::sm::StateMachine;
use store::raft::{StorageError, TypeConfig};
use tempfile::TempDir;

struct Fresh;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for Fresh {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::open(dir.path()).expect("open store"));
        let log = LogStore::open(dir.path()).expect("open raft log");
        let sm = StateMachine {
            store,
            dir: dir.path().join("member"),
        };
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite_passes() {
    Suite::test_all(Fresh).unwrap();
}
