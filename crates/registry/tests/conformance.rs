//! The registry conformance suite: the shared tester (`conformance/tester.rs`) runs the same checks
//! on every resource of the registry's own table, each with its fixture (`conformance/fixtures.rs`),
//! against a `Registry` on the embedded store.

#[path = "conformance/fixtures.rs"]
mod fixtures;
#[path = "conformance/tester.rs"]
mod tester;

use std::sync::Arc;

use registry::Registry;

async fn registry() -> (tempfile::TempDir, Arc<Registry>) {
    let dir = tempfile::tempdir().unwrap();
    let m = store::Member::start(dir.path(), store::Settings::default()).unwrap();
    let r = Registry::new(m);
    r.ensure_namespace(tester::NAMESPACE).await.unwrap();
    (dir, r)
}

fn id(group: &str, version: &str, resource: &str) -> String {
    if group.is_empty() {
        format!("{version}/{resource}")
    } else {
        format!("{group}/{version}/{resource}")
    }
}

/// Every served resource has exactly one fixture, and every fixture names a served resource.
#[tokio::test]
async fn every_served_resource_has_a_fixture() {
    let (_d, r) = registry().await;
    let fixtures: Vec<String> = fixtures::all()
        .iter()
        .map(|f| id(f.group, f.version, f.resource))
        .collect();
    let served: Vec<String> = r
        .stores()
        .iter()
        .map(|s| {
            let i = s.strategy.info();
            id(i.group, i.version, i.resource)
        })
        .collect();
    let missing: Vec<&String> = served.iter().filter(|s| !fixtures.contains(s)).collect();
    assert!(
        missing.is_empty(),
        "served resources without a conformance fixture: {missing:?}; add one to \
         crates/registry/tests/conformance/fixtures.rs (a minimal valid object and its capabilities)"
    );
    let unknown: Vec<&String> = fixtures.iter().filter(|f| !served.contains(f)).collect();
    assert!(
        unknown.is_empty(),
        "fixtures for resources not served: {unknown:?}"
    );
    let mut dedup = fixtures.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), fixtures.len(), "one fixture per resource");
}

/// The tester on every served resource; each resource runs in its own registry (resources that
/// share storage, such as the two HPA versions, do not see each other's objects), and all failures
/// are reported together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_served_resource_passes_the_tester() {
    let resources: Vec<(String, String, String)> = {
        let (_d, r) = registry().await;
        r.stores()
            .iter()
            .map(|s| {
                let i = s.strategy.info();
                (
                    i.group.to_string(),
                    i.version.to_string(),
                    i.resource.to_string(),
                )
            })
            .collect()
    };
    let mut failures = vec![];
    for (g, v, res) in &resources {
        let label = id(g, v, res);
        let Some(fx) = fixtures::all()
            .into_iter()
            .find(|f| f.group == g && f.version == v && f.resource == res)
        else {
            failures.push(format!(
                "{label}: no fixture; add one to tests/conformance/fixtures.rs"
            ));
            continue;
        };
        let task = tokio::spawn(async move {
            let (_d, r) = registry().await;
            tester::run(&r, &fx).await;
        });
        match task.await {
            Ok(()) => eprintln!("conformance: {label} ok"),
            Err(e) => {
                let msg = e
                    .try_into_panic()
                    .ok()
                    .and_then(|p| {
                        p.downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    })
                    .unwrap_or_else(|| "cancelled".into());
                failures.push(format!("{label}: {msg}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} resources fail the registry conformance tester:\n{}",
        failures.len(),
        resources.len(),
        failures.join("\n")
    );
}
