//! The in-process store member: request checks, quota, the apply thread that batches writes into
//! one fsync, lease expiry and auto compaction. Implements the `Kv` trait; the gRPC services are
//! thin adapters over it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use etcd_api::enums::{alarm_action, alarm_type};
use etcd_api::*;
use mvcc::txn::{check_delete, check_put, check_range, check_txn, txn_has_writes};
use mvcc::{Op, OpResult, Store};
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

use crate::auth::{self, Credentials};
use crate::config::Retention;
use crate::kv::{Kv, WatchSpec, WatchStream};
use crate::raft::node::{ClusterConfig, RaftNode};

pub struct Settings {
    pub name: String,
    pub client_urls: Vec<String>,
    pub peer_urls: Vec<String>,
    pub quota: Option<u64>,
    pub max_request_bytes: u64,
    pub max_txn_ops: usize,
    pub retention: Option<Retention>,
    pub progress_interval: Duration,
    /// Lease TTLs below this are raised to it (etcd: 1.5 x election timeout, rounded up).
    pub min_lease_ttl: i64,
    /// With auth enabled, a verified client certificate's common name is the user (etcd's
    /// `--client-cert-auth`).
    pub client_cert_auth: bool,
    /// How long a simple token lives after its last use (`--auth-token-ttl`).
    pub auth_token_ttl: Duration,
    /// bcrypt cost of password hashes (`--bcrypt-cost`).
    pub bcrypt_cost: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            name: "default".into(),
            client_urls: vec![],
            peer_urls: vec![],
            quota: Some(2 << 30),
            max_request_bytes: 1_572_864,
            max_txn_ops: 128,
            retention: None,
            progress_interval: Duration::from_secs(600),
            min_lease_ttl: 2,
            client_cert_auth: false,
            auth_token_ttl: Duration::from_secs(300),
            bcrypt_cost: 10,
        }
    }
}

/// An operation, the auth epoch it was authorized at (0: not subject to auth, as the in-process
/// `Kv` and the member's own loops; `auth::AUTH_OFF`: authorized because auth was off), and where
/// to answer.
type Job = (Op, u64, oneshot::Sender<Result<OpResult, Status>>);

/// Where writes go: the local apply thread (a single-member store) or Raft.
enum Writer {
    Local(mpsc::Sender<Job>),
    Raft(Arc<RaftNode>),
}

pub struct Member {
    pub store: Arc<Store>,
    pub settings: Settings,
    writer: Writer,
    /// The term reported by a single-member store (a replicated one reports Raft's).
    term: u64,
    pub applied: Arc<AtomicU64>,
    pub started: Instant,
    pub tokens: crate::auth::Tokens,
}

/// Most operations folded into one backend transaction (one fsync).
const MAX_BATCH: usize = 4096;

impl Member {
    /// Opens the data dir and starts the apply thread and the background loops. Must be called
    /// inside a tokio runtime.
    pub fn start(
        data_dir: &std::path::Path,
        settings: Settings,
    ) -> Result<Arc<Member>, mvcc::Error> {
        let store = Arc::new(Store::open(data_dir)?);
        let (tx, rx) = mpsc::channel::<Job>(MAX_BATCH * 4);
        let applied = Arc::new(AtomicU64::new(store.revision() as u64));
        spawn_apply_thread(store.clone(), rx, applied.clone());
        Ok(Self::with_writer(
            store,
            settings,
            Writer::Local(tx),
            applied,
        ))
    }

    /// Opens the data dir as a member of a replicated store and starts Raft. A data dir that
    /// belongs to another member or cluster is refused.
    pub async fn start_replicated(
        data_dir: &std::path::Path,
        settings: Settings,
        cluster: &ClusterConfig,
    ) -> anyhow::Result<Arc<Member>> {
        let mut store = Store::open(data_dir)?;
        let cluster_id = cluster.cluster_id;
        if store.created {
            store.set_identity(cluster_id, cluster.me)?;
        } else if (store.cluster_id, store.member_id) != (cluster_id, cluster.me) {
            anyhow::bail!(
                "data dir {} belongs to member {:x} of cluster {:x}, but --name, --initial-cluster and                  --initial-cluster-token make this member {:x} of cluster {:x}; refusing to start:                  give this member an empty --data-dir, or the flags it was created with",
                data_dir.display(),
                store.member_id,
                store.cluster_id,
                cluster.me,
                cluster_id
            );
        }
        let store = Arc::new(store);
        let node = RaftNode::start(
            data_dir,
            store.clone(),
            cluster,
            settings.name.clone(),
            settings.client_urls.clone(),
        )
        .await?;
        let applied = Arc::new(AtomicU64::new(0));
        Ok(Self::with_writer(
            store,
            settings,
            Writer::Raft(node),
            applied,
        ))
    }

