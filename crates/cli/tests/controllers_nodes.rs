//! The node lifecycle and taint eviction controllers of `kybern controller-manager`, seen through
//! kubectl: nodes are Node objects and Leases the test makes and renews (as a kubelet would); a
//! node whose heartbeats stop goes Ready=Unknown with the unreachable taints, its pods are marked
//! not ready and evicted after their tolerationSeconds, while a node that keeps renewing stays
//! Ready and keeps its pods. A node reporting Ready=False gets the not-ready taints.

mod ctrl;

use ctrl::Cluster;
use serde_json::json;

fn now() -> String {
    // RFC 3339 in UTC with seconds, as Kubernetes writes times.
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn make_node(c: &Cluster, name: &str) {
    c.apply(&format!(
        "apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\n"
    ));
    heartbeat(c, name, "True");
}

/// What a kubelet does every few seconds: renew the node's Lease and post Ready.
fn heartbeat(c: &Cluster, name: &str, ready: &str) {
    let t = now();
    c.apply(&format!(
        "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {{name: {name}, namespace: kube-node-lease}}\nspec:\n  holderIdentity: {name}\n  leaseDurationSeconds: 40\n  renewTime: \"{}\"\n",
        t.replace('Z', ".000000Z")
    ));
    c.patch_status(
        &["node", name],
        &json!({"status": {"conditions": [{"type": "Ready", "status": ready, "reason": "KubeletReady",
            "lastHeartbeatTime": t, "lastTransitionTime": "2025-01-01T00:00:00Z"}]}}),
    );
}

fn pod_on(c: &Cluster, name: &str, node: &str, toleration_seconds: Option<u32>) {
    let tol = match toleration_seconds {
        Some(s) => format!("  tolerations:\n  - {{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: {s}}}\n"),
        None => "  tolerations:\n  - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute}\n".into(),
    };
    c.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  nodeName: {node}\n{tol}  containers: [{{name: c, image: nginx}}]\n"
    ));
    c.patch_status(
        &["pod", name],
        &json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}),
    );
}

fn ready_status(c: &Cluster, node: &str) -> String {
    c.ok(&[
        "get",
        "node",
        node,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
    ])
}

fn taints(c: &Cluster, node: &str) -> Vec<String> {
    let n = c.json(&["node", node]).unwrap();
    let mut t: Vec<String> = n["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            format!(
                "{}:{}",
                t["key"].as_str().unwrap(),
                t["effect"].as_str().unwrap()
            )
        })
        .collect();
    t.sort();
    t
}

/// Being deleted (a pod with a node terminates gracefully and no kubelet finishes it) or gone.
fn evicted(c: &Cluster, pod: &str) -> bool {
    match c.json(&["pod", pod]) {
        None => true,
        Some(p) => !p["metadata"]["deletionTimestamp"].is_null(),
    }
}

#[test]
fn silent_node_goes_unknown_and_its_pods_are_evicted() {
    let c = Cluster::start(&["--node-monitor-grace-period=4s", "--node-monitor-period=1s"]);
    make_node(&c, "dead");
    make_node(&c, "alive");
    pod_on(&c, "short", "dead", Some(1));
    pod_on(&c, "forever", "dead", None);
    pod_on(&c, "elsewhere", "alive", Some(1));
    // "alive" keeps renewing; "dead" stops.
    c.wait_for("the silent node to go Unknown", || {
        heartbeat(&c, "alive", "True");
        ready_status(&c, "dead") == "Unknown"
    });
    assert_eq!(ready_status(&c, "alive"), "True");
    let table = c.ok(&["get", "node", "dead"]);
    assert!(table.contains("NotReady"), "{table}");
    let reason = c.ok(&[
        "get",
        "node",
        "dead",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].reason}",
    ]);
    assert_eq!(reason, "NodeStatusUnknown");
    c.wait_for("the unreachable taints", || {
        heartbeat(&c, "alive", "True");
        taints(&c, "dead")
            == [
                "node.kubernetes.io/unreachable:NoExecute",
                "node.kubernetes.io/unreachable:NoSchedule",
            ]
    });
    assert!(taints(&c, "alive").is_empty());
    // The pod tolerating 1 s is evicted; the one tolerating for ever stays, marked not ready.
    c.wait_for("the short-toleration pod evicted", || {
        heartbeat(&c, "alive", "True");
        evicted(&c, "short")
    });
    if let Some(p) = c.json(&["pod", "short"]) {
        let conds = p["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            conds.iter().any(|x| x["type"] == "DisruptionTarget" && x["reason"] == "DeletionByTaintManager"),
            "{p:#}"
        );
    }
    let ev = c.items(&[
        "events",
        "--field-selector",
        "reason=TaintManagerEviction,involvedObject.name=short",
    ]);
    assert_eq!(ev.len(), 1, "{ev:#?}");
    assert_eq!(ev[0]["message"], "Marking for deletion Pod default/short");
    let ev = c.items(&[
        "events",
        "--field-selector",
        "reason=NodeNotReady,involvedObject.name=dead",
    ]);
    assert_eq!(ev.len(), 1, "{ev:#?}");
    c.wait_for("the pod on the silent node marked not ready", || {
        c.ok(&[
            "get",
            "pod",
            "forever",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]) == "False"
    });
    heartbeat(&c, "alive", "True");
    assert!(!evicted(&c, "forever"));
    assert!(!evicted(&c, "elsewhere"));

    // The node comes back: Ready again, its taints removed.
    c.wait_for("the node back and untainted", || {
        heartbeat(&c, "dead", "True");
        heartbeat(&c, "alive", "True");
        ready_status(&c, "dead") == "True" && taints(&c, "dead").is_empty()
    });
    assert!(!evicted(&c, "forever"));
}

#[test]
fn node_reporting_not_ready_gets_not_ready_taints() {
    let c = Cluster::start(&["--controllers=node-lifecycle-controller,taint-eviction-controller"]);
    make_node(&c, "sick");
    pod_on(&c, "victim", "sick", Some(1));
    heartbeat(&c, "sick", "False");
    c.wait_for("the not-ready taints", || {
        taints(&c, "sick")
            == [
                "node.kubernetes.io/not-ready:NoExecute",
                "node.kubernetes.io/not-ready:NoSchedule",
            ]
    });
    // The pod does not tolerate not-ready at all: evicted at once.
    c.wait_for("the pod evicted", || evicted(&c, "victim"));
    c.ok(&["cordon", "sick"]);
    c.wait_for("the unschedulable taint", || {
        taints(&c, "sick").contains(&"node.kubernetes.io/unschedulable:NoSchedule".to_string())
    });
}
