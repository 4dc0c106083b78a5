//! `kybern bench scheduler`: creates --pods pods from --clients concurrent clients against a
//! cluster that runs a scheduler and (hollow) nodes, and watches them: scheduling throughput (pods
//! bound per second, from the first create to the last binding seen), pod startup latency (from
//! each create request to the watch event that shows it Running: upstream's pod startup SLI on
//! hollow nodes), and the peak RSS of the processes named by --pid.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{ListParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use serde::Serialize;
use serde_json::json;
use std::sync::Mutex;

use crate::report::Recorder;

#[derive(clap::Args, Debug, Serialize)]
pub struct SchedulerArgs {
    /// Kubeconfig of the cluster (its API server must run a scheduler and nodes).
    #[arg(long)]
    #[serde(skip)]
    pub kubeconfig: PathBuf,
    /// Number of pods to create.
    #[arg(long, default_value_t = 10000)]
    pub pods: usize,
    /// Concurrent creating clients (each one create at a time).
    #[arg(long = "create-clients", default_value_t = 16)]
    pub create_clients: usize,
    /// Namespace to create the pods in (created if absent; must hold none of them yet).
    #[arg(long, default_value = "bench-scheduler")]
    pub namespace: String,
    /// CPU request of each pod.
    #[arg(long, default_value = "100m")]
    pub cpu: String,
    /// Memory request of each pod.
    #[arg(long, default_value = "64Mi")]
    pub memory: String,
    /// Give up when the pods are not all Running after this long (e.g. 600s).
    #[arg(long, default_value = "600s", value_parser = crate::conn::parse_duration)]
    #[serde(skip)]
    pub timeout: Duration,
    /// Create at most this many pods per second in all (0: as fast as the clients go). Below
    /// saturation, the startup latency is the pipeline's own, not the wait in a backlog.
    #[arg(long, default_value_t = 0.0)]
    pub create_rate: f64,
    /// A process whose peak RSS to report, as NAME=PID (repeatable), e.g. scheduler=1234.
    #[arg(long = "pid")]
    pub pids: Vec<String>,
}

#[derive(Default)]
struct Seen {
    created: HashMap<String, Instant>,
    scheduled: HashMap<String, Instant>,
    running: HashMap<String, Instant>,
}

