//! What follows a decision: the binding (POST pods/NAME/binding), or the PodScheduled=False
//! condition; and the events kubectl shows (`Scheduled`, `FailedScheduling`), sent by a small pool
//! of workers from a bounded channel so they never slow scheduling (when it is full, an event is
//! dropped with a log line, as upstream's broadcaster drops under load).

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::mpsc;

use crate::State;

pub struct EventSink {
    tx: mpsc::Sender<Event>,
}

const EVENT_WORKERS: usize = 4;

impl EventSink {
    pub fn start(client: Client) -> EventSink {
        let (tx, rx) = mpsc::channel::<Event>(20_000);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..EVENT_WORKERS {
            let rx = rx.clone();
            let client = client.clone();
            tokio::spawn(async move {
                loop {
                    let Some(ev) = rx.lock().await.recv().await else {
                        return;
                    };
                    let ns = ev.metadata.namespace.clone().unwrap_or_default();
                    let api: Api<Event> = Api::namespaced(client.clone(), &ns);
                    if let Err(e) = api.create(&PostParams::default(), &ev).await {
                        tracing::warn!(namespace = %ns, reason = ?ev.reason, "could not record event: {e}");
                    }
                }
            });
        }
        EventSink { tx }
    }

    /// Records an event about `pod` (Normal or Warning).
    pub fn pod_event(
        &self,
        component: &str,
        pod: &Pod,
        kind: &str,
        reason: &str,
        action: &str,
        msg: String,
    ) {
        let now = jiff::Timestamp::now();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let ev = Event {
            metadata: ObjectMeta {
                name: Some(format!("{name}.{:x}", now.as_nanosecond())),
                namespace: pod.metadata.namespace.clone(),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(name),
                namespace: pod.metadata.namespace.clone(),
                uid: pod.metadata.uid.clone(),
                resource_version: pod.metadata.resource_version.clone(),
                ..Default::default()
            },
            reason: Some(reason.into()),
            message: Some(msg),
            type_: Some(kind.into()),
            action: Some(action.into()),
            source: Some(EventSource {
                component: Some(component.into()),
                host: None,
            }),
            reporting_component: Some(component.into()),
            reporting_instance: Some(format!("{component}-{}", hostname())),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: Some(MicroTime(now)),
            count: Some(1),
            ..Default::default()
        };
        if self.tx.try_send(ev).is_err() {
            tracing::debug!("event queue full: dropping a {reason} event");
        }
    }
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Binds the pod to the node. Ok(true): bound; Ok(false): the pod is gone or already bound
/// (nothing to retry); Err: retry after backoff.
pub async fn bind(client: &Client, pod: &Pod, node: &str) -> Result<bool, kube::Error> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let body = json!({
        "apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": name, "namespace": ns, "uid": pod.metadata.uid},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    match api
        .create_subresource::<_, serde_json::Value>("binding", name, &PostParams::default(), &body)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {
            tracing::info!(pod = %format!("{ns}/{name}"), "not bound: {}", s.message);
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Sets PodScheduled=False/Unschedulable with the message, unless the pod already says so.
pub async fn mark_unschedulable(client: &Client, pod: &Pod, msg: &str) -> Result<(), kube::Error> {
    let same = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
                && c.message.as_deref() == Some(msg)
        });
    if same {
        return Ok(());
    }
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let patch = json!({"status": {"conditions": [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": msg,
        "lastProbeTime": null, "lastTransitionTime": jiff::Timestamp::now().to_string(),
    }]}});
    api.patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await?;
    Ok(())
}

/// After a decision: bind (in a task of its own) or report the failure.
pub fn finish(state: &Arc<State>, d: crate::sched::Decision) {
    let key = d.info.key.clone();
    let elapsed = d.started.elapsed().as_secs_f64();
    match d.result {
        Ok(node) => {
            state.cache.lock().add_pod(d.info.clone(), &node, true);
            state.metrics.attempt("scheduled", elapsed);
            let state = state.clone();
            tokio::spawn(async move {
                let _permit = state.bind_slots.acquire().await;
                let ns_name = format!(
                    "{}/{}",
                    d.pod.metadata.namespace.as_deref().unwrap_or("default"),
                    d.pod.metadata.name.as_deref().unwrap_or("")
                );
                match bind(&state.client, &d.pod, &node).await {
                    Ok(true) => {
                        tracing::debug!(pod = %ns_name, node = %node, "bound");
                        state.queue.done(&key);
                        state.events.pod_event(
                            &state.scheduler_name,
                            &d.pod,
                            "Normal",
                            "Scheduled",
                            "Binding",
                            format!("Successfully assigned {ns_name} to {node}"),
                        );
                    }
                    Ok(false) => {
                        state.cache.lock().remove_pod(&key);
                        state.queue.done(&key);
                    }
                    Err(e) => {
                        tracing::warn!(pod = %ns_name, node = %node, "binding failed, will retry: {e}");
                        state.metrics.bind_error();
                        state.cache.lock().remove_pod(&key);
                        state.queue.failed(&key, false);
                        state.queue.move_all();
                    }
                }
            });
        }
        Err(fit) => {
            let msg = fit.message();
            state.metrics.attempt("unschedulable", elapsed);
            state.queue.failed(&key, true);
            tracing::info!(pod = %key, "unschedulable: {msg}");
            state.events.pod_event(
                &state.scheduler_name,
                &d.pod,
                "Warning",
                "FailedScheduling",
                "Scheduling",
                msg.clone(),
            );
            let state = state.clone();
            tokio::spawn(async move {
                if let Err(e) = mark_unschedulable(&state.client, &d.pod, &msg).await {
                    tracing::warn!(pod = %key, "could not set PodScheduled=False: {e}");
                }
            });
        }
    }
}
