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

    /// Starts `n` API servers on one embedded store, each with its own kubeconfig.
    pub fn start_many(kubectl: PathBuf, n: usize) -> Vec<Cluster> {
        Self::start_many_on(kubectl, n, Backend::Embedded)
    }

    /// Starts `n` API servers on one store of this backend, each with its own kubeconfig.
    pub fn start_many_on(kubectl: PathBuf, n: usize, backend: Backend) -> Vec<Cluster> {
        let base = tempfile::tempdir().unwrap();
        let data = base.path().join("data");
        let (tx, rx) = mpsc::channel();
        let (etx, erx) = mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async move {
                let flags = vec!["--etcd-compaction-interval=0".to_string()];
                let mut servers = vec![];
                match backend {
                    Backend::Embedded => {
                        let m = store::Member::start(&data, store::Settings::default()).unwrap();
                        for _ in 0..n {
                            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                            tx.send(l.local_addr().unwrap()).unwrap();
                            let args = apiserver::ApiserverArgs::from_flags(&flags).unwrap();
                            servers.push(tokio::spawn(apiserver::serve_kv(m.clone(), args, l)));
                        }
                    }
                    Backend::Etcd => {
                        let opts = testkit::procs::MemberOpts::default().with_data_dir(&data);
                        let etcd = testkit::procs::Member::start_etcd(opts)
                            .await
                            .expect("etcd 3.4 starts");
                        let mut flags = flags.clone();
                        flags.push(format!("--etcd-servers={}", etcd.client_url));
                        etx.send(etcd).unwrap();
                        for _ in 0..n {
                            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                            tx.send(l.local_addr().unwrap()).unwrap();
                            let args = apiserver::ApiserverArgs::from_flags(&flags).unwrap();
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
            Backend::Etcd => Some(erx.recv_timeout(TIMEOUT).expect("etcd started")),
            Backend::Embedded => None,
        };
        let mut out = vec![];
        let mut base = Some(base);
        for _ in 0..n {
            let addr = rx.recv_timeout(TIMEOUT).expect("server started");
            // The first cluster owns the store's directory (and etcd); the others get their own.
            let dir = base.take().unwrap_or_else(|| tempfile::tempdir().unwrap());
            out.push(Self::connect(kubectl.clone(), dir, addr, etcd.take()));
        }
        out
    }

    fn connect(
        kubectl: PathBuf,
        dir: tempfile::TempDir,
        addr: std::net::SocketAddr,
        etcd: Option<testkit::procs::Member>,
    ) -> Cluster {
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: k\n  cluster:\n    server: http://{addr}\n\
                 contexts:\n- name: k\n  context:\n    cluster: k\n    user: u\ncurrent-context: k\n\
                 users:\n- name: u\n  user: {{}}\n"
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