fn rss_kib(pid: &str, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

pub async fn run(a: &SchedulerArgs, json_out: bool, no_progress: bool) -> Result<()> {
    let kc = kube::config::Kubeconfig::read_from(&a.kubeconfig)
        .map_err(|e| anyhow!("cannot read --kubeconfig {}: {e}", a.kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    let client = Client::try_from(config)?;
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    let ready_nodes = nodes
        .items
        .iter()
        .filter(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count();
    let ns_api: Api<Namespace> = Api::all(client.clone());
    let ns_obj: Namespace = serde_json::from_value(json!({"metadata": {"name": a.namespace}}))?;
    if let Err(e) = ns_api.create(&PostParams::default(), &ns_obj).await {
        if !matches!(&e, kube::Error::Api(s) if s.code == 409) {
            return Err(anyhow!("cannot create namespace {}: {e}", a.namespace));
        }
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), &a.namespace);
    let seen = Arc::new(Mutex::new(Seen::default()));
    // Watch first, so that no transition is missed.
    let (synced_tx, synced_rx) = tokio::sync::oneshot::channel::<()>();
    let watch_seen = seen.clone();
    let watch_api = pods.clone();
    let watch = tokio::spawn(async move {
        let mut synced = Some(synced_tx);
        let stream = watcher(watch_api, watcher::Config::default()).default_backoff();
        futures::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            let p = match ev {
                Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => p,
                Ok(watcher::Event::InitDone) => {
                    if let Some(t) = synced.take() {
                        let _ = t.send(());
                    }
                    continue;
                }
                _ => continue,
            };
            let now = Instant::now();
            let name = p.metadata.name.clone().unwrap_or_default();
            let mut s = watch_seen.lock().unwrap();
            if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
                s.scheduled.entry(name.clone()).or_insert(now);
            }
            if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") {
                s.running.entry(name).or_insert(now);
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(60), synced_rx)
        .await
        .map_err(|_| anyhow!("the pod watch did not start within 60 s"))??;
    if !seen.lock().unwrap().scheduled.is_empty() {
        return Err(anyhow!(
            "namespace {} already has pods; use a fresh one",
            a.namespace
        ));
    }
    let rss_before: Vec<(String, Option<u64>)> = a
        .pids
        .iter()
        .map(|p| {
            (
                p.clone(),
                p.split_once('=')
                    .and_then(|(_, pid)| rss_kib(pid, "VmRSS:")),
            )
        })
        .collect();
    let start = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = vec![];
    for _ in 0..a.create_clients.max(1) {
        let (pods, seen, next) = (pods.clone(), seen.clone(), next.clone());
        let (total, cpu, mem, rate) = (a.pods, a.cpu.clone(), a.memory.clone(), a.create_rate);
        tasks.push(tokio::spawn(async move {
            let mut rec = Recorder::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return rec;
                }
                if rate > 0.0 {
                    let at = start + Duration::from_secs_f64(i as f64 / rate);
                    tokio::time::sleep_until(at.into()).await;
                }
                let name = format!("pod-{i}");
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": name, "labels": {"app": "bench"}},
                    "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10",
                        "resources": {"requests": {"cpu": cpu, "memory": mem}}}]}}))
                .expect("pod");
                let t = Instant::now();
                seen.lock().unwrap().created.insert(name.clone(), t);
                match pods.create(&PostParams::default(), &pod).await {
                    Ok(_) => rec.record(t.elapsed()),
                    Err(e) => rec.error(e.to_string()),
                }
            }
        }));
    }
    let mut creates = Recorder::new();
    for t in tasks {
        creates.merge(&t.await?);
    }
    let created_secs = start.elapsed();
    let deadline = start + a.timeout;
    let mut last_print = Instant::now();
    loop {
        let (sched, running) = {
            let s = seen.lock().unwrap();
            (s.scheduled.len(), s.running.len())
        };
        if running >= a.pods - creates.failures() as usize {
            break;
        }
        if Instant::now() > deadline {
            watch.abort();
            return Err(anyhow!(
                "after {:?}: {sched} of {} pods scheduled, {running} Running",
                a.timeout,
                a.pods
            ));
        }
        if !no_progress && last_print.elapsed() > Duration::from_secs(2) {
            eprintln!(
                "{:>6.1}s: {sched} scheduled, {running} running of {}",
                start.elapsed().as_secs_f64(),
                a.pods
            );
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    watch.abort();
    let s = seen.lock().unwrap();
    let last_sched = s.scheduled.values().max().copied().unwrap_or(start);
    let last_run = s.running.values().max().copied().unwrap_or(start);
    let sched_secs = last_sched.duration_since(start).as_secs_f64();
    let mut startup = Recorder::new();
    let mut to_bind = Recorder::new();
    for (name, t0) in &s.created {
        if let Some(t) = s.running.get(name) {
            startup.record(t.saturating_duration_since(*t0));
        }
        if let Some(t) = s.scheduled.get(name) {
            to_bind.record(t.saturating_duration_since(*t0));
        }
    }
    let reports = vec![
        creates.report("create", created_secs),
        to_bind.report("create-to-scheduled", last_sched.duration_since(start)),
        startup.report("pod-startup", last_run.duration_since(start)),
    ];
    let rss: Vec<serde_json::Value> = a
        .pids
        .iter()
        .zip(rss_before)
        .map(|(p, (_, before))| {
            let (name, pid) = p.split_once('=').unwrap_or((p, p));
            json!({"name": name, "pid": pid, "rss_before_kib": before,
                   "rss_kib": rss_kib(pid, "VmRSS:"), "hwm_kib": rss_kib(pid, "VmHWM:")})
        })
        .collect();
    let doc = json!({
        "benchmark": "scheduler",
        "ready_nodes": ready_nodes,
        "options": a,
        "pods": a.pods,
        "scheduled": s.scheduled.len(),
        "running": s.running.len(),
        "create_secs": created_secs.as_secs_f64(),
        "schedule_secs": sched_secs,
        "scheduled_pods_per_sec": s.scheduled.len() as f64 / sched_secs.max(1e-9),
        "running_secs": last_run.duration_since(start).as_secs_f64(),
        "rss": rss,
        "reports": reports,
    });
    if json_out {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!(
            "{ready_nodes} ready nodes, {} pods: all scheduled in {sched_secs:.2} s ({:.0} pods/s), all Running in {:.2} s",
            a.pods,
            doc["scheduled_pods_per_sec"].as_f64().unwrap_or(0.0),
            doc["running_secs"].as_f64().unwrap_or(0.0)
        );
        for r in &reports {
            println!("{}", r.to_text());
        }
        for r in &rss {
            println!("{r}");
        }
    }
    if creates.failures() > 0 {
        return Err(anyhow!("{} creates failed", creates.failures()));
    }
    Ok(())
}
