//! TLS and client-certificate auth with the real etcdctl: certificates made by openssl, a member on
//! an https client URL with --client-cert-auth; etcdctl with a client certificate works, without one
//! it is refused.

use std::path::Path;
use std::process::{Command, Stdio};
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

fn etcdctl(dir: &Path, url: &str, with_client_cert: bool, args: &[&str]) -> std::process::Output {
    let mut c = Command::new("etcdctl");
    c.env("ETCDCTL_API", "3").current_dir(dir).args([
        "--endpoints",
        url,
        "--cacert",
        "ca.crt",
        "--command-timeout",
        "3s",
    ]);
    if with_client_cert {
        c.args(["--cert", "client.crt", "--key", "client.key"]);
    }
    c.args(args)
        .output()
        .expect("etcdctl is installed by scripts/test.sh")
}

#[test]
fn client_cert_auth_with_etcdctl() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh(
        d,
        "openssl ecparam -name prime256v1 -genkey -noout -out ca.key
        openssl req -x509 -new -key ca.key -subj /CN=test-ca -days 2 -out ca.crt",
    );
    for (name, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth",
        ),
        ("client", "extendedKeyUsage=clientAuth"),
    ] {
        std::fs::write(d.join(format!("{name}.ext")), ext).unwrap();
        sh(d, &format!("openssl ecparam -name prime256v1 -genkey -noout -out {name}.key
            openssl req -new -key {name}.key -subj /CN={name} -out {name}.csr
            openssl x509 -req -in {name}.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile {name}.ext -out {name}.crt"));
    }
    let url = format!("https://127.0.0.1:{}", free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_kybern"))
        .current_dir(d)
        .args([
            "store",
            "--data-dir",
            "data",
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .args([
            "--cert-file",
            "server.crt",
            "--key-file",
            "server.key",
            "--trusted-ca-file",
            "ca.crt",
            "--client-cert-auth",
        ])
        .stderr(std::fs::File::create(d.join("kybern.log")).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let put = loop {
        let out = etcdctl(d, &url, true, &["put", "secure", "yes"]);
        if out.status.success() || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let log = std::fs::read_to_string(d.join("kybern.log")).unwrap_or_default();
    assert!(
        put.status.success(),
        "put over TLS failed: {}\nserver log:\n{log}",
        String::from_utf8_lossy(&put.stderr)
    );
    let get = etcdctl(d, &url, true, &["get", "secure", "--print-value-only"]);
    assert_eq!(String::from_utf8_lossy(&get.stdout).trim(), "yes");
    let refused = etcdctl(d, &url, false, &["get", "secure"]);
    assert!(
        !refused.status.success(),
        "a client without a certificate must be refused"
    );
    let health = etcdctl(d, &url, true, &["endpoint", "health"]);
    assert!(
        health.status.success(),
        "{}",
        String::from_utf8_lossy(&health.stderr)
    );

    // With auth enabled, the certificate's common name ("client") is the user, as in etcd;
    // a token (--user) takes precedence over it.
    for args in [
        &["user", "add", "root:secret"][..],
        &["user", "grant-role", "root", "root"],
        &["user", "add", "client", "--no-password"],
        &["role", "add", "reader"],
        &["role", "grant-permission", "reader", "read", "secure"],
        &["user", "grant-role", "client", "reader"],
        &["auth", "enable"],
    ] {
        let out = etcdctl(d, &url, true, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let get = etcdctl(d, &url, true, &["get", "secure", "--print-value-only"]);
    assert_eq!(String::from_utf8_lossy(&get.stdout).trim(), "yes");
    let denied = etcdctl(d, &url, true, &["put", "secure", "no"]);
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("etcdserver: permission denied"),
        "{}",
        String::from_utf8_lossy(&denied.stderr)
    );
    let as_root = etcdctl(
        d,
        &url,
        true,
        &["--user", "root:secret", "put", "secure", "no"],
    );
    assert!(
        as_root.status.success(),
        "{}",
        String::from_utf8_lossy(&as_root.stderr)
    );
    child.kill().unwrap();
    let _ = child.wait();
}
