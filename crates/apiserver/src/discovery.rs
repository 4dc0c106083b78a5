//! Discovery: `/api`, `/apis`, `/api/v1`, `/apis/<group>[/<version>]`, and aggregated discovery
//! (apidiscovery.k8s.io/v2) when the client asks for it, as kubectl 1.30+ does.

use registry::{GenericStore, Registry};
use serde_json::{json, Value};

pub const AGGREGATED_CT: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

fn sub_kind(store: &GenericStore, sub: &str) -> (&'static str, &'static str, &'static str) {
    let i = store.strategy.info();
    match sub {
        "scale" => ("autoscaling", "v1", "Scale"),
        "binding" => ("", "v1", "Binding"),
        "eviction" => ("policy", "v1", "Eviction"),
        _ => (i.group, i.version, i.kind),
    }
}

fn sub_verbs(sub: &str) -> Vec<&'static str> {
    match sub {
        "finalize" => vec!["update"],
        "binding" | "eviction" => vec!["create"],
        _ => vec!["get", "patch", "update"],
    }
}

/// The APIResourceList of one group version.
pub fn resource_list(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let mut resources = vec![];
    for s in reg.stores() {
        let i = s.strategy.info();
        if i.group != group || i.version != version {
            continue;
        }
        let mut r = json!({
            "name": i.resource, "singularName": i.singular, "namespaced": i.namespaced,
            "kind": i.kind, "verbs": s.strategy.verbs(),
        });
        if !i.short_names.is_empty() {
            r["shortNames"] = json!(i.short_names);
        }
        if !i.categories.is_empty() {
            r["categories"] = json!(i.categories);
        }
        resources.push(r);
        for sub in i.subresources {
            let (g, v, k) = sub_kind(s, sub);
            let mut r = json!({
                "name": format!("{}/{sub}", i.resource), "singularName": "",
                "namespaced": i.namespaced, "kind": k, "verbs": sub_verbs(sub),
            });
            if g != i.group || v != i.version {
                r["group"] = json!(g);
                r["version"] = json!(v);
            }
            resources.push(r);
        }
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_entry(group: &str, versions: &[&str]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({"name": group, "versions": vs, "preferredVersion": vs[0]})
}

fn groups(reg: &Registry) -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&'static str, Vec<&'static str>)> = vec![];
    for (g, v) in reg.group_versions() {
        if g.is_empty() {
            continue;
        }
        match out.iter_mut().find(|(og, _)| *og == g) {
            Some((_, vs)) => vs.push(v),
            None => out.push((g, vec![v])),
        }
    }
    out
}

pub fn group_list(reg: &Registry) -> Value {
    let gs: Vec<Value> = groups(reg)
        .iter()
        .map(|(g, vs)| group_entry(g, vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": gs})
}

pub fn group(reg: &Registry, name: &str) -> Option<Value> {
    groups(reg).iter().find(|(g, _)| *g == name).map(|(g, vs)| {
        let mut e = group_entry(g, vs);
        e["kind"] = json!("APIGroup");
        e["apiVersion"] = json!("v1");
        e
    })
}

fn aggregated_group(reg: &Registry, group: &str, versions: &[&str]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| {
            let mut resources = vec![];
            for s in reg.stores() {
                let i = s.strategy.info();
                if i.group != group || i.version != *v {
                    continue;
                }
                let subs: Vec<Value> = i
                    .subresources
                    .iter()
                    .map(|sub| {
                        let (g, v, k) = sub_kind(s, sub);
                        json!({"subresource": sub, "responseKind": {"group": g, "version": v, "kind": k},
                            "verbs": sub_verbs(sub)})
                    })
                    .collect();
                let mut r = json!({
                    "resource": i.resource,
                    "responseKind": {"group": i.group, "version": i.version, "kind": i.kind},
                    "scope": if i.namespaced { "Namespaced" } else { "Cluster" },
                    "singularResource": i.singular,
                    "verbs": s.strategy.verbs(),
                });
                if !i.short_names.is_empty() {
                    r["shortNames"] = json!(i.short_names);
                }
                if !i.categories.is_empty() {
                    r["categories"] = json!(i.categories);
                }
                if !subs.is_empty() {
                    r["subresources"] = json!(subs);
                }
                resources.push(r);
            }
            json!({"version": v, "resources": resources, "freshness": "Current"})
        })
        .collect();
    let md = if group.is_empty() {
        json!({"creationTimestamp": null})
    } else {
        json!({"name": group, "creationTimestamp": null})
    };
    json!({"metadata": md, "versions": vs})
}

/// The aggregated discovery document of `/api` (core) or `/apis` (every group).
pub fn aggregated(reg: &Registry, core: bool) -> Value {
    let items: Vec<Value> = if core {
        vec![aggregated_group(reg, "", &["v1"])]
    } else {
        groups(reg)
            .iter()
            .map(|(g, vs)| aggregated_group(reg, g, vs))
            .collect()
    };
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    })
}
