//! `kybern controller-manager`: the kube-controller-manager of kybern. One replica of several
//! wins a Lease (`kube-system/kube-controller-manager`) and runs the enabled controllers; when it
//! loses the lease it stops them at once and exits, as upstream does.
//!
//! Every controller is a module `src/<name>.rs` with `pub async fn run(client: kube::Client) ->
//! anyhow::Result<()>` that runs until it fails, built on kube-runtime reflectors with an
//! idempotent reconcile function driven by desired state. [`CONTROLLERS`] lists them by their
//! upstream names; `--controllers` picks among them.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub mod daemonset;
pub mod deployment;
pub mod endpoints;
pub mod endpointslice;
pub mod events;
pub mod garbagecollector;
pub mod job;
mod kit;
pub mod metrics;
pub mod namespace;
pub mod nodelifecycle;
pub mod replicaset;
pub mod replicationcontroller;
mod server;
pub mod serviceaccount;
pub mod taint_eviction;
pub mod ttl_after_finished;
pub mod util;

/// A controller's entry point.
pub type RunFn = fn(kube::Client) -> BoxFuture<'static, Result<()>>;

/// Every controller, by its upstream name (as `--controllers` takes them).
pub static CONTROLLERS: &[(&str, RunFn)] = &[
    ("deployment-controller", |c| Box::pin(deployment::run(c))),
    ("replicaset-controller", |c| Box::pin(replicaset::run(c))),
    ("garbage-collector-controller", |c| {
        Box::pin(garbagecollector::run(c))
    }),
    (endpoints::NAME, |c| Box::pin(endpoints::run(c))),
    (endpointslice::NAME, |c| Box::pin(endpointslice::run(c))),
    (namespace::NAME, |c| Box::pin(namespace::run(c))),
    (serviceaccount::NAME, |c| Box::pin(serviceaccount::run(c))),
    (replicationcontroller::NAME, |c| {
        Box::pin(replicationcontroller::run(c))
    }),
    (job::NAME, |c| Box::pin(job::run(c))),
    (daemonset::NAME, |c| Box::pin(daemonset::run(c))),
    // Its timing flags reach it through nodelifecycle::configure.
    (nodelifecycle::NAME, |c| Box::pin(nodelifecycle::run(c))),
    (taint_eviction::NAME, |c| Box::pin(taint_eviction::run(c))),
    (ttl_after_finished::NAME, |c| {
        Box::pin(ttl_after_finished::run(c))
    }),
];

/// kube-controller-manager's flags (those kybern implements).
#[derive(clap::Args, Clone, Debug)]
pub struct ControllerManagerArgs {
    /// Path to kubeconfig file with authorization and master location information. Without it,
    /// the in-cluster service account or $KUBECONFIG / ~/.kube/config is used.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    #[command(flatten)]
    pub leader_election: leaderelect::LeaderElectionArgs,
    /// A list of controllers to enable. '*' enables all on-by-default controllers, 'foo' enables
    /// the controller named 'foo', '-foo' disables the controller named 'foo'. The first entry
    /// naming a controller wins. Controllers: deployment-controller, replicaset-controller,
    /// garbage-collector-controller, endpoints-controller, endpointslice-controller,
    /// namespace-controller, serviceaccount-controller, replicationcontroller-controller,
    /// job-controller, daemonset-controller, node-lifecycle-controller,
    /// taint-eviction-controller, ttl-after-finished-controller (short aliases such as
    /// `deployment` work too).
    #[arg(long, value_delimiter = ',', default_value = "*")]
    pub controllers: Vec<String>,
    /// The IP address on which to listen for the --secure-port port (health and metrics).
    #[arg(long, default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    /// The port on which to serve HTTPS (/healthz, /readyz, /livez, /metrics). 0 disables it.
    #[arg(long, default_value_t = 10257)]
    pub secure_port: u16,
    /// File containing the default x509 certificate for HTTPS (CA cert, if any, concatenated
    /// after the server cert). Without it and --tls-private-key-file, a self-signed certificate
    /// is generated in memory.
    #[arg(long)]
    pub tls_cert_file: Option<PathBuf>,
    /// File containing the default x509 private key matching --tls-cert-file.
    #[arg(long)]
    pub tls_private_key_file: Option<PathBuf>,
    /// How often the node lifecycle controller checks every node's heartbeats.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub node_monitor_period: Duration,
    /// How long a node may go without a heartbeat (Lease renewal or status update) before its
    /// Ready condition becomes Unknown and it is tainted unreachable.
    #[arg(long, default_value = "50s", value_parser = parse_duration)]
    pub node_monitor_grace_period: Duration,
    /// The same for a node that never posted its status.
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    pub node_startup_grace_period: Duration,
}

/// Parses a Go-style duration such as `5s`, `1m30s`, `500ms` or `2h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(n);
        let v: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
        let u = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(u);
        let secs = match unit {
            "ns" => v / 1e9,
            "us" | "µs" => v / 1e6,
            "ms" => v / 1e3,
            "s" => v,
            "m" => v * 60.0,
            "h" => v * 3600.0,
            _ => {
                return Err(format!(
                    "invalid duration {s:?}: unit {unit:?} (use ms, s, m or h)"
                ))
            }
        };
        total += Duration::from_secs_f64(secs);
        rest = tail;
    }
    Ok(total)
}

/// The short alias upstream also accepts: `deployment` for `deployment-controller`,
/// `garbagecollector` for `garbage-collector-controller`.
fn alias(name: &str) -> String {
    name.strip_suffix("-controller")
        .unwrap_or(name)
        .replace('-', "")
}

