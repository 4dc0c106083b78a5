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
    let rv = c["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    let e = cms.create("default", cm.clone(), &w).await.err().unwrap();
    assert_eq!(e.code, 409);
    assert_eq!(e.reason, "AlreadyExists");
    let e = cms.create("nope", cm.clone(), &w).await.err().unwrap();
    assert_eq!(e.message, "namespaces \"nope\" not found");

    let mut upd = c.clone();
    upd["data"]["k"] = json!("v2");
    let u = cms.update("default", "a", upd.clone(), None, &w).await.unwrap().object;
    assert_ne!(u["metadata"]["resourceVersion"].as_str().unwrap(), rv);
    let e = cms.update("default", "a", upd, None, &w).await.err().unwrap();
    assert_eq!(e.reason, "Conflict");

    let p = cms
        .patch("default", "a", PatchType::Merge, &json!({"data": {"n": "1"}}), None, &w)
        .await
        .unwrap()
        .object;
    assert_eq!(p["data"], json!({"k": "v2", "n": "1"}));

    cms.create("default", json!({"metadata": {"generateName": "g-"}}), &w).await.unwrap();
    let all = cms.list("default", &ListOptions::default()).await.unwrap();
    assert_eq!(all.items.len(), 2);
    let sel = ListOptions { label: LabelSelector::parse("app=x").unwrap(), ..Default::default() };
    assert_eq!(cms.list("default", &sel).await.unwrap().items.len(), 1);
    let page = ListOptions { limit: 1, ..Default::default() };
    let p1 = cms.list("default", &page).await.unwrap();
    assert_eq!(p1.items.len(), 1);
    assert!(!p1.continue_token.is_empty());
    let p2 = cms
        .list("default", &ListOptions { limit: 1, continue_token: p1.continue_token, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(p2.items.len(), 1);
    assert!(p2.continue_token.is_empty());

    let mut rx = cms
        .watch("default", WatchOptions { resource_version: all.resource_version.to_string(), ..Default::default() })
        .await
        .unwrap();
    cms.patch("default", "a", PatchType::Json, &json!([{"op": "add", "path": "/data/z", "value": "1"}]), None, &w)
        .await
        .unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
    assert_eq!(ev.type_, "MODIFIED");
    assert_eq!(ev.object["data"]["z"], "1");
    match cms.delete("default", "a", &Default::default()).await.unwrap() {
        Deleted::Gone(_) => {}
        Deleted::Pending(_) => panic!("configmaps go at once"),
    }
    let ev = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
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
    assert!(e.message.contains("spec.template.metadata.labels"), "{}", e.message);
    let good = json!({"metadata": {"name": "web"}, "spec": {"selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}});
    let o = d.create("default", good, &w).await.unwrap().object;
    assert_eq!(o["spec"]["replicas"], 1);
    assert_eq!(o["metadata"]["generation"], 1);
    assert_eq!(o["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"], "Always");
    let s = d
        .patch("default", "web", PatchType::Merge, &json!({"spec": {"replicas": 3}}), Some("scale"), &w)
        .await
        .unwrap()
        .object;
    assert_eq!(s["spec"]["replicas"], 3);
    assert_eq!(s["metadata"]["generation"], 2);
    assert_eq!(d.get_scale("default", "web").await.unwrap()["status"]["selector"], "app=web");
}
