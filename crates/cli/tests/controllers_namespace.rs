//! The namespace and service account controllers of `kybern controller-manager`, seen through
//! kubectl: a deleted namespace is emptied (config maps, secrets, pods, services, a custom-free
//! mix) and disappears; every namespace gets a `default` ServiceAccount, again when it is deleted.

mod ctrl;

use ctrl::Cluster;

#[test]
fn deleted_namespace_is_emptied_then_goes() {
    let c = Cluster::start(&["--controllers=namespace-controller"]);
    c.apply(
        r#"
apiVersion: v1
kind: Namespace
metadata: {name: doomed}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cm, namespace: doomed}
data: {a: b}
---
apiVersion: v1
kind: Secret
metadata: {name: s, namespace: doomed}
stringData: {p: q}
---
apiVersion: v1
kind: Pod
metadata: {name: p, namespace: doomed}
spec:
  containers: [{name: c, image: nginx}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: j, namespace: doomed}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: busybox}]
---
apiVersion: v1
kind: Namespace
metadata: {name: kept}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cm, namespace: kept}
"#,
    );
    c.ok(&["delete", "namespace", "doomed", "--wait=false"]);
    c.wait_for("the namespace to disappear", || {
        let o = c.run(&["get", "namespace", "doomed"]);
        !o.ok && o.stderr.contains("not found")
    });
    for kind in ["configmaps", "secrets", "pods", "jobs.batch"] {
        let out = c.ok(&["get", kind, "-n", "doomed", "-o", "name"]);
        assert_eq!(out, "", "{kind} left in the deleted namespace");
    }
    // The other namespace is untouched.
    c.ok(&["get", "configmap", "cm", "-n", "kept"]);
    assert!(c
        .manager_log()
        .contains("namespace doomed is empty: finalized"));
}

#[test]
fn content_with_a_finalizer_holds_the_namespace() {
    let c = Cluster::start(&["--controllers=namespace-controller"]);
    c.apply(
        r#"
apiVersion: v1
kind: Namespace
metadata: {name: held}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cm, namespace: held, finalizers: [example.com/hold]}
"#,
    );
    c.ok(&["delete", "namespace", "held", "--wait=false"]);
    // The conditions say what remains and which finalizer holds it.
    c.wait_for("the namespace to report remaining content", || {
        c.json(&["namespace", "held"]).is_some_and(|ns| {
            let conds = ns["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let has = |t: &str, r: &str| {
                conds
                    .iter()
                    .any(|x| x["type"] == t && x["status"] == "True" && x["reason"] == r)
            };
            has("NamespaceContentRemaining", "SomeResourcesRemain")
                && has("NamespaceFinalizersRemaining", "SomeFinalizersRemain")
        })
    });
    assert_eq!(
        c.ok(&["get", "ns", "held", "-o", "jsonpath={.status.phase}"]),
        "Terminating"
    );
    // Releasing the finalizer lets the config map, then the namespace, go.
    c.ok(&[
        "patch",
        "configmap",
        "cm",
        "-n",
        "held",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    c.wait_for("the namespace to disappear", || {
        !c.run(&["get", "namespace", "held"]).ok
    });
}

#[test]
fn every_namespace_has_a_default_service_account() {
    let c = Cluster::start(&["--controllers=serviceaccount-controller"]);
    c.ok(&["create", "namespace", "fresh"]);
    c.wait_for("sa default in the new namespace", || {
        c.run(&["get", "sa", "default", "-n", "fresh"]).ok
    });
    // Namespaces that existed before the controller started have one too.
    c.wait_for("sa default in kube-system", || {
        c.run(&["get", "sa", "default", "-n", "kube-system"]).ok
    });
    let uid = c.ok(&[
        "get",
        "sa",
        "default",
        "-n",
        "fresh",
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    c.ok(&["delete", "sa", "default", "-n", "fresh"]);
    c.wait_for("sa default recreated", || {
        let o = c.run(&[
            "get",
            "sa",
            "default",
            "-n",
            "fresh",
            "-o",
            "jsonpath={.metadata.uid}",
        ]);
        o.ok && !o.stdout.is_empty() && o.stdout != uid
    });
}
