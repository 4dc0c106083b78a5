//! The kybern controller-manager: each controller is a module with a reconcile function on
//! kube-runtime, started from one table by its upstream name.

use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;

pub mod daemonset;
pub mod endpoints;
pub mod endpointslice;
pub mod job;
mod kit;
pub mod namespace;
pub mod nodelifecycle;
pub mod replicationcontroller;
pub mod serviceaccount;
pub mod taint_eviction;
pub mod ttl_after_finished;

/// A controller's entry point.
pub type RunFn = fn(kube::Client) -> BoxFuture<'static, anyhow::Result<()>>;

/// Every controller by its upstream name (what `--controllers` names).
pub static CONTROLLERS: &[(&str, RunFn)] = &[
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

/// `kybern controller-manager`: the flags of kube-controller-manager that apply.
#[derive(clap::Args, Debug, Clone)]
#[command(
    about = "Run the controller-manager: the controllers that turn desired state into actual state.",
    long_about = "Run the controller-manager: the controllers that turn desired state (Services, \
    Namespaces, Jobs, DaemonSets, ReplicationControllers, Nodes) into actual state, each a plain \
    client of the API server given by --kubeconfig."
)]
pub struct ControllerManagerArgs {
    /// kubeconfig of the API server to control (default: $KUBECONFIG, then ~/.kube/config, then
    /// the in-cluster service account).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The controllers to run (comma separated): `*` for all, a name to add one, `-name` to leave
    /// one out, as kube-controller-manager's flag.
    #[arg(long, value_delimiter = ',', default_value = "*")]
    pub controllers: Vec<String>,
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

/// Which controllers a `--controllers` list selects, as kube-controller-manager reads it.
pub fn selected(list: &[String]) -> Result<Vec<&'static str>, String> {
    let known: Vec<&str> = CONTROLLERS.iter().map(|(n, _)| *n).collect();
    for item in list {
        let name = item.trim().trim_start_matches('-');
        if name != "*" && !known.contains(&name) {
            return Err(format!(
                "unknown controller {name:?}; known: {}",
                known.join(", ")
            ));
        }
    }
    let star = list.iter().any(|i| i.trim() == "*");
    Ok(known
        .into_iter()
        .filter(|n| {
            let on = list.iter().any(|i| i.trim() == *n);
            let off = list.iter().any(|i| i.trim() == format!("-{n}"));
            on || (star && !off)
        })
        .collect())
}

/// Starts every selected controller and runs until one fails.
pub async fn run_all(client: kube::Client, names: &[&str]) -> anyhow::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for (name, start) in CONTROLLERS {
        if names.contains(name) {
            let fut = start(client.clone());
            tasks.spawn(async move { (*name, fut.await) });
        }
    }
    tracing::info!("started controllers: {}", names.join(", "));
    match tasks.join_next().await {
        Some(Ok((name, Ok(())))) => anyhow::bail!("controller {name} stopped"),
        Some(Ok((name, Err(e)))) => Err(e.context(format!("controller {name}"))),
        Some(Err(e)) => anyhow::bail!("a controller panicked: {e}"),
        None => anyhow::bail!("no controllers selected"),
    }
}

/// `kybern controller-manager`: connects with --kubeconfig and runs the selected controllers.
pub async fn run(args: ControllerManagerArgs) -> anyhow::Result<()> {
    let names = selected(&args.controllers).map_err(anyhow::Error::msg)?;
    let config = match &args.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    let client = kube::Client::try_from(config)?;
    nodelifecycle::configure(nodelifecycle::Config {
        monitor_period: args.node_monitor_period,
        grace_period: args.node_monitor_grace_period,
        startup_grace_period: args.node_startup_grace_period,
    });
    run_all(client, &names).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("x").is_err());
    }

    #[test]
    fn controllers_flag_selects_as_upstream() {
        let s = |v: &[&str]| selected(&v.iter().map(|x| x.to_string()).collect::<Vec<_>>());
        assert_eq!(s(&["*"]).unwrap().len(), CONTROLLERS.len());
        let no_jobs = s(&["*", "-job-controller"]).unwrap();
        assert!(!no_jobs.contains(&"job-controller"));
        assert_eq!(s(&["job-controller"]).unwrap(), vec!["job-controller"]);
        assert!(s(&["nope"]).is_err());
    }
}
