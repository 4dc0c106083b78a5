//! serviceaccount-controller: every active namespace has a `default` ServiceAccount; one deleted
//! is created again.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::kit::{self, Named, Result};

pub const NAME: &str = "serviceaccount-controller";
/// The accounts ensured in every namespace (upstream's --service-account-names default).
pub const ACCOUNTS: &[&str] = &["default"];

struct Ctx {
    client: Client,
    accounts: Store<ServiceAccount>,
}

impl Named for Ctx {
    fn name(&self) -> &'static str {
        NAME
    }
}

/// Runs the service account controller until its watches end.
pub async fn run(client: Client) -> anyhow::Result<()> {
    let only_ensured = watcher::Config::default().fields(&format!("metadata.name={}", ACCOUNTS[0]));
    let (accounts, events) = kit::reflect(Api::<ServiceAccount>::all(client.clone()), only_ensured);
    let ctl = Controller::new(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches_stream(events, |sa: ServiceAccount| {
        Some(ObjectRef::new(&sa.namespace().unwrap_or_default()))
    });
    kit::drive(NAME, ctl, reconcile, Arc::new(Ctx { client, accounts })).await
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action> {
    let terminating = ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    if terminating {
        return Ok(Action::await_change());
    }
    kit::synced(&ctx.accounts).await?;
    let name = ns.name_any();
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &name);
    for account in ACCOUNTS {
        if ctx.accounts.get(&kit::obj_ref(&name, account)).is_some() {
            continue;
        }
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(account.to_string()),
                namespace: Some(name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        match api.create(&PostParams::default(), &sa).await {
            Ok(_) => tracing::info!(
                controller = NAME,
                "created service account {name}/{account}"
            ),
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            // The namespace began terminating meanwhile: nothing to ensure there.
            Err(kube::Error::Api(s)) if s.code == 403 || s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Action::await_change())
}
