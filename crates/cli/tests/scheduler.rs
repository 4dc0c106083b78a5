//! `kybern scheduler` against a `kybern apiserver` process with `kybern hollow-nodes`, driven by
//! the real kubectl: pods land on nodes and run; node selectors, resources, taints, host ports and
//! required anti-affinity are respected; a pod that fits nowhere says why (PodScheduled=False and
//! a FailedScheduling event) and is scheduled once a node it fits on appears; pods of one Service
//! spread evenly. Every wait is bounded; no timing is asserted.

use std::io::{Read, Write};
use std::path::Path;

use serde_json::Value;
use testkit::kubeproc::KubeCluster;
use testkit::procs::free_port;

const WAIT: u64 = 90;

/// An apiserver, the scheduler (its /metrics on the returned port) and no nodes yet.
fn cluster() -> Option<(KubeCluster, u16)> {
    let mut c = KubeCluster::start(Path::new(env!("CARGO_BIN_EXE_kybern")))?;
    let port = free_port();
    c.spawn_client(
        "scheduler",
        &[
            "scheduler",
            // One replica: no election (tests/scheduler_leader.rs covers several replicas).
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            &format!("--secure-port={port}"),
        ],
    );
    Some((c, port))
}

/// `kybern hollow-nodes` with these flags, waiting until its nodes are Ready.
fn hollow(c: &mut KubeCluster, name: &str, prefix: &str, count: usize, flags: &[&str]) {
    let count_s = count.to_string();
    let prefix_flag = format!("--name-prefix={prefix}");
    let mut args = vec!["hollow-nodes", "--count", &count_s, prefix_flag.as_str()];
    args.extend(flags);
    c.spawn_client(name, &args);
    c.wait_for(
        &format!("{count} Ready nodes named {prefix}*"),
        WAIT,
        || {
            let nodes = c.get_json(&["get", "nodes"]);
            let ready = nodes["items"]
                .as_array()?
                .iter()
                .filter(|n| {
                    n["metadata"]["name"]
                        .as_str()
                        .is_some_and(|s| s.starts_with(prefix))
                })
                .filter(|n| {
                    n["status"]["conditions"].as_array().is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
                })
                .count();
            (ready == count).then_some(())
        },
    );
}

fn pod_yaml(name: &str, extra_spec: &str, labels: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\nspec:\n{extra_spec}  \
         containers:\n  - name: app\n    image: registry.k8s.io/pause:3.10\n"
    )
}

