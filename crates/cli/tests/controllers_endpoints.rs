//! The endpoints and EndpointSlice controllers of `kybern controller-manager`, seen through
//! kubectl: Endpoints and EndpointSlices follow pod readiness, named target ports resolve per pod,
//! terminating pods leave Endpoints and show as terminating in slices, headless services with
//! publishNotReadyAddresses publish every pod, services without selector keep their hand-made
//! Endpoints, and a deleted Service's Endpoints go.

mod ctrl;

use ctrl::{set_pod_ready, Cluster};
use serde_json::Value;

const APP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop, labels: {team: a}}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: web-port}
  - {name: metrics, port: 9090, targetPort: 9090}
"#;

fn pod(name: &str, port: u16, node: Option<&str>) -> String {
    let node = node
        .map(|n| format!("  nodeName: {n}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: shop, labels: {{app: web}}}}\nspec:\n{node}  containers:\n  - name: c\n    image: nginx\n    ports:\n    - {{name: web-port, containerPort: {port}}}\n"
    )
}

/// (ready IPs, not-ready IPs, ports "name:port") of an Endpoints object.
fn addresses(ep: &Value) -> (Vec<String>, Vec<String>, Vec<String>) {
    let mut r = vec![];
    let mut n = vec![];
    let mut p = vec![];
    for s in ep["subsets"].as_array().into_iter().flatten() {
        for a in s["addresses"].as_array().into_iter().flatten() {
            r.push(a["ip"].as_str().unwrap().to_string());
        }
        for a in s["notReadyAddresses"].as_array().into_iter().flatten() {
            n.push(a["ip"].as_str().unwrap().to_string());
        }
        for x in s["ports"].as_array().into_iter().flatten() {
            p.push(format!(
                "{}:{}",
                x["name"].as_str().unwrap_or(""),
                x["port"]
            ));
        }
    }
    r.sort();
    n.sort();
    p.sort();
    p.dedup();
    (r, n, p)
}

/// (ip, ready, serving, terminating) of every endpoint in the service's slices.
fn slice_endpoints(c: &Cluster, svc: &str) -> Vec<(String, bool, bool, bool)> {
    let mut out = vec![];
    for s in c.items(&[
        "endpointslices",
        "-n",
        "shop",
        "-l",
        &format!("kubernetes.io/service-name={svc}"),
    ]) {
        for e in s["endpoints"].as_array().into_iter().flatten() {
            let cond = |k: &str| e["conditions"][k].as_bool().unwrap_or(false);
            out.push((
                e["addresses"][0].as_str().unwrap().to_string(),
                cond("ready"),
                cond("serving"),
                cond("terminating"),
            ));
        }
    }
    out.sort();
    out
}

#[test]
fn endpoints_and_slices_follow_pods() {
    let c = Cluster::start(&["--controllers=endpoints-controller,endpointslice-controller"]);
    c.apply(APP);
    c.apply(&pod("a", 8080, None));
    c.apply(&pod("b", 8081, Some("node-1")));
    set_pod_ready(&c, "shop", "a", "10.1.0.1", true);
    set_pod_ready(&c, "shop", "b", "10.1.0.2", false);

    // a is ready, b is not; the named target port resolves per pod.
    c.wait_for("endpoints with a ready and b not ready", || {
        c.json(&["endpoints", "web", "-n", "shop"])
            .is_some_and(|ep| {
                let (r, n, _) = addresses(&ep);
                r == ["10.1.0.1"] && n == ["10.1.0.2"]
            })
    });
    let ep = c.json(&["endpoints", "web", "-n", "shop"]).unwrap();
    let (_, _, ports) = addresses(&ep);
    assert_eq!(ports, ["http:8080", "http:8081", "metrics:9090"]);
    assert_eq!(ep["metadata"]["labels"]["team"], "a");
    let subsets = ep["subsets"].as_array().unwrap();
    assert_eq!(
        subsets.len(),
        2,
        "pods with different ports are in different subsets: {ep:#}"
    );
    let b = subsets
        .iter()
        .flat_map(|s| {
            s["notReadyAddresses"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .next()
        .unwrap();
    assert_eq!(b["targetRef"]["kind"], "Pod");
    assert_eq!(b["targetRef"]["name"], "b");
    assert_eq!(b["nodeName"], "node-1");

    // The slices say the same, with the upstream labels and conditions.
    c.wait_for("slices with a ready and b not ready", || {
        slice_endpoints(&c, "web")
            == [
                ("10.1.0.1".into(), true, true, false),
                ("10.1.0.2".into(), false, false, false),
            ]
    });
    let slices = c.items(&[
        "endpointslices",
        "-n",
        "shop",
        "-l",
        "kubernetes.io/service-name=web",
    ]);
    for s in &slices {
        assert_eq!(
            s["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
            "endpointslice-controller.k8s.io"
        );
        assert_eq!(s["addressType"], "IPv4");
        assert_eq!(s["metadata"]["ownerReferences"][0]["kind"], "Service");
        assert_eq!(s["metadata"]["ownerReferences"][0]["name"], "web");
    }
    let table = c.ok(&["get", "endpoints", "web", "-n", "shop"]);
    assert!(table.contains("10.1.0.1:8080"), "{table}");

    // b becomes ready: both are addresses.
    set_pod_ready(&c, "shop", "b", "10.1.0.2", true);
    c.wait_for("both pods ready in endpoints", || {
        c.json(&["endpoints", "web", "-n", "shop"])
            .is_some_and(|ep| addresses(&ep).0 == ["10.1.0.1", "10.1.0.2"])
    });

    // b is deleted (it has a node, so it terminates gracefully): out of Endpoints, terminating
    // in the slices.
    c.ok(&["delete", "pod", "b", "-n", "shop", "--wait=false"]);
    c.wait_for("terminating b out of endpoints", || {
        c.json(&["endpoints", "web", "-n", "shop"])
            .is_some_and(|ep| {
                let (r, n, _) = addresses(&ep);
                r == ["10.1.0.1"] && n.is_empty()
            })
    });
    c.wait_for("terminating b marked in slices", || {
        slice_endpoints(&c, "web")
            == [
                ("10.1.0.1".into(), true, true, false),
                ("10.1.0.2".into(), false, true, true),
            ]
    });

    // a loses its label: it leaves the service.
    c.ok(&[
        "label",
        "pod",
        "a",
        "-n",
        "shop",
        "app=other",
        "--overwrite",
    ]);
    c.wait_for("a out of endpoints", || {
        c.json(&["endpoints", "web", "-n", "shop"])
            .is_some_and(|ep| addresses(&ep).0.is_empty())
    });

    // Deleting the service deletes its endpoints.
    c.ok(&["delete", "service", "web", "-n", "shop"]);
    c.wait_for("endpoints of the deleted service gone", || {
        !c.run(&["get", "endpoints", "web", "-n", "shop"]).ok
    });
}

#[test]
fn headless_publish_not_ready_and_selectorless() {
    let c = Cluster::start(&[]);
    c.apply(
        r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec:
  clusterIP: None
  publishNotReadyAddresses: true
  selector: {app: web}
  ports: [{name: pg, port: 5432}]
---
apiVersion: v1
kind: Service
metadata: {name: external, namespace: shop}
spec:
  ports: [{port: 443}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: external, namespace: shop}
subsets:
- addresses: [{ip: 192.0.2.10}]
  ports: [{port: 443}]
"#,
    );
    c.apply(&pod("a", 8080, None));
    set_pod_ready(&c, "shop", "a", "10.1.0.1", false);
    c.wait_for("a not-ready pod published by the headless service", || {
        c.json(&["endpoints", "db", "-n", "shop"])
            .is_some_and(|ep| {
                let (r, n, p) = addresses(&ep);
                r == ["10.1.0.1"] && n.is_empty() && p == ["pg:5432"]
            })
    });
    let ep = c.json(&["endpoints", "db", "-n", "shop"]).unwrap();
    assert_eq!(
        ep["metadata"]["labels"]["service.kubernetes.io/headless"],
        ""
    );
    c.wait_for("the slice counts it ready", || {
        slice_endpoints(&c, "db") == [("10.1.0.1".into(), true, false, false)]
    });
    // The selectorless service's hand-made endpoints are left as they are, and get no slices.
    let ext = c.json(&["endpoints", "external", "-n", "shop"]).unwrap();
    assert_eq!(addresses(&ext).0, ["192.0.2.10"]);
    assert!(c
        .items(&[
            "endpointslices",
            "-n",
            "shop",
            "-l",
            "kubernetes.io/service-name=external"
        ])
        .is_empty());
}
