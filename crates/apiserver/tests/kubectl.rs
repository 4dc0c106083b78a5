//! Real kubectl against the API server: what the user sees. Every scenario runs twice, on the
//! embedded kybern store and on a real etcd 3.4 reached through `--etcd-servers`.

mod common;

use common::{rows, wait_line, Backend, Cluster};

/// `#[test] fn $name` on the embedded store and `#[test] fn ${name}_on_etcd` on a real etcd, both
/// running `$scenario`.
macro_rules! on_both_backends {
    ($name:ident, $scenario:ident) => {
        #[test]
        fn $name() {
            if let Some(c) = Cluster::start_on(Backend::Embedded) {
                $scenario(&c);
            }
        }
        mod $name {
            #[test]
            fn on_etcd() {
                if let Some(c) = super::Cluster::start_on(super::Backend::Etcd) {
                    super::$scenario(&c);
                }
            }
        }
    };
}

const CONFIGMAP: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: app-config
  namespace: demo
  labels:
    app: web
data:
  color: blue
";

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: demo
  labels:
    app: web
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: nginx
        image: nginx:1.27
        ports:
        - containerPort: 80
";

on_both_backends!(
    namespaces_configmaps_labels_patches_and_errors,
    namespaces_configmaps_labels_patches_and_errors_with
);

