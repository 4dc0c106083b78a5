//! The scheduler's HTTP endpoint: `/healthz` (checks `ping` and, with leader election,
//! `leaderElection`, as upstream), `/livez`, `/readyz` (ready once the informers have listed nodes
//! and pods; a standby replica's informers run too, so it is ready as well) and `/metrics` in the Prometheus text format, with upstream's metric
//! names. Plain HTTP (upstream serves HTTPS with delegated authn; not yet here).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{RawQuery, State as AxState};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::State;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    result: String,
    profile: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LeaseLabel {
    name: String,
}

/// How far past its lease duration a leader may be late renewing before `/healthz` fails
/// (kube-scheduler uses 20 s).
const LEADER_TOLERANCE: std::time::Duration = std::time::Duration::from_secs(20);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: String,
}

pub struct Metrics {
    registry: Registry,
    profile: String,
    attempts: Family<AttemptLabels, Counter>,
    durations: Family<AttemptLabels, Histogram>,
    pending: Family<QueueLabels, Gauge>,
    bind_errors: Counter,
    leader: Family<LeaseLabel, Gauge>,
}

impl Metrics {
    pub fn new(profile: &str) -> Metrics {
        let mut root = Registry::default();
        let leader = Family::<LeaseLabel, Gauge>::default();
        root.register(
            "leader_election_master_status",
            "Whether this replica leads its election (1) or not (0), by the lease name.",
            leader.clone(),
        );
        let registry = root.sub_registry_with_prefix("scheduler");
        let attempts = Family::<AttemptLabels, Counter>::default();
        registry.register(
            "schedule_attempts",
            "Number of attempts to schedule pods, by the result.",
            attempts.clone(),
        );
        let durations = Family::<AttemptLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 16))
        });
        registry.register(
            "scheduling_attempt_duration_seconds",
            "Scheduling attempt latency in seconds (scheduling algorithm + binding decision).",
            durations.clone(),
        );
        let pending = Family::<QueueLabels, Gauge>::default();
        registry.register(
            "pending_pods",
            "Number of pending pods, by the queue type: active, backoff or unschedulable.",
            pending.clone(),
        );
        let bind_errors = Counter::default();
        registry.register(
            "binding_errors",
            "Number of bindings the API server refused or that failed (the pod is retried).",
            bind_errors.clone(),
        );
        Metrics {
            registry: root,
            profile: profile.into(),
            attempts,
            durations,
            pending,
            bind_errors,
            leader,
        }
    }

    /// `leader_election_master_status{name="kube-scheduler"}`.
    pub fn set_leader(&self, leading: bool) {
        self.leader
            .get_or_create(&LeaseLabel {
                name: crate::LEASE_NAME.into(),
            })
            .set(leading as i64);
    }

    pub fn attempt(&self, result: &str, seconds: f64) {
        let l = AttemptLabels {
            result: result.into(),
            profile: self.profile.clone(),
        };
        self.attempts.get_or_create(&l).inc();
        self.durations.get_or_create(&l).observe(seconds);
    }

    pub fn bind_error(&self) {
        self.bind_errors.inc();
    }

    pub fn set_pending(&self, (active, backoff, unsched): (usize, usize, usize)) {
        for (q, n) in [
            ("active", active),
            ("backoff", backoff),
            ("unschedulable", unsched),
        ] {
            self.pending
                .get_or_create(&QueueLabels { queue: q.into() })
                .set(n as i64);
        }
    }

    fn encode(&self) -> String {
        let mut s = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }
}

async fn livez() -> &'static str {
    "ok"
}

/// Upstream's healthz: `ok`, or 500 listing the failed checks; `?verbose` lists every check.
async fn healthz(AxState(st): AxState<Arc<State>>, RawQuery(q): RawQuery) -> impl IntoResponse {
    let mut checks = vec![("ping", Ok(()))];
    if let Some(h) = st.election.get() {
        checks.push(("leaderElection", h.check(LEADER_TOLERANCE)));
    }
    let failed = checks.iter().any(|(_, r)| r.is_err());
    let verbose = q.is_some_and(|q| q.split('&').any(|p| p == "verbose" || p == "verbose=true"));
    if !failed && !verbose {
        return (StatusCode::OK, "ok".to_string());
    }
    let mut body = String::new();
    for (name, r) in &checks {
        match r {
            Ok(()) => body.push_str(&format!("[+]{name} ok\n")),
            Err(e) => {
                tracing::warn!("healthz check {name} failed: {e}");
                body.push_str(&format!("[-]{name} failed: reason withheld\n"));
            }
        }
    }
    if failed {
        body.push_str("healthz check failed\n");
        (StatusCode::INTERNAL_SERVER_ERROR, body)
    } else {
        body.push_str("healthz check passed\n");
        (StatusCode::OK, body)
    }
}

async fn readyz(AxState(st): AxState<Arc<State>>) -> impl IntoResponse {
    if st.is_synced() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "informers not synced")
    }
}

async fn metrics(AxState(st): AxState<Arc<State>>) -> impl IntoResponse {
    st.metrics.set_pending(st.queue.lengths());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        st.metrics.encode(),
    )
}

/// Serves until `cancel`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<State>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
}

pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (--bind-address/--secure-port): {e}"))
}
