//! The ReplicationController, Job and DaemonSet controllers of `kybern controller-manager`, seen
//! through kubectl. No kubelet runs: the test plays it by patching pod status.

mod ctrl;

use ctrl::{names, set_pod_ready, Cluster};
use serde_json::json;

fn pods(c: &Cluster, ns: &str, selector: &str) -> Vec<serde_json::Value> {
    c.items(&["pods", "-n", ns, "-l", selector])
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect()
}

#[test]
fn replication_controller_keeps_its_replicas() {
    let c = Cluster::start(&["--controllers=replicationcontroller-controller"]);
    c.ok(&["create", "namespace", "rc"]);
    // An orphan that matches is adopted rather than a fourth pod created.
    c.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: orphan, namespace: rc, labels: {app: rc}}\nspec:\n  containers: [{name: c, image: nginx}]\n",
    );
    c.apply(
        r#"
apiVersion: v1
kind: ReplicationController
metadata: {name: web, namespace: rc}
spec:
  replicas: 3
  selector: {app: rc}
  template:
    metadata: {labels: {app: rc}}
    spec:
      containers: [{name: c, image: nginx}]
"#,
    );
    c.wait_for("3 pods", || pods(&c, "rc", "app=rc").len() == 3);
    let all = pods(&c, "rc", "app=rc");
    for p in &all {
        assert_eq!(
            p["metadata"]["ownerReferences"][0]["kind"],
            "ReplicationController"
        );
        assert_eq!(p["metadata"]["ownerReferences"][0]["controller"], true);
    }
    assert!(
        names(&all).contains(&"orphan".to_string()),
        "the orphan was adopted"
    );
    // Each pod created has an event on the controller (as `kubectl describe` shows).
    let created: Vec<String> = c
        .items(&[
            "events",
            "-n",
            "rc",
            "--field-selector",
            "reason=SuccessfulCreate,involvedObject.name=web",
        ])
        .iter()
        .map(|e| e["message"].as_str().unwrap_or("").to_string())
        .collect();
    for n in names(&all).iter().filter(|n| *n != "orphan") {
        assert!(
            created.contains(&format!("Created pod: {n}")),
            "{n}: {created:?}"
        );
    }
    for (i, n) in names(&all).iter().enumerate() {
        set_pod_ready(&c, "rc", n, &format!("10.2.0.{}", i + 1), true);
    }
    c.wait_for("status readyReplicas 3", || {
        c.ok(&[
            "get",
            "rc",
            "web",
            "-n",
            "rc",
            "-o",
            "jsonpath={.status.readyReplicas}/{.status.availableReplicas}/{.status.replicas}",
        ]) == "3/3/3"
    });
    // A deleted pod is replaced.
    c.ok(&["delete", "pod", "orphan", "-n", "rc"]);
    c.wait_for("a replacement", || {
        let p = pods(&c, "rc", "app=rc");
        p.len() == 3 && !names(&p).contains(&"orphan".to_string())
    });
    // Scaling down keeps the ready pods over the new one that is not ready.
    let ready: Vec<String> = pods(&c, "rc", "app=rc")
        .iter()
        .filter(|p| {
            p["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|x| x["type"] == "Ready" && x["status"] == "True")
            })
        })
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ready.len(), 2);
    c.ok(&["scale", "rc", "web", "-n", "rc", "--replicas=2"]);
    c.wait_for("2 pods, the ready ones", || {
        let mut r = ready.clone();
        r.sort();
        names(&pods(&c, "rc", "app=rc")) == r
    });
    c.wait_for("status replicas 2", || {
        c.ok(&[
            "get",
            "rc",
            "web",
            "-n",
            "rc",
            "-o",
            "jsonpath={.status.replicas}",
        ]) == "2"
    });
}

fn job_pods(c: &Cluster, job: &str) -> Vec<serde_json::Value> {
    pods(c, "jobs", &format!("job-name={job}"))
}

fn finish(c: &Cluster, pod: &str, phase: &str) {
    c.patch_status(
        &["pod", pod, "-n", "jobs"],
        &json!({"status": {"phase": phase}}),
    );
}

