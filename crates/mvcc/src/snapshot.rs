//! Snapshots: a consistent copy of the backend as a bbolt file in etcd's layout followed by its
//! SHA-256 (as etcd's snapshot stream is), and restoring a snapshot into a new data directory.

use std::io::Write;
use std::path::{Path, PathBuf};

use prost::Message;
use redb::{Database, ReadableDatabase, ReadableTable};
use sha2::{Digest, Sha256};

use crate::backend::{self, meta, KV, LEASES, META};
use crate::{bolt_writer, Error, Store};

impl Store {
    /// Writes a consistent snapshot of the store to a new file in `dir` and returns its path: a
    /// bbolt database in etcd's backend layout (buckets `key`, `meta`, `lease`, ...), followed by
    /// the SHA-256 of what precedes it, as etcd's snapshot stream is. `etcdctl snapshot status`
    /// reads it and etcd's restore takes it.
    pub fn snapshot_to(&self, dir: &Path) -> Result<PathBuf, Error> {
        let path = dir.join(format!(
            "kybern-snapshot-{}-{}.db",
            std::process::id(),
            rand::random::<u32>()
        ));
        let rtx = self.db.read().begin_read()?;
        let mut keys = Vec::new();
        for row in rtx.open_table(KV)?.iter()? {
            let (k, v) = row?;
            let rev = crate::rev::Rev::from_bytes(k.value())
                .ok_or_else(|| Error::Damaged("bad revision key in the kv table".into()))?;
            let (tomb, kv) = backend::decode_value(v.value())?;
            keys.push((etcd_rev_key(rev, tomb), kv.encode_to_vec()));
        }
        let mut leases = Vec::new();
        for row in rtx.open_table(LEASES)?.iter()? {
            let (id, ttl) = row?;
            let lease = EtcdLease {
                id: id.value(),
                ttl: ttl.value(),
            };
            leases.push((
                (id.value() as u64).to_be_bytes().to_vec(),
                lease.encode_to_vec(),
            ));
        }
        leases.sort();
        let m = rtx.open_table(META)?;
        let mut metas = vec![(
            b"consistent_index".to_vec(),
            backend::get_u64(&m, meta::INDEX)?.to_be_bytes().to_vec(),
        )];
        let compacted = backend::get_u64(&m, meta::COMPACT_REV)? as i64;
        if compacted > 0 {
            let at = etcd_rev_key(crate::rev::Rev::new(compacted, 0), false);
            metas.push((b"finishedCompactRev".to_vec(), at.clone()));
            metas.push((b"scheduledCompactRev".to_vec(), at));
        }
        metas.sort();
        let bucket = |name: &str, items| bolt_writer::Bucket {
            name: name.as_bytes().to_vec(),
            items,
        };
        let buckets = vec![
            bucket("key", keys),
            bucket("lease", leases),
            bucket("meta", metas),
            bucket("alarm", vec![]),
            bucket("auth", vec![]),
            bucket("authRoles", vec![]),
            bucket("authUsers", vec![]),
            bucket("cluster", vec![]),
            bucket("members", vec![]),
            bucket("members_removed", vec![]),
        ];
        let mut data = Vec::new();
        bolt_writer::write(buckets, &mut data)?;
        let sum = Sha256::digest(&data);
        let mut f = std::fs::File::create(&path)?;
        f.write_all(&data)?;
        f.write_all(&sum)?;
        f.sync_all()?;
        Ok(path)
    }
}

/// etcd's backend key for a revision: main and sub big-endian around `_`, `t` for a tombstone.
pub fn etcd_rev_key(rev: crate::rev::Rev, tombstone: bool) -> Vec<u8> {
    let mut k = Vec::with_capacity(18);
    k.extend_from_slice(&(rev.main as u64).to_be_bytes());
    k.push(b'_');
    k.extend_from_slice(&(rev.sub as u64).to_be_bytes());
    if tombstone {
        k.push(b't');
    }
    k
}

/// etcd's `leasepb.Lease`, as stored in its `lease` bucket.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EtcdLease {
    #[prost(int64, tag = "1")]
    pub id: i64,
    #[prost(int64, tag = "2")]
    pub ttl: i64,
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
