//! Harness of the controller-manager tests: `kybern apiserver` on an embedded store and
//! `kybern controller-manager` replicas as child processes on loopback, the real kubectl 1.33,
//! and a stand-in kubelet that marks every pod Running and Ready through the status API (there
//! is no scheduler or kubelet on this branch). Every wait is bounded.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const KUBECTL: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";
const TOKEN: &str = "controller-manager-test-token";
pub const WAIT: Duration = Duration::from_secs(90);

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    apiserver: Child,
    pub cms: Vec<Option<Child>>,
    /// Each replica's secure port.
    pub cm_ports: Vec<u16>,
    kubelet_stop: Arc<AtomicBool>,
}

pub struct Out {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Cluster {
    /// An API server on a fresh data dir, a kubeconfig for it, and the stand-in kubelet.
    pub fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let port = testkit::procs::free_port();
        let log = std::fs::File::create(dir.path().join("apiserver.log")).unwrap();
        let tokens = dir.path().join("tokens.csv");
        std::fs::write(&tokens, format!("{TOKEN},admin,admin,\"system:masters\"\n")).unwrap();
        let apiserver = Command::new(env!("CARGO_BIN_EXE_kybern"))
            .args([
                "apiserver",
                "--bind-address",
                "127.0.0.1",
                "--etcd-compaction-interval",
                "0",
            ])
            .arg("--secure-port")
            .arg(port.to_string())
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--cert-dir")
            .arg(dir.path().join("pki"))
            .arg("--token-auth-file")
            .arg(&tokens)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let ca = dir.path().join("pki/apiserver.crt");
        let deadline = Instant::now() + WAIT;
        while !ca.exists() {
            assert!(
                Instant::now() < deadline,
                "the API server wrote no certificate"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: k\n  cluster:\n    server: https://127.0.0.1:{port}\n\
                 \x20   certificate-authority: {}\ncontexts:\n- name: k\n  context:\n    cluster: k\n    user: anon\n\
                 current-context: k\nusers:\n- name: anon\n  user:\n    token: {TOKEN}\n",
                ca.display()
            ),
        )
        .unwrap();
        let c = Cluster {
            dir,
            kubeconfig,
            apiserver,
            cms: vec![],
            cm_ports: vec![],
            kubelet_stop: Arc::new(AtomicBool::new(false)),
        };
        c.wait_for("the API server to be ready", || {
            c.kubectl(&["get", "--raw", "/readyz"]).ok.then_some(())
        });
        c.start_kubelet();
        c
    }

    /// Starts a controller-manager replica with short election timings; its index.
    pub fn start_cm(&mut self, extra: &[&str]) -> usize {
        self.start_cm_on(testkit::procs::free_port(), extra)
    }