#[test]
fn job_runs_to_completion_or_fails() {
    let c = Cluster::start(&["--controllers=job-controller"]);
    c.ok(&["create", "namespace", "jobs"]);
    c.apply(
        r#"
apiVersion: batch/v1
kind: Job
metadata: {name: pi, namespace: jobs}
spec:
  completions: 3
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: busybox}]
"#,
    );
    // parallelism 2: two pods at a time until 3 succeeded.
    c.wait_for("2 active pods", || {
        job_pods(&c, "pi")
            .iter()
            .filter(|p| p["status"]["phase"] == "Pending")
            .count()
            == 2
    });
    c.wait_for("status active 2", || {
        c.ok(&[
            "get",
            "job",
            "pi",
            "-n",
            "jobs",
            "-o",
            "jsonpath={.status.active}",
        ]) == "2"
    });
    let first = names(&job_pods(&c, "pi"));
    finish(&c, &first[0], "Succeeded");
    finish(&c, &first[1], "Succeeded");
    // One more is needed, not two.
    c.wait_for("the third pod", || {
        job_pods(&c, "pi")
            .iter()
            .filter(|p| p["status"]["phase"] == "Pending")
            .count()
            == 1
    });
    let last: Vec<String> = job_pods(&c, "pi")
        .iter()
        .filter(|p| p["status"]["phase"] == "Pending")
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    // A failure is retried (backoffLimit 6 by default).
    finish(&c, &last[0], "Failed");
    c.wait_for("a replacement pod", || {
        job_pods(&c, "pi")
            .iter()
            .any(|p| p["status"]["phase"] == "Pending")
    });
    let retry: Vec<String> = job_pods(&c, "pi")
        .iter()
        .filter(|p| p["status"]["phase"] == "Pending")
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(retry.len(), 1);
    finish(&c, &retry[0], "Succeeded");
    c.ok(&[
        "wait",
        "--for=condition=complete",
        "job/pi",
        "-n",
        "jobs",
        "--timeout=90s",
    ]);
    let s = c.ok(&[
        "get",
        "job",
        "pi",
        "-n",
        "jobs",
        "-o",
        "jsonpath={.status.succeeded}/{.status.failed}/{.status.active}",
    ]);
    assert_eq!(s, "3/1/0");
    let done = c.items(&[
        "events",
        "-n",
        "jobs",
        "--field-selector",
        "reason=Completed",
    ]);
    assert_eq!(done.len(), 1, "{done:#?}");
    assert!(!c
        .ok(&[
            "get",
            "job",
            "pi",
            "-n",
            "jobs",
            "-o",
            "jsonpath={.status.completionTime}"
        ])
        .is_empty());
    let table = c.ok(&["get", "job", "pi", "-n", "jobs"]);
    assert!(
        table.contains("Complete") && table.contains("3/3"),
        "{table}"
    );

    // backoffLimit 0: the first failure fails the job.
    c.apply(
        r#"
apiVersion: batch/v1
kind: Job
metadata: {name: fragile, namespace: jobs}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: busybox}]
"#,
    );
    let p = c.wait_value("the fragile pod", || {
        job_pods(&c, "fragile").first().cloned()
    });
    finish(&c, p["metadata"]["name"].as_str().unwrap(), "Failed");
    c.ok(&[
        "wait",
        "--for=condition=failed",
        "job/fragile",
        "-n",
        "jobs",
        "--timeout=90s",
    ]);
    let reason = c.ok(&[
        "get",
        "job",
        "fragile",
        "-n",
        "jobs",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Failed\")].reason}",
    ]);
    assert_eq!(reason, "BackoffLimitExceeded");

    // activeDeadlineSeconds: a job running too long fails and its pods go.
    c.apply(
        r#"
apiVersion: batch/v1
kind: Job
metadata: {name: slow, namespace: jobs}
spec:
  activeDeadlineSeconds: 2
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: busybox}]
"#,
    );
    c.ok(&[
        "wait",
        "--for=condition=failed",
        "job/slow",
        "-n",
        "jobs",
        "--timeout=90s",
    ]);
    let reason = c.ok(&[
        "get",
        "job",
        "slow",
        "-n",
        "jobs",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Failed\")].reason}",
    ]);
    assert_eq!(reason, "DeadlineExceeded");
    c.wait_for("the slow job's pods deleted", || {
        job_pods(&c, "slow").is_empty()
    });
}

fn node(c: &Cluster, name: &str, labels: &str, taint: Option<&str>) {
    let taints = taint
        .map(|t| format!("  taints: [{t}]\n"))
        .unwrap_or_default();
    c.apply(&format!(
        "apiVersion: v1\nkind: Node\nmetadata: {{name: {name}, labels: {{{labels}}}}}\nspec:\n{taints}"
    ));
}