fn namespaces_configmaps_labels_patches_and_errors_with(c: &Cluster) {
    assert_eq!(
        c.ok(&["create", "namespace", "demo"]),
        "namespace/demo created\n"
    );
    let e = c.fails(&["create", "namespace", "demo"]);
    assert!(
        e.contains("Error from server (AlreadyExists): namespaces \"demo\" already exists"),
        "{e}"
    );
    let ns = rows(&c.ok(&["get", "ns"]));
    assert_eq!(ns[0], ["NAME", "STATUS", "AGE"]);
    assert!(
        ns.iter().any(|r| r[0] == "demo" && r[1] == "Active"),
        "{ns:?}"
    );

    let f = c.file("cm.yaml", CONFIGMAP);
    assert_eq!(c.ok(&["apply", "-f", &f]), "configmap/app-config created\n");
    assert_eq!(
        c.ok(&["apply", "-f", &f]),
        "configmap/app-config unchanged\n"
    );
    let y = c.ok(&["get", "cm", "app-config", "-n", "demo", "-o", "yaml"]);
    assert!(y.contains("  color: blue\n"), "{y}");
    assert!(y.contains("kind: ConfigMap\n"), "{y}");
    assert!(y.contains("resourceVersion: "), "{y}");
    assert!(y.contains("uid: "), "{y}");
    assert!(y.contains("creationTimestamp: "), "{y}");

    let e = c.fails(&["get", "cm", "x", "-n", "demo"]);
    assert_eq!(
        e.trim(),
        "Error from server (NotFound): configmaps \"x\" not found"
    );

    assert_eq!(
        c.ok(&["label", "cm", "app-config", "-n", "demo", "tier=front"]),
        "configmap/app-config labeled\n"
    );
    c.ok(&["create", "cm", "other", "-n", "demo", "--from-literal=a=b"]);
    let sel = rows(&c.ok(&["get", "cm", "-n", "demo", "--selector", "tier=front"]));
    assert_eq!(sel[0], ["NAME", "DATA", "AGE"]);
    assert_eq!(sel.len(), 2, "{sel:?}");
    assert_eq!(sel[1][0..2], ["app-config", "1"]);
    let sel = rows(&c.ok(&["get", "cm", "-n", "demo", "-l", "tier!=front,!missing"]));
    assert_eq!(sel.len(), 2, "{sel:?}");
    assert_eq!(sel[1][0], "other");
    let fs = c.ok(&[
        "get",
        "cm",
        "-n",
        "demo",
        "--field-selector",
        "metadata.name=other",
        "-o",
        "name",
    ]);
    assert_eq!(fs, "configmap/other\n");

    c.ok(&[
        "patch",
        "cm",
        "app-config",
        "-n",
        "demo",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"size":"L"}}"#,
    ]);
    c.ok(&[
        "patch",
        "cm",
        "app-config",
        "-n",
        "demo",
        "--type",
        "json",
        "-p",
        r#"[{"op":"remove","path":"/data/color"}]"#,
    ]);
    let data = c.ok(&[
        "get",
        "cm",
        "app-config",
        "-n",
        "demo",
        "-o",
        "jsonpath={.data}",
    ]);
    assert_eq!(data, r#"{"size":"L"}"#);

    // A stale resourceVersion is refused with upstream's conflict text.
    let stale = c.ok(&["get", "cm", "app-config", "-n", "demo", "-o", "yaml"]);
    c.ok(&["label", "cm", "app-config", "-n", "demo", "again=yes"]);
    let f = c.file("stale.yaml", &stale);
    let e = c.fails(&["replace", "-f", &f]);
    assert!(e.contains("Operation cannot be fulfilled on configmaps \"app-config\": the object has been modified; please apply your changes to the latest version and try again"), "{e}");

    let e = c.fails(&["create", "cm", "Bad_Name", "-n", "demo"]);
    assert!(e.contains("ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"), "{e}");
    let bad = c.file(
        "bad.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bad\n  namespace: demo\nfoo: 1\n",
    );
    let e = c.fails(&["apply", "-f", &bad, "--validate=strict"]);
    assert!(e.contains("unknown field \"foo\""), "{e}");
    let e = c.fails(&["create", "cm", "x", "-n", "nowhere"]);
    assert!(e.contains("namespaces \"nowhere\" not found"), "{e}");

    c.ok(&[
        "create",
        "cm",
        "dry",
        "-n",
        "demo",
        "--from-literal=a=b",
        "--dry-run=server",
    ]);
    c.fails(&["get", "cm", "dry", "-n", "demo"]);

    c.ok(&[
        "create",
        "secret",
        "generic",
        "s",
        "-n",
        "demo",
        "--from-literal=p=q",
    ]);
    assert_eq!(
        c.ok(&[
            "get",
            "secret",
            "s",
            "-n",
            "demo",
            "-o",
            "jsonpath={.data.p}"
        ]),
        "cQ=="
    );

    assert_eq!(
        c.ok(&["delete", "cm", "app-config", "-n", "demo"]),
        "configmap \"app-config\" deleted\n"
    );
    c.fails(&["get", "cm", "app-config", "-n", "demo"]);
    assert_eq!(
        c.ok(&["delete", "namespace", "demo", "--wait=false"]),
        "namespace \"demo\" deleted\n"
    );
    // Without a controller-manager (whose namespace controller empties and finalizes it) the
    // namespace stays Terminating, as on upstream.
    assert_eq!(
        c.ok(&["get", "ns", "demo", "-o", "jsonpath={.status.phase}"]),
        "Terminating"
    );
}

on_both_backends!(
    deployments_apply_patch_scale,
    deployments_apply_patch_scale_with
);