/// Whether `name` is enabled by the `--controllers` list (upstream's IsControllerEnabled).
pub fn enabled(name: &str, list: &[String]) -> bool {
    let short = alias(name);
    let mut star = false;
    for c in list {
        let c = c.trim();
        if c == name || c == short {
            return true;
        }
        if let Some(off) = c.strip_prefix('-') {
            if off == name || off == short {
                return false;
            }
        }
        if c == "*" {
            star = true;
        }
    }
    star
}

/// The controllers `--controllers` enables; an error naming any unknown entry.
pub fn select(list: &[String]) -> Result<Vec<(&'static str, RunFn)>> {
    for c in list {
        let c = c.trim();
        let n = c.strip_prefix('-').unwrap_or(c);
        if n != "*" && !CONTROLLERS.iter().any(|(k, _)| *k == n || alias(k) == n) {
            bail!(
                "--controllers: unknown controller {n:?}; known: {}",
                CONTROLLERS
                    .iter()
                    .map(|(k, _)| *k)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    Ok(CONTROLLERS
        .iter()
        .filter(|(k, _)| enabled(k, list))
        .copied()
        .collect())
}

/// A client from `--kubeconfig`, else inferred (in-cluster, $KUBECONFIG, ~/.kube/config).
pub async fn client(kubeconfig: Option<&std::path::Path>) -> Result<kube::Client> {
    let config = match kubeconfig {
        Some(p) => {
            let kc = kube::config::Kubeconfig::read_from(p)
                .with_context(|| format!("cannot read kubeconfig {}", p.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("invalid kubeconfig {}", p.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no --kubeconfig and no in-cluster or default kubeconfig")?,
    };
    kube::Client::try_from(config).context("cannot build the API client")
}

/// Refuses inconsistent flags (unknown controllers, election timings upstream rejects).
pub fn check(args: &ControllerManagerArgs) -> Result<()> {
    select(&args.controllers)?;
    if args.leader_election.leader_elect {
        args.leader_election.config("kube-controller-manager")?;
    }
    Ok(())
}

/// Runs the controller-manager until SIGTERM/SIGINT (Ok) or lost leadership (an error).
pub async fn run(args: ControllerManagerArgs) -> Result<()> {
    let selected = select(&args.controllers)?;
    let election = if args.leader_election.leader_elect {
        Some(args.leader_election.config("kube-controller-manager")?)
    } else {
        None
    };
    let client = client(args.kubeconfig.as_deref()).await?;
    nodelifecycle::configure(nodelifecycle::Config {
        monitor_period: args.node_monitor_period,
        grace_period: args.node_monitor_grace_period,
        startup_grace_period: args.node_startup_grace_period,
    });
    let shutdown = CancellationToken::new();
    tokio::spawn(on_signal(shutdown.clone()));
    info!(
        "controller-manager starting; enabled controllers: {}",
        selected
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let elector = election.map(|cfg| {
        info!(
            "leader election on lease {}/{} as {} (lease {:?}, renew deadline {:?}, retry {:?})",
            cfg.namespace,
            cfg.name,
            cfg.identity,
            cfg.lease_duration,
            cfg.renew_deadline,
            cfg.retry_period
        );
        leaderelect::Elector::new(client.clone(), cfg)
    });
    let health = elector.as_ref().map(|e| e.health());
    if args.secure_port != 0 {
        let srv = server::Server::new(&args, health.clone())?;
        let listener = srv.bind().await?;
        tokio::spawn(async move {
            if let Err(e) = srv.serve(listener).await {
                error!("health and metrics server failed: {e:#}");
            }
        });
    }
    let work = move |leading: CancellationToken| run_controllers(client, selected, leading);
    match elector {
        Some(e) => {
            metrics::set_leader(false);
            let res = e
                .run(shutdown, |leading| {
                    metrics::set_leader(true);
                    work(leading)
                })
                .await;
            metrics::set_leader(false);
            res
        }
        None => work(shutdown).await,
    }
}

/// Cancels `token` on SIGTERM or SIGINT.
async fn on_signal(token: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        warn!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: shutting down"),
        _ = int.recv() => info!("SIGINT: shutting down"),
    }
    token.cancel();
}

/// Runs every selected controller, restarting one that fails, until `stop` is cancelled.
pub async fn run_controllers(
    client: kube::Client,
    selected: Vec<(&'static str, RunFn)>,
    stop: CancellationToken,
) -> Result<()> {
    let mut set = tokio::task::JoinSet::new();
    for (name, f) in selected {
        let client = client.clone();
        let stop = stop.clone();
        set.spawn(async move {
            let mut backoff = Duration::from_secs(1);
            loop {
                info!("starting {name}");
                match f(client.clone()).await {
                    Ok(()) => {
                        info!("{name} returned; starting it again");
                        backoff = Duration::from_secs(1);
                        continue;
                    }
                    Err(e) => error!("{name} failed: {e:#}; restarting it in {backoff:?}"),
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        });
    }
    stop.cancelled().await;
    info!("stopping controllers");
    set.abort_all();
    while set.join_next().await.is_some() {}
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(s: &str) -> Vec<String> {
        s.split(',').map(String::from).collect()
    }

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("x").is_err());
    }

    #[test]
    fn controllers_flag_follows_upstream() {
        assert!(enabled("deployment-controller", &list("*")));
        assert!(!enabled(
            "deployment-controller",
            &list("*,-deployment-controller")
        ));
        assert!(!enabled("deployment-controller", &list("-deployment,*")));
        assert!(enabled(
            "garbage-collector-controller",
            &list("garbagecollector")
        ));
        assert!(!enabled(
            "replicaset-controller",
            &list("deployment-controller")
        ));
        assert!(select(&list("*,-nosuch")).is_err());
        assert_eq!(
            select(&list("*,-deployment")).unwrap().len(),
            CONTROLLERS.len() - 1
        );
    }
}
