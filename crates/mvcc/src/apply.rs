//! The write path: a batch of operations applied in one redb write transaction and one fsync.
//! Every operation is deterministic given the store's state, so the same function can later be a
//! Raft state machine's apply. Requests are assumed checked (`txn::check_*`) by the caller.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use etcd_api::enums::{alarm_action, alarm_type};
use etcd_api::*;
use redb::Table;
use tonic::Status;

use crate::auth::AuthOp;
use crate::backend::{encode_value, meta, AUTH_ROLES, AUTH_USERS, KV, LEASES, META};
use crate::index::Index;
use crate::lease::Lessor;
use crate::rev::Rev;
use crate::store::{encode_alarms, fetch, header, range_at};
use crate::txn::compare_kv;
use crate::watch::event;
use crate::{Error, Store};

#[derive(Debug, Clone)]
pub enum Op {
    Put(PbPutRequest),
    Delete(PbDeleteRequest),
    Txn(PbTxnRequest),
    Compact(i64),
    LeaseGrant {
        id: i64,
        ttl: i64,
    },
    LeaseRevoke(i64),
    Alarm(PbAlarmRequest),
    /// A change to users, roles or the auth switch; it does not move the KV revision.
    Auth(AuthOp),
}

#[derive(Debug, Clone)]
pub enum OpResult {
    Put(PbPutResponse),
    Delete(PbDeleteResponse),
    Txn(PbTxnResponse),
    Compact(PbCompactionResponse),
    LeaseGrant(PbLeaseGrantResponse),
    LeaseRevoke(PbLeaseRevokeResponse),
    Alarm(PbAlarmResponse),
    /// The auth change was applied (or was a no-op, as etcd's); the header carries the revision.
    Auth(Option<PbResponseHeader>),
}

type KvTable<'t> = Table<'t, &'static [u8], &'static [u8]>;

/// State of one etcd transaction (one main revision) while it is applied.
struct Tx<'a, 't> {
    index: &'a mut Index,
    lessor: &'a mut Lessor,
    kv: &'a mut KvTable<'t>,
    leases: &'a mut Table<'t, i64, i64>,
    /// Revision before this operation.
    cur: i64,
    sub: i64,
    events: Vec<PbEvent>,
}

impl Tx<'_, '_> {
    fn main(&self) -> i64 {
        self.cur + 1
    }

    /// The revision reads inside this operation see: its own writes included.
    fn read_at(&self) -> i64 {
        if self.sub > 0 {
            self.cur + 1
        } else {
            self.cur
        }
    }

    fn current(&self, key: &[u8]) -> Result<Option<PbKeyValue>, Status> {
        match self.index.get(key).and_then(|h| h.at(self.read_at())) {
            Some(r) => Ok(Some(fetch(self.kv, r)?)),
            None => Ok(None),
        }
    }

    fn put(&mut self, p: &PbPutRequest) -> Result<PbPutResponse, Status> {
        let prev = if p.prev_kv || p.ignore_value || p.ignore_lease {
            self.current(&p.key)?
        } else {
            None
        };
        if (p.ignore_value || p.ignore_lease) && prev.is_none() {
            return Err(errors::key_not_found());
        }
        let value = if p.ignore_value {
            prev.as_ref().map(|kv| kv.value.clone()).unwrap_or_default()
        } else {
            p.value.clone()
        };
        let lease = if p.ignore_lease {
            prev.as_ref().map_or(0, |kv| kv.lease)
        } else {
            p.lease
        };
        if lease != 0 && !self.lessor.contains(lease) {
            return Err(errors::lease_not_found());
        }
        let rev = Rev::new(self.main(), self.sub);
        self.sub += 1;
        let (create_revision, version, old_lease) = self.index.put(&p.key, rev, lease);
        if old_lease != 0 && old_lease != lease {
            self.lessor.detach(old_lease, &p.key);
        }
        if lease != 0 {
            self.lessor.attach(lease, &p.key);
        }
        let kv = PbKeyValue {
            key: p.key.clone(),
            create_revision,
            mod_revision: rev.main,
            version,
            value,
            lease,
        };
        self.kv
            .insert(&rev.to_bytes()[..], encode_value(false, &kv).as_slice())
            .map_err(internal)?;
        self.events.push(event(false, kv));
        Ok(PbPutResponse {
            header: header(rev.main),
            prev_kv: if p.prev_kv { prev } else { None },
        })
    }

    fn delete(&mut self, d: &PbDeleteRequest) -> Result<PbDeleteResponse, Status> {
        let keys = self.index.live_keys(&d.key, &d.range_end);
        let mut prev_kvs = Vec::new();
        for k in &keys {
            if d.prev_kv {
                if let Some(kv) = self.current(k)? {
                    prev_kvs.push(kv);
                }
            }
            let rev = Rev::new(self.main(), self.sub);
            self.sub += 1;
            let lease = self.index.tombstone(k, rev);
            if lease != 0 {
                self.lessor.detach(lease, k);
            }
            let kv = PbKeyValue {
                key: k.clone(),
                mod_revision: rev.main,
                ..Default::default()
            };
            self.kv
                .insert(&rev.to_bytes()[..], encode_value(true, &kv).as_slice())
                .map_err(internal)?;
            self.events.push(event(true, kv));
        }
        Ok(PbDeleteResponse {
            header: header(self.read_at()),
            deleted: keys.len() as i64,
            prev_kvs,
        })
    }