fn deployments_apply_patch_scale_with(c: &Cluster) {
    c.ok(&["create", "namespace", "demo"]);
    let f = c.file("deploy.yaml", DEPLOYMENT);
    assert_eq!(c.ok(&["apply", "-f", &f]), "deployment.apps/web created\n");
    let d = rows(&c.ok(&["get", "deploy", "-n", "demo"]));
    assert_eq!(d[0], ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
    assert_eq!(d[1][0..4], ["web", "0/2", "0", "0"]);
    let w = rows(&c.ok(&["get", "deployments.apps", "-n", "demo", "-o", "wide"]));
    assert_eq!(w[0][5..], ["CONTAINERS", "IMAGES", "SELECTOR"]);
    assert_eq!(w[1][5..], ["nginx", "nginx:1.27", "app=web"]);

    // apply after an edit: a 3-way merge patch from kubectl
    let edited = DEPLOYMENT.replace("replicas: 2", "replicas: 3");
    let f2 = c.file("deploy2.yaml", &edited);
    assert_eq!(
        c.ok(&["apply", "-f", &f2]),
        "deployment.apps/web configured\n"
    );
    c.ok(&[
        "patch",
        "deploy",
        "web",
        "-n",
        "demo",
        "--type",
        "strategic",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"nginx","image":"nginx:1.28"}]}}}}"#,
    ]);
    let got = c.ok(&[
        "get", "deploy", "web", "-n", "demo", "-o",
        "jsonpath={.spec.replicas} {.spec.template.spec.containers[*].image} {.spec.template.spec.containers[0].ports[0].containerPort} {.metadata.generation}",
    ]);
    assert_eq!(got, "3 nginx:1.28 80 3");
    assert_eq!(
        c.ok(&["scale", "deploy", "web", "-n", "demo", "--replicas", "5"]),
        "deployment.apps/web scaled\n"
    );
    assert_eq!(
        c.ok(&[
            "get",
            "deploy",
            "web",
            "-n",
            "demo",
            "-o",
            "jsonpath={.spec.replicas}"
        ]),
        "5"
    );

    let o = c.run(&["get", "pods", "-A"]);
    assert!(o.ok);
    assert_eq!(o.stderr.trim(), "No resources found");
    let e = c.fails(&["get", "deploy", "nope", "-n", "demo"]);
    assert_eq!(
        e.trim(),
        "Error from server (NotFound): deployments.apps \"nope\" not found"
    );
    assert_eq!(
        c.ok(&["delete", "-f", &f]),
        "deployment.apps \"web\" deleted\n"
    );
}

on_both_backends!(watch_sees_an_update, watch_sees_an_update_with);

fn watch_sees_an_update_with(c: &Cluster) {
    c.ok(&["create", "cm", "w", "--from-literal=a=1"]);
    let (mut child, rx) = c.stream(&["get", "cm", "w", "--watch"]);
    let first = wait_line(&rx, &["w", "1"]);
    assert!(first.starts_with("w "), "{first}");
    c.ok(&[
        "patch",
        "cm",
        "w",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"b":"2"}}"#,
    ]);
    let next = wait_line(&rx, &["w", "2"]);
    assert_eq!(rows(&next)[0][0..2], ["w", "2"]);
    let _ = child.kill();
    let _ = child.wait();
}

on_both_backends!(
    discovery_version_and_health,
    discovery_version_and_health_with
);

