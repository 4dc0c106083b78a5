//! One small strategy per resource. `all()` is the table the registry and the API server are built from.

use std::sync::Arc;

use crate::strategy::Strategy;

pub mod componentstatuses;
pub mod configmaps;
pub mod daemonsets;
pub mod deployments;
pub mod endpoints;
pub mod endpointslices;
pub mod events;
pub mod horizontalpodautoscalers;
pub mod horizontalpodautoscalers_v1;
pub mod ingressclasses;
pub mod ingresses;
pub mod jobs;
pub mod leases;
pub mod namespaces;
pub mod nodes;
pub mod pods;
pub mod replicasets;
pub mod replicationcontrollers;
pub mod secrets;
pub mod serviceaccounts;
pub mod services;
pub mod statefulsets;
pub mod workload;

/// Every resource this server serves.
pub fn all() -> Vec<Arc<dyn Strategy>> {
    vec![
        Arc::new(namespaces::Namespaces),
        Arc::new(configmaps::ConfigMaps),
        Arc::new(secrets::Secrets),
        Arc::new(serviceaccounts::ServiceAccounts),
        Arc::new(pods::Pods),
        Arc::new(services::Services),
        Arc::new(endpoints::Endpoints),
        Arc::new(replicationcontrollers::ReplicationControllers),
        Arc::new(nodes::Nodes),
        Arc::new(events::Events),
        Arc::new(leases::Leases),
        Arc::new(deployments::Deployments),
        Arc::new(replicasets::ReplicaSets),
        Arc::new(daemonsets::DaemonSets),
        Arc::new(statefulsets::StatefulSets),
        Arc::new(jobs::Jobs),
        Arc::new(ingresses::Ingresses),
        Arc::new(ingressclasses::IngressClasses),
        Arc::new(horizontalpodautoscalers::HorizontalPodAutoscalers),
        Arc::new(horizontalpodautoscalers_v1::HorizontalPodAutoscalersV1),
        Arc::new(endpointslices::EndpointSlices),
        Arc::new(componentstatuses::ComponentStatuses),
    ]
}

/// `<none>` for an empty string, as upstream's printers.
pub(crate) fn or_none(s: &str) -> String {
    if s.is_empty() {
        "<none>".into()
    } else {
        s.to_string()
    }
}

/// Number of entries of an object-valued field.
pub(crate) fn count(v: Option<&serde_json::Value>) -> usize {
    match v {
        Some(serde_json::Value::Object(m)) => m.len(),
        Some(serde_json::Value::Array(a)) => a.len(),
        _ => 0,
    }
}