    fn with_writer(
        store: Arc<Store>,
        settings: Settings,
        writer: Writer,
        applied: Arc<AtomicU64>,
    ) -> Arc<Member> {
        let settings_ttl = settings.auth_token_ttl;
        let m = Arc::new(Member {
            store,
            settings,
            writer,
            term: 2,
            applied,
            started: Instant::now(),
            tokens: crate::auth::Tokens::new(settings_ttl),
        });
        tokio::spawn(lease_expiry_loop(Arc::downgrade(&m)));
        if let Some(r) = m.settings.retention {
            tokio::spawn(auto_compaction_loop(Arc::downgrade(&m), r));
        }
        m
    }

    /// Raft, when the store is replicated.
    pub fn raft(&self) -> Option<&Arc<RaftNode>> {
        match &self.writer {
            Writer::Raft(n) => Some(n),
            Writer::Local(_) => None,
        }
    }

    /// Whether this member does the cluster's timed duties (lease expiry, auto compaction): the
    /// leader of a replicated store, or a single member.
    pub fn leads(&self) -> bool {
        self.raft().is_none_or(|n| n.is_leader())
    }

    pub fn term(&self) -> u64 {
        self.raft().map_or(self.term, |n| n.term())
    }

    /// (last log index, applied index) as etcd's Status reports them.
    pub fn raft_index(&self) -> (u64, u64) {
        match self.raft() {
            Some(n) => {
                let m = n.raft.metrics().borrow().clone();
                (
                    m.last_log_index.unwrap_or(0),
                    m.last_applied.map_or(0, |l| l.index),
                )
            }
            None => {
                let i = self.applied.load(Ordering::Relaxed);
                (i, i)
            }
        }
    }

    pub fn header(&self, revision: i64) -> Option<PbResponseHeader> {
        Some(PbResponseHeader {
            cluster_id: self.store.cluster_id,
            member_id: self.store.member_id,
            revision,
            raft_term: self.term(),
        })
    }

    fn fill(&self, h: &mut Option<PbResponseHeader>) {
        let rev = h
            .as_ref()
            .map_or_else(|| self.store.revision(), |h| h.revision);
        *h = self.header(rev);
    }

    /// Sends an operation to the apply thread and waits for its answer.
    pub async fn submit(&self, op: Op) -> Result<OpResult, Status> {
        self.submit_at(op, 0).await
    }

    /// Sends an operation authorized at auth epoch `epoch` (see `Job`); it is refused if the
    /// auth store changed since (for `AUTH_OFF`: if auth was enabled since).
    pub async fn submit_at(&self, op: Op, epoch: u64) -> Result<OpResult, Status> {
        match &self.writer {
            Writer::Raft(node) => node.write(op, epoch).await,
            Writer::Local(queue) => {
                let (tx, rx) = oneshot::channel();
                queue
                    .send((op, epoch, tx))
                    .await
                    .map_err(|_| errors::stopped())?;
                rx.await.map_err(|_| errors::stopped())?
            }
        }
    }

    fn check_size(&self, m: &impl Message) -> Result<(), Status> {
        if m.encoded_len() as u64 > self.settings.max_request_bytes {
            return Err(errors::request_too_large());
        }
        Ok(())
    }

    /// etcd's quota: writes that add data are refused while NOSPACE is raised, and raise it when
    /// the backend would grow past the quota.
    async fn check_quota(&self, cost: usize) -> Result<(), Status> {
        if self.store.has_alarm(alarm_type::NOSPACE) {
            return Err(errors::no_space());
        }
        let Some(quota) = self.settings.quota else {
            return Ok(());
        };
        if cost == 0 {
            return Ok(());
        }
        let size = std::fs::metadata(mvcc::backend::db_path(&self.data_dir()))
            .map(|m| m.len())
            .unwrap_or(0);
        if size + cost as u64 > quota {
            tracing::warn!(
                size,
                quota,
                "backend size exceeds --quota-backend-bytes: raising NOSPACE alarm; \
                writes are refused until you compact, defragment and `etcdctl alarm disarm`"
            );
            let req = PbAlarmRequest {
                action: alarm_action::ACTIVATE,
                member_id: self.store.member_id,
                alarm: alarm_type::NOSPACE,
            };
            let _ = self.submit(Op::Alarm(req)).await;
            return Err(errors::no_space());
        }
        Ok(())
    }