fn discovery_version_and_health_with(c: &Cluster) {
    let ar = rows(&c.ok(&["api-resources"]));
    assert_eq!(
        ar[0],
        ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
    );
    for want in [
        ["pods", "po", "v1", "true", "Pod"],
        ["configmaps", "cm", "v1", "true", "ConfigMap"],
        ["namespaces", "ns", "v1", "false", "Namespace"],
        ["deployments", "deploy", "apps/v1", "true", "Deployment"],
        ["replicasets", "rs", "apps/v1", "true", "ReplicaSet"],
        ["services", "svc", "v1", "true", "Service"],
    ] {
        assert!(
            ar.iter().any(|r| r == &want),
            "{want:?} missing from {ar:?}"
        );
    }
    let leases = ar.iter().find(|r| r[0] == "leases").expect("leases");
    assert_eq!(leases[1..], ["coordination.k8s.io/v1", "true", "Lease"]);
    let v = c.ok(&["api-versions"]);
    assert_eq!(
        v,
        "apps/v1\nautoscaling/v1\nautoscaling/v2\nbatch/v1\ncoordination.k8s.io/v1\ndiscovery.k8s.io/v1\nnetworking.k8s.io/v1\nv1\n"
    );
    let ver = c.ok(&["version"]);
    assert!(ver.contains("v1.33.0-kybern"), "{ver}");
    assert_eq!(
        c.ok(&["get", "--raw", "/readyz?verbose"]),
        "[+]ping ok\n[+]etcd ok\nreadyz check passed\n"
    );
    let m = c.ok(&["get", "--raw", "/metrics"]);
    assert!(m.contains("apiserver_request_total"), "{m}");
    let ns = rows(&c.ok(&["get", "ns", "-o", "name"]));
    assert_eq!(ns.len(), 4, "{ns:?}");
    let cs = c.run(&["get", "componentstatuses"]);
    assert!(cs.ok);
    assert!(
        cs.stderr
            .contains("Warning: v1 ComponentStatus is deprecated in v1.19+"),
        "{}",
        cs.stderr
    );
    let cs = rows(&cs.stdout);
    assert_eq!(cs[0], ["NAME", "STATUS", "MESSAGE", "ERROR"]);
    assert!(
        cs.iter().any(|r| r[0..3] == ["etcd-0", "Healthy", "ok"]),
        "{cs:?}"
    );
    let ex = c.ok(&["explain", "deployment.spec.replicas"]);
    assert!(ex.contains("KIND:       Deployment"), "{ex}");
    assert!(ex.contains("FIELD: replicas <integer>"), "{ex}");
    assert!(ex.contains("Number of desired pods."), "{ex}");
    let ex = c.ok(&["explain", "pods.spec.containers"]);
    assert!(ex.contains("FIELD: containers <[]Container>"), "{ex}");
}

on_both_backends!(services_and_pods, services_and_pods_with);

fn services_and_pods_with(c: &Cluster) {
    let svc = rows(&c.ok(&["get", "svc"]));
    assert_eq!(
        svc[0],
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ]
    );
    assert_eq!(
        svc[1][0..5],
        ["kubernetes", "ClusterIP", "10.96.0.1", "<none>", "443/TCP"]
    );
    assert_eq!(
        c.ok(&["create", "service", "clusterip", "my", "--tcp=80:8080"]),
        "service/my created\n"
    );
    assert_eq!(
        c.ok(&["create", "service", "nodeport", "np", "--tcp=80:8080"]),
        "service/np created\n"
    );
    let ip = c.ok(&["get", "svc", "my", "-o", "jsonpath={.spec.clusterIP}"]);
    let ip2 = c.ok(&["get", "svc", "np", "-o", "jsonpath={.spec.clusterIP}"]);
    assert!(
        ip.starts_with("10.") && ip != ip2 && ip != "10.96.0.1",
        "{ip} {ip2}"
    );
    let np = rows(&c.ok(&["get", "svc", "np"]));
    let ports = &np[1][4];
    let node_port: u16 = ports
        .strip_prefix("80:")
        .and_then(|p| p.strip_suffix("/TCP"))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{ports}"));
    assert!((30000..=32767).contains(&node_port));

    assert_eq!(
        c.ok(&["run", "nginx", "--image=nginx:1.27", "--labels=app=x"]),
        "pod/nginx created\n"
    );
    let p = rows(&c.ok(&["get", "pods", "-o", "wide"]));
    assert_eq!(
        p[0],
        [
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE",
            "NOMINATED",
            "NODE",
            "READINESS",
            "GATES"
        ]
    );
    assert_eq!(p[1][0..4], ["nginx", "0/1", "Pending", "0"]);
    let all = rows(&c.ok(&["get", "pods", "-A"]));
    assert_eq!(
        all[0],
        ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    );
    assert_eq!(all[1][0..2], ["default", "nginx"]);
    let d = c.ok(&["describe", "pod", "nginx"]);
    assert!(d.contains("Status:           Pending"), "{d}");
    let fs = c.ok(&[
        "get",
        "pods",
        "--field-selector",
        "status.phase=Pending",
        "-o",
        "name",
    ]);
    assert_eq!(fs, "pod/nginx\n");
    let e = c.fails(&["get", "pods", "--field-selector", "spec.bogus=1"]);
    assert!(e.contains("field label not supported: spec.bogus"), "{e}");
    assert_eq!(c.ok(&["delete", "pod", "nginx"]), "pod \"nginx\" deleted\n");
    assert_eq!(
        c.ok(&["delete", "svc", "my", "np"]),
        "service \"my\" deleted\nservice \"np\" deleted\n"
    );
}

