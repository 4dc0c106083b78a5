//! The `kybern` command line: help texts, refusals of bad flags and foreign data dirs, etcd's
//! `--enable-v2` and `--config-file`, and `kybern store snapshot restore` of `etcdctl snapshot
//! save` files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use etcd_client::GetOptions;
use testkit::procs::{free_url, Kind, Member, MemberOpts};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kybern"))
}

/// Runs kybern with `args` until it exits (bounded: killed after `secs`, which fails).
fn run(args: &[&str], secs: u64) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(args);
    testkit::procs::run_bounded(cmd, secs)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn help_lists_subcommands_and_every_store_flag() {
    let top = run(&["--help"], 20);
    assert!(top.status.success(), "{top:?}");
    let top = text(&top.stdout);
    assert!(top.contains("store"), "kybern --help lacks `store`:\n{top}");

    let help = run(&["store", "--help"], 20);
    assert!(help.status.success(), "{help:?}");
    let help = text(&help.stdout);
    for flag in [
        "--name",
        "--data-dir",
        "--listen-client-urls",
        "--advertise-client-urls",
        "--quota-backend-bytes",
        "--auto-compaction-mode",
        "--auto-compaction-retention",
        "--max-request-bytes",
        "--max-txn-ops",
        "--cert-file",
        "--key-file",
        "--trusted-ca-file",
        "--client-cert-auth",
        "--config-file",
        "--enable-v2",
    ] {
        assert!(
            help.contains(flag),
            "kybern store --help lacks {flag}:\n{help}"
        );
    }
    assert!(help.contains("snapshot"), "no snapshot subcommand:\n{help}");
    let restore = run(&["store", "snapshot", "restore", "--help"], 20);
    assert!(restore.status.success(), "{restore:?}");
    assert!(text(&restore.stdout).contains("--data-dir"));
}

#[test]
fn bad_flags_exit_2_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    for (args, says) in [
        (vec!["store", "--no-such-flag"], "--no-such-flag"),
        (vec!["store", "--quota-backend-bytes", "abc"], "abc"),
        (vec!["store", "--auto-compaction-mode", "weekly"], "weekly"),
        (vec!["store", "--max-txn-ops", "-3"], "-3"),
        (vec!["store", "--max-request-bytes", "lots"], "lots"),
        (vec!["no-such-subcommand"], "no-such-subcommand"),
    ] {
        let mut args = args;
        args.extend(["--data-dir", data]);
        let out = run(&args, 20);
        let err = text(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "kybern {args:?} should exit 2, got {:?}; stderr: {err}",
            out.status
        );
        assert!(
            err.contains(says),
            "kybern {args:?}: the message should name {says:?}: {err}"
        );
    }
    assert!(
        !Path::new(data).exists(),
        "a refused command line must not create the data dir"
    );
}

#[test]
fn bad_retention_for_the_mode_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let url = free_url();
    let out = run(
        &[
            "store",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
            "--auto-compaction-mode",
            "revision",
            "--auto-compaction-retention",
            "1h",
        ],
        20,
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "revision mode with a duration retention should be refused: {:?} {}",
        out.status,
        text(&out.stderr)
    );
    assert!(!text(&out.stderr).trim().is_empty());
}

fn snapshot_of_dir(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut m = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            m.extend(snapshot_of_dir(&p));
        } else {
            m.insert(p.clone(), std::fs::read(&p).unwrap());
        }
    }
    m
}

#[test]
fn a_data_dir_of_unrelated_files_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::write(data.join("notes.txt"), "my precious notes\n").unwrap();
    std::fs::write(
        data.join("sub/photo.jpg"),
        [0xffu8, 0xd8, 0xff, 0xe0, 1, 2, 3],
    )
    .unwrap();
    let before = snapshot_of_dir(&data);
    let url = free_url();
    let out = run(
        &[
            "store",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ],
        30,
    );
    let err = text(&out.stderr);
    assert!(
        !out.status.success(),
        "kybern must refuse a data dir that is not a store; it exited {:?}: {err}",
        out.status
    );
    assert_eq!(out.status.code(), Some(2), "bad input exits 2: {err}");
    assert!(
        err.contains(data.to_str().unwrap()),
        "the message should name the data dir: {err}"
    );
    assert_eq!(
        snapshot_of_dir(&data),
        before,
        "the data dir's files changed"
    );
}

