//! `kybern bench apiserver` at tiny size against a `kybern apiserver` process the test starts (on
//! its embedded store, HTTPS with a self-signed certificate, a static token): the JSON report's
//! counts say every pod was created, every watcher saw every write's event, and no request failed.
//! No timing is asserted. Also: a wrong token fails with exit code 1.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;
use testkit::procs::free_port;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kybern"))
}

const TOKEN: &str = "bench-test-token-0123456789";

/// A `kybern apiserver` process, killed when dropped.
struct Apiserver {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Apiserver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_apiserver() -> Apiserver {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(
        &tokens,
        format!("{TOKEN},bench,bench-uid,\"system:masters\"\n"),
    )
    .unwrap();
    let port = free_port();
    let child = Command::new(bin())
        .arg("apiserver")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--cert-dir")
        .arg(dir.path().join("pki"))
        .arg("--token-auth-file")
        .arg(&tokens)
        .args(["--anonymous-auth=false", "--bind-address", "127.0.0.1"])
        .args(["--secure-port", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Apiserver {
        child,
        url: format!("https://127.0.0.1:{port}"),
        _dir: dir,
    }
}

/// Runs `kybern bench apiserver ARGS` until it exits (killed after `secs`, failing the test).
fn bench(args: &[&str], secs: u64) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(["bench", "apiserver"]).args(args);
    testkit::procs::run_bounded(cmd, secs)
}

fn report<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["reports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no report {name} in {doc:#}"))
}

#[test]
fn tiny_run_counts_every_pod_and_event() {
    let api = start_apiserver();
    let out = bench(
        &[
            "--server",
            &api.url,
            "--token",
            TOKEN,
            "--insecure-skip-tls-verify",
            "--dial-timeout",
            "60s",
            "--clients",
            "2",
            "--pods",
            "20",
            "--watchers",
            "3",
            "--watchers-per-conn",
            "2",
            "--watch-writes",
            "10",
            "--watch-write-rate",
            "0",
            "--lists",
            "2",
            "--list-limit",
            "7",
            "--gets",
            "15",
            "--namespace",
            "bench-test",
            "--no-progress",
            "--json",
        ],
        180,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench failed: {:?}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    let doc: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {stdout}"));
    assert_eq!(doc["benchmark"], "apiserver");
    assert_eq!(doc["watch_conns"], 2, "{doc:#}");
    let c = &doc["counts"];
    assert_eq!(c["created"], 20, "{c:#}");
    assert_eq!(c["list_items"], 20, "{c:#}");
    assert_eq!(c["paged_list_items"], 20, "{c:#}");
    assert_eq!(c["paged_list_pages"], 3, "{c:#}");
    assert_eq!(c["watchers"], 3, "{c:#}");
    assert_eq!(c["watchers_started"], 3, "{c:#}");
    assert_eq!(c["watch_writes"], 10, "{c:#}");
    assert_eq!(c["watch_events_expected"], 30, "{c:#}");
    assert_eq!(c["watch_events_received"], 30, "{c:#}");
    assert_eq!(c["watch_events_other"], 0, "{c:#}");
    assert_eq!(c["watchers_complete"], 3, "{c:#}");
    assert_eq!(c["gets"], 15, "{c:#}");
    for (name, requests) in [
        ("create", 20),
        ("list", 2),
        ("list-paged", 2),
        ("list-page", 6),
        ("watch-open", 3),
        ("watch-write", 10),
        ("watch-event", 30),
        ("get", 15),
    ] {
        let r = report(&doc, name);
        assert_eq!(r["requests"], requests, "{r:#}");
        assert_eq!(r["errors"], 0, "{r:#}");
        assert!(r["latency"]["p99_ms"].as_f64().is_some(), "{r:#}");
    }

    // A token the server does not know: every create fails, and so does the run (exit 1).
    let out = bench(
        &[
            "--server",
            &api.url,
            "--token",
            "wrong",
            "--insecure-skip-tls-verify",
            "--pods",
            "2",
            "--watchers",
            "0",
            "--no-progress",
        ],
        60,
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
