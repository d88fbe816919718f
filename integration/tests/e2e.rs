//! The end-to-end suite (issue 17), driving `margay-lab` as a user does: each test brings up a
//! lab of its own topology, checks what a Calico user expects of it, and takes it down.
//! Items the suite shares with older tests are not repeated here; docs/lab.md lists which test
//! covers each item (agent restart under pings and etcd restart: agent/tests/resilience.rs;
//! NetworkPolicy: integration/tests/lab.rs, kube_slice.rs and agent/tests/policy_conformance.rs).
//!
//! Needs root, etcd, BIRD and FRR, and Margay's binaries beside `margay-lab`:
//! `cargo build -p margay-agent -p margay-cni -p margay-ctl -p margay-integration --bins`.
//! Budget: under 5 minutes for the whole file on a 2-core machine (see .config/nextest.toml).

mod common;

use std::time::Duration;

use common::lab::*;
use margay_harness::wait_for;
use serde_json::Value;

/// Every ordered pod pair connects on 80/TCP.
fn assert_all_connect(lab: &Lab) {
    let m: Value =
        serde_json::from_str(&lab.ok(&["probe", "--matrix", "80/TCP", "-o", "json"])).unwrap();
    let blocked: Vec<&String> = m
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, ok)| *ok != true)
        .map(|(k, _)| k)
        .collect();
    assert!(!m.as_object().unwrap().is_empty());
    assert!(blocked.is_empty(), "blocked: {blocked:?}");
}

/// The blocks of the nodes of `status -o json` that `which` picks.
fn blocks_where(status: &Value, which: impl Fn(&Value) -> bool) -> Vec<String> {
    status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| which(n))
        .flat_map(|n| n["blocks"].as_array().unwrap().iter())
        .map(|b| b.as_str().unwrap().to_owned())
        .collect()
}

/// Every block of every node in `status -o json`.
fn blocks(status: &Value) -> Vec<String> {
    blocks_where(status, |_| true)
}

/// The blocks of one node in `status -o json`; it has at least one.
fn node_blocks(status: &Value, node: &str) -> Vec<String> {
    let blocks = blocks_where(status, |n| n["name"] == node);
    assert!(!blocks.is_empty(), "{node} has no block: {status}");
    blocks
}

/// None of `gone` is allocated any more (`ctl ipam show --show-blocks`).
fn assert_released(lab: &Lab, gone: &[String]) {
    let blocks = lab.ok(&["ctl", "ipam", "show", "--show-blocks"]);
    for b in gone {
        assert!(
            !blocks.contains(b.as_str()),
            "{b} still allocated:\n{blocks}"
        );
    }
}

