//! The election loop: acquire, renew while leading, stop when renewal fails, release on shutdown.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::{Config, JITTER_FACTOR};

/// What a health check needs to know about this candidate (shared with the `/healthz` handler).
#[derive(Debug)]
pub struct Health {
    leading: AtomicBool,
    last_renew: Mutex<Option<Instant>>,
    lease_duration: Duration,
}

impl Health {
    fn new(lease_duration: Duration) -> Self {
        Health {
            leading: AtomicBool::new(false),
            last_renew: Mutex::new(None),
            lease_duration,
        }
    }

    /// Whether this candidate currently holds the lease and acts.
    pub fn is_leader(&self) -> bool {
        self.leading.load(Ordering::SeqCst)
    }

    /// Upstream's `leaderElection` health check: a candidate that is not leading is healthy; a
    /// leader is unhealthy when its last renewal is older than the lease duration plus `tolerance`
    /// (it should have stopped by then; something is stuck).
    pub fn check(&self, tolerance: Duration) -> Result<(), String> {
        if !self.is_leader() {
            return Ok(());
        }
        let last = *self.last_renew.lock().unwrap_or_else(|e| e.into_inner());
        match last {
            Some(t) if t.elapsed() > self.lease_duration + tolerance => Err(format!(
                "failed election to renew leadership on lease: last renewal {:?} ago",
                t.elapsed()
            )),
            _ => Ok(()),
        }
    }

    fn set(&self, leading: bool) {
        self.leading.store(leading, Ordering::SeqCst);
        if leading {
            self.renewed();
        }
    }

    fn renewed(&self) {
        *self.last_renew.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }
}

/// One candidate in one election.
pub struct Elector {
    api: Api<Lease>,
    cfg: Config,
    health: Arc<Health>,
    /// The last lease read or written (its resourceVersion makes our writes conditional).
    lease: Option<Lease>,
    /// The last record seen and when (local clock) it was first seen in that state.
    observed: Option<(LeaseSpec, Instant)>,
}

/// Why leading ended.
enum Stop {
    Shutdown,
    Lost(String),
    WorkEnded(Result<()>),
}

/// Runs `work` while this candidate leads the election `cfg` (see the crate docs). Returns
/// `Ok(())` after a clean shutdown (`shutdown` cancelled; the lease is released), the work's
/// error if it failed, and an error when leadership was lost: the caller should exit, as
/// upstream components do, and be restarted as a fresh candidate.
pub async fn run<F, Fut>(
    client: kube::Client,
    cfg: Config,
    shutdown: CancellationToken,
    work: F,
) -> Result<()>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    Elector::new(client, cfg).run(shutdown, work).await
}

impl Elector {
    pub fn new(client: kube::Client, cfg: Config) -> Self {
        let health = Arc::new(Health::new(cfg.lease_duration));
        Elector {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            health,
            lease: None,
            observed: None,
        }
    }

