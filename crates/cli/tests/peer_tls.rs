//! Peer TLS: three members on https peer URLs with --peer-client-cert-auth, certificates made by
//! openssl. Writes made on one member are read on another with the real etcdctl, the cluster has one
//! leader, and a member whose certificate comes from another CA cannot join. One member takes its
//! peer TLS from a --config-file. Bad combinations of the peer TLS flags exit 2.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn sh(dir: &Path, script: &str) {
    let ok = Command::new("bash")
        .arg("-ec")
        .arg(script)
        .current_dir(dir)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(
        ok.success(),
        "openssl failed (run scripts/test.sh, which installs it): {script}"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A CA named `ca` (ca.crt, ca.key) in `dir`.
fn make_ca(dir: &Path, ca: &str) {
    sh(
        dir,
        &format!(
            "openssl ecparam -name prime256v1 -genkey -noout -out {ca}.key
            openssl req -x509 -new -key {ca}.key -subj /CN={ca} -days 2 -out {ca}.crt"
        ),
    );
}

/// A member certificate for 127.0.0.1 signed by `ca`, usable as server and as client.
fn make_member_cert(dir: &Path, ca: &str, name: &str) {
    std::fs::write(
        dir.join(format!("{name}.ext")),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth",
    )
    .unwrap();
    sh(
        dir,
        &format!(
            "openssl ecparam -name prime256v1 -genkey -noout -out {name}.key
            openssl req -new -key {name}.key -subj /CN={name} -out {name}.csr
            openssl x509 -req -in {name}.csr -CA {ca}.crt -CAkey {ca}.key -CAcreateserial -days 2 \
                -extfile {name}.ext -out {name}.crt"
        ),
    );
}

fn etcdctl(dir: &Path, endpoint: &str, args: &[&str]) -> std::process::Output {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .current_dir(dir)
        .args(["--endpoints", endpoint, "--command-timeout", "5s"])
        .args(args)
        .output()
        .expect("etcdctl is installed by scripts/test.sh")
}

struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts member `name` with an https peer URL, the peer certificate `cert` and `ca` as the
/// trusted CA for other members' certificates, given as flags or, with `config_file`, in an
/// etcd.conf.yml (`peer-transport-security:`).
#[allow(clippy::too_many_arguments)]
fn start(
    dir: &Path,
    name: &str,
    client: &str,
    peer: &str,
    initial_cluster: &str,
    state: &str,
    cert: &str,
    ca: &str,
    config_file: bool,
) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kybern"));
    cmd.current_dir(dir).arg("store");
    if config_file {
        let file = format!("{name}.yml");
        std::fs::write(
            dir.join(&file),
            format!(
                "name: {name}
data-dir: {name}
listen-client-urls: {client}
advertise-client-urls: {client}
listen-peer-urls: {peer}
initial-advertise-peer-urls: {peer}
initial-cluster: {initial_cluster}
initial-cluster-state: {state}
initial-cluster-token: peer-tls
peer-transport-security:
  cert-file: {cert}.crt
  key-file: {cert}.key
  trusted-ca-file: {ca}.crt
  client-cert-auth: true
"
            ),
        )
        .unwrap();
        cmd.args(["--config-file", &file]);
    } else {
        cmd.args(["--name", name, "--data-dir", name])
            .args([
                "--listen-client-urls",
                client,
                "--advertise-client-urls",
                client,
            ])
            .args([
                "--listen-peer-urls",
                peer,
                "--initial-advertise-peer-urls",
                peer,
            ])
            .args(["--initial-cluster", initial_cluster])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", "peer-tls"])
            .args(["--peer-cert-file", &format!("{cert}.crt")])
            .args(["--peer-key-file", &format!("{cert}.key")])
            .args(["--peer-trusted-ca-file", &format!("{ca}.crt")])
            .arg("--peer-client-cert-auth");
    }
    cmd.stderr(std::fs::File::create(dir.join(format!("{name}.log"))).unwrap())
        .spawn()
        .unwrap()
}

fn logs(dir: &Path) -> String {
    ["m0", "m1", "m2", "m3"]
        .iter()
        .map(|n| {
            let log = std::fs::read_to_string(dir.join(format!("{n}.log"))).unwrap_or_default();
            format!("--- {n}.log ---\n{log}")
        })
        .collect()
}

