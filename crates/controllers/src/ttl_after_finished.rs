//! ttl-after-finished-controller: deletes a finished Job (Complete or Failed) once
//! `ttlSecondsAfterFinished` have passed since it finished, with background propagation so its
//! pods go too, as upstream.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::kit::{self, Named, Result};

pub const NAME: &str = "ttl-after-finished-controller";

struct Ctx {
    client: Client,
}

impl Named for Ctx {
    fn name(&self) -> &'static str {
        NAME
    }
}

/// Runs the TTL-after-finished controller until its watch ends.
pub async fn run(client: Client) -> anyhow::Result<()> {
    let ctl = Controller::new(Api::<Job>::all(client.clone()), watcher::Config::default());
    kit::drive(NAME, ctl, reconcile, Arc::new(Ctx { client })).await
}

/// When the job finished: the transition time of its Complete or Failed condition.
fn finished_at(job: &Job) -> Option<jiff::Timestamp> {
    let conds = job.status.as_ref()?.conditions.as_ref()?;
    conds
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| {
            c.last_transition_time
                .as_ref()
                .map(|t| t.0)
                .unwrap_or_else(jiff::Timestamp::now)
        })
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action> {
    let Some(ttl) = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished) else {
        return Ok(Action::await_change());
    };
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let Some(done) = finished_at(&job) else {
        return Ok(Action::await_change());
    };
    let expires = done
        .checked_add(jiff::SignedDuration::from_secs(i64::from(ttl.max(0))))
        .unwrap_or(done);
    let now = jiff::Timestamp::now();
    if expires > now {
        let wait = Duration::try_from(now.duration_until(expires)).unwrap_or_default();
        return Ok(Action::requeue(wait + Duration::from_millis(100)));
    }
    let ns = job.namespace().unwrap_or_default();
    let name = job.name_any();
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    // The uid guards against deleting a new job of the same name.
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: job.uid(),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match api.delete(&name, &dp).await {
        Ok(_) => tracing::info!(
            controller = NAME,
            "deleted job {ns}/{name}: finished more than {ttl}s ago"
        ),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}
