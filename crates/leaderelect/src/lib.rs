//! Leader election on `coordination.k8s.io/v1` Leases, with the semantics of client-go's
//! `leaderelection` package, for components that run as several replicas of which one acts.
//!
//! * The lease records `holderIdentity`, `leaseDurationSeconds`, `acquireTime`, `renewTime` and
//!   `leaseTransitions`. A candidate never trusts another machine's clock: a lease held by someone
//!   else counts as expired once `leaseDurationSeconds` have passed, on the local clock, since this
//!   candidate last *saw the record change*.
//! * The leader renews every retry period. When it has not renewed for the renew deadline (shorter
//!   than the lease duration) it cancels its work and gives up, so it stops acting before any other
//!   candidate may consider the lease expired.
//! * On a clean shutdown the leader cancels its work, waits for it, and releases the lease
//!   (holder cleared, duration 1 s, as client-go's `ReleaseOnCancel`), so another candidate takes
//!   over at its next retry instead of after the lease duration.
//!
//! ```text
//! let cfg = args.config("kube-scheduler")?;
//! leaderelect::run(client, cfg, shutdown, |leading| async move { scheduler(leading).await }).await
//! ```

use std::time::Duration;

mod elector;

pub use elector::{run, Elector, Health};

/// Upstream's leader election flags (component-base `LeaderElectionConfiguration`).
#[derive(clap::Args, Clone, Debug)]
pub struct LeaderElectionArgs {
    /// Start a leader election client and gain leadership before executing the main loop. Enable
    /// this when running replicated components for high availability.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true")]
    pub leader_elect: bool,
    /// The duration that non-leader candidates will wait after observing a leadership renewal
    /// until attempting to acquire leadership of a led but unrenewed leader slot. This is
    /// effectively the maximum duration that a leader can be stopped before it is replaced by
    /// another candidate.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub leader_elect_lease_duration: Duration,
    /// The interval between attempts by the acting leader to renew a leadership slot before it
    /// stops leading. This must be less than the lease duration.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub leader_elect_renew_deadline: Duration,
    /// The duration the clients should wait between attempting acquisition and renewal of a
    /// leadership.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub leader_elect_retry_period: Duration,
    /// The type of resource object that is used for locking during leader election. Only
    /// `leases` is supported (upstream's default; the older endpoints/configmaps locks are gone).
    #[arg(long, default_value = "leases", value_parser = ["leases"])]
    pub leader_elect_resource_lock: String,
    /// The namespace of the resource object that is used for locking during leader election.
    #[arg(long, default_value = "kube-system")]
    pub leader_elect_resource_namespace: String,
    /// The name of the resource object that is used for locking during leader election
    /// (default: the component's name, e.g. kube-controller-manager or kube-scheduler).
    #[arg(long)]
    pub leader_elect_resource_name: Option<String>,
}

impl LeaderElectionArgs {
    /// The election settings, the lease named `default_name` unless the flag names another;
    /// an error when the durations are inconsistent (as upstream validates them).
    pub fn config(&self, default_name: &str) -> anyhow::Result<Config> {
        let cfg = Config {
            namespace: self.leader_elect_resource_namespace.clone(),
            name: self
                .leader_elect_resource_name
                .clone()
                .unwrap_or_else(|| default_name.to_string()),
            identity: default_identity(),
            lease_duration: self.leader_elect_lease_duration,
            renew_deadline: self.leader_elect_renew_deadline,
            retry_period: self.leader_elect_retry_period,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Client-go's jitter factor: waits between attempts are stretched by up to this fraction.
pub const JITTER_FACTOR: f64 = 1.2;

/// One election: which lease, who we are, and the timings.
#[derive(Clone, Debug)]
pub struct Config {
    pub namespace: String,
    pub name: String,
    /// This candidate's identity, written as `holderIdentity` (hostname + "_" + a UUID).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl Config {
    /// The checks client-go's `NewLeaderElector` makes.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.lease_duration <= self.renew_deadline {
            anyhow::bail!(
                "--leader-elect-lease-duration ({:?}) must be greater than --leader-elect-renew-deadline ({:?})",
                self.lease_duration,
                self.renew_deadline
            );
        }
        if self.renew_deadline.as_secs_f64() <= JITTER_FACTOR * self.retry_period.as_secs_f64() {
            anyhow::bail!(
                "--leader-elect-renew-deadline ({:?}) must be greater than {JITTER_FACTOR} x --leader-elect-retry-period ({:?})",
                self.renew_deadline,
                self.retry_period
            );
        }
        if self.lease_duration.is_zero() || self.retry_period.is_zero() {
            anyhow::bail!("leader election durations must be greater than zero");
        }
        if self.lease_duration.as_secs() == 0 {
            anyhow::bail!(
                "--leader-elect-lease-duration must be at least 1s (leases count whole seconds)"
            );
        }
        if self.name.is_empty() || self.identity.is_empty() {
            anyhow::bail!("leader election needs a lease name and an identity");
        }
        Ok(())
    }
}

/// `<hostname>_<uuid>`, the identity kube-controller-manager and kube-scheduler use.
pub fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}_{}", uuid::Uuid::new_v4())
}

/// A Go-style duration: `15s`, `1m30s`, `500ms`, `2h`, `1.5s` (units ns, us, µs, ms, s, m, h);
/// a bare `0` is zero.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("missing unit in duration {s:?}"))?;
        let (num, tail) = rest.split_at(num_len);
        let value: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(format!("unknown unit {unit:?} in duration {s:?}")),
        };
        total += value * scale;
        rest = next;
    }
    if !total.is_finite() || total > 1e9 {
        return Err(format!("duration {s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("15").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn validation_follows_client_go() {
        let mut c = Config {
            namespace: "kube-system".into(),
            name: "x".into(),
            identity: default_identity(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        };
        c.validate().unwrap();
        c.renew_deadline = Duration::from_secs(15);
        assert!(c.validate().is_err());
        c.renew_deadline = Duration::from_millis(2100);
        assert!(c.validate().is_err());
        assert!(c.identity.contains('_'));
    }
}
