//! The multi-version store: owns the revision, the key index, the lessor and the watch hub over the
//! redb backend. Reads run concurrently against a committed revision; writes go through `apply`
//! (see apply.rs), one batch at a time, so that a batch is one fsync.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use etcd_api::enums::{sort_order, sort_target};
use etcd_api::*;
use parking_lot::{Mutex, RwLock, RwLockReadGuard};
use redb::{Database, ReadableDatabase, ReadableTable};
use tonic::Status;

use crate::auth::AuthState;
use crate::backend::{self, decode_value, meta, KV, LEASES, META};
use crate::index::Index;
use crate::lease::Lessor;
use crate::rev::Rev;
use crate::watch::WatchHub;
use crate::Error;

pub struct Store {
    pub(crate) path: PathBuf,
    pub(crate) db: RwLock<Database>,
    pub(crate) index: RwLock<Index>,
    /// Newest committed revision: what reads see.
    pub(crate) rev: AtomicI64,
    pub(crate) compact_rev: AtomicI64,
    pub(crate) lessor: Mutex<Lessor>,
    pub(crate) alarms: Mutex<Vec<(u64, i32)>>,
    /// Users, roles, permissions. Taken last: apply takes it while holding `index` and `lessor`,
    /// so never take those while holding it.
    pub(crate) auth: RwLock<AuthState>,
    /// Serialises writers; holds when the last durable (fsynced) commit was made.
    pub(crate) write_lock: Mutex<Syncs>,
    pub hub: WatchHub,
    pub cluster_id: u64,
    pub member_id: u64,
    pub created: bool,
}

/// How often applies are made durable. By default every apply commit is fsynced. A replicated
/// member, whose Raft log already holds every committed entry durably, may defer: then an apply is
/// fsynced only when the last durable commit is older than `lazy`, and a crash loses at most that
/// much of the state machine, which Raft re-applies from its log on restart.
#[derive(Default)]
pub(crate) struct Syncs {
    pub lazy: Option<std::time::Duration>,
    pub last: Option<std::time::Instant>,
}

impl Syncs {
    /// The durability the next commit needs (and records it when durable).
    pub fn next(&mut self) -> redb::Durability {
        let now = std::time::Instant::now();
        match (self.lazy, self.last) {
            (Some(every), Some(last)) if now.duration_since(last) < every => redb::Durability::None,
            _ => {
                self.last = Some(now);
                redb::Durability::Immediate
            }
        }
    }
}

/// What the store keeps in memory, as read from the backend.
pub(crate) struct Loaded {
    pub auth: AuthState,
    pub index: Index,
    pub lessor: Lessor,
    pub rev: i64,
    pub compact_rev: i64,
    pub alarms: Vec<(u64, i32)>,
    pub cluster_id: u64,
    pub member_id: u64,
}

impl Loaded {
    /// Rebuilds the key index and the lessor from the backend.
    pub(crate) fn read(db: &Database) -> Result<Loaded, Error> {
        let mut index = Index::default();
        let mut lessor = Lessor::default();
        let tx = db.begin_read()?;
        let m = tx.open_table(META)?;
        let cluster_id = backend::get_u64(&m, meta::CLUSTER_ID)?;
        let member_id = backend::get_u64(&m, meta::MEMBER_ID)?;
        let mut rev = backend::get_u64(&m, meta::REVISION)? as i64;
        let compact_rev = backend::get_u64(&m, meta::COMPACT_REV)? as i64;
        let alarms = match m.get(meta::ALARMS)? {
            Some(v) => decode_alarms(v.value()),
            None => Vec::new(),
        };
        let auth = AuthState::load(&tx, &m)?;
        for row in tx.open_table(LEASES)?.iter()? {
            let (id, ttl) = row?;
            lessor.grant(id.value(), ttl.value());
        }
        for row in tx.open_table(KV)?.iter()? {
            let (k, v) = row?;
            let r = Rev::from_bytes(k.value())
                .ok_or_else(|| Error::Damaged("bad revision key".into()))?;
            let (tomb, kv) = decode_value(v.value())?;
            index.restore(&kv.key, r, tomb, kv.create_revision, kv.version, kv.lease);
            if !tomb && kv.lease != 0 {
                lessor.attach(kv.lease, &kv.key);
            }
            rev = rev.max(r.main);
        }
        // A key whose newest version is attached to a lease only counts for that lease.
        for (id, l) in lessor.leases.iter_mut() {
            l.keys
                .retain(|k| index.get(k).is_some_and(|h| h.live() && h.lease == *id));
        }
        Ok(Loaded {
            auth,
            index,
            lessor,
            rev: rev.max(1),
            compact_rev,
            alarms,
            cluster_id,
            member_id,
        })
    }
}