/// node name -> daemon pod names, from the pods' node affinity.
fn daemon_pods(c: &Cluster) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = pods(c, "ds", "app=agent")
        .iter()
        .map(|p| {
            let node = p["spec"]["affinity"]["nodeAffinity"]
                ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]
                ["matchFields"][0]["values"][0]
                .as_str()
                .unwrap_or("")
                .to_string();
            (node, p["metadata"]["name"].as_str().unwrap().to_string())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn daemon_set_runs_a_pod_per_eligible_node() {
    let c = Cluster::start(&["--controllers=daemonset-controller"]);
    c.ok(&["create", "namespace", "ds"]);
    node(&c, "n1", "disk: ssd", None);
    node(
        &c,
        "n2",
        "disk: ssd",
        Some("{key: dedicated, value: db, effect: NoSchedule}"),
    );
    node(&c, "n3", "disk: hdd", None);
    // not-ready is tolerated by every daemon pod, as upstream adds that toleration.
    node(
        &c,
        "n4",
        "disk: ssd",
        Some("{key: node.kubernetes.io/not-ready, effect: NoExecute}"),
    );
    c.apply(
        r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, namespace: ds}
spec:
  selector: {matchLabels: {app: agent}}
  updateStrategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: 1}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      nodeSelector: {disk: ssd}
      containers: [{name: c, image: agent:1}]
"#,
    );
    c.wait_for("a pod on n1 and n4 only", || {
        daemon_pods(&c)
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            == ["n1", "n4"]
    });
    c.wait_for("status desired 2", || {
        c.ok(&["get", "ds", "agent", "-n", "ds", "-o", "jsonpath={.status.desiredNumberScheduled}/{.status.currentNumberScheduled}/{.status.numberReady}"]) == "2/2/0"
    });
    // A new eligible node gets its pod; a node that stops matching loses it.
    node(&c, "n5", "disk: ssd", None);
    c.wait_for("a pod on n5", || {
        daemon_pods(&c).iter().any(|(n, _)| n == "n5")
    });
    c.ok(&["label", "node", "n4", "disk=hdd", "--overwrite"]);
    c.wait_for("no pod on n4", || {
        daemon_pods(&c)
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            == ["n1", "n5"]
    });
    for (i, (_, p)) in daemon_pods(&c).iter().enumerate() {
        set_pod_ready(&c, "ds", p, &format!("10.3.0.{}", i + 1), true);
    }
    c.wait_for("2 ready", || {
        c.ok(&["get", "ds", "agent", "-n", "ds", "-o", "jsonpath={.status.numberReady}/{.status.numberAvailable}/{.status.updatedNumberScheduled}"]) == "2/2/2"
    });
    // A rolling update replaces pods one node at a time (maxUnavailable 1): never two nodes
    // without an available pod at once.
    let old = daemon_pods(&c);
    c.ok(&["set", "image", "ds/agent", "-n", "ds", "c=agent:2"]);
    let mut ip = 0;
    c.wait_for("every pod replaced", || {
        // One snapshot: which pods exist and which are ready.
        let snap = pods(&c, "ds", "app=agent");
        let ready = |p: &serde_json::Value| {
            p["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|x| x["type"] == "Ready" && x["status"] == "True")
            })
        };
        let available = snap.iter().filter(|p| ready(p)).count();
        assert!(
            available >= 1,
            "two nodes without an available pod at once: {snap:#?}"
        );
        // Play the kubelet: new pods start.
        for p in snap.iter().filter(|p| !ready(p)) {
            ip += 1;
            set_pod_ready(
                &c,
                "ds",
                p["metadata"]["name"].as_str().unwrap(),
                &format!("10.3.1.{ip}"),
                true,
            );
        }
        let now = daemon_pods(&c);
        available == 2 && now.len() == 2 && !now.iter().any(|x| old.contains(x))
    });
    let image = c.ok(&[
        "get",
        "pods",
        "-n",
        "ds",
        "-l",
        "app=agent",
        "-o",
        "jsonpath={.items[*].spec.containers[0].image}",
    ]);
    assert!(!image.contains("agent:1"), "{image}");
    c.ok(&["rollout", "status", "ds/agent", "-n", "ds", "--timeout=50s"]);
}