fn pods(c: &KubeCluster) -> Vec<Value> {
    c.get_json(&["get", "pods"])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn node_of(p: &Value) -> Option<&str> {
    p["spec"]["nodeName"].as_str().filter(|s| !s.is_empty())
}

fn is_running(p: &Value) -> bool {
    p["status"]["phase"] == "Running"
}

/// Waits until these pods are Running; returns name -> node.
fn wait_running(c: &KubeCluster, names: &[&str]) -> std::collections::HashMap<String, String> {
    c.wait_for(&format!("pods {names:?} Running"), WAIT, || {
        let all = pods(c);
        let mut m = std::collections::HashMap::new();
        for n in names {
            let p = all.iter().find(|p| p["metadata"]["name"] == *n)?;
            if !is_running(p) {
                return None;
            }
            m.insert(n.to_string(), node_of(p)?.to_string());
        }
        Some(m)
    })
}

/// Waits until the pod has PodScheduled=False/Unschedulable; returns the condition's message.
fn wait_unschedulable(c: &KubeCluster, name: &str) -> String {
    c.wait_for(&format!("{name} PodScheduled=False"), WAIT, || {
        let p = c.get_json(&["get", "pod", name]);
        let cond = p["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "PodScheduled")?
            .clone();
        (cond["status"] == "False" && cond["reason"] == "Unschedulable")
            .then(|| cond["message"].as_str().unwrap_or("").to_string())
    })
}

fn http_get(port: u16, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn pods_run_on_hollow_nodes_and_spread_evenly() {
    let Some((mut c, port)) = cluster() else {
        return;
    };
    hollow(&mut c, "hollow", "node-", 3, &[]);
    // A Service selecting app=web: the default topology spreading counts its pods.
    c.apply(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector: {app: web}\n  \
         ports:\n  - port: 80\n",
    );
    let names: Vec<String> = (0..6).map(|i| format!("web-{i}")).collect();
    let yaml: Vec<String> = names.iter().map(|n| pod_yaml(n, "", "app: web")).collect();
    c.apply(&yaml.join("---\n"));
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let placed = wait_running(&c, &refs);
    let mut per_node = std::collections::HashMap::<&str, usize>::new();
    for n in placed.values() {
        *per_node.entry(n.as_str()).or_default() += 1;
    }
    assert_eq!(
        per_node.len(),
        3,
        "6 pods of one Service on 3 nodes spread evenly: {placed:?}"
    );
    assert!(per_node.values().all(|n| *n == 2), "{placed:?}");
    // kubectl get pods -o wide shows the node and Running.
    let wide = c.kubectl(&["get", "pods", "-o", "wide"]);
    let line = wide
        .lines()
        .find(|l| l.starts_with("web-0 "))
        .expect("web-0 listed");
    assert!(
        line.contains("Running") && line.contains(&placed["web-0"]),
        "{wide}"
    );
    // The Scheduled event.
    let events = c.get_json(&["get", "events", "--field-selector", "reason=Scheduled"]);
    let msgs: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect();
    let want = format!("Successfully assigned default/web-0 to {}", placed["web-0"]);
    c.wait_for("the Scheduled event of web-0", WAIT, || {
        let events = c.get_json(&["get", "events", "--field-selector", "reason=Scheduled"]);
        events["items"]
            .as_array()?
            .iter()
            .any(|e| e["message"].as_str() == Some(want.as_str()))
            .then_some(())
    });
    let _ = msgs;
    // Health and metrics.
    assert!(http_get(port, "/healthz").contains("200 OK"));
    assert!(http_get(port, "/readyz").contains("200 OK"));
    let m = http_get(port, "/metrics");
    assert!(
        m.contains("scheduler_schedule_attempts_total{result=\"scheduled\",profile=\"default-scheduler\"} 6"),
        "{m}"
    );
}

#[test]
fn selectors_taints_and_host_ports() {
    let Some((mut c, _)) = cluster() else { return };
    hollow(&mut c, "plain", "plain-", 2, &[]);
    hollow(&mut c, "ssd", "ssd-", 1, &["--label", "disk=ssd"]);
    hollow(
        &mut c,
        "tainted",
        "infra-",
        1,
        &["--taint", "dedicated=infra:NoSchedule"],
    );
    // nodeSelector.
    c.apply(&pod_yaml("wants-ssd", "  nodeSelector: {disk: ssd}\n", ""));
    // A toleration, and required node affinity on the hostname of the tainted node.
    c.apply(&pod_yaml(
        "tolerant",
        "  tolerations:\n  - {key: dedicated, operator: Equal, value: infra, effect: NoSchedule}\n  \
         affinity:\n    nodeAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n        \
         nodeSelectorTerms:\n        - matchExpressions:\n          - {key: kubernetes.io/hostname, operator: In, values: [infra-0]}\n",
        "",
    ));
    let placed = wait_running(&c, &["wants-ssd", "tolerant"]);
    assert_eq!(placed["wants-ssd"], "ssd-0");
    assert_eq!(placed["tolerant"], "infra-0");
    // Host port 8080 on every node: three fit (the tainted one is not tolerated), a fourth not.
    let port_spec = "  containers:\n  - name: app\n    image: registry.k8s.io/pause:3.10\n    ports:\n    - {containerPort: 80, hostPort: 8080}\n";
    let yaml: Vec<String> = (0..4)
        .map(|i| {
            format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: port-{i}\nspec:\n{port_spec}")
        })
        .collect();
    c.apply(&yaml.join("---\n"));
    let msg = c.wait_for("3 port pods Running and one Unschedulable", WAIT, || {
        let all = pods(&c);
        let port_pods: Vec<&Value> = all
            .iter()
            .filter(|p| {
                p["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("port-"))
            })
            .collect();
        let running: Vec<&str> = port_pods
            .iter()
            .filter(|p| is_running(p))
            .filter_map(|p| node_of(p))
            .collect();
        let pending: Vec<&&Value> = port_pods.iter().filter(|p| node_of(p).is_none()).collect();
        if running.len() != 3 || pending.len() != 1 {
            return None;
        }
        let mut nodes = running.clone();
        nodes.sort();
        nodes.dedup();
        assert_eq!(nodes.len(), 3, "host port pods share a node: {running:?}");
        assert!(!running.contains(&"infra-0"), "{running:?}");
        let cond = pending[0]["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "PodScheduled")?
            .clone();
        cond["message"].as_str().map(String::from)
    });
    assert!(msg.starts_with("0/4 nodes are available: "), "{msg}");
    assert!(
        msg.contains("3 node(s) didn't have free ports for the requested pod ports"),
        "{msg}"
    );
    assert!(
        msg.contains("1 node(s) had untolerated taint {dedicated: infra}"),
        "{msg}"
    );
}

#[test]
fn too_big_pod_waits_for_a_bigger_node() {
    let Some((mut c, _)) = cluster() else { return };
    hollow(&mut c, "small", "small-", 2, &["--cpu", "2"]);
    c.apply(&pod_yaml("big", "", "").replace(
        "    image: registry.k8s.io/pause:3.10\n",
        "    image: registry.k8s.io/pause:3.10\n    resources:\n      requests: {cpu: \"3\"}\n",
    ));
    let msg = wait_unschedulable(&c, "big");
    assert_eq!(msg, "0/2 nodes are available: 2 Insufficient cpu.");
    let ev = c.wait_for("a FailedScheduling event", WAIT, || {
        let events = c.get_json(&[
            "get",
            "events",
            "--field-selector",
            "reason=FailedScheduling,involvedObject.name=big",
        ]);
        events["items"].as_array()?.first().cloned()
    });
    assert_eq!(ev["type"], "Warning");
    assert!(
        ev["message"].as_str().unwrap().contains("Insufficient cpu"),
        "{ev}"
    );
    // kubectl describe shows it too.
    let d = c.kubectl(&["describe", "pod", "big"]);
    assert!(d.contains("FailedScheduling"), "{d}");
    // A node with room appears: the pod is retried and runs there.
    hollow(&mut c, "large", "large-", 1, &["--cpu", "8"]);
    let placed = wait_running(&c, &["big"]);
    assert_eq!(placed["big"], "large-0");
}

#[test]
fn required_anti_affinity_puts_replicas_on_distinct_nodes() {
    let Some((mut c, _)) = cluster() else { return };
    hollow(&mut c, "hollow", "node-", 3, &[]);
    let anti = "  affinity:\n    podAntiAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n      \
                - labelSelector: {matchLabels: {app: db}}\n        topologyKey: kubernetes.io/hostname\n";
    let yaml: Vec<String> = (0..3)
        .map(|i| pod_yaml(&format!("db-{i}"), anti, "app: db"))
        .collect();
    c.apply(&yaml.join("---\n"));
    let placed = wait_running(&c, &["db-0", "db-1", "db-2"]);
    let mut nodes: Vec<&String> = placed.values().collect();
    nodes.sort();
    nodes.dedup();
    assert_eq!(nodes.len(), 3, "{placed:?}");
    c.apply(&pod_yaml("db-3", anti, "app: db"));
    let msg = wait_unschedulable(&c, "db-3");
    assert!(
        msg.starts_with("0/3 nodes are available: 3 node(s) didn't"),
        "{msg}"
    );
    assert!(msg.contains("anti-affinity"), "{msg}");
    // Deleting a replica frees its node for the pending one.
    c.kubectl(&["delete", "pod", "db-0", "--wait=true", "--timeout=60s"]);
    let placed3 = wait_running(&c, &["db-3"]);
    assert_eq!(placed3["db-3"], placed["db-0"]);
}