/// Answers of etcd's KV table reader, usable on a read or a write transaction.
pub(crate) fn fetch(
    t: &impl ReadableTable<&'static [u8], &'static [u8]>,
    r: Rev,
) -> Result<PbKeyValue, Status> {
    let v = t
        .get(&r.to_bytes()[..])
        .map_err(|e| Status::internal(e.to_string()))?
        .ok_or_else(|| {
            Status::internal(format!("mvcc: revision {r:?} missing from the backend"))
        })?;
    let (_, kv) = decode_value(v.value()).map_err(Status::from)?;
    Ok(kv)
}

pub(crate) fn header(revision: i64) -> Option<PbResponseHeader> {
    Some(PbResponseHeader {
        revision,
        ..Default::default()
    })
}

/// etcd's Range over an index and a table at revision `at` (already checked against compaction).
pub(crate) fn range_at(
    index: &Index,
    t: &impl ReadableTable<&'static [u8], &'static [u8]>,
    r: &PbRangeRequest,
    at: i64,
) -> Result<PbRangeResponse, Status> {
    let filtered = r.min_mod_revision != 0
        || r.max_mod_revision != 0
        || r.min_create_revision != 0
        || r.max_create_revision != 0;
    let sorted = r.sort_order != sort_order::NONE || r.sort_target != sort_target::KEY;
    let limit = if r.limit > 0 && !filtered && !sorted {
        r.limit as usize + 1
    } else {
        0
    };
    let (revs, count) = index.range(
        &r.key,
        &r.range_end,
        at,
        if r.count_only { 1 } else { limit },
    );
    let mut kvs = Vec::new();
    if !r.count_only {
        kvs.reserve(revs.len());
        for (_, rev) in revs {
            kvs.push(fetch(t, rev)?);
        }
    }
    kvs.retain(|kv| {
        (r.max_mod_revision == 0 || kv.mod_revision <= r.max_mod_revision)
            && (r.min_mod_revision == 0 || kv.mod_revision >= r.min_mod_revision)
            && (r.max_create_revision == 0 || kv.create_revision <= r.max_create_revision)
            && (r.min_create_revision == 0 || kv.create_revision >= r.min_create_revision)
    });
    let mut order = r.sort_order;
    if r.sort_target != sort_target::KEY && order == sort_order::NONE {
        order = sort_order::ASCEND;
    }
    if order != sort_order::NONE {
        let key = |kv: &PbKeyValue| -> (i64, Vec<u8>) {
            match r.sort_target {
                sort_target::VERSION => (kv.version, Vec::new()),
                sort_target::CREATE => (kv.create_revision, Vec::new()),
                sort_target::MOD => (kv.mod_revision, Vec::new()),
                sort_target::VALUE => (0, kv.value.clone()),
                _ => (0, kv.key.clone()),
            }
        };
        // Stable in both directions: ties keep key order, as etcd.
        if order == sort_order::DESCEND {
            kvs.sort_by_key(|kv| std::cmp::Reverse(key(kv)));
        } else {
            kvs.sort_by_key(key);
        }
    }
    let mut more = false;
    if r.limit > 0 && kvs.len() > r.limit as usize {
        kvs.truncate(r.limit as usize);
        more = true;
    }
    if r.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    Ok(PbRangeResponse {
        header: header(at),
        kvs,
        more,
        count: count as i64,
    })
}

impl Store {
    /// Opens (or creates) the store in `data_dir`, rebuilding the key index and the lessor.
    pub fn open(data_dir: &Path) -> Result<Store, Error> {
        let (db, created) = backend::open(data_dir)?;
        let st = Loaded::read(&db)?;
        let rev = st.rev;
        Ok(Store {
            path: backend::db_path(data_dir),
            db: RwLock::new(db),
            index: RwLock::new(st.index),
            rev: AtomicI64::new(rev),
            compact_rev: AtomicI64::new(st.compact_rev),
            lessor: Mutex::new(st.lessor),
            alarms: Mutex::new(st.alarms),
            auth: RwLock::new(st.auth),
            write_lock: Mutex::new(Syncs::default()),
            hub: WatchHub::new(rev),
            cluster_id: st.cluster_id,
            member_id: st.member_id,
            created,
        })
    }

