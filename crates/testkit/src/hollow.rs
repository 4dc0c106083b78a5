//! Hollow nodes: a fake kubelet for many nodes at once, as KWOK does. It registers N Node objects
//! (capacity, Ready condition, hostname/zone labels, optional taints), renews their Leases in
//! `kube-node-lease` (every 10 s by default, spread over the interval) and reports node status,
//! and turns the pods bound to its nodes Running and Ready through the status subresource (pod
//! IP, container statuses, start time). A pod being deleted on one of its nodes is removed at
//! once (grace period 0), as a kubelet does when its containers have stopped. One pod watch
//! serves all its nodes, so thousands of nodes are cheap. A node can be told to stop renewing
//! (and to stop acting on its pods), as a kubelet that died.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Flags of `kybern hollow-nodes`, also the configuration of [`HollowNodes::start`].
#[derive(clap::Args, Clone, Debug)]
pub struct HollowArgs {
    /// Path to a kubeconfig file (else $KUBECONFIG or ~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// Number of nodes to register.
    #[arg(long, default_value_t = 10)]
    pub count: usize,
    /// Node names are this prefix followed by the index (0, 1, ...).
    #[arg(long, default_value = "hollow-node-")]
    pub name_prefix: String,
    /// CPU capacity (and allocatable) of each node.
    #[arg(long, default_value = "4")]
    pub cpu: String,
    /// Memory capacity of each node.
    #[arg(long, default_value = "16Gi")]
    pub memory: String,
    /// Pod capacity of each node.
    #[arg(long, default_value_t = 110)]
    pub max_pods: u32,
    /// Spread the nodes over this many zones (label topology.kubernetes.io/zone=zone-K); 0: none.
    #[arg(long, default_value_t = 0)]
    pub zones: usize,
    /// Extra node label KEY=VALUE (repeatable).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Node taint KEY[=VALUE]:EFFECT (repeatable), as kubelet's --register-with-taints.
    #[arg(long = "taint")]
    pub taints: Vec<String>,
    /// How often each node renews its Lease (kubelet: 10 s, a quarter of the 40 s lease).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub lease_renew_interval: Duration,
    /// How often each node reports its status when nothing changed (kubelet's
    /// nodeStatusReportFrequency, 5m).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub node_status_report_frequency: Duration,
    /// Status writes (pods Running, node status, leases) in flight at once.
    #[arg(long, default_value_t = 64)]
    pub parallel_writes: usize,
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("bad duration {s:?} (e.g. 10s, 5m)"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("bad duration {s:?} (e.g. 10s, 5m)")),
    }
}

impl HollowArgs {
    /// Defaults, for use as a library.
    pub fn new(count: usize) -> HollowArgs {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct P {
            #[command(flatten)]
            a: HollowArgs,
        }
        let mut a = P::parse_from(["hollow"]).a;
        a.count = count;
        a
    }

    fn parsed_taints(&self) -> Result<Vec<Taint>, String> {
        self.taints
            .iter()
            .map(|t| {
                let (kv, effect) = t
                    .rsplit_once(':')
                    .ok_or_else(|| format!("taint {t:?}: want KEY[=VALUE]:EFFECT"))?;
                if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect) {
                    return Err(format!(
                        "taint {t:?}: effect must be NoSchedule, PreferNoSchedule or NoExecute"
                    ));
                }
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                Ok(Taint {
                    key: k.into(),
                    value: (!v.is_empty()).then(|| v.into()),
                    effect: effect.into(),
                    time_added: None,
                })
            })
            .collect()
    }
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

struct Shared {
    client: Client,
    args: HollowArgs,
    /// Node name -> index.
    nodes: HashMap<String, usize>,
    stopped: parking_lot::RwLock<HashSet<String>>,
    writes: tokio::sync::Semaphore,
    /// Pods (uid) made Running or being deleted, so each is written once.
    done: parking_lot::Mutex<HashSet<String>>,
    /// When the nodes became Ready (their conditions' lastTransitionTime).
    since: String,
}

/// A running set of hollow nodes; dropping it (or [`HollowNodes::stop`]) stops every loop.
pub struct HollowNodes {
    shared: Arc<Shared>,
    cancel: CancellationToken,
}

