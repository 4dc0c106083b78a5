//! The controller-manager's Prometheus metrics (served on `/metrics`).

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    pub controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LeaseLabel {
    pub name: String,
}

struct Metrics {
    registry: Registry,
    leader: Family<LeaseLabel, Gauge>,
    syncs: Family<ControllerLabel, Counter>,
    errors: Family<ControllerLabel, Counter>,
}

fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| {
        let mut registry = Registry::default();
        let leader = Family::<LeaseLabel, Gauge>::default();
        registry.register(
            "leader_election_master_status",
            "Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, 1 indicates master.",
            leader.clone(),
        );
        let syncs = Family::<ControllerLabel, Counter>::default();
        registry.register(
            "controller_syncs",
            "Reconciliations a controller completed",
            syncs.clone(),
        );
        let errors = Family::<ControllerLabel, Counter>::default();
        registry.register(
            "controller_sync_errors",
            "Reconciliations a controller failed (they are retried with backoff)",
            errors.clone(),
        );
        Metrics {
            registry,
            leader,
            syncs,
            errors,
        }
    })
}

/// Records whether this replica leads (`leader_election_master_status{name="kube-controller-manager"}`).
pub fn set_leader(leading: bool) {
    metrics()
        .leader
        .get_or_create(&LeaseLabel {
            name: "kube-controller-manager".into(),
        })
        .set(leading as i64);
}

/// Counts one reconciliation of `controller`.
pub fn synced(controller: &str, ok: bool) {
    let l = ControllerLabel {
        controller: controller.into(),
    };
    if ok {
        metrics().syncs.get_or_create(&l).inc();
    } else {
        metrics().errors.get_or_create(&l).inc();
    }
}

/// The text exposition format.
pub fn encode() -> String {
    let mut out = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut out, &metrics().registry);
    out
}
