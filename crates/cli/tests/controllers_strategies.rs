//! Recreate never runs old and new pods together; a rollout that cannot progress reports
//! ProgressDeadlineExceeded (and `kubectl rollout status` fails with it); the controllers
//! record events `kubectl describe` shows; the secure port serves healthz and metrics.

mod cm;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cm::Cluster;

/// Watches app=<app> pods; records the most pod-template-hash values seen live at once.
fn watch_hashes(
    kubeconfig: std::path::PathBuf,
    app: &str,
    stop: Arc<AtomicBool>,
) -> (Arc<Mutex<(usize, usize)>>, std::thread::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new((0usize, 0usize)));
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
            let mut events =
                watcher::watcher(api, watcher::Config::default().labels(&selector)).boxed();
            let mut pods: HashMap<String, String> = HashMap::new();
            while !stop.load(Ordering::SeqCst) {
                let ev = match tokio::time::timeout(Duration::from_millis(300), events.next()).await
                {
                    Ok(Some(Ok(ev))) => ev,
                    Ok(Some(Err(_))) | Err(_) => continue,
                    Ok(None) => break,
                };
                match ev {
                    watcher::Event::Init => pods.clear(),
                    watcher::Event::InitApply(p) | watcher::Event::Apply(p) => {
                        let name = p.metadata.name.clone().unwrap_or_default();
                        let hash = p
                            .metadata
                            .labels
                            .as_ref()
                            .and_then(|l| l.get("pod-template-hash").cloned())
                            .unwrap_or_default();
                        pods.insert(name, hash);
                    }
                    watcher::Event::Delete(p) => {
                        pods.remove(&p.metadata.name.clone().unwrap_or_default());
                    }
                    watcher::Event::InitDone => {}
                }
                let hashes: std::collections::HashSet<&String> = pods.values().collect();
                let mut s = out.lock().unwrap();
                s.0 = s.0.max(hashes.len());
                s.1 += 1;
            }
        });
    });
    (seen, h)
}

#[test]
fn recreate_never_mixes_templates() {
    let mut c = Cluster::start();
    c.start_cm(&[]);
    c.ok(&[
        "create",
        "deployment",
        "db",
        "--image=postgres:15",
        "--replicas=3",
    ]);
    c.ok(&[
        "patch",
        "deployment",
        "db",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/strategy","value":{"type":"Recreate"}}]"#,
    ]);
    c.wait_deployment("default", "db", 3);
    let stop = Arc::new(AtomicBool::new(false));
    let (seen, watcher) = watch_hashes(c.kubeconfig.clone(), "db", stop.clone());
    c.wait_for("the watcher to list", || {
        (seen.lock().unwrap().1 > 0).then_some(())
    });
    c.ok(&["set", "image", "deployment/db", "postgres=postgres:16"]);
    c.ok(&["rollout", "status", "deployment/db", "--timeout=80s"]);
    c.wait_deployment("default", "db", 3);
    stop.store(true, Ordering::SeqCst);
    watcher.join().unwrap();
    let (max_templates, events) = *seen.lock().unwrap();
    println!("recreate: at most {max_templates} templates live at once over {events} events");
    assert_eq!(
        max_templates, 1,
        "old and new pods ran together under Recreate"
    );
    // The events kubectl describe shows.
    let describe = c.ok(&["describe", "deployment", "db"]);
    assert!(describe.contains("ScalingReplicaSet"), "{describe}");
    assert!(describe.contains("Scaled down replica set"), "{describe}");
    let rs = c.replicasets("default", "db");
    let name = rs[0]["metadata"]["name"].as_str().unwrap();
    let describe = c.ok(&["describe", "rs", name]);
    assert!(describe.contains("SuccessfulCreate"), "{describe}");
}

