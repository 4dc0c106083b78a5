"""The official Python `kubernetes` client against a kybern API server.

Usage: client.py KUBECONFIG. Lists, watches, creates, patches (strategic merge, merge, JSON patch)
and deletes through the generated API classes; exits non-zero on the first mismatch.
"""

import sys
import threading

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException


def main(kubeconfig):
    config.load_kube_config(config_file=kubeconfig)
    v1 = client.CoreV1Api()
    apps = client.AppsV1Api()

    names = [n.metadata.name for n in v1.list_namespace().items]
    assert "default" in names and "kube-system" in names, names

    listed = v1.list_namespaced_config_map("default")
    rv = listed.metadata.resource_version
    seen = []

    def watcher():
        w = watch.Watch()
        for ev in w.stream(v1.list_namespaced_config_map, "default",
                           resource_version=rv, timeout_seconds=30):
            obj = ev["object"]
            if obj.metadata.name != "py":
                continue
            seen.append((ev["type"], dict(obj.data or {})))
            if ev["type"] == "DELETED":
                w.stop()

    t = threading.Thread(target=watcher)
    t.start()

    cm = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py", labels={"app": "py"}),
                            data={"a": "1"})
    created = v1.create_namespaced_config_map("default", cm)
    assert created.metadata.uid, created
    try:
        v1.create_namespaced_config_map("default", cm)
        raise AssertionError("a second create succeeded")
    except ApiException as e:
        assert e.status == 409 and '"reason":"AlreadyExists"' in e.body, (e.status, e.body)

    v1.patch_namespaced_config_map("py", "default", {"data": {"b": "2"}})
    got = v1.read_namespaced_config_map("py", "default")
    assert got.data == {"a": "1", "b": "2"}, got.data
    v1.patch_namespaced_config_map(
        "py", "default", [{"op": "replace", "path": "/data/a", "value": "9"}])
    sel = v1.list_namespaced_config_map("default", label_selector="app=py")
    assert [c.data for c in sel.items] == [{"a": "9", "b": "2"}], sel.items

    dep = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "pyweb", "labels": {"app": "pyweb"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "pyweb"}},
                 "template": {"metadata": {"labels": {"app": "pyweb"}},
                              "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}}},
    }
    d = apps.create_namespaced_deployment("default", dep)
    assert d.spec.strategy.type == "RollingUpdate", d.spec.strategy
    apps.patch_namespaced_deployment_scale("pyweb", "default", {"spec": {"replicas": 3}})
    assert apps.read_namespaced_deployment("pyweb", "default").spec.replicas == 3
    apps.delete_namespaced_deployment("pyweb", "default")

    v1.delete_namespaced_config_map("py", "default")
    try:
        v1.read_namespaced_config_map("py", "default")
        raise AssertionError("deleted configmap still readable")
    except ApiException as e:
        assert e.status == 404, e.status

    t.join(40)
    types = [s[0] for s in seen]
    assert types == ["ADDED", "MODIFIED", "MODIFIED", "DELETED"], seen
    assert seen[2][1] == {"a": "9", "b": "2"}, seen
    print("ok")


if __name__ == "__main__":
    main(sys.argv[1])
