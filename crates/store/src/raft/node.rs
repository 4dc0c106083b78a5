//! A member of a replicated store: openraft over the log store, the mvcc state machine and the
//! peer network, plus what the member's client-facing code asks of it: write through the leader,
//! wait for a linearizable read point, renew a lease where expiry is decided.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use etcd_api::errors;
use mvcc::{Op, OpResult, Store};
use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::SnapshotPolicy;
use tonic::Status;

use super::log::LogStore;
use super::network::{CallError, Network, Peers};
use super::sm::StateMachine;
use super::{Cmd, MemberInfo, NodeId, Raft, Reply};

/// How long a write or a linearizable read may wait for a leader and its answer (etcd: 5 s plus
/// two election timeouts).
fn request_timeout(election: Duration) -> Duration {
    Duration::from_secs(5) + 2 * election
}

/// The static configuration a member starts with (etcd's `--initial-cluster*` flags).
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub me: NodeId,
    pub cluster_id: u64,
    pub members: BTreeMap<NodeId, MemberInfo>,
    /// `--initial-cluster-state new`: initialize the cluster when the log is empty.
    pub new_cluster: bool,
    pub token: String,
    pub heartbeat: Duration,
    pub election: Duration,
    /// Committed entries between two snapshots (`--snapshot-count`).
    pub snapshot_count: u64,
    /// Entries kept after a snapshot (`--experimental-snapshot-catchup-entries`).
    pub catchup_entries: u64,
    /// How often the leader compares members' HashKV (`--experimental-corrupt-check-time`; zero:
    /// never).
    pub corrupt_check: Duration,
    /// How https:// peer URLs are dialed (the `--peer-*` TLS flags).
    pub peer_tls: Option<Arc<rustls::ClientConfig>>,
}

/// Parses `--initial-cluster` (`name=url,name=url,...`; a name may repeat for several URLs) into
/// members keyed by their etcd member id.
pub fn parse_initial_cluster(s: &str, token: &str) -> Result<BTreeMap<NodeId, MemberInfo>, String> {
    let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, url) = part
            .split_once('=')
            .ok_or_else(|| format!("--initial-cluster: {part:?} is not NAME=PEER-URL"))?;
        url::Url::parse(url).map_err(|e| format!("--initial-cluster: {url:?}: {e}"))?;
        by_name
            .entry(name.to_string())
            .or_default()
            .push(url.trim_end_matches('/').to_string());
    }
    if by_name.is_empty() {
        return Err("--initial-cluster is empty".into());
    }
    Ok(by_name
        .into_iter()
        .map(|(name, peer_urls)| {
            (
                super::member_id(&peer_urls, token),
                MemberInfo {
                    name,
                    peer_urls,
                    auto_promote: false,
                },
            )
        })
        .collect())
}

pub struct RaftNode {
    pub raft: Raft,
    pub id: NodeId,
    pub peers: Peers,
    pub store: Arc<Store>,
    pub name: String,
    pub client_urls: Vec<String>,
    /// `--initial-cluster-token`, part of new members' ids.
    pub token: String,
    /// Becomes true when this member has been removed from the cluster.
    pub removed: tokio::sync::watch::Receiver<bool>,
    timeout: Duration,
}

