//! Three controller-manager replicas elect one leader on the kube-system/kube-controller-manager
//! Lease. Killing the leader with SIGKILL or stopping it with SIGTERM hands the lease to another
//! replica, work continues, and no pod is ever created twice (counted by owner reference and
//! by every pod creation a watch saw).

mod cm;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cm::Cluster;

fn holder(c: &Cluster) -> Option<String> {
    let o = c.kubectl(&[
        "get",
        "lease",
        "-n",
        "kube-system",
        "kube-controller-manager",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    (o.ok && !o.stdout.trim().is_empty()).then(|| o.stdout.trim().to_string())
}

/// The identity a replica's log announces.
fn identity(c: &Cluster, i: usize) -> Option<String> {
    let log = c.cm_log(i);
    let at = log.find("kube-system/kube-controller-manager as ")?;
    let rest = &log[at + "kube-system/kube-controller-manager as ".len()..];
    Some(rest.split_whitespace().next()?.to_string())
}

fn leader_index(c: &Cluster) -> (usize, String) {
    c.wait_for("a lease holder that is one of the replicas", || {
        let h = holder(c)?;
        (0..c.cms.len())
            .find(|i| c.cms[*i].is_some() && identity(c, *i).as_deref() == Some(h.as_str()))
            .map(|i| (i, h))
    })
}

/// Records the name of every pod a watch ever saw created (ADDED) in `default`.
fn record_creations(
    kubeconfig: std::path::PathBuf,
    stop: Arc<AtomicBool>,
) -> (
    Arc<Mutex<Vec<(String, String)>>>,
    std::thread::JoinHandle<()>,
) {
    let seen = Arc::new(Mutex::new(vec![]));
    let out = seen.clone();
    let h = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            use futures::StreamExt;
            use k8s_openapi::api::core::v1::Pod;
            use kube::runtime::watcher;
            let client = cm::client(&kubeconfig).await;
            let api: kube::Api<Pod> = kube::Api::namespaced(client, "default");
            let mut events = watcher::watcher(api, watcher::Config::default()).boxed();
            let mut names = HashSet::new();
            while !stop.load(Ordering::SeqCst) {
                let ev = match tokio::time::timeout(Duration::from_millis(300), events.next()).await
                {
                    Ok(Some(Ok(ev))) => ev,
                    Ok(Some(Err(_))) | Err(_) => continue,
                    Ok(None) => break,
                };
                if let watcher::Event::Apply(p) | watcher::Event::InitApply(p) = ev {
                    let name = p.metadata.name.clone().unwrap_or_default();
                    let owner = p
                        .metadata
                        .owner_references
                        .iter()
                        .flatten()
                        .find(|r| r.controller == Some(true))
                        .map(|r| r.uid.clone())
                        .unwrap_or_default();
                    if names.insert(name.clone()) {
                        out.lock().unwrap().push((owner, name));
                    }
                }
            }
        });
    });
    (seen, h)
}

/// Every ReplicaSet of app `app` has exactly its spec.replicas pods, and the watch saw exactly
/// that many pods created for it overall.
fn assert_no_duplicates(c: &Cluster, app: &str, created: &Mutex<Vec<(String, String)>>) {
    for rs in c.replicasets("default", app) {
        let uid = rs["metadata"]["uid"].as_str().unwrap();
        let want = rs["spec"]["replicas"].as_u64().unwrap() as usize;
        let have = c.pods_of("default", uid).len();
        assert_eq!(
            have, want,
            "ReplicaSet {} owns {have} pods, wants {want}",
            rs["metadata"]["name"]
        );
        let ever = created
            .lock()
            .unwrap()
            .iter()
            .filter(|(o, _)| o == uid)
            .count();
        assert_eq!(
            ever, want,
            "pods ever created for {}: {ever}, wanted {want}",
            rs["metadata"]["name"]
        );
    }
}

#[test]
fn leader_failover_on_kill_and_on_sigterm() {
    let mut c = Cluster::start();
    for _ in 0..3 {
        c.start_cm(&[]);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (created, watcher) = record_creations(c.kubeconfig.clone(), stop.clone());
    let (first, first_id) = leader_index(&c);
    println!("leader: replica {first} ({first_id})");
    c.ok(&[
        "create",
        "deployment",
        "one",
        "--image=nginx",
        "--replicas=5",
    ]);
    c.wait_deployment("default", "one", 5);
    let transitions = |c: &Cluster| {
        c.ok(&[
            "get",
            "lease",
            "-n",
            "kube-system",
            "kube-controller-manager",
            "-o",
            "jsonpath={.spec.leaseTransitions}",
        ])
        .trim()
        .parse::<i64>()
        .unwrap_or(0)
    };
    let t0 = transitions(&c);

    // kill -9: the lease expires (4 s here) and another replica takes it.
    let killed = Instant::now();
    c.kill_cm(first, "-KILL");
    let (second, second_id) = c.wait_for("a new leader after kill -9", || {
        let (i, h) = leader_index(&c);
        (h != first_id).then_some((i, h))
    });
    println!(
        "after kill -9 of the leader, replica {second} took over in {:?}",
        killed.elapsed()
    );
    assert!(transitions(&c) > t0, "leaseTransitions counts the takeover");
    c.ok(&[
        "create",
        "deployment",
        "two",
        "--image=nginx",
        "--replicas=4",
    ]);
    c.wait_deployment("default", "two", 4);
    c.ok(&["scale", "deployment/one", "--replicas=7"]);
    c.wait_deployment("default", "one", 7);

    // SIGTERM: the leader releases the lease and another takes it at its next retry.
    let stopped = Instant::now();
    c.kill_cm(second, "-TERM");
    assert!(
        c.cm_log(second)
            .contains("released lease kube-system/kube-controller-manager"),
        "the leader released its lease on SIGTERM:\n{}",
        c.cm_log(second)
    );
    let (third, _) = c.wait_for("a new leader after SIGTERM", || {
        let (i, h) = leader_index(&c);
        (h != second_id && i != first).then_some((i, h))
    });
    println!(
        "after SIGTERM of the leader, replica {third} took over in {:?}",
        stopped.elapsed()
    );
    c.ok(&["scale", "deployment/two", "--replicas=6"]);
    c.wait_deployment("default", "two", 6);

    stop.store(true, Ordering::SeqCst);
    watcher.join().unwrap();
    assert_no_duplicates(&c, "one", &created);
    assert_no_duplicates(&c, "two", &created);
    // Only the leader acted: the others never started their controllers.
    let starts = (0..3)
        .filter(|i| c.cm_log(*i).contains("starting replicaset-controller"))
        .count();
    assert_eq!(starts, 3, "each replica led exactly once over the test");
    // The remaining replica's health endpoint reports leadership as healthy.
    let metrics_ok = c.cm_log(third).contains("serving /healthz");
    assert!(metrics_ok, "{}", c.cm_log(third));
}
