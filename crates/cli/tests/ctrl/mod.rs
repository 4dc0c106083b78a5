//! Harness of the controller tests: a `kybern apiserver` process on its embedded store (free
//! port, self-signed certificate, a static admin token), a `kybern controller-manager` process
//! pointed at it with a kubeconfig, and the real kubectl 1.33 driving both. Every wait is bounded;
//! a failed wait prints the controller-manager's log.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const TOKEN: &str = "controllers-test-token-0123456789";
/// How long any condition may take to appear (generous: the machine is shared).
pub const WAIT: Duration = Duration::from_secs(90);

pub fn kubectl_binary() -> Option<PathBuf> {
    if let Ok(k) = std::env::var("KUBECTL") {
        return Some(k.into());
    }
    [
        "/usr/lib/google-cloud-sdk/bin/kubectl.1.33",
        "/usr/bin/kubectl",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    kubectl: PathBuf,
    apiserver: Child,
    manager: Option<Child>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // KYBERN_TEST_LOGS=1 prints the controller-manager's log (with --nocapture).
        if std::env::var_os("KYBERN_TEST_LOGS").is_some() {
            eprintln!("controller-manager log:\n{}", self.manager_log());
        }
        if let Some(m) = self.manager.as_mut() {
            let _ = m.kill();
            let _ = m.wait();
        }
        let _ = self.apiserver.kill();
        let _ = self.apiserver.wait();
    }
}

pub struct Out {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kybern"))
}

impl Cluster {
    /// An API server and a controller-manager with these extra flags.
    pub fn start(manager_flags: &[&str]) -> Cluster {
        let kubectl =
            kubectl_binary().expect("kubectl 1.33 (/usr/lib/google-cloud-sdk/bin/kubectl.1.33)");
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens.csv");
        std::fs::write(
            &tokens,
            format!("{TOKEN},admin,admin-uid,\"system:masters\"\n"),
        )
        .unwrap();
        let port = testkit::procs::free_port();
        let log = std::fs::File::create(dir.path().join("apiserver.log")).unwrap();
        let apiserver = Command::new(bin())
            .arg("apiserver")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--cert-dir")
            .arg(dir.path().join("pki"))
            .arg("--token-auth-file")
            .arg(&tokens)
            .args(["--anonymous-auth=false", "--bind-address", "127.0.0.1"])
            .args([
                "--secure-port",
                &port.to_string(),
                "--etcd-compaction-interval=0",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let ca = dir.path().join("pki").join("apiserver.crt");
        let deadline = Instant::now() + WAIT;
        while !ca.exists() {
            assert!(
                Instant::now() < deadline,
                "the apiserver wrote no certificate"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: k\n  cluster:\n    server: https://127.0.0.1:{port}\n    certificate-authority: {ca}\n\
                 contexts:\n- name: k\n  context:\n    cluster: k\n    user: admin\ncurrent-context: k\n\
                 users:\n- name: admin\n  user:\n    token: {TOKEN}\n",
                ca = ca.display()
            ),
        )
        .unwrap();
        let mut c = Cluster {
            dir,
            kubeconfig,
            kubectl,
            apiserver,
            manager: None,
        };
        c.wait_for("the apiserver to be ready", || {
            c.run(&["get", "--raw", "/readyz"]).ok
        });
        let log = std::fs::File::create(c.dir.path().join("controller-manager.log")).unwrap();
        let manager = Command::new(bin())
            .arg("controller-manager")
            .arg("--kubeconfig")
            .arg(&c.kubeconfig)
            // No health port: tests run in parallel and would all want 10257.
            .arg("--secure-port=0")
            .args(manager_flags)
            .env("KYBERN_LOG", "info,controllers=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        c.manager = Some(manager);
        c
    }

    pub fn manager_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("controller-manager.log")).unwrap_or_default()
    }

    /// Runs kubectl (killed after 60 s, failing the test).
    pub fn run(&self, args: &[&str]) -> Out {
        let mut cmd = Command::new(&self.kubectl);
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .args(args)
            .env("HOME", self.dir.path());
        let o = testkit::procs::run_bounded(cmd, 60);
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

    /// `kubectl apply -f` of this YAML.
    pub fn apply(&self, yaml: &str) -> String {
        let f = self.dir.path().join(format!("obj-{}.yaml", rand_suffix()));
        std::fs::write(&f, yaml).unwrap();
        self.ok(&["apply", "-f", f.to_str().unwrap()])
    }

    /// `kubectl get ... -o json`, parsed; None when kubectl fails (e.g. not found).
    pub fn json(&self, args: &[&str]) -> Option<Value> {
        let mut a = vec!["get"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["-o", "json"]);
        let o = self.run(&a);
        o.ok.then(|| serde_json::from_str(&o.stdout).expect("kubectl prints JSON"))
    }

    /// Items of `kubectl get ... -o json`.
    pub fn items(&self, args: &[&str]) -> Vec<Value> {
        self.json(args)
            .and_then(|v| v["items"].as_array().cloned())
            .unwrap_or_default()
    }

    /// Patches an object's status subresource with a merge patch.
    pub fn patch_status(&self, what: &[&str], patch: &Value) {
        let mut a = vec!["patch"];
        a.extend_from_slice(what);
        let p = patch.to_string();
        a.extend_from_slice(&["--subresource=status", "--type=merge", "-p", &p]);
        self.ok(&a);
    }

    /// Polls until `cond` holds; fails (with the controller-manager's log) after [`WAIT`].
    pub fn wait_for(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            if cond() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}\ncontroller-manager log:\n{}",
                    tail(&self.manager_log(), 60)
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Polls until `get` returns Some; that value.
    pub fn wait_value<T>(&self, what: &str, mut get: impl FnMut() -> Option<T>) -> T {
        let mut out = None;
        self.wait_for(what, || {
            out = get();
            out.is_some()
        });
        out.unwrap()
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Makes a pod look started by a kubelet: this IP and Ready as given.
pub fn set_pod_ready(c: &Cluster, ns: &str, pod: &str, ip: &str, ready: bool) {
    let status = if ready { "True" } else { "False" };
    c.patch_status(
        &["pod", pod, "-n", ns],
        &serde_json::json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": status, "lastTransitionTime": "2025-01-01T00:00:00Z"}]}}),
    );
}

/// Names of `kubectl get` items.
pub fn names(items: &[Value]) -> Vec<String> {
    let mut n: Vec<String> = items
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap_or("").to_string())
        .collect();
    n.sort();
    n
}
