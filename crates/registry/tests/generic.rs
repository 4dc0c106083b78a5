//! The generic store against the embedded store member.

use std::sync::Arc;
use std::time::Duration;

use apimachinery::patch::PatchType;
use apimachinery::LabelSelector;
use registry::{Deleted, ListOptions, Registry, WatchOptions, WriteOptions};
use serde_json::json;

async fn registry() -> (tempfile::TempDir, Arc<Registry>) {
    let dir = tempfile::tempdir().unwrap();
    let m = store::Member::start(dir.path(), store::Settings::default()).unwrap();
    let r = Registry::new(m);
    r.ensure_namespace("default").await.unwrap();
    (dir, r)
}

#[tokio::test]
async fn configmap_lifecycle() {
    let (_d, r) = registry().await;
    let cms = r.lookup("", "v1", "configmaps").unwrap();
    let w = WriteOptions::default();
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "a", "labels": {"app": "x"}}, "data": {"k": "v"}});
    let c = cms.create("default", cm.clone(), &w).await.unwrap().object;
    assert!(!c["metadata"]["uid"].as_str().unwrap().is_empty());
    let rv = c["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let e = cms.create("default", cm.clone(), &w).await.err().unwrap();
    assert_eq!(e.code, 409);
    assert_eq!(e.reason, "AlreadyExists");
    let e = cms.create("nope", cm.clone(), &w).await.err().unwrap();
    assert_eq!(e.message, "namespaces \"nope\" not found");

    let mut upd = c.clone();
    upd["data"]["k"] = json!("v2");
    let u = cms
        .update("default", "a", upd.clone(), None, &w)
        .await
        .unwrap()
        .object;
    assert_ne!(u["metadata"]["resourceVersion"].as_str().unwrap(), rv);
    let e = cms
        .update("default", "a", upd, None, &w)
        .await
        .err()
        .unwrap();
    assert_eq!(e.reason, "Conflict");

    let p = cms
        .patch(
            "default",
            "a",
            PatchType::Merge,
            &json!({"data": {"n": "1"}}),
            None,
            &w,
        )
        .await
        .unwrap()
        .object;
    assert_eq!(p["data"], json!({"k": "v2", "n": "1"}));

    cms.create("default", json!({"metadata": {"generateName": "g-"}}), &w)
        .await
        .unwrap();
    let all = cms.list("default", &ListOptions::default()).await.unwrap();
    assert_eq!(all.items.len(), 2);
    let sel = ListOptions {
        label: LabelSelector::parse("app=x").unwrap(),
        ..Default::default()
    };
    assert_eq!(cms.list("default", &sel).await.unwrap().items.len(), 1);
    let page = ListOptions {
        limit: 1,
        ..Default::default()
    };
    let p1 = cms.list("default", &page).await.unwrap();
    assert_eq!(p1.items.len(), 1);
    assert!(!p1.continue_token.is_empty());
    let p2 = cms
        .list(
            "default",
            &ListOptions {
                limit: 1,
                continue_token: p1.continue_token,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(p2.items.len(), 1);
    assert!(p2.continue_token.is_empty());

    let mut rx = cms
        .watch(
            "default",
            WatchOptions {
                resource_version: all.resource_version.to_string(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    cms.patch(
        "default",
        "a",
        PatchType::Json,
        &json!([{"op": "add", "path": "/data/z", "value": "1"}]),
        None,
        &w,
    )
    .await
    .unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ev.type_, "MODIFIED");
    assert_eq!(ev.object["data"]["z"], "1");
    match cms
        .delete("default", "a", &Default::default())
        .await
        .unwrap()
    {
        Deleted::Gone(_) => {}
        Deleted::Pending(_) => panic!("configmaps go at once"),
    }
    let ev = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ev.type_, "DELETED");
    assert_eq!(cms.get("default", "a").await.err().unwrap().code, 404);
}

#[tokio::test]
async fn deployment_defaults_validation_scale() {
    let (_d, r) = registry().await;
    let d = r.lookup("apps", "v1", "deployments").unwrap();
    let w = WriteOptions::default();
    let bad = json!({"metadata": {"name": "web"}, "spec": {"selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "other"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}});
    let e = d.create("default", bad, &w).await.err().unwrap();
    assert_eq!(e.code, 422);
    assert!(
        e.message.contains("spec.template.metadata.labels"),
        "{}",
        e.message
    );
    let good = json!({"metadata": {"name": "web"}, "spec": {"selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}});
    let o = d.create("default", good, &w).await.unwrap().object;
    assert_eq!(o["spec"]["replicas"], 1);
    assert_eq!(o["metadata"]["generation"], 1);
    assert_eq!(
        o["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
        "Always"
    );
    let s = d
        .patch(
            "default",
            "web",
            PatchType::Merge,
            &json!({"spec": {"replicas": 3}}),
            Some("scale"),
            &w,
        )
        .await
        .unwrap()
        .object;
    assert_eq!(s["spec"]["replicas"], 3);
    assert_eq!(s["metadata"]["generation"], 2);
    assert_eq!(
        d.get_scale("default", "web").await.unwrap()["status"]["selector"],
        "app=web"
    );
}

#[tokio::test]
async fn terminating_namespace_refuses_creates_and_finalizers_hold_objects() {
    let (_d, r) = registry().await;
    let nss = r.lookup("", "v1", "namespaces").unwrap();
    let cms = r.lookup("", "v1", "configmaps").unwrap();
    let w = WriteOptions::default();
    r.ensure_namespace("t").await.unwrap();
    let held = json!({"metadata": {"name": "held", "finalizers": ["example.com/hold"]}});
    cms.create("t", held, &w).await.unwrap();
    match nss.delete("", "t", &Default::default()).await.unwrap() {
        Deleted::Pending(ns) => assert_eq!(ns["status"]["phase"], "Terminating"),
        Deleted::Gone(_) => panic!("namespaces are finalized"),
    }
    let e = cms
        .create("t", json!({"metadata": {"name": "new"}}), &w)
        .await
        .err()
        .unwrap();
    assert_eq!(e.code, 403);
    assert_eq!(
        e.message,
        "configmaps \"new\" is forbidden: unable to create new content in namespace t because it is being terminated"
    );
    // The held configmap is only marked; removing its finalizer lets it (and then the namespace) go.
    match cms.delete("t", "held", &Default::default()).await.unwrap() {
        Deleted::Pending(o) => assert!(o["metadata"]["deletionTimestamp"].is_string()),
        Deleted::Gone(_) => panic!("finalizer must hold the object"),
    }
    cms.patch(
        "t",
        "held",
        PatchType::Merge,
        &json!({"metadata": {"finalizers": null}}),
        None,
        &w,
    )
    .await
    .unwrap();
    assert_eq!(cms.get("t", "held").await.err().unwrap().code, 404);
    r.finalize_namespace("t").await.unwrap();
    assert_eq!(nss.get("", "t").await.err().unwrap().code, 404);
}

#[tokio::test]
async fn dry_run_writes_nothing() {
    let (_d, r) = registry().await;
    let cms = r.lookup("", "v1", "configmaps").unwrap();
    let dry = WriteOptions {
        dry_run: true,
        ..Default::default()
    };
    let o = cms
        .create("default", json!({"metadata": {"name": "d"}}), &dry)
        .await
        .unwrap()
        .object;
    assert_eq!(o["metadata"]["name"], "d");
    assert_eq!(cms.get("default", "d").await.err().unwrap().code, 404);
}

#[tokio::test]
async fn two_registries_on_one_store_never_share_a_cluster_ip() {
    let dir = tempfile::tempdir().unwrap();
    let m = store::Member::start(dir.path(), store::Settings::default()).unwrap();
    let opts = registry::RegistryOptions {
        service_cluster_ip_range: "10.0.0.0/29".into(),
        ..Default::default()
    };
    let a = Registry::with_options(m.clone(), &opts).unwrap();
    let b = Registry::with_options(m, &opts).unwrap();
    a.ensure_namespace("default").await.unwrap();
    let w = WriteOptions::default();
    let mut ips = std::collections::BTreeSet::new();
    // 6 usable addresses, .1 reserved for the kubernetes service: 5 services fit.
    for i in 0..5 {
        let reg = if i % 2 == 0 { &a } else { &b };
        let svc = json!({"metadata": {"name": format!("s{i}")}, "spec": {"ports": [{"port": 80}]}});
        let o = reg
            .lookup("", "v1", "services")
            .unwrap()
            .create("default", svc, &w)
            .await
            .unwrap()
            .object;
        assert!(ips.insert(o["spec"]["clusterIP"].as_str().unwrap().to_string()));
    }
    let svc = json!({"metadata": {"name": "full"}, "spec": {"ports": [{"port": 80}]}});
    let e = a
        .lookup("", "v1", "services")
        .unwrap()
        .create("default", svc, &w)
        .await
        .err()
        .unwrap();
    assert_eq!(e.code, 422, "{}", e.message);
    // Deleting one frees its address.
    b.lookup("", "v1", "services")
        .unwrap()
        .delete("default", "s0", &Default::default())
        .await
        .unwrap();
    let svc = json!({"metadata": {"name": "again"}, "spec": {"ports": [{"port": 80}]}});
    a.lookup("", "v1", "services")
        .unwrap()
        .create("default", svc, &w)
        .await
        .unwrap();
}

#[tokio::test]
async fn watch_selector_transitions_and_initial_events() {
    let (_d, r) = registry().await;
    let cms = r.lookup("", "v1", "configmaps").unwrap();
    let w = WriteOptions::default();
    cms.create(
        "default",
        json!({"metadata": {"name": "pre", "labels": {"a": "1"}}}),
        &w,
    )
    .await
    .unwrap();
    let opts = WatchOptions {
        label: LabelSelector::parse("a=1").unwrap(),
        allow_bookmarks: true,
        send_initial_events: Some(true),
        ..Default::default()
    };
    let mut rx = cms.watch("default", opts).await.unwrap();
    let e = next(&mut rx).await;
    assert_eq!(
        (e.type_, e.object["metadata"]["name"].as_str()),
        ("ADDED", Some("pre"))
    );
    let e = next(&mut rx).await;
    assert_eq!(e.type_, "BOOKMARK");
    assert_eq!(
        e.object["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    cms.create(
        "default",
        json!({"metadata": {"name": "x", "labels": {"a": "2"}}}),
        &w,
    )
    .await
    .unwrap();
    cms.patch(
        "default",
        "x",
        PatchType::Merge,
        &json!({"metadata": {"labels": {"a": "1"}}}),
        None,
        &w,
    )
    .await
    .unwrap();
    let e = next(&mut rx).await;
    assert_eq!(
        (e.type_, e.object["metadata"]["name"].as_str()),
        ("ADDED", Some("x"))
    );
    cms.patch(
        "default",
        "x",
        PatchType::Merge,
        &json!({"metadata": {"labels": {"a": "3"}}}),
        None,
        &w,
    )
    .await
    .unwrap();
    let e = next(&mut rx).await;
    assert_eq!(
        (e.type_, e.object["metadata"]["name"].as_str()),
        ("DELETED", Some("x"))
    );
}

#[tokio::test]
async fn compacted_revisions_are_gone() {
    let (_d, r) = registry().await;
    let cms = r.lookup("", "v1", "configmaps").unwrap();
    let w = WriteOptions::default();
    for i in 0..3 {
        cms.create(
            "default",
            json!({"metadata": {"name": format!("c{i}")}}),
            &w,
        )
        .await
        .unwrap();
    }
    let p1 = cms
        .list(
            "default",
            &ListOptions {
                limit: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let old = p1.resource_version;
    cms.patch(
        "default",
        "c0",
        PatchType::Merge,
        &json!({"data": {"a": "b"}}),
        None,
        &w,
    )
    .await
    .unwrap();
    let now = cms.get("default", "c0").await.unwrap()["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse::<i64>()
        .unwrap();
    r.kv.compact(etcd_api::PbCompactionRequest {
        revision: now,
        physical: true,
    })
    .await
    .unwrap();
    let e = cms
        .list(
            "default",
            &ListOptions {
                limit: 1,
                continue_token: p1.continue_token,
                ..Default::default()
            },
        )
        .await
        .err()
        .unwrap();
    assert_eq!((e.code, e.reason), (410, "Expired"));
    let mut rx = cms
        .watch(
            "default",
            WatchOptions {
                resource_version: old.to_string(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ev.type_, "ERROR");
    assert_eq!(ev.object["code"], 410);
}

async fn next(rx: &mut registry::watch::EventStream) -> registry::WatchEvent {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn events_are_stored_with_a_lease() {
    let (_d, r) = registry().await;
    let ev = r.lookup("", "v1", "events").unwrap();
    let obj = json!({"metadata": {"name": "e1"}, "involvedObject": {"kind": "Pod", "name": "p"},
        "reason": "Started", "message": "hi", "type": "Normal"});
    ev.create("default", obj, &WriteOptions::default())
        .await
        .unwrap();
    let kv =
        r.kv.range(etcd_api::PbRangeRequest {
            key: b"/registry/events/default/e1".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_ne!(kv.kvs[0].lease, 0);
    let cms = r.lookup("", "v1", "configmaps").unwrap();
    cms.create(
        "default",
        json!({"metadata": {"name": "c"}}),
        &WriteOptions::default(),
    )
    .await
    .unwrap();
    let kv =
        r.kv.range(etcd_api::PbRangeRequest {
            key: b"/registry/configmaps/default/c".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(kv.kvs[0].lease, 0);
}

#[tokio::test]
async fn wrong_types_are_refused_not_panicked_on() {
    let (_d, r) = registry().await;
    let d = r.lookup("apps", "v1", "deployments").unwrap();
    let w = WriteOptions::default();
    for bad in [
        json!({"metadata": {"name": "a"}, "spec": "x"}),
        json!({"metadata": {"name": "a"}, "spec": {"template": {"spec": []}}}),
        json!({"metadata": {"name": "a", "labels": "x"}, "spec": {}}),
        json!({"metadata": {"name": "a"}, "spec": {"replicas": "three"}}),
    ] {
        let e = d.create("default", bad.clone(), &w).await.err().unwrap();
        assert_eq!(e.code, 400, "{bad}: {}", e.message);
    }
    let pods = r.lookup("", "v1", "pods").unwrap();
    let e = pods
        .create(
            "default",
            json!({"metadata": {"name": "p"}, "spec": {"containers": "x"}}),
            &w,
        )
        .await
        .err()
        .unwrap();
    assert_eq!(e.code, 400);
    // A missing required field is a 422 naming it.
    let e = d
        .create(
            "default",
            json!({"metadata": {"name": "a"}, "spec": {}}),
            &w,
        )
        .await
        .err()
        .unwrap();
    assert_eq!(e.code, 422, "{}", e.message);
    assert!(e.message.contains("spec.selector"), "{}", e.message);
}

fn encryption(keys: &[(&str, &str)]) -> registry::RegistryOptions {
    let mut s = "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aesgcm:\n      keys:\n".to_string();
    for (n, k) in keys {
        s.push_str(&format!("      - name: {n}\n        secret: {k}\n"));
    }
    s.push_str("  - identity: {}\n");
    registry::RegistryOptions {
        encryption: registry::encryption::Encryption::parse(&s).unwrap(),
        ..Default::default()
    }
}

async fn raw(r: &Registry, key: &str) -> Vec<u8> {
    r.kv.range(etcd_api::PbRangeRequest {
        key: key.as_bytes().to_vec(),
        ..Default::default()
    })
    .await
    .unwrap()
    .kvs[0]
        .value
        .clone()
}

#[tokio::test]
async fn secrets_are_encrypted_at_rest_and_keys_rotate() {
    const K1: &str = "c2VjcmV0IGlzIHNlY3VyZSwgdGhpcyBpcyAzMiBieXQ=";
    const K2: &str = "MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI=";
    let (_d, plain) = registry().await;
    let w = WriteOptions::default();
    // A secret written before encryption was turned on stays readable (identity reads it).
    let old = json!({"metadata": {"name": "old"}, "data": {"p": "b2xkLXNlY3JldA=="}});
    let sec = plain.lookup("", "v1", "secrets").unwrap();
    sec.create("default", old, &w).await.unwrap();

    let r1 = Registry::with_options(plain.kv.clone(), &encryption(&[("key1", K1)])).unwrap();
    let s1 = r1.lookup("", "v1", "secrets").unwrap();
    let obj = json!({"metadata": {"name": "db"}, "stringData": {"password": "hunter2-plaintext"}});
    s1.create("default", obj, &w).await.unwrap();
    let v = raw(&r1, "/registry/secrets/default/db").await;
    assert!(v.starts_with(b"k8s:enc:aesgcm:v1:key1:"), "{v:?}");
    let text = String::from_utf8_lossy(&v);
    assert!(!text.contains("hunter2") && !text.contains("aHVudGVyMi1wbGFpbnRleHQ="));
    let got = s1.get("default", "db").await.unwrap();
    assert_eq!(got["data"]["password"], "aHVudGVyMi1wbGFpbnRleHQ=");
    assert_eq!(
        s1.get("default", "old").await.unwrap()["data"]["p"],
        "b2xkLXNlY3JldA=="
    );
    // Only secrets are configured: configmaps stay plain JSON.
    let cms = r1.lookup("", "v1", "configmaps").unwrap();
    cms.create("default", json!({"metadata": {"name": "c"}}), &w)
        .await
        .unwrap();
    assert!(raw(&r1, "/registry/configmaps/default/c")
        .await
        .starts_with(b"{"));

    // Rotation: a new first key; the old key still reads, a rewrite re-encrypts with the new one.
    let r2 = Registry::with_options(plain.kv.clone(), &encryption(&[("key2", K2), ("key1", K1)]))
        .unwrap();
    let s2 = r2.lookup("", "v1", "secrets").unwrap();
    let mut got = s2.get("default", "db").await.unwrap();
    assert_eq!(got["data"]["password"], "aHVudGVyMi1wbGFpbnRleHQ=");
    got["metadata"]["labels"] = json!({"rotated": "yes"});
    s2.update("default", "db", got, None, &w).await.unwrap();
    let v = raw(&r2, "/registry/secrets/default/db").await;
    assert!(v.starts_with(b"k8s:enc:aesgcm:v1:key2:"), "{v:?}");
    // key1 alone no longer reads it; key2 alone does.
    let e = s1.get("default", "db").await.err().unwrap();
    assert_eq!(e.code, 500);
    let r3 = Registry::with_options(plain.kv.clone(), &encryption(&[("key2", K2)])).unwrap();
    let s3 = r3.lookup("", "v1", "secrets").unwrap();
    assert_eq!(
        s3.get("default", "db").await.unwrap()["metadata"]["labels"]["rotated"],
        "yes"
    );
    // Lists and watches decrypt too.
    let l = s2.list("default", &ListOptions::default()).await.unwrap();
    assert_eq!(l.items.len(), 2);
}

#[tokio::test]
async fn every_resource_can_be_encrypted() {
    let dir = tempfile::tempdir().unwrap();
    let m = store::Member::start(dir.path(), store::Settings::default()).unwrap();
    let cfg = "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n\
               - resources: ['*.*']\n  providers:\n  - aesgcm:\n      keys:\n      - name: k\n        \
               secret: MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI=\n";
    let opts = registry::RegistryOptions {
        encryption: registry::encryption::Encryption::parse(cfg).unwrap(),
        ..Default::default()
    };
    let r = Registry::with_options(m, &opts).unwrap();
    r.ensure_namespace("default").await.unwrap();
    assert!(raw(&r, "/registry/namespaces/default")
        .await
        .starts_with(b"k8s:enc:aesgcm:v1:k:"));
    let d = r.lookup("apps", "v1", "deployments").unwrap();
    let dep = json!({"metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"a": "b"}},
        "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
    d.create("default", dep, &WriteOptions::default())
        .await
        .unwrap();
    assert!(raw(&r, "/registry/deployments/default/d")
        .await
        .starts_with(b"k8s:enc:aesgcm:v1:k:"));
    assert_eq!(d.get("default", "d").await.unwrap()["spec"]["replicas"], 1);
}

#[tokio::test]
async fn propagation_policy_sets_the_garbage_collector_finalizers() {
    use registry::{DeleteOptions, Propagation};
    let (_d, r) = registry().await;
    let cms = r.lookup("", "v1", "configmaps").unwrap();
    let w = WriteOptions::default();
    let del = |p| DeleteOptions {
        propagation: Some(p),
        ..Default::default()
    };
    for name in ["fg", "orphan", "bg"] {
        cms.create("default", json!({"metadata": {"name": name}}), &w)
            .await
            .unwrap();
    }
    // Foreground: marked, with foregroundDeletion.
    match cms
        .delete("default", "fg", &del(Propagation::Foreground))
        .await
        .unwrap()
    {
        Deleted::Pending(o) => {
            assert_eq!(o["metadata"]["finalizers"], json!(["foregroundDeletion"]));
            assert!(o["metadata"]["deletionTimestamp"].is_string());
        }
        Deleted::Gone(_) => panic!("foreground deletion waits for dependents"),
    }
    // A second delete may switch the policy: the finalizers follow it.
    match cms
        .delete("default", "fg", &del(Propagation::Orphan))
        .await
        .unwrap()
    {
        Deleted::Pending(o) => assert_eq!(o["metadata"]["finalizers"], json!(["orphan"])),
        Deleted::Gone(_) => panic!("orphan deletion waits for the collector"),
    }
    match cms
        .delete("default", "orphan", &del(Propagation::Orphan))
        .await
        .unwrap()
    {
        Deleted::Pending(o) => assert_eq!(o["metadata"]["finalizers"], json!(["orphan"])),
        Deleted::Gone(_) => panic!("orphan deletion waits for the collector"),
    }
    // Background (and no policy) removes the object at once.
    assert!(matches!(
        cms.delete("default", "bg", &del(Propagation::Background))
            .await
            .unwrap(),
        Deleted::Gone(_)
    ));
    // Background on an object marked for orphaning drops the finalizer: it goes.
    assert!(matches!(
        cms.delete("default", "orphan", &del(Propagation::Background))
            .await
            .unwrap(),
        Deleted::Gone(_)
    ));
}