#[test]
fn two_apiservers_on_one_store() {
    two_apiservers_on_one_store_on(Backend::Embedded);
}

#[test]
fn two_apiservers_on_one_etcd() {
    two_apiservers_on_one_store_on(Backend::Etcd);
}

/// etcd over https with client certificates (--etcd-cafile/--etcd-certfile/--etcd-keyfile).
#[test]
fn two_apiservers_on_one_etcd_over_tls() {
    two_apiservers_on_one_store_on(Backend::EtcdTls);
}

fn two_apiservers_on_one_store_on(backend: Backend) {
    let Some(kubectl) = common::kubectl_binary() else {
        return;
    };
    let cs = Cluster::start_many_on(kubectl, 2, backend);
    let (a, b) = (&cs[0], &cs[1]);
    let (mut child, rx) = b.stream(&["get", "cm", "--watch"]);
    a.ok(&["create", "cm", "from-a", "--from-literal=k=v"]);
    wait_line(&rx, &["from-a", "1"]);
    assert_eq!(
        b.ok(&["get", "cm", "from-a", "-o", "jsonpath={.data.k}"]),
        "v"
    );
    a.ok(&["create", "service", "clusterip", "sa", "--tcp=80"]);
    b.ok(&["create", "service", "clusterip", "sb", "--tcp=80"]);
    let ip_a = a.ok(&["get", "svc", "sa", "-o", "jsonpath={.spec.clusterIP}"]);
    let ip_b = a.ok(&["get", "svc", "sb", "-o", "jsonpath={.spec.clusterIP}"]);
    assert_ne!(ip_a, ip_b);
    let _ = child.kill();
    let _ = child.wait();
}

on_both_backends!(
    server_side_apply_with_a_conflict,
    server_side_apply_with_a_conflict_with
);

fn server_side_apply_with_a_conflict_with(c: &Cluster) {
    c.ok(&["create", "namespace", "demo"]);
    let tiered = DEPLOYMENT.replace(
        "    app: web\nspec:",
        "    app: web\n    tier: front\nspec:",
    );
    assert!(tiered.contains("tier: front"));
    let f = c.file("deploy.yaml", &tiered);
    assert_eq!(
        c.ok(&["apply", "--server-side", "-f", &f]),
        "deployment.apps/web serverside-applied\n"
    );
    assert_eq!(
        c.ok(&["apply", "--server-side", "-f", &f]),
        "deployment.apps/web serverside-applied\n"
    );
    let mf = c.ok(&[
        "get",
        "deploy",
        "web",
        "-n",
        "demo",
        "--show-managed-fields",
        "-o",
        "jsonpath={.metadata.managedFields[0].manager} {.metadata.managedFields[0].operation}",
    ]);
    assert_eq!(mf, "kubectl Apply");
    let other = c.file(
        "deploy7.yaml",
        &DEPLOYMENT.replace("replicas: 2", "replicas: 7"),
    );
    let e = c.fails(&[
        "apply",
        "--server-side",
        "--field-manager=other",
        "-f",
        &other,
    ]);
    assert!(
        e.contains("Apply failed with 1 conflict: conflict with \"kubectl\": .spec.replicas"),
        "{e}"
    );
    c.ok(&[
        "apply",
        "--server-side",
        "--field-manager=other",
        "--force-conflicts",
        "-f",
        &other,
    ]);
    assert_eq!(
        c.ok(&[
            "get",
            "deploy",
            "web",
            "-n",
            "demo",
            "-o",
            "jsonpath={.spec.replicas}"
        ]),
        "7"
    );
    // A field only the first manager applied, and no longer does, is removed; co-owned ones stay.
    c.ok(&["apply", "--server-side", "-f", &other]);
    assert_eq!(
        c.ok(&[
            "get",
            "deploy",
            "web",
            "-n",
            "demo",
            "-o",
            "jsonpath={.metadata.labels}"
        ]),
        r#"{"app":"web"}"#
    );
}

