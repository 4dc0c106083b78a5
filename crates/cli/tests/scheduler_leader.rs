//! Three `kybern scheduler` replicas elect one leader on the Lease kube-system/kube-scheduler
//! (real binary, real kubectl, hollow nodes). Killing the leader with SIGKILL hands the lease to
//! another replica after the lease expires, and new pods get scheduled; SIGTERM on the new leader
//! releases the lease and the third replica takes over and schedules; SIGSTOP on that one past
//! its lease lets a fourth take over, and the stopped one, resumed, exits 1. Every pod is bound exactly
//! once: one `Scheduled` event per pod. Takeover times are printed, never asserted; every wait is
//! bounded.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use testkit::kubeproc::KubeCluster;
use testkit::procs::{free_port, run_bounded};

const WAIT: u64 = 90;
const ELECTION: [&str; 3] = [
    "--leader-elect-lease-duration=4s",
    "--leader-elect-renew-deadline=3s",
    "--leader-elect-retry-period=1s",
];

fn holder(c: &KubeCluster) -> Option<String> {
    let out = c.kubectl_out(&[
        "get",
        "lease",
        "-n",
        "kube-system",
        "kube-scheduler",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    let h = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !h.is_empty()).then_some(h)
}

/// The identity replica `name` announces in its log.
fn identity(c: &KubeCluster, name: &str) -> Option<String> {
    let p = c.procs.iter().find(|p| p.name == name)?;
    let log = std::fs::read_to_string(&p.log).ok()?;
    let marker = "kube-system/kube-scheduler as ";
    let at = log.find(marker)?;
    Some(
        log[at + marker.len()..]
            .split_whitespace()
            .next()?
            .to_string(),
    )
}

/// The replica (by process name, among `alive`) that holds the lease, once one does and it is
/// not `not`.
fn leader(c: &KubeCluster, alive: &[String], not: Option<&str>) -> String {
    c.wait_for("a lease holder that is a live replica", WAIT, || {
        let h = holder(c)?;
        if Some(h.as_str()) == not {
            return None;
        }
        alive
            .iter()
            .find(|n| identity(c, n).as_deref() == Some(h.as_str()))
            .cloned()
    })
}

fn create_pods(c: &KubeCluster, prefix: &str, n: usize) -> Vec<String> {
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    let yaml: String = names
        .iter()
        .map(|name| {
            format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  containers:\n  \
                 - name: app\n    image: registry.k8s.io/pause:3.10\n"
            )
        })
        .collect();
    c.apply(&yaml);
    names
}

/// The `Scheduled` events per pod name.
fn scheduled_events(c: &KubeCluster) -> HashMap<String, usize> {
    let ev = c.get_json(&["get", "events", "--field-selector", "reason=Scheduled"]);
    let mut per = HashMap::new();
    for e in ev["items"].as_array().into_iter().flatten() {
        if let Some(n) = e["involvedObject"]["name"].as_str() {
            *per.entry(n.to_string()).or_insert(0) += e["count"].as_u64().unwrap_or(1) as usize;
        }
    }
    per
}

/// Waits until every pod in `names` is bound and has its Scheduled event.
fn wait_scheduled(c: &KubeCluster, names: &[String]) {
    c.wait_for(
        &format!("pods {names:?} bound with a Scheduled event"),
        WAIT,
        || {
            let pods = c.get_json(&["get", "pods"]);
            let bound: Vec<&str> = pods["items"]
                .as_array()?
                .iter()
                .filter(|p| {
                    p["spec"]["nodeName"]
                        .as_str()
                        .is_some_and(|n| !n.is_empty())
                })
                .filter_map(|p| p["metadata"]["name"].as_str())
                .collect();
            let events = scheduled_events(c);
            names
                .iter()
                .all(|n| bound.contains(&n.as_str()) && events.contains_key(n))
                .then_some(())
        },
    );
}

