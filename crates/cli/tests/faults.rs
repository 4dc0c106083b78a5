//! Fault tests: clients drive a three-member kybern cluster while its leader is killed (kill -9)
//! and restarted, paused (SIGSTOP) past the election timeout and resumed, then a follower is killed
//! and restarted; and across a restart of every member at once and membership changes. Every operation is
//! recorded with its outcome (ok, or unknown on an error or timeout); the history must be
//! linearizable, and the watch streams of every member must be the same, in order, without gaps
//! or duplicates. The schedule and the clients' choices come from a fixed seed; a longer
//! randomized run is `KYBERN_FAULT_SEED=<n> KYBERN_FAULT_OPS=<n> cargo test -p cli --test faults`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use testkit::cluster::Cluster;
use testkit::procs::{etcdctl, Kind};
use testkit::workload::{finish, start_load};

fn kybern() -> Kind {
    Kind::Kybern(PathBuf::from(env!("CARGO_BIN_EXE_kybern")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_under_leader_kill_and_pause_are_linearizable() {
    let mut c = Cluster::start(kybern(), 3).await.unwrap();
    let load = start_load(&c);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let leader = c.leader().await.unwrap();
    c.members[leader].kill9();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.members[leader].restart().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let leader = c.leader().await.unwrap();
    c.members[leader].signal("STOP").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    c.members[leader].signal("CONT").unwrap();
    let follower = (c.leader().await.unwrap() + 1) % 3;
    c.members[follower].kill9();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    c.members[follower].restart().await.unwrap();
    finish(&c, load).await;
}

/// Every member restarted at once (SIGTERM, then all started again), then a member added and
/// another removed, all under load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_across_a_full_restart_and_membership_changes_are_linearizable() {
    let mut c = Cluster::start(kybern(), 3).await.unwrap();
    let load = start_load(&c);
    tokio::time::sleep(Duration::from_millis(800)).await;
    for m in c.members.iter_mut() {
        m.signal("TERM").unwrap();
    }
    for m in c.members.iter_mut() {
        m.stop().await.unwrap();
    }
    for m in c.members.iter_mut() {
        m.restart().await.unwrap();
    }
    c.leader().await.unwrap();
    c.add_member("m3").await.unwrap();
    let leader = c.leader().await.unwrap();
    let victim = (0..3).find(|i| *i != leader).unwrap();
    let eps = c.endpoints().join(",");
    let st = etcdctl(
        &c.members[victim].client_url,
        &["endpoint", "status", "-w", "json"],
        None,
        Duration::from_secs(10),
        None,
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    let id = v[0]["Status"]["header"]["member_id"].as_u64().unwrap();
    let removed = etcdctl(
        &eps,
        &["member", "remove", &format!("{id:x}")],
        None,
        Duration::from_secs(30),
        None,
    )
    .unwrap();
    assert_eq!(removed.code, 0, "{}", removed.stderr);
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.members[victim].try_exit_status().is_none() {
        assert!(Instant::now() < deadline, "the removed member kept running");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    finish(&c, load).await;
}
