//! `margay-lab` itself, run as a user runs it: each test brings up a small lab in its own
//! `MARGAY_LAB_DIR` and takes it down again, checking that nothing is left behind.
//!
//! Needs root, etcd, and Margay's binaries beside `margay-lab` in the same target directory:
//! `cargo build -p margay-agent -p margay-cni -p margay-ctl --bins` before
//! `cargo nextest run -p margay-integration --test lab` (the README's test command, which runs
//! `--workspace`, builds them all).

mod common;

use common::lab::*;
use margay_harness::wait_for;

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

#[test]
fn a_lab_comes_up_answers_status_and_probes_and_goes_down() {
    let lab = Lab::new();
    lab.ok(&["up", "--nodes", "2", "--pods-per-node", "1"]);
    let st = lab.state();
    assert!(st.ready);
    assert_eq!(st.nodes.len(), 2);
    assert_eq!(
        lab_namespaces(&lab.prefix()).len(),
        7,
        "br, infra, internet, 2 nodes, 2 pods"
    );
    for (name, p) in processes(&st) {
        assert!(p.alive(), "{name} is not running after up");
    }

    // status -o json: the documented schema, a block and a pod per node, sessions up.
    let s = lab.status();
    let nodes = s["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2);
    for (i, n) in nodes.iter().enumerate() {
        assert_eq!(n["name"], format!("node-{}", i + 1));
        assert_eq!(n["address"], format!("198.18.0.{}", 11 + i));
        assert_eq!(n["asn"], 64512);
        assert_eq!(n["blocks"].as_array().unwrap().len(), 1, "{n}");
        let pod = &n["pods"][0];
        assert_eq!(pod["name"], format!("default/pod-{}-1", i + 1));
        assert_eq!(pod["namespace"], "default");
        assert!(pod["ip"].as_str().unwrap().starts_with("100.64."), "{pod}");
        assert_eq!(pod["ips"], serde_json::json!([pod["ip"]]));
        assert_eq!(pod["labels"]["pod"], format!("pod-{}-1", i + 1));
    }
    wait_for(
        "both nodes report their mesh session Established",
        Duration::from_secs(30),
        || {
            let s = lab.status();
            let peers = s["peers"].as_array().unwrap().clone();
            peers.len() == 2
                && peers.iter().all(|p| {
                    p["state"] == "Established" && p["type"] == "NodeMesh" && p["since"].is_string()
                })
        },
        String::new,
    );
    let picture = lab.ok(&["status"]);
    assert!(
        picture.contains("node-1") && picture.contains("default/pod-2-1"),
        "{picture}"
    );
    assert!(
        lab.ok(&["status", "--dot"])
            .starts_with("graph margay_lab {")
    );
    assert!(lab.ok(&["status", "--svg"]).contains("<svg"));

    // Probes across nodes: the default ports answer on TCP and UDP; another port is blocked.
    assert_eq!(
        lab.code(&["probe", "default/pod-1-1", "default/pod-2-1", "80/TCP"]),
        0
    );
    assert_eq!(
        lab.code(&["probe", "default/pod-2-1", "default/pod-1-1", "81/udp"]),
        0
    );
    assert_eq!(
        lab.code(&[
            "probe",
            "default/pod-1-1",
            "default/pod-2-1",
            "8080/tcp",
            "--timeout",
            "0.5"
        ]),
        1
    );
    let m: Value =
        serde_json::from_str(&lab.ok(&["probe", "--matrix", "80/tcp", "-o", "json"])).unwrap();
    assert_eq!(m.as_object().unwrap().len(), 4);
    assert!(m.as_object().unwrap().values().all(|v| v == true), "{m}");
    assert_eq!(
        lab.code(&["probe", "default/nope", "default/pod-1-1", "80/tcp"]),
        2
    );
    assert_eq!(
        lab.code(&["ping", "default/pod-1-1", "default/pod-2-1", "-c", "1"]),
        0
    );

    // A namespace, a pod with named ports and labels on its WorkloadEndpoint.
    lab.ok(&["ns", "create", "x", "--label", "team=a"]);
    let nsl = lab.ok(&["ns", "list"]);
    assert!(
        nsl.contains("kubernetes.io/metadata.name=x") && nsl.contains("team=a"),
        "{nsl}"
    );
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
    assert_eq!(
        lab.code(&["probe", "default/pod-1-1", "x/a", "8080/TCP"]),
        0
    );
    assert_eq!(
        lab.code(&[
            "probe",
            "default/pod-1-1",
            "x/a",
            "80/TCP",
            "--timeout",
            "0.5"
        ]),
        1
    );
    lab.ok(&["pod", "label", "x/a", "app-", "tier=db"]);
    let weps: Value =
        serde_json::from_str(&lab.ok(&["ctl", "get", "workloadendpoint", "-n", "x", "-o", "json"]))
            .unwrap();
    let wep = if weps["items"].is_array() {
        &weps["items"][0]
    } else {
        &weps
    };
    // The pod's labels, beside the agent's own margay.dev/* ones.
    let pod_labels: serde_json::Map<String, Value> = wep["metadata"]["labels"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| !k.starts_with("margay.dev/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(
        Value::Object(pod_labels),
        serde_json::json!({"tier": "db"}),
        "{weps}"
    );
    assert_eq!(wep["spec"]["ports"][0]["name"], "http", "{weps}");
    assert_eq!(wep["spec"]["ports"][0]["port"], 8080, "{weps}");

    // NetworkPolicy, synchronously: each command returns once every agent has programmed its
    // write, so the very next probe sees the effect.
    let apply = |name: &str, spec: &str| {
        let file = lab.dir.path().join(format!("{name}.yaml"));
        std::fs::write(
            &file,
            format!(
                "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {name}\n  namespace: x\nspec:\n{spec}"
            ),
        )
        .unwrap();
        lab.ok(&["policy", "apply", file.to_str().unwrap()]);
    };
    let probe = |from: &str| lab.code(&["probe", from, "x/a", "8080/TCP"]);
    apply("deny", "  podSelector: {}\n  policyTypes: [Ingress]\n");
    assert!(
        lab.ok(&["ctl", "get", "networkpolicy", "-n", "x"])
            .contains("deny")
    );
    assert_eq!(
        probe("default/pod-1-1"),
        1,
        "deny-all ingress, from another node"
    );
    assert_eq!(
        probe("default/pod-2-1"),
        1,
        "deny-all ingress, from the same node"
    );
    // Allowed from namespaces labelled team=a: a namespace label change takes effect at once.
    apply(
        "from-team-a",
        "  podSelector: {}\n  ingress:\n  - from:\n    - namespaceSelector:\n        matchLabels: {team: a}\n",
    );
    assert_eq!(probe("default/pod-1-1"), 1);
    lab.ok(&["ns", "label", "default", "team=a"]);
    assert_eq!(
        probe("default/pod-1-1"),
        0,
        "default is labelled team=a now"
    );
    lab.ok(&["ns", "label", "default", "team-"]);
    assert_eq!(probe("default/pod-1-1"), 1, "and not any more");
    // Allowed from pods labelled role=client in any namespace: a pod label change too.
    apply(
        "from-clients",
        "  podSelector: {}\n  ingress:\n  - from:\n    - namespaceSelector: {}\n      podSelector:\n        matchLabels: {role: client}\n",
    );
    lab.ok(&["pod", "label", "default/pod-2-1", "role=client"]);
    assert_eq!(probe("default/pod-2-1"), 0, "pod-2-1 is a client now");
    assert_eq!(probe("default/pod-1-1"), 1, "pod-1-1 is not");
    // Deleting the deny and team policies leaves from-clients, which still isolates x/a.
    lab.ok(&["policy", "delete", "x/deny"]);
    lab.ok(&["policy", "delete", "x/from-team-a"]);
    assert_eq!(probe("default/pod-1-1"), 1);
    assert_eq!(probe("default/pod-2-1"), 0);
    assert_eq!(lab.code(&["policy", "delete", "x/nope"]), 2);

    // Deleting the namespace removes its pod and its policy.
    lab.ok(&["ns", "delete", "x"]);
    assert!(!lab.state().pods.contains_key("x/a"));
    assert!(
        !lab.ok(&["ctl", "get", "networkpolicy", "-A"])
            .contains("from-clients"),
        "ns delete removes the namespace's policies"
    );
    assert_eq!(lab_namespaces(&lab.prefix()).len(), 7);

    lab.down_leaving_nothing();
}

#[test]
fn down_after_the_supervisor_was_killed_leaves_nothing() {
    let lab = Lab::new();
    lab.ok(&["up", "--nodes", "2", "--pods-per-node", "1"]);
    let before = lab.state();
    let sup = before.supervisor.clone().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sup.pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for(
        "the supervisor dies",
        Duration::from_secs(5),
        || !sup.alive(),
        String::new,
    );
    // Its daemons outlive it (they are in its session, not killed with it)...
    for (name, p) in &before.procs {
        assert!(p.alive(), "{name} died with the supervisor");
    }
    assert!(lab.ok(&["status"]).contains("SUPERVISOR NOT RUNNING"));
    // With etcd gone too, people still get the state's picture; scripts get an error.
    before.procs["etcd"].stop(Duration::from_secs(5));
    let picture = lab.ok(&["status"]);
    assert!(picture.contains("default/pod-2-1"), "{picture}");
    assert_eq!(lab.code(&["status", "-o", "json"]), 2);
    // ...and `down` still finds and stops them by PID.
    lab.ok(&["down"]);
    assert_nothing_left(&lab, &before);
    // A second down is harmless.
    lab.ok(&["down"]);
}

#[test]
fn two_commands_at_once_do_not_corrupt_the_state() {
    let lab = Lab::new();
    lab.ok(&["up", "--nodes", "1", "--pods-per-node", "0"]);
    // A second up in the same directory is refused, and the lab is untouched.
    let again = lab.run(&["up", "--nodes", "1"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("margay-lab down"));

    // Four pod creates and status readers at once.
    let mut children = Vec::new();
    for i in 0..4 {
        let name = format!("default/p{i}");
        children.push((
            name.clone(),
            lab.cmd(&["pod", "create", &name])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        ));
        children.push((
            format!("status {i}"),
            lab.cmd(&["status", "-o", "json"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        ));
    }
    for (what, c) in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if what.starts_with("status") {
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(v["nodes"].as_array().unwrap().len(), 1);
        }
    }
    let st = lab.state();
    let ids: Vec<&String> = st.pods.keys().collect();
    assert_eq!(
        ids,
        ["default/p0", "default/p1", "default/p2", "default/p3"]
    );
    let mut ips: Vec<&String> = st.pods.values().flat_map(|p| &p.ips).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 4, "every pod has its own address: {ips:?}");
    let netns: Vec<&String> = st.pods.values().map(|p| &p.netns).collect();
    for n in &netns {
        assert!(lab_namespaces(&lab.prefix()).contains(n), "{n} missing");
    }
    assert_eq!(
        lab.code(&["probe", "default/p0", "default/p3", "80/tcp"]),
        0
    );

    // Refused creates say why and leave nothing behind.
    let dup = lab.run(&["pod", "create", "default/p0"]);
    assert_eq!(dup.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));
    let no_ns = lab.run(&["pod", "create", "nope/a"]);
    assert_eq!(no_ns.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_ns.stderr).contains("margay-lab ns create nope"));
    let bad_node = lab.run(&["pod", "create", "default/q", "--node", "node-9"]);
    assert_eq!(bad_node.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_node.stderr).contains("nodes: node-1"));
    assert_eq!(lab.state().pods.len(), 4);
    assert_eq!(
        lab_namespaces(&lab.prefix()).len(),
        4 + 4,
        "br, infra, internet, node, 4 pods"
    );

    lab.down_leaving_nothing();
}

