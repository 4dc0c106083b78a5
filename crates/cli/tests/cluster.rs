//! The replicated store: three `kybern store` processes on loopback forming one cluster through
//! `--initial-cluster`, driven by real clients.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use etcd_api::{PbPutRequest, PbRangeRequest};
use store::remote::RemoteKv;
use store::Kv;
use testkit::cluster::Cluster;
use testkit::procs::{etcdctl, Kind};

fn kybern() -> Kind {
    Kind::Kybern(PathBuf::from(env!("CARGO_BIN_EXE_kybern")))
}

async fn kv(url: &str) -> RemoteKv {
    RemoteKv::connect(&[url.to_string()], None).await.unwrap()
}

/// The Kv conformance suite through a follower: writes are forwarded to the leader, linearizable
/// reads wait for the read index, watches and leases work there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_of_three_conforms() {
    let c = Cluster::start(kybern(), 3).await.unwrap();
    let leader = c.leader().await.unwrap();
    let follower = (leader + 1) % 3;
    let kv = kv(&c.members[follower].client_url).await;
    testkit::conformance::run_all(&kv).await;
}

/// etcdctl sees three started members and exactly one leader, on every member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_sees_every_member_and_one_leader() {
    let c = Cluster::start(kybern(), 3).await.unwrap();
    let eps = c.endpoints().join(",");
    let out = etcdctl(
        &eps,
        &["member", "list", "-w", "json"],
        None,
        Duration::from_secs(20),
        None,
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let members = v["members"].as_array().unwrap();
    assert_eq!(members.len(), 3, "{}", out.stdout);
    for (i, m) in c.members.iter().enumerate() {
        let entry = members
            .iter()
            .find(|x| x["name"] == format!("m{i}"))
            .unwrap_or_else(|| panic!("m{i} missing from {}", out.stdout));
        assert_eq!(entry["clientURLs"][0], m.client_url.as_str());
        assert_eq!(entry["peerURLs"][0], m.peer_url.as_str());
    }
    let first = &c.members[0].client_url;
    let out = etcdctl(
        first,
        &["endpoint", "status", "--cluster", "-w", "json"],
        None,
        Duration::from_secs(20),
        None,
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 3, "{}", out.stdout);
    let leaders: Vec<_> = rows.iter().map(|r| r["Status"]["leader"].clone()).collect();
    assert!(leaders.iter().all(|l| *l == leaders[0]), "{}", out.stdout);
    let leader_rows = rows
        .iter()
        .filter(|r| r["Status"]["leader"] == r["Status"]["header"]["member_id"])
        .count();
    assert_eq!(leader_rows, 1, "{}", out.stdout);
    // A peer request from a member of another cluster is refused.
    let foreign = std::process::Command::new("curl")
        .args([
            "-s",
            "--http2-prior-knowledge",
            "-X",
            "POST",
            "-H",
            "x-etcd-cluster-id: 1234",
        ])
        .args(["-w", " %{http_code}"])
        .arg(format!("{}/raft/vote", c.members[1].peer_url))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&foreign.stdout),
        "cluster ID mismatch 412"
    );
    let out = etcdctl(
        first,
        &["endpoint", "health", "--cluster"],
        None,
        Duration::from_secs(20),
        None,
    )
    .unwrap();
    assert_eq!(
        out.stderr.matches("is healthy").count(),
        3,
        "{}",
        out.stderr
    );
}

/// Puts `n` keys `<prefix><i>` with value `v<i>` through `kv`.
async fn put_n(kv: &RemoteKv, prefix: &str, n: usize) -> Vec<String> {
    let mut keys = Vec::new();
    for i in 0..n {
        let key = format!("{prefix}{i:03}");
        let put = PbPutRequest {
            key: key.clone().into_bytes(),
            value: format!("v{i}").into_bytes(),
            ..Default::default()
        };
        kv.put(put).await.unwrap();
        keys.push(key);
    }
    keys
}