#[test]
fn progress_deadline_exceeded_and_health_endpoints() {
    let mut c = Cluster::start();
    // On upstream's port, where `kubectl get componentstatuses` probes it.
    assert!(
        std::net::TcpListener::bind("127.0.0.1:10257").is_ok(),
        "port 10257 is taken: stop whatever controller-manager runs on this machine"
    );
    c.start_cm_on(10257, &[]);
    let d = r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"stuck"},
      "spec":{"replicas":2,"progressDeadlineSeconds":3,"minReadySeconds":1,
      "selector":{"matchLabels":{"app":"stuck"}},
      "template":{"metadata":{"labels":{"app":"stuck","kybern.test/never-ready":"yes"}},
      "spec":{"containers":[{"name":"c","image":"busybox"}]}}}}"#;
    let file = c.dir.path().join("d.json");
    std::fs::write(&file, d).unwrap();
    c.ok(&["apply", "-f", file.to_str().unwrap()]);
    c.wait_for("ProgressDeadlineExceeded", || {
        let d = c.json(&["get", "deployment", "stuck"]);
        d["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| {
                c["type"] == "Progressing"
                    && c["status"] == "False"
                    && c["reason"] == "ProgressDeadlineExceeded"
            })
            .then_some(d)
    });
    let o = c.kubectl(&["rollout", "status", "deployment/stuck", "--timeout=30s"]);
    assert!(!o.ok, "rollout status of a stuck rollout fails");
    assert!(
        o.stderr.contains("exceeded its progress deadline"),
        "{}",
        o.stderr
    );
    let d = c.json(&["get", "deployment", "stuck"]);
    assert_eq!(d["status"]["replicas"], 2);
    assert_eq!(d["status"]["availableReplicas"].as_i64().unwrap_or(0), 0);
    assert!(d["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["type"] == "Available" && c["status"] == "False"));

    // The secure port: healthz with the leaderElection check, metrics with leadership.
    let (code, body) = c.cm_get(0, "/healthz");
    assert_eq!((code, body.as_str()), (200, "ok"));
    let (code, body) = c.cm_get(0, "/healthz?verbose");
    assert_eq!(code, 200);
    assert!(body.contains("[+]leaderElection ok"), "{body}");
    let (code, body) = c.cm_get(0, "/metrics");
    assert_eq!(code, 200);
    assert!(
        body.contains("leader_election_master_status{name=\"kube-controller-manager\"} 1"),
        "{body}"
    );
    assert!(body.contains("controller_syncs_total"), "{body}");
    // componentstatuses probes that /healthz.
    let cs = c.ok(&[
        "get",
        "componentstatuses",
        "controller-manager",
        "-o",
        "json",
    ]);
    let cs: serde_json::Value = serde_json::from_str(&cs).unwrap();
    assert_eq!(cs["conditions"][0]["status"], "True", "{cs}");
    assert_eq!(cs["conditions"][0]["message"], "ok", "{cs}");
}

#[test]
fn controller_manager_flags_are_upstreams_and_bad_ones_exit_2() {
    let run = |args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_kybern"));
        cmd.arg("controller-manager").args(args);
        testkit::procs::run_bounded(cmd, 30)
    };
    let help = String::from_utf8_lossy(&run(&["--help"]).stdout).into_owned();
    for flag in [
        "--kubeconfig",
        "--leader-elect ",
        "--leader-elect-lease-duration",
        "--leader-elect-renew-deadline",
        "--leader-elect-retry-period",
        "--leader-elect-resource-namespace",
        "--leader-elect-resource-name",
        "--controllers",
        "--bind-address",
        "--secure-port",
        "--tls-cert-file",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
    for (args, says) in [
        (
            &["--controllers=*,-nosuch"][..],
            "unknown controller \"nosuch\"",
        ),
        (
            &["--leader-elect-renew-deadline=20s"][..],
            "must be greater than --leader-elect-renew-deadline",
        ),
        (&["--leader-elect-retry-period=5"][..], "missing unit"),
    ] {
        let o = run(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

#[test]
fn scaling_a_stuck_rollout_is_proportional() {
    let mut c = Cluster::start();
    c.start_cm(&[]);
    c.ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx",
        "--replicas=10",
    ]);
    c.wait_deployment("default", "web", 10);
    // A template whose pods never become ready: the rollout stops at maxSurge/maxUnavailable
    // (25% of 10: surge 3, unavailable 2): old 8 ready, new 5 not ready.
    c.ok(&[
        "patch",
        "deployment",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/spec/template/metadata/labels/kybern.test~1never-ready","value":"yes"}]"#,
    ]);
    let sizes = |c: &Cluster| -> (i64, i64) {
        let mut old = 0;
        let mut new = 0;
        for rs in c.replicasets("default", "web") {
            let n = rs["spec"]["replicas"].as_i64().unwrap();
            if rs["spec"]["template"]["metadata"]["labels"]["kybern.test/never-ready"].is_string() {
                new += n;
            } else {
                old += n;
            }
        }
        (old, new)
    };
    c.wait_for("the rollout to stall at old 8 / new 5", || {
        (sizes(&c) == (8, 5)).then_some(())
    });
    c.ok(&["scale", "deployment/web", "--replicas=20"]);
    // 20 + 25% surge = 25 pods, shared in proportion to 8:5 (upstream rounding): 15 and 10.
    c.wait_for("proportional scaling to old 15 / new 10", || {
        (sizes(&c) == (15, 10)).then_some(())
    });
    c.wait_for("every ReplicaSet to have its pods", || {
        c.replicasets("default", "web")
            .iter()
            .all(|rs| {
                let uid = rs["metadata"]["uid"].as_str().unwrap();
                c.pods_of("default", uid).len() as i64 == rs["spec"]["replicas"].as_i64().unwrap()
            })
            .then_some(())
    });
    let d = c.json(&["get", "deployment", "web"]);
    assert_eq!(d["status"]["replicas"], 25, "{}", d["status"]);
    assert_eq!(d["status"]["updatedReplicas"], 10, "{}", d["status"]);
}
