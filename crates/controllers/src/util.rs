//! Helpers every workload controller shares: selectors, owner references, pod readiness and
//! availability, adoption and release of dependents.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::api::{Api, Patch, PatchParams};
use kube::Resource;
use serde_json::json;

/// Whether a label selector matches these labels. An empty selector matches nothing here, as
/// workload controllers treat it (apps/v1 validation forbids it anyway).
pub fn selector_matches(sel: &LabelSelector, labels: Option<&BTreeMap<String, String>>) -> bool {
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    let ml = sel.match_labels.as_ref();
    let me = sel.match_expressions.as_ref();
    if ml.is_none_or(|m| m.is_empty()) && me.is_none_or(|m| m.is_empty()) {
        return false;
    }
    if let Some(ml) = ml {
        if ml.iter().any(|(k, v)| labels.get(k) != Some(v)) {
            return false;
        }
    }
    for r in me.into_iter().flatten() {
        let vals = r.values.as_deref().unwrap_or(&[]);
        let have = labels.get(&r.key);
        let ok = match r.operator.as_str() {
            "In" => have.is_some_and(|v| vals.contains(v)),
            "NotIn" => have.is_none_or(|v| !vals.contains(v)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// The owner reference marked `controller: true`, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

/// A controller reference to `owner` (controller and blockOwnerDeletion set, as upstream).
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

pub fn name(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or("")
}

pub fn namespace(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or("")
}

pub fn uid(meta: &ObjectMeta) -> &str {
    meta.uid.as_deref().unwrap_or("")
}

/// Seconds since the epoch now.
pub fn now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}

/// RFC 3339 to the second, as API times are written.
pub fn time_str(t: k8s_openapi::jiff::Timestamp) -> String {
    k8s_openapi::jiff::Timestamp::from_second(t.as_second())
        .unwrap_or(t)
        .to_string()
}

/// Now, to the second, as a `metav1.Time`.
pub fn time_now() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::from_second(now().as_second()).unwrap_or_else(|_| now()),
    )
}

/// Whether the pod counts toward a controller's replicas: not finished, not being deleted.
pub fn pod_active(p: &Pod) -> bool {
    let phase = p
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("");
    phase != "Succeeded" && phase != "Failed" && p.metadata.deletion_timestamp.is_none()
}

/// Whether the pod is being deleted but still there.
pub fn pod_terminating(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_some()
}

/// The pod's Ready condition's transition time, when Ready is True.
pub fn ready_since(p: &Pod) -> Option<Option<k8s_openapi::jiff::Timestamp>> {
    let c = p
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    (c.status == "True").then(|| c.last_transition_time.as_ref().map(|t| t.0))
}

pub fn pod_ready(p: &Pod) -> bool {
    ready_since(p).is_some()
}

/// Ready for at least `min_ready` (upstream's IsPodAvailable); the second value is how long
/// until a ready pod becomes available, when it is not yet.
pub fn pod_available(p: &Pod, min_ready: i32) -> (bool, Option<Duration>) {
    match ready_since(p) {
        None => (false, None),
        Some(_) if min_ready <= 0 => (true, None),
        Some(None) => (false, Some(Duration::from_secs(min_ready as u64))),
        Some(Some(t)) => {
            let ready_for = now().as_second() - t.as_second();
            if ready_for >= min_ready as i64 {
                (true, None)
            } else {
                (
                    false,
                    Some(Duration::from_secs(
                        (min_ready as i64 - ready_for).max(1) as u64
                    )),
                )
            }
        }
    }
}

/// What claiming found for one dependent.
pub enum Claim {
    /// Ours already (or just adopted).
    Owned,
    /// Not ours.
    Skip,
}

/// Upstream's ClaimObject: keeps a dependent we control whose labels still match, releases one
/// whose labels stopped matching (unless the owner is being deleted), adopts a matching orphan
/// (unless either is being deleted). Adoption and release are merge patches conditioned on the
/// dependent's resourceVersion, so a concurrent change fails them (to be retried).
pub async fn claim<K, O>(
    api: &Api<K>,
    owner: &O,
    selector: &LabelSelector,
    dep: &K,
) -> anyhow::Result<Claim>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    O: Resource<DynamicType = ()>,
{
    let meta = dep.meta();
    let owner_uid = owner.meta().uid.as_deref().unwrap_or("");
    let matches = selector_matches(selector, meta.labels.as_ref());
    let owner_deleting = owner.meta().deletion_timestamp.is_some();
    match controller_of(meta) {
        Some(r) if r.uid == owner_uid => {
            if matches || owner_deleting {
                return Ok(Claim::Owned);
            }
            let refs: Vec<_> = meta
                .owner_references
                .iter()
                .flatten()
                .filter(|r| r.uid != owner_uid)
                .cloned()
                .collect();
            tracing::info!(
                "releasing {} {}/{}: its labels no longer match {} {}",
                K::kind(&()),
                namespace(meta),
                name(meta),
                O::kind(&()),
                name(owner.meta())
            );
            patch_owner_refs(api, dep, refs).await?;
            Ok(Claim::Skip)
        }
        Some(_) => Ok(Claim::Skip),
        None => {
            if !matches || owner_deleting || meta.deletion_timestamp.is_some() {
                return Ok(Claim::Skip);
            }
            let mut refs: Vec<_> = meta.owner_references.clone().unwrap_or_default();
            refs.push(controller_ref(owner));
            tracing::info!(
                "adopting {} {}/{} into {} {}",
                K::kind(&()),
                namespace(meta),
                name(meta),
                O::kind(&()),
                name(owner.meta())
            );
            patch_owner_refs(api, dep, refs).await?;
            Ok(Claim::Owned)
        }
    }
}

async fn patch_owner_refs<K>(api: &Api<K>, dep: &K, refs: Vec<OwnerReference>) -> anyhow::Result<()>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let meta = dep.meta();
    let patch = json!({"metadata": {
        "ownerReferences": refs,
        "uid": meta.uid,
        "resourceVersion": meta.resource_version,
    }});
    api.patch(name(meta), &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// kube errors that mean "someone else changed or removed it": retry from fresh state.
pub fn is_conflict_or_gone(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409 || s.code == 404)
}

/// The integer or percentage of `total` (upstream's GetScaledValueFromIntOrPercent).
pub fn scaled_value(
    v: Option<&k8s_openapi::apimachinery::pkg::util::intstr::IntOrString>,
    total: i32,
    round_up: bool,
    default: &str,
) -> anyhow::Result<i32> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let s = match v {
        Some(IntOrString::Int(i)) => return Ok(*i),
        Some(IntOrString::String(s)) => s.as_str(),
        None => default,
    };
    let pct: i64 = s
        .strip_suffix('%')
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("invalid value for IntOrString: invalid value {s:?}"))?;
    let prod = pct * total as i64;
    let v = if round_up {
        (prod + 99).div_euclid(100)
    } else {
        prod.div_euclid(100)
    };
    Ok(v as i32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    #[test]
    fn percent_rounding_as_upstream() {
        let p = IntOrString::String("25%".into());
        assert_eq!(scaled_value(Some(&p), 10, true, "25%").unwrap(), 3);
        assert_eq!(scaled_value(Some(&p), 10, false, "25%").unwrap(), 2);
        assert_eq!(
            scaled_value(Some(&IntOrString::Int(4)), 10, false, "").unwrap(),
            4
        );
        assert!(scaled_value(Some(&IntOrString::String("x".into())), 10, true, "").is_err());
    }

    #[test]
    fn selectors() {
        let mut labels = BTreeMap::new();
        labels.insert("app".to_string(), "web".to_string());
        let sel = LabelSelector {
            match_labels: Some(labels.clone()),
            match_expressions: None,
        };
        assert!(selector_matches(&sel, Some(&labels)));
        assert!(!selector_matches(&sel, None));
        assert!(!selector_matches(&LabelSelector::default(), Some(&labels)));
    }
}