    fn data_dir(&self) -> std::path::PathBuf {
        // <data-dir>/member/kybern.db
        self.store_path()
            .parent()
            .and_then(|p| p.parent())
            .map(|p| p.to_path_buf())
            .unwrap_or_default()
    }

    fn store_path(&self) -> std::path::PathBuf {
        self.store.path()
    }

    pub async fn alarm(&self, req: PbAlarmRequest) -> Result<PbAlarmResponse, Status> {
        match self.submit(Op::Alarm(req)).await? {
            OpResult::Alarm(mut r) => {
                self.fill(&mut r.header);
                Ok(r)
            }
            _ => Err(Status::internal("unexpected answer")),
        }
    }
}

fn put_cost(p: &PbPutRequest) -> usize {
    p.key.len() + p.value.len() + 64
}

fn txn_cost(t: &PbTxnRequest) -> usize {
    t.success
        .iter()
        .chain(&t.failure)
        .map(|op| match &op.request {
            Some(PbTxnOpRequest::RequestPut(p)) => put_cost(p),
            Some(PbTxnOpRequest::RequestTxn(n)) => txn_cost(n),
            _ => 0,
        })
        .sum()
}

fn spawn_apply_thread(store: Arc<Store>, mut rx: mpsc::Receiver<Job>, applied: Arc<AtomicU64>) {
    let handle = tokio::runtime::Handle::current();
    let is_auth = |j: &Job| matches!(j.0, Op::Auth(_));
    std::thread::Builder::new()
        .name("store-apply".into())
        .spawn(move || {
            let _rt = handle.enter();
            // An auth change is applied alone, so that the auth epoch is the same for every
            // operation of a batch and can be checked before it.
            let mut carried: Option<Job> = None;
            while let Some(first) = carried.take().or_else(|| rx.blocking_recv()) {
                let mut jobs = vec![first];
                while jobs.len() < MAX_BATCH && !is_auth(&jobs[0]) {
                    match rx.try_recv() {
                        Ok(j) if is_auth(&j) => {
                            carried = Some(j);
                            break;
                        }
                        Ok(j) => jobs.push(j),
                        Err(_) => break,
                    }
                }
                let (epoch, enabled) = {
                    let a = store.auth();
                    (a.epoch(), a.enabled())
                };
                let mut ops = Vec::with_capacity(jobs.len());
                let mut replies = Vec::with_capacity(jobs.len());
                for (op, at, reply) in jobs {
                    let stale = match at {
                        0 => false,
                        crate::auth::AUTH_OFF => enabled,
                        at => at != epoch,
                    };
                    if stale {
                        let _ = reply.send(Err(errors::auth_old_revision()));
                    } else {
                        ops.push(op);
                        replies.push(reply);
                    }
                }
                if ops.is_empty() {
                    continue;
                }
                let n = ops.len() as u64;
                match store.apply(ops) {
                    Ok(results) => {
                        applied.fetch_add(n, Ordering::Relaxed);
                        for (reply, res) in replies.into_iter().zip(results) {
                            let _ = reply.send(res);
                        }
                    }
                    Err(e) => {
                        tracing::error!("store backend failed: {e}; stopping so that nothing unacknowledged is \
                            reported as written. Check the disk and restart the member");
                        std::process::exit(1);
                    }
                }
            }
        })
        .expect("spawn apply thread");
}

async fn lease_expiry_loop(m: std::sync::Weak<Member>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let Some(m) = m.upgrade() else { return };
        if !m.leads() {
            continue;
        }
        for id in m.store.expired_leases() {
            tracing::debug!(
                lease = id,
                "lease expired; revoking it and deleting its keys"
            );
            let _ = m.submit(Op::LeaseRevoke(id)).await;
        }
    }
}

