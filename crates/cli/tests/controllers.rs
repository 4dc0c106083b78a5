//! The Deployment and ReplicaSet controllers through the real binary and kubectl 1.33: scale up
//! to 10 ready replicas, a rolling update whose observed pod counts stay within maxSurge and
//! maxUnavailable, `kubectl rollout status/history/undo/pause/resume/restart`, scale down.

mod cm;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cm::Cluster;

/// What a pod watcher saw over a rolling update: the most pods at once and the fewest ready.
#[derive(Default, Debug)]
struct Seen {
    max_pods: usize,
    min_ready: usize,
    events: usize,
}

/// Watches the pods labelled app=<app> and records, after every event, how many exist (not
/// being deleted) and how many of those are Ready.
fn watch_counts(
    kubeconfig: std::path::PathBuf,
    app: &str,
    stop: Arc<AtomicBool>,
) -> (Arc<Mutex<Seen>>, std::thread::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Seen {
        min_ready: usize::MAX,
        ..Default::default()
    }));
    let out = seen.clone();
    let selector = format!("app={app}");
    let h = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            use futures::StreamExt;
            use k8s_openapi::api::core::v1::Pod;
            use kube::runtime::watcher;
            let client = cm::client(&kubeconfig).await;
            let api: kube::Api<Pod> = kube::Api::namespaced(client, "default");
            let cfg = watcher::Config::default().labels(&selector);
            let mut events = watcher::watcher(api, cfg).boxed();
            let mut pods: HashMap<String, bool> = HashMap::new();
            let mut synced = false;
            while !stop.load(Ordering::SeqCst) {
                let ev = match tokio::time::timeout(Duration::from_millis(300), events.next()).await
                {
                    Ok(Some(Ok(ev))) => ev,
                    Ok(Some(Err(_))) | Err(_) => continue,
                    Ok(None) => break,
                };
                match ev {
                    watcher::Event::Init => pods.clear(),
                    watcher::Event::InitDone => synced = true,
                    watcher::Event::InitApply(p) | watcher::Event::Apply(p) => {
                        let name = p.metadata.name.clone().unwrap_or_default();
                        if p.metadata.deletion_timestamp.is_some() {
                            pods.remove(&name);
                        } else {
                            let ready = p
                                .status
                                .as_ref()
                                .and_then(|s| s.conditions.as_ref())
                                .is_some_and(|c| {
                                    c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                                });
                            pods.insert(name, ready);
                        }
                    }
                    watcher::Event::Delete(p) => {
                        pods.remove(&p.metadata.name.clone().unwrap_or_default());
                    }
                }
                if synced {
                    let mut s = out.lock().unwrap();
                    s.events += 1;
                    s.max_pods = s.max_pods.max(pods.len());
                    s.min_ready = s.min_ready.min(pods.values().filter(|r| **r).count());
                }
            }
        });
    });
    (seen, h)
}

fn image_of(c: &Cluster, name: &str) -> String {
    c.ok(&[
        "get",
        "deployment",
        name,
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ])
}