/// A reconcile error kube-runtime can carry (it needs `std::error::Error`).
#[derive(Debug)]
pub struct Error(pub anyhow::Error);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for Error {}

impl From<anyhow::Error> for Error {
    fn from(e: anyhow::Error) -> Self {
        Error(e)
    }
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error(e.into())
    }
}

/// A reflector running in its own task: its cache, ready (listed once), and the stream of the
/// objects it sees change, to trigger a controller with. The task stops when the guard drops.
pub struct Reflected<K: Resource + Clone + 'static>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    pub store: kube::runtime::reflector::Store<K>,
    pub changes: futures::channel::mpsc::UnboundedReceiver<K>,
    pub guard: AbortOnDrop,
}

/// Aborts its task when dropped (a controller's watches end with the controller).
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts watching `api` and waits for its first complete list (so a controller never acts on
/// a partial cache, e.g. right after taking over leadership).
pub async fn reflect<K>(api: Api<K>, what: &'static str) -> anyhow::Result<Reflected<K>>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    use futures::StreamExt;
    use kube::runtime::{reflector, watcher, WatchStreamExt};
    let (store, writer) = reflector::store::<K>();
    let (tx, rx) = futures::channel::mpsc::unbounded();
    let task = tokio::spawn(async move {
        let mut events =
            reflector::reflector(writer, watcher::watcher(api, watcher::Config::default()))
                .default_backoff()
                .touched_objects()
                .boxed();
        while let Some(ev) = events.next().await {
            match ev {
                Ok(obj) => {
                    if tx.unbounded_send(obj).is_err() {
                        return;
                    }
                }
                Err(e) => tracing::warn!("watching {what}: {e}"),
            }
        }
    });
    let guard = AbortOnDrop(task);
    store
        .wait_until_ready()
        .await
        .map_err(|e| anyhow::anyhow!("watching {what}: {e}"))?;
    Ok(Reflected {
        store,
        changes: rx,
        guard,
    })
}