#[test]
fn peers_over_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_ca(d, "ca");
    make_ca(d, "other-ca");
    for m in ["m0", "m1", "m2"] {
        make_member_cert(d, "ca", m);
    }
    make_member_cert(d, "other-ca", "m3");

    let client: Vec<String> = (0..4)
        .map(|_| format!("http://127.0.0.1:{}", free_port()))
        .collect();
    let peer: Vec<String> = (0..4)
        .map(|_| format!("https://127.0.0.1:{}", free_port()))
        .collect();
    let initial = (0..3)
        .map(|i| format!("m{i}={}", peer[i]))
        .collect::<Vec<_>>()
        .join(",");
    let mut procs = Procs(Vec::new());
    for i in 0..3 {
        let name = format!("m{i}");
        procs.0.push(start(
            d,
            &name,
            &client[i],
            &peer[i],
            &initial,
            "new",
            &name,
            "ca",
            i == 2,
        ));
    }

    // A write on m0 succeeds once the members have elected a leader over TLS.
    let deadline = Instant::now() + Duration::from_secs(60);
    let put = loop {
        let out = etcdctl(d, &client[0], &["put", "over-tls", "yes"]);
        if out.status.success() || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        put.status.success(),
        "put on m0 failed: {}\n{}",
        String::from_utf8_lossy(&put.stderr),
        logs(d)
    );
    // Linearizable reads on the other members (read-index through the leader over TLS).
    for c in &client[1..3] {
        let get = etcdctl(d, c, &["get", "over-tls", "--print-value-only"]);
        assert_eq!(
            String::from_utf8_lossy(&get.stdout).trim(),
            "yes",
            "get on {c}: {}\n{}",
            String::from_utf8_lossy(&get.stderr),
            logs(d)
        );
    }

    // endpoint status --cluster: every member, all agreeing on one leader among them.
    let status = etcdctl(
        d,
        &client[1],
        &["endpoint", "status", "--cluster", "-w", "json"],
    );
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let status = status.as_array().expect("a list of endpoints");
    assert_eq!(status.len(), 3, "{status:?}");
    let leaders: Vec<u64> = status
        .iter()
        .map(|s| s["Status"]["leader"].as_u64().unwrap())
        .collect();
    assert!(leaders.iter().all(|l| *l == leaders[0]), "{status:?}");
    let is_leader = status
        .iter()
        .filter(|s| s["Status"]["header"]["member_id"].as_u64() == Some(leaders[0]))
        .count();
    assert_eq!(is_leader, 1, "exactly one member is the leader: {status:?}");

    // A member with a certificate from another CA: added, then started, it cannot join (the
    // members refuse its client certificate) and stops; the cluster goes on.
    let add = etcdctl(
        d,
        &client[0],
        &["member", "add", "m3", &format!("--peer-urls={}", peer[3])],
    );
    assert!(
        add.status.success(),
        "member add: {}",
        String::from_utf8_lossy(&add.stderr)
    );
    let initial4 = format!("{initial},m3={}", peer[3]);
    let mut bad = start(
        d, "m3", &client[3], &peer[3], &initial4, "existing", "m3", "ca", false,
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let exited = loop {
        if let Some(st) = bad.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    procs.0.push(bad);
    let bad_log = std::fs::read_to_string(d.join("m3.log")).unwrap_or_default();
    let exited = exited.unwrap_or_else(|| panic!("m3 did not stop\n{}", logs(d)));
    assert!(!exited.success(), "m3 must fail to join\n{bad_log}");
    assert!(
        bad_log.contains("TLS"),
        "m3's log shows no TLS error:\n{bad_log}"
    );
    let put = etcdctl(d, &client[1], &["put", "after-bad", "still"]);
    assert!(
        put.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&put.stderr),
        logs(d)
    );
    let get = etcdctl(d, &client[2], &["get", "after-bad", "--print-value-only"]);
    assert_eq!(String::from_utf8_lossy(&get.stdout).trim(), "still");
}

#[test]
fn bad_peer_tls_flags_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let https = "https://127.0.0.1:1";
    std::fs::write(
        d.join("half.yml"),
        format!(
            "listen-peer-urls: {https}\ninitial-advertise-peer-urls: {https}\n\
             peer-transport-security:\n  cert-file: m.crt\n"
        ),
    )
    .unwrap();
    for (args, says) in [
        (
            vec!["--listen-peer-urls", https],
            "needs --peer-cert-file and --peer-key-file",
        ),
        (
            vec!["--initial-advertise-peer-urls", https],
            "needs --peer-cert-file and --peer-key-file",
        ),
        (
            vec!["--peer-client-cert-auth"],
            "--peer-client-cert-auth needs --peer-trusted-ca-file",
        ),
        (vec!["--peer-cert-file", "m.crt"], "go together"),
        (
            vec!["--config-file", "half.yml"],
            "needs --peer-cert-file and --peer-key-file",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_kybern"))
            .current_dir(d)
            .args(["store", "--data-dir", "data"])
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert!(!d.join("data").exists());
}
