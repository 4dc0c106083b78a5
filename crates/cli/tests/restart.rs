//! What a member keeps across a restart (clean SIGTERM or kill -9), as etcd does: keys and their
//! history, the compaction point, leases with their attached keys (renewed to their full TTL),
//! alarms; and SIGTERM stops it cleanly with exit code 0.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions, PutOptions};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(dir: &std::path::Path, url: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_kybern"))
        .args(["store", "--data-dir"])
        .arg(dir)
        .args(["--listen-client-urls", url, "--advertise-client-urls", url])
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.with_extension("log"))
                .unwrap(),
        )
        .spawn()
        .unwrap()
}

async fn connect(url: &str) -> Client {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut c) = Client::connect([url], None).await {
            if c.status().await.is_ok() {
                return c;
            }
        }
        assert!(
            Instant::now() < deadline,
            "member at {url} did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn state_survives_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let url = format!("http://127.0.0.1:{}", free_port());
    let mut child = start(&dir, &url);
    let mut c = connect(&url).await;
    for i in 0..5 {
        c.put("hist", format!("v{i}"), None).await.unwrap();
    }
    let lease = c.lease_grant(600, None).await.unwrap().id();
    c.put("leased", "x", Some(PutOptions::new().with_lease(lease)))
        .await
        .unwrap();
    let rev = c
        .get("hist", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    c.compact(rev - 2, None).await.unwrap();

    // A clean stop answers SIGTERM with exit code 0.
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "SIGTERM should stop the member cleanly, got {status}"
    );

    let mut child = start(&dir, &url);
    let mut c = connect(&url).await;
    let r = c.get("hist", None).await.unwrap();
    assert_eq!(r.kvs()[0].value_str().unwrap(), "v4");
    assert_eq!(r.kvs()[0].version(), 5);
    assert_eq!(r.header().unwrap().revision(), rev);
    // `rev` is the put of "leased"; the compaction point (rev - 2) is still readable.
    let old = c
        .get("hist", Some(GetOptions::new().with_revision(rev - 2)))
        .await
        .unwrap();
    assert_eq!(old.kvs()[0].value_str().unwrap(), "v3");
    let gone = c
        .get("hist", Some(GetOptions::new().with_revision(rev - 3)))
        .await
        .unwrap_err();
    assert!(
        gone.to_string()
            .contains("required revision has been compacted"),
        "{gone}"
    );
    let ttl = c
        .lease_time_to_live(
            lease,
            Some(etcd_client::LeaseTimeToLiveOptions::new().with_keys()),
        )
        .await
        .unwrap();
    assert_eq!(ttl.granted_ttl(), 600);
    assert!(
        ttl.ttl() > 500,
        "a restart renews leases to their full TTL, got {}",
        ttl.ttl()
    );
    assert_eq!(ttl.keys(), [b"leased".to_vec()]);

    // kill -9, then revoke after restart still deletes the attached key.
    child.kill().unwrap();
    let _ = child.wait();
    let mut child = start(&dir, &url);
    let mut c = connect(&url).await;
    c.lease_revoke(lease).await.unwrap();
    assert_eq!(c.get("leased", None).await.unwrap().count(), 0);
    child.kill().unwrap();
    let _ = child.wait();
}

/// Users, roles, their permissions and the auth switch are kept across a restart; tokens are
/// not (clients authenticate again).
#[tokio::test]
async fn auth_survives_restart() {
    use etcd_client::{ConnectOptions, Permission, UserAddOptions};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let url = format!("http://127.0.0.1:{}", free_port());
    let mut child = start(&dir, &url);
    let mut c = connect(&url).await;
    c.user_add("root", "secret", None).await.unwrap();
    c.user_grant_role("root", "root").await.unwrap();
    c.role_add("reader").await.unwrap();
    c.role_grant_permission("reader", Permission::read("pub/").with_prefix())
        .await
        .unwrap();
    c.user_add("alice", "alicepw", None).await.unwrap();
    c.user_add("bot", "", Some(UserAddOptions::new().with_no_pwd()))
        .await
        .unwrap();
    c.user_grant_role("alice", "reader").await.unwrap();
    c.put("pub/a", "1", None).await.unwrap();
    c.auth_enable().await.unwrap();
    child.kill().unwrap();
    let _ = child.wait();

    let mut child = start(&dir, &url);
    let mut anon = connect_until(&url, None).await;
    let err = anon.get("pub/a", None).await.unwrap_err();
    assert!(err.to_string().contains("user name is empty"), "{err}");
    let opts = ConnectOptions::new().with_user("root", "secret");
    let mut root = connect_until(&url, Some(opts)).await;
    let users = root.user_list().await.unwrap();
    assert_eq!(users.users(), ["alice", "bot", "root"]);
    let role = root.role_get("reader").await.unwrap();
    assert_eq!(role.permissions(), [Permission::read("pub/").with_prefix()]);
    let opts = ConnectOptions::new().with_user("alice", "alicepw");
    let mut alice = connect_until(&url, Some(opts)).await;
    let got = alice.get("pub/a", None).await.unwrap();
    assert_eq!(got.kvs()[0].value_str().unwrap(), "1");
    let err = alice.put("pub/a", "2", None).await.unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");
    root.auth_disable().await.unwrap();
    child.kill().unwrap();
    let _ = child.wait();

    // Disabled stays disabled.
    let mut child = start(&dir, &url);
    let mut anon = connect_until(&url, None).await;
    assert_eq!(anon.get("pub/a", None).await.unwrap().count(), 1);
    assert_eq!(anon.user_get("alice").await.unwrap().roles(), ["reader"]);
    child.kill().unwrap();
    let _ = child.wait();
}

/// Connects (authenticating when `opts` has a user) once the member serves.
async fn connect_until(url: &str, opts: Option<etcd_client::ConnectOptions>) -> Client {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut c) = Client::connect([url], opts.clone()).await {
            if c.status().await.is_ok() {
                return c;
            }
        }
        assert!(
            Instant::now() < deadline,
            "member at {url} did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
