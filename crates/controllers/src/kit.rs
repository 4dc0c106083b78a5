//! What the service, namespace, node and workload controllers of this crate share: the reconcile
//! error type and its retry policy, reflector-backed watch streams, selectors, pod predicates,
//! owner references and "expectations" (writes this controller made that its caches have not
//! seen yet, so a stale cache never makes it create or delete twice).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

/// A reconcile failure: logged by [`error_policy`] and retried.
#[derive(Debug)]
pub struct Error(pub anyhow::Error);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}
impl std::error::Error for Error {}
impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error(e.into())
    }
}
impl From<anyhow::Error> for Error {
    fn from(e: anyhow::Error) -> Self {
        Error(e)
    }
}
impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error(e.into())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How soon a failed reconcile is tried again.
pub const RETRY: Duration = Duration::from_secs(5);

/// Logs a failed reconcile (with the controller and object) and retries it after [`RETRY`].
pub fn error_policy<K: Resource, C: Named>(obj: Arc<K>, err: &Error, ctx: Arc<C>) -> Action {
    // A conflict means the cache was behind a write; it catches up within moments.
    if let Some(kube::Error::Api(s)) = err.0.downcast_ref::<kube::Error>() {
        if s.code == 409 {
            tracing::debug!(controller = ctx.name(), "conflict, retrying: {err}");
            return Action::requeue(Duration::from_millis(500));
        }
    }
    tracing::warn!(
        controller = ctx.name(),
        object = %format!("{}/{}", obj.meta().namespace.as_deref().unwrap_or(""), obj.meta().name.as_deref().unwrap_or("")),
        "reconcile failed, retrying in {}s: {err}",
        RETRY.as_secs()
    );
    Action::requeue(RETRY)
}

/// A controller context knows its upstream name (for logs).
pub trait Named {
    fn name(&self) -> &'static str;
}

/// A reflector over `api`: the cache and the stream of touched objects (applied and deleted) that
/// keeps it filled once a controller polls it.
pub fn reflect<K>(
    api: Api<K>,
    cfg: watcher::Config,
) -> (
    Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector(writer, watcher(api, cfg).default_backoff()).touched_objects();
    (reader, stream)
}

use kube::runtime::reflector::reflector;

/// Runs a built controller until its streams end, logging what each reconcile failed on.
pub async fn drive<K, Ctx, F>(
    name: &'static str,
    controller: Controller<K>,
    reconcile: impl FnMut(Arc<K>, Arc<Ctx>) -> F,
    ctx: Arc<Ctx>,
) -> anyhow::Result<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    Ctx: Named + Send + Sync + 'static,
    F: std::future::Future<Output = Result<Action>> + Send + 'static,
{
    tracing::info!(controller = name, "starting");
    controller
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                // Reconcile errors were logged by error_policy; these are queue/watch errors.
                if !matches!(e, kube::runtime::controller::Error::ReconcilerFailed(..)) {
                    tracing::debug!(controller = name, "controller: {e}");
                }
            }
        })
        .await;
    tracing::info!(controller = name, "stopped");
    Ok(())
}

/// Waits until a cache has listed once (reconciling on a half-filled cache would act on a
/// partial view, e.g. drop every endpoint at start-up).
pub async fn synced<K>(store: &Store<K>) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    tokio::time::timeout(Duration::from_secs(30), store.wait_until_ready())
        .await
        .map_err(|_| Error(anyhow::anyhow!("cache not synced after 30s")))?
        .map_err(|e| Error(anyhow::anyhow!("cache writer dropped: {e}")))
}

/// Whether a map selector (Service, ReplicationController) matches these labels; an empty or
/// missing selector matches nothing.
pub fn map_selects(
    sel: Option<&BTreeMap<String, String>>,
    labels: &BTreeMap<String, String>,
) -> bool {
    match sel {
        Some(s) if !s.is_empty() => s.iter().all(|(k, v)| labels.get(k) == Some(v)),
        _ => false,
    }
}

/// A pod's Ready condition is True.
pub fn pod_ready(p: &Pod) -> bool {
    condition_true(p, "Ready")
}

pub fn condition_true(p: &Pod, t: &str) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == t && c.status == "True"))
}

/// The time a pod's Ready condition last became True.
pub fn ready_since(p: &Pod) -> Option<jiff::Timestamp> {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready" && c.status == "True"))
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0)
}

/// The last change of a pod's Ready condition, whatever its status.
pub fn ready_condition_time(p: &Pod) -> Option<jiff::Timestamp> {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0)
}

/// Ready for at least `min_ready` seconds (available, as upstream's workload controllers say).
pub fn pod_available(p: &Pod, min_ready: i32) -> bool {
    if !pod_ready(p) {
        return false;
    }
    if min_ready <= 0 {
        return true;
    }
    ready_since(p)
        .is_some_and(|t| jiff::Timestamp::now().duration_since(t).as_secs() >= i64::from(min_ready))
}

