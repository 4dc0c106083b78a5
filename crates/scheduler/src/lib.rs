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
//! `run(args)` builds the client and serves `/healthz`, `/readyz`, `/metrics`; `schedule(client,
//! cancel)` is the work itself, for leader election to wrap.

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
    changes. Serves /healthz, /readyz and /metrics over plain HTTP on --bind-address:--secure-port."
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

/// Runs the scheduler until SIGINT/SIGTERM.
pub async fn run(args: SchedulerArgs) -> anyhow::Result<()> {
    let client = client(args.kubeconfig.as_deref()).await?;
    let cancel = CancellationToken::new();
    let state = State::new(client, &args.scheduler_name, args.parallel_bindings);
    if args.secure_port != 0 {
        let l = server::bind((args.bind_address, args.secure_port).into()).await?;
        tracing::info!(addr = %l.local_addr()?, "serving /healthz, /readyz, /metrics (plain HTTP)");
        tokio::spawn(server::serve(l, state.clone(), cancel.clone()));
    }
    let c = cancel.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("signal received: stopping");
        c.cancel();
    });
    schedule_with(state, Options::from(&args), cancel).await
}

async fn shutdown_signal() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The scheduling work, until `cancel`: informers, queue flushing, the scheduling loop.
pub async fn schedule(
    client: Client,
    opts: Options,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let state = State::new(client, &opts.scheduler_name, opts.parallel_bindings);
    schedule_with(state, opts, cancel).await
}

async fn schedule_with(
    state: Arc<State>,
    opts: Options,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let stores = informers::start(&state.client, state.clone(), &cancel);
    // Flush backoff and long-unschedulable pods every second, as upstream.
    let (st, c) = (state.clone(), cancel.clone());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! { _ = tick.tick() => st.queue.flush(), _ = c.cancelled() => return }
        }
    });
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
    tracing::info!("scheduling stopped");
    Ok(())
}