    /// Lets applies skip the fsync for up to `every` (see [`Syncs`]); for a state machine whose
    /// commands are durable elsewhere (a Raft log). Snapshots and `sync` stay durable.
    pub fn defer_sync(&self, every: std::time::Duration) {
        self.write_lock.lock().lazy = Some(every);
    }

    /// Makes every apply so far durable (an fsynced empty commit).
    pub fn sync(&self) -> Result<(), Error> {
        let mut w = self.write_lock.lock();
        self.sync_locked(&mut w)
    }

    pub(crate) fn sync_locked(&self, w: &mut Syncs) -> Result<(), Error> {
        let tx = self.db.read().begin_write()?;
        tx.commit()?;
        w.last = Some(std::time::Instant::now());
        Ok(())
    }

    /// A meta entry of the backend (for example the replicated store's last applied log entry).
    pub fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, Error> {
        let tx = self.db.read().begin_read()?;
        let t = tx.open_table(META)?;
        Ok(t.get(name)?.map(|v| v.value().to_vec()))
    }

    /// Gives a store just created the cluster's member and cluster ids (a replicated member's ids
    /// are derived from the cluster's configuration, as etcd's are).
    pub fn set_identity(&mut self, cluster_id: u64, member_id: u64) -> Result<(), Error> {
        let tx = self.db.get_mut().begin_write()?;
        {
            let mut m = tx.open_table(META)?;
            m.insert(meta::CLUSTER_ID, &cluster_id.to_be_bytes()[..])?;
            m.insert(meta::MEMBER_ID, &member_id.to_be_bytes()[..])?;
        }
        tx.commit()?;
        self.cluster_id = cluster_id;
        self.member_id = member_id;
        Ok(())
    }

    pub fn path(&self) -> PathBuf {
        self.path.clone()
    }

    pub fn revision(&self) -> i64 {
        self.rev.load(Ordering::Acquire)
    }

    pub fn compact_revision(&self) -> i64 {
        self.compact_rev.load(Ordering::Acquire)
    }

    pub(crate) fn begin_read(&self) -> Result<redb::ReadTransaction, Status> {
        self.db
            .read()
            .begin_read()
            .map_err(|e| Status::internal(e.to_string()))
    }

    /// Checks a requested read revision: 0 (or negative) means the current one.
    pub(crate) fn read_rev(&self, requested: i64) -> Result<i64, Status> {
        let cur = self.revision();
        if requested <= 0 {
            return Ok(cur);
        }
        if requested > cur {
            return Err(errors::future_rev());
        }
        if requested < self.compact_revision() {
            return Err(errors::compacted());
        }
        Ok(requested)
    }

    /// A Range request as etcd answers it (validation of the request itself is the caller's).
    pub fn range(&self, r: &PbRangeRequest) -> Result<PbRangeResponse, Status> {
        let index = self.index.read();
        let at = self.read_rev(r.revision)?;
        let tx = self.begin_read()?;
        let t = tx
            .open_table(KV)
            .map_err(|e| Status::internal(e.to_string()))?;
        let mut resp = range_at(&index, &t, r, at)?;
        resp.header = header(self.revision());
        Ok(resp)
    }

    /// The key's value just before revision `rev` (for a watch's prev_kv), if still kept.
    pub fn prev_kv(&self, key: &[u8], rev: i64) -> Option<PbKeyValue> {
        let index = self.index.read();
        if rev - 1 < self.compact_revision() {
            return None;
        }
        let r = index.get(key)?.at(rev - 1)?;
        let tx = self.begin_read().ok()?;
        let t = tx.open_table(KV).ok()?;
        fetch(&t, r).ok()
    }

    /// Every change with a revision in `[from, to]`, as watch events, oldest first.
    pub fn events(&self, from: i64, to: i64) -> Result<Vec<PbEvent>, Status> {
        let tx = self.begin_read()?;
        let t = tx
            .open_table(KV)
            .map_err(|e| Status::internal(e.to_string()))?;
        let lo = Rev::new(from, 0).to_bytes();
        let hi = Rev::new(to + 1, 0).to_bytes();
        let mut out = Vec::new();
        for row in t
            .range::<&[u8]>(&lo[..]..&hi[..])
            .map_err(|e| Status::internal(e.to_string()))?
        {
            let (_, v) = row.map_err(|e| Status::internal(e.to_string()))?;
            let (tomb, kv) = decode_value(v.value()).map_err(Status::from)?;
            out.push(crate::watch::event(tomb, kv));
        }
        Ok(out)
    }

