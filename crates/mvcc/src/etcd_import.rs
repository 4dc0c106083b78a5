//! Import of an etcd v3 backend (a bbolt file, as `etcdctl snapshot save` writes it) into a new
//! kybern store.
//!
//! etcd's layout: bucket `key` maps a revision (main, big-endian; `_`; sub, big-endian; and a
//! trailing `t` for a deletion) to an mvccpb.KeyValue; bucket `lease` maps a lease id (big-endian)
//! to a leasepb.Lease; bucket `meta` holds `scheduledCompactRev` and `finishedCompactRev` (revision
//! bytes). What etcd's own restore keeps is kept: every stored revision of every key, the
//! compaction point (a compaction that was scheduled but not finished is finished here, as etcd
//! does when it starts), the current revision, and the leases with their TTLs; keys stay attached
//! to their lease through the lease field of their newest version. Membership, alarms and auth
//! are not carried over (a restore makes a new member of a new cluster; kybern serves no auth).
//!
//! The whole file is read and checked before anything is written.

use std::collections::HashSet;
use std::path::Path;

use etcd_api::PbKeyValue;
use prost::Message;

use crate::backend::{self, encode_value, meta, AUTH_ROLES, AUTH_USERS, KV, LEASES, META};
use crate::bbolt::{Bolt, BoltError, Bucket, Entry};
use crate::index::Index;
use crate::lease::MAX_LEASE_TTL;
use crate::rev::Rev;
use crate::Error;

/// etcd's leasepb.Lease, as stored in the `lease` bucket.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct LeaseRecord {
    #[prost(int64, tag = "1")]
    pub id: i64,
    #[prost(int64, tag = "2")]
    pub ttl: i64,
    #[prost(int64, tag = "3")]
    pub remaining_ttl: i64,
}

/// What an import brought in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Imported {
    /// Current revision of the store.
    pub revision: i64,
    /// Compaction point (0: never compacted).
    pub compact_revision: i64,
    /// Stored revisions (versions and deletions of keys).
    pub revisions: usize,
    /// Keys that exist at the current revision.
    pub live_keys: usize,
    pub leases: usize,
    /// What was in the file and not imported, for the operator.
    pub notes: Vec<String>,
}

impl From<BoltError> for Error {
    fn from(e: BoltError) -> Error {
        Error::Damaged(e.to_string())
    }
}

fn damaged<T>(msg: impl Into<String>) -> Result<T, Error> {
    Err(Error::Damaged(msg.into()))
}

/// Reads an etcd revision key: 17 bytes, or 18 with the tombstone mark.
fn parse_rev(k: &[u8]) -> Result<(Rev, bool), Error> {
    let tomb = match k.len() {
        17 => false,
        18 if k[17] == b't' => true,
        _ => return damaged(format!("key bucket: malformed revision key {k:02x?}")),
    };
    if k[8] != b'_' {
        return damaged(format!("key bucket: malformed revision key {k:02x?}"));
    }
    let main = u64::from_be_bytes(k[..8].try_into().unwrap_or_default());
    let sub = u64::from_be_bytes(k[9..17].try_into().unwrap_or_default());
    if main == 0 || main > i64::MAX as u64 || sub > i64::MAX as u64 {
        return damaged(format!("key bucket: revision {main}_{sub} out of range"));
    }
    Ok((Rev::new(main as i64, sub as i64), tomb))
}

/// A revision stored as a value in the `meta` bucket.
fn meta_rev(bolt: &Bolt, metab: Option<Bucket>, name: &str) -> Result<i64, Error> {
    let Some(b) = metab else { return Ok(0) };
    match bolt.get(b, name.as_bytes())? {
        None => Ok(0),
        Some(Entry::Value(v)) if v.len() == 17 && v[8] == b'_' => Ok(parse_rev(v)?.0.main),
        Some(_) => damaged(format!("meta bucket: malformed {name}")),
    }
}

