//! Auth on a three-member cluster: users, roles and the auth switch changed through one member are
//! enforced by every member, and a permission revoked through one member stops writes through
//! another at once (a write checked before the revocation is refused when applied).

use std::path::PathBuf;
use std::time::Duration;

use testkit::cluster::Cluster;
use testkit::procs::{etcdctl, Kind, Output};

fn ctl(url: &str, user: Option<&str>, args: &[&str]) -> Output {
    let mut a: Vec<String> = vec!["--command-timeout=10s".into()];
    if let Some(u) = user {
        a.push(format!("--user={u}"));
    }
    a.extend(args.iter().map(|s| s.to_string()));
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    etcdctl(url, &a, None, Duration::from_secs(30), None).unwrap()
}

fn ok(o: &Output) -> &str {
    assert_eq!(o.code, 0, "etcdctl failed: {}{}", o.stdout, o.stderr);
    &o.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_changes_through_one_member_hold_on_every_member() {
    let c = Cluster::start(Kind::Kybern(PathBuf::from(env!("CARGO_BIN_EXE_kybern"))), 3)
        .await
        .unwrap();
    let url: Vec<String> = c.endpoints();
    let root = Some("root:rootpw");
    let alice = Some("alice:alicepw");
    ok(&ctl(&url[0], None, &["user", "add", "root:rootpw"]));
    ok(&ctl(&url[0], None, &["user", "grant-role", "root", "root"]));
    ok(&ctl(&url[1], None, &["user", "add", "alice:alicepw"]));
    ok(&ctl(&url[2], None, &["role", "add", "writer"]));
    ok(&ctl(
        &url[0],
        None,
        &["role", "grant-permission", "writer", "readwrite", "a"],
    ));
    ok(&ctl(
        &url[1],
        None,
        &["user", "grant-role", "alice", "writer"],
    ));
    ok(&ctl(&url[2], None, &["auth", "enable"]));

    // Every member knows the users and enforces the switch.
    for u in &url {
        let users = ctl(u, root, &["user", "list"]);
        assert_eq!(
            ok(&users).split_whitespace().collect::<Vec<_>>(),
            ["alice", "root"]
        );
        let anon = ctl(u, None, &["put", "a", "x"]);
        assert_ne!(
            anon.code, 0,
            "{u} let an anonymous put through with auth on"
        );
        assert!(
            anon.stderr.contains("user name is empty"),
            "{}",
            anon.stderr
        );
    }
    ok(&ctl(&url[1], alice, &["put", "a", "1"]));
    let denied = ctl(&url[2], alice, &["put", "b", "1"]);
    assert!(denied.stderr.contains("permission denied"), "{denied:?}");
    assert_eq!(
        ok(&ctl(&url[0], alice, &["get", "a", "--print-value-only"])).trim(),
        "1"
    );

    // A revocation through one member holds at once through the others.
    ok(&ctl(
        &url[0],
        root,
        &["role", "revoke-permission", "writer", "a"],
    ));
    for u in &url {
        let put = ctl(u, alice, &["put", "a", "2"]);
        assert_ne!(
            put.code, 0,
            "{u} let a revoked write through: {}",
            put.stdout
        );
    }
    assert_eq!(
        ok(&ctl(&url[2], root, &["get", "a", "--print-value-only"])).trim(),
        "1"
    );

    // Turning auth off through another member opens every member again.
    ok(&ctl(&url[1], root, &["auth", "disable"]));
    for u in &url {
        ok(&ctl(u, None, &["put", "b", "open"]));
    }
}
