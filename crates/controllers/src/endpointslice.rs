//! endpointslice-controller: keeps the EndpointSlices of every Service with a selector. Each
//! slice holds up to 100 endpoints of one address type and one port set; an endpoint carries the
//! conditions ready (ready and not terminating; always with `publishNotReadyAddresses`), serving
//! (ready) and terminating, its node, zone and target pod. Slices are labelled
//! `kubernetes.io/service-name` and `endpointslice.kubernetes.io/managed-by`, owned by the
//! Service (the garbage collector removes them with it), and a Service with no endpoints keeps one
//! empty placeholder slice, as upstream.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::endpoints as ep;
use crate::kit::{self, Named, Result};

pub const NAME: &str = "endpointslice-controller";
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// Upstream's --max-endpoints-per-slice default.
const MAX_PER_SLICE: usize = 100;
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

struct Ctx {
    client: Client,
    pods: Store<Pod>,
    nodes: Store<Node>,
    slices: Store<EndpointSlice>,
    /// Slices created and deleted per Service uid that the cache has not shown yet.
    expect: kit::Expectations<String>,
}

impl Named for Ctx {
    fn name(&self) -> &'static str {
        NAME
    }
}

/// Runs the EndpointSlice controller until its watches end.
pub async fn run(client: Client) -> anyhow::Result<()> {
    let (pods, pod_events) =
        kit::reflect(Api::<Pod>::all(client.clone()), watcher::Config::default());
    let (nodes, node_events) =
        kit::reflect(Api::<Node>::all(client.clone()), watcher::Config::default());
    let managed = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));
    let (slices, slice_events) = kit::reflect(Api::<EndpointSlice>::all(client.clone()), managed);
    let svc_ctl = Controller::new(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    );
    let services = svc_ctl.store();
    let ctl = svc_ctl
        .watches_stream(pod_events, move |p: Pod| {
            let ns = p.namespace().unwrap_or_default();
            services
                .state_filter(|s| s.metadata.namespace.as_deref() == Some(ns.as_str()))
                .iter()
                .map(|s| ObjectRef::from_obj(s.as_ref()))
                .collect::<Vec<_>>()
        })
        // Nodes only fill the zone cache; a zone change shows at the next pod change.
        .watches_stream(node_events, |_n: Node| None)
        .watches_stream(slice_events, |s: EndpointSlice| {
            let svc = s.labels().get(SERVICE_NAME_LABEL)?.clone();
            Some(ObjectRef::new(&svc).within(&s.namespace().unwrap_or_default()))
        });
    let ctx = Arc::new(Ctx {
        client,
        pods,
        nodes,
        slices,
        expect: Default::default(),
    });
    kit::drive(NAME, ctl, reconcile, ctx).await
}

/// One slice's worth of desired content.
#[derive(Clone, PartialEq)]
struct Want {
    address_type: String,
    ports: Vec<EndpointPort>,
    endpoints: Vec<Endpoint>,
}

fn to_slice_ports(ports: Vec<k8s_openapi::api::core::v1::EndpointPort>) -> Vec<EndpointPort> {
    let mut out: Vec<EndpointPort> = ports
        .into_iter()
        .map(|p| EndpointPort {
            name: Some(p.name.unwrap_or_default()),
            port: Some(p.port),
            protocol: p.protocol,
            app_protocol: p.app_protocol,
        })
        .collect();
    out.sort_by(|a, b| (&a.name, a.port).cmp(&(&b.name, b.port)));
    out
}

fn families(svc: &Service) -> Vec<String> {
    let f = svc
        .spec
        .as_ref()
        .and_then(|s| s.ip_families.clone())
        .unwrap_or_default();
    if f.is_empty() {
        vec!["IPv4".into()]
    } else {
        f
    }
}

/// A slice-to-be: its ports and endpoints.
type Group = (Vec<EndpointPort>, Vec<Endpoint>);

fn desired(svc: &Service, pods: &[Arc<Pod>], nodes: &Store<Node>) -> Vec<Want> {
    let publish = ep::publish_not_ready(svc);
    let fams = families(svc);
    // (address type, port set) -> endpoints
    let mut groups: BTreeMap<(String, Vec<(String, i32)>), Group> = BTreeMap::new();
    for pod in pods {
        let Some(ip) = ep::pod_ip(pod) else { continue };
        if matches!(kit::phase(pod), "Succeeded" | "Failed") {
            continue;
        }
        let family = match ip.parse::<IpAddr>() {
            Ok(IpAddr::V4(_)) => "IPv4",
            Ok(IpAddr::V6(_)) => "IPv6",
            Err(_) => continue,
        };
        if !fams.iter().any(|f| f == family) {
            continue;
        }
        let ports = to_slice_ports(ep::pod_ports(svc, pod));
        let terminating = kit::terminating(pod);
        let ready = kit::pod_ready(pod);
        let node_name = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let zone = node_name
            .as_ref()
            .and_then(|n| nodes.get(&ObjectRef::new(n)))
            .and_then(|n| n.labels().get(ZONE_LABEL).cloned());
        let endpoint = Endpoint {
            addresses: vec![ip],
            conditions: Some(EndpointConditions {
                ready: Some(publish || (ready && !terminating)),
                serving: Some(ready),
                terminating: Some(terminating),
            }),
            hostname: ep::pod_hostname(svc, pod),
            node_name,
            target_ref: Some(ep::target_ref(pod)),
            zone,
            ..Default::default()
        };
        let key: Vec<(String, i32)> = ports
            .iter()
            .map(|p| (p.name.clone().unwrap_or_default(), p.port.unwrap_or(0)))
            .collect();
        groups
            .entry((family.to_string(), key))
            .or_insert_with(|| (ports, vec![]))
            .1
            .push(endpoint);
    }
    let mut out = vec![];
    for ((address_type, _), (ports, mut endpoints)) in groups {
        endpoints.sort_by(|a, b| a.addresses.cmp(&b.addresses));
        for chunk in endpoints.chunks(MAX_PER_SLICE) {
            out.push(Want {
                address_type: address_type.clone(),
                ports: ports.clone(),
                endpoints: chunk.to_vec(),
            });
        }
    }
    if out.is_empty() {
        // The placeholder: an empty slice of the first family.
        out.push(Want {
            address_type: fams[0].clone(),
            ports: vec![],
            endpoints: vec![],
        });
    }
    out
}