impl Drop for HollowNodes {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn node_ip(i: usize) -> String {
    let i = i + 1;
    format!("10.{}.{}.{}", 200 + (i >> 16) % 50, (i >> 8) & 255, i & 255)
}

impl HollowNodes {
    /// Registers the nodes and starts their loops.
    pub async fn start(client: Client, args: HollowArgs) -> anyhow::Result<HollowNodes> {
        let taints = args.parsed_taints().map_err(anyhow::Error::msg)?;
        let mut extra = BTreeMap::new();
        for l in &args.labels {
            let (k, v) = l
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("label {l:?}: want KEY=VALUE"))?;
            extra.insert(k.to_string(), v.to_string());
        }
        let nodes: HashMap<String, usize> = (0..args.count)
            .map(|i| (format!("{}{i}", args.name_prefix), i))
            .collect();
        let shared = Arc::new(Shared {
            client: client.clone(),
            writes: tokio::sync::Semaphore::new(args.parallel_writes.max(1)),
            args,
            nodes,
            stopped: Default::default(),
            done: Default::default(),
            since: now(),
        });
        ensure_namespace(&client, "kube-node-lease").await?;
        // Register every node, several at once.
        let names: Vec<(String, usize)> =
            shared.nodes.iter().map(|(n, i)| (n.clone(), *i)).collect();
        let results = futures::stream::iter(names.into_iter().map(|(name, i)| {
            let (s, taints, extra) = (shared.clone(), taints.clone(), extra.clone());
            async move {
                register(&s, &name, i, &taints, &extra)
                    .await
                    .map_err(|e| anyhow::anyhow!("node {name}: {e}"))
            }
        }))
        .buffer_unordered(shared.args.parallel_writes.max(1))
        .collect::<Vec<_>>()
        .await;
        results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
        tracing::info!(count = shared.nodes.len(), prefix = %shared.args.name_prefix, "hollow nodes registered and Ready");
        let cancel = CancellationToken::new();
        tokio::spawn(heartbeats(shared.clone(), cancel.clone()));
        tokio::spawn(pods(shared.clone(), cancel.clone()));
        Ok(HollowNodes { shared, cancel })
    }

    /// The node stops renewing its lease and status and stops acting on its pods.
    pub fn stop_renewing(&self, node: &str) {
        tracing::info!(node, "hollow node stops renewing (as a dead kubelet)");
        self.shared.stopped.write().insert(node.to_string());
    }

    /// The node renews again.
    pub fn resume_renewing(&self, node: &str) {
        self.shared.stopped.write().remove(node);
    }

    pub fn node_names(&self) -> Vec<String> {
        let mut v: Vec<(usize, String)> = self
            .shared
            .nodes
            .iter()
            .map(|(n, i)| (*i, n.clone()))
            .collect();
        v.sort();
        v.into_iter().map(|(_, n)| n).collect()
    }

    pub fn stop(self) {}
}

async fn ensure_namespace(client: &Client, ns: &str) -> anyhow::Result<()> {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let obj = serde_json::from_value(json!({"metadata": {"name": ns}}))?;
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(anyhow::anyhow!("cannot create namespace {ns}: {e}")),
    }
}

fn node_status(s: &Shared, i: usize, name: &str) -> serde_json::Value {
    let a = &s.args;
    let t = now();
    let cond = |ty: &str, st: &str, reason: &str, msg: &str| {
        json!({"type": ty, "status": st, "reason": reason, "message": msg,
               "lastHeartbeatTime": t, "lastTransitionTime": s.since})
    };
    json!({"status": {
        "capacity": {"cpu": a.cpu, "memory": a.memory, "pods": a.max_pods.to_string(), "ephemeral-storage": "100Gi"},
        "allocatable": {"cpu": a.cpu, "memory": a.memory, "pods": a.max_pods.to_string(), "ephemeral-storage": "100Gi"},
        "conditions": [
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            cond("Ready", "True", "KubeletReady", "hollow kubelet is posting ready status"),
        ],
        "addresses": [{"type": "InternalIP", "address": node_ip(i)}, {"type": "Hostname", "address": name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {"machineID": format!("hollow-{i}"), "systemUUID": format!("hollow-{i}"), "bootID": "hollow",
            "kernelVersion": "hollow", "osImage": "kybern hollow node", "containerRuntimeVersion": "hollow://1.0",
            "kubeletVersion": "v1.33.0-kybern-hollow", "kubeProxyVersion": "", "operatingSystem": "linux",
            "architecture": "amd64"},
    }})
}

async fn register(
    s: &Shared,
    name: &str,
    i: usize,
    taints: &[Taint],
    extra: &BTreeMap<String, String>,
) -> anyhow::Result<()> {
    let mut labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), name.to_string()),
        ("kubernetes.io/os".into(), "linux".into()),
        ("kubernetes.io/arch".into(), "amd64".into()),
        ("type".into(), "hollow".into()),
    ]);
    if s.args.zones > 0 {
        labels.insert(
            "topology.kubernetes.io/zone".into(),
            format!("zone-{}", i % s.args.zones),
        );
    }
    labels.extend(extra.clone());
    let api: Api<Node> = Api::all(s.client.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels, "annotations": {"kybern.io/hollow": "true"}},
        "spec": {"taints": taints, "podCIDR": format!("10.{}.{}.0/24", 64 + ((i >> 8) & 63), i & 255)},
    }))?;
    let _permit = s.writes.acquire().await?;
    match api.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(&node_status(s, i, name)),
    )
    .await?;
    renew_lease(s, name).await?;
    Ok(())
}

