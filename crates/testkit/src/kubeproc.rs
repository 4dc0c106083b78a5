//! A `kybern apiserver` process on its embedded store (HTTPS with a self-signed certificate, a
//! static admin token, a free loopback port), a kubeconfig for it, the real kubectl, and other
//! kybern components started as processes against it (`kybern scheduler`, `kybern hollow-nodes`,
//! ...). Every process is killed when dropped; every wait is bounded; logs go to files whose
//! tails a failing test prints.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::procs::{free_port, run_bounded};

pub const TOKEN: &str = "kybern-test-admin-token-0123456789";

/// kubectl to drive: $KUBECTL, else the 1.33 binary of the machine image, else one on PATH.
pub fn kubectl_binary() -> Option<PathBuf> {
    if let Ok(k) = std::env::var("KUBECTL") {
        return Some(k.into());
    }
    [
        "/usr/lib/google-cloud-sdk/bin/kubectl.1.33",
        "/usr/bin/kubectl",
        "/usr/local/bin/kubectl",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// A child process with its log file, killed when dropped.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn log_tail(&self, lines: usize) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let v: Vec<&str> = s.lines().collect();
        v[v.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct KubeCluster {
    pub dir: tempfile::TempDir,
    pub bin: PathBuf,
    pub kubectl: PathBuf,
    pub kubeconfig: PathBuf,
    pub url: String,
    pub procs: Vec<Proc>,
}

impl KubeCluster {
    /// Starts `kybern apiserver` (the binary `bin`) and waits until kubectl can list namespaces.
    /// None when no kubectl is installed.
    pub fn start(bin: &Path) -> Option<KubeCluster> {
        let kubectl = kubectl_binary()?;
        let dir = tempfile::tempdir().expect("temp dir");
        let tokens = dir.path().join("tokens.csv");
        std::fs::write(
            &tokens,
            format!("{TOKEN},admin,admin-uid,\"system:masters\"\n"),
        )
        .unwrap();
        let port = free_port();
        let url = format!("https://127.0.0.1:{port}");
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: kybern\n  cluster:\n    server: {url}\n    \
                 insecure-skip-tls-verify: true\nusers:\n- name: admin\n  user:\n    token: {TOKEN}\n\
                 contexts:\n- name: kybern\n  context:\n    cluster: kybern\n    user: admin\n\
                 current-context: kybern\n"
            ),
        )
        .unwrap();
        let mut c = KubeCluster {
            bin: bin.into(),
            kubectl,
            kubeconfig,
            url,
            procs: vec![],
            dir,
        };
        let data = c.dir.path().join("data");
        let pki = c.dir.path().join("pki");
        let args: Vec<String> = vec![
            "apiserver".into(),
            "--data-dir".into(),
            data.display().to_string(),
            "--cert-dir".into(),
            pki.display().to_string(),
            "--token-auth-file".into(),
            tokens.display().to_string(),
            "--anonymous-auth=false".into(),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={port}"),
        ];
        c.spawn("apiserver", &args);
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let out = c.kubectl_out(&["get", "namespaces", "-o", "name"]);
            if out.status.success() {
                break;
            }
            if Instant::now() > deadline {
                panic!(
                    "the apiserver did not answer kubectl within 90 s: {}\n{}",
                    String::from_utf8_lossy(&out.stderr),
                    c.procs[0].log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Some(c)
    }

    /// Starts `kybern ARGS...` with its output in `<dir>/<name>.log`.
    pub fn spawn(&mut self, name: &str, args: &[String]) -> &mut Proc {
        let log = self.dir.path().join(format!("{name}.log"));
        let f = std::fs::File::create(&log).unwrap();
        let child = Command::new(&self.bin)
            .args(args)
            .env(
                "KYBERN_LOG",
                std::env::var("KYBERN_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        self.procs.push(Proc {
            name: name.into(),
            child,
            log,
        });
        self.procs.last_mut().unwrap()
    }

    /// Starts a component that takes `--kubeconfig` (e.g. `["scheduler", "--secure-port=0"]`).
    pub fn spawn_client(&mut self, name: &str, args: &[&str]) -> &mut Proc {
        let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        a.push(format!("--kubeconfig={}", self.kubeconfig.display()));
        self.spawn(name, &a)
    }

    /// kubectl ARGS (bounded to 60 s), whatever its exit status.
    pub fn kubectl_out(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(&self.kubectl);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        run_bounded(cmd, 60)
    }

    /// kubectl ARGS, which must succeed; its stdout.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let out = self.kubectl_out(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl apply -f` of this YAML.
    pub fn apply(&self, yaml: &str) -> String {
        let f = self.dir.path().join(format!("apply-{}.yaml", free_port()));
        std::fs::write(&f, yaml).unwrap();
        self.kubectl(&["apply", "-f", f.to_str().unwrap()])
    }

    /// kubectl ... -o json, parsed.
    pub fn get_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl(&a)).expect("kubectl -o json")
    }

    /// The tails of every process log, for a failure message.
    pub fn logs(&self) -> String {
        self.procs
            .iter()
            .map(|p| format!("--- {} ---\n{}", p.name, p.log_tail(25)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Polls `f` every 200 ms until it returns Some, for at most `secs`; panics with `what` and the
    /// logs when it does not.
    pub fn wait_for<T>(&self, what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = f() {
                return v;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {secs}s waiting for {what}\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