#[tokio::test]
async fn enable_v2_is_accepted_with_a_warning() {
    for args in [vec!["--enable-v2"], vec!["--enable-v2=true"]] {
        let m = Member::start_kybern(&bin(), MemberOpts::default().with_args(args.clone()))
            .await
            .unwrap();
        let mut c = m.client().await.unwrap();
        c.put("k", "v", None).await.unwrap();
        let log = m.stderr_log();
        let warned = log
            .lines()
            .any(|l| l.contains("WARN") && l.to_lowercase().contains("v2"));
        assert!(warned, "{args:?}: no warning about v2 in:\n{log}");
    }
    // false is accepted silently
    let m = Member::start_kybern(
        &bin(),
        MemberOpts::default().with_args(["--enable-v2=false"]),
    )
    .await
    .unwrap();
    let log = m.stderr_log();
    assert!(
        !log.lines().any(|l| l.contains("WARN") && l.contains("v2")),
        "--enable-v2=false should not warn:\n{log}"
    );
}

#[tokio::test]
async fn config_file_in_etcd_form_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("from-config");
    let url = free_url();
    let cfg = dir.path().join("etcd.conf.yml");
    std::fs::write(
        &cfg,
        format!(
            "# etcd.conf.yml form\n\
             name: 'configured'\n\
             data-dir: {}\n\
             listen-client-urls: {url}\n\
             advertise-client-urls: {url}\n\
             quota-backend-bytes: 8589934592\n\
             auto-compaction-mode: revision\n\
             auto-compaction-retention: \"1000\"\n\
             max-txn-ops: 64\n\
             max-request-bytes: 1048576\n\
             enable-v2: false\n\
             # keys for a cluster are allowed too\n\
             initial-cluster-state: 'new'\n",
            data.display()
        ),
    )
    .unwrap();
    let opts = MemberOpts {
        data_dir: Some(data.clone()),
        client_url: Some(url.clone()),
        raw_args: true,
        args: vec!["--config-file".into(), cfg.to_str().unwrap().into()],
        ..MemberOpts::default()
    };
    let m = Member::start_kybern(&bin(), opts).await.unwrap();
    let mut c = m.client().await.unwrap();
    c.put("from", "config", None).await.unwrap();
    let members = c.member_list().await.unwrap();
    assert_eq!(members.members().len(), 1);
    assert_eq!(members.members()[0].name(), "configured");
    assert_eq!(
        members.members()[0].client_urls(),
        std::slice::from_ref(&url)
    );
    assert!(
        data.is_dir(),
        "the data dir of the config file was not used"
    );
    // max-txn-ops from the file: 65 operations are refused
    let ops: Vec<etcd_client::TxnOp> = (0..65)
        .map(|i| etcd_client::TxnOp::put(format!("t{i}"), "v", None))
        .collect();
    let err = c
        .txn(etcd_client::Txn::new().and_then(ops))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("too many operations in txn request"),
        "{err}"
    );
}

fn etcdctl_snapshot_save(m: &Member, file: &Path) {
    let out = m
        .etcdctl(
            &["snapshot", "save", file.to_str().unwrap()],
            None,
            Duration::from_secs(30),
        )
        .unwrap();
    assert_eq!(out.code, 0, "etcdctl snapshot save: {out:?}");
    assert!(
        out.stdout.contains("Snapshot saved at"),
        "etcdctl snapshot save: {out:?}"
    );
}

