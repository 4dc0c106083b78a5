//! `kybern scheduler`: assigns pending pods to nodes, as kube-scheduler's default profile does.
//!
//! Informers (kube-runtime reflectors) of nodes and pods feed a cache of what each node holds and
//! a scheduling queue (active, backoff, unschedulable). One loop takes pods from the queue in turn
//! and runs the filter plugins (NodeUnschedulable, NodeName, TaintToleration, NodeAffinity and
//! the node selector, NodePorts, NodeResourcesFit, PodTopologySpread, InterPodAffinity) and the
//! score plugins (LeastAllocated, BalancedAllocation, TaintToleration, NodeAffinity,
//! PodTopologySpread); the chosen node is assumed at once and the binding
//! (`POST pods/NAME/binding`) runs in a task of its own, several in flight.
//!
//! `run(args)` builds the client, serves `/healthz`, `/readyz`, `/metrics`, starts the informers
//! and, unless `--leader-elect=false`, runs the scheduling loop only while this replica holds the
//! Lease `kube-system/kube-scheduler` (as upstream, the informers of a standby replica are already
//! warm, so a takeover starts scheduling at once). `schedule(client, opts, cancel)` is the whole
//! work (informers and loop) without an election.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::runtime::reflector::ObjectRef;
use kube::Client;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

pub mod bind;
pub mod cache;
pub mod filter;
pub mod informers;
pub mod labels;
pub mod queue;
pub mod resources;
pub mod sched;
pub mod score;
pub mod server;

#[derive(clap::Args, Clone, Debug)]
#[command(
    about = "Run the scheduler: assign pending pods to nodes.",
    long_about = "Run the scheduler: assign pending pods to nodes, as kube-scheduler's default profile \
    does. It watches nodes and pods through the API server, filters the nodes a pod can go to \
    (unschedulable, node name, taints, node affinity and selector, host ports, resources, topology \
    spread, inter-pod affinity), scores them (least allocated, balanced allocation, taints, \
    preferred node affinity, spreading) and binds the pod to the best. A pod that fits nowhere gets \
    PodScheduled=False/Unschedulable and a FailedScheduling event, and is retried when the cluster \
    changes. Serves /healthz, /readyz and /metrics over plain HTTP on --bind-address:--secure-port. \
    Several replicas elect a leader on the Lease kube-system/kube-scheduler (--leader-elect, on by \
    default); only the leader schedules. SIGTERM/SIGINT releases the lease so another replica takes \
    over at once; a leader that loses its lease exits with status 1, to be restarted as a candidate."
)]
pub struct SchedulerArgs {
    /// Path to a kubeconfig file with the API server address and credentials (else the in-cluster
    /// config or $KUBECONFIG/~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Address to serve /healthz, /readyz and /metrics on.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    /// Port to serve /healthz, /readyz and /metrics on (plain HTTP for now); 0 disables serving.
    #[arg(long, default_value_t = 10259)]
    pub secure_port: u16,
    /// Schedule only pods whose spec.schedulerName is this (the profile name upstream).
    #[arg(long, default_value = "default-scheduler")]
    pub scheduler_name: String,
    /// Percentage of nodes to find feasible before scoring (upstream's percentageOfNodesToScore);
    /// 0 means adaptive: 50% minus 1% per 125 nodes, at least 5%, never fewer than 100 nodes.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub percentage_of_nodes_to_score: u32,
    /// Bindings in flight at once (decisions stay sequential; binding calls run in parallel).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub parallel_bindings: u32,
    #[command(flatten)]
    pub leader_election: leaderelect::LeaderElectionArgs,
}

/// The Lease the replicas elect a leader on (unless --leader-elect-resource-name names another).
pub const LEASE_NAME: &str = "kube-scheduler";