pub fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

pub fn terminating(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_some()
}

/// Neither finished (Succeeded/Failed) nor being deleted: what a workload controller counts.
pub fn pod_active(p: &Pod) -> bool {
    !terminating(p) && !matches!(phase(p), "Succeeded" | "Failed")
}

/// The controller owner reference of an object, if any.
pub fn controller_of<K: Resource>(o: &K) -> Option<&OwnerReference> {
    o.meta()
        .owner_references
        .as_ref()
        .and_then(|rs| rs.iter().find(|r| r.controller == Some(true)))
}

/// The owner reference a controller puts on what it creates.
pub fn owner_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A pod built from a workload's template: its labels and annotations, `generateName`
/// `<owner>-`, owned by the workload.
pub fn pod_from_template(tpl: &PodTemplateSpec, generate: &str, owner: OwnerReference) -> Pod {
    let mut pod = Pod {
        metadata: tpl.metadata.clone().unwrap_or_default(),
        spec: tpl.spec.clone(),
        status: None,
    };
    pod.metadata.name = None;
    pod.metadata.generate_name = Some(format!("{generate}-"));
    pod.metadata.owner_references = Some(vec![owner]);
    pod.metadata.resource_version = None;
    pod.metadata.uid = None;
    pod
}

/// Deletes a pod; gone already is success.
pub async fn delete_pod(api: &Api<Pod>, name: &str) -> Result<()> {
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Creates a pod; its name (generated by the server).
pub async fn create_pod(api: &Api<Pod>, pod: &Pod) -> Result<String> {
    let p = api.create(&PostParams::default(), pod).await?;
    Ok(p.name_any())
}

pub fn now() -> Time {
    Time(jiff::Timestamp::now())
}

/// Creates and deletes a controller made and has not seen in its cache yet, per owner key.
/// While any is outstanding (and younger than five minutes, as upstream's expectations), the
/// owner does no further scaling: its cache is known to be behind.
/// Names created and deleted but not seen yet, and when last recorded.
type Pending = (HashSet<String>, HashSet<String>, Instant);

#[derive(Default)]
pub struct Expectations<Key: Hash + Eq> {
    pending: Mutex<HashMap<Key, Pending>>,
}

const EXPECTATIONS_TTL: Duration = Duration::from_secs(300);

impl<Key: Hash + Eq + Clone> Expectations<Key> {
    /// Records the pods just created and deleted for `key`.
    pub fn expect(&self, key: &Key, created: Vec<String>, deleted: Vec<String>) {
        if created.is_empty() && deleted.is_empty() {
            return;
        }
        let mut m = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let e = m
            .entry(key.clone())
            .or_insert_with(|| (HashSet::new(), HashSet::new(), Instant::now()));
        e.0.extend(created);
        e.1.extend(deleted);
        e.2 = Instant::now();
    }

    /// Whether the cache has caught up: every created name is in it (`present`), every deleted
    /// one is gone or being deleted (`gone`).
    pub fn satisfied(
        &self,
        key: &Key,
        present: impl Fn(&str) -> bool,
        gone: impl Fn(&str) -> bool,
    ) -> bool {
        let mut m = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let Some(e) = m.get_mut(key) else {
            return true;
        };
        e.0.retain(|n| !present(n));
        e.1.retain(|n| !gone(n));
        if (e.0.is_empty() && e.1.is_empty()) || e.2.elapsed() > EXPECTATIONS_TTL {
            m.remove(key);
            return true;
        }
        false
    }
}

/// The key of an object in a reflector store.
pub fn obj_ref<K: Resource<DynamicType = ()>>(ns: &str, name: &str) -> ObjectRef<K> {
    ObjectRef::new(name).within(ns)
}

/// Pods in a namespace from the pod cache, owned (as controller) by `uid`.
pub fn owned_pods(pods: &Store<Pod>, ns: &str, uid: &str) -> Vec<Arc<Pod>> {
    pods.state_filter(|p| {
        p.metadata.namespace.as_deref() == Some(ns)
            && controller_of(p).is_some_and(|r| r.uid == uid)
    })
}

/// Orders pods the way upstream picks which to delete first when scaling down: unscheduled
/// before scheduled, pending before running, not ready before ready, then the youngest.
pub fn deletion_rank(p: &Pod) -> (u8, u8, u8, std::cmp::Reverse<i64>) {
    let scheduled = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() as u8;
    let running = match phase(p) {
        "Pending" | "" => 0,
        "Unknown" => 1,
        _ => 2,
    };
    let created = p
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .unwrap_or(0);
    (
        scheduled,
        running,
        pod_ready(p) as u8,
        std::cmp::Reverse(created),
    )
}

/// Whether a toleration tolerates a taint (upstream's matching: an empty key with Exists
/// tolerates everything; an empty effect tolerates every effect).
pub fn tolerates(
    t: &k8s_openapi::api::core::v1::Toleration,
    taint: &k8s_openapi::api::core::v1::Taint,
) -> bool {
    if let Some(e) = t.effect.as_deref().filter(|e| !e.is_empty()) {
        if e != taint.effect {
            return false;
        }
    }
    let key = t.key.as_deref().unwrap_or("");
    if key.is_empty() {
        return t.operator.as_deref() == Some("Exists");
    }
    if key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

/// Records a core/v1 Event about `obj` (what `kubectl describe` and `kubectl get events` show),
/// from `component`. Best effort: a failure is logged, never fails the reconcile.
pub async fn record<K: Resource<DynamicType = ()>>(
    client: &kube::Client,
    component: &str,
    obj: &K,
    warning: bool,
    reason: &str,
    message: String,
) {
    use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
    let meta = obj.meta();
    let ns = meta.namespace.clone().unwrap_or_else(|| "default".into());
    let now = now();
    let ev = Event {
        metadata: kube::api::ObjectMeta {
            generate_name: Some(format!("{}.", meta.name.as_deref().unwrap_or("object"))),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some(K::api_version(&()).into_owned()),
            kind: Some(K::kind(&()).into_owned()),
            name: meta.name.clone(),
            namespace: meta.namespace.clone(),
            uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone(),
            ..Default::default()
        },
        reason: Some(reason.into()),
        message: Some(message),
        type_: Some(if warning { "Warning" } else { "Normal" }.into()),
        source: Some(EventSource {
            component: Some(component.into()),
            host: None,
        }),
        reporting_component: Some(component.into()),
        reporting_instance: Some(component.into()),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        ..Default::default()
    };
    let api: Api<Event> = Api::namespaced(client.clone(), &ns);
    if let Err(e) = api.create(&PostParams::default(), &ev).await {
        tracing::debug!(controller = component, "recording event {reason}: {e}");
    }
}

/// Records the pod events of a workload controller, as upstream: SuccessfulCreate and
/// SuccessfulDelete per pod, FailedCreate for a create that failed.
pub async fn record_pods<K: Resource<DynamicType = ()>>(
    client: &kube::Client,
    component: &str,
    owner: &K,
    created: &[String],
    deleted: &[String],
    failed: Option<&Error>,
) {
    for p in created {
        record(
            client,
            component,
            owner,
            false,
            "SuccessfulCreate",
            format!("Created pod: {p}"),
        )
        .await;
    }
    for p in deleted {
        record(
            client,
            component,
            owner,
            false,
            "SuccessfulDelete",
            format!("Deleted pod: {p}"),
        )
        .await;
    }
    if let Some(e) = failed {
        record(
            client,
            component,
            owner,
            true,
            "FailedCreate",
            format!("Error creating: {e}"),
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Taint, Toleration};

    fn taint(key: &str, value: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: Some(value.into()),
            effect: effect.into(),
            time_added: None,
        }
    }

    fn tol(key: &str, op: &str, value: &str, effect: &str) -> Toleration {
        Toleration {
            key: (!key.is_empty()).then(|| key.into()),
            operator: Some(op.into()),
            value: (!value.is_empty()).then(|| value.into()),
            effect: (!effect.is_empty()).then(|| effect.into()),
            toleration_seconds: None,
        }
    }

    #[test]
    fn toleration_matching_as_upstream() {
        let t = taint("k", "v", "NoExecute");
        assert!(tolerates(&tol("k", "Equal", "v", "NoExecute"), &t));
        assert!(tolerates(&tol("k", "Exists", "", ""), &t));
        assert!(tolerates(&tol("", "Exists", "", ""), &t));
        assert!(!tolerates(&tol("k", "Equal", "w", ""), &t));
        assert!(!tolerates(&tol("k", "Exists", "", "NoSchedule"), &t));
        assert!(!tolerates(&tol("other", "Exists", "", ""), &t));
    }

    #[test]
    fn expectations_wait_for_the_cache() {
        let e: Expectations<String> = Default::default();
        let k = "rs".to_string();
        assert!(e.satisfied(&k, |_| false, |_| false));
        e.expect(&k, vec!["a".into()], vec!["b".into()]);
        // Neither seen yet; then the delete seen (and remembered), the create not yet.
        assert!(!e.satisfied(&k, |_| false, |_| false));
        assert!(!e.satisfied(&k, |_| false, |n| n == "b"));
        assert!(e.satisfied(&k, |n| n == "a", |_| false));
        assert!(
            e.satisfied(&k, |_| false, |_| false),
            "nothing pending any more"
        );
    }
}
