//! Watches served from the shared watch cache: many watchers of one resource with different
//! namespaces and selectors each see exactly their events, and a watcher that stops reading
//! while far more changes than the cache keeps are written still gets every event, in order.

use std::sync::Arc;
use std::time::Duration;

use apimachinery::patch::PatchType;
use apimachinery::LabelSelector;
use registry::{Registry, WatchOptions, WriteOptions};
use serde_json::json;

async fn registry() -> (tempfile::TempDir, Arc<Registry>) {
    let dir = tempfile::tempdir().unwrap();
    let m = store::Member::start(dir.path(), store::Settings::default()).unwrap();
    let r = Registry::new(m);
    for ns in ["default", "other"] {
        r.ensure_namespace(ns).await.unwrap();
    }
    (dir, r)
}

async fn next(rx: &mut registry::watch::EventStream) -> (String, String) {
    let e = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("an event within 20s")
        .expect("the watch is open");
    let name = e.object["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    (e.type_.to_string(), name)
}

#[tokio::test]
async fn watchers_of_one_resource_see_their_own_namespaces_and_selectors() {
    let (_d, r) = registry().await;
    let cms = r.lookup("", "v1", "configmaps").unwrap();
    let w = WriteOptions::default();
    let rv = cms
        .list("", &Default::default())
        .await
        .unwrap()
        .resource_version;
    let from = |label: &str| WatchOptions {
        resource_version: rv.to_string(),
        label: LabelSelector::parse(label).unwrap(),
        ..Default::default()
    };
    let mut all = cms.watch("", from("")).await.unwrap();
    let mut default_ns = cms.watch("default", from("")).await.unwrap();
    let mut labelled = cms.watch("", from("team=a")).await.unwrap();
    cms.create("other", json!({"metadata": {"name": "o1"}}), &w)
        .await
        .unwrap();
    cms.create("default", json!({"metadata": {"name": "d1"}}), &w)
        .await
        .unwrap();
    cms.patch(
        "default",
        "d1",
        PatchType::Merge,
        &json!({"metadata": {"labels": {"team": "a"}}}),
        None,
        &w,
    )
    .await
    .unwrap();
    cms.delete("default", "d1", &Default::default())
        .await
        .unwrap();
    let mut got = vec![];
    for _ in 0..4 {
        got.push(next(&mut all).await);
    }
    let want = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(t, n)| (t.to_string(), n.to_string()))
            .collect()
    };
    assert_eq!(
        got,
        want(&[
            ("ADDED", "o1"),
            ("ADDED", "d1"),
            ("MODIFIED", "d1"),
            ("DELETED", "d1")
        ])
    );
    let mut got = vec![];
    for _ in 0..3 {
        got.push(next(&mut default_ns).await);
    }
    assert_eq!(
        got,
        want(&[("ADDED", "d1"), ("MODIFIED", "d1"), ("DELETED", "d1")])
    );
    // The labelled watcher sees d1 appear when it gains the label, and go when it is deleted.
    let mut got = vec![];
    for _ in 0..2 {
        got.push(next(&mut labelled).await);
    }
    assert_eq!(got, want(&[("ADDED", "d1"), ("DELETED", "d1")]));
    // Nothing else is pending for any of them.
    for rx in [&mut all, &mut default_ns, &mut labelled] {
        assert!(
            tokio::time::timeout(Duration::from_millis(300), rx.recv())
                .await
                .is_err(),
            "an unexpected event"
        );
    }
}

#[tokio::test]
async fn a_watcher_far_behind_the_cache_still_gets_every_event_in_order() {
    let (_d, r) = registry().await;
    let cms = r.lookup("", "v1", "configmaps").unwrap().clone();
    let rv = cms
        .list("", &Default::default())
        .await
        .unwrap()
        .resource_version;
    let opts = WatchOptions {
        resource_version: rv.to_string(),
        ..Default::default()
    };
    // This watcher reads nothing until every write is done; another one keeps up.
    let mut slow = cms.watch("default", opts.clone()).await.unwrap();
    let mut quick = cms.watch("default", opts).await.unwrap();
    // More changes than the cache keeps (1,024) and than a watcher's channel holds.
    const N: usize = 1500;
    let reader = tokio::spawn(async move {
        let mut names = vec![];
        while names.len() < N {
            names.push(next(&mut quick).await.1);
        }
        names
    });
    let mut writers = vec![];
    for c in 0..10 {
        let cms = cms.clone();
        writers.push(tokio::spawn(async move {
            for i in (c..N).step_by(10) {
                cms.create(
                    "default",
                    json!({"metadata": {"name": format!("cm-{i:04}")}}),
                    &WriteOptions::default(),
                )
                .await
                .unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let quick_names = tokio::time::timeout(Duration::from_secs(120), reader)
        .await
        .expect("the quick watcher keeps up")
        .unwrap();
    let mut slow_names = vec![];
    while slow_names.len() < N {
        let (t, n) = next(&mut slow).await;
        assert_eq!(t, "ADDED");
        slow_names.push(n);
    }
    // Both saw every create once, in the same (revision) order.
    assert_eq!(slow_names, quick_names);
    let mut sorted = slow_names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), N);
}
