//! Snapshots: a consistent copy of the backend as a bbolt file in etcd's layout followed by its
//! SHA-256 (as etcd's snapshot stream is), and restoring a snapshot into a new data directory.

use std::io::Write;
use std::path::{Path, PathBuf};

use prost::Message;
use redb::{Database, ReadableDatabase, ReadableTable};
use sha2::{Digest, Sha256};

use crate::backend::{self, meta, AUTH_ROLES, AUTH_USERS, KV, LEASES, META};
use crate::etcd_import::{self, Imported};
use crate::{bbolt, bolt_writer, Error, Store};

impl Store {
    /// Writes a consistent snapshot of the store to a new file in `dir` and returns its path: a
    /// bbolt database in etcd's backend layout (buckets `key`, `meta`, `lease`, ...), followed by
    /// the SHA-256 of what precedes it, as etcd's snapshot stream is. `etcdctl snapshot status`
    /// reads it and etcd's restore takes it.
    pub fn snapshot_to(&self, dir: &Path) -> Result<PathBuf, Error> {
        Ok(self.snapshot_with_meta(dir, &[])?.0)
    }

    /// `snapshot_to`, also returning the meta entries `names` as of the snapshot (the replicated
    /// store's last applied log entry and membership).
    pub fn snapshot_with_meta(
        &self,
        dir: &Path,
        names: &[&str],
    ) -> Result<(PathBuf, Vec<Option<Vec<u8>>>), Error> {
        let path = dir.join(format!(
            "kybern-snapshot-{}-{}.db",
            std::process::id(),
            rand::random::<u32>()
        ));
        // Everything the snapshot holds is made durable first: Raft purges its log up to a
        // snapshot, so the state machine must not lose what the snapshot covers.
        let rtx = {
            let mut w = self.write_lock.lock();
            if w.lazy.is_some() {
                self.sync_locked(&mut w)?;
            }
            self.db.read().begin_read()?
        };
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
        let mut wanted = Vec::new();
        for name in names {
            wanted.push(m.get(*name)?.map(|v| v.value().to_vec()));
        }
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
        // Users and roles in etcd's buckets and encoding (a store older than auth has none).
        let mut auth_tables = Vec::new();
        for def in [AUTH_USERS, AUTH_ROLES] {
            let mut rows = Vec::new();
            match rtx.open_table(def) {
                Ok(t) => {
                    for row in t.iter()? {
                        let (k, v) = row?;
                        rows.push((k.value().as_bytes().to_vec(), v.value().to_vec()));
                    }
                }
                Err(redb::TableError::TableDoesNotExist(_)) => {}
                Err(e) => return Err(e.into()),
            }
            auth_tables.push(rows);
        }
        let auth_enabled = m.get(meta::AUTH_ENABLED)?.is_some_and(|v| v.value() == [1]);
        let auth = vec![
            (b"authEnabled".to_vec(), vec![auth_enabled as u8]),
            (
                b"authRevision".to_vec(),
                backend::get_u64(&m, meta::AUTH_REVISION)?
                    .max(1)
                    .to_be_bytes()
                    .to_vec(),
            ),
        ];
        let roles = auth_tables.pop().unwrap_or_default();
        let users = auth_tables.pop().unwrap_or_default();
        let bucket = |name: &str, items| bolt_writer::Bucket {
            name: name.as_bytes().to_vec(),
            items,
        };
        let buckets = vec![
            bucket("key", keys),
            bucket("lease", leases),
            bucket("meta", metas),
            bucket("alarm", vec![]),
            bucket("auth", auth),
            bucket("authRoles", roles),
            bucket("authUsers", users),
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
        Ok((path, wanted))
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

/// How to restore a snapshot.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Name of the restored member.
    pub name: String,
    /// Accept a file without a valid SHA-256 trailer (etcdctl's `--skip-hash-check`), such as a
    /// backend file copied out of a data directory.
    pub skip_hash_check: bool,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            name: "default".into(),
            skip_hash_check: false,
        }
    }
}