    /// Starts a controller-manager replica serving health and metrics on `port`.
    pub fn start_cm_on(&mut self, port: u16, extra: &[&str]) -> usize {
        let i = self.cms.len();
        let log = std::fs::File::create(self.cm_log_path(i)).unwrap();
        self.cm_ports.push(port);
        let child = Command::new(env!("CARGO_BIN_EXE_kybern"))
            .arg("controller-manager")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--bind-address", "127.0.0.1", "--secure-port"])
            .arg(port.to_string())
            .args([
                "--leader-elect-lease-duration=4s",
                "--leader-elect-renew-deadline=3s",
                "--leader-elect-retry-period=1s",
            ])
            .args(extra)
            .env("KYBERN_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.cms.push(Some(child));
        i
    }

    pub fn cm_log_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("cm-{i}.log"))
    }

    pub fn cm_log(&self, i: usize) -> String {
        std::fs::read_to_string(self.cm_log_path(i)).unwrap_or_default()
    }

    pub fn kubectl(&self, args: &[&str]) -> Out {
        let mut cmd = Command::new(KUBECTL);
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .args(args)
            .env("HOME", self.dir.path());
        let o = testkit::procs::run_bounded(cmd, 120);
        Out {
            ok: o.status.success(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// kubectl that must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.kubectl(args);
        assert!(
            o.ok,
            "kubectl {args:?} failed:\n{}\n{}\n{}",
            o.stdout,
            o.stderr,
            self.logs_tail()
        );
        o.stdout
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a)).unwrap()
    }

    /// Polls `f` until it yields, failing after WAIT with the components' logs.
    pub fn wait_for<T>(&self, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(v) = f() {
                return v;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}\n{}", self.logs_tail());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn logs_tail(&self) -> String {
        let tail = |s: String| {
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        };
        let mut out = format!(
            "--- apiserver log tail:\n{}\n",
            tail(
                std::fs::read_to_string(self.dir.path().join("apiserver.log")).unwrap_or_default()
            )
        );
        for i in 0..self.cms.len() {
            out.push_str(&format!(
                "--- controller-manager {i} log tail:\n{}\n",
                tail(self.cm_log(i))
            ));
        }
        out
    }

    /// The pods (not being deleted) whose controller is the ReplicaSet `rs_uid`.
    pub fn pods_of(&self, ns: &str, rs_uid: &str) -> Vec<Value> {
        let all = self.json(&["get", "pods", "-n", ns]);
        all["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .filter(|p| {
                p["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|r| {
                        r.iter()
                            .any(|r| r["uid"] == rs_uid && r["controller"] == true)
                    })
            })
            .cloned()
            .collect()
    }

    /// ReplicaSets labelled app=<app>.
    pub fn replicasets(&self, ns: &str, app: &str) -> Vec<Value> {
        let l = format!("app={app}");
        self.json(&["get", "rs", "-n", ns, "-l", &l])["items"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// Pods labelled app=<app>, not being deleted.
    pub fn app_pods(&self, ns: &str, app: &str) -> Vec<Value> {
        let l = format!("app={app}");
        self.json(&["get", "pods", "-n", ns, "-l", &l])["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .cloned()
            .collect()
    }

    /// Waits until the Deployment reports `n` ready, updated and available replicas and its
    /// app's pods number `n`.
    pub fn wait_deployment(&self, ns: &str, name: &str, n: i64) {
        self.wait_for(
            &format!("deployment {name} with {n} ready replicas"),
            || {
                let d = self.json(&["get", "deployment", name, "-n", ns]);
                let s = &d["status"];
                let done = s["readyReplicas"].as_i64().unwrap_or(0) == n
                    && s["updatedReplicas"].as_i64().unwrap_or(0) == n
                    && s["availableReplicas"].as_i64().unwrap_or(0) == n
                    && s["replicas"].as_i64().unwrap_or(0) == n
                    && s["observedGeneration"] == d["metadata"]["generation"];
                (done && self.app_pods(ns, name).len() as i64 == n).then_some(())
            },
        );
    }

    pub fn kill_cm(&mut self, i: usize, signal: &str) {
        if let Some(c) = &self.cms[i] {
            let ok = Command::new("kill")
                .args([signal, &c.id().to_string()])
                .status()
                .unwrap();
            assert!(ok.success());
        }
        if let Some(mut c) = self.cms[i].take() {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if c.try_wait().unwrap().is_some() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    panic!("controller-manager {i} did not exit on {signal}");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// GET https://127.0.0.1:<replica i's secure port><path> (self-signed: not verified); status
    /// code and body.
    pub fn cm_get(&self, i: usize, path: &str) -> (u16, String) {
        let url = format!("https://127.0.0.1:{}{path}", self.cm_ports[i]);
        let mut cmd = Command::new("curl");
        cmd.args(["-sk", "-w", "\n%{http_code}", &url]);
        let o = testkit::procs::run_bounded(cmd, 30);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let (body, code) = out.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// The stand-in kubelet: every pod not yet Ready gets phase Running and Ready=True, except
    /// pods labelled `kybern.test/never-ready` (they stay Pending).
    fn start_kubelet(&self) {
        let kubeconfig = self.kubeconfig.clone();
        let stop = self.kubelet_stop.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(kubelet(kubeconfig, stop));
        });
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kubelet_stop.store(true, Ordering::SeqCst);
        for c in self.cms.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.apiserver.kill();
        let _ = self.apiserver.wait();
    }
}

pub async fn client(kubeconfig: &Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(cfg).unwrap()
}

async fn kubelet(kubeconfig: PathBuf, stop: Arc<AtomicBool>) {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, Patch, PatchParams};
    use kube::runtime::watcher;
    let client = client(&kubeconfig).await;
    let api: Api<Pod> = Api::all(client.clone());
    let mut events = watcher::watcher(api, watcher::Config::default()).boxed();
    while !stop.load(Ordering::SeqCst) {
        let ev = match tokio::time::timeout(Duration::from_millis(500), events.next()).await {
            Ok(Some(Ok(ev))) => ev,
            Ok(Some(Err(_))) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Ok(None) => return,
            Err(_) => continue,
        };
        let pod = match ev {
            watcher::Event::Apply(p) | watcher::Event::InitApply(p) => p,
            _ => continue,
        };
        let ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let never = pod
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key("kybern.test/never-ready"));
        if ready || never || pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let now = k8s_openapi::jiff::Timestamp::now();
        let now = k8s_openapi::jiff::Timestamp::from_second(now.as_second())
            .unwrap()
            .to_string();
        let body = serde_json::json!({"status": {
            "phase": "Running",
            "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
            ],
        }});
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let _ = Api::<Pod>::namespaced(client.clone(), &ns)
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&body))
            .await;
    }
}