    fn compare(&self, c: &PbCompare) -> Result<bool, Status> {
        let (revs, _) = self.index.range(&c.key, &c.range_end, self.read_at(), 0);
        if revs.is_empty() {
            return Ok(
                c.target != enums::compare_target::VALUE && compare_kv(c, &PbKeyValue::default())
            );
        }
        for (_, r) in revs {
            if !compare_kv(c, &fetch(self.kv, r)?) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Checks what would fail mid-way (unknown leases, ignore_* on missing keys) before writing.
    fn precheck(&self, ops: &[PbTxnRequestOp], compact: i64) -> Result<(), Status> {
        for op in ops {
            match &op.request {
                Some(PbTxnOpRequest::RequestPut(p)) => {
                    if (p.ignore_value || p.ignore_lease) && self.current(&p.key)?.is_none() {
                        return Err(errors::key_not_found());
                    }
                    if p.lease != 0 && !self.lessor.contains(p.lease) {
                        return Err(errors::lease_not_found());
                    }
                }
                Some(PbTxnOpRequest::RequestRange(r)) if r.revision > self.cur => {
                    return Err(errors::future_rev())
                }
                Some(PbTxnOpRequest::RequestRange(r)) if r.revision > 0 && r.revision < compact => {
                    return Err(errors::compacted())
                }
                Some(PbTxnOpRequest::RequestTxn(t)) => {
                    let ok = self.all(&t.compare)?;
                    self.precheck(if ok { &t.success } else { &t.failure }, compact)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn all(&self, cs: &[PbCompare]) -> Result<bool, Status> {
        for c in cs {
            if !self.compare(c)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn txn(&mut self, t: &PbTxnRequest, compact: i64) -> Result<PbTxnResponse, Status> {
        let succeeded = self.all(&t.compare)?;
        let ops = if succeeded { &t.success } else { &t.failure };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let resp = match &op.request {
                Some(PbTxnOpRequest::RequestRange(r)) => {
                    let at = if r.revision > 0 {
                        r.revision
                    } else {
                        self.read_at()
                    };
                    if at < compact {
                        return Err(errors::compacted());
                    }
                    PbTxnOpResponse::ResponseRange(range_at(self.index, self.kv, r, at)?)
                }
                Some(PbTxnOpRequest::RequestPut(p)) => PbTxnOpResponse::ResponsePut(self.put(p)?),
                Some(PbTxnOpRequest::RequestDeleteRange(d)) => {
                    PbTxnOpResponse::ResponseDeleteRange(self.delete(d)?)
                }
                Some(PbTxnOpRequest::RequestTxn(n)) => {
                    PbTxnOpResponse::ResponseTxn(self.txn(n, compact)?)
                }
                None => return Err(errors::key_not_found()),
            };
            responses.push(PbResponseOp {
                response: Some(resp),
            });
        }
        Ok(PbTxnResponse {
            header: header(self.read_at()),
            succeeded,
            responses,
        })
    }

    fn revoke(&mut self, id: i64) -> Result<(), Status> {
        let keys: Vec<Vec<u8>> = match self.lessor.leases.get(&id) {
            Some(l) => l.keys.iter().cloned().collect(),
            None => return Err(errors::lease_not_found()),
        };
        for k in keys {
            self.delete(&PbDeleteRequest {
                key: k,
                ..Default::default()
            })?;
        }
        self.lessor.leases.remove(&id);
        self.leases.remove(id).map_err(internal)?;
        Ok(())
    }
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

impl Store {
    /// Applies `ops` in order in one backend transaction; each answer is that of etcd. The outer
    /// error is a backend failure, after which the store must not be used.
    pub fn apply(self: &Arc<Self>, ops: Vec<Op>) -> Result<Vec<Result<OpResult, Status>>, Error> {
        self.apply_with_meta(ops, &[])
    }

    /// `apply`, also setting the meta entries `extra` in the same backend transaction (the
    /// replicated store records the last applied log entry this way).
    pub fn apply_with_meta(
        self: &Arc<Self>,
        ops: Vec<Op>,
        extra: &[(&str, Vec<u8>)],
    ) -> Result<Vec<Result<OpResult, Status>>, Error> {
        let mut w = self.write_lock.lock();
        let mut wtx = self.db.read().begin_write()?;
        wtx.set_durability(w.next())
            .map_err(|e| Error::Backend(e.to_string()))?;
        let mut cur = self.revision();
        let mut results = Vec::with_capacity(ops.len());
        let mut published: Vec<(i64, Vec<PbEvent>)> = Vec::new();
        let mut compacted_to = None;
        {
            let mut kv = wtx.open_table(KV)?;
            let mut leases = wtx.open_table(LEASES)?;
            let mut metat = wtx.open_table(META)?;
            for op in ops {
                let mut index = self.index.write();
                let mut lessor = self.lessor.lock();
                let compact = compacted_to.unwrap_or_else(|| self.compact_revision());
                let mut tx = Tx {
                    index: &mut index,
                    lessor: &mut lessor,
                    kv: &mut kv,
                    leases: &mut leases,
                    cur,
                    sub: 0,
                    events: Vec::new(),
                };
                let res = match op {
                    Op::Put(p) => tx.put(&p).map(OpResult::Put),
                    Op::Delete(d) => tx.delete(&d).map(OpResult::Delete),
                    Op::Txn(t) => {
                        let ok = tx.all(&t.compare);
                        match ok.and_then(|ok| {
                            tx.precheck(if ok { &t.success } else { &t.failure }, compact)
                        }) {
                            Ok(()) => tx.txn(&t, compact).map(OpResult::Txn),
                            Err(e) => Err(e),
                        }
                    }
                    Op::Compact(rev) => {
                        if rev <= compact {
                            Err(errors::compacted())
                        } else if rev > cur {
                            Err(errors::future_rev())
                        } else {
                            for r in tx.index.compact(rev) {
                                tx.kv.remove(&r.to_bytes()[..])?;
                            }
                            metat.insert(meta::COMPACT_REV, &(rev as u64).to_be_bytes()[..])?;
                            compacted_to = Some(rev);
                            Ok(OpResult::Compact(PbCompactionResponse {
                                header: header(cur),
                            }))
                        }
                    }
                    Op::LeaseGrant { id, ttl } => {
                        if tx.lessor.contains(id) {
                            Err(errors::lease_exist())
                        } else {
                            tx.leases.insert(id, ttl)?;
                            tx.lessor.grant(id, ttl);
                            Ok(OpResult::LeaseGrant(PbLeaseGrantResponse {
                                header: header(cur),
                                id,
                                ttl,
                                error: String::new(),
                            }))
                        }
                    }
                    Op::LeaseRevoke(id) => tx.revoke(id).map(|()| {
                        OpResult::LeaseRevoke(PbLeaseRevokeResponse {
                            header: header(tx.read_at()),
                        })
                    }),
                    Op::Alarm(a) => {
                        let mut alarms = self.alarms.lock();
                        let r = apply_alarm(&mut alarms, &a, self.member_id);
                        metat.insert(meta::ALARMS, encode_alarms(&alarms).as_slice())?;
                        Ok(OpResult::Alarm(PbAlarmResponse {
                            header: header(cur),
                            alarms: r,
                        }))
                    }
                    Op::Auth(a) => {
                        let mut auth = self.auth.write();
                        match auth.apply(&a) {
                            Ok(ch) => {
                                if !ch.is_empty() {
                                    let mut users = wtx.open_table(AUTH_USERS)?;
                                    let mut roles = wtx.open_table(AUTH_ROLES)?;
                                    auth.persist(&ch, &mut users, &mut roles, &mut metat)?;
                                }
                                Ok(OpResult::Auth(header(cur)))
                            }
                            Err(e) => Err(e),
                        }
                    }
                };
                let ok = res.is_ok();
                if !ok && tx.sub > 0 {
                    // A failure after writes cannot be undone in place: give up the whole batch.
                    return Err(Error::Backend(
                        "operation failed after partial writes".into(),
                    ));
                }
                if ok && tx.sub > 0 {
                    cur += 1;
                    published.push((cur, std::mem::take(&mut tx.events)));
                }
                results.push(res);
            }
            metat.insert(meta::REVISION, &(cur as u64).to_be_bytes()[..])?;
            for (name, value) in extra {
                metat.insert(*name, value.as_slice())?;
            }
        }
        wtx.commit()?;
        if let Some(rev) = compacted_to {
            self.compact_rev.store(rev, Ordering::Release);
        }
        self.rev.store(cur, Ordering::Release);
        for (rev, events) in &published {
            self.hub.publish(*rev, events);
        }
        self.resync();
        Ok(results)
    }
}

fn apply_alarm(alarms: &mut Vec<(u64, i32)>, a: &PbAlarmRequest, me: u64) -> Vec<PbAlarmMember> {
    let member = if a.member_id == 0 { me } else { a.member_id };
    let out = |v: &[(u64, i32)]| {
        v.iter()
            .map(|(m, t)| PbAlarmMember {
                member_id: *m,
                alarm: *t,
            })
            .collect()
    };
    match a.action {
        alarm_action::ACTIVATE if a.alarm != alarm_type::NONE => {
            if !alarms.contains(&(member, a.alarm)) {
                alarms.push((member, a.alarm));
            }
            out(&[(member, a.alarm)])
        }
        alarm_action::DEACTIVATE => {
            let gone: Vec<(u64, i32)> = alarms
                .iter()
                .copied()
                .filter(|(m, t)| *m == member && (a.alarm == alarm_type::NONE || *t == a.alarm))
                .collect();
            alarms.retain(|x| !gone.contains(x));
            out(&gone)
        }
        _ => out(alarms),
    }
}