    /// The handle a health endpoint reads.
    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    /// See [`run`].
    pub async fn run<F, Fut>(mut self, shutdown: CancellationToken, work: F) -> Result<()>
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        let (ns, name) = (self.cfg.namespace.clone(), self.cfg.name.clone());
        info!(
            "attempting to acquire leader lease {ns}/{name} as {}",
            self.cfg.identity
        );
        if !self.acquire(&shutdown).await {
            info!("shut down before acquiring the lease {ns}/{name}");
            return Ok(());
        }
        info!(
            "successfully acquired lease {}/{}: {} is the leader",
            self.cfg.namespace, self.cfg.name, self.cfg.identity
        );
        self.health.set(true);
        let leading = CancellationToken::new();
        let mut task = tokio::spawn(work(leading.clone()));
        let stop = self.renew_loop(&shutdown, &mut task).await;
        leading.cancel();
        self.health.set(false);
        match stop {
            Stop::Lost(why) => {
                // Stop acting at once: the lease may soon be someone else's.
                task.abort();
                let _ = task.await;
                error!(
                    "leader election lost on lease {}/{}: {why}; stopped acting",
                    self.cfg.namespace, self.cfg.name
                );
                Err(anyhow!("leader election lost: {why}"))
            }
            Stop::Shutdown => {
                // Give the work the renew deadline to wind down, then release.
                if tokio::time::timeout(self.cfg.renew_deadline, &mut task)
                    .await
                    .is_err()
                {
                    warn!("work did not stop within the renew deadline; aborting it");
                    task.abort();
                }
                self.release().await;
                Ok(())
            }
            Stop::WorkEnded(res) => {
                self.release().await;
                res
            }
        }
    }

    /// Tries until the lease is ours (true) or shutdown (false), every retry period with jitter.
    async fn acquire(&mut self, shutdown: &CancellationToken) -> bool {
        loop {
            if shutdown.is_cancelled() {
                return false;
            }
            let attempt =
                tokio::time::timeout(self.cfg.renew_deadline, self.try_acquire_or_renew());
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                r = attempt => match r {
                    Ok(Ok(true)) => return true,
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => warn!("error retrieving or updating lease {}/{}: {e:#}", self.cfg.namespace, self.cfg.name),
                    Err(_) => warn!("acquiring lease {}/{} timed out", self.cfg.namespace, self.cfg.name),
                },
            }
            let wait = jittered(self.cfg.retry_period);
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Renews every retry period until shutdown, the work ends, or no renewal succeeded within
    /// the renew deadline since the last success.
    async fn renew_loop(
        &mut self,
        shutdown: &CancellationToken,
        task: &mut tokio::task::JoinHandle<Result<()>>,
    ) -> Stop {
        let mut last_ok = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Stop::Shutdown,
                r = &mut *task => {
                    return Stop::WorkEnded(match r {
                        Ok(res) => res.and(Err(anyhow!("the leader's work ended"))),
                        Err(e) => Err(anyhow!("the leader's work panicked or was aborted: {e}")),
                    })
                }
                _ = tokio::time::sleep(self.cfg.retry_period) => {}
            }
            let deadline = last_ok + self.cfg.renew_deadline;
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Stop::Lost(format!(
                    "no renewal succeeded within the renew deadline ({:?})",
                    self.cfg.renew_deadline
                ));
            }
            match tokio::time::timeout(remaining, self.try_acquire_or_renew()).await {
                Ok(Ok(true)) => {
                    last_ok = Instant::now();
                    self.health.renewed();
                }
                Ok(Ok(false)) => {
                    let holder = self.observed_holder();
                    if !holder.is_empty() && holder != self.cfg.identity {
                        return Stop::Lost(format!("the lease is now held by {holder}"));
                    }
                    warn!(
                        "failed to renew lease {}/{}",
                        self.cfg.namespace, self.cfg.name
                    );
                }
                Ok(Err(e)) => warn!(
                    "failed to renew lease {}/{}: {e:#}",
                    self.cfg.namespace, self.cfg.name
                ),
                Err(_) => {
                    return Stop::Lost(format!(
                        "renewal did not complete within the renew deadline ({:?})",
                        self.cfg.renew_deadline
                    ))
                }
            }
        }
    }

    fn observed_holder(&self) -> String {
        self.observed
            .as_ref()
            .and_then(|(s, _)| s.holder_identity.clone())
            .unwrap_or_default()
    }

    /// One attempt (client-go's `tryAcquireOrRenew`): true when we hold the lease afterwards.
    async fn try_acquire_or_renew(&mut self) -> Result<bool> {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let duration = self.cfg.lease_duration.as_secs().min(i32::MAX as u64) as i32;
        let current = match self.api.get_opt(&self.cfg.name).await? {
            Some(l) => l,
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.cfg.name.clone()),
                        namespace: Some(self.cfg.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.cfg.identity.clone()),
                        lease_duration_seconds: Some(duration),
                        acquire_time: Some(now.clone()),
                        renew_time: Some(now),
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                };
                return match self.api.create(&PostParams::default(), &lease).await {
                    Ok(created) => {
                        self.remember(created);
                        Ok(true)
                    }
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                    Err(e) => Err(e.into()),
                };
            }
        };
        let old = current.spec.clone().unwrap_or_default();
        self.observe(&old);
        let holder = old.holder_identity.clone().unwrap_or_default();
        let held_by_other = !holder.is_empty() && holder != self.cfg.identity;
        if held_by_other && self.lease_valid(&old) {
            self.lease = Some(current);
            return Ok(false);
        }
        let was_leader = holder == self.cfg.identity;
        let spec = LeaseSpec {
            holder_identity: Some(self.cfg.identity.clone()),
            lease_duration_seconds: Some(duration),
            acquire_time: if was_leader {
                old.acquire_time.clone()
            } else {
                Some(now.clone())
            },
            renew_time: Some(now),
            lease_transitions: Some(
                old.lease_transitions.unwrap_or(0) + if was_leader { 0 } else { 1 },
            ),
            ..Default::default()
        };
        let mut next = current;
        next.spec = Some(spec);
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &next)
            .await
        {
            Ok(written) => {
                if !was_leader {
                    info!(
                        "lease {}/{} taken over from {:?} ({} transitions)",
                        self.cfg.namespace,
                        self.cfg.name,
                        holder,
                        written
                            .spec
                            .as_ref()
                            .and_then(|s| s.lease_transitions)
                            .unwrap_or(0)
                    );
                }
                self.remember(written);
                Ok(true)
            }
            // Someone else wrote the lease since we read it.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Records the lease we wrote as the observed state.
    fn remember(&mut self, lease: Lease) {
        let spec = lease.spec.clone().unwrap_or_default();
        self.observed = Some((spec, Instant::now()));
        self.lease = Some(lease);
    }

    /// Notes the record read; the observation time restarts whenever the record changed.
    fn observe(&mut self, spec: &LeaseSpec) {
        let changed = self.observed.as_ref().is_none_or(|(s, _)| s != spec);
        if changed {
            let holder = spec.holder_identity.clone().unwrap_or_default();
            if self.observed_holder() != holder && !holder.is_empty() && holder != self.cfg.identity
            {
                info!(
                    "new leader on lease {}/{}: {holder}",
                    self.cfg.namespace, self.cfg.name
                );
            }
            self.observed = Some((spec.clone(), Instant::now()));
        }
    }

    /// Whether the observed record's lease has not expired by our own clock.
    fn lease_valid(&self, spec: &LeaseSpec) -> bool {
        let secs = spec.lease_duration_seconds.unwrap_or(0).max(0) as u64;
        match &self.observed {
            Some((_, seen)) => seen.elapsed() < Duration::from_secs(secs),
            None => false,
        }
    }

    /// Gives the lease up (client-go's `ReleaseOnCancel`): holder cleared, duration 1 s, so the
    /// next candidate acquires it at its next attempt. Best effort, bounded by the renew deadline.
    async fn release(&mut self) {
        let Some(mut lease) = self.lease.take() else {
            return;
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return;
        }
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        lease.spec = Some(LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_transitions: spec.lease_transitions,
            ..Default::default()
        });
        let pp = PostParams::default();
        let put = self.api.replace(&self.cfg.name, &pp, &lease);
        match tokio::time::timeout(self.cfg.renew_deadline, put).await {
            Ok(Ok(_)) => info!(
                "released lease {}/{} on shutdown",
                self.cfg.namespace, self.cfg.name
            ),
            Ok(Err(e)) => warn!(
                "could not release lease {}/{}: {e}",
                self.cfg.namespace, self.cfg.name
            ),
            Err(_) => warn!(
                "releasing lease {}/{} timed out",
                self.cfg.namespace, self.cfg.name
            ),
        }
    }
}

/// `period` stretched by a random fraction of up to `JITTER_FACTOR` (client-go's `wait.Jitter`).
fn jittered(period: Duration) -> Duration {
    let f: f64 = rand::random::<f64>() * JITTER_FACTOR;
    period + period.mul_f64(f)
}