/// The prefixes the external router reports it learned, from `status -o json`.
fn router_prefixes(status: &Value) -> Vec<&str> {
    status["router"]["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["prefix"].as_str().unwrap())
        .collect()
}

#[test]
fn full_mesh_of_three_nodes_pods_reach_each_other_and_the_internet_through_nat() {
    let lab = Lab::new();
    lab.ok(&["up", "--nodes", "3", "--pods-per-node", "1"]);
    assert_all_connect(&lab);
    let s = lab.status();
    let mesh = s["peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] == "NodeMesh" && p["state"] == "Established")
        .count();
    assert_eq!(mesh, 6, "{s}");
    // natOutgoing: the internet host sees the pod's node address, not the pod's.
    let seen = lab.ok(&["internet", "default/pod-2-1"]);
    assert!(seen.trim().ends_with("seen as 198.18.0.12"), "{seen}");
}

#[test]
fn two_route_reflectors_carry_every_route_between_six_nodes_with_the_mesh_off() {
    let lab = Lab::new();
    lab.ok(&[
        "up",
        "--nodes",
        "6",
        "--pods-per-node",
        "1",
        "--route-reflectors",
        "2",
    ]);
    assert_all_connect(&lab);
    let s = lab.status();
    let peers = s["peers"].as_array().unwrap();
    assert!(peers.iter().all(|p| p["type"] != "NodeMesh"), "{s}");
    for i in 1..=6 {
        let node = format!("node-{i}");
        let mut to: Vec<&str> = peers
            .iter()
            .filter(|p| p["node"] == node.as_str() && p["state"] == "Established")
            .map(|p| p["peer"].as_str().unwrap())
            .collect();
        to.sort();
        assert_eq!(
            to,
            ["rr-1", "rr-2"],
            "{node} peers only with the reflectors"
        );
    }
    // Each reflector: six clients and the other reflector.
    for rr in ["rr-1", "rr-2"] {
        let n = peers
            .iter()
            .filter(|p| p["node"] == rr && p["state"] == "Established")
            .count();
        assert_eq!(n, 7, "{rr}: {s}");
    }
    assert_eq!(s["reflectors"].as_array().unwrap().len(), 2);
}

#[test]
fn an_external_bird_learns_every_block_and_reaches_a_pod() {
    let lab = Lab::new();
    lab.ok(&[
        "up",
        "--nodes",
        "2",
        "--pods-per-node",
        "1",
        "--external-router",
        "bird",
    ]);
    let s = lab.status();
    let learned = router_prefixes(&s);
    for b in blocks(&s) {
        assert!(learned.contains(&b.as_str()), "{b} not learned: {s}");
    }
    let sessions = s["router"]["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    assert!(sessions.iter().all(|x| x["state"] == "Established"), "{s}");
    let st = lab.state();
    for p in st.pods.values() {
        lab.ok(&["exec", "tor", "--", "ping", "-c", "1", "-W", "3", &p.ips[0]]);
    }
}

#[test]
fn a_deleted_nodes_blocks_are_withdrawn_from_the_others_and_released() {
    let lab = Lab::new();
    lab.ok(&["up", "--nodes", "3", "--pods-per-node", "1"]);
    let gone = node_blocks(&lab.status(), "node-3");
    lab.ok(&["node", "delete", "node-3"]);
    wait_for(
        "node-1 and node-2 drop their routes to node-3's blocks",
        Duration::from_secs(30),
        || {
            ["node-1", "node-2"].iter().all(|n| {
                let r = lab.ok(&["exec", n, "--", "ip", "route", "show", "proto", "80"]);
                gone.iter().all(|b| !r.contains(b.as_str()))
            })
        },
        String::new,
    );
    assert_released(&lab, &gone);
    let nodes = lab.ok(&["ctl", "get", "node"]);
    assert!(!nodes.contains("node-3"), "{nodes}");
    assert!(
        !lab.prefix().is_empty()
            && !lab_namespaces(&lab.prefix())
                .iter()
                .any(|n| n.ends_with("node-3")),
        "node-3's namespace is gone"
    );
    assert_all_connect(&lab);
}

#[test]
fn fifty_pods_on_one_node_get_addresses_and_routes_and_are_reached_from_another_node() {
    let lab = Lab::new();
    lab.ok(&["up", "--nodes", "2", "--pods-per-node", "0"]);
    lab.ok(&["pod", "create", "default/client", "--node", "node-2"]);
    for i in 1..=50 {
        lab.ok(&[
            "pod",
            "create",
            &format!("default/p{i}"),
            "--node",
            "node-1",
        ]);
    }
    let st = lab.state();
    let mut ips: Vec<&String> = st
        .pods
        .values()
        .filter(|p| p.node == "node-1")
        .map(|p| &p.ips[0])
        .collect();
    assert_eq!(ips.len(), 50);
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 50, "addresses are unique");
    let routes = lab.ok(&["exec", "node-1", "--", "ip", "route", "show", "proto", "80"]);
    assert_eq!(
        routes.lines().filter(|l| l.contains(" dev mgy")).count(),
        50,
        "{routes}"
    );
    for i in 1..=50 {
        lab.ok(&[
            "probe",
            "default/client",
            &format!("default/p{i}"),
            "80/TCP",
        ]);
    }
}

#[test]
fn dual_stack_with_a_reflector_and_an_external_router() {
    let lab = Lab::new();
    lab.ok(&[
        "up",
        "--nodes",
        "2",
        "--pods-per-node",
        "1",
        "--ipv6",
        "--route-reflectors",
        "1",
        "--external-router",
        "bird",
    ]);
    let st = lab.state();
    let v6 = |id: &str| {
        st.pods[id]
            .ips
            .iter()
            .find(|i| i.contains(':'))
            .unwrap()
            .clone()
    };
    lab.ok(&["ping", "default/pod-1-1", &v6("default/pod-2-1"), "-c", "2"]);
    lab.ok(&["ping", "default/pod-2-1", &v6("default/pod-1-1"), "-c", "2"]);
    let s = lab.status();
    let learned = router_prefixes(&s);
    assert!(
        learned.iter().any(|p| p.contains(':')),
        "no IPv6 block: {s}"
    );
    assert!(
        learned.iter().any(|p| !p.contains(':')),
        "no IPv4 block: {s}"
    );
    lab.ok(&[
        "exec",
        "tor",
        "--",
        "ping",
        "-c",
        "1",
        "-W",
        "3",
        &v6("default/pod-1-1"),
    ]);
}

#[test]
fn kubernetes_datastore_pods_reach_each_other_and_a_policy_blocks_and_opens() {
    let lab = Lab::new();
    lab.ok(&[
        "up",
        "--nodes",
        "3",
        "--pods-per-node",
        "1",
        "--datastore",
        "kubernetes",
        "--external-router",
        "frr",
    ]);
    assert_all_connect(&lab);
    let pools = lab.ok(&["ctl", "get", "ippool", "-o", "wide"]);
    assert!(pools.contains("100.64.0.0/16"), "{pools}");
    let policy = lab.dir.path().join("deny.yaml");
    std::fs::write(
        &policy,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: default}\n\
         spec: {podSelector: {matchLabels: {pod: pod-2-1}}, policyTypes: [Ingress]}\n",
    )
    .unwrap();
    lab.ok(&["policy", "apply", policy.to_str().unwrap()]);
    assert_eq!(
        lab.code(&["probe", "default/pod-1-1", "default/pod-2-1", "80/TCP"]),
        1
    );
    lab.ok(&["probe", "default/pod-1-1", "default/pod-3-1", "80/TCP"]);
    lab.ok(&["policy", "delete", "default/deny"]);
    lab.ok(&["probe", "default/pod-1-1", "default/pod-2-1", "80/TCP"]);
    lab.down_leaving_nothing();
}

/// With the Kubernetes datastore the lab writes Pods, not WorkloadEndpoints: a pod's labels and
/// named ports are on its Pod, the agents derive its endpoint (veth named after `NS.POD`) and
/// enforce policy by it, `pod label` / `ns label` take effect when they return, and `node delete`
/// frees the addresses the node's Pods held and so its blocks.
#[test]
fn kubernetes_datastore_keeps_pod_labels_on_pods_and_a_deleted_nodes_pods_free_their_blocks() {
    let lab = Lab::new();
    lab.ok(&[
        "up",
        "--nodes",
        "3",
        "--pods-per-node",
        "1",
        "--datastore",
        "kubernetes",
    ]);
    lab.ok(&["ns", "create", "x"]);
    lab.ok(&[
        "pod",
        "create",
        "x/a",
        "--node",
        "node-2",
        "--label",
        "app=web",
        "--port",
        "http=8080/tcp",
    ]);
    let stored = lab.kubectl(&["get", "workloadendpoints", "-A", "-o", "name"]);
    assert!(
        stored.trim().is_empty(),
        "no WorkloadEndpoint is stored: {stored}"
    );
    let pod: Value =
        serde_json::from_str(&lab.kubectl(&["get", "pod", "-n", "x", "a", "-o", "json"])).unwrap();
    assert_eq!(
        pod["metadata"]["labels"],
        serde_json::json!({"app": "web"}),
        "{pod}"
    );
    let ip = lab.state().pods["x/a"].ips[0].clone();
    assert_eq!(
        pod["metadata"]["annotations"]["margay.dev/podIP"],
        format!("{ip}/32"),
        "{pod}"
    );
    // The derived endpoint names the veth the CNI plugin made on node-2.
    let wep: Value = serde_json::from_str(&lab.ok(&[
        "ctl",
        "get",
        "workloadendpoint",
        "-n",
        "x",
        "node--2-k8s-a-eth0",
        "-o",
        "json",
    ]))
    .unwrap();
    let veth = margay_api::pod::host_interface_name("x.a");
    assert_eq!(wep["spec"]["interfaceName"], veth.as_str(), "{wep}");
    assert_eq!(wep["spec"]["ports"][0]["name"], "http", "{wep}");
    lab.ok(&["exec", "node-2", "--", "ip", "link", "show", &veth]);

    let policy = lab.dir.path().join("clients.yaml");
    std::fs::write(
        &policy,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: clients, namespace: x}\n\
         spec:\n  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {team: a}}\n      podSelector: {matchLabels: {role: client}}\n    ports: [{port: http}]\n",
    )
    .unwrap();
    lab.ok(&["policy", "apply", policy.to_str().unwrap()]);
    let probe = |from: &str| lab.code(&["probe", from, "x/a", "8080/TCP", "--timeout", "0.5"]);
    assert_eq!(
        probe("default/pod-1-1"),
        1,
        "neither the namespace nor the pod label"
    );
    lab.ok(&["pod", "label", "default/pod-1-1", "role=client"]);
    assert_eq!(probe("default/pod-1-1"), 1, "the pod label only");
    lab.ok(&["ns", "label", "default", "team=a"]);
    assert_eq!(probe("default/pod-1-1"), 0, "both");
    assert_eq!(probe("default/pod-3-1"), 1, "the namespace label only");
    lab.ok(&["pod", "label", "x/a", "app-"]);
    assert_eq!(probe("default/pod-3-1"), 0, "x/a is no longer selected");
    let pod: Value =
        serde_json::from_str(&lab.kubectl(&["get", "pod", "-n", "x", "a", "-o", "json"])).unwrap();
    assert!(pod["metadata"]["labels"].get("app").is_none(), "{pod}");
    let s = lab.status();
    let labels_of = |id: &str| {
        s["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|n| n["pods"].as_array().unwrap())
            .find(|p| p["name"] == id)
            .map(|p| p["labels"].clone())
            .unwrap()
    };
    assert_eq!(labels_of("default/pod-1-1")["role"], "client", "{s}");
    assert!(labels_of("x/a").get("app").is_none(), "{s}");

    let gone = node_blocks(&s, "node-3");
    lab.ok(&["node", "delete", "node-3"]);
    assert_released(&lab, &gone);
    let pods = lab.kubectl(&["get", "pods", "-A", "-o", "name"]);
    assert!(!pods.contains("pod-3-1"), "{pods}");
    let weps = lab.ok(&["ctl", "get", "workloadendpoint", "-A"]);
    assert!(!weps.contains("node--3"), "{weps}");
    assert_eq!(
        lab.code(&["probe", "default/pod-1-1", "default/pod-2-1", "80/TCP"]),
        0
    );
    lab.down_leaving_nothing();
}
