//! The shared tester: the same checks run on every served resource, given its fixture.

use std::time::Duration;

use apimachinery::patch::PatchType;
use apimachinery::{FieldSelector, LabelSelector};
use registry::{
    Deleted, GenericStore, ListOptions, Registry, WatchEvent, WatchOptions, WriteOptions,
};
use serde_json::{json, Value};

use super::fixtures::{Capability, DeleteBehaviour, Fixture};

/// Bounded wait for one watch event (the suite never hangs).
const EVENT_WAIT: Duration = Duration::from_secs(20);
pub const NAMESPACE: &str = "conformance";
const LABEL: &str = "conformance.kybern.io/suite";

fn rv(obj: &Value) -> i64 {
    let s = obj["metadata"]["resourceVersion"].as_str().unwrap_or("");
    s.parse()
        .unwrap_or_else(|_| panic!("resourceVersion {s:?} is not a revision in {obj}"))
}

fn names(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap_or("").to_string())
        .collect()
}

/// The fixture's object with a name (or generateName), the namespace and the suite's label.
fn object(fx: &Fixture, name: &str, generate: bool) -> Value {
    let mut o = fx.object.clone();
    let meta = json!({"labels": {LABEL: "yes"}});
    o["metadata"] = meta;
    if generate {
        o["metadata"]["generateName"] = json!(format!("{name}-"));
    } else {
        o["metadata"]["name"] = json!(name);
    }
    o
}

/// Runs every check on one resource.
pub async fn run(r: &Registry, fx: &Fixture) {
    let store = r
        .lookup(fx.group, fx.version, fx.resource)
        .expect("fixture names a served resource");
    let info = store.strategy.info();
    let verbs = store.strategy.verbs();
    let ns = if info.namespaced { NAMESPACE } else { "" };
    assert_eq!(
        store.ttl_seconds.is_some(),
        fx.ttl,
        "the fixture declares ttl={} but the store's ttl is {:?}",
        fx.ttl,
        store.ttl_seconds
    );
    assert_eq!(
        store.strategy.has_generation(),
        fx.generation,
        "the fixture declares generation={}",
        fx.generation
    );
    match fx.capability {
        Capability::ReadOnly => read_only(store, ns, verbs).await,
        Capability::ReadWrite { delete } => {
            for v in [
                "create", "get", "list", "watch", "update", "patch", "delete",
            ] {
                assert!(
                    verbs.contains(&v),
                    "a read-write resource serves {v}: {verbs:?}"
                );
            }
            read_write(r, store, ns, fx, delete).await
        }
    }
}

async fn read_only(store: &GenericStore, ns: &str, verbs: &[&str]) {
    assert_eq!(
        verbs,
        ["get", "list"],
        "a read-only resource serves get and list only"
    );
    let l = store.list(ns, &ListOptions::default()).await.unwrap();
    assert!(
        l.items.is_empty(),
        "nothing is stored for a read-only resource"
    );
    assert_eq!(store.get(ns, "missing").await.err().unwrap().code, 404);
}

