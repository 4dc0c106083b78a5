//! OpenAPI v3: the index of group versions and, per group version, each resource's paths with
//! `x-kubernetes-group-version-kind` and the `fieldValidation` and `dryRun` parameters (so kubectl
//! leaves field validation to the server), and the schemas of the kinds (from k8s-openapi's schemars
//! impls, named as upstream's, e.g. `io.k8s.api.core.v1.Pod`) for `kubectl explain`. `/openapi/v2` answers 404, which kubectl
//! `/openapi/v2` is an empty document (gnostic protobuf, as client-go asks for it): kubectl up to
//! 1.28 insists on fetching it, finds no schema for a kind, skips client-side validation and
//! computes patches from its built-in types.

use k8s_openapi::api::{apps, autoscaling, batch, coordination, core, discovery, networking};
use registry::Registry;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::JsonSchema;
use serde_json::{json, Map, Value};

/// Adds `T`'s schema (and everything it refers to) to the generator; its schema name.
fn add<T: JsonSchema>(g: &mut SchemaGenerator) -> String {
    g.subschema_for::<T>();
    T::schema_name().into_owned()
}

/// The schema name of a served kind, its schema added to the generator.
fn schema_of(group: &str, version: &str, kind: &str, g: &mut SchemaGenerator) -> Option<String> {
    Some(match (group, kind) {
        ("", "Namespace") => add::<core::v1::Namespace>(g),
        ("", "ConfigMap") => add::<core::v1::ConfigMap>(g),
        ("", "Secret") => add::<core::v1::Secret>(g),
        ("", "ServiceAccount") => add::<core::v1::ServiceAccount>(g),
        ("", "Pod") => add::<core::v1::Pod>(g),
        ("", "Service") => add::<core::v1::Service>(g),
        ("", "Node") => add::<core::v1::Node>(g),
        ("", "Event") => add::<core::v1::Event>(g),
        ("coordination.k8s.io", "Lease") => add::<coordination::v1::Lease>(g),
        ("apps", "Deployment") => add::<apps::v1::Deployment>(g),
        ("apps", "ReplicaSet") => add::<apps::v1::ReplicaSet>(g),
        ("apps", "DaemonSet") => add::<apps::v1::DaemonSet>(g),
        ("apps", "StatefulSet") => add::<apps::v1::StatefulSet>(g),
        ("", "Endpoints") => add::<core::v1::Endpoints>(g),
        ("", "ReplicationController") => add::<core::v1::ReplicationController>(g),
        ("batch", "Job") => add::<batch::v1::Job>(g),
        ("autoscaling", "HorizontalPodAutoscaler") if version == "v2" => {
            add::<autoscaling::v2::HorizontalPodAutoscaler>(g)
        }
        ("autoscaling", "HorizontalPodAutoscaler") => {
            add::<autoscaling::v1::HorizontalPodAutoscaler>(g)
        }
        ("discovery.k8s.io", "EndpointSlice") => add::<discovery::v1::EndpointSlice>(g),
        ("networking.k8s.io", "Ingress") => add::<networking::v1::Ingress>(g),
        ("networking.k8s.io", "IngressClass") => add::<networking::v1::IngressClass>(g),
        _ => return None,
    })
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

pub fn index(reg: &Registry) -> Value {
    let mut paths = Map::new();
    for (g, v) in reg.group_versions() {
        let p = gv_path(g, v);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={}", crate::BUILD_HASH)}),
        );
    }
    json!({"paths": paths})
}

fn params() -> Value {
    json!([
        {"name": "dryRun", "in": "query", "description": "When present, indicates that modifications should not be persisted.", "schema": {"type": "string", "uniqueItems": true}},
        {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        {"name": "fieldValidation", "in": "query", "description": "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields.", "schema": {"type": "string", "uniqueItems": true}},
    ])
}

fn op(action: &str, gvk: &Value, with_params: bool) -> Value {
    let mut o = json!({
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk,
        "responses": {"200": {"description": "OK"}, "401": {"description": "Unauthorized"}},
    });
    if with_params {
        o["parameters"] = params();
    }
    o
}

/// The OpenAPI v3 document of one group version; None when it is not served.
pub fn group_version(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let mut paths = Map::new();
    let mut g = SchemaSettings::openapi3().into_generator();
    let mut kinds = vec![];
    for s in reg.stores() {
        let i = s.strategy.info();
        if i.group != group || i.version != version {
            continue;
        }
        if let Some(name) = schema_of(i.group, i.version, i.kind, &mut g) {
            kinds.push((name, i));
        }
        let gvk = json!({"group": i.group, "version": i.version, "kind": i.kind});
        let base = format!("/{}", gv_path(group, version));
        let coll = if i.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", i.resource)
        } else {
            format!("{base}/{}", i.resource)
        };
        paths.insert(
            coll.clone(),
            json!({"get": op("list", &gvk, false), "post": op("post", &gvk, true),
                "delete": op("deletecollection", &gvk, false)}),
        );
        paths.insert(
            format!("{coll}/{{name}}"),
            json!({"get": op("get", &gvk, false), "put": op("put", &gvk, true),
                "patch": op("patch", &gvk, true), "delete": op("delete", &gvk, false)}),
        );
    }
    if paths.is_empty() {
        return None;
    }
    let mut schemas = g.take_definitions(true);
    for (name, i) in kinds {
        if let Some(Value::Object(s)) = schemas.get_mut(&name) {
            s.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([{"group": i.group, "version": i.version, "kind": i.kind}]),
            );
        }
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": crate::GIT_VERSION},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

/// An OpenAPI v2 document with only `swagger` and `info`, encoded as gnostic's `openapi_v2.Document`.
pub fn v2_protobuf() -> Vec<u8> {
    fn field(n: u8, b: &[u8]) -> Vec<u8> {
        let mut out = vec![(n << 3) | 2, b.len() as u8];
        out.extend_from_slice(b);
        out
    }
    let mut info = field(1, b"Kubernetes");
    info.extend(field(2, crate::GIT_VERSION.as_bytes()));
    let mut doc = field(1, b"2.0");
    doc.extend(field(2, &info));
    doc
}