#[test]
fn commands_without_a_lab_say_how_to_start_one() {
    let lab = Lab::new();
    let out = lab.run(&["status"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("margay-lab up") && err.contains("MARGAY_LAB_DIR"),
        "{err}"
    );
    // down with no lab is fine (nothing to remove).
    lab.ok(&["down"]);
}

#[test]
fn a_dual_stack_lab_gives_pods_both_families_routed_between_nodes() {
    let lab = Lab::new();
    lab.ok(&["up", "--nodes", "2", "--pods-per-node", "1", "--ipv6"]);
    let s = lab.status();
    let node = &s["nodes"][0];
    let blocks: Vec<&str> = node["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap())
        .collect();
    assert!(
        blocks.iter().any(|b| b.starts_with("100.64.")),
        "{blocks:?}"
    );
    assert!(
        blocks.iter().any(|b| b.starts_with("fd00:100:64:")),
        "{blocks:?}"
    );
    let pods: Vec<&serde_json::Value> = s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|n| n["pods"].as_array().unwrap())
        .collect();
    assert_eq!(pods.len(), 2);
    for p in &pods {
        let ips = p["ips"].as_array().unwrap();
        assert_eq!(ips.len(), 2, "{p}");
        assert!(
            p["ip"].as_str().unwrap().starts_with("100.64."),
            "IPv4 first: {p}"
        );
        assert!(
            ips.iter()
                .any(|i| i.as_str().unwrap().starts_with("fd00:100:64:")),
            "{p}"
        );
    }
    // Over IPv6 between the pods of the two nodes, both ways (IPv6 blocks learned over the
    // nodes' IPv6 sessions).
    let v6 = pods[1]["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap())
        .find(|i| i.contains(':'))
        .unwrap()
        .to_owned();
    let from = pods[0]["name"].as_str().unwrap().to_owned();
    assert_eq!(lab.code(&["ping", &from, &v6, "-c", "1"]), 0);
    let back = pods[0]["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap())
        .find(|i| i.contains(':'))
        .unwrap()
        .to_owned();
    let to = pods[1]["name"].as_str().unwrap().to_owned();
    assert_eq!(lab.code(&["ping", &to, &back, "-c", "1"]), 0);
    lab.down_leaving_nothing();
}

#[test]
fn an_up_that_fails_says_why_and_removes_what_it_made() {
    let lab = Lab::new();
    // The real binaries, but an agent that cannot start.
    let bins = tempfile::tempdir().unwrap();
    let real = bin();
    for b in ["margay-cni", "margayctl"] {
        std::os::unix::fs::symlink(real.with_file_name(b), bins.path().join(b)).unwrap();
    }
    let agent = bins.path().join("margay-node");
    std::fs::write(
        &agent,
        "#!/bin/sh\necho 'this agent is broken on purpose' >&2\nexit 3\n",
    )
    .unwrap();
    std::fs::set_permissions(&agent, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let out = lab
        .cmd(&[
            "up",
            "--nodes",
            "2",
            "--pods-per-node",
            "1",
            "--timeout",
            "20",
        ])
        .env("MARGAY_BIN_DIR", bins.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("node-1's agent exited"), "{err}");
    assert!(
        err.contains("broken on purpose"),
        "the error quotes the agent's log: {err}"
    );
    assert!(err.contains("cleaning up"), "{err}");

    let left = lab_namespaces(&lab.prefix());
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    assert!(!lab.dir.path().join("state.json").exists());
    // etcd (started before the agents) is gone too: no process runs with the lab's data dir.
    let data = format!("{}etcd", lab.prefix());
    let running: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&data))
        .collect();
    assert!(running.is_empty(), "still running: {running:?}");
}