const WORKLOADS: &str = "apiVersion: apps/v1
kind: DaemonSet
metadata: {name: ds1}
spec:
  selector: {matchLabels: {app: ds1}}
  template:
    metadata: {labels: {app: ds1}}
    spec: {containers: [{name: c, image: busybox}]}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: sts1}
spec:
  serviceName: sts1
  replicas: 2
  selector: {matchLabels: {app: sts1}}
  template:
    metadata: {labels: {app: sts1}}
    spec: {containers: [{name: c, image: busybox}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: ing1}
spec:
  rules:
  - host: example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: v1
kind: ReplicationController
metadata: {name: rc1}
spec:
  replicas: 1
  template:
    metadata: {labels: {app: rc1}}
    spec: {containers: [{name: c, image: busybox}]}
---
apiVersion: v1
kind: Endpoints
metadata: {name: ep1}
subsets:
- addresses: [{ip: 10.0.0.1}, {ip: 10.0.0.2}]
  ports: [{port: 80}]
";

on_both_backends!(more_workloads, more_workloads_with);

fn more_workloads_with(c: &Cluster) {
    let f = c.file("workloads.yaml", WORKLOADS);
    let out = c.ok(&["apply", "-f", &f]);
    assert_eq!(
        out,
        "daemonset.apps/ds1 created\nstatefulset.apps/sts1 created\ningress.networking.k8s.io/ing1 created\nreplicationcontroller/rc1 created\nendpoints/ep1 created\n"
    );
    let ds = rows(&c.ok(&["get", "ds"]));
    assert_eq!(
        ds[0],
        [
            "NAME",
            "DESIRED",
            "CURRENT",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "NODE",
            "SELECTOR",
            "AGE"
        ]
    );
    assert_eq!(rows(&c.ok(&["get", "sts"]))[1][0..2], ["sts1", "0/2"]);
    assert_eq!(
        c.ok(&["scale", "sts", "sts1", "--replicas=3"]),
        "statefulset.apps/sts1 scaled\n"
    );
    assert_eq!(rows(&c.ok(&["get", "sts"]))[1][0..2], ["sts1", "0/3"]);
    assert_eq!(
        rows(&c.ok(&["get", "ing"]))[1][0..3],
        ["ing1", "<none>", "example.com"]
    );
    assert_eq!(rows(&c.ok(&["get", "rc"]))[1][0..2], ["rc1", "1"]);
    assert_eq!(
        rows(&c.ok(&["get", "ep", "ep1"]))[1][0..2],
        ["ep1", "10.0.0.1:80,10.0.0.2:80"]
    );
    assert_eq!(
        c.ok(&["create", "job", "j1", "--image=busybox", "--", "echo", "hi"]),
        "job.batch/j1 created\n"
    );
    let j = rows(&c.ok(&["get", "jobs"]));
    assert_eq!(j[0], ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]);
    assert_eq!(j[1][0..3], ["j1", "Running", "0/1"]);
    c.ok(&["create", "deployment", "d1", "--image=nginx"]);
    assert_eq!(
        c.ok(&[
            "autoscale",
            "deployment",
            "d1",
            "--min=2",
            "--max=5",
            "--cpu-percent=60"
        ]),
        "horizontalpodautoscaler.autoscaling/d1 autoscaled\n"
    );
    let h = rows(&c.ok(&["get", "hpa"]));
    assert_eq!(
        h[0],
        [
            "NAME",
            "REFERENCE",
            "TARGETS",
            "MINPODS",
            "MAXPODS",
            "REPLICAS",
            "AGE"
        ]
    );
    assert_eq!(h[1][0..2], ["d1", "Deployment/d1"]);
    let all = c.ok(&["get", "all", "-o", "name"]);
    for want in [
        "service/kubernetes",
        "daemonset.apps/ds1",
        "statefulset.apps/sts1",
        "replicationcontroller/rc1",
        "job.batch/j1",
    ] {
        assert!(all.contains(want), "{want} missing from {all}");
    }
    assert!(c
        .ok(&["delete", "-f", &f])
        .contains("daemonset.apps \"ds1\" deleted"));
}