async fn auto_compaction_loop(m: std::sync::Weak<Member>, r: Retention) {
    let (every, window) = match r {
        Retention::Period(d) => ((d / 10).max(Duration::from_secs(1)), Some(d)),
        Retention::Revisions(_) => (Duration::from_secs(300), None),
    };
    let mut samples: std::collections::VecDeque<(Instant, i64)> = Default::default();
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let Some(m) = m.upgrade() else { return };
        if !m.leads() {
            continue;
        }
        let now = Instant::now();
        let cur = m.store.revision();
        samples.push_back((now, cur));
        let target = match (r, window) {
            (Retention::Revisions(n), _) => cur - n,
            (_, Some(w)) => {
                let mut t = 0;
                while let Some(&(at, rev)) = samples.front() {
                    if now.duration_since(at) >= w {
                        t = rev;
                        samples.pop_front();
                    } else {
                        break;
                    }
                }
                t
            }
            _ => 0,
        };
        if target > m.store.compact_revision() {
            match m.submit(Op::Compact(target)).await {
                Ok(_) => tracing::info!(revision = target, "auto compaction finished"),
                Err(e) => {
                    tracing::warn!(revision = target, "auto compaction failed: {}", e.message())
                }
            }
        }
    }
}

/// The requests of the `Kv` trait, also on behalf of a client (`creds`), whose request is then
/// authorized as etcd does once it is valid; `None` is the in-process caller, not subject to auth.
impl Member {
    pub async fn range_as(
        &self,
        req: PbRangeRequest,
        creds: Option<&Credentials>,
    ) -> Result<PbRangeResponse, Status> {
        check_range(&req)?;
        if let Some(c) = creds {
            self.authorize(c, |a, who| auth::check_range(a, who, &req))?;
        }
        if let (Some(node), false) = (self.raft(), req.serializable) {
            node.linearize().await?;
        }
        let mut r = self.store.range(&req)?;
        self.fill(&mut r.header);
        Ok(r)
    }

    pub async fn put_as(
        &self,
        req: PbPutRequest,
        creds: Option<&Credentials>,
    ) -> Result<PbPutResponse, Status> {
        check_put(&req)?;
        self.check_size(&req)?;
        self.check_quota(put_cost(&req)).await?;
        let epoch = match creds {
            Some(c) => self.authorize_put(c, &req)?,
            None => 0,
        };
        match self.submit_at(Op::Put(req), epoch).await? {
            OpResult::Put(mut r) => {
                self.fill(&mut r.header);
                Ok(r)
            }
            _ => Err(Status::internal("unexpected answer")),
        }
    }

    pub async fn delete_range_as(
        &self,
        req: PbDeleteRequest,
        creds: Option<&Credentials>,
    ) -> Result<PbDeleteResponse, Status> {
        check_delete(&req)?;
        self.check_size(&req)?;
        let epoch = match creds {
            Some(c) => self.authorize(c, |a, who| auth::check_delete(a, who, &req))?,
            None => 0,
        };
        match self.submit_at(Op::Delete(req), epoch).await? {
            OpResult::Delete(mut r) => {
                self.fill(&mut r.header);
                Ok(r)
            }
            _ => Err(Status::internal("unexpected answer")),
        }
    }

    pub async fn txn_as(
        &self,
        req: PbTxnRequest,
        creds: Option<&Credentials>,
    ) -> Result<PbTxnResponse, Status> {
        check_txn(&req, self.settings.max_txn_ops)?;
        self.check_size(&req)?;
        if txn_has_writes(&req) {
            if self.store.has_alarm(alarm_type::NOSPACE) {
                return Err(errors::no_space());
            }
            self.check_quota(txn_cost(&req)).await?;
        }
        let epoch = match creds {
            Some(c) => self.authorize_txn(c, &req)?,
            None => 0,
        };
        match self.submit_at(Op::Txn(req), epoch).await? {
            OpResult::Txn(mut r) => {
                self.fill(&mut r.header);
                Ok(r)
            }
            _ => Err(Status::internal("unexpected answer")),
        }
    }

    /// Compaction needs no permission in etcd 3.4, only credentials that are valid if given.
    pub async fn compact_as(
        &self,
        req: PbCompactionRequest,
        creds: Option<&Credentials>,
    ) -> Result<PbCompactionResponse, Status> {
        if let Some(c) = creds {
            self.caller(c)?;
        }
        match self.submit(Op::Compact(req.revision)).await? {
            OpResult::Compact(mut r) => {
                self.fill(&mut r.header);
                Ok(r)
            }
            _ => Err(Status::internal("unexpected answer")),
        }
    }

