//! endpoints-controller: keeps an Endpoints object (named as its Service) listing the pods a
//! Service selects: ready pods under `addresses`, the others under `notReadyAddresses` (all under
//! `addresses` with `publishNotReadyAddresses`), ports by name with named target ports resolved
//! per pod, pods grouped into subsets by their port set, at most 1000 addresses (then annotated
//! `endpoints.kubernetes.io/over-capacity: truncated`). Services without a selector, and
//! ExternalName ones, are left alone (their Endpoints are the user's); the Endpoints of a deleted
//! Service is deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::kit::{self, Named, Result};

pub const NAME: &str = "endpoints-controller";

/// The label a headless Service's endpoints carry.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// Endpoints holding a leader-election record (old-style locks) are never swept.
const LEADER_ANNOTATION: &str = "control-plane.alpha.kubernetes.io/leader";

struct Ctx {
    client: Client,
    pods: Store<Pod>,
    endpoints: Store<Endpoints>,
}

impl Named for Ctx {
    fn name(&self) -> &'static str {
        NAME
    }
}

/// Runs the endpoints controller until its watches end.
pub async fn run(client: Client) -> anyhow::Result<()> {
    let (pods, pod_events) =
        kit::reflect(Api::<Pod>::all(client.clone()), watcher::Config::default());
    let (endpoints, ep_events) = kit::reflect(
        Api::<Endpoints>::all(client.clone()),
        watcher::Config::default(),
    );
    let svc_ctl = Controller::new(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    );
    let services = svc_ctl.store();
    let for_pod = services.clone();
    let ctl = svc_ctl
        // A pod change may matter to any Service of its namespace (its labels may have left one).
        .watches_stream(pod_events, move |p: Pod| {
            services_in(&for_pod, &p.namespace().unwrap_or_default())
        })
        .watches_stream(ep_events, |e: Endpoints| {
            Some(ObjectRef::new(&e.name_any()).within(&e.namespace().unwrap_or_default()))
        });
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        pods,
        endpoints: endpoints.clone(),
    });
    let sweep = sweep_orphans(client, endpoints, services);
    tokio::select! {
        r = kit::drive(NAME, ctl, reconcile, ctx) => r,
        r = sweep => r,
    }
}

fn services_in(store: &Store<Service>, ns: &str) -> Vec<ObjectRef<Service>> {
    store
        .state_filter(|s| s.metadata.namespace.as_deref() == Some(ns))
        .iter()
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect()
}

/// The pods a Service selects, from the cache.
pub(crate) fn selected_pods(pods: &Store<Pod>, svc: &Service) -> Vec<Arc<Pod>> {
    let ns = svc.namespace().unwrap_or_default();
    let sel = svc.spec.as_ref().and_then(|s| s.selector.as_ref());
    pods.state_filter(|p| {
        p.metadata.namespace.as_deref() == Some(ns.as_str())
            && kit::map_selects(sel, p.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()))
    })
}

/// Whether the controllers manage a Service's endpoints: it has a selector and is not an
/// ExternalName service (a DNS alias has no endpoints).
pub(crate) fn has_selector(svc: &Service) -> bool {
    let spec = svc.spec.as_ref();
    spec.and_then(|s| s.type_.as_deref()) != Some("ExternalName")
        && spec
            .and_then(|s| s.selector.as_ref())
            .is_some_and(|s| !s.is_empty())
}

pub(crate) fn headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

pub(crate) fn publish_not_ready(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false)
}

/// The ports a pod serves for a Service: each service port whose target port the pod has (a
/// named target port is looked up among the pod's container ports of that protocol).
pub(crate) fn pod_ports(svc: &Service, pod: &Pod) -> Vec<EndpointPort> {
    let mut out = vec![];
    for sp in svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
    {
        let proto = sp.protocol.clone().unwrap_or_else(|| "TCP".into());
        let port = match &sp.target_port {
            None => Some(sp.port),
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(p)) => Some(*p),
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(name)) => {
                match name.parse::<i32>() {
                    Ok(n) => Some(n),
                    Err(_) => find_named_port(pod, name, &proto),
                }
            }
        };
        if let Some(port) = port {
            out.push(EndpointPort {
                name: sp.name.clone(),
                port,
                protocol: Some(proto),
                app_protocol: sp.app_protocol.clone(),
            });
        }
    }
    out
}