/// The scenarios with one other kubectl of the machine on one backend; skipped (with a note)
/// when that kubectl is not installed.
fn every_scenario_with_kubectl(minor: u32, backend: Backend) {
    let path = format!("/usr/lib/google-cloud-sdk/bin/kubectl.1.{minor}");
    if !std::path::Path::new(&path).exists() {
        eprintln!("{path} is not installed: skipping");
        return;
    }
    for scenario in [
        namespaces_configmaps_labels_patches_and_errors_with as fn(&Cluster),
        deployments_apply_patch_scale_with,
        watch_sees_an_update_with,
        discovery_version_and_health_with,
        services_and_pods_with,
        more_workloads_with,
        server_side_apply_with_a_conflict_with,
        pod_binding_and_eviction_with,
    ] {
        let c = Cluster::start_with_on(path.clone().into(), backend).expect("server");
        scenario(&c);
    }
}

/// `every_kubectl::v1_NN::embedded` and `every_kubectl::v1_NN::on_etcd`: the scenarios with kubectl
/// 1.NN on the embedded store and on a real etcd (one test each, so they run in parallel).
macro_rules! every_kubectl {
    ($($v:ident = $minor:literal),*) => {
        mod every_kubectl {
            use super::{every_scenario_with_kubectl, Backend};
            $(
                mod $v {
                    use super::{every_scenario_with_kubectl, Backend};
                    #[test]
                    fn embedded() {
                        every_scenario_with_kubectl($minor, Backend::Embedded);
                    }
                    #[test]
                    fn on_etcd() {
                        every_scenario_with_kubectl($minor, Backend::Etcd);
                    }
                }
            )*
        }
    };
}

// 1.33, the default kubectl, runs every scenario above on both backends already.
every_kubectl!(
    v1_27 = 27,
    v1_28 = 28,
    v1_29 = 29,
    v1_30 = 30,
    v1_31 = 31,
    v1_32 = 32
);

on_both_backends!(pod_binding_and_eviction, pod_binding_and_eviction_with);

fn pod_binding_and_eviction_with(c: &Cluster) {
    c.ok(&["run", "p", "--image=busybox"]);
    let b = c.file(
        "binding.json",
        r#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"p"},"target":{"apiVersion":"v1","kind":"Node","name":"node-1"}}"#,
    );
    c.ok(&[
        "create",
        "--raw",
        "/api/v1/namespaces/default/pods/p/binding",
        "-f",
        &b,
    ]);
    assert_eq!(
        c.ok(&["get", "pod", "p", "-o", "jsonpath={.spec.nodeName}"]),
        "node-1"
    );
    let e = c.fails(&[
        "create",
        "--raw",
        "/api/v1/namespaces/default/pods/p/binding",
        "-f",
        &b,
    ]);
    assert!(
        e.contains("pod p is already assigned to node \"node-1\""),
        "{e}"
    );
    let ev = c.file(
        "eviction.json",
        r#"{"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":"p"},"deleteOptions":{"gracePeriodSeconds":0}}"#,
    );
    c.ok(&[
        "create",
        "--raw",
        "/api/v1/namespaces/default/pods/p/eviction",
        "-f",
        &ev,
    ]);
    let e = c.fails(&["get", "pod", "p"]);
    assert!(e.contains("pods \"p\" not found"), "{e}");
}