/// One checked entry of the `key` bucket, as kybern stores it.
fn decode_kv(rev: Rev, tomb: bool, v: &[u8]) -> Result<PbKeyValue, Error> {
    let kv = PbKeyValue::decode(v)
        .map_err(|e| Error::Damaged(format!("key bucket: revision {rev:?}: {e}")))?;
    if kv.key.is_empty() {
        return damaged(format!("key bucket: revision {rev:?} has an empty key"));
    }
    if tomb {
        // etcd stores only the key of a deletion; kybern also keeps its revision.
        return Ok(PbKeyValue {
            key: kv.key,
            mod_revision: rev.main,
            ..Default::default()
        });
    }
    if kv.mod_revision != rev.main
        || kv.create_revision < 1
        || kv.create_revision > rev.main
        || kv.version < 1
    {
        return damaged(format!(
            "key bucket: revision {rev:?} holds inconsistent revisions (mod {}, create {}, version {})",
            kv.mod_revision, kv.create_revision, kv.version
        ));
    }
    Ok(kv)
}

/// The etcd backend in a bbolt file, checked.
/// Users, roles and the auth switch, in etcd's encoding (kybern keeps the same records).
#[derive(Default)]
struct AuthRecords {
    enabled: bool,
    revision: u64,
    users: Vec<(String, Vec<u8>)>,
    roles: Vec<(String, Vec<u8>)>,
}

struct Backend<'a> {
    bolt: &'a Bolt<'a>,
    keys: Bucket<'a>,
    auth: AuthRecords,
    leases: Vec<(i64, i64)>,
    finished_compact: i64,
    scheduled_compact: i64,
    notes: Vec<String>,
}

impl<'a> Backend<'a> {
    fn read(bolt: &'a Bolt<'a>) -> Result<Backend<'a>, Error> {
        let root = bolt.root();
        let Some(keys) = bolt.bucket(root, b"key")? else {
            return damaged("no `key` bucket: this bbolt file is not an etcd v3 backend");
        };
        let metab = bolt.bucket(root, b"meta")?;
        let finished_compact = meta_rev(bolt, metab, "finishedCompactRev")?;
        let scheduled_compact = meta_rev(bolt, metab, "scheduledCompactRev")?;
        let mut leases = Vec::new();
        if let Some(lb) = bolt.bucket(root, b"lease")? {
            bolt.for_each(lb, |k, e| -> Result<(), Error> {
                let Entry::Value(v) = e else {
                    return damaged("lease bucket: nested bucket");
                };
                let l = LeaseRecord::decode(v)
                    .map_err(|e| Error::Damaged(format!("lease bucket: {e}")))?;
                if k.len() != 8 || i64::from_be_bytes(k.try_into().unwrap_or_default()) != l.id {
                    return damaged(format!("lease bucket: key {k:02x?} is not lease {}", l.id));
                }
                if l.id == 0 || l.ttl < 1 || l.ttl > MAX_LEASE_TTL {
                    return damaged(format!("lease bucket: lease {} has TTL {}", l.id, l.ttl));
                }
                leases.push((l.id, l.ttl));
                Ok(())
            })?;
        }
        let mut notes = Vec::new();
        let mut auth = AuthRecords::default();
        if let Some(ab) = bolt.bucket(root, b"auth")? {
            if let Some(Entry::Value(v)) = bolt.get(ab, b"authEnabled")? {
                auth.enabled = v == [1];
            }
            if let Some(Entry::Value(v)) = bolt.get(ab, b"authRevision")? {
                auth.revision = v.try_into().map(u64::from_be_bytes).unwrap_or(1);
            }
        }
        for (bucket, rows) in [
            (&b"authUsers"[..], &mut auth.users),
            (&b"authRoles"[..], &mut auth.roles),
        ] {
            if let Some(b) = bolt.bucket(root, bucket)? {
                bolt.for_each(b, |k, e| -> Result<(), Error> {
                    let Entry::Value(v) = e else {
                        return damaged("auth bucket: nested bucket");
                    };
                    let name = String::from_utf8(k.to_vec())
                        .map_err(|_| Error::Damaged(format!("auth: name {k:02x?} is not UTF-8")))?;
                    rows.push((name, v.to_vec()));
                    Ok(())
                })?;
            }
        }
        let mut alarms = 0;
        if let Some(b) = bolt.bucket(root, b"alarm")? {
            bolt.for_each(b, |_, _| -> Result<(), Error> {
                alarms += 1;
                Ok(())
            })?;
        }
        if alarms > 0 {
            notes.push(format!(
                "{alarms} alarm(s) of the old members were dropped (the restored member is new)"
            ));
        }
        Ok(Backend {
            bolt,
            keys,
            auth,
            leases,
            finished_compact,
            scheduled_compact,
            notes,
        })
    }

    /// Calls `f` with every revision of the `key` bucket in order, checked.
    fn each_rev(
        &self,
        mut f: impl FnMut(Rev, bool, PbKeyValue) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let mut last = Rev::default();
        self.bolt.for_each(self.keys, |k, e| {
            let Entry::Value(v) = e else {
                return damaged("key bucket: nested bucket");
            };
            let (rev, tomb) = parse_rev(k)?;
            if rev <= last {
                return damaged(format!("key bucket: revision {rev:?} out of order"));
            }
            last = rev;
            f(rev, tomb, decode_kv(rev, tomb, v)?)
        })
    }
}