async fn get_local(kv: &RemoteKv, key: &str) -> Option<Vec<u8>> {
    let r = kv
        .range(PbRangeRequest {
            key: key.as_bytes().to_vec(),
            serializable: true,
            ..Default::default()
        })
        .await
        .ok()?;
    r.kvs.first().map(|k| k.value.clone())
}

/// kill -9 of the leader in the middle of a stream of puts: a new leader takes over, every
/// acknowledged put is on every member afterwards, and the killed member catches up on restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_loses_no_acknowledged_write() {
    let mut c = Cluster::start(kybern(), 3).await.unwrap();
    let leader = c.leader().await.unwrap();
    let follower = (leader + 1) % 3;
    let client = kv(&c.members[follower].client_url).await;
    let mut acked = Vec::new();
    let mut unknown = 0;
    for i in 0..120 {
        if i == 40 {
            c.members[leader].kill9();
        }
        let key = format!("k{i:03}");
        match client
            .put(PbPutRequest {
                key: key.clone().into_bytes(),
                value: format!("v{i}").into_bytes(),
                ..Default::default()
            })
            .await
        {
            Ok(_) => acked.push(key),
            Err(_) => unknown += 1,
        }
    }
    assert!(
        acked.len() >= 100,
        "only {} of 120 puts acknowledged ({unknown} failed)",
        acked.len()
    );
    let new_leader = c.leader().await.unwrap();
    assert_ne!(new_leader, leader);
    c.members[leader].restart().await.unwrap();
    let last = acked.last().unwrap().clone();
    for m in &c.members {
        let kv = kv(&m.client_url).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while get_local(&kv, &last).await.is_none() {
            assert!(
                Instant::now() < deadline,
                "{} never caught up",
                m.client_url
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for key in &acked {
            assert!(
                get_local(&kv, key).await.is_some(),
                "acknowledged {key} missing on {}",
                m.client_url
            );
        }
    }
}

/// A member that was down while the others wrote far past a snapshot (and dropped the log it
/// missed) is sent the snapshot, then the rest of the log, and serves the same history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_far_behind_catches_up_from_a_snapshot() {
    let args = [
        "--snapshot-count",
        "20",
        "--experimental-snapshot-catchup-entries",
        "5",
    ];
    let mut c = Cluster::start_with(kybern(), 3, &args).await.unwrap();
    let leader = c.leader().await.unwrap();
    let lagging = (leader + 1) % 3;
    c.members[lagging].stop().await.unwrap();
    let client = kv(&c.members[leader].client_url).await;
    for i in 0..100 {
        let key = format!("s{:03}", i % 40);
        client
            .put(PbPutRequest {
                key: key.into_bytes(),
                value: format!("v{i}").into_bytes(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    c.members[lagging].restart().await.unwrap();
    let behind = kv(&c.members[lagging].client_url).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while get_local(&behind, "s019").await.as_deref() != Some(b"v99".as_slice()) {
        assert!(
            Instant::now() < deadline,
            "the lagging member never caught up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let snap = c.members[lagging]
        .data_dir
        .join("member")
        .join("raft-snapshot.db");
    assert!(
        snap.exists(),
        "no snapshot was installed at {}",
        snap.display()
    );
    let all = |rev: i64| PbRangeRequest {
        key: b"s".to_vec(),
        range_end: b"t".to_vec(),
        serializable: true,
        revision: rev,
        ..Default::default()
    };
    let want = client.range(all(0)).await.unwrap();
    let got = behind.range(all(0)).await.unwrap();
    assert_eq!(got.kvs, want.kvs);
    assert_eq!(got.header.unwrap().revision, want.header.unwrap().revision);
    // History from before the snapshot is there too.
    let old = client.range(all(30)).await.unwrap();
    assert_eq!(behind.range(all(30)).await.unwrap().kvs, old.kvs);
}

/// etcdctl member add / promote / remove: a new member joins as a learner, catches up and is
/// promoted by itself; a removed member stops and says why; refusals carry etcd's messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_added_promoted_and_removed() {
    let mut c = Cluster::start(kybern(), 3).await.unwrap();
    let eps = c.endpoints().join(",");
    let t = Duration::from_secs(30);
    let client = kv(&c.members[0].client_url).await;
    put_n(&client, "m", 20).await;
    // Joins as a learner, catches up and is promoted (add_member waits for the promotion).
    c.add_member("m3").await.unwrap();
    let peer = c.members[3].peer_url.clone();
    let again = etcdctl(
        &eps,
        &["member", "add", "other", &format!("--peer-urls={peer}")],
        None,
        t,
        None,
    )
    .unwrap();
    assert!(
        again
            .stderr
            .contains("etcdserver: Peer URLs already exists"),
        "{}",
        again.stderr
    );
    let newcomer = kv(&c.members[3].client_url).await;
    assert_eq!(
        get_local(&newcomer, "m019").await.as_deref(),
        Some(b"v19".as_slice())
    );

    let status = etcdctl(
        &c.members[0].client_url,
        &["endpoint", "status", "-w", "json"],
        None,
        t,
        None,
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    let leader_id = v[0]["Status"]["leader"].as_u64().unwrap();
    let voter = format!("{leader_id:x}");
    let promote = etcdctl(&eps, &["member", "promote", &voter], None, t, None).unwrap();
    assert!(
        promote
            .stderr
            .contains("etcdserver: can only promote a learner member"),
        "{}",
        promote.stderr
    );
    let missing = etcdctl(&eps, &["member", "remove", "1234"], None, t, None).unwrap();
    assert!(
        missing.stderr.contains("etcdserver: member not found"),
        "{}",
        missing.stderr
    );

    // Remove a member that is not the leader: it stops by itself and says why.
    let leader = c.leader().await.unwrap();
    let victim = (leader + 1) % 3;
    let list = etcdctl(&eps, &["member", "list", "-w", "json"], None, t, None).unwrap();
    let v: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    let victim_id = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == format!("m{victim}"))
        .and_then(|m| m["ID"].as_u64())
        .unwrap();
    let removed = etcdctl(
        &eps,
        &["member", "remove", &format!("{victim_id:x}")],
        None,
        t,
        None,
    )
    .unwrap();
    assert_eq!(removed.code, 0, "{}", removed.stderr);
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.members[victim].try_exit_status().is_none() {
        assert!(Instant::now() < deadline, "the removed member kept running");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        c.members[victim]
            .stderr_log()
            .contains("permanently removed from the cluster"),
        "{}",
        c.members[victim].log_tail(20)
    );
    let rest: Vec<String> = (0..3)
        .filter(|i| *i != victim)
        .map(|i| c.members[i].client_url.clone())
        .collect();
    let list = etcdctl(&rest.join(","), &["member", "list"], None, t, None).unwrap();
    assert_eq!(list.stdout.lines().count(), 3, "{}", list.stdout);
    client_put_ok(&rest[0]).await;
}

async fn client_put_ok(url: &str) {
    let put = PbPutRequest {
        key: b"after".to_vec(),
        value: b"removal".to_vec(),
        ..Default::default()
    };
    kv(url).await.put(put).await.unwrap();
}

/// Quorum lost for good: two of three members are gone. `kybern store recover` on the survivor
/// makes it a one-member cluster with every acknowledged write, and two fresh members rejoin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_survivor_recovers_and_two_fresh_members_rejoin() {
    let mut c = Cluster::start(kybern(), 3).await.unwrap();
    let client = kv(&c.members[0].client_url).await;
    let acked = put_n(&client, "r", 30).await;
    c.members[1].kill9();
    c.members[2].kill9();
    c.members[0].stop().await.unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kybern"))
        .args(["store", "recover", "--data-dir"])
        .arg(&c.members[0].data_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "recover failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("is now the only member"));
    c.members[0].restart().await.unwrap();
    let survivor = c.members[0].client_url.clone();
    client_put_ok(&survivor).await;
    let list = etcdctl(
        &survivor,
        &["member", "list"],
        None,
        Duration::from_secs(20),
        None,
    )
    .unwrap();
    assert_eq!(list.stdout.lines().count(), 1, "{}", list.stdout);
    c.add_member("d").await.unwrap();
    c.add_member("e").await.unwrap();
    for m in &c.members[3..] {
        let kv = kv(&m.client_url).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while get_local(&kv, "after").await.is_none() {
            assert!(
                Instant::now() < deadline,
                "{} never caught up",
                m.client_url
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for key in &acked {
            assert!(
                get_local(&kv, key).await.is_some(),
                "{key} missing on {}",
                m.client_url
            );
        }
    }
    // The new cluster of three takes writes through any member.
    client_put_ok(&c.members[4].client_url).await;
}

/// A member whose stored history was changed behind Raft's back (here: one stored value edited
/// while it was stopped) is found by the leader's HashKV comparison: the CORRUPT alarm is raised
/// for it and `etcdctl alarm list` shows it on every member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diverged_member_raises_the_corrupt_alarm() {
    use redb::{ReadableDatabase, ReadableTable};
    let args = ["--experimental-corrupt-check-time", "1s"];
    let mut c = Cluster::start_with(kybern(), 3, &args).await.unwrap();
    let leader = c.leader().await.unwrap();
    let client = kv(&c.members[leader].client_url).await;
    put_n(&client, "h", 10).await;
    let victim = (leader + 1) % 3;
    let follower = kv(&c.members[victim].client_url).await;
    while get_local(&follower, "h009").await.is_none() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let id = {
        let st = etcdctl(
            &c.members[victim].client_url,
            &["endpoint", "status", "-w", "json"],
            None,
            Duration::from_secs(10),
            None,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
        v[0]["Status"]["header"]["member_id"].as_u64().unwrap()
    };
    c.members[victim].stop().await.unwrap();
    {
        let db = redb::Database::open(mvcc::backend::db_path(&c.members[victim].data_dir)).unwrap();
        let (k, mut tampered) = {
            let rtx = db.begin_read().unwrap();
            let t = rtx.open_table(mvcc::backend::KV).unwrap();
            let (k, v) = t.first().unwrap().unwrap();
            let (tomb, kv) = mvcc::backend::decode_value(v.value()).unwrap();
            (k.value().to_vec(), (tomb, kv))
        };
        tampered.1.value = b"different".to_vec();
        let wtx = db.begin_write().unwrap();
        {
            let mut t = wtx.open_table(mvcc::backend::KV).unwrap();
            let v = mvcc::backend::encode_value(tampered.0, &tampered.1);
            t.insert(k.as_slice(), v.as_slice()).unwrap();
        }
        wtx.commit().unwrap();
    }
    c.members[victim].restart().await.unwrap();
    let eps = c.endpoints().join(",");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = etcdctl(
            &eps,
            &["alarm", "list"],
            None,
            Duration::from_secs(10),
            None,
        )
        .unwrap();
        if list
            .stdout
            .contains(&format!("memberID:{id} alarm:CORRUPT"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no CORRUPT alarm for {id:x}: {}{}",
            list.stdout,
            list.stderr
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let leader = c.leader().await.unwrap();
    assert!(c.members[leader]
        .stderr_log()
        .contains("raising the CORRUPT alarm"));
}

/// `kybern store member remove NAME --data-dir DIR` removes the member, which stops, and deletes
/// its data directory in the same step; a name that is not a member is a clear error (exit 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kybern_member_remove_removes_and_cleans() {
    let mut c = Cluster::start(kybern(), 3).await.unwrap();
    let leader = c.leader().await.unwrap();
    let victim = (leader + 1) % 3;
    let others: Vec<String> = (0..3)
        .filter(|i| *i != victim)
        .map(|i| c.members[i].client_url.clone())
        .collect();
    let run = |args: Vec<String>| {
        std::process::Command::new(env!("CARGO_BIN_EXE_kybern"))
            .args(["store", "member", "remove"])
            .args(args)
            .output()
            .unwrap()
    };
    let eps = others.join(",");
    let out = run(vec!["nobody".into(), "--endpoints".into(), eps.clone()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no member \"nobody\""));
    let dir = c.members[victim].data_dir.clone();
    let out = run(vec![
        format!("m{victim}"),
        "--endpoints".into(),
        eps.clone(),
        "--data-dir".into(),
        dir.display().to_string(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("removed from cluster") && stdout.contains("Deleted its data directory")
    );
    assert!(!dir.exists());
    assert!(c.members[victim].try_exit_status().is_some());
    let list = etcdctl(
        &eps,
        &["member", "list"],
        None,
        Duration::from_secs(20),
        None,
    )
    .unwrap();
    assert_eq!(list.stdout.lines().count(), 2, "{}", list.stdout);
}

/// A snapshot of one cluster rebuilds a whole new cluster on new addresses: each member is
/// restored with its name and the new --initial-cluster, then all start together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_rebuilds_a_cluster_on_new_addresses() {
    let old = Cluster::start(kybern(), 3).await.unwrap();
    let client = kv(&old.members[0].client_url).await;
    put_n(&client, "snap", 25).await;
    let tmp = tempfile::tempdir().unwrap();
    let snap = tmp.path().join("backup.db");
    let saved = etcdctl(
        &old.members[0].client_url,
        &["snapshot", "save", snap.to_str().unwrap()],
        None,
        Duration::from_secs(30),
        None,
    )
    .unwrap();
    assert_eq!(saved.code, 0, "{}", saved.stderr);
    drop(old);
    let peers: Vec<String> = (0..3).map(|_| testkit::procs::free_url()).collect();
    let initial = peers
        .iter()
        .enumerate()
        .map(|(i, p)| format!("n{i}={p}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut members = Vec::new();
    for (i, peer) in peers.iter().enumerate() {
        let dir = tmp.path().join(format!("n{i}"));
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kybern"))
            .args(["store", "snapshot", "restore"])
            .arg(&snap)
            .arg("--data-dir")
            .arg(&dir)
            .args(["--name", &format!("n{i}"), "--initial-cluster", &initial])
            .args(["--initial-cluster-token", "kybern-test"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut opts = testkit::procs::MemberOpts::default()
            .with_name(format!("n{i}"))
            .with_data_dir(dir)
            .with_args([
                "--initial-cluster",
                &initial,
                "--initial-cluster-state",
                "new",
            ])
            .with_args(["--initial-cluster-token", "kybern-test"]);
        opts.peer_url = Some(peer.clone());
        opts.wait_ready = false;
        members.push(testkit::procs::Member::start(kybern(), opts).await.unwrap());
    }
    for m in &mut members {
        m.wait_ready().await.unwrap();
    }
    let new = Cluster { members };
    new.leader().await.unwrap();
    for m in &new.members {
        let kv = kv(&m.client_url).await;
        let r = kv
            .range(PbRangeRequest {
                key: b"snap".to_vec(),
                range_end: b"snaq".to_vec(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(r.kvs.len(), 25, "on {}", m.client_url);
    }
    client_put_ok(&new.members[2].client_url).await;
    let list = etcdctl(
        &new.endpoints().join(","),
        &["member", "list"],
        None,
        Duration::from_secs(20),
        None,
    )
    .unwrap();
    assert_eq!(list.stdout.lines().count(), 3, "{}", list.stdout);
}
