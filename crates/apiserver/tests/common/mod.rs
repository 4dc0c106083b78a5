//! Test harness: an API server in process on an embedded store (temp dir) or on a real etcd 3.4
//! process, on a free loopback port, a kubeconfig pointing at it, and the real kubectl. Every wait is bounded.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const TIMEOUT: Duration = Duration::from_secs(60);

/// kubectl to drive: $KUBECTL, else the 1.33 binary of the machine image, else `kubectl` on PATH.
pub fn kubectl_binary() -> Option<PathBuf> {
    if let Ok(k) = std::env::var("KUBECTL") {
        return Some(k.into());
    }
    for p in [
        "/usr/lib/google-cloud-sdk/bin/kubectl.1.33",
        "/usr/bin/kubectl",
        "/usr/local/bin/kubectl",
    ] {
        if Path::new(p).exists() {
            return Some(p.into());
        }
    }
    None
}

/// Where the API servers store: the embedded kybern store in process, or a real etcd 3.4
/// (`/usr/bin/etcd`) started on free loopback ports with a fresh data dir and reached through
/// `--etcd-servers`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Etcd,
    /// etcd serving only https with client certificate auth; the API server is given
    /// `--etcd-cafile/--etcd-certfile/--etcd-keyfile`.
    EtcdTls,
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    pub kubectl: PathBuf,
    pub addr: std::net::SocketAddr,
    /// The etcd process of an `Etcd` cluster (killed when dropped).
    pub etcd: Option<testkit::procs::Member>,
}

pub struct Out {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Cluster {
    /// Starts a server on the embedded store; None (and a note on stderr) when no kubectl is
    /// installed.
    pub fn start() -> Option<Cluster> {
        Self::start_on(Backend::Embedded)
    }

    /// Starts a server on this backend; None when no kubectl is installed.
    pub fn start_on(backend: Backend) -> Option<Cluster> {
        let Some(kubectl) = kubectl_binary() else {
            eprintln!("no kubectl found: skipping");
            return None;
        };
        Self::start_many_on(kubectl, 1, backend).pop()
    }

    /// Starts a server to be driven by this kubectl binary.
    pub fn start_with(kubectl: PathBuf) -> Option<Cluster> {
        Self::start_many(kubectl, 1).pop()
    }

    /// Starts a server on this backend to be driven by this kubectl binary.
    pub fn start_with_on(kubectl: PathBuf, backend: Backend) -> Option<Cluster> {
        Self::start_many_on(kubectl, 1, backend).pop()
    }

    /// Starts `n` API servers on one embedded store, each with its own kubeconfig.
    pub fn start_many(kubectl: PathBuf, n: usize) -> Vec<Cluster> {
        Self::start_many_on(kubectl, n, Backend::Embedded)
    }

    /// Starts `n` API servers on one store of this backend, each with its own kubeconfig.
    pub fn start_many_on(kubectl: PathBuf, n: usize, backend: Backend) -> Vec<Cluster> {
        Self::start_custom(kubectl, n, backend, &[])
    }

