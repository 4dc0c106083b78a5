//! Partition tests: members in their own network namespaces (testkit's `NetLab`), links between
//! them cut with nftables while clients keep writing through every member. The majority side must
//! elect a leader and keep serving; the minority side must acknowledge no write and answer no
//! linearizable read; after the links heal the history must be linearizable and every member's
//! watch must replay the same events. Needs root, `ip` and `nft` (scripts/deps.sh installs them).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use testkit::cluster::Cluster;
use testkit::netlab::NetLab;
use testkit::procs::{etcdctl, Kind, Output};
use testkit::workload::{finish, start_load};

fn kybern() -> Kind {
    Kind::Kybern(PathBuf::from(env!("CARGO_BIN_EXE_kybern")))
}

fn ctl(url: &str, args: &[&str]) -> Output {
    let mut a = vec!["--command-timeout=3s"];
    a.extend_from_slice(args);
    etcdctl(url, &a, None, Duration::from_secs(20), None).unwrap()
}

/// The member id and the leader id a member reports (`endpoint status`), if it answers.
fn status(url: &str) -> Option<(u64, u64)> {
    let out = ctl(url, &["endpoint", "status", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
    let h = &v[0]["Status"];
    Some((h["header"]["member_id"].as_u64()?, h["leader"].as_u64()?))
}

/// Waits until every member of `side` names the same leader, which is one of them and not `old`.
fn new_leader_on(c: &Cluster, side: &[usize], old: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let seen: Vec<Option<(u64, u64)>> = side
            .iter()
            .map(|&i| status(&c.members[i].client_url))
            .collect();
        let ids: Vec<u64> = seen.iter().flatten().map(|s| s.0).collect();
        if let Some(Some((_, l))) = seen.first() {
            let agreed = seen.iter().all(|s| matches!(s, Some((_, x)) if x == l));
            if agreed && *l != old && ids.contains(l) {
                return *l;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the majority {side:?} never agreed on a new leader: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The minority side acknowledges no write and no linearizable read; the majority does both. The
/// key is under `lin/` so that the watch check of `finish` sees its revision.
fn check_sides(c: &Cluster, minority: &[usize], majority: &[usize], key: &str) {
    let m = &c.members[majority[0]].client_url;
    let put = ctl(m, &["put", key, "majority"]);
    assert_eq!(
        put.code, 0,
        "a put through the majority failed: {}",
        put.stderr
    );
    let got = ctl(m, &["get", key, "--print-value-only"]);
    assert_eq!(got.stdout.trim(), "majority", "{}", got.stderr);
    for &i in minority {
        let url = &c.members[i].client_url;
        let put = ctl(url, &["put", key, "minority"]);
        assert_ne!(put.code, 0, "member {i} in the minority acknowledged a put");
        let get = ctl(url, &["get", key]);
        assert_ne!(
            get.code, 0,
            "member {i} in the minority answered a linearizable read: {}",
            get.stdout
        );
    }
}

/// Waits until `url` serves `key` = `want` from its own state (serializable read).
fn caught_up(url: &str, key: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let got = ctl(url, &["get", key, "--print-value-only", "--consistency=s"]);
        if got.stdout.trim() == want {
            return;
        }
        assert!(Instant::now() < deadline, "{url} never caught up: {got:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Not skipped when the machine cannot: CI runs as root with the tools scripts/deps.sh installs.
fn lab(n: usize) -> NetLab {
    NetLab::new(n).unwrap_or_else(|e| panic!("partition tests cannot run here: {e:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_loses_its_role_and_the_majority_carries_on() {
    let lab = lab(3);
    let c = Cluster::start_in_lab(kybern(), &lab, 3, &[]).await.unwrap();
    let load = start_load(&c);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let leader = c.leader().await.unwrap();
    let (old, _) = status(&c.members[leader].client_url).unwrap();
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    lab.partition(&[&[leader], &others]).unwrap();
    let new = new_leader_on(&c, &others, old);
    eprintln!("leader {old:x} isolated; the majority elected {new:x}");
    check_sides(&c, &[leader], &others, "lin/partition-isolated");
    lab.heal().unwrap();
    caught_up(
        &c.members[leader].client_url,
        "lin/partition-isolated",
        "majority",
    );
    finish(&c, load).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_members_split_two_three_with_the_leader_in_the_minority() {
    let lab = lab(5);
    let c = Cluster::start_in_lab(kybern(), &lab, 5, &[]).await.unwrap();
    let load = start_load(&c);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let leader = c.leader().await.unwrap();
    let (old, _) = status(&c.members[leader].client_url).unwrap();
    let minority = [leader, (leader + 1) % 5];
    let majority: Vec<usize> = (0..5).filter(|i| !minority.contains(i)).collect();
    lab.partition(&[&minority, &majority]).unwrap();
    let new = new_leader_on(&c, &majority, old);
    eprintln!("split {minority:?} | {majority:?}: the majority elected {new:x}");
    check_sides(&c, &minority, &majority, "lin/partition-split");
    lab.heal().unwrap();
    for &i in &minority {
        caught_up(&c.members[i].client_url, "lin/partition-split", "majority");
    }
    finish(&c, load).await;
}