/// The plan of an import, computed from the file alone.
struct Plan {
    /// Revisions a finished compaction drops.
    dropped: HashSet<Rev>,
    imported: Imported,
}

fn plan(be: &Backend) -> Result<Plan, Error> {
    let mut index = Index::default();
    let mut revisions = 0;
    let mut last_main = 0;
    be.each_rev(|rev, tomb, kv| {
        index.restore(&kv.key, rev, tomb, kv.create_revision, kv.version, kv.lease);
        revisions += 1;
        last_main = rev.main;
        Ok(())
    })?;
    // etcd resumes a compaction that was scheduled and not finished when it restarts.
    let compact = be.finished_compact.max(be.scheduled_compact);
    let dropped: HashSet<Rev> = if compact > 0 {
        index.compact(compact).into_iter().collect()
    } else {
        HashSet::new()
    };
    let revision = last_main.max(compact).max(1);
    let live_keys = index.range(b"\0", &[0], revision, 0).1;
    let mut notes = be.notes.clone();
    if be.scheduled_compact > be.finished_compact {
        notes.push(format!(
            "finished the compaction at revision {} that etcd had scheduled",
            be.scheduled_compact
        ));
    }
    Ok(Plan {
        imported: Imported {
            revision,
            compact_revision: compact,
            revisions: revisions - dropped.len(),
            live_keys,
            leases: be.leases.len(),
            notes,
        },
        dropped,
    })
}

/// Checks `db` (the bbolt database without any hash trailer) and imports it into a new store in
/// `data_dir`, which must not hold a store yet. Nothing is created when the file is refused.
pub fn import(db: &[u8], data_dir: &Path, name: &str) -> Result<Imported, Error> {
    let bolt = Bolt::open(db)?;
    let be = Backend::read(&bolt)?;
    let plan = plan(&be)?;
    let (store, created) = backend::open(data_dir)?;
    if !created {
        return Err(Error::NotOurs(format!(
            "data dir {} already holds a store",
            data_dir.display()
        )));
    }
    let tx = store.begin_write()?;
    {
        let mut kv = tx.open_table(KV)?;
        be.each_rev(|rev, tomb, value| {
            if !plan.dropped.contains(&rev) {
                kv.insert(&rev.to_bytes()[..], encode_value(tomb, &value).as_slice())?;
            }
            Ok(())
        })?;
        let mut leases = tx.open_table(LEASES)?;
        for (id, ttl) in &be.leases {
            leases.insert(*id, *ttl)?;
        }
        let mut m = tx.open_table(META)?;
        let i = &plan.imported;
        m.insert(meta::REVISION, &(i.revision as u64).to_be_bytes()[..])?;
        if i.compact_revision > 0 {
            m.insert(
                meta::COMPACT_REV,
                &(i.compact_revision as u64).to_be_bytes()[..],
            )?;
        }
        m.insert(meta::MEMBER_NAME, name.as_bytes())?;
        m.insert(meta::AUTH_ENABLED, &[be.auth.enabled as u8][..])?;
        m.insert(
            meta::AUTH_REVISION,
            &be.auth.revision.max(1).to_be_bytes()[..],
        )?;
        let mut users = tx.open_table(AUTH_USERS)?;
        for (n, u) in &be.auth.users {
            users.insert(n.as_str(), u.as_slice())?;
        }
        let mut roles = tx.open_table(AUTH_ROLES)?;
        for (n, r) in &be.auth.roles {
            roles.insert(n.as_str(), r.as_slice())?;
        }
    }
    tx.commit()?;
    Ok(plan.imported)
}

#[cfg(test)]
#[path = "etcd_import_tests.rs"]
mod tests;