/// Refuses flags upstream refuses (inconsistent election timings); the CLI exits 2 on it.
pub fn check(args: &SchedulerArgs) -> anyhow::Result<()> {
    if args.leader_election.leader_elect {
        args.leader_election.config(LEASE_NAME)?;
    }
    Ok(())
}

/// What the loop, the informers, the binder and the HTTP endpoint share.
pub struct State {
    pub client: Client,
    pub scheduler_name: String,
    pub cache: Mutex<cache::Cache>,
    pub queue: queue::Queue,
    pub metrics: server::Metrics,
    pub events: bind::EventSink,
    pub bind_slots: tokio::sync::Semaphore,
    parallel_bindings: u32,
    /// The election's state, for `/healthz` (absent with --leader-elect=false).
    pub election: std::sync::OnceLock<Arc<leaderelect::Health>>,
    /// Bit 0: nodes listed; bit 1: pods listed.
    synced: AtomicU8,
    synced_notify: tokio::sync::Notify,
}

impl State {
    pub fn new(client: Client, scheduler_name: &str, parallel_bindings: u32) -> Arc<State> {
        Arc::new(State {
            events: bind::EventSink::start(client.clone()),
            client,
            scheduler_name: scheduler_name.into(),
            cache: Mutex::new(cache::Cache::default()),
            queue: queue::Queue::default(),
            metrics: server::Metrics::new(scheduler_name),
            bind_slots: tokio::sync::Semaphore::new(parallel_bindings as usize),
            parallel_bindings,
            election: std::sync::OnceLock::new(),
            synced: AtomicU8::new(0),
            synced_notify: tokio::sync::Notify::new(),
        })
    }

    fn set_synced(&self, bit: u8) {
        self.synced.fetch_or(1 << bit, Ordering::SeqCst);
        if self.is_synced() {
            self.synced_notify.notify_waiters();
        }
    }

    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::SeqCst) == 3
    }
}

/// Builds the API client from --kubeconfig (or the usual inference).
pub async fn client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| anyhow::anyhow!("cannot read --kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|e| anyhow::anyhow!("bad --kubeconfig {}: {e}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| anyhow::anyhow!("no --kubeconfig and none to infer: {e}"))?,
    };
    if config.accept_invalid_certs {
        tracing::warn!("the API server's certificate is not verified (insecure-skip-tls-verify)");
    }
    Ok(Client::try_from(config)?)
}

/// Options of the scheduling work itself.
#[derive(Clone, Debug)]
pub struct Options {
    pub scheduler_name: String,
    pub percentage_of_nodes_to_score: u32,
    pub parallel_bindings: u32,
}

impl From<&SchedulerArgs> for Options {
    fn from(a: &SchedulerArgs) -> Options {
        Options {
            scheduler_name: a.scheduler_name.clone(),
            percentage_of_nodes_to_score: a.percentage_of_nodes_to_score,
            parallel_bindings: a.parallel_bindings,
        }
    }
}

/// Runs the scheduler until SIGINT/SIGTERM (Ok, the lease released) or until leadership is lost
/// (an error: the process exits and is restarted as a fresh candidate, as upstream).
pub async fn run(args: SchedulerArgs) -> anyhow::Result<()> {
    let election = if args.leader_election.leader_elect {
        Some(args.leader_election.config(LEASE_NAME)?)
    } else {
        None
    };
    let client = client(args.kubeconfig.as_deref()).await?;
    let shutdown = CancellationToken::new();
    let c = shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        c.cancel();
    });
    let state = State::new(client.clone(), &args.scheduler_name, args.parallel_bindings);
    let elector = election.map(|cfg| {
        tracing::info!(
            "leader election on lease {}/{} as {} (lease {:?}, renew deadline {:?}, retry {:?})",
            cfg.namespace,
            cfg.name,
            cfg.identity,
            cfg.lease_duration,
            cfg.renew_deadline,
            cfg.retry_period
        );
        leaderelect::Elector::new(client, cfg)
    });
    if let Some(e) = &elector {
        let _ = state.election.set(e.health());
    }
    if args.secure_port != 0 {
        let l = server::bind((args.bind_address, args.secure_port).into()).await?;
        tracing::info!(addr = %l.local_addr()?, "serving /healthz, /readyz, /metrics (plain HTTP)");
        tokio::spawn(server::serve(l, state.clone(), shutdown.clone()));
    }
    let opts = Options::from(&args);
    let stores = start_informers(&state, &shutdown);
    match elector {
        Some(e) => {
            state.metrics.set_leader(false);
            let st = state.clone();
            let res = e
                .run(shutdown, move |leading| {
                    st.metrics.set_leader(true);
                    schedule_loop(st, stores, opts, leading)
                })
                .await;
            state.metrics.set_leader(false);
            res
        }
        None => schedule_loop(state, stores, opts, shutdown).await,
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot install the SIGTERM/SIGINT handlers");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
}

