//! The official Python `kubernetes` client (PyPI) against the API server, on both backends.

mod common;

use common::{Backend, Cluster};

fn run_python(c: &Cluster) {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import kubernetes"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "the Python kubernetes client is missing: `python3 -m pip install kubernetes` \
         (scripts/deps.sh installs it)"
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/client.py");
    let o = std::process::Command::new("timeout")
        .args(["120", "python3", script])
        .arg(&c.kubeconfig)
        .env("HOME", c.dir.path())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "python client failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "ok\n");
}

#[test]
fn python_client_list_watch_create_patch_delete() {
    if let Some(c) = Cluster::start_on(Backend::Embedded) {
        run_python(&c);
    }
}

#[test]
fn python_client_on_etcd() {
    if let Some(c) = Cluster::start_on(Backend::Etcd) {
        run_python(&c);
    }
}
