//! Snapshots: a consistent copy of the backend as one redb file followed by its SHA-256 (as etcd
//! appends one to its snapshot stream), and restoring such a file into a new data directory.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable};
use sha2::{Digest, Sha256};

use crate::backend::{self, meta, AUTH_ROLES, AUTH_USERS, KV, LEASES, META};
use crate::{Error, Store};

impl Store {
    /// Writes a consistent snapshot of the store to a new file in `dir` and returns its path. The
    /// file ends with the SHA-256 of what precedes it.
    pub fn snapshot_to(&self, dir: &Path) -> Result<PathBuf, Error> {
        let path = dir.join(format!(
            "kybern-snapshot-{}-{}.db",
            std::process::id(),
            rand::random::<u32>()
        ));
        let rtx = self.db.read().begin_read()?;
        {
            let out = Database::create(&path)?;
            let wtx = out.begin_write()?;
            {
                let mut kv = wtx.open_table(KV)?;
                for row in rtx.open_table(KV)?.iter()? {
                    let (k, v) = row?;
                    kv.insert(k.value(), v.value())?;
                }
                let mut l = wtx.open_table(LEASES)?;
                for row in rtx.open_table(LEASES)?.iter()? {
                    let (k, v) = row?;
                    l.insert(k.value(), v.value())?;
                }
                // Users and roles go along, as in etcd's snapshot (a store older than auth has none).
                for def in [AUTH_USERS, AUTH_ROLES] {
                    let mut t = wtx.open_table(def)?;
                    match rtx.open_table(def) {
                        Ok(src) => {
                            for row in src.iter()? {
                                let (k, v) = row?;
                                t.insert(k.value(), v.value())?;
                            }
                        }
                        Err(redb::TableError::TableDoesNotExist(_)) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                let mut m = wtx.open_table(META)?;
                for row in rtx.open_table(META)?.iter()? {
                    let (k, v) = row?;
                    m.insert(k.value(), v.value())?;
                }
                m.insert(meta::REVISION, &(self.revision() as u64).to_be_bytes()[..])?;
            }
            wtx.commit()?;
        }
        let mut data = Vec::new();
        std::fs::File::open(&path)?.read_to_end(&mut data)?;
        let sum = Sha256::digest(&data);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)?
            .write_all(&sum)?;
        Ok(path)
    }
}

/// Restores a snapshot file (from `etcdctl snapshot save` against kybern) into `data_dir`, which
/// must be empty or absent. The restored member gets a new member and cluster id.
pub fn restore(file: &Path, data_dir: &Path, name: &str) -> Result<(), Error> {
    let data = std::fs::read(file)?;
    if data.len() < 32 {
        return Err(Error::Damaged(format!(
            "{} is too short to be a snapshot",
            file.display()
        )));
    }
    let (body, sum) = data.split_at(data.len() - 32);
    if Sha256::digest(body).as_slice() != sum {
        return Err(Error::Damaged(format!(
            "{}: snapshot checksum mismatch (not a kybern snapshot, or damaged)",
            file.display()
        )));
    }
    if data_dir.exists() && std::fs::read_dir(data_dir)?.next().is_some() {
        return Err(Error::NotOurs(format!(
            "data dir {} exists and is not empty",
            data_dir.display()
        )));
    }
    let db_path = backend::db_path(data_dir);
    std::fs::create_dir_all(db_path.parent().unwrap_or(data_dir))?;
    std::fs::write(&db_path, body)?;
    let fixed = (|| -> Result<(), Error> {
        let db = Database::open(&db_path).map_err(|e| {
            Error::Damaged(format!("{}: not a kybern snapshot: {e}", file.display()))
        })?;
        let tx = db.begin_write()?;
        {
            let mut m = tx.open_table(META)?;
            let format = m.get(meta::FORMAT)?.map(|v| v.value().to_vec());
            if format.as_deref() != Some(backend::FORMAT.as_bytes()) {
                return Err(Error::Damaged(format!(
                    "{}: not a kybern snapshot",
                    file.display()
                )));
            }
            m.insert(meta::CLUSTER_ID, &rand::random::<u64>().to_be_bytes()[..])?;
            m.insert(meta::MEMBER_ID, &rand::random::<u64>().to_be_bytes()[..])?;
            m.insert(meta::MEMBER_NAME, name.as_bytes())?;
            m.remove(meta::ALARMS)?;
        }
        tx.commit()?;
        let _ = db.begin_read()?;
        Ok(())
    })();
    if fixed.is_err() {
        let _ = std::fs::remove_dir_all(data_dir.join("member"));
    }
    fixed
}
