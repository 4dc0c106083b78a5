//! The resource endpoints: one handler for every resource, routed by the path to a `GenericStore`.
//! `/api/v1/[namespaces/<ns>/]<resource>[/<name>[/<subresource>]]` and the same under
//! `/apis/<group>/<version>/`.

use std::sync::Arc;

use apimachinery::patch::PatchType;
use apimachinery::{meta, status, ApiError};
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, Method};
use axum::response::Response;
use futures::StreamExt;
use registry::table::{self, IncludeObject};
use registry::{Deleted, GenericStore, ListResult};
use serde_json::{json, Value};

use crate::negotiate::{self, Output};
use crate::params::Query;
use crate::State;

/// A parsed resource path.
pub struct Target<'a> {
    pub store: &'a GenericStore,
    pub namespace: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// Resolves the segments after `/api/v1` or `/apis/<g>/<v>`; None when nothing is served there.
pub fn resolve<'a>(
    state: &'a State,
    group: &str,
    version: &str,
    segs: &[&str],
) -> Option<Target<'a>> {
    let reg = &state.registry;
    let (ns, rest) = if segs.len() >= 3 && segs[0] == "namespaces" {
        match reg.lookup(group, version, segs[2]) {
            Some(s) if s.strategy.info().namespaced => (segs[1].to_string(), &segs[2..]),
            _ => (String::new(), segs),
        }
    } else {
        (String::new(), segs)
    };
    let store = reg.lookup(group, version, rest.first()?)?;
    if rest.len() > 3 {
        return None;
    }
    if let Some(sub) = rest.get(2) {
        let info = store.strategy.info();
        if !info.subresources.contains(sub) {
            return None;
        }
    }
    if store.strategy.info().namespaced && ns.is_empty() && rest.len() > 1 {
        return None;
    }
    Some(Target {
        store,
        namespace: ns,
        name: rest.get(1).map(|s| s.to_string()),
        subresource: rest.get(2).map(|s| s.to_string()),
    })
}

fn list_kind(store: &GenericStore) -> String {
    format!("{}List", store.strategy.info().kind)
}

fn list_meta(l: &ListResult) -> Value {
    let mut m = json!({"resourceVersion": l.resource_version.to_string()});
    if !l.continue_token.is_empty() {
        m["continue"] = json!(l.continue_token);
    }
    if let Some(r) = l.remaining {
        if r > 0 {
            m["remainingItemCount"] = json!(r);
        }
    }
    m
}

fn list_body(store: &GenericStore, l: &ListResult, q: &Query, out: Output) -> Value {
    if out == Output::Table {
        return table::table(
            &*store.strategy,
            &l.items,
            list_meta(l),
            IncludeObject::parse(q.get("includeObject")),
            false,
        );
    }
    json!({
        "kind": list_kind(store),
        "apiVersion": store.strategy.info().api_version(),
        "metadata": list_meta(l),
        "items": l.items,
    })
}

