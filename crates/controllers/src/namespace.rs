//! namespace-controller: empties a Terminating namespace of every namespaced resource the API
//! serves (found by discovery, so custom and aggregated resources go too), reports progress in
//! the namespace's deletion conditions, and once nothing is left removes the `kubernetes`
//! finalizer through `namespaces/{name}/finalize`, after which the API server deletes it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::discovery::{verbs, Discovery, Scope};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::kit::{self, Named, Result};

pub const NAME: &str = "namespace-controller";
/// The finalizer the API server puts on every namespace and this controller removes.
pub const FINALIZER: &str = "kubernetes";

struct Ctx {
    client: Client,
}

impl Named for Ctx {
    fn name(&self) -> &'static str {
        NAME
    }
}

/// Runs the namespace controller until its watch ends.
pub async fn run(client: Client) -> anyhow::Result<()> {
    let ctl = Controller::new(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
    );
    kit::drive(NAME, ctl, reconcile, Arc::new(Ctx { client })).await
}

/// What one deletion pass found.
#[derive(Default)]
struct Pass {
    discovery_error: Option<String>,
    delete_errors: Vec<String>,
    /// resource -> objects still there
    remaining: BTreeMap<String, usize>,
    /// finalizer -> objects still holding it
    finalizers: BTreeMap<String, usize>,
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action> {
    if ns.metadata.deletion_timestamp.is_none() {
        return Ok(Action::await_change());
    }
    let spec_finalizers = ns
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.clone())
        .unwrap_or_default();
    if !spec_finalizers.iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let name = ns.name_any();
    let pass = delete_content(&ctx.client, &name).await;
    let ns = set_conditions(&ctx.client, &ns, &pass)
        .await?
        .map(Arc::new)
        .unwrap_or(ns);
    if pass.discovery_error.is_some() || !pass.delete_errors.is_empty() {
        return Err(kit::Error(anyhow::anyhow!(
            "namespace {name}: {}",
            pass.discovery_error
                .iter()
                .chain(pass.delete_errors.iter())
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        )));
    }
    if !pass.remaining.is_empty() {
        tracing::info!(
            controller = NAME,
            "namespace {name}: waiting for {} to go",
            describe(&pass.remaining)
        );
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    // Nothing left: drop our finalizer; the API server then removes the namespace.
    let mut done = (*ns).clone();
    if let Some(spec) = done.spec.as_mut() {
        spec.finalizers = Some(
            spec_finalizers
                .into_iter()
                .filter(|f| f != FINALIZER)
                .collect(),
        );
    }
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    match api
        .replace_subresource("finalize", &name, &PostParams::default(), &done)
        .await
    {
        Ok(_) => tracing::info!(controller = NAME, "namespace {name} is empty: finalized"),
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}

fn describe(m: &BTreeMap<String, usize>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k} has {v} resource instances"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Deletes every namespaced object in `ns` (a collection delete per resource, or one by one where
/// the resource has no deletecollection), then counts what is left.
async fn delete_content(client: &Client, ns: &str) -> Pass {
    let mut pass = Pass::default();
    let discovery = match Discovery::new(client.clone()).run().await {
        Ok(d) => d,
        Err(e) => {
            pass.discovery_error = Some(format!("discovery failed: {e}"));
            return pass;
        }
    };
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if caps.scope != Scope::Namespaced
                || !caps.supports_operation(verbs::LIST)
                || !caps.supports_operation(verbs::DELETE)
            {
                continue;
            }
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
            let what = if ar.group.is_empty() {
                ar.plural.clone()
            } else {
                format!("{}.{}", ar.plural, ar.group)
            };
            let dp = DeleteParams::background();
            let res = if caps.supports_operation(verbs::DELETE_COLLECTION) {
                api.delete_collection(&dp, &ListParams::default())
                    .await
                    .map(|_| ())
            } else {
                delete_each(&api, &dp).await
            };
            match res {
                Ok(()) => {}
                // Gone meanwhile, or not really served: nothing to delete.
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 405 => continue,
                Err(e) => {
                    pass.delete_errors.push(format!("deleting {what}: {e}"));
                    continue;
                }
            }
            match api.list(&ListParams::default()).await {
                Ok(list) if !list.items.is_empty() => {
                    pass.remaining.insert(what, list.items.len());
                    for o in &list.items {
                        for f in o.finalizers() {
                            *pass.finalizers.entry(f.clone()).or_default() += 1;
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => pass.delete_errors.push(format!("listing {what}: {e}")),
            }
        }
    }
    pass
}

async fn delete_each(api: &Api<DynamicObject>, dp: &DeleteParams) -> kube::Result<()> {
    for o in api.list(&ListParams::default()).await?.items {
        match api.delete(&o.name_any(), dp).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn cond(t: &str, status: bool, reason: &str, message: String) -> NamespaceCondition {
    NamespaceCondition {
        type_: t.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: Some(kit::now()),
    }
}

/// The deletion conditions upstream's namespace controller reports.
fn conditions(p: &Pass) -> Vec<NamespaceCondition> {
    let finalizers = p
        .finalizers
        .iter()
        .map(|(f, n)| format!("{f} in {n} resource instances"))
        .collect::<Vec<_>>()
        .join(", ");
    vec![
        match &p.discovery_error {
            Some(e) => cond(
                "NamespaceDeletionDiscoveryFailure",
                true,
                "DiscoveryFailed",
                e.clone(),
            ),
            None => cond(
                "NamespaceDeletionDiscoveryFailure",
                false,
                "ResourcesDiscovered",
                "All resources were discovered".into(),
            ),
        },
        cond(
            "NamespaceDeletionGroupVersionParsingFailure",
            false,
            "ParsedGroupVersions",
            "All group versions were parsed".into(),
        ),
        if p.delete_errors.is_empty() {
            cond(
                "NamespaceDeletionContentFailure",
                false,
                "ContentDeleted",
                "All content was deleted; some may still be finalizing".into(),
            )
        } else {
            cond(
                "NamespaceDeletionContentFailure",
                true,
                "ContentDeletionFailed",
                p.delete_errors.join("; "),
            )
        },
        if p.remaining.is_empty() {
            cond(
                "NamespaceContentRemaining",
                false,
                "ContentRemoved",
                "All content was removed".into(),
            )
        } else {
            cond(
                "NamespaceContentRemaining",
                true,
                "SomeResourcesRemain",
                format!("Resources remain: {}", describe(&p.remaining)),
            )
        },
        if p.finalizers.is_empty() {
            cond(
                "NamespaceFinalizersRemaining",
                false,
                "ContentHasNoFinalizers",
                "No remaining content holds a finalizer".into(),
            )
        } else {
            cond(
                "NamespaceFinalizersRemaining",
                true,
                "SomeFinalizersRemain",
                format!("Content still has finalizers: {finalizers}"),
            )
        },
    ]
}

/// Writes the conditions through namespaces/status when their status, reason or message changed
/// (an unchanged condition keeps its transition time).
async fn set_conditions(client: &Client, ns: &Namespace, p: &Pass) -> Result<Option<Namespace>> {
    let old = ns
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut changed = false;
    let mut merged = old.clone();
    for c in conditions(p) {
        match merged.iter_mut().find(|o| o.type_ == c.type_) {
            Some(o) if o.status == c.status && o.reason == c.reason && o.message == c.message => {}
            Some(o) => {
                let keep_time = o.status == c.status;
                let t = o.last_transition_time.clone();
                *o = c;
                if keep_time {
                    o.last_transition_time = t;
                }
                changed = true;
            }
            None => {
                merged.push(c);
                changed = true;
            }
        }
    }
    if !changed {
        return Ok(None);
    }
    let mut n = ns.clone();
    n.status.get_or_insert_with(Default::default).conditions = Some(merged);
    let api: Api<Namespace> = Api::all(client.clone());
    match api
        .replace_status(&ns.name_any(), &PostParams::default(), &n)
        .await
    {
        Ok(updated) => Ok(Some(updated)),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(e) => Err(e.into()),
    }
}