/// Writes keys with history and a deletion; returns the revision.
async fn fill(m: &Member) -> i64 {
    let mut c = m.client().await.unwrap();
    for i in 0..20 {
        c.put(format!("snap/{i:02}"), format!("v{i}"), None)
            .await
            .unwrap();
    }
    c.put("snap/00", "rewritten", None).await.unwrap();
    c.delete("snap/19", None).await.unwrap();
    c.get("snap", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision()
}

async fn check_restored(m: &Member, rev: i64) {
    let mut c = m.client().await.unwrap();
    let r = c
        .get("snap/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(r.count(), 19, "{:?}", r.kvs());
    assert_eq!(r.kvs()[0].value_str().unwrap(), "rewritten");
    assert_eq!(r.kvs()[0].version(), 2);
    assert_eq!(r.kvs()[5].value_str().unwrap(), "v5");
    assert_eq!(r.header().unwrap().revision(), rev);
    // and it takes writes
    c.put("after", "restore", None).await.unwrap();
    let r = c.get("after", None).await.unwrap();
    assert_eq!(r.kvs()[0].mod_revision(), rev + 1);
}

fn restore(file: &Path, data: &Path) {
    let out = run(
        &[
            "store",
            "snapshot",
            "restore",
            file.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ],
        60,
    );
    assert!(
        out.status.success(),
        "kybern store snapshot restore: {:?}\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[tokio::test]
async fn snapshot_restore_of_a_kybern_snapshot_serves_the_same_keys() {
    let dir = tempfile::tempdir().unwrap();
    let src = Member::start_kybern(&bin(), MemberOpts::default())
        .await
        .unwrap();
    let rev = fill(&src).await;
    let file = dir.path().join("backup.db");
    etcdctl_snapshot_save(&src, &file);
    drop(src);

    let data = dir.path().join("restored");
    restore(&file, &data);
    let m = Member::start_kybern(&bin(), MemberOpts::default().with_data_dir(&data))
        .await
        .unwrap();
    check_restored(&m, rev).await;

    // restoring into a data dir that exists and is not empty is refused
    let out = run(
        &[
            "store",
            "snapshot",
            "restore",
            file.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ],
        30,
    );
    assert!(
        !out.status.success(),
        "restore over an existing store must be refused"
    );
}

/// More history on top of `fill`: enough keys for the bbolt key bucket to span several pages, a
/// value larger than a page, a key rewritten and a compaction in the middle of its history, and
/// a lease with a key attached. Returns (revision, compaction revision, lease id).
async fn fill_history(m: &Member) -> (i64, i64, i64) {
    let mut c = m.client().await.unwrap();
    for i in 0..150 {
        c.put(format!("many/{i:03}"), "m".repeat(90), None)
            .await
            .unwrap();
    }
    c.put("big", "b".repeat(10_000), None).await.unwrap();
    let mut revs = Vec::new();
    for i in 1..=5 {
        let r = c.put("hist", format!("h{i}"), None).await.unwrap();
        revs.push(r.header().unwrap().revision());
    }
    c.delete("many/149", None).await.unwrap();
    let compact = revs[2];
    c.compact(compact, None).await.unwrap();
    let lease = c.lease_grant(600, None).await.unwrap().id();
    c.put(
        "leased",
        "l1",
        Some(etcd_client::PutOptions::new().with_lease(lease)),
    )
    .await
    .unwrap();
    let r = c.put("hist", "h6", None).await.unwrap();
    (r.header().unwrap().revision(), compact, lease)
}

fn ctl(m: &Member, args: &[&str]) -> testkit::procs::Output {
    m.etcdctl(args, None, Duration::from_secs(20)).unwrap()
}

/// What etcdctl answers about history, compaction and leases; `remaining(Ns)` masked.
fn answers(m: &Member, rev: i64, compact: i64, lease: i64) -> Vec<(String, String, String)> {
    let lease = format!("{lease:x}");
    let revs: Vec<String> = (compact - 1..=rev).map(|r| r.to_string()).collect();
    let mut cmds: Vec<Vec<&str>> = revs
        .iter()
        .map(|r| vec!["get", "hist", "--rev", r.as_str()])
        .collect();
    cmds.push(vec!["get", "", "--from-key"]);
    cmds.push(vec!["get", "many/149", "--rev", &revs[1]]);
    cmds.push(vec!["lease", "list"]);
    cmds.push(vec!["lease", "timetolive", &lease, "--keys"]);
    cmds.push(vec!["get", "leased", "-w", "fields"]);
    let mut out: Vec<(String, String, String)> = cmds
        .iter()
        .map(|a| {
            let o = ctl(m, a);
            let mask = |t: &str| {
                let t = match t.find("remaining(") {
                    Some(i) => {
                        let j = t[i..].find(')').map_or(t.len(), |j| i + j);
                        format!("{}remaining(N){}", &t[..i], &t[j + 1..])
                    }
                    None => t.to_string(),
                };
                // the response header differs between the two clusters
                // (and the client's JSON log lines carry timestamps and ports)
                t.lines()
                    .filter(|l| {
                        ![
                            "\"ClusterID\"",
                            "\"MemberID\"",
                            "\"RaftTerm\"",
                            "{\"level\"",
                        ]
                        .iter()
                        .any(|h| l.starts_with(h))
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            (a.join(" "), mask(&o.stdout), mask(&o.stderr))
        })
        .collect();
    // history replayed by a watch from just after the compaction point
    let from = (compact + 1).to_string();
    let w = m
        .etcdctl(
            &["watch", "--prefix", "", "--rev", &from],
            None,
            Duration::from_secs(3),
        )
        .unwrap();
    out.push(("watch".into(), w.stdout, String::new()));
    out
}

/// A snapshot saved from the real etcd 3.4 (a bbolt file) restores into kybern: the same keys,
/// history, compaction point and leases as the etcd that made it answers.
#[tokio::test]
async fn snapshot_restore_of_an_etcd_snapshot_serves_the_same_keys() {
    let dir = tempfile::tempdir().unwrap();
    let src = Member::start(Kind::Etcd, MemberOpts::default())
        .await
        .unwrap();
    fill(&src).await;
    let (rev, compact, lease) = fill_history(&src).await;
    let file = dir.path().join("etcd-backup.db");
    etcdctl_snapshot_save(&src, &file);
    let want = answers(&src, rev, compact, lease);
    drop(src);

    let data = dir.path().join("restored");
    restore(&file, &data);
    let m = Member::start_kybern(&bin(), MemberOpts::default().with_data_dir(&data))
        .await
        .unwrap();
    let got = answers(&m, rev, compact, lease);
    assert_eq!(want.len(), got.len());
    for (w, g) in want.iter().zip(&got) {
        assert_eq!(w, g, "etcd (left) and restored kybern (right) differ");
    }
    // the answers say what they should, not just the same thing
    let first = &got[0];
    assert!(
        first
            .2
            .contains("mvcc: required revision has been compacted"),
        "{first:?}"
    );
    assert!(got[1].1.contains("h3"), "{:?}", got[1]);
    let ttl = got
        .iter()
        .find(|a| a.0.starts_with("lease timetolive"))
        .unwrap();
    assert!(
        ttl.1.contains("granted with TTL(600s)") && ttl.1.contains("attached keys([leased])"),
        "{ttl:?}"
    );
    let watch = &got.last().unwrap().1;
    assert!(
        watch.contains("h6") && watch.contains("DELETE\nmany/149"),
        "{watch}"
    );
    check_restored(&m, rev).await;
}

/// A damaged etcd snapshot is refused (its hash no longer matches) and nothing is created.
#[tokio::test]
async fn snapshot_restore_of_a_damaged_etcd_snapshot_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let src = Member::start(Kind::Etcd, MemberOpts::default())
        .await
        .unwrap();
    fill(&src).await;
    let file = dir.path().join("etcd-backup.db");
    etcdctl_snapshot_save(&src, &file);
    drop(src);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[3 * 4096 + 200] ^= 0x55;
    std::fs::write(&file, &bytes).unwrap();
    let data = dir.path().join("restored");
    let out = run(
        &[
            "store",
            "snapshot",
            "restore",
            file.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ],
        30,
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("snapshot hash mismatch"),
        "{}",
        text(&out.stderr)
    );
    assert!(!data.exists());
}

#[tokio::test]
async fn snapshot_restore_of_garbage_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("garbage.db");
    std::fs::write(&file, b"this is not a snapshot at all").unwrap();
    let data = dir.path().join("restored");
    let out = run(
        &[
            "store",
            "snapshot",
            "restore",
            file.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ],
        30,
    );
    assert!(!out.status.success(), "garbage restored?");
    assert!(!text(&out.stderr).trim().is_empty());
}
