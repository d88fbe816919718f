"""The Python `kubernetes` client (37.0.2) against Margay's test API server.

Called by tests/apiserver_kubectl.rs with a kubeconfig; lists and watches the objects that test
created with kubectl, changes one while watching, and prints one JSON line of what it saw.
"""

import json
import sys
import threading
import time

from kubernetes import client, config, dynamic, watch

GROUP, VERSION, PLURAL = "crd.margay.dev", "v1", "ippools"


def main(kubeconfig, pool):
    config.load_kube_config(config_file=kubeconfig)
    api = client.ApiClient()
    custom = client.CustomObjectsApi(api)
    out = {}

    pools = custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
    out["pools"] = sorted(p["metadata"]["name"] for p in pools["items"])
    out["nodes"] = sorted(n.metadata.name for n in client.CoreV1Api(api).list_node().items)
    out["policies"] = sorted(
        p.metadata.name
        for p in client.NetworkingV1Api(api).list_namespaced_network_policy("default").items
    )

    # Watch from the list's resourceVersion while the main thread changes the pool.
    seen = []
    w = watch.Watch()

    def follow():
        for ev in w.stream(
            custom.list_cluster_custom_object, GROUP, VERSION, PLURAL,
            resource_version=pools["metadata"]["resourceVersion"], timeout_seconds=20,
        ):
            spec = ev["object"].get("spec", {})
            seen.append([ev["type"], ev["object"]["metadata"]["name"], spec.get("blockSize")])
            if ev["type"] == "MODIFIED" and ev["object"]["metadata"]["name"] == pool:
                w.stop()

    t = threading.Thread(target=follow)
    t.start()
    time.sleep(0.5)
    custom.patch_cluster_custom_object(GROUP, VERSION, PLURAL, pool, {"spec": {"blockSize": 29}})
    t.join(25)
    out["watched"] = seen

    # The dynamic client discovers, lists, and applies server-side.
    dyn = dynamic.DynamicClient(api)
    ippools = dyn.resources.get(api_version=f"{GROUP}/{VERSION}", kind="IPPool")
    out["dynamic"] = sorted(p.metadata.name for p in ippools.get().items)
    applied = ippools.server_side_apply(
        body={"apiVersion": f"{GROUP}/{VERSION}", "kind": "IPPool",
              "metadata": {"name": "py-pool"}, "spec": {"cidr": "100.65.0.0/16"}},
        field_manager="margay-test",
    )
    out["applied"] = applied.spec.cidr

    # A stale resourceVersion is a 409.
    cur = custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, "py-pool")
    cur["metadata"]["resourceVersion"] = "1"
    try:
        custom.replace_cluster_custom_object(GROUP, VERSION, PLURAL, "py-pool", cur)
        out["conflict"] = None
    except client.exceptions.ApiException as e:
        out["conflict"] = e.status
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