/// What a restore brought in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restored {
    /// A kybern snapshot (a redb file).
    Kybern,
    /// An etcd v3 snapshot (a bbolt file).
    Etcd(Imported),
}

/// Restores a snapshot file into `data_dir`, which must be empty or absent: either a kybern
/// snapshot or one saved from etcd v3 (`etcdctl snapshot save`, a bbolt file). The SHA-256 that
/// ends a snapshot is checked unless `skip_hash_check`. The restored member gets a new member and
/// cluster id. A refused file leaves nothing behind.
pub fn restore(file: &Path, data_dir: &Path, opts: &RestoreOptions) -> Result<Restored, Error> {
    let data = std::fs::read(file)?;
    let existed = data_dir.exists();
    if existed && std::fs::read_dir(data_dir)?.next().is_some() {
        return Err(Error::NotOurs(format!(
            "data dir {} exists and is not empty",
            data_dir.display()
        )));
    }
    // redb files start with their own magic; a bbolt meta page can be damaged, so its magic is
    // also looked for where meta 1 sits.
    let res = if !data.starts_with(b"redb") && bbolt::looks_like_bolt(&data) {
        let db = etcd_body(file, &data, opts.skip_hash_check)?;
        etcd_import::import(db, data_dir, &opts.name).map(Restored::Etcd)
    } else {
        let body = kybern_body(file, &data, opts.skip_hash_check)?;
        restore_kybern(file, body, data_dir, &opts.name).map(|()| Restored::Kybern)
    };
    if res.is_err() {
        // Leave the directory as it was found: absent, or empty.
        let _ = std::fs::remove_dir_all(data_dir.join("member"));
        if !existed {
            let _ = std::fs::remove_dir(data_dir);
        }
    }
    res
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The bbolt database of an etcd snapshot, its hash checked as etcd's restore does: a file whose
/// size is 32 past a multiple of 512 ends with the SHA-256 of what precedes it.
fn etcd_body<'a>(file: &Path, data: &'a [u8], skip: bool) -> Result<&'a [u8], Error> {
    let has_hash = data.len() % 512 == 32;
    if !has_hash {
        if skip {
            return Ok(data);
        }
        return Err(Error::Damaged(format!(
            "{}: snapshot missing hash but --skip-hash-check=false (an etcd snapshot ends with \
             the SHA-256 of its database; a db file copied from a data dir has none: pass \
             --skip-hash-check to restore it)",
            file.display()
        )));
    }
    let (body, sum) = data.split_at(data.len() - 32);
    if !skip {
        let actual = Sha256::digest(body);
        if actual.as_slice() != sum {
            return Err(Error::Damaged(format!(
                "{}: snapshot hash mismatch: the file ends with sha256 {} but its database hashes \
                 to {}; the snapshot is damaged",
                file.display(),
                hex(sum),
                hex(&actual)
            )));
        }
    }
    Ok(body)
}

/// The redb file of a kybern snapshot, without its SHA-256 trailer.
fn kybern_body<'a>(file: &Path, data: &'a [u8], skip: bool) -> Result<&'a [u8], Error> {
    let split = data.len().checked_sub(32).map(|n| data.split_at(n));
    match split {
        Some((body, sum)) if Sha256::digest(body).as_slice() == sum => Ok(body),
        _ if skip => Ok(data),
        None => Err(Error::Damaged(format!(
            "{} is too short to be a snapshot",
            file.display()
        ))),
        Some(_) => Err(Error::Damaged(format!(
            "{}: snapshot checksum mismatch (neither an etcd nor a kybern snapshot, or damaged)",
            file.display()
        ))),
    }
}

fn restore_kybern(file: &Path, body: &[u8], data_dir: &Path, name: &str) -> Result<(), Error> {
    let db_path = backend::db_path(data_dir);
    std::fs::create_dir_all(db_path.parent().unwrap_or(data_dir))?;
    std::fs::write(&db_path, body)?;
    let db = Database::open(&db_path)
        .map_err(|e| Error::Damaged(format!("{}: not a kybern snapshot: {e}", file.display())))?;
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
}
