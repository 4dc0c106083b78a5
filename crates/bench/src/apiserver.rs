//! `kybern bench apiserver`: a load generator for a Kubernetes API server (kybern's or any
//! other), in four phases over HTTPS/HTTP/2:
//!
//! 1. `create`: `--pods` pods (one container each) created by `--clients` concurrent clients,
//!    each one request at a time, sharing `--conns` connections;
//! 2. `list`: `--lists` LISTs of every pod of the namespace in one response, then as many
//!    traversals in pages of `--list-limit` (`list-paged` is one whole traversal, `list-page`
//!    each page request);
//! 3. watch: `--watchers` watches of the namespace's pods from the resourceVersion of the last
//!    LIST (`--watchers-per-conn` to a connection); once all are open, `--watch-writes` writes
//!    (every other one creates a new pod, the others patch a pod of phase 1) at
//!    `--watch-write-rate` per second. `watch-event` is the time from a write's response to
//!    the event's arrival at each watcher (0 when the event came first, as etcd's tool counts);
//! 4. `get`: `--gets` GETs of single pods picked at random, from `--clients` clients.
//!
//! The report is one etcd-style summary per measurement plus counts (pods created, events
//! expected and received, watchers that saw every event); `--json` prints one document
//! `{"benchmark": "apiserver", "server", "namespace", "conns", "clients", "watch_conns",
//! "options", "counts", "reports": [Report...]}`. The exit code is 1 when any request failed or
//! a watcher missed an event.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use http_body_util::BodyExt;
use hyper::{Method, StatusCode};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::time::MissedTickBehavior;

use crate::kube_http::{self, Conn, Dialer, Target};
use crate::load::Progress;
use crate::report::{Recorder, Report};
use crate::GlobalArgs;

/// How long the watchers may lag behind the last write before missing events count as errors.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long opening every watch may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Args, Debug, Serialize)]
pub struct ApiserverArgs {
    /// The API server's URL.
    #[arg(long, default_value = "https://127.0.0.1:6443")]
    pub server: String,
    /// Bearer token to authenticate with.
    #[arg(long)]
    #[serde(skip)]
    pub token: Option<String>,
    /// Do not verify the server's certificate.
    #[arg(long)]
    pub insecure_skip_tls_verify: bool,
    /// Verify the server's certificate with this CA bundle (PEM); --cacert does the same.
    #[arg(long)]
    #[serde(skip)]
    pub certificate_authority: Option<PathBuf>,
    /// Pods to create in phase 1.
    #[arg(long, default_value_t = 10000, value_parser = clap::value_parser!(u64).range(1..))]
    pub pods: u64,
    /// Namespace to work in (created when missing). Pod names carry a random run prefix, so
    /// runs do not collide.
    #[arg(long, default_value = "kybern-bench")]
    pub namespace: String,
    /// LISTs of the whole namespace, each way (one response, and in pages).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub lists: u64,
    /// Page size of the paged LISTs (`limit`).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
    pub list_limit: u64,
    /// Concurrent watches of the namespace's pods.
    #[arg(long, default_value_t = 1000)]
    pub watchers: u64,
    /// Watches sharing one HTTP/2 connection (servers often allow 100 to 250 streams on one).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub watchers_per_conn: u64,
    /// Writes made while the watchers watch (half creates, half patches).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub watch_writes: u64,
    /// Those writes per second (0: as fast as --clients allow).
    #[arg(long, default_value_t = 100)]
    pub watch_write_rate: u64,
    /// Single-pod GETs in phase 4.
    #[arg(long, default_value_t = 10000)]
    pub gets: u64,
}

/// What the run did, for checking that it measured what it says.
#[derive(Debug, Default, Serialize)]
pub struct Counts {
    /// Pods created in phase 1.
    pub created: u64,
    /// Items of the last one-response LIST.
    pub list_items: u64,
    /// Items of the last paged LIST traversal, and its pages.
    pub paged_list_items: u64,
    pub paged_list_pages: u64,
    /// Watches asked for, and opened.
    pub watchers: u64,
    pub watchers_started: u64,
    /// Writes of phase 3 that succeeded (each must reach every watcher).
    pub watch_writes: u64,
    /// watchers_started x watch_writes.
    pub watch_events_expected: u64,
    /// Events of those writes that reached a watcher (each counted once per watcher).
    pub watch_events_received: u64,
    /// Other events (of no acknowledged write, or repeated).
    pub watch_events_other: u64,
    /// Watchers that saw every write's event.
    pub watchers_complete: u64,
    /// Single-pod GETs that succeeded.
    pub gets: u64,
}

