//! job-controller: runs a Job's pods to completion. Up to `parallelism` pods run at once until
//! `completions` have succeeded (without `completions`, until one succeeded and the rest
//! finished); failed pods are replaced until failures (plus container restarts under
//! `restartPolicy: OnFailure`) exceed `backoffLimit`, each replacement waiting out upstream's backoff
//! (10 s doubling per failure, at most 6 min); `activeDeadlineSeconds` bounds the run;
//! `suspend` removes the running pods. The status counts active, ready, terminating, succeeded
//! and failed pods and ends with the SuccessCriteriaMet and Complete (with `completionTime`) or
//! FailureTarget and Failed conditions, as upstream. `completionMode: Indexed` gives each pod a
//! completion index (annotation and label `batch.kubernetes.io/job-completion-index`, hostname
//! `<job>-<index>`, `JOB_COMPLETION_INDEX` in its containers) and the job completes when every
//! index has succeeded (`status.completedIndexes`). Jobs with `spec.managedBy` set to another
//! controller are left alone.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::kit::{self, Named, Result};

pub const NAME: &str = "job-controller";
const MANAGED_BY: &str = "kubernetes.io/job-controller";
const BURST: usize = 500;

struct Ctx {
    client: Client,
    pods: Store<Pod>,
    expect: kit::Expectations<String>,
}

impl Named for Ctx {
    fn name(&self) -> &'static str {
        NAME
    }
}

/// Runs the Job controller until its watches end.
pub async fn run(client: Client) -> anyhow::Result<()> {
    let (pods, pod_events) =
        kit::reflect(Api::<Pod>::all(client.clone()), watcher::Config::default());
    let ctl = Controller::new(Api::<Job>::all(client.clone()), watcher::Config::default())
        .owns_stream(pod_events);
    let ctx = Arc::new(Ctx {
        client,
        pods,
        expect: Default::default(),
    });
    kit::drive(NAME, ctl, reconcile, ctx).await
}

fn has_condition(job: &Job, t: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == t && c.status == "True"))
}