async fn renew_lease(s: &Shared, name: &str) -> Result<(), kube::Error> {
    let api: Api<Lease> = Api::namespaced(s.client.clone(), "kube-node-lease");
    let patch = json!({"spec": {"holderIdentity": name, "leaseDurationSeconds": 40,
        "renewTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(jiff::Timestamp::now())}});
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            let lease: Lease = serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "kube-node-lease"},
                "spec": patch["spec"]}))
            .map_err(kube::Error::SerdeError)?;
            api.create(&PostParams::default(), &lease).await.map(|_| ())
        }
        Err(e) => Err(e),
    }
}

/// Renews every node's lease once per interval (each node in its own second of it) and reports
/// node status once per report frequency.
async fn heartbeats(s: Arc<Shared>, cancel: CancellationToken) {
    let lease_slots = s.args.lease_renew_interval.as_secs().max(1) as usize;
    let status_slots = s.args.node_status_report_frequency.as_secs().max(1) as usize;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut n: usize = 0;
    loop {
        tokio::select! { _ = tick.tick() => {}, _ = cancel.cancelled() => return }
        n += 1;
        let stopped = s.stopped.read().clone();
        for (name, i) in &s.nodes {
            if stopped.contains(name) {
                continue;
            }
            let lease = i % lease_slots == n % lease_slots;
            let status = i % status_slots == n % status_slots;
            if !lease && !status {
                continue;
            }
            let (s, name, i) = (s.clone(), name.clone(), *i);
            tokio::spawn(async move {
                let Ok(_permit) = s.writes.acquire().await else {
                    return;
                };
                if lease {
                    if let Err(e) = renew_lease(&s, &name).await {
                        tracing::warn!(node = %name, "lease renewal failed: {e}");
                    }
                }
                if status {
                    let api: Api<Node> = Api::all(s.client.clone());
                    let st = node_status(&s, i, &name);
                    if let Err(e) = api
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&st))
                        .await
                    {
                        tracing::warn!(node = %name, "node status update failed: {e}");
                    }
                }
            });
        }
    }
}

/// One pod watch for all nodes: bound pods become Running, deleted pods go away.
async fn pods(s: Arc<Shared>, cancel: CancellationToken) {
    let api: Api<Pod> = Api::all(s.client.clone());
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    loop {
        let ev = tokio::select! { ev = stream.next() => ev, _ = cancel.cancelled() => return };
        let pod = match ev {
            Some(Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p))) => p,
            Some(Ok(watcher::Event::Delete(p))) => {
                if let Some(uid) = p.metadata.uid.as_deref() {
                    let mut done = s.done.lock();
                    done.remove(uid);
                    done.remove(&format!("{uid}/delete"));
                }
                continue;
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                tracing::warn!("pod watch failed (retrying): {e}");
                continue;
            }
            None => return,
        };
        let Some(node) = pod.spec.as_ref().and_then(|sp| sp.node_name.clone()) else {
            continue;
        };
        let Some(&index) = s.nodes.get(&node) else {
            continue;
        };
        if s.stopped.read().contains(&node) {
            continue;
        }
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let deleting = pod.metadata.deletion_timestamp.is_some();
        let phase = pod
            .status
            .as_ref()
            .and_then(|st| st.phase.as_deref())
            .unwrap_or("");
        let key = if deleting {
            format!("{uid}/delete")
        } else {
            uid.clone()
        };
        if !deleting && matches!(phase, "Running" | "Succeeded" | "Failed") {
            continue;
        }
        if !s.done.lock().insert(key.clone()) {
            continue;
        }
        let s = s.clone();
        tokio::spawn(async move {
            let Ok(_permit) = s.writes.acquire().await else {
                return;
            };
            let res = if deleting {
                remove(&s, &pod, &uid).await
            } else {
                run_pod(&s, &pod, index).await
            };
            if let Err(e) = res {
                let name = pod.metadata.name.as_deref().unwrap_or("");
                tracing::warn!(pod = %name, node = %node, "pod update failed: {e}");
                s.done.lock().remove(&key);
            }
        });
    }
}

