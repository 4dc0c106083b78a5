//! The tester's table: one minimal valid object per served resource, and what the resource can do
//! (its declared capabilities), as upstream's registry tests hand a fixture to the shared tester.

use serde_json::{json, Value};

/// How deleting an object of the resource proceeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteBehaviour {
    /// Removed at once: get gives 404 and watchers see DELETED.
    Immediate,
    /// Marked (deletionTimestamp, phase Terminating) until its finalizer is dropped (namespaces:
    /// `Registry::finalize_namespace`); then removed.
    Finalized,
}

/// What the tester may expect of a resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capability {
    /// Every verb: create, get, list, watch, update, patch, delete.
    ReadWrite { delete: DeleteBehaviour },
    /// Only get and list are served; nothing is stored (the API server builds the items live).
    ReadOnly,
}

pub struct Fixture {
    pub group: &'static str,
    pub version: &'static str,
    pub resource: &'static str,
    pub capability: Capability,
    /// Whether metadata.generation is 1 after create (upstream sets it for these resources).
    pub generation: bool,
    /// Whether writes carry a time to live (events expire after `--event-ttl`).
    pub ttl: bool,
    /// The object without metadata.name/namespace (the tester sets those).
    pub object: Value,
}

const RW: Capability = Capability::ReadWrite {
    delete: DeleteBehaviour::Immediate,
};

fn f(group: &'static str, version: &'static str, resource: &'static str, object: Value) -> Fixture {
    Fixture {
        group,
        version,
        resource,
        capability: RW,
        generation: false,
        ttl: false,
        object,
    }
}

fn with_generation(mut fx: Fixture) -> Fixture {
    fx.generation = true;
    fx
}

fn pod_template(app: &str, restart: &str) -> Value {
    json!({"metadata": {"labels": {"app": app}},
        "spec": {"restartPolicy": restart, "containers": [{"name": "c", "image": "nginx"}]}})
}

fn workload(app: &str) -> Value {
    json!({"spec": {"selector": {"matchLabels": {"app": app}}, "template": pod_template(app, "Always")}})
}

fn hpa_v2() -> Value {
    json!({"spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
        "minReplicas": 1, "maxReplicas": 3}})
}

fn hpa_v1() -> Value {
    json!({"spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
        "minReplicas": 1, "maxReplicas": 3, "targetCPUUtilizationPercentage": 80}})
}

/// The table. A served resource missing here fails the suite.
pub fn all() -> Vec<Fixture> {
    vec![
        Fixture {
            capability: Capability::ReadWrite {
                delete: DeleteBehaviour::Finalized,
            },
            ..f("", "v1", "namespaces", json!({}))
        },
        f("", "v1", "configmaps", json!({"data": {"k": "v"}})),
        f(
            "",
            "v1",
            "secrets",
            json!({"type": "Opaque", "stringData": {"k": "v"}}),
        ),
        f("", "v1", "serviceaccounts", json!({})),
        // Unscheduled: no kubelet runs it, so it is deleted at once (as upstream).
        f(
            "",
            "v1",
            "pods",
            json!({"spec": {"containers": [{"name": "c", "image": "nginx"}]}}),
        ),
        f(
            "",
            "v1",
            "services",
            json!({"spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}),
        ),
        f(
            "",
            "v1",
            "endpoints",
            json!({"subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]}),
        ),
        with_generation(f(
            "",
            "v1",
            "replicationcontrollers",
            json!({"spec": {"replicas": 1, "selector": {"app": "rc"}, "template": pod_template("rc", "Always")}}),
        )),
        f("", "v1", "nodes", json!({"spec": {}})),
        Fixture {
            ttl: true,
            ..f(
                "",
                "v1",
                "events",
                json!({"involvedObject": {"kind": "Pod", "namespace": "conformance", "name": "p"},
                    "reason": "Tested", "message": "by the conformance suite", "type": "Normal",
                    "source": {"component": "conformance"}}),
            )
        },
        f(
            "coordination.k8s.io",
            "v1",
            "leases",
            json!({"spec": {"holderIdentity": "me", "leaseDurationSeconds": 15}}),
        ),
        with_generation(f("apps", "v1", "deployments", workload("dep"))),
        with_generation(f("apps", "v1", "replicasets", workload("rs"))),
        with_generation(f("apps", "v1", "daemonsets", workload("ds"))),
        with_generation(f("apps", "v1", "statefulsets", {
            let mut w = workload("sts");
            w["spec"]["serviceName"] = json!("sts");
            w
        })),
        with_generation(f(
            "batch",
            "v1",
            "jobs",
            json!({"spec": {"template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "c", "image": "busybox"}]}}}}),
        )),
        with_generation(f(
            "networking.k8s.io",
            "v1",
            "ingresses",
            json!({"spec": {"defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}}}),
        )),
        with_generation(f(
            "networking.k8s.io",
            "v1",
            "ingressclasses",
            json!({"spec": {"controller": "example.com/ingress"}}),
        )),
        // No generation at v1.33: upstream sets one on HPAs only behind the later HPAGeneration gate.
        f("autoscaling", "v2", "horizontalpodautoscalers", hpa_v2()),
        // No generation at v1.33: upstream sets one on HPAs only behind the later HPAGeneration gate.
        f("autoscaling", "v1", "horizontalpodautoscalers", hpa_v1()),
        with_generation(f(
            "discovery.k8s.io",
            "v1",
            "endpointslices",
            json!({"addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"]}],
                "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}),
        )),
        Fixture {
            capability: Capability::ReadOnly,
            ..f("", "v1", "componentstatuses", json!({}))
        },
    ]
}
