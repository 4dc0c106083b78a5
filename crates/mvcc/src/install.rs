//! Replacing a running store's contents with a snapshot: how a replicated member that fell too
//! far behind takes the leader's state. The snapshot (a bbolt file in etcd's layout, as
//! `Store::snapshot_to` writes) is imported into a scratch store, copied over the live tables in
//! one transaction, and the in-memory state is rebuilt; watchers catch up from the backend.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable};

use crate::backend::{self, meta, KV, LEASES, META};
use crate::store::Loaded;
use crate::{etcd_import, Error, Store};

impl Store {
    /// Replaces every key, revision and lease with those of the bbolt snapshot `bolt`, and sets
    /// the meta entries `extra` in the same transaction. Identity (member and cluster ids) stays.
    pub fn install_snapshot(
        self: &Arc<Self>,
        bolt: &[u8],
        extra: &[(&str, Vec<u8>)],
    ) -> Result<(), Error> {
        let _w = self.write_lock.lock();
        let member_dir = self
            .path
            .parent()
            .map(|p| p.to_path_buf())
            .unwrap_or_default();
        let scratch = member_dir.join(format!("snapshot-install-{}", rand::random::<u32>()));
        let res = (|| -> Result<(), Error> {
            etcd_import::import(bolt, &scratch, "snapshot")?;
            let src = Database::open(backend::db_path(&scratch))
                .map_err(|e| Error::Backend(e.to_string()))?;
            let rtx = src.begin_read()?;
            let db = self.db.read();
            let wtx = db.begin_write()?;
            {
                let mut kv = wtx.open_table(KV)?;
                kv.retain(|_, _| false)?;
                for row in rtx.open_table(KV)?.iter()? {
                    let (k, v) = row?;
                    kv.insert(k.value(), v.value())?;
                }
                let mut leases = wtx.open_table(LEASES)?;
                leases.retain(|_, _| false)?;
                for row in rtx.open_table(LEASES)?.iter()? {
                    let (k, v) = row?;
                    leases.insert(k.value(), v.value())?;
                }
                let from = rtx.open_table(META)?;
                let mut m = wtx.open_table(META)?;
                for name in [meta::REVISION, meta::COMPACT_REV] {
                    match from.get(name)? {
                        Some(v) => m.insert(name, v.value())?,
                        None => m.remove(name)?,
                    };
                }
                m.remove(meta::ALARMS)?;
                for (name, value) in extra {
                    m.insert(*name, value.as_slice())?;
                }
            }
            wtx.commit()?;
            Ok(())
        })();
        let _ = std::fs::remove_dir_all(&scratch);
        res?;
        let st = Loaded::read(&self.db.read())?;
        *self.index.write() = st.index;
        *self.lessor.lock() = st.lessor;
        *self.alarms.lock() = st.alarms;
        *self.auth.write() = st.auth;
        self.compact_rev.store(st.compact_rev, Ordering::Release);
        self.rev.store(st.rev, Ordering::Release);
        self.hub.desync_all(st.rev);
        self.resync();
        Ok(())
    }
}