fn condition(t: &str, status: bool, reason: &str, message: &str) -> JobCondition {
    let now = kit::now();
    JobCondition {
        type_: t.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

/// Sets a condition (replacing one of its type when the status changes).
fn set_condition(conds: &mut Vec<JobCondition>, c: JobCondition) {
    match conds.iter_mut().find(|o| o.type_ == c.type_) {
        Some(o) if o.status == c.status => {}
        Some(o) => *o = c,
        None => conds.push(c),
    }
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action> {
    let spec = job.spec.clone().unwrap_or_default();
    if spec.managed_by.as_deref().is_some_and(|m| m != MANAGED_BY) {
        return Ok(Action::await_change());
    }
    kit::synced(&ctx.pods).await?;
    let ns = job.namespace().unwrap_or_default();
    let name = job.name_any();
    let uid = job.uid().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let cached = |n: &str| ctx.pods.get(&kit::obj_ref(&ns, n));
    let in_sync = ctx.expect.satisfied(
        &uid,
        |n| cached(n).is_some(),
        |n| cached(n).is_none_or(|p| kit::terminating(&p)),
    );
    let pods = kit::owned_pods(&ctx.pods, &ns, &uid);
    let mut active: Vec<&Arc<Pod>> = pods.iter().filter(|p| kit::pod_active(p)).collect();
    let terminating = pods
        .iter()
        .filter(|p| kit::terminating(p) && !matches!(kit::phase(p), "Succeeded" | "Failed"))
        .count();
    let old = job.status.clone().unwrap_or_default();
    let count = |ph: &str| pods.iter().filter(|p| kit::phase(p) == ph).count() as i32;
    // Pods of a finished count stay counted even if someone deletes them.
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let indexes = indexed.then(|| {
        Indexes::from_pods(
            &pods,
            spec.completions.unwrap_or(0),
            old.completed_indexes.as_deref(),
        )
    });
    let succeeded = match &indexes {
        Some(ix) => ix.succeeded.len() as i32,
        None => count("Succeeded").max(old.succeeded.unwrap_or(0)),
    };
    let failed = count("Failed").max(old.failed.unwrap_or(0));
    let restarts: i32 = if spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        == Some("OnFailure")
    {
        active
            .iter()
            .flat_map(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.container_statuses.clone())
                    .unwrap_or_default()
            })
            .map(|c| c.restart_count)
            .sum()
    } else {
        0
    };
    let mut conds = old.conditions.clone().unwrap_or_default();
    let mut status = JobStatus {
        start_time: old.start_time.clone(),
        completion_time: old.completion_time.clone(),
        succeeded: Some(succeeded),
        failed: Some(failed),
        uncounted_terminated_pods: Some(UncountedTerminatedPods::default()),
        completed_indexes: indexes.as_ref().map(|ix| ix.completed()),
        ..Default::default()
    };
    let finished = has_condition(&job, "Complete") || has_condition(&job, "Failed");
    let suspended = spec.suspend.unwrap_or(false);
    let mut to_delete: Vec<String> = vec![];
    let mut requeue: Option<Duration> = None;

    if finished {
        if has_condition(&job, "Failed") {
            to_delete = active.iter().map(|p| p.name_any()).collect();
        }
    } else if suspended {
        to_delete = active.iter().map(|p| p.name_any()).collect();
        status.start_time = None;
        set_condition(
            &mut conds,
            condition("Suspended", true, "JobSuspended", "Job suspended"),
        );
    } else {
        if has_condition(&job, "Suspended") {
            set_condition(
                &mut conds,
                condition("Suspended", false, "JobResumed", "Job resumed"),
            );
        }
        let start = status.start_time.clone().unwrap_or_else(kit::now);
        status.start_time = Some(start.clone());
        let backoff_limit = spec.backoff_limit.unwrap_or(6);
        let elapsed = jiff::Timestamp::now().duration_since(start.0).as_secs();
        let failure = if failed + restarts > backoff_limit {
            Some((
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            ))
        } else if spec.active_deadline_seconds.is_some_and(|d| elapsed >= d) {
            Some((
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
            ))
        } else {
            None
        };
        let completions = spec.completions;
        let complete = match completions {
            Some(c) => succeeded >= c,
            None => succeeded >= 1 && active.is_empty(),
        };
        if let Some((reason, message)) = failure {
            to_delete = active.iter().map(|p| p.name_any()).collect();
            set_condition(
                &mut conds,
                condition("FailureTarget", true, reason, message),
            );
            set_condition(&mut conds, condition("Failed", true, reason, message));
            tracing::info!(controller = NAME, "job {ns}/{name} failed: {message}");
            kit::record(
                &ctx.client,
                NAME,
                job.as_ref(),
                true,
                reason,
                message.into(),
            )
            .await;
        } else if complete {
            to_delete = active.iter().map(|p| p.name_any()).collect();
            let msg = "Reached expected number of succeeded pods";
            set_condition(
                &mut conds,
                condition("SuccessCriteriaMet", true, "CompletionsReached", msg),
            );
            set_condition(
                &mut conds,
                condition("Complete", true, "CompletionsReached", msg),
            );
            status.completion_time = Some(kit::now());
            tracing::info!(
                controller = NAME,
                "job {ns}/{name} complete: {succeeded} succeeded"
            );
            kit::record(
                &ctx.client,
                NAME,
                job.as_ref(),
                false,
                "Completed",
                "Job completed".into(),
            )
            .await;
        } else if in_sync {
            let parallelism = spec.parallelism.unwrap_or(1).max(0) as usize;
            let want = match completions {
                Some(c) => parallelism.min((c - succeeded).max(0) as usize),
                // A work queue: once one pod succeeded, no new ones; the rest finish.
                None if succeeded > 0 => active.len().min(parallelism),
                None => parallelism,
            };
            let wait = backoff_remaining(&pods);
            if active.len() < want && wait > Duration::ZERO {
                // Replacements of failed pods wait out the backoff, as upstream.
                requeue = Some(wait);
            } else if active.len() < want {
                let n = (want - active.len()).min(BURST);
                let owner = kit::owner_ref(job.as_ref());
                let new_pods: Vec<Pod> = match &indexes {
                    Some(ix) => ix
                        .missing(completions.unwrap_or(0), &active)
                        .into_iter()
                        .take(n)
                        .map(|i| indexed_pod(&spec.template, &name, owner.clone(), i))
                        .collect(),
                    None => vec![kit::pod_from_template(&spec.template, &name, owner); n],
                };
                let mut created = vec![];
                let mut err = None;
                for pod in &new_pods {
                    match kit::create_pod(&api, pod).await {
                        Ok(n) => created.push(n),
                        Err(e) => {
                            err = Some(e);
                            break;
                        }
                    }
                }
                tracing::info!(
                    controller = NAME,
                    "job {ns}/{name}: created {} pod(s)",
                    created.len()
                );
                kit::record_pods(&ctx.client, NAME, job.as_ref(), &created, &[], err.as_ref())
                    .await;
                ctx.expect.expect(&uid, created, vec![]);
                if let Some(e) = err {
                    return Err(e);
                }
            } else if let Some(ix) = indexes.as_ref().filter(|_| active.len() <= want) {
                to_delete = ix.redundant(&active);
            } else if active.len() > want {
                let mut extra = active.clone();
                extra.sort_by_key(|p| kit::deletion_rank(p));
                to_delete = extra
                    .iter()
                    .take(active.len() - want)
                    .map(|p| p.name_any())
                    .collect();
            }
            if let Some(d) = spec.active_deadline_seconds {
                let left = Duration::from_secs((d - elapsed).max(1) as u64);
                requeue = Some(requeue.map_or(left, |r| r.min(left)));
            }
        } else {
            requeue = Some(Duration::from_secs(1));
        }
    }
    for n in &to_delete {
        kit::delete_pod(&api, n).await?;
    }
    if !to_delete.is_empty() {
        tracing::info!(
            controller = NAME,
            "job {ns}/{name}: deleted {} active pod(s)",
            to_delete.len()
        );
        kit::record_pods(&ctx.client, NAME, job.as_ref(), &[], &to_delete, None).await;
        ctx.expect.expect(&uid, vec![], to_delete.clone());
        active.retain(|p| !to_delete.contains(&p.name_any()));
    }
    status.active = Some(active.len() as i32);
    status.ready = Some(active.iter().filter(|p| kit::pod_ready(p)).count() as i32);
    status.terminating = Some((terminating + to_delete.len()) as i32);
    status.conditions = (!conds.is_empty()).then_some(conds);
    if job.status.as_ref() != Some(&status) {
        let mut j = (*job).clone();
        j.status = Some(status);
        let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
        match jobs.replace_status(&name, &PostParams::default(), &j).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(requeue
        .map(Action::requeue)
        .unwrap_or_else(Action::await_change))
}

/// Upstream's pod failure backoff: 10 s after the first failure, doubling per failure, at most
/// 6 minutes.
const BACKOFF_BASE: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(360);

/// When a pod finished: its containers' termination, else its Ready condition's last change,
/// else its creation.
fn finished_at(p: &Pod) -> Option<jiff::Timestamp> {
    let st = p.status.as_ref();
    let terminated = st
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0)
        .max();
    terminated
        .or_else(|| kit::ready_condition_time(p))
        .or_else(|| p.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// How long new pods must still wait after the job's failures (zero: no wait).
fn backoff_remaining(pods: &[Arc<Pod>]) -> Duration {
    let failed: Vec<&Arc<Pod>> = pods.iter().filter(|p| kit::phase(p) == "Failed").collect();
    let Some(last) = failed.iter().filter_map(|p| finished_at(p)).max() else {
        return Duration::ZERO;
    };
    let exp = (failed.len() as u32).saturating_sub(1).min(16);
    let delay = BACKOFF_BASE.saturating_mul(1 << exp).min(BACKOFF_MAX);
    let since = jiff::Timestamp::now().duration_since(last);
    let since = Duration::try_from(since).unwrap_or(Duration::ZERO);
    delay.saturating_sub(since)
}

/// The annotation (and label) carrying an Indexed Job pod's completion index.
pub const INDEX_KEY: &str = "batch.kubernetes.io/job-completion-index";

fn index_of(p: &Pod) -> Option<i32> {
    p.annotations()
        .get(INDEX_KEY)
        .or_else(|| p.labels().get(INDEX_KEY))
        .and_then(|v| v.parse().ok())
}

/// Completion indexes of an Indexed Job.
struct Indexes {
    succeeded: std::collections::BTreeSet<i32>,
}

impl Indexes {
    /// Succeeded indexes: those of succeeded pods, plus the ones the status already recorded.
    fn from_pods(pods: &[Arc<Pod>], completions: i32, recorded: Option<&str>) -> Indexes {
        let mut succeeded: std::collections::BTreeSet<i32> = parse_ranges(recorded.unwrap_or(""));
        succeeded.extend(
            pods.iter()
                .filter(|p| kit::phase(p) == "Succeeded")
                .filter_map(|p| index_of(p)),
        );
        succeeded.retain(|i| (0..completions).contains(i));
        Indexes { succeeded }
    }

    /// Indexes neither succeeded nor held by an active pod, lowest first.
    fn missing(&self, completions: i32, active: &[&Arc<Pod>]) -> Vec<i32> {
        let held: std::collections::BTreeSet<i32> =
            active.iter().filter_map(|p| index_of(p)).collect();
        (0..completions)
            .filter(|i| !self.succeeded.contains(i) && !held.contains(i))
            .collect()
    }

    /// Active pods not needed: a second pod of one index, or one of an index already done.
    fn redundant(&self, active: &[&Arc<Pod>]) -> Vec<String> {
        let mut seen = std::collections::BTreeSet::new();
        let mut sorted: Vec<&&Arc<Pod>> = active.iter().collect();
        sorted.sort_by_key(|p| std::cmp::Reverse(kit::deletion_rank(p)));
        sorted
            .into_iter()
            .filter(|p| match index_of(p) {
                Some(i) => self.succeeded.contains(&i) || !seen.insert(i),
                None => true,
            })
            .map(|p| p.name_any())
            .collect()
    }

    /// `status.completedIndexes`: ranges such as `0-2,4`.
    fn completed(&self) -> String {
        let mut out: Vec<String> = vec![];
        let mut it = self.succeeded.iter().copied().peekable();
        while let Some(start) = it.next() {
            let mut end = start;
            while it.peek() == Some(&(end + 1)) {
                end = it.next().unwrap_or(end);
            }
            out.push(if end > start {
                format!("{start}-{end}")
            } else {
                start.to_string()
            });
        }
        out.join(",")
    }
}

fn parse_ranges(s: &str) -> std::collections::BTreeSet<i32> {
    let mut out = std::collections::BTreeSet::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.trim().parse::<i32>(), b.trim().parse::<i32>()) {
            // Bounded: a corrupt status cannot make this loop for ever.
            out.extend(a..=b.min(a.saturating_add(100_000)));
        }
    }
    out
}

/// An Indexed Job's pod for one index: the index as annotation and label, the hostname
/// `<job>-<index>` and `JOB_COMPLETION_INDEX` in every container, as upstream.
fn indexed_pod(
    tpl: &k8s_openapi::api::core::v1::PodTemplateSpec,
    job: &str,
    owner: k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
    index: i32,
) -> Pod {
    use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector};
    let mut pod = kit::pod_from_template(tpl, &format!("{job}-{index}"), owner);
    pod.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(INDEX_KEY.into(), index.to_string());
    pod.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert(INDEX_KEY.into(), index.to_string());
    if let Some(spec) = pod.spec.as_mut() {
        if spec.hostname.as_deref().unwrap_or("").is_empty() {
            spec.hostname = Some(format!("{job}-{index}"));
        }
        let env = EnvVar {
            name: "JOB_COMPLETION_INDEX".into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    api_version: None,
                    field_path: format!("metadata.annotations['{INDEX_KEY}']"),
                }),
                ..Default::default()
            }),
        };
        for c in spec
            .containers
            .iter_mut()
            .chain(spec.init_containers.iter_mut().flatten())
        {
            let envs = c.env.get_or_insert_with(Vec::new);
            if !envs.iter().any(|e| e.name == env.name) {
                envs.push(env.clone());
            }
        }
    }
    pod
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completed_indexes_compress_to_ranges() {
        let ix = Indexes {
            succeeded: [0, 1, 2, 4, 6, 7].into_iter().collect(),
        };
        assert_eq!(ix.completed(), "0-2,4,6-7");
        assert_eq!(parse_ranges("0-2,4,6-7"), ix.succeeded);
        assert!(parse_ranges("x,-").is_empty());
    }
}