/// A JSON list, each item serialised as soon as it is read (the items are never all held
/// decoded, which at 10,000 pods would take hundreds of MB).
async fn json_list(store: &GenericStore, ns: &str, q: &Query) -> Result<Response, ApiError> {
    let mut items = Vec::with_capacity(64 * 1024);
    let mut first = true;
    let l = store
        .list_each(ns, &q.list()?, |obj| {
            if !first {
                items.push(b',');
            }
            first = false;
            serde_json::to_writer(&mut items, &obj).expect("a JSON value serialises");
        })
        .await?;
    let head = json!({
        "kind": list_kind(store),
        "apiVersion": store.strategy.info().api_version(),
        "metadata": list_meta(&l),
    });
    let mut head = serde_json::to_vec(&head).expect("a JSON value serialises");
    head.pop(); // the closing brace: the items follow
    head.extend_from_slice(b",\"items\":[");
    let parts =
        [head, items, b"]}".to_vec()].map(|p| Ok::<_, std::convert::Infallible>(Bytes::from(p)));
    let mut r = Response::new(Body::from_stream(futures::stream::iter(parts)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

fn object_body(store: &GenericStore, obj: &Value, q: &Query, out: Output) -> Value {
    if out == Output::Table && obj.get("kind").and_then(Value::as_str) != Some("Status") {
        return table::table(
            &*store.strategy,
            std::slice::from_ref(obj),
            json!({"resourceVersion": meta::resource_version(obj)}),
            IncludeObject::parse(q.get("includeObject")),
            false,
        );
    }
    obj.clone()
}

/// Handles one resource request.
#[allow(clippy::too_many_arguments)]
pub async fn handle(
    state: Arc<State>,
    method: Method,
    group: &str,
    version: &str,
    segs: &[&str],
    q: Query,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Some(t) = resolve(&state, group, version, segs) else {
        return Err(ApiError::path_not_found());
    };
    let out = negotiate::output(&headers)?;
    let store = t.store;
    let ns = t.namespace.as_str();
    let sub = t.subresource.as_deref();
    let info = store.strategy.info();
    let ua = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if info.resource == "componentstatuses" {
        return component_statuses(&state, store, t.name.as_deref(), &method, &q, out).await;
    }
    if matches!(sub, Some("binding" | "eviction")) && method != Method::POST {
        return Err(ApiError::method_not_allowed());
    }
    match (&method, t.name.as_deref()) {
        (&Method::GET, None) if q.flag("watch") => watch(store, ns, &q, out).await,
        (&Method::GET, None) if out == Output::Json => json_list(store, ns, &q).await,
        (&Method::GET, None) => {
            let l = store.list(ns, &q.list()?).await?;
            Ok(negotiate::respond(200, &list_body(store, &l, &q, out), out))
        }
        (&Method::GET, Some(name)) => {
            let obj = if sub == Some("scale") {
                store.get_scale(ns, name).await?
            } else {
                store.get(ns, name).await?
            };
            Ok(negotiate::respond(
                200,
                &object_body(store, &obj, &q, out),
                out,
            ))
        }
        (&Method::POST, None) => {
            if info.namespaced && ns.is_empty() {
                return Err(ApiError::method_not_allowed());
            }
            let obj = negotiate::decode_body(&headers, &body)?;
            let w = store.create(ns, obj, &q.write(&ua)?).await?;
            let r = negotiate::respond(201, &object_body(store, &w.object, &q, out), out);
            Ok(negotiate::with_warnings(r, &w.warnings))
        }
        (&Method::POST, Some(name))
            if info.resource == "pods" && matches!(sub, Some("binding" | "eviction")) =>
        {
            let obj = negotiate::decode_body(&headers, &body)?;
            let dry = q.write(&ua)?.dry_run;
            let s = if sub == Some("binding") {
                store.bind(ns, name, &obj, dry).await?
            } else {
                store.evict(ns, name, &obj, dry).await?
            };
            Ok(negotiate::respond(201, &s, Output::Json))
        }
        (_, Some(_)) if matches!(sub, Some("binding" | "eviction")) => {
            Err(ApiError::method_not_allowed())
        }
        (&Method::PUT, Some(name)) => {
            let obj = negotiate::decode_body(&headers, &body)?;
            let opts = q.write(&ua)?;
            if sub == Some("scale") {
                let s = store.update_scale(ns, name, &obj, &opts).await?;
                return Ok(negotiate::respond(200, &s, out));
            }
            let w = store.update(ns, name, obj, sub, &opts).await?;
            let code = if w.created { 201 } else { 200 };
            let r = negotiate::respond(code, &object_body(store, &w.object, &q, out), out);
            Ok(negotiate::with_warnings(r, &w.warnings))
        }
        (&Method::PATCH, Some(name)) => {
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let Some(pt) = PatchType::from_content_type(ct) else {
                return Err(ApiError::unsupported_media_type(ct));
            };
            let patch = negotiate::decode_body(&headers, &body)?;
            let opts = q.write(&ua)?;
            let w = if pt == PatchType::Apply {
                if sub.is_some() {
                    return Err(ApiError::bad_request(
                        "server-side apply of subresources is not supported yet",
                    ));
                }
                let manager = q.get("fieldManager");
                store
                    .apply(ns, name, patch, manager, q.flag("force"), &opts)
                    .await?
            } else {
                store.patch(ns, name, pt, &patch, sub, &opts).await?
            };
            if w.created {
                let r = negotiate::respond(201, &object_body(store, &w.object, &q, out), out);
                return Ok(negotiate::with_warnings(r, &w.warnings));
            }
            let obj = if sub == Some("scale") {
                store.scale_of(&w.object)
            } else {
                w.object
            };
            let r = negotiate::respond(200, &object_body(store, &obj, &q, out), out);
            Ok(negotiate::with_warnings(r, &w.warnings))
        }
        (&Method::DELETE, Some(name)) if sub.is_none() => {
            let b = if body.is_empty() {
                None
            } else {
                Some(negotiate::decode_body(&headers, &body)?)
            };
            let opts = q.delete(b.as_ref())?;
            match store.delete(ns, name, &opts).await? {
                Deleted::Gone(obj) => {
                    let v = if info.resource == "pods" {
                        obj
                    } else {
                        status::success_status(info.group, info.resource, name, meta::uid(&obj))
                    };
                    Ok(negotiate::respond(200, &v, out))
                }
                // A Terminating namespace is emptied and finalized by the controller-manager's
                // namespace controller, as upstream.
                Deleted::Pending(obj) => Ok(negotiate::respond(200, &obj, out)),
            }
        }
        (&Method::DELETE, None) => {
            if info.namespaced && ns.is_empty() && info.resource != "namespaces" {
                // Upstream allows deletecollection across namespaces only with a namespace.
            }
            let b = if body.is_empty() {
                None
            } else {
                Some(negotiate::decode_body(&headers, &body)?)
            };
            let l = store
                .delete_collection(ns, &q.list()?, &q.delete(b.as_ref())?)
                .await?;
            let v = json!({
                "kind": list_kind(store),
                "apiVersion": info.api_version(),
                "metadata": list_meta(&l),
                "items": l.items,
            });
            Ok(negotiate::respond(200, &v, Output::Json))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

async fn watch(
    store: &GenericStore,
    ns: &str,
    q: &Query,
    out: Output,
) -> Result<Response, ApiError> {
    let opts = q.watch()?;
    let rx = store.watch(ns, opts).await?;
    let strategy = store.strategy.clone();
    let include = IncludeObject::parse(q.get("includeObject"));
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(move |ev| {
        if out != Output::Table || ev.type_ == "ERROR" || ev.type_ == "BOOKMARK" {
            // Made once per event and shared by every watcher sent the same event.
            return Ok::<_, std::convert::Infallible>(ev.json_line());
        }
        let object = table::table(
            &*strategy,
            std::slice::from_ref(&*ev.object),
            json!({"resourceVersion": meta::resource_version(&ev.object)}),
            include,
            false,
        );
        let mut line =
            serde_json::to_vec(&json!({"type": ev.type_, "object": object})).expect("json");
        line.push(b'\n');
        Ok(Bytes::from(line))
    });
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

/// `kubectl get cs`: the store's health and whether the scheduler and controller-manager answer on
/// their health ports, built at each request.
async fn component_statuses(
    state: &State,
    store: &GenericStore,
    name: Option<&str>,
    method: &Method,
    q: &Query,
    out: Output,
) -> Result<Response, ApiError> {
    if method != Method::GET || q.flag("watch") {
        return Err(ApiError::method_not_allowed());
    }
    let etcd = state
        .registry
        .kv
        .range(etcd_api::PbRangeRequest {
            key: b"health".to_vec(),
            ..Default::default()
        })
        .await;
    let etcd = match etcd {
        Ok(_) => (true, "ok".to_string(), String::new()),
        Err(e) => (false, String::new(), e.message().to_string()),
    };
    let mut items = vec![];
    // The scheduler's and controller-manager's /healthz (it includes their leader election
    // check), as upstream probes them.
    for (n, port) in [("scheduler", 10259u16), ("controller-manager", 10257)] {
        let s = match crate::healthprobe::healthz(port).await {
            Ok(body) => (true, body, String::new()),
            Err(e) => (false, String::new(), e),
        };
        items.push((n.to_string(), s));
    }
    items.push(("etcd-0".to_string(), etcd));
    let warn = ["v1 ComponentStatus is deprecated in v1.19+".to_string()];
    let objs: Vec<Value> = items
        .into_iter()
        .map(|(n, (ok, msg, err))| {
            let mut c = json!({"type": "Healthy", "status": if ok { "True" } else { "False" }});
            if !msg.is_empty() {
                c["message"] = json!(msg);
            }
            if !err.is_empty() {
                c["error"] = json!(err);
            }
            json!({"kind": "ComponentStatus", "apiVersion": "v1", "metadata": {"name": n}, "conditions": [c]})
        })
        .collect();
    match name {
        Some(n) => {
            let obj = objs
                .into_iter()
                .find(|o| o["metadata"]["name"] == n)
                .ok_or_else(|| ApiError::not_found("", "componentstatuses", n))?;
            Ok(negotiate::respond(
                200,
                &object_body(store, &obj, q, out),
                out,
            ))
        }
        None => {
            let l = ListResult {
                items: objs,
                resource_version: 0,
                continue_token: String::new(),
                remaining: None,
            };
            let mut body = list_body(store, &l, q, out);
            body["metadata"] = json!({});
            Ok(negotiate::with_warnings(
                negotiate::respond(200, &body, out),
                &warn,
            ))
        }
    }
}