#[test]
fn deployment_rollout_undo_pause_restart_and_scale() {
    let mut c = Cluster::start();
    c.start_cm(&[]);
    c.ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx:1.0",
        "--replicas=10",
    ]);
    c.wait_deployment("default", "web", 10);
    c.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let rs = c.replicasets("default", "web");
    assert_eq!(rs.len(), 1);
    let rs_uid = rs[0]["metadata"]["uid"].as_str().unwrap().to_string();
    assert_eq!(
        c.pods_of("default", &rs_uid).len(),
        10,
        "10 pods owned by the ReplicaSet"
    );
    assert_eq!(
        rs[0]["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    assert!(rs[0]["metadata"]["labels"]["pod-template-hash"].is_string());

    // A rolling update with maxSurge 2 and maxUnavailable 1, watched pod by pod.
    c.ok(&[
        "patch",
        "deployment",
        "web",
        "-p",
        r#"{"spec":{"strategy":{"rollingUpdate":{"maxSurge":2,"maxUnavailable":1}}}}"#,
    ]);
    let stop = Arc::new(AtomicBool::new(false));
    let (seen, watcher) = watch_counts(c.kubeconfig.clone(), "web", stop.clone());
    c.wait_for("the pod watcher to start", || {
        (seen.lock().unwrap().events > 0 || c.app_pods("default", "web").len() == 10).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    c.ok(&["set", "image", "deployment/web", "nginx=nginx:2.0"]);
    c.ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    c.wait_deployment("default", "web", 10);
    stop.store(true, Ordering::SeqCst);
    watcher.join().unwrap();
    let s = seen.lock().unwrap();
    println!("rolling update observed: {s:?}");
    assert!(s.events > 10, "the watcher saw the rollout: {s:?}");
    assert!(
        s.max_pods <= 12,
        "more than replicas+maxSurge pods at once: {s:?}"
    );
    assert!(
        s.min_ready >= 9,
        "fewer than replicas-maxUnavailable ready pods: {s:?}"
    );
    drop(s);
    assert_eq!(image_of(&c, "web"), "nginx:2.0");
    let history = c.ok(&["rollout", "history", "deployment/web"]);
    println!("{history}");
    assert!(history.contains('1') && history.contains('2'), "{history}");

    // Undo returns to the previous template (its ReplicaSet becomes revision 3).
    c.ok(&["rollout", "undo", "deployment/web"]);
    c.ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    c.wait_deployment("default", "web", 10);
    assert_eq!(image_of(&c, "web"), "nginx:1.0");
    let sets = c.replicasets("default", "web");
    assert_eq!(sets.len(), 2, "undo reuses the first ReplicaSet");
    let first = sets
        .iter()
        .find(|r| r["metadata"]["uid"] == rs_uid.as_str())
        .expect("the first ReplicaSet is back");
    assert_eq!(first["spec"]["replicas"], 10);
    assert_eq!(
        first["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    assert_eq!(c.pods_of("default", &rs_uid).len(), 10);

    // Paused: a template change makes no ReplicaSet until resumed.
    c.ok(&["rollout", "pause", "deployment/web"]);
    c.ok(&["set", "image", "deployment/web", "nginx=nginx:3.0"]);
    c.wait_for("the paused condition", || {
        let d = c.json(&["get", "deployment", "web"]);
        let paused = d["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Progressing" && c["reason"] == "DeploymentPaused");
        (paused && d["status"]["observedGeneration"] == d["metadata"]["generation"]).then_some(())
    });
    assert_eq!(
        c.replicasets("default", "web").len(),
        2,
        "no rollout while paused"
    );
    c.ok(&["rollout", "resume", "deployment/web"]);
    c.ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    c.wait_deployment("default", "web", 10);
    assert_eq!(c.replicasets("default", "web").len(), 3);

    // Restart rolls out a fresh ReplicaSet with the same image.
    c.ok(&["rollout", "restart", "deployment/web"]);
    c.ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    c.wait_deployment("default", "web", 10);
    assert_eq!(c.replicasets("default", "web").len(), 4);
    assert_eq!(image_of(&c, "web"), "nginx:3.0");

    // Scale down removes pods.
    c.ok(&["scale", "deployment/web", "--replicas=3"]);
    c.wait_deployment("default", "web", 3);
    let total: usize = c
        .replicasets("default", "web")
        .iter()
        .map(|r| {
            c.pods_of("default", r["metadata"]["uid"].as_str().unwrap())
                .len()
        })
        .sum();
    assert_eq!(total, 3);
}

#[test]
fn replicaset_adopts_orphans_and_recreates_deleted_pods() {
    let mut c = Cluster::start();
    c.start_cm(&[]);
    // An orphan pod matching the selector is adopted instead of creating a third pod.
    c.ok(&["run", "stray", "--image=nginx", "--labels=app=cache"]);
    let rs = r#"{"apiVersion":"apps/v1","kind":"ReplicaSet","metadata":{"name":"cache"},
      "spec":{"replicas":3,"minReadySeconds":1,"selector":{"matchLabels":{"app":"cache"}},
      "template":{"metadata":{"labels":{"app":"cache"}},"spec":{"containers":[{"name":"c","image":"redis"}]}}}}"#;
    let file = c.dir.path().join("rs.json");
    std::fs::write(&file, rs).unwrap();
    c.ok(&["apply", "-f", file.to_str().unwrap()]);
    let uid = c.ok(&["get", "rs", "cache", "-o", "jsonpath={.metadata.uid}"]);
    c.wait_for("3 available replicas", || {
        let s = c.json(&["get", "rs", "cache"])["status"].clone();
        (s["availableReplicas"] == 3 && s["readyReplicas"] == 3 && s["fullyLabeledReplicas"] == 3)
            .then_some(())
    });
    let pods = c.pods_of("default", &uid);
    assert_eq!(pods.len(), 3);
    assert!(
        pods.iter().any(|p| p["metadata"]["name"] == "stray"),
        "the orphan was adopted"
    );
    // A deleted pod is replaced.
    c.ok(&["delete", "pod", "stray", "--wait=false"]);
    c.wait_for("a replacement pod", || {
        let p = c.pods_of("default", &uid);
        (p.len() == 3 && p.iter().all(|p| p["metadata"]["name"] != "stray")).then_some(())
    });
    // A pod relabelled out of the selector is released and replaced.
    let victim = c.pods_of("default", &uid)[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    c.ok(&["label", "pod", &victim, "app=other", "--overwrite"]);
    c.wait_for("the released pod to be replaced", || {
        let p = c.pods_of("default", &uid);
        (p.len() == 3 && p.iter().all(|p| p["metadata"]["name"] != victim.as_str())).then_some(())
    });
    let released = c.json(&["get", "pod", &victim]);
    assert!(
        released["metadata"]["ownerReferences"]
            .as_array()
            .is_none_or(|r| r.is_empty()),
        "released pod keeps no owner: {released}"
    );
    let rs = c.json(&["get", "rs", "cache"]);
    assert_eq!(
        rs["status"]["observedGeneration"],
        rs["metadata"]["generation"]
    );
}
