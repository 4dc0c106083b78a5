//! A cluster started with one member grows with `etcdctl member add`, as kubeadm grows its stacked
//! etcd: the first member's data stays, each new member catches up and is promoted, and the
//! cluster keeps a quorum when the first member goes.

use std::path::PathBuf;
use std::time::Duration;

use testkit::cluster::Cluster;
use testkit::procs::{etcdctl, Kind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_member_cluster_grows_to_three_and_survives_its_first_member() {
    let kind = Kind::Kybern(PathBuf::from(env!("CARGO_BIN_EXE_kybern")));
    let mut c = Cluster::start(kind, 1).await.unwrap();
    let t = Duration::from_secs(30);
    let first = c.members[0].client_url.clone();
    for i in 0..20 {
        let put = etcdctl(&first, &["put", &format!("k{i}"), "v"], None, t, None).unwrap();
        assert_eq!(put.code, 0, "{}", put.stderr);
    }
    c.add_member("m1").await.unwrap();
    c.add_member("m2").await.unwrap();
    let list = etcdctl(&first, &["member", "list"], None, t, None).unwrap();
    assert_eq!(list.stdout.lines().count(), 3, "{}", list.stdout);
    assert!(
        !list.stdout.contains("true"),
        "a member is still a learner: {}",
        list.stdout
    );
    c.members[0].kill9();
    let survivor = c.members[1].client_url.clone();
    let put = etcdctl(&survivor, &["put", "after", "1"], None, t, None).unwrap();
    assert_eq!(
        put.code, 0,
        "the two new members lost quorum: {}",
        put.stderr
    );
    let n = etcdctl(
        &survivor,
        &["get", "k", "--prefix", "--keys-only", "-w", "json"],
        None,
        t,
        None,
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&n.stdout)
        .unwrap_or_else(|e| panic!("get through {survivor}: {e}: {n:?}"));
    assert_eq!(
        v["count"], 20,
        "the first member's keys did not reach the new members"
    );
}
