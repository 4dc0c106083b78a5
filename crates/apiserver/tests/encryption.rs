//! Secrets encrypted at rest, seen from both ends: real kubectl writes and reads them through the
//! API server, the real etcdctl reads what etcd 3.4 holds.

mod common;

use std::time::Duration;

use common::{Backend, Cluster};

const K1: &str = "c2VjcmV0IGlzIHNlY3VyZSwgdGhpcyBpcyAzMiBieXQ=";
const K2: &str = "MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI=";
const PLAIN: &str = "hunter2-plaintext";
const PLAIN_B64: &str = "aHVudGVyMi1wbGFpbnRleHQ=";

fn config(dir: &std::path::Path, name: &str, keys: &[(&str, &str)]) -> String {
    let mut s = "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n\
                 resources:\n  - resources:\n      - secrets\n    providers:\n      - aesgcm:\n          keys:\n"
        .to_string();
    for (n, k) in keys {
        s.push_str(&format!(
            "            - name: {n}\n              secret: {k}\n"
        ));
    }
    s.push_str("      - identity: {}\n");
    let p = dir.join(name);
    std::fs::write(&p, s).unwrap();
    p.display().to_string()
}

/// The raw value etcd holds at `key`, through etcdctl.
fn etcd_raw(c: &Cluster, key: &str) -> String {
    let o = c
        .etcd
        .as_ref()
        .unwrap()
        .etcdctl(
            &["get", key, "--print-value-only"],
            None,
            Duration::from_secs(30),
        )
        .unwrap();
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(!o.stdout.trim().is_empty(), "no value at {key}");
    o.stdout
}

#[test]
fn secrets_are_encrypted_by_default() {
    let Some(c) = Cluster::start_on(Backend::Etcd) else {
        return;
    };
    assert!(c.dir.path().join("pki-0/encryption-config.yaml").exists());
    c.ok(&[
        "create",
        "secret",
        "generic",
        "db",
        &format!("--from-literal=password={PLAIN}"),
    ]);
    let raw = etcd_raw(&c, "/registry/secrets/default/db");
    assert!(raw.starts_with("k8s:enc:aesgcm:v1:key1:"), "{raw:?}");
    assert!(!raw.contains(PLAIN) && !raw.contains(PLAIN_B64), "{raw:?}");
    assert_eq!(
        c.ok(&["get", "secret", "db", "-o", "jsonpath={.data.password}"]),
        PLAIN_B64
    );
    // Other resources are not encrypted.
    c.ok(&["create", "configmap", "open", "--from-literal=k=visible"]);
    assert!(etcd_raw(&c, "/registry/configmaps/default/open").contains("visible"));
}

#[test]
fn rotation_with_a_new_first_key() {
    let Some(kubectl) = common::kubectl_binary() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let k1 = config(dir.path(), "k1.yaml", &[("key1", K1)]);
    let k21 = config(dir.path(), "k21.yaml", &[("key2", K2), ("key1", K1)]);
    let c = Cluster::start_custom(
        kubectl,
        1,
        Backend::Etcd,
        &[&format!("--encryption-provider-config={k1}")],
    )
    .pop()
    .unwrap();
    c.ok(&[
        "create",
        "secret",
        "generic",
        "db",
        &format!("--from-literal=password={PLAIN}"),
    ]);
    assert!(etcd_raw(&c, "/registry/secrets/default/db").starts_with("k8s:enc:aesgcm:v1:key1:"));

    // A second API server with key2 first still reads what key1 wrote...
    let rotated = c.attach(&[&format!("--encryption-provider-config={k21}")]);
    assert_eq!(
        rotated.ok(&["get", "secret", "db", "-o", "jsonpath={.data.password}"]),
        PLAIN_B64
    );
    // ...and a rewrite re-encrypts with key2.
    rotated.ok(&["label", "secret", "db", "rotated=yes"]);
    let raw = etcd_raw(&c, "/registry/secrets/default/db");
    assert!(raw.starts_with("k8s:enc:aesgcm:v1:key2:"), "{raw:?}");
    assert!(!raw.contains(PLAIN) && !raw.contains(PLAIN_B64));
    // The server that only knows key1 can no longer read it: a 500 Status, never plaintext.
    let e = c.fails(&["get", "secret", "db"]);
    assert!(e.contains("Error from server (InternalError)"), "{e}");
    assert_eq!(
        rotated.ok(&[
            "get",
            "secret",
            "db",
            "-o",
            "jsonpath={.metadata.labels.rotated}"
        ]),
        "yes"
    );
}