/// GET http://127.0.0.1:PORT/PATH: the whole response (status line, headers, body).
fn http_get(port: u16, path: &str) -> String {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn proc_index(c: &KubeCluster, name: &str) -> usize {
    c.procs.iter().position(|p| p.name == name).unwrap()
}

#[test]
fn scheduler_failover_on_kill_and_on_sigterm() {
    let Some(mut c) = KubeCluster::start(Path::new(env!("CARGO_BIN_EXE_kybern"))) else {
        eprintln!("skipped: no kubectl");
        return;
    };
    c.spawn_client(
        "hollow",
        &["hollow-nodes", "--count", "3", "--name-prefix=hollow-"],
    );
    let mut alive = vec![];
    let mut ports = HashMap::new();
    for i in 0..3 {
        let name = format!("scheduler-{i}");
        let port = free_port();
        let port_flag = format!("--secure-port={port}");
        let mut args = vec!["scheduler", "--bind-address=127.0.0.1", &port_flag];
        args.extend(ELECTION);
        c.spawn_client(&name, &args);
        ports.insert(name.clone(), port);
        alive.push(name);
    }
    c.wait_for("3 Ready hollow nodes", WAIT, || {
        let nodes = c.get_json(&["get", "nodes"]);
        let ready = nodes["items"]
            .as_array()?
            .iter()
            .filter(|n| {
                n["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            })
            .count();
        (ready == 3).then_some(())
    });

    // One leader schedules.
    let first = leader(&c, &alive, None);
    let first_id = identity(&c, &first).unwrap();
    println!("leader: {first} ({first_id})");
    // Every replica is healthy and ready (a standby's informers are warm); each reports whether
    // it leads.
    for name in &alive {
        let port = ports[name];
        let want = if *name == first { 1 } else { 0 };
        c.wait_for(
            &format!("{name}'s /healthz, /readyz and leader gauge"),
            WAIT,
            || {
                let health = http_get(port, "/healthz?verbose");
                let ready = http_get(port, "/readyz");
                let metrics = http_get(port, "/metrics");
                (health.starts_with("HTTP/1.1 200")
                    && health.contains("[+]leaderElection ok")
                    && ready.starts_with("HTTP/1.1 200")
                    && metrics.contains(&format!(
                        "leader_election_master_status{{name=\"kube-scheduler\"}} {want}"
                    )))
                .then_some(())
            },
        );
    }
    let mut all = create_pods(&c, "before", 6);
    wait_scheduled(&c, &all);

    // kill -9 the leader: the lease is not released, another replica takes it once it expires.
    let killed_at = Instant::now();
    let i = proc_index(&c, &first);
    c.procs[i].child.kill().unwrap();
    c.procs[i].child.wait().unwrap();
    alive.retain(|n| *n != first);
    let second = leader(&c, &alive, Some(&first_id));
    let second_id = identity(&c, &second).unwrap();
    println!(
        "after SIGKILL of {first}: {second} ({second_id}) holds the lease after {:?}",
        killed_at.elapsed()
    );
    let after_kill = create_pods(&c, "afterkill", 6);
    wait_scheduled(&c, &after_kill);
    println!(
        "pods created after the kill scheduled {:?} after the kill",
        killed_at.elapsed()
    );
    all.extend(after_kill);

    // SIGTERM the new leader: it releases the lease and exits 0; the third replica takes over.
    let termed_at = Instant::now();
    let i = proc_index(&c, &second);
    c.procs[i].stop(Duration::from_secs(30));
    let status = c.procs[i].child.try_wait().unwrap();
    assert!(
        status.is_some_and(|s| s.success()),
        "{second} did not exit 0 on SIGTERM: {status:?}\n{}",
        c.procs[i].log_tail(30)
    );
    assert!(
        c.procs[i]
            .log_tail(60)
            .contains("released lease kube-system/kube-scheduler"),
        "{second} did not say it released the lease:\n{}",
        c.procs[i].log_tail(60)
    );
    alive.retain(|n| *n != second);
    let third = leader(&c, &alive, Some(&second_id));
    println!(
        "after SIGTERM of {second}: {third} holds the lease after {:?}",
        termed_at.elapsed()
    );
    let after_term = create_pods(&c, "afterterm", 6);
    wait_scheduled(&c, &after_term);
    println!(
        "pods created after the SIGTERM scheduled {:?} after it",
        termed_at.elapsed()
    );
    all.extend(after_term);

    // SIGSTOP the third leader past its lease: a fresh replica takes over; when the stopped one
    // resumes it finds its lease lost, stops acting and exits 1 (to be restarted as a candidate).
    let third_id = identity(&c, &third).unwrap();
    c.spawn_client(
        "scheduler-3",
        &[&["scheduler", "--secure-port=0"][..], &ELECTION[..]].concat(),
    );
    alive.push("scheduler-3".into());
    let i = proc_index(&c, &third);
    let pid = c.procs[i].child.id().to_string();
    let signal = |sig: &str| {
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid}");
    };
    let stopped_at = Instant::now();
    signal("-STOP");
    alive.retain(|n| *n != third);
    let fourth = leader(&c, &alive, Some(&third_id));
    println!(
        "after SIGSTOP of {third}: {fourth} holds the lease after {:?}",
        stopped_at.elapsed()
    );
    let after_stop = create_pods(&c, "afterstop", 6);
    wait_scheduled(&c, &after_stop);
    all.extend(after_stop);
    signal("-CONT");
    let deadline = Instant::now() + Duration::from_secs(WAIT);
    let code = loop {
        if let Some(code) = c.procs[i].child.try_wait().ok().flatten() {
            break code;
        }
        assert!(
            Instant::now() < deadline,
            "{third} still runs {WAIT}s after SIGCONT\n{}",
            c.procs[i].log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        code.code(),
        Some(1),
        "{third} exit status after losing its lease\n{}",
        c.procs[i].log_tail(30)
    );
    assert!(
        c.procs[i].log_tail(60).contains("leader election lost"),
        "{third} says it lost the lease:\n{}",
        c.procs[i].log_tail(60)
    );

    // Every pod was bound once: exactly one Scheduled event each, and no replica but the leader of
    // its time scheduled anything after the handovers.
    let events = scheduled_events(&c);
    for name in &all {
        assert_eq!(
            events.get(name).copied().unwrap_or(0),
            1,
            "pod {name} has {:?} Scheduled events\n{}",
            events.get(name),
            c.logs()
        );
    }
    let conflicts: usize = c
        .procs
        .iter()
        .filter(|p| p.name.starts_with("scheduler-"))
        .map(|p| {
            std::fs::read_to_string(&p.log)
                .unwrap_or_default()
                .matches("not bound:")
                .count()
        })
        .sum();
    println!("binding conflicts logged by all replicas: {conflicts}");
    let transitions = c.kubectl(&[
        "get",
        "lease",
        "-n",
        "kube-system",
        "kube-scheduler",
        "-o",
        "jsonpath={.spec.leaseTransitions}",
    ]);
    println!("lease transitions: {transitions}");
    assert!(
        transitions.trim().parse::<u32>().unwrap_or(0) >= 3,
        "leaseTransitions {transitions:?} after three handovers"
    );
}

#[test]
fn inconsistent_election_flags_exit_2() {
    for bad in [
        &[
            "--leader-elect-lease-duration=3s",
            "--leader-elect-renew-deadline=3s",
        ][..],
        &[
            "--leader-elect-renew-deadline=2s",
            "--leader-elect-retry-period=2s",
        ][..],
        &["--leader-elect-resource-lock=endpoints"][..],
    ] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kybern"));
        cmd.arg("scheduler").args(bad);
        let out = run_bounded(cmd, 30);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {err}");
        assert!(err.contains("leader-elect"), "{bad:?} says why: {err}");
    }
}
