//! Deleting a Deployment with kubectl 1.33's three cascades: background and foreground remove
//! its ReplicaSets and pods (the garbage collector), orphan keeps them without an owner.

mod cm;

use cm::Cluster;

#[test]
fn delete_background_foreground_and_orphan() {
    let mut c = Cluster::start();
    // One replica needs no election (and takes no lease).
    c.start_cm(&["--leader-elect=false"]);
    for app in ["bg", "fg", "orphan"] {
        c.ok(&["create", "deployment", app, "--image=nginx", "--replicas=2"]);
    }
    for app in ["bg", "fg", "orphan"] {
        c.wait_deployment("default", app, 2);
    }

    // Background (kubectl's default): the Deployment goes at once, the collector follows.
    c.ok(&["delete", "deployment", "bg", "--cascade=background"]);
    c.wait_for("bg's ReplicaSets and pods to go", || {
        (c.replicasets("default", "bg").is_empty() && c.app_pods("default", "bg").is_empty())
            .then_some(())
    });

    // Foreground: the Deployment waits (foregroundDeletion finalizer) for its dependents;
    // kubectl waits for the Deployment to be gone.
    c.ok(&[
        "delete",
        "deployment",
        "fg",
        "--cascade=foreground",
        "--timeout=80s",
    ]);
    assert!(
        c.replicasets("default", "fg").is_empty(),
        "foreground left ReplicaSets"
    );
    c.wait_for("fg's pods to go", || {
        c.app_pods("default", "fg").is_empty().then_some(())
    });
    let gone = c.kubectl(&["get", "deployment", "fg"]);
    assert!(
        !gone.ok && gone.stderr.contains("NotFound"),
        "{}",
        gone.stderr
    );

    // Orphan: the Deployment goes, its ReplicaSet and pods stay without an owner reference.
    let rs = c.replicasets("default", "orphan");
    assert_eq!(rs.len(), 1);
    let rs_name = rs[0]["metadata"]["name"].as_str().unwrap().to_string();
    let rs_uid = rs[0]["metadata"]["uid"].as_str().unwrap().to_string();
    c.ok(&[
        "delete",
        "deployment",
        "orphan",
        "--cascade=orphan",
        "--timeout=80s",
    ]);
    let gone = c.kubectl(&["get", "deployment", "orphan"]);
    assert!(
        !gone.ok && gone.stderr.contains("NotFound"),
        "{}",
        gone.stderr
    );
    let rs = c.json(&["get", "rs", &rs_name]);
    assert_eq!(rs["metadata"]["uid"], rs_uid.as_str());
    assert!(
        rs["metadata"]["ownerReferences"]
            .as_array()
            .is_none_or(|r| r.is_empty()),
        "the orphaned ReplicaSet keeps no owner: {rs}"
    );
    assert_eq!(
        c.pods_of("default", &rs_uid).len(),
        2,
        "the orphaned pods stay"
    );

    let lease = c.kubectl(&[
        "get",
        "lease",
        "-n",
        "kube-system",
        "kube-controller-manager",
    ]);
    assert!(
        !lease.ok,
        "--leader-elect=false took a lease: {}",
        lease.stdout
    );

    // And an orphaned ReplicaSet deleted in the background takes its pods with it.
    c.ok(&["delete", "rs", &rs_name]);
    c.wait_for("the orphaned pods to go", || {
        c.app_pods("default", "orphan").is_empty().then_some(())
    });
}