#[derive(Serialize)]
struct Output<'a> {
    benchmark: &'static str,
    server: &'a str,
    namespace: &'a str,
    conns: usize,
    clients: usize,
    watch_conns: usize,
    options: &'a ApiserverArgs,
    counts: &'a Counts,
    reports: &'a [Report],
}

/// The parts of a LIST response read here.
#[derive(Deserialize)]
struct ListHead {
    #[serde(default)]
    metadata: ListMeta,
    #[serde(default)]
    items: Vec<serde::de::IgnoredAny>,
}

#[derive(Deserialize, Default)]
struct ListMeta {
    #[serde(default, rename = "resourceVersion")]
    resource_version: String,
    #[serde(default, rename = "continue")]
    continue_: String,
}

/// The parts of an object (or a watch event's object) read here.
#[derive(Deserialize)]
struct ObjHead {
    #[serde(default)]
    metadata: ObjMeta,
}

#[derive(Deserialize, Default)]
struct ObjMeta {
    #[serde(default, rename = "resourceVersion")]
    resource_version: String,
}

/// The parts of a watch event read here (an ERROR event's object is a Status with a message).
#[derive(Deserialize)]
struct WatchLine {
    #[serde(rename = "type")]
    type_: String,
    object: WatchObj,
}

#[derive(Deserialize)]
struct WatchObj {
    #[serde(default)]
    metadata: ObjMeta,
    #[serde(default)]
    message: String,
}

/// A minimal valid pod: one container, labelled with the run.
fn pod(name: &str, run: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "kybern-bench", "kybern-bench-run": run}},
        "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]},
    })
}