#[test]
fn indexed_job_completes_every_index() {
    let c = Cluster::start(&["--controllers=job-controller"]);
    c.ok(&["create", "namespace", "jobs"]);
    c.apply(
        r#"
apiVersion: batch/v1
kind: Job
metadata: {name: shard, namespace: jobs}
spec:
  completions: 3
  parallelism: 3
  completionMode: Indexed
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: busybox}]
"#,
    );
    let index = |p: &serde_json::Value| {
        p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    c.wait_for("a pod per index", || {
        let mut ix: Vec<String> = job_pods(&c, "shard").iter().map(index).collect();
        ix.sort();
        ix == ["0", "1", "2"]
    });
    for p in job_pods(&c, "shard") {
        let i = index(&p);
        assert_eq!(p["spec"]["hostname"], format!("shard-{i}"));
        assert_eq!(
            p["spec"]["containers"][0]["env"][0]["name"],
            "JOB_COMPLETION_INDEX"
        );
    }
    let by_index = |i: &str| {
        job_pods(&c, "shard")
            .into_iter()
            .find(|p| index(p) == i && p["status"]["phase"] == "Pending")
            .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
    };
    finish(&c, &by_index("1").unwrap(), "Succeeded");
    c.wait_for("completedIndexes 1", || {
        c.ok(&[
            "get",
            "job",
            "shard",
            "-n",
            "jobs",
            "-o",
            "jsonpath={.status.completedIndexes}",
        ]) == "1"
    });
    // A failed index is retried with a new pod of the same index.
    finish(&c, &by_index("0").unwrap(), "Failed");
    let retry = c.wait_value("a new pod for index 0", || by_index("0"));
    finish(&c, &retry, "Succeeded");
    finish(&c, &by_index("2").unwrap(), "Succeeded");
    c.ok(&[
        "wait",
        "--for=condition=complete",
        "job/shard",
        "-n",
        "jobs",
        "--timeout=90s",
    ]);
    let s = c.ok(&[
        "get",
        "job",
        "shard",
        "-n",
        "jobs",
        "-o",
        "jsonpath={.status.completedIndexes}/{.status.succeeded}/{.status.failed}",
    ]);
    assert_eq!(s, "0-2/3/1");
}

#[test]
fn daemon_set_surge_update_keeps_every_node_served() {
    let c = Cluster::start(&["--controllers=daemonset-controller"]);
    c.ok(&["create", "namespace", "ds"]);
    node(&c, "n1", "disk: ssd", None);
    node(&c, "n2", "disk: ssd", None);
    c.apply(
        r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, namespace: ds}
spec:
  selector: {matchLabels: {app: agent}}
  updateStrategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers: [{name: c, image: agent:1}]
"#,
    );
    c.wait_for("a pod per node", || daemon_pods(&c).len() == 2);
    for (i, (_, p)) in daemon_pods(&c).iter().enumerate() {
        set_pod_ready(&c, "ds", p, &format!("10.4.0.{}", i + 1), true);
    }
    c.ok(&["rollout", "status", "ds/agent", "-n", "ds", "--timeout=60s"]);
    let old = daemon_pods(&c);
    c.ok(&["set", "image", "ds/agent", "-n", "ds", "c=agent:2"]);
    let mut ip = 0;
    let mut most = 0;
    c.wait_for("every pod replaced", || {
        let snap = pods(&c, "ds", "app=agent");
        let ready = |p: &serde_json::Value| {
            p["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|x| x["type"] == "Ready" && x["status"] == "True")
            })
        };
        // Both nodes always have an available pod; at most one extra pod (maxSurge 1).
        assert!(snap.iter().filter(|p| ready(p)).count() >= 2, "{snap:#?}");
        assert!(snap.len() <= 3, "more than maxSurge extra pods: {snap:#?}");
        most = most.max(snap.len());
        for p in snap.iter().filter(|p| !ready(p)) {
            ip += 1;
            let name = p["metadata"]["name"].as_str().unwrap();
            set_pod_ready(&c, "ds", name, &format!("10.4.1.{ip}"), true);
        }
        let now = daemon_pods(&c);
        now.len() == 2 && !now.iter().any(|x| old.contains(x))
    });
    assert_eq!(most, 3, "the new pod started beside the old one");
    c.ok(&["rollout", "status", "ds/agent", "-n", "ds", "--timeout=60s"]);
}

#[test]
fn finished_job_with_a_ttl_is_deleted() {
    let c = Cluster::start(&["--controllers=job-controller,ttl-after-finished-controller"]);
    c.ok(&["create", "namespace", "jobs"]);
    c.apply(
        r#"
apiVersion: batch/v1
kind: Job
metadata: {name: brief, namespace: jobs}
spec:
  ttlSecondsAfterFinished: 1
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: busybox}]
"#,
    );
    let p = c.wait_value("the pod", || job_pods(&c, "brief").first().cloned());
    finish(&c, p["metadata"]["name"].as_str().unwrap(), "Succeeded");
    c.wait_for("the finished job deleted", || {
        let o = c.run(&["get", "job", "brief", "-n", "jobs"]);
        !o.ok && o.stderr.contains("not found")
    });
}
