//! The redb backend: the data directory layout, the tables, and the encoding of stored values.
//!
//! Layout: `<data-dir>/member/kybern.db`, one redb file with the tables below. A data directory that
//! holds anything else, or a file that does not open as our format, is refused untouched.

use std::path::{Path, PathBuf};

use etcd_api::PbKeyValue;
use prost::Message;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::Error;

/// revision (16 bytes) -> flag byte (0 put, 1 tombstone) + encoded mvccpb.KeyValue
pub const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
/// lease id -> granted TTL in seconds
pub const LEASES: TableDefinition<i64, i64> = TableDefinition::new("lease");
/// user name -> encoded `authpb.User` (etcd's `authUsers` bucket)
pub const AUTH_USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("auth_users");
/// role name -> encoded `authpb.Role` (etcd's `authRoles` bucket)
pub const AUTH_ROLES: TableDefinition<&str, &[u8]> = TableDefinition::new("auth_roles");
/// name -> value (see the `meta` constants)
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

pub const FORMAT: &str = "kybern-mvcc-1";
pub mod meta {
    pub const FORMAT: &str = "format";
    pub const REVISION: &str = "revision";
    pub const COMPACT_REV: &str = "compact_revision";
    pub const ALARMS: &str = "alarms";
    pub const CLUSTER_ID: &str = "cluster_id";
    pub const MEMBER_ID: &str = "member_id";
    pub const MEMBER_NAME: &str = "member_name";
    pub const TERM: &str = "raft_term";
    pub const INDEX: &str = "raft_index";
    /// 1 when auth is enabled
    pub const AUTH_ENABLED: &str = "auth_enabled";
    /// the auth store's revision (u64), 1 in a new store as etcd's
    pub const AUTH_REVISION: &str = "auth_revision";
}

pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("member").join("kybern.db")
}

/// Opens the store of `data_dir`, creating it when the directory is empty or absent.
/// Returns the database and whether it was created now.
pub fn open(data_dir: &Path) -> Result<(Database, bool), Error> {
    let path = db_path(data_dir);
    if !path.exists() {
        if data_dir.exists() && std::fs::read_dir(data_dir)?.next().is_some() {
            return Err(Error::NotOurs(format!(
                "data dir {} is not empty and holds no kybern store ({} is missing); refusing to touch it: \
                 point --data-dir at an empty or new directory",
                data_dir.display(),
                path.display()
            )));
        }
        std::fs::create_dir_all(path.parent().unwrap_or(data_dir))?;
        let db = Database::create(&path).map_err(|e| Error::Backend(e.to_string()))?;
        init_meta(&db)?;
        return Ok((db, true));
    }
    let db = Database::open(&path).map_err(|e| {
        Error::Damaged(format!(
            "{} does not open as a kybern store: {e}",
            path.display()
        ))
    })?;
    let tx = db.begin_read().map_err(|e| Error::Damaged(e.to_string()))?;
    let format = tx.open_table(META).ok().and_then(|t| {
        t.get(meta::FORMAT)
            .ok()
            .flatten()
            .map(|v| v.value().to_vec())
    });
    if format.as_deref() != Some(FORMAT.as_bytes()) {
        return Err(Error::Damaged(format!(
            "{} is not a kybern store of format {FORMAT}",
            path.display()
        )));
    }
    Ok((db, false))
}

fn init_meta(db: &Database) -> Result<(), Error> {
    let tx = db.begin_write()?;
    {
        let mut m = tx.open_table(META)?;
        m.insert(meta::FORMAT, FORMAT.as_bytes())?;
        m.insert(meta::CLUSTER_ID, &rand::random::<u64>().to_be_bytes()[..])?;
        m.insert(meta::MEMBER_ID, &rand::random::<u64>().to_be_bytes()[..])?;
        m.insert(meta::TERM, &2u64.to_be_bytes()[..])?;
        m.insert(meta::AUTH_REVISION, &1u64.to_be_bytes()[..])?;
        tx.open_table(KV)?;
        tx.open_table(LEASES)?;
        tx.open_table(AUTH_USERS)?;
        tx.open_table(AUTH_ROLES)?;
    }
    tx.commit()?;
    Ok(())
}

pub fn get_u64(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    name: &str,
) -> Result<u64, Error> {
    Ok(match t.get(name)? {
        Some(v) if v.value().len() == 8 => {
            u64::from_be_bytes(v.value().try_into().unwrap_or([0; 8]))
        }
        _ => 0,
    })
}

pub fn encode_value(tomb: bool, kv: &PbKeyValue) -> Vec<u8> {
    let mut buf = Vec::with_capacity(1 + kv.encoded_len());
    buf.push(tomb as u8);
    kv.encode(&mut buf).expect("vec has room");
    buf
}

pub fn decode_value(b: &[u8]) -> Result<(bool, PbKeyValue), Error> {
    let (flag, rest) = b
        .split_first()
        .ok_or_else(|| Error::Damaged("empty kv entry".into()))?;
    let kv = PbKeyValue::decode(rest).map_err(|e| Error::Damaged(format!("bad kv entry: {e}")))?;
    Ok((*flag == 1, kv))
}