/// Percent-encodes a query parameter value.
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `total` calls of `f(i, client)` from `clients` concurrent clients (each one call at a time),
/// at most `rate` per second when `rate` > 0; returns every call's latency and the wall time.
async fn closed_loop<F, Fut>(
    label: &str,
    clients: usize,
    total: u64,
    rate: u64,
    progress: bool,
    f: F,
) -> (Recorder, Duration)
where
    F: Fn(u64, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let f = Arc::new(f);
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let pace = (rate > 0).then(|| {
        let mut iv = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
        iv.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Arc::new(tokio::sync::Mutex::new(iv))
    });
    let started = Instant::now();
    let prog = progress.then(|| Progress::start(label, total, done.clone()));
    let mut tasks = Vec::with_capacity(clients);
    for c in 0..clients {
        let (f, next, done, pace) = (f.clone(), next.clone(), done.clone(), pace.clone());
        tasks.push(tokio::spawn(async move {
            let mut rec = Recorder::new();
            loop {
                if next.load(Ordering::Relaxed) >= total {
                    break;
                }
                if let Some(p) = &pace {
                    p.lock().await.tick().await;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let st = Instant::now();
                match f(i, c).await {
                    Ok(()) => rec.record(st.elapsed()),
                    Err(e) => rec.error(e),
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            rec
        }));
    }
    let mut merged = Recorder::new();
    for t in tasks {
        match t.await {
            Ok(r) => merged.merge(&r),
            Err(e) => merged.error(format!("client task failed: {e}")),
        }
    }
    let elapsed = started.elapsed();
    if let Some(p) = prog {
        p.finish().await;
    }
    (merged, elapsed)
}

/// Creates the namespace unless it exists.
async fn ensure_namespace(conn: &Conn, ns: &str) -> Result<()> {
    let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
    let (status, bytes) = conn
        .call_status(
            Method::POST,
            "/api/v1/namespaces",
            Some(kube_http::json(&body)),
        )
        .await
        .map_err(|e| anyhow!("create namespace {ns}: {e}"))?;
    if status.is_success() || status == StatusCode::CONFLICT {
        return Ok(());
    }
    bail!(
        "create namespace {ns}: HTTP {}: {}",
        status.as_u16(),
        String::from_utf8_lossy(&bytes)
    )
}

/// One watcher's record: when each event (by resourceVersion) arrived.
#[derive(Default)]
struct WatchLog {
    events: Vec<(String, Instant)>,
    error: Option<String>,
}

/// Runs one watch until `stop`; reports its opening (time to the response headers) on `opened`.
async fn watcher(
    conn: Conn,
    path: String,
    opened: tokio::sync::mpsc::Sender<Result<Duration, String>>,
    received: Arc<AtomicU64>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> WatchLog {
    let mut log = WatchLog::default();
    let st = Instant::now();
    let resp = match conn.send(Method::GET, &path, None).await {
        Ok(r) if r.status().is_success() => r,
        Ok(r) => {
            let e = format!("watch: HTTP {}", r.status().as_u16());
            let _ = opened.send(Err(e.clone())).await;
            log.error = Some(e);
            return log;
        }
        Err(e) => {
            let _ = opened.send(Err(e.clone())).await;
            log.error = Some(e);
            return log;
        }
    };
    let _ = opened.send(Ok(st.elapsed())).await;
    drop(opened);
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let frame = tokio::select! {
            f = body.frame() => f,
            _ = stop.changed() => break,
        };
        let now = Instant::now();
        let data = match frame {
            Some(Ok(f)) => match f.into_data() {
                Ok(d) => d,
                Err(_) => continue, // trailers
            },
            Some(Err(e)) => {
                log.error = Some(format!("watch stream: {e}"));
                break;
            }
            None => {
                if !*stop.borrow() {
                    log.error = Some("watch stream ended".into());
                }
                break;
            }
        };
        buf.extend_from_slice(&data);
        let mut start = 0;
        while let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') {
            let line = &buf[start..start + nl];
            start += nl + 1;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<WatchLine>(line) {
                Ok(ev) if ev.type_ == "ERROR" => {
                    log.error = Some(format!("watch ERROR event: {}", ev.object.message));
                }
                Ok(ev) if ev.type_ == "BOOKMARK" => {}
                Ok(ev) => {
                    log.events.push((ev.object.metadata.resource_version, now));
                    received.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => log.error = Some(format!("watch event is not JSON: {e}")),
            }
        }
        buf.drain(..start);
    }
    log
}

/// Runs the benchmark and prints its report.
pub async fn run(a: &ApiserverArgs, g: &GlobalArgs) -> Result<()> {
    let clients = g.clients as usize;
    let progress = !g.no_progress;
    let dialer = Dialer::new(&Target {
        server: a.server.clone(),
        token: a.token.clone(),
        insecure_skip_tls_verify: a.insecure_skip_tls_verify,
        certificate_authority: a.certificate_authority.clone().or(g.cacert.clone()),
        client_cert: g.cert.clone(),
        client_key: g.key.clone(),
    })?;
    let conns = Arc::new(
        tokio::time::timeout(g.dial_timeout.max(Duration::from_secs(1)), async {
            dialer.connect_n(g.conns as usize).await
        })
        .await
        .map_err(|_| anyhow!("connecting to {} timed out", a.server))??,
    );
    let ns = a.namespace.clone();
    ensure_namespace(&conns[0], &ns).await?;
    let run_id = format!("{:06x}", rand::rng().random::<u32>() & 0xff_ffff);
    let prefix = format!("bench-{run_id}");
    let pods_path: Arc<str> = format!("/api/v1/namespaces/{ns}/pods").into();
    let mut counts = Counts {
        watchers: a.watchers,
        ..Counts::default()
    };
    let mut reports = Vec::new();

    // Phase 1: create.
    let (rec, took) = {
        let (conns, path, prefix, run_id) = (
            conns.clone(),
            pods_path.clone(),
            prefix.clone(),
            run_id.clone(),
        );
        closed_loop("create", clients, a.pods, 0, progress, move |i, c| {
            let conn = conns[c % conns.len()].clone();
            let body = kube_http::json(&pod(&format!("{prefix}-{i}"), &run_id));
            let path = path.clone();
            async move { conn.call(Method::POST, &path, Some(body)).await.map(drop) }
        })
        .await
    };
    counts.created = rec.successes();
    reports.push(rec.report("create", took));

    // Phase 2: list, whole and paged.
    let conn = conns[0].clone();
    let mut list_rv = String::new();
    let (mut whole, mut paged, mut pages) = (Recorder::new(), Recorder::new(), Recorder::new());
    let t0 = Instant::now();
    for _ in 0..a.lists {
        let st = Instant::now();
        match conn.call(Method::GET, &pods_path, None).await {
            Ok(b) => {
                whole.record(st.elapsed());
                let l: ListHead = serde_json::from_slice(&b).context("LIST response")?;
                counts.list_items = l.items.len() as u64;
                list_rv = l.metadata.resource_version;
            }
            Err(e) => whole.error(e),
        }
    }
    let whole_took = t0.elapsed();
    let t0 = Instant::now();
    for _ in 0..a.lists {
        let st = Instant::now();
        let (mut items, mut n, mut cont) = (0u64, 0u64, String::new());
        let ok = loop {
            let mut path = format!("{pods_path}?limit={}", a.list_limit);
            if !cont.is_empty() {
                path.push_str(&format!("&continue={}", query_escape(&cont)));
            }
            let ps = Instant::now();
            match conn.call(Method::GET, &path, None).await {
                Ok(b) => {
                    pages.record(ps.elapsed());
                    let l: ListHead = serde_json::from_slice(&b).context("LIST page")?;
                    items += l.items.len() as u64;
                    n += 1;
                    cont = l.metadata.continue_;
                    if cont.is_empty() {
                        break true;
                    }
                }
                Err(e) => {
                    pages.error(e);
                    break false;
                }
            }
        };
        if ok {
            paged.record(st.elapsed());
            counts.paged_list_items = items;
            counts.paged_list_pages = n;
        } else {
            paged.error("a page failed");
        }
    }
    let paged_took = t0.elapsed();
    reports.push(whole.report("list", whole_took));
    reports.push(paged.report("list-paged", paged_took));
    reports.push(pages.report("list-page", paged_took));
    if list_rv.is_empty() {
        bail!("no LIST succeeded, so there is no resourceVersion to watch from");
    }

    // Phase 3: watchers, then writes.
    let watch_conns = if a.watchers == 0 {
        Vec::new()
    } else {
        dialer
            .connect_n(a.watchers.div_ceil(a.watchers_per_conn) as usize)
            .await?
    };
    let received = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (open_tx, mut open_rx) = tokio::sync::mpsc::channel(1024);
    let watch_path = format!(
        "{pods_path}?watch=1&resourceVersion={}&timeoutSeconds=3600",
        query_escape(&list_rv)
    );
    let mut watch_tasks = Vec::with_capacity(a.watchers as usize);
    for w in 0..a.watchers {
        let conn = watch_conns[(w / a.watchers_per_conn) as usize].clone();
        watch_tasks.push(tokio::spawn(watcher(
            conn,
            watch_path.clone(),
            open_tx.clone(),
            received.clone(),
            stop_rx.clone(),
        )));
    }
    drop(open_tx);
    let mut open = Recorder::new();
    let t0 = Instant::now();
    let deadline = tokio::time::Instant::now() + OPEN_TIMEOUT;
    for _ in 0..a.watchers {
        match tokio::time::timeout_at(deadline, open_rx.recv()).await {
            Ok(Some(Ok(d))) => open.record(d),
            Ok(Some(Err(e))) => open.error(e),
            Ok(None) => break,
            Err(_) => {
                open.error(format!("watch not open within {OPEN_TIMEOUT:?}"));
                break;
            }
        }
    }
    counts.watchers_started = open.successes();
    reports.push(open.report("watch-open", t0.elapsed()));

    let acks: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let writers = clients.clamp(1, 10);
    let t_writes = Instant::now();
    let (rec, took) = {
        let (conns, path, prefix, run_id, acks) = (
            conns.clone(),
            pods_path.clone(),
            prefix.clone(),
            run_id.clone(),
            acks.clone(),
        );
        let pods = a.pods;
        closed_loop(
            "watch-writes",
            writers,
            a.watch_writes,
            a.watch_write_rate,
            progress,
            move |i, c| {
                let conn = conns[c % conns.len()].clone();
                let (method, path, body) = if i % 2 == 0 {
                    let body = kube_http::json(&pod(&format!("{prefix}-w{i}"), &run_id));
                    (Method::POST, path.to_string(), body)
                } else {
                    let target = format!("{path}/{prefix}-{}", (i / 2) % pods);
                    let patch =
                        json!({"metadata": {"labels": {"kybern-bench-update": i.to_string()}}});
                    (Method::PATCH, target, kube_http::merge_patch(&patch))
                };
                let acks = acks.clone();
                async move {
                    let b = conn.call(method, &path, Some(body)).await?;
                    let at = Instant::now();
                    let o: ObjHead =
                        serde_json::from_slice(&b).map_err(|e| format!("response: {e}"))?;
                    acks.lock().unwrap().push((o.metadata.resource_version, at));
                    Ok(())
                }
            },
        )
        .await
    };
    reports.push(rec.report("watch-write", took));
    let acks: HashMap<String, Instant> = std::mem::take(&mut *acks.lock().unwrap())
        .into_iter()
        .collect();
    counts.watch_writes = acks.len() as u64;
    counts.watch_events_expected = counts.watch_writes * counts.watchers_started;
    let drain_deadline = Instant::now() + DRAIN_TIMEOUT;
    while received.load(Ordering::Relaxed) < counts.watch_events_expected
        && Instant::now() < drain_deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let delivered_by = t_writes.elapsed();
    let _ = stop_tx.send(true);
    let mut delivery = Recorder::new();
    for t in watch_tasks {
        let log = match t.await {
            Ok(l) => l,
            Err(e) => {
                delivery.error(format!("watcher task failed: {e}"));
                continue;
            }
        };
        let mut seen = HashSet::with_capacity(acks.len());
        for (rv, at) in &log.events {
            match acks.get(rv) {
                Some(ack) if seen.insert(rv.as_str()) => {
                    delivery.record(at.saturating_duration_since(*ack));
                }
                _ => counts.watch_events_other += 1,
            }
        }
        counts.watch_events_received += seen.len() as u64;
        if let Some(e) = &log.error {
            delivery.error(e.clone());
        }
        if seen.len() == acks.len() && log.error.is_none() {
            counts.watchers_complete += 1;
        }
    }
    let missing = counts
        .watch_events_expected
        .saturating_sub(counts.watch_events_received);
    for _ in 0..missing.min(1_000_000) {
        delivery.error("event not delivered");
    }
    reports.push(delivery.report("watch-event", delivered_by));
    drop(watch_conns);

    // Phase 4: single-object GETs.
    let (rec, took) = {
        let (conns, path, prefix) = (conns.clone(), pods_path.clone(), prefix.clone());
        let pods = a.pods;
        closed_loop("get", clients, a.gets, 0, progress, move |_, c| {
            let conn = conns[c % conns.len()].clone();
            let n = rand::rng().random_range(0..pods);
            let path = format!("{path}/{prefix}-{n}");
            async move { conn.call(Method::GET, &path, None).await.map(drop) }
        })
        .await
    };
    counts.gets = rec.successes();
    reports.push(rec.report("get", took));

    if g.json {
        let out = Output {
            benchmark: "apiserver",
            server: &a.server,
            namespace: &ns,
            conns: conns.len(),
            clients,
            watch_conns: a.watchers.div_ceil(a.watchers_per_conn) as usize,
            options: a,
            counts: &counts,
            reports: &reports,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "bench apiserver {}: namespace {ns}, {} pods from {clients} clients on {} \
             connection(s), {} watchers ({} per connection), run prefix {prefix}",
            a.server,
            a.pods,
            conns.len(),
            a.watchers,
            a.watchers_per_conn
        );
        for r in &reports {
            print!("{}", r.to_text());
        }
        println!("\nCounts:\n{}", serde_json::to_string_pretty(&counts)?);
    }
    let failed: u64 = reports.iter().map(|r| r.errors).sum();
    if failed > 0 {
        bail!("{failed} requests or events failed (see the error distributions)");
    }
    Ok(())
}