    /// Starts `n` API servers on one store of this backend with these extra flags. Every server
    /// serves HTTPS with its own self-signed certificate (in `<dir>/pki-<i>`), trusts the test
    /// client CA and has the test token file.
    pub fn start_custom(
        kubectl: PathBuf,
        n: usize,
        backend: Backend,
        extra: &[&str],
    ) -> Vec<Cluster> {
        let base = tempfile::tempdir().unwrap();
        let data = base.path().join("data");
        let pki = Pki::write(base.path());
        let mut flags = vec![
            "--etcd-compaction-interval=0".to_string(),
            format!("--client-ca-file={}", pki.client_ca.display()),
            format!("--token-auth-file={}", pki.tokens.display()),
        ];
        if n > 1
            && !extra
                .iter()
                .any(|f| f.starts_with("--encryption-provider-config"))
        {
            // API servers on one store must share the encryption keys (each would otherwise
            // generate its own into its cert dir).
            let enc = base.path().join("encryption-config.yaml");
            std::fs::write(&enc, registry::encryption::Encryption::generate_default()).unwrap();
            flags.push(format!("--encryption-provider-config={}", enc.display()));
        }
        flags.extend(extra.iter().map(|s| s.to_string()));
        let cert_dirs: Vec<PathBuf> = (0..n)
            .map(|i| base.path().join(format!("pki-{i}")))
            .collect();
        let dirs = cert_dirs.clone();
        let (tx, rx) = mpsc::channel();
        let (etx, erx) = mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async move {
                let with_dir = |i: usize, flags: &[String]| {
                    let mut f = flags.to_vec();
                    f.push(format!("--cert-dir={}", dirs[i].display()));
                    apiserver::ApiserverArgs::from_flags(&f).unwrap()
                };
                let mut servers = vec![];
                match backend {
                    Backend::Embedded => {
                        let m = store::Member::start(&data, store::Settings::default()).unwrap();
                        for i in 0..n {
                            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                            tx.send(l.local_addr().unwrap()).unwrap();
                            let args = with_dir(i, &flags);
                            servers.push(tokio::spawn(apiserver::serve_kv(m.clone(), args, l)));
                        }
                    }
                    Backend::Etcd | Backend::EtcdTls => {
                        let mut opts = testkit::procs::MemberOpts::default().with_data_dir(&data);
                        let mut flags = flags.clone();
                        if backend == Backend::EtcdTls {
                            let d = data.parent().unwrap();
                            let t = EtcdTls::write(d);
                            opts.client_url =
                                Some(format!("https://127.0.0.1:{}", testkit::procs::free_port()));
                            opts = opts.with_args([
                                format!("--cert-file={}", t.server_cert.display()),
                                format!("--key-file={}", t.server_key.display()),
                                format!("--trusted-ca-file={}", t.ca.display()),
                                "--client-cert-auth".to_string(),
                            ]);
                            flags.push(format!("--etcd-cafile={}", t.ca.display()));
                            flags.push(format!("--etcd-certfile={}", t.client_cert.display()));
                            flags.push(format!("--etcd-keyfile={}", t.client_key.display()));
                        }
                        let etcd = testkit::procs::Member::start_etcd(opts)
                            .await
                            .expect("etcd 3.4 starts");
                        flags.push(format!("--etcd-servers={}", etcd.client_url));
                        etx.send(etcd).unwrap();
                        for i in 0..n {
                            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                            tx.send(l.local_addr().unwrap()).unwrap();
                            let args = with_dir(i, &flags);
                            servers.push(tokio::spawn(apiserver::serve_on(args, l)));
                        }
                    }
                }
                for s in servers {
                    s.await.unwrap().unwrap();
                }
            });
        });
        let mut etcd = match backend {
            Backend::Etcd | Backend::EtcdTls => {
                Some(erx.recv_timeout(TIMEOUT).expect("etcd started"))
            }
            Backend::Embedded => None,
        };
        let mut out = vec![];
        let mut base = Some(base);
        for cert_dir in cert_dirs {
            let addr = rx.recv_timeout(TIMEOUT).expect("server started");
            // The first cluster owns the store's directory (and etcd); the others get their own.
            let dir = base.take().unwrap_or_else(|| tempfile::tempdir().unwrap());
            out.push(Self::connect(
                kubectl.clone(),
                dir,
                addr,
                etcd.take(),
                &pki,
                &cert_dir,
            ));
        }
        out
    }

    fn connect(
        kubectl: PathBuf,
        dir: tempfile::TempDir,
        addr: std::net::SocketAddr,
        etcd: Option<testkit::procs::Member>,
        pki: &Pki,
        cert_dir: &Path,
    ) -> Cluster {
        // The server writes its self-signed certificate before it serves.
        let ca = cert_dir.join("apiserver.crt");
        let deadline = Instant::now() + TIMEOUT;
        while !ca.exists() {
            assert!(
                Instant::now() < deadline,
                "no serving certificate in {ca:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: k\n  cluster:\n    server: https://{addr}\n\
                 \x20   certificate-authority: {ca}\n\
                 contexts:\n\
                 - name: k\n  context:\n    cluster: k\n    user: admin\n\
                 - name: token\n  context:\n    cluster: k\n    user: token\n\
                 - name: nobody\n  context:\n    cluster: k\n    user: nobody\n\
                 current-context: k\n\
                 users:\n\
                 - name: admin\n  user:\n    client-certificate: {cert}\n    client-key: {key}\n\
                 - name: token\n  user:\n    token: {TOKEN}\n\
                 - name: nobody\n  user: {{}}\n",
                ca = ca.display(),
                cert = pki.admin_cert.display(),
                key = pki.admin_key.display(),
            ),
        )
        .unwrap();
        let c = Cluster {
            dir,
            kubeconfig,
            kubectl,
            addr,
            etcd,
        };
        // The server creates its namespaces before serving; wait until it answers.
        let deadline = Instant::now() + TIMEOUT;
        while !c.run(&["get", "--raw", "/readyz"]).ok {
            assert!(Instant::now() < deadline, "server never became ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    /// Starts one more API server on this cluster's etcd (the `Etcd` backend only) with these
    /// extra flags, with its own kubeconfig, certificates and cert dir.
    pub fn attach(&self, extra: &[&str]) -> Cluster {
        let etcd = self.etcd.as_ref().expect("attach needs the etcd backend");
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::write(dir.path());
        let cert_dir = dir.path().join("pki-0");
        let mut flags = vec![
            "--etcd-compaction-interval=0".to_string(),
            format!("--client-ca-file={}", pki.client_ca.display()),
            format!("--token-auth-file={}", pki.tokens.display()),
            format!("--cert-dir={}", cert_dir.display()),
            format!("--etcd-servers={}", etcd.client_url),
        ];
        flags.extend(extra.iter().map(|s| s.to_string()));
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async move {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(l.local_addr().unwrap()).unwrap();
                let args = apiserver::ApiserverArgs::from_flags(&flags).unwrap();
                apiserver::serve_on(args, l).await.unwrap();
            });
        });
        let addr = rx.recv_timeout(TIMEOUT).expect("server started");
        Self::connect(self.kubectl.clone(), dir, addr, None, &pki, &cert_dir)
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.kubectl);
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .args(args)
            .env("HOME", self.dir.path())
            .stdin(Stdio::null());
        cmd
    }

    /// Runs kubectl to completion (bounded by TIMEOUT).
    pub fn run(&self, args: &[&str]) -> Out {
        let mut child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("kubectl {args:?} did not finish in {TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let o = child.wait_with_output().unwrap();
        Out {
            ok: o.status.success(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Runs kubectl and expects success; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(o.ok, "kubectl {args:?} failed:\n{}\n{}", o.stdout, o.stderr);
        o.stdout
    }

    /// Runs kubectl and expects failure; its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(!o.ok, "kubectl {args:?} should fail:\n{}", o.stdout);
        o.stderr
    }

    /// Writes a manifest into the temp dir; its path.
    pub fn file(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    }

    /// Starts a long-running kubectl (e.g. `get -w`); its output lines arrive on the channel.
    pub fn stream(&self, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
        let mut child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("kubectl runs");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        (child, rx)
    }
}

/// The bearer token of the test token file's user `token-user` (uid 1001, groups dev and ops).
pub const TOKEN: &str = "0123456789abcdef-token";

/// The test client CA, an admin client certificate it signs (CN kybern-admin, O system:masters)
/// and a token file, written into a directory.
pub struct Pki {
    pub client_ca: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
    pub tokens: PathBuf,
    /// A client certificate and key from a CA the server does not trust.
    pub stranger_cert: PathBuf,
    pub stranger_key: PathBuf,
}

impl Pki {
    pub fn write(dir: &Path) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca = |cn: &str| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::default();
            p.distinguished_name.push(DnType::CommonName, cn);
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let cert = p.self_signed(&key).unwrap();
            (cert, Issuer::new(p, key))
        };
        let client = |issuer: &Issuer<'_, KeyPair>, cn: &str, org: &str| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::default();
            p.distinguished_name.push(DnType::CommonName, cn);
            p.distinguished_name.push(DnType::OrganizationName, org);
            p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
            let cert = p.signed_by(&key, issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (ca_cert, issuer) = ca("kybern-test-client-ca");
        let (admin_cert, admin_key) = client(&issuer, "kybern-admin", "system:masters");
        let (_, other) = ca("someone-else");
        let (stranger_cert, stranger_key) = client(&other, "mallory", "system:masters");
        let w = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        Pki {
            client_ca: w("client-ca.crt", &ca_cert.pem()),
            admin_cert: w("admin.crt", &admin_cert),
            admin_key: w("admin.key", &admin_key),
            tokens: w(
                "tokens.csv",
                &format!("{TOKEN},token-user,1001,\"dev,ops\"\n"),
            ),
            stranger_cert: w("stranger.crt", &stranger_cert),
            stranger_key: w("stranger.key", &stranger_key),
        }
    }
}