    /// crc32 of every stored revision at or below `rev` (0: current) above the compaction point,
    /// as etcd's HashKV; returns (hash, hash revision, compact revision).
    pub fn hash_kv(&self, rev: i64) -> Result<(u32, i64, i64), Status> {
        let at = self.read_rev(rev)?;
        let compact = self.compact_revision();
        let tx = self.begin_read()?;
        let t = tx
            .open_table(KV)
            .map_err(|e| Status::internal(e.to_string()))?;
        let mut h = crc32fast::Hasher::new();
        h.update(b"key");
        let hi = Rev::new(at + 1, 0).to_bytes();
        for row in t
            .range::<&[u8]>(..&hi[..])
            .map_err(|e| Status::internal(e.to_string()))?
        {
            let (k, v) = row.map_err(|e| Status::internal(e.to_string()))?;
            h.update(k.value());
            h.update(v.value());
        }
        Ok((h.finalize(), at, compact))
    }

    /// crc32 of the whole backend content (etcd's Hash).
    pub fn hash(&self) -> Result<u32, Status> {
        let (kv, _, _) = self.hash_kv(0)?;
        let tx = self.begin_read()?;
        let mut h = crc32fast::Hasher::new();
        h.update(&kv.to_be_bytes());
        let t = tx
            .open_table(LEASES)
            .map_err(|e| Status::internal(e.to_string()))?;
        for row in t.iter().map_err(|e| Status::internal(e.to_string()))? {
            let (k, v) = row.map_err(|e| Status::internal(e.to_string()))?;
            h.update(&k.value().to_be_bytes());
            h.update(&v.value().to_be_bytes());
        }
        Ok(h.finalize())
    }

    /// (file size, bytes in use) of the backend.
    pub fn db_size(&self) -> (i64, i64) {
        let file = std::fs::metadata(&self.path)
            .map(|m| m.len() as i64)
            .unwrap_or(0);
        let in_use = (|| -> Option<i64> {
            let tx = self.db.read().begin_write().ok()?;
            let s = tx.stats().ok()?;
            let used = (s.allocated_pages() * s.page_size() as u64) as i64;
            tx.abort().ok()?;
            Some(used)
        })()
        .unwrap_or(file);
        (file, in_use.min(file))
    }

    pub fn lease_ids(&self) -> Vec<i64> {
        self.lessor.lock().ids()
    }

    pub fn lease_exists(&self, id: i64) -> bool {
        self.lessor.lock().contains(id)
    }

    pub fn lease_renew(&self, id: i64) -> Option<i64> {
        self.lessor.lock().renew(id)
    }

    pub fn lease_time_to_live(&self, id: i64) -> Option<(i64, i64, Vec<Vec<u8>>)> {
        self.lessor.lock().time_to_live(id)
    }

    pub fn expired_leases(&self) -> Vec<i64> {
        self.lessor.lock().expired(Instant::now())
    }

    /// The auth store, read-locked: hold it only for a check, never across an await.
    pub fn auth(&self) -> RwLockReadGuard<'_, AuthState> {
        self.auth.read()
    }

    /// Keys attached to a lease (none for an unknown lease).
    pub fn lease_keys(&self, id: i64) -> Vec<Vec<u8>> {
        self.lessor
            .lock()
            .leases
            .get(&id)
            .map(|l| l.keys.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn alarms(&self) -> Vec<(u64, i32)> {
        self.alarms.lock().clone()
    }

    pub fn has_alarm(&self, kind: i32) -> bool {
        self.alarms.lock().iter().any(|(_, a)| *a == kind)
    }

    /// Rewrites the backend file without its free space (etcd's defragment). Waits for readers
    /// in flight to finish; writers are held off by the write lock.
    pub fn defragment(&self) -> Result<(), Error> {
        let _w = self.write_lock.lock();
        let mut db = self.db.write();
        for _ in 0..4000 {
            match db.compact() {
                Ok(true) => continue,
                Ok(false) => break,
                Err(redb::CompactionError::TransactionInProgress) => {
                    std::thread::sleep(std::time::Duration::from_millis(2))
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

pub(crate) fn encode_alarms(alarms: &[(u64, i32)]) -> Vec<u8> {
    alarms
        .iter()
        .flat_map(|(m, a)| m.to_be_bytes().into_iter().chain((*a as u32).to_be_bytes()))
        .collect()
}

fn decode_alarms(b: &[u8]) -> Vec<(u64, i32)> {
    b.chunks_exact(12)
        .map(|c| {
            let m = u64::from_be_bytes(c[..8].try_into().unwrap_or([0; 8]));
            let a = u32::from_be_bytes(c[8..].try_into().unwrap_or([0; 4])) as i32;
            (m, a)
        })
        .collect()
}