fn slice_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut l = ep::derived_labels(svc);
    l.insert(SERVICE_NAME_LABEL.into(), svc.name_any());
    l.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    l
}

fn matches_want(s: &EndpointSlice, w: &Want) -> bool {
    s.address_type == w.address_type && s.ports.clone().unwrap_or_default() == w.ports
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action> {
    if !ep::has_selector(&svc) || svc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    kit::synced(&ctx.pods).await?;
    kit::synced(&ctx.slices).await?;
    kit::synced(&ctx.nodes).await?;
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let uid = svc.uid().unwrap_or_default();
    let cached = |n: &str| ctx.slices.get(&kit::obj_ref(&ns, n)).is_some();
    if !ctx.expect.satisfied(&uid, cached, |n| !cached(n)) {
        return Ok(Action::requeue(std::time::Duration::from_millis(500)));
    }
    let pods = ep::selected_pods(&ctx.pods, &svc);
    let wants = desired(&svc, &pods, &ctx.nodes);
    let labels = slice_labels(&svc);
    let mut existing: Vec<Arc<EndpointSlice>> = ctx.slices.state_filter(|s| {
        s.metadata.namespace.as_deref() == Some(ns.as_str())
            && s.labels().get(SERVICE_NAME_LABEL) == Some(&name)
            && s.metadata.deletion_timestamp.is_none()
    });
    // Slices of an earlier Service of the same name go (the garbage collector would, too).
    let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &ns);
    existing.sort_by_key(|s| s.name_any());
    let (mine, stale): (Vec<_>, Vec<_>) = existing
        .into_iter()
        .partition(|s| kit::controller_of(s.as_ref()).is_none_or(|r| r.uid == uid));
    let mut unused: Vec<Arc<EndpointSlice>> = mine;
    let (mut created, mut updated, mut deleted) = (vec![], 0, vec![]);
    for s in &stale {
        delete_slice(&api, &s.name_any()).await?;
        deleted.push(s.name_any());
    }
    let mut to_create = vec![];
    for w in wants {
        // Reuse an existing slice of the same address type and ports: unchanged ones first.
        let pos = unused
            .iter()
            .position(|s| matches_want(s, &w) && s.endpoints == w.endpoints)
            .or_else(|| unused.iter().position(|s| matches_want(s, &w)));
        match pos {
            Some(i) => {
                let cur = unused.remove(i);
                if cur.endpoints == w.endpoints && cur.metadata.labels.as_ref() == Some(&labels) {
                    continue;
                }
                let mut s = (*cur).clone();
                s.endpoints = w.endpoints;
                s.metadata.labels = Some(labels.clone());
                api.replace(&s.name_any(), &PostParams::default(), &s)
                    .await?;
                updated += 1;
            }
            None => to_create.push(w),
        }
    }
    for w in to_create {
        // A leftover slice of other ports is rewritten rather than deleted and created again.
        let (name_opt, rv) = match unused.pop() {
            Some(s) => (Some(s.name_any()), s.metadata.resource_version.clone()),
            None => (None, None),
        };
        let s = EndpointSlice {
            metadata: ObjectMeta {
                name: name_opt.clone(),
                generate_name: Some(format!("{name}-")),
                namespace: Some(ns.clone()),
                labels: Some(labels.clone()),
                owner_references: Some(vec![kit::owner_ref(svc.as_ref())]),
                resource_version: rv,
                ..Default::default()
            },
            address_type: w.address_type,
            endpoints: w.endpoints,
            ports: Some(w.ports),
        };
        match name_opt {
            Some(n) => {
                api.replace(&n, &PostParams::default(), &s).await?;
                updated += 1;
            }
            None => {
                let made = api.create(&PostParams::default(), &s).await?;
                created.push(made.name_any());
            }
        }
    }
    for s in unused {
        delete_slice(&api, &s.name_any()).await?;
        deleted.push(s.name_any());
    }
    if !created.is_empty() || updated > 0 || !deleted.is_empty() {
        tracing::info!(
            controller = NAME,
            "service {ns}/{name}: {} slice(s) created, {updated} updated, {} deleted",
            created.len(),
            deleted.len()
        );
    }
    ctx.expect.expect(&uid, created, deleted);
    Ok(Action::await_change())
}

async fn delete_slice(api: &Api<EndpointSlice>, name: &str) -> Result<()> {
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