impl RaftNode {
    pub async fn start(
        data_dir: &Path,
        store: Arc<Store>,
        cfg: &ClusterConfig,
        name: String,
        client_urls: Vec<String>,
    ) -> anyhow::Result<Arc<RaftNode>> {
        let ms = |d: Duration| d.as_millis() as u64;
        let config = openraft::Config {
            cluster_name: cfg.token.clone(),
            heartbeat_interval: ms(cfg.heartbeat),
            // openraft's voters refuse a candidate until `election_timeout_max` has passed since
            // they last heard the leader (its stand-in for pre-vote), so a candidate's first try
            // after a leader dies always fails and the second wins. Timers in [E/2, E) thus give
            // failover in about 1.5 E, as etcd's [E, 2E) with pre-vote does; with [E, 2E) it was 3 E.
            election_timeout_min: (ms(cfg.election) / 2).max(ms(cfg.heartbeat) + 1),
            election_timeout_max: ms(cfg.election),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.snapshot_count),
            max_in_snapshot_log_to_keep: cfg.catchup_entries,
            ..Default::default()
        }
        .validate()
        .context("raft configuration (--heartbeat-interval, --election-timeout)")?;
        // The log is fsynced per batch; the state machine only every second (and before each
        // snapshot): after a crash Raft re-applies the rest from the log.
        store.defer_sync(Duration::from_secs(1));
        let log = LogStore::open(data_dir).context("opening the raft log")?;
        let peers = Peers::new(cfg.peer_tls.clone()).with_cluster(cfg.cluster_id);
        let sm = StateMachine {
            store: store.clone(),
            dir: data_dir.join("member"),
        };
        let network = Network {
            peers: peers.clone(),
        };
        let raft = Raft::new(cfg.me, Arc::new(config), network, log, sm)
            .await
            .context("starting raft")?;
        if cfg.new_cluster {
            match raft.initialize(cfg.members.clone()).await {
                Ok(()) => tracing::info!(members = cfg.members.len(), "initialized a new cluster"),
                Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
                    tracing::info!("cluster already initialized; resuming from the log")
                }
                Err(e) => anyhow::bail!("cannot initialize the cluster: {e}"),
            }
        }
        let (removed_tx, removed_rx) = tokio::sync::watch::channel(false);
        let node = Arc::new(RaftNode {
            raft,
            id: cfg.me,
            peers,
            store,
            name,
            client_urls,
            token: cfg.token.clone(),
            removed: removed_rx,
            timeout: request_timeout(cfg.election),
        });
        tokio::spawn(watch_removal(Arc::downgrade(&node), removed_tx));
        tokio::spawn(renew_leases_on_election(Arc::downgrade(&node)));
        tokio::spawn(super::membership::promote_learners(Arc::downgrade(&node)));
        if !cfg.corrupt_check.is_zero() {
            tokio::spawn(super::corrupt::check_loop(
                Arc::downgrade(&node),
                cfg.corrupt_check,
            ));
        }
        Ok(node)
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.id)
    }

    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }

    /// The leader as this member knows it.
    pub fn leader(&self) -> Option<(NodeId, MemberInfo)> {
        let m = self.raft.metrics().borrow().clone();
        let id = m.current_leader?;
        let node = m.membership_config.membership().get_node(&id)?.clone();
        Some((id, node))
    }

    /// Every member with whether it is a learner, from the current membership.
    pub fn members(&self) -> Vec<(NodeId, MemberInfo, bool)> {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, n)| (*id, n.clone(), !voters.contains(id)))
            .collect()
    }

    /// Proposes `op` if this member leads: the log index it was applied at (0 when it failed
    /// before) and its answer; `None` when this member does not lead.
    pub async fn write_as_leader(&self, cmd: Cmd) -> Option<(u64, Reply)> {
        match self.raft.client_write(cmd).await {
            Ok(r) => Some((r.log_id.index, r.data)),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => None,
            Err(RaftError::APIError(e)) => {
                Some((0, Reply(Some(Err(Status::internal(e.to_string()))))))
            }
            Err(RaftError::Fatal(_)) => Some((0, Reply(Some(Err(errors::stopped()))))),
        }
    }

    /// The auth revision to carry for a request checked at this member's auth epoch `epoch`
    /// (see `crate::auth`): refused at once when this member's auth store changed since the check.
    fn auth_revision(&self, epoch: u64) -> Result<u64, Status> {
        let a = self.store.auth();
        match epoch {
            0 => Ok(0),
            crate::auth::AUTH_OFF if a.enabled() => Err(errors::auth_old_revision()),
            crate::auth::AUTH_OFF => Ok(0),
            e if e != a.epoch() => Err(errors::auth_old_revision()),
            _ => Ok(a.revision()),
        }
    }

    /// Commits `op` through the leader (this member or another) and returns its answer. `epoch`
    /// is the auth epoch the request was authorized at here; the command carries the matching
    /// auth revision, which every member checks again when it applies the command.
    pub async fn write(&self, op: Op, epoch: u64) -> Result<OpResult, Status> {
        let cmd = Cmd(op, self.auth_revision(epoch)?);
        let deadline = Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.is_leader() {
                if let Some((_, r)) = self.write_as_leader(cmd.clone()).await {
                    return unwrap(r);
                }
            } else if let Some((_, node)) = self.leader() {
                match self
                    .peers
                    .call::<Cmd, (u64, Reply)>(&node, "/raft/forward", &cmd, left)
                    .await
                {
                    Ok((index, r)) => {
                        // Answer once this member has applied the write too, as etcd does: what
                        // a client does next here (a read, a watch) sees it.
                        let left = deadline.saturating_duration_since(Instant::now());
                        let _ = self
                            .raft
                            .wait(Some(left))
                            .applied_index_at_least(Some(index), "forwarded write")
                            .await;
                        return unwrap(r);
                    }
                    // Nothing was applied: the leader moved or is down; look again.
                    Err(CallError::Unreachable(..)) | Err(CallError::Refused(..)) => {}
                    Err(e @ CallError::Unknown(..)) => {
                        tracing::warn!("forwarded write has an unknown outcome: {e}");
                        return Err(errors::timeout());
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(self.no_answer());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn no_answer(&self) -> Status {
        if self.leader().is_none() {
            errors::no_leader()
        } else {
            errors::timeout()
        }
    }

    /// Waits until this member has applied everything committed before the call (etcd's
    /// ReadIndex): a read made afterwards is linearizable.
    pub async fn linearize(&self) -> Result<(), Status> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.is_leader() {
                if self.raft.ensure_linearizable().await.is_ok() {
                    return Ok(());
                }
            } else if let Some((_, node)) = self.leader() {
                if let Ok(index) = self
                    .peers
                    .call::<(), u64>(&node, "/raft/read_index", &(), left)
                    .await
                {
                    let waited = self
                        .raft
                        .wait(Some(left))
                        .applied_index_at_least(Some(index), "read index")
                        .await;
                    if waited.is_ok() {
                        return Ok(());
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(self.no_answer());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Renews a lease where expiry is decided (the leader); the TTL left, 0 when it is gone.
    pub async fn keep_alive(&self, id: i64) -> Result<i64, Status> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.is_leader() {
                return Ok(self.store.lease_renew(id).unwrap_or(0));
            }
            if let Some((_, node)) = self.leader() {
                if let Ok(ttl) = self
                    .peers
                    .call::<i64, i64>(&node, "/raft/keepalive", &id, left)
                    .await
                {
                    // Followers keep their lessor close too, for time-to-live answers.
                    self.store.lease_renew(id);
                    return Ok(ttl);
                }
            }
            if Instant::now() >= deadline {
                return Err(self.no_answer());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A member's published name and client URLs (this member's own without asking).
    pub async fn info_of(&self, id: NodeId, node: &MemberInfo) -> (String, Vec<String>) {
        if id == self.id {
            return (self.name.clone(), self.client_urls.clone());
        }
        self.peers
            .call::<(), (String, Vec<String>)>(node, "/raft/info", &(), Duration::from_millis(300))
            .await
            .unwrap_or_else(|_| (node.name.clone(), Vec::new()))
    }
}

fn unwrap(r: Reply) -> Result<OpResult, Status> {
    r.0.unwrap_or_else(|| Err(Status::internal("the log entry carried no command")))
}

/// A new leader starts every lease afresh (etcd's lessor promotion): the old leader's clock for
/// them is gone, so their holders get a full TTL to keep them alive here.
async fn renew_leases_on_election(node: std::sync::Weak<RaftNode>) {
    let Some(mut metrics) = node.upgrade().map(|n| n.raft.metrics()) else {
        return;
    };
    let mut was_leader = false;
    while metrics.changed().await.is_ok() {
        let Some(n) = node.upgrade() else { return };
        let leader = metrics.borrow().current_leader == Some(n.id);
        if leader && !was_leader {
            let ids = n.store.lease_ids();
            tracing::info!(
                term = n.term(),
                leases = ids.len(),
                "became the leader; renewing every lease"
            );
            for id in ids {
                n.store.lease_renew(id);
            }
        }
        was_leader = leader;
    }
}

/// Tells when this member has been removed: its id left the membership it knows, or the leader's
/// membership no longer has it (a removed follower is not sent the change that removed it).
async fn watch_removal(node: std::sync::Weak<RaftNode>, removed: tokio::sync::watch::Sender<bool>) {
    let mut was_member = false;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let Some(n) = node.upgrade() else { return };
        let mine = n.members().iter().any(|(id, _, _)| *id == n.id);
        let mut gone = was_member && !mine;
        if was_member && !gone && !n.is_leader() {
            if let Some((_, leader)) = n.leader() {
                let theirs = n
                    .peers
                    .call::<(), (u64, Vec<(NodeId, MemberInfo)>)>(
                        &leader,
                        "/raft/members",
                        &(),
                        Duration::from_secs(1),
                    )
                    .await;
                if let Ok((_, list)) = theirs {
                    gone = !list.iter().any(|(id, _)| *id == n.id);
                }
            }
        }
        if gone {
            tracing::error!(
                member = %format!("{:x}", n.id),
                "this member has been permanently removed from the cluster; stopping. To use this \
                 machine again, add it with `etcdctl member add` and start it with an empty --data-dir"
            );
            let _ = removed.send(true);
            return;
        }
        was_member |= mine;
    }
}