    /// Granting a lease needs no permission in etcd 3.4, only valid credentials if given.
    pub async fn lease_grant_as(
        &self,
        req: PbLeaseGrantRequest,
        creds: Option<&Credentials>,
    ) -> Result<PbLeaseGrantResponse, Status> {
        if req.ttl > mvcc::lease::MAX_LEASE_TTL {
            return Err(errors::lease_ttl_too_large());
        }
        self.check_quota(64).await?;
        if let Some(c) = creds {
            self.caller(c)?;
        }
        let ttl = req.ttl.max(self.settings.min_lease_ttl);
        let mut id = req.id;
        while id == 0 || (req.id == 0 && self.store.lease_exists(id)) {
            id = (rand::random::<u64>() >> 1) as i64;
        }
        match self.submit(Op::LeaseGrant { id, ttl }).await? {
            OpResult::LeaseGrant(mut r) => {
                self.fill(&mut r.header);
                Ok(r)
            }
            _ => Err(Status::internal("unexpected answer")),
        }
    }

    pub async fn lease_revoke_as(
        &self,
        req: PbLeaseRevokeRequest,
        creds: Option<&Credentials>,
    ) -> Result<PbLeaseRevokeResponse, Status> {
        let epoch = match creds {
            Some(c) => self.authorize_lease_revoke(c, req.id)?,
            None => 0,
        };
        match self.submit_at(Op::LeaseRevoke(req.id), epoch).await? {
            OpResult::LeaseRevoke(mut r) => {
                self.fill(&mut r.header);
                Ok(r)
            }
            _ => Err(Status::internal("unexpected answer")),
        }
    }
}

#[async_trait]
impl Kv for Member {
    async fn range(&self, req: PbRangeRequest) -> Result<PbRangeResponse, Status> {
        self.range_as(req, None).await
    }

    async fn put(&self, req: PbPutRequest) -> Result<PbPutResponse, Status> {
        self.put_as(req, None).await
    }

    async fn delete_range(&self, req: PbDeleteRequest) -> Result<PbDeleteResponse, Status> {
        self.delete_range_as(req, None).await
    }

    async fn txn(&self, req: PbTxnRequest) -> Result<PbTxnResponse, Status> {
        self.txn_as(req, None).await
    }

    async fn compact(&self, req: PbCompactionRequest) -> Result<PbCompactionResponse, Status> {
        self.compact_as(req, None).await
    }

    async fn watch(&self, spec: WatchSpec) -> Result<WatchStream, Status> {
        Ok(crate::watch_svc::single_watch(self, spec))
    }

    async fn lease_grant(&self, req: PbLeaseGrantRequest) -> Result<PbLeaseGrantResponse, Status> {
        self.lease_grant_as(req, None).await
    }

    async fn lease_revoke(
        &self,
        req: PbLeaseRevokeRequest,
    ) -> Result<PbLeaseRevokeResponse, Status> {
        self.lease_revoke_as(req, None).await
    }

    async fn lease_keep_alive(&self, id: i64) -> Result<PbLeaseKeepAliveResponse, Status> {
        let ttl = match self.raft() {
            Some(node) => node.keep_alive(id).await?,
            None => self.store.lease_renew(id).unwrap_or(0),
        };
        Ok(PbLeaseKeepAliveResponse {
            header: self.header(self.store.revision()),
            id,
            ttl,
        })
    }

    async fn lease_time_to_live(
        &self,
        req: PbLeaseTimeToLiveRequest,
    ) -> Result<PbLeaseTimeToLiveResponse, Status> {
        if let Some(node) = self.raft() {
            // As etcd answers it from the leader: a lease granted or revoked anywhere is seen.
            node.linearize().await?;
        }
        let header = self.header(self.store.revision());
        Ok(match self.store.lease_time_to_live(req.id) {
            Some((ttl, granted, keys)) => PbLeaseTimeToLiveResponse {
                header,
                id: req.id,
                ttl,
                granted_ttl: granted,
                keys: if req.keys { keys } else { vec![] },
            },
            None => PbLeaseTimeToLiveResponse {
                header,
                id: req.id,
                ttl: -1,
                granted_ttl: 0,
                keys: vec![],
            },
        })
    }
}