/// A CA, an etcd serving certificate for 127.0.0.1 and an etcd client certificate it signs.
struct EtcdTls {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl EtcdTls {
    fn write(dir: &Path) -> EtcdTls {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose as Eku, IsCa,
            Issuer, KeyPair, SanType,
        };
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::default();
        ca.distinguished_name.push(DnType::CommonName, "etcd-ca");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let leaf = |cn: &str, eku: Vec<Eku>| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
            p.subject_alt_names
                .push(SanType::IpAddress([127, 0, 0, 1].into()));
            p.distinguished_name.push(DnType::CommonName, cn);
            p.extended_key_usages = eku;
            let c = p.signed_by(&key, &issuer).unwrap();
            (c.pem(), key.serialize_pem())
        };
        let (sc, sk) = leaf("etcd-server", vec![Eku::ServerAuth, Eku::ClientAuth]);
        let (cc, ck) = leaf("kube-apiserver-etcd-client", vec![Eku::ClientAuth]);
        let w = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        EtcdTls {
            ca: w("etcd-ca.crt", &ca_cert.pem()),
            server_cert: w("etcd-server.crt", &sc),
            server_key: w("etcd-server.key", &sk),
            client_cert: w("etcd-client.crt", &cc),
            client_key: w("etcd-client.key", &ck),
        }
    }
}

/// Waits (bounded) for a line containing all of `parts`.
pub fn wait_line(rx: &mpsc::Receiver<String>, parts: &[&str]) -> String {
    let deadline = Instant::now() + TIMEOUT;
    let mut seen = vec![];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if parts.iter().all(|p| l.contains(p)) => return l,
            Ok(l) => seen.push(l),
            Err(_) => panic!("no line with {parts:?}; saw {seen:?}"),
        }
    }
}

/// The table's rows as whitespace-split cells (header included).
pub fn rows(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect()
}