async fn next_for(rx: &mut registry::watch::EventStream, name: &str) -> WatchEvent {
    loop {
        let ev = tokio::time::timeout(EVENT_WAIT, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no watch event for {name} within {EVENT_WAIT:?}"))
            .unwrap_or_else(|| panic!("the watch ended before an event for {name}"));
        if ev.object["metadata"]["name"] == name {
            return ev;
        }
    }
}

async fn read_write(
    r: &Registry,
    store: &GenericStore,
    ns: &str,
    fx: &Fixture,
    delete: DeleteBehaviour,
) {
    let w = WriteOptions::default();
    let name = format!("conf-{}", fx.resource);

    // create
    let created = store
        .create(ns, object(fx, &name, false), &w)
        .await
        .unwrap();
    assert!(created.created);
    let c = created.object;
    let meta = &c["metadata"];
    assert!(
        !meta["uid"].as_str().unwrap_or("").is_empty(),
        "uid set: {c}"
    );
    assert!(
        meta["creationTimestamp"].is_string(),
        "creationTimestamp set: {c}"
    );
    let created_rv = rv(&c);
    assert!(created_rv > 0);
    assert_eq!(meta["name"], name.as_str());
    assert_eq!(meta["namespace"].as_str().unwrap_or(""), ns);
    assert_eq!(c["apiVersion"], info_api_version(store));
    assert_eq!(c["kind"], store.strategy.info().kind);
    if fx.generation {
        assert_eq!(meta["generation"], 1, "generation 1 on create: {c}");
    } else {
        assert!(meta.get("generation").is_none(), "no generation: {c}");
    }

    // get equals
    assert_eq!(
        store.get(ns, &name).await.unwrap(),
        c,
        "get returns what create did"
    );

    // list contains it with its resourceVersion
    let all = store.list(ns, &ListOptions::default()).await.unwrap();
    let listed = all
        .items
        .iter()
        .find(|o| o["metadata"]["name"] == name.as_str())
        .unwrap_or_else(|| panic!("list contains {name}: {:?}", names(&all.items)));
    assert_eq!(rv(listed), created_rv);
    assert!(all.resource_version >= created_rv);

    // a namespaced object is listed across all namespaces, and not in another namespace
    if !ns.is_empty() {
        let every = store.list("", &ListOptions::default()).await.unwrap();
        assert!(names(&every.items).contains(&name), "all-namespaces list");
        let other = store.list("other", &ListOptions::default()).await.unwrap();
        assert!(
            !names(&other.items).contains(&name),
            "another namespace's list"
        );
    }

    // label selectors filter it in and out
    for (sel, want) in [
        (format!("{LABEL}=yes"), true),
        (LABEL.to_string(), true),
        (format!("{LABEL}=no"), false),
        (format!("{LABEL}!=yes"), false),
        (format!("!{LABEL}"), false),
    ] {
        let opts = ListOptions {
            label: LabelSelector::parse(&sel).unwrap(),
            ..Default::default()
        };
        let got = names(&store.list(ns, &opts).await.unwrap().items);
        assert_eq!(got.contains(&name), want, "-l {sel} gives {got:?}");
    }

    // field selectors on metadata.name filter it in and out
    for (sel, want) in [
        (format!("metadata.name={name}"), true),
        (format!("metadata.name!={name}"), false),
        ("metadata.name=other".to_string(), false),
    ] {
        let opts = ListOptions {
            field: FieldSelector::parse(&sel).unwrap(),
            ..Default::default()
        };
        let got = names(&store.list(ns, &opts).await.unwrap().items);
        assert_eq!(
            got.contains(&name),
            want,
            "--field-selector {sel} gives {got:?}"
        );
    }

    // a watch from the create's revision
    let mut rx = store
        .watch(
            ns,
            WatchOptions {
                resource_version: created_rv.to_string(),
                ..Default::default()
            },
        )
        .await
        .unwrap();

    // update with the current resourceVersion bumps it; with a stale one conflicts
    let mut upd = c.clone();
    upd["metadata"]["annotations"] = json!({"conformance/updated": "1"});
    let u = store
        .update(ns, &name, upd.clone(), None, &w)
        .await
        .unwrap()
        .object;
    let updated_rv = rv(&u);
    assert!(updated_rv > created_rv, "update bumps resourceVersion");
    assert_eq!(u["metadata"]["annotations"]["conformance/updated"], "1");
    assert_eq!(u["metadata"]["uid"], c["metadata"]["uid"]);
    if fx.generation {
        assert_eq!(
            u["metadata"]["generation"], 1,
            "a metadata change keeps generation"
        );
    }
    let e = store
        .update(ns, &name, upd, None, &w)
        .await
        .err()
        .expect("stale update");
    assert_eq!((e.code, e.reason), (409, "Conflict"), "{}", e.message);

    // merge patch
    let p = store
        .patch(
            ns,
            &name,
            PatchType::Merge,
            &json!({"metadata": {"annotations": {"conformance/patched": "1"}}}),
            None,
            &w,
        )
        .await
        .unwrap()
        .object;
    let patched_rv = rv(&p);
    assert!(patched_rv > updated_rv, "patch bumps resourceVersion");
    assert_eq!(p["metadata"]["annotations"]["conformance/updated"], "1");
    assert_eq!(p["metadata"]["annotations"]["conformance/patched"], "1");

    // the watch sees both modifications, in order
    let e1 = next_for(&mut rx, &name).await;
    assert_eq!((e1.type_, rv(&e1.object)), ("MODIFIED", updated_rv));
    let e2 = next_for(&mut rx, &name).await;
    assert_eq!((e2.type_, rv(&e2.object)), ("MODIFIED", patched_rv));
    assert_eq!(*e2.object, p);

    // dryRun create stores nothing
    let dry = WriteOptions {
        dry_run: true,
        ..Default::default()
    };
    let dry_name = format!("{name}-dry");
    let d = store
        .create(ns, object(fx, &dry_name, false), &dry)
        .await
        .unwrap();
    assert_eq!(d.object["metadata"]["name"], dry_name.as_str());
    assert_eq!(store.get(ns, &dry_name).await.err().unwrap().code, 404);
    let after = store.list(ns, &ListOptions::default()).await.unwrap();
    assert!(!names(&after.items).contains(&dry_name));

    // generateName gives unique names
    let g1 = store
        .create(ns, object(fx, &name, true), &w)
        .await
        .unwrap()
        .object;
    let g2 = store
        .create(ns, object(fx, &name, true), &w)
        .await
        .unwrap()
        .object;
    let (n1, n2) = (
        g1["metadata"]["name"].as_str().unwrap_or(""),
        g2["metadata"]["name"].as_str().unwrap_or(""),
    );
    let prefix = format!("{name}-");
    assert!(n1.starts_with(&prefix) && n1.len() > prefix.len(), "{n1}");
    assert!(n2.starts_with(&prefix) && n2.len() > prefix.len(), "{n2}");
    assert_ne!(n1, n2);

    // a duplicate name conflicts
    let e = store
        .create(ns, object(fx, &name, false), &w)
        .await
        .err()
        .expect("duplicate");
    assert_eq!((e.code, e.reason), (409, "AlreadyExists"), "{}", e.message);

    // delete, then 404 and DELETED
    let gone = store.delete(ns, &name, &Default::default()).await.unwrap();
    match (delete, gone) {
        (DeleteBehaviour::Immediate, Deleted::Gone(_)) => {}
        (DeleteBehaviour::Finalized, Deleted::Pending(o)) => {
            assert!(o["metadata"]["deletionTimestamp"].is_string(), "{o}");
            let ev = next_for(&mut rx, &name).await;
            assert_eq!(
                ev.type_, "MODIFIED",
                "marking for deletion is a modification"
            );
            assert!(ev.object["metadata"]["deletionTimestamp"].is_string());
            r.finalize_namespace(&name).await.unwrap();
        }
        (want, Deleted::Gone(_)) => panic!("declared {want:?}, but the delete removed it at once"),
        (want, Deleted::Pending(o)) => panic!("declared {want:?}, but the delete only marked: {o}"),
    }
    let e = store.get(ns, &name).await.expect_err("deleted");
    assert_eq!((e.code, e.reason), (404, "NotFound"), "{}", e.message);
    let ev = next_for(&mut rx, &name).await;
    assert_eq!(ev.type_, "DELETED");
    assert_eq!(ev.object["metadata"]["uid"], c["metadata"]["uid"]);
}

fn info_api_version(store: &GenericStore) -> String {
    store.strategy.info().api_version()
}
