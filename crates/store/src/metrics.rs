//! `/metrics` in the Prometheus text format, with etcd's metric names where they exist.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::member::Member;

pub async fn serve(State(m): State<Arc<Member>>) -> impl IntoResponse {
    let mut reg = Registry::default();
    let gauge = |reg: &mut Registry, name: &str, help: &str, v: i64| {
        let g: Gauge = Gauge::default();
        g.set(v);
        reg.register(name, help, g);
    };
    let (size, in_use) = m.store.db_size();
    gauge(
        &mut reg,
        "etcd_server_has_leader",
        "Whether a leader exists (1) or not (0)",
        1,
    );
    gauge(
        &mut reg,
        "etcd_server_is_leader",
        "Whether this member is the leader",
        1,
    );
    gauge(
        &mut reg,
        "etcd_mvcc_db_total_size_in_bytes",
        "Backend file size",
        size,
    );
    gauge(
        &mut reg,
        "etcd_mvcc_db_total_size_in_use_in_bytes",
        "Backend bytes in use",
        in_use,
    );
    gauge(
        &mut reg,
        "etcd_server_quota_backend_bytes",
        "Backend quota",
        m.settings.quota.map_or(0, |q| q as i64),
    );
    gauge(
        &mut reg,
        "etcd_debugging_mvcc_current_revision",
        "Current store revision",
        m.store.revision(),
    );
    gauge(
        &mut reg,
        "etcd_debugging_mvcc_compact_revision",
        "Last compaction revision",
        m.store.compact_revision(),
    );
    gauge(
        &mut reg,
        "etcd_debugging_mvcc_watcher_total",
        "Watchers",
        m.store.hub.watcher_count() as i64,
    );
    gauge(
        &mut reg,
        "etcd_debugging_lease_total",
        "Leases",
        m.store.lease_ids().len() as i64,
    );
    gauge(
        &mut reg,
        "etcd_server_proposals_applied_total",
        "Operations applied",
        m.applied.load(Ordering::Relaxed) as i64,
    );
    gauge(
        &mut reg,
        "etcd_server_alarms",
        "Active alarms",
        m.store.alarms().len() as i64,
    );
    gauge(
        &mut reg,
        "process_uptime_seconds",
        "Seconds since the member started",
        m.started.elapsed().as_secs() as i64,
    );
    let mut out = String::new();
    let _ = encode(&mut out, &reg);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