fn find_named_port(pod: &Pod, name: &str, proto: &str) -> Option<i32> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| {
            p.name.as_deref() == Some(name) && p.protocol.as_deref().unwrap_or("TCP") == proto
        })
        .map(|p| p.container_port)
}

/// The pod's IP; pods without one cannot be endpoints yet.
pub(crate) fn pod_ip(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .filter(|ip| !ip.is_empty())
}

/// Upstream's hostname rule: a pod's hostname is published when its subdomain is the Service.
pub(crate) fn pod_hostname(svc: &Service, pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if spec.subdomain.as_deref() == Some(svc.name_any().as_str()) {
        spec.hostname.clone().filter(|h| !h.is_empty())
    } else {
        None
    }
}

pub(crate) fn target_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        name: pod.metadata.name.clone(),
        namespace: pod.metadata.namespace.clone(),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    }
}

/// Labels of a Service's Endpoints and EndpointSlices: the Service's own, plus the headless mark.
pub(crate) fn derived_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut l = svc.metadata.labels.clone().unwrap_or_default();
    l.remove(HEADLESS_LABEL);
    if headless(svc) {
        l.insert(HEADLESS_LABEL.into(), String::new());
    }
    l
}

/// The subsets a Service should have, grouped by port set and sorted, as upstream repacks them.
fn desired_subsets(svc: &Service, pods: &[Arc<Pod>]) -> Vec<EndpointSubset> {
    let publish = publish_not_ready(svc);
    let no_ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .is_none_or(|p| p.is_empty());
    // port set (as a sortable key) -> (ports, ready addresses, not-ready addresses)
    type Group = (
        Vec<EndpointPort>,
        Vec<EndpointAddress>,
        Vec<EndpointAddress>,
    );
    let mut groups: BTreeMap<Vec<(String, i32, String)>, Group> = BTreeMap::new();
    for pod in pods {
        let Some(ip) = pod_ip(pod) else { continue };
        // Finished pods never serve again; terminating ones only when not-ready ones are published.
        if matches!(kit::phase(pod), "Succeeded" | "Failed") || (kit::terminating(pod) && !publish)
        {
            continue;
        }
        let ports = pod_ports(svc, pod);
        if ports.is_empty() && !(no_ports && headless(svc)) {
            continue;
        }
        let key: Vec<(String, i32, String)> = ports
            .iter()
            .map(|p| {
                (
                    p.name.clone().unwrap_or_default(),
                    p.port,
                    p.protocol.clone().unwrap_or_default(),
                )
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let addr = EndpointAddress {
            ip,
            hostname: pod_hostname(svc, pod),
            node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            target_ref: Some(target_ref(pod)),
        };
        let g = groups
            .entry(key)
            .or_insert_with(|| (ports.clone(), vec![], vec![]));
        if publish || kit::pod_ready(pod) {
            g.1.push(addr);
        } else {
            g.2.push(addr);
        }
    }
    groups
        .into_values()
        .map(|(mut ports, mut ready, mut not_ready)| {
            ports.sort_by(|a, b| (&a.name, a.port).cmp(&(&b.name, b.port)));
            ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            not_ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: (!ports.is_empty()).then_some(ports),
            }
        })
        .collect()
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action> {
    if !has_selector(&svc) || svc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    kit::synced(&ctx.pods).await?;
    kit::synced(&ctx.endpoints).await?;
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let pods = selected_pods(&ctx.pods, &svc);
    let subsets = desired_subsets(&svc, &pods);
    let labels = derived_labels(&svc);
    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &ns);
    let current = ctx.endpoints.get(&kit::obj_ref(&ns, &name));
    let (subsets, truncated) = truncate(subsets, MAX_ADDRESSES);
    let want_subsets = (!subsets.is_empty()).then_some(subsets);
    match current {
        Some(cur) => {
            let cur_subsets = cur.subsets.clone().filter(|s| !s.is_empty());
            let cur_truncated = cur.annotations().contains_key(OVER_CAPACITY);
            if cur_subsets == want_subsets
                && cur.metadata.labels.clone().unwrap_or_default() == labels
                && cur_truncated == truncated
            {
                return Ok(Action::await_change());
            }
            let mut ep = (*cur).clone();
            ep.subsets = want_subsets;
            ep.metadata.labels = Some(labels);
            mark_over_capacity(&mut ep, truncated);
            api.replace(&name, &PostParams::default(), &ep).await?;
            tracing::info!(
                controller = NAME,
                "updated endpoints {ns}/{name}: {}",
                summary(&ep)
            );
        }
        None => {
            let ep = Endpoints {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(ns.clone()),
                    labels: Some(labels),
                    ..Default::default()
                },
                subsets: want_subsets,
            };
            let mut ep = ep;
            mark_over_capacity(&mut ep, truncated);
            match api.create(&PostParams::default(), &ep).await {
                Ok(_) => tracing::info!(
                    controller = NAME,
                    "created endpoints {ns}/{name}: {}",
                    summary(&ep)
                ),
                // Created meanwhile: the watch brings it and reconciles again.
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(Action::await_change())
}

/// Upstream's cap on the addresses of one Endpoints object (EndpointSlices have no such cap).
const MAX_ADDRESSES: usize = 1000;
/// The annotation saying the Endpoints were cut to [`MAX_ADDRESSES`].
pub const OVER_CAPACITY: &str = "endpoints.kubernetes.io/over-capacity";

fn mark_over_capacity(ep: &mut Endpoints, truncated: bool) {
    let a = ep.metadata.annotations.get_or_insert_with(BTreeMap::new);
    if truncated {
        a.insert(OVER_CAPACITY.into(), "truncated".into());
    } else {
        a.remove(OVER_CAPACITY);
    }
    if a.is_empty() {
        ep.metadata.annotations = None;
    }
}

/// Cuts subsets to `max` addresses, ready ones kept first; whether anything was cut.
fn truncate(mut subsets: Vec<EndpointSubset>, max: usize) -> (Vec<EndpointSubset>, bool) {
    let count = |v: &Option<Vec<EndpointAddress>>| v.as_ref().map_or(0, Vec::len);
    let total: usize = subsets
        .iter()
        .map(|s| count(&s.addresses) + count(&s.not_ready_addresses))
        .sum();
    if total <= max {
        return (subsets, false);
    }
    let mut left = max;
    for field in [0, 1] {
        for s in subsets.iter_mut() {
            let list = if field == 0 {
                &mut s.addresses
            } else {
                &mut s.not_ready_addresses
            };
            if let Some(v) = list.as_mut() {
                v.truncate(left);
                left -= v.len();
                if v.is_empty() {
                    *list = None;
                }
            }
        }
    }
    subsets.retain(|s| s.addresses.is_some() || s.not_ready_addresses.is_some());
    (subsets, true)
}

fn summary(ep: &Endpoints) -> String {
    let (mut r, mut n) = (0, 0);
    for s in ep.subsets.iter().flatten() {
        r += s.addresses.as_ref().map_or(0, Vec::len);
        n += s.not_ready_addresses.as_ref().map_or(0, Vec::len);
    }
    format!("{r} ready, {n} not ready")
}

/// Deletes Endpoints whose Service is gone (upstream deletes them with the Service, and at start
/// sweeps the leftovers); the caches are checked every 2 s and the server asked before deleting.
async fn sweep_orphans(
    client: Client,
    endpoints: Store<Endpoints>,
    services: Store<Service>,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tick.tick().await;
        if kit::synced(&endpoints).await.is_err() || kit::synced(&services).await.is_err() {
            continue;
        }
        for ep in endpoints.state() {
            let ns = ep.namespace().unwrap_or_default();
            let name = ep.name_any();
            if ep.annotations().contains_key(LEADER_ANNOTATION)
                || services.get(&kit::obj_ref(&ns, &name)).is_some()
            {
                continue;
            }
            // Check the server, not only the cache, before deleting.
            let svcs: Api<Service> = Api::namespaced(client.clone(), &ns);
            match svcs.get_opt(&name).await {
                Ok(None) => {}
                _ => continue,
            }
            let api: Api<Endpoints> = Api::namespaced(client.clone(), &ns);
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => tracing::info!(
                    controller = NAME,
                    "deleted endpoints {ns}/{name}: its service is gone"
                ),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => tracing::warn!(controller = NAME, "deleting endpoints {ns}/{name}: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(publish: bool) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns"},
            "spec": {"selector": {"app": "web"}, "publishNotReadyAddresses": publish,
                "ports": [{"name": "http", "port": 80, "targetPort": "web"}, {"name": "m", "port": 9, "targetPort": 9}]}
        }))
        .unwrap()
    }

    fn pod(name: &str, ip: &str, port: i32, ready: bool, deleting: bool) -> Arc<Pod> {
        let mut p = json!({
            "metadata": {"name": name, "namespace": "ns", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "ports": [{"name": "web", "containerPort": port}]}]},
            "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
        });
        if deleting {
            p["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
        }
        Arc::new(serde_json::from_value(p).unwrap())
    }

    #[test]
    fn subsets_group_by_resolved_ports_and_split_readiness() {
        let pods = vec![
            pod("a", "10.0.0.2", 8080, true, false),
            pod("b", "10.0.0.1", 8080, false, false),
            pod("c", "10.0.0.3", 8081, true, false),
            pod("gone", "10.0.0.9", 8080, true, true),
        ];
        let s = desired_subsets(&svc(false), &pods);
        assert_eq!(s.len(), 2);
        let first = &s[0];
        let ports: Vec<i32> = first.ports.iter().flatten().map(|p| p.port).collect();
        assert_eq!(ports, [8080, 9]);
        let ips = |v: &Option<Vec<EndpointAddress>>| {
            v.iter().flatten().map(|a| a.ip.clone()).collect::<Vec<_>>()
        };
        assert_eq!(ips(&first.addresses), ["10.0.0.2"]);
        assert_eq!(ips(&first.not_ready_addresses), ["10.0.0.1"]);
        assert_eq!(ips(&s[1].addresses), ["10.0.0.3"]);
    }

    #[test]
    fn publish_not_ready_puts_every_pod_in_addresses() {
        let pods = vec![
            pod("a", "10.0.0.1", 80, false, false),
            pod("t", "10.0.0.2", 80, true, true),
        ];
        let s = desired_subsets(&svc(true), &pods);
        let ips: Vec<_> = s[0]
            .addresses
            .iter()
            .flatten()
            .map(|a| a.ip.as_str())
            .collect();
        assert_eq!(ips, ["10.0.0.1", "10.0.0.2"]);
        assert!(s[0].not_ready_addresses.is_none());
    }

    #[test]
    fn over_capacity_keeps_ready_addresses_first() {
        let pods: Vec<_> = (0..5)
            .map(|i| {
                pod(
                    &format!("p{i}"),
                    &format!("10.0.0.{i}"),
                    80,
                    i % 2 == 0,
                    false,
                )
            })
            .collect();
        let (s, cut) = truncate(desired_subsets(&svc(false), &pods), 4);
        assert!(cut);
        assert_eq!(s[0].addresses.as_ref().unwrap().len(), 3);
        assert_eq!(s[0].not_ready_addresses.as_ref().unwrap().len(), 1);
        let (_, cut) = truncate(desired_subsets(&svc(false), &pods), 5);
        assert!(!cut);
    }

    #[test]
    fn a_pod_without_the_named_port_serves_only_the_numbered_one() {
        let mut p = (*pod("a", "10.0.0.1", 80, true, false)).clone();
        p.spec.as_mut().unwrap().containers[0].ports = None;
        let ports: Vec<_> = pod_ports(&svc(false), &p).iter().map(|p| p.port).collect();
        assert_eq!(ports, [9]);
    }
}