/// The scheduling work, until `cancel`: informers, queue flushing, the scheduling loop.
pub async fn schedule(
    client: Client,
    opts: Options,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let state = State::new(client, &opts.scheduler_name, opts.parallel_bindings);
    let stores = start_informers(&state, &cancel);
    schedule_loop(state, stores, opts, cancel).await
}

/// Starts the informers (which fill the cache and the queue) and the queue's flushing, until
/// `cancel`.
fn start_informers(state: &Arc<State>, cancel: &CancellationToken) -> informers::Stores {
    let stores = informers::start(&state.client, state.clone(), cancel);
    // Flush backoff and long-unschedulable pods every second, as upstream.
    let (st, c) = (state.clone(), cancel.clone());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! { _ = tick.tick() => st.queue.flush(), _ = c.cancelled() => return }
        }
    });
    stores
}

/// Takes pods from the queue and decides where each goes, until `cancel`; then waits (bounded)
/// for the bindings in flight, so that a replica handing over its lease has finished writing.
async fn schedule_loop(
    state: Arc<State>,
    stores: informers::Stores,
    opts: Options,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    // Decide nothing before nodes and pods are listed: the cache would undercount.
    let started = Instant::now();
    while !state.is_synced() {
        let notified = state.synced_notify.notified();
        if state.is_synced() {
            break;
        }
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {
                if !state.is_synced() {
                    tracing::info!("waiting for the node and pod informers to sync ({:?} so far)", started.elapsed());
                }
            }
            _ = cancel.cancelled() => return Ok(()),
        }
    }
    tracing::info!(
        nodes = state.cache.lock().order.len(),
        "informers synced: scheduling"
    );
    let mut cursor = sched::Cursor::default();
    while let Some(key) = state.queue.pop(&cancel).await {
        let (ns, name) = key.split_once('/').unwrap_or(("default", key.as_str()));
        let Some(pod) = stores.pods.get(&ObjectRef::new(name).within(ns)) else {
            state.queue.done(&key);
            continue;
        };
        let assigned = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty());
        if assigned || pod.metadata.deletion_timestamp.is_some() {
            state.queue.done(&key);
            continue;
        }
        let t0 = Instant::now();
        let info = Arc::new(cache::PodInfo::new(pod.clone()));
        let result = {
            let cache = state.cache.lock();
            sched::schedule_one(
                &cache,
                &mut cursor,
                &info,
                &stores,
                opts.percentage_of_nodes_to_score,
            )
        };
        bind::finish(
            &state,
            sched::Decision {
                pod,
                info,
                result,
                started: t0,
            },
        );
    }
    tracing::info!("scheduling stopped; waiting for the bindings in flight");
    let all = state.parallel_bindings;
    match tokio::time::timeout(Duration::from_secs(10), state.bind_slots.acquire_many(all)).await {
        Ok(_) => tracing::info!("no binding in flight"),
        Err(_) => tracing::warn!("bindings still in flight after 10s; stopping anyway"),
    }
    Ok(())
}