async fn remove(s: &Shared, pod: &Pod, uid: &str) -> Result<(), kube::Error> {
    let api: Api<Pod> = Api::namespaced(
        s.client.clone(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
    );
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(uid.into()),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api
        .delete(pod.metadata.name.as_deref().unwrap_or(""), &dp)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

async fn run_pod(s: &Shared, pod: &Pod, index: usize) -> Result<(), kube::Error> {
    let t = now();
    let ip_n = {
        let mut h: u32 = 0;
        for b in pod.metadata.uid.as_deref().unwrap_or("").bytes() {
            h = h.wrapping_mul(31).wrapping_add(b as u32);
        }
        h % 250 + 2
    };
    let pod_ip = format!("10.{}.{}.{ip_n}", 64 + ((index >> 8) & 63), index & 255);
    let spec = pod.spec.as_ref();
    let uid = pod.metadata.uid.as_deref().unwrap_or("");
    let status = |c: &k8s_openapi::api::core::v1::Container, running: bool| {
        let state = if running {
            json!({"running": {"startedAt": t}})
        } else {
            json!({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": t, "finishedAt": t}})
        };
        json!({"name": c.name, "image": c.image.clone().unwrap_or_default(), "imageID": "",
               "containerID": format!("hollow://{uid}/{}", c.name), "ready": running,
               "started": running, "restartCount": 0, "state": state})
    };
    let containers: Vec<_> = spec
        .map(|s| s.containers.iter().map(|c| status(c, true)).collect())
        .unwrap_or_default();
    let inits: Vec<_> = spec
        .and_then(|s| s.init_containers.as_ref())
        .map(|v| {
            v.iter()
                .map(|c| status(c, c.restart_policy.as_deref() == Some("Always")))
                .collect()
        })
        .unwrap_or_default();
    let cond = |ty: &str| json!({"type": ty, "status": "True", "lastProbeTime": null, "lastTransitionTime": t});
    let patch = json!({"status": {
        "phase": "Running",
        "conditions": [cond("PodReadyToStartContainers"), cond("Initialized"), cond("Ready"),
                       cond("ContainersReady"), cond("PodScheduled")],
        "hostIP": node_ip(index), "hostIPs": [{"ip": node_ip(index)}],
        "podIP": pod_ip, "podIPs": [{"ip": pod_ip}],
        "startTime": t,
        "containerStatuses": containers,
        "initContainerStatuses": inits,
        "qosClass": pod.status.as_ref().and_then(|s| s.qos_class.clone()).unwrap_or_else(|| "BestEffort".into()),
    }});
    let api: Api<Pod> = Api::namespaced(
        s.client.clone(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
    );
    match api
        .patch_status(
            pod.metadata.name.as_deref().unwrap_or(""),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Builds a client from a kubeconfig path (else the usual inference).
pub async fn client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<Client> {
    let config = match kubeconfig {
        Some(p) => {
            let kc = kube::config::Kubeconfig::read_from(p)
                .map_err(|e| anyhow::anyhow!("cannot read --kubeconfig {}: {e}", p.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    if config.accept_invalid_certs {
        tracing::warn!("the API server's certificate is not verified (insecure-skip-tls-verify)");
    }
    Ok(Client::try_from(config)?)
}

/// `kybern hollow-nodes`: registers the nodes and keeps them alive until SIGINT/SIGTERM.
pub async fn run(args: HollowArgs) -> anyhow::Result<()> {
    let client = client(args.kubeconfig.as_deref()).await?;
    let nodes = HollowNodes::start(client, args).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} }
    tracing::info!("stopping hollow nodes (their nodes stay registered and will go NotReady)");
    drop(nodes);
    Ok(())
}
