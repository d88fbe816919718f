//! The real plugin binary against a real agent: ADD, a repeated ADD, CHECK, DEL (twice, and
//! after the pod's namespace is gone), STATUS and GC, in network namespaces with etcd in an
//! infra namespace; and the three real CNI clients.

mod common;

use margay_harness::cmd::run_with_input;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use margay_datastore::{Datastore, Etcd, EtcdConfig};
use margay_harness::Netns;
use serde_json::{Value, json};

#[test]
fn both_ends_get_the_configured_mtu_and_the_log_times_each_step() {
    let s = setup();
    let pod = Netns::with_tag("cni-mtu").unwrap();
    let mut c = conf(&s, None);
    c["mtu"] = json!(1400);
    let (code, res) = plugin(&s, "ADD", "m1", Some(&pod), &c);
    assert_eq!(code, 0, "ADD failed: {res}\n{}", s.agent.log_tail(20));
    let host_if = res["interfaces"][0]["name"].as_str().unwrap().to_owned();
    let pod_side = pod
        .exec(&["ip", "link", "show", "dev", "eth0"])
        .unwrap()
        .stdout;
    let host_side = s
        .node
        .exec(&["ip", "link", "show", "dev", &host_if])
        .unwrap()
        .stdout;
    for (side, text) in [("pod", &pod_side), ("host", &host_side)] {
        assert!(text.contains("mtu 1400"), "{side} side: {text}");
        assert!(
            text.contains("state UP") || text.contains(",UP"),
            "{side} side is up: {text}"
        );
    }
    let log = std::fs::read_to_string(s.dir.path().join("cni.log")).unwrap();
    let add = log
        .lines()
        .find(|l| l.contains("container=m1") && l.contains("command=ADD"))
        .expect("the ADD is logged");
    for step in ["allocate_ms=", "veth_ms=", "endpoint_up_ms="] {
        assert!(add.contains(step), "{step} missing: {add}");
    }
    assert_eq!(plugin(&s, "DEL", "m1", Some(&pod), &c).0, 0);
}

#[test]
fn add_check_del_round_trip_with_a_real_agent() {
    let s = setup();
    let pod = Netns::with_tag("cni-pod").unwrap();
    let (code, res) = plugin(&s, "ADD", "c1", Some(&pod), &conf(&s, None));
    assert_eq!(code, 0, "ADD failed: {res}\n{}", s.agent.log_tail(20));
    let addr = res["ips"][0]["address"].as_str().unwrap().to_owned();
    let ip = addr.trim_end_matches("/32").to_owned();
    assert!(addr.ends_with("/32"), "{res}");
    assert_eq!(res["interfaces"][1]["name"], "eth0");
    assert_eq!(res["interfaces"][0]["mac"], "ee:ee:ee:ee:ee:ee");
    let in_pod = pod
        .exec(&["ip", "-4", "addr", "show", "dev", "eth0"])
        .unwrap()
        .stdout;
    assert!(in_pod.contains(&addr), "{in_pod}");
    // Reachable the moment ADD returned.
    s.node
        .exec(&["ping", "-c", "1", "-W", "2", &ip])
        .expect("node reaches the pod");

    // A repeated ADD gives the same result.
    let (code, again) = plugin(&s, "ADD", "c1", Some(&pod), &conf(&s, None));
    assert_eq!(code, 0, "{again}");
    assert_eq!(again["ips"], res["ips"]);

    assert_eq!(
        plugin(&s, "CHECK", "c1", Some(&pod), &conf(&s, Some(&res))).0,
        0
    );
    pod.exec(&["ip", "addr", "del", &addr, "dev", "eth0"])
        .unwrap();
    let (code, err) = plugin(&s, "CHECK", "c1", Some(&pod), &conf(&s, Some(&res)));
    assert_ne!(code, 0, "CHECK must notice the missing address");
    assert!(
        err["msg"].as_str().unwrap_or("").contains("missing"),
        "{err}"
    );

    assert_eq!(
        plugin(&s, "DEL", "c1", Some(&pod), &conf(&s, Some(&res))).0,
        0
    );
    assert!(!routes(&s).contains(&format!("{ip} dev")), "{}", routes(&s));
    assert!(
        pod.exec(&["ip", "link", "show", "eth0"]).is_err(),
        "the pod side is gone"
    );
    let (code, err) = plugin(&s, "DEL", "c1", Some(&pod), &conf(&s, None));
    assert_eq!(code, 0, "a second DEL succeeds: {err}");
    let log = std::fs::read_to_string(s.dir.path().join("cni.log")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("container=c1") && l.contains("command=ADD ok")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("command=CHECK error: address")),
        "{log}"
    );
}

#[test]
fn an_add_that_fails_half_way_leaves_nothing_behind() {
    let s = setup();
    let pod = Netns::with_tag("cni-half").unwrap();
    // The pod side cannot take this name (longer than IFNAMSIZ): the veth exists by then.
    let mut c = s.node.command(env!("CARGO_BIN_EXE_margay-cni"));
    c.env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", "c9")
        .env("CNI_IFNAME", "a-name-far-too-long")
        .env("CNI_NETNS", pod.path());
    let out = run_with_input(&mut c, conf(&s, None).to_string().as_bytes()).unwrap();
    assert!(
        !out.status.success(),
        "ADD with an impossible interface name must fail"
    );
    let err: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        err["msg"].as_str().unwrap().contains("a-name-far-too-long"),
        "{err}"
    );
    let links = s.node.exec(&["ip", "-o", "link", "show"]).unwrap().stdout;
    // (`mgyt-…` is the harness's namespace names, shown as link-netns; our veths are `: mgy`.)
    assert!(
        !links.contains(": mgy"),
        "a veth was left on the host side: {links}"
    );
    assert!(!routes(&s).contains(" dev mgy"), "{}", routes(&s));
    // The address went back: the handle holds nothing.
    let ep = s._etcd.endpoint();
    let held = s
        .node
        .block_on(async move {
            let ds: Arc<dyn Datastore> = Arc::new(
                Etcd::connect(&EtcdConfig {
                    endpoints: vec![ep],
                    ..Default::default()
                })
                .await
                .unwrap(),
            );
            margay_ipam::Ipam::new(ds)
                .addresses_of("margay-test.c9")
                .await
                .unwrap()
        })
        .unwrap();
    assert!(
        held.is_empty(),
        "the address of the failed ADD is still held: {held:?}"
    );
}

#[test]
fn del_succeeds_after_the_pod_namespace_is_gone_and_gc_and_version_answer() {
    let s = setup();
    let pod = Netns::with_tag("cni-gone").unwrap();
    let (code, res) = plugin(&s, "ADD", "c2", Some(&pod), &conf(&s, None));
    assert_eq!(code, 0, "{res}");
    drop(pod);
    let (code, err) = plugin(&s, "DEL", "c2", None, &conf(&s, None));
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        routes(&s)
            .lines()
            .filter(|l| l.contains(" dev mgy"))
            .count(),
        0,
        "{}",
        routes(&s)
    );

    let (code, v) = plugin(&s, "VERSION", "", None, &conf(&s, None));
    assert_eq!((code, v["cniVersion"].as_str()), (0, Some("1.1.0")));

    let pod = Netns::with_tag("cni-gc").unwrap();
    assert_eq!(plugin(&s, "ADD", "c3", Some(&pod), &conf(&s, None)).0, 0);
    let mut gc = conf(&s, None);
    gc["cni.dev/valid-attachments"] = json!([]);
    let (code, err) = plugin(&s, "GC", "", None, &gc);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        routes(&s)
            .lines()
            .filter(|l| l.contains(" dev mgy"))
            .count(),
        0,
        "GC removed the stale attachment: {}",
        routes(&s)
    );
}

#[test]
fn status_without_an_agent_is_unavailable_in_the_requested_version() {
    let dir = tempfile::tempdir().unwrap();
    let conf = json!({"cniVersion": "0.4.0", "name": "n", "type": "margay-cni", "agent_socket": dir.path().join("none.sock")});
    let mut c = Command::new(env!("CARGO_BIN_EXE_margay-cni"));
    c.env("CNI_COMMAND", "STATUS");
    let out = run_with_input(&mut c, conf.to_string().as_bytes()).unwrap();
    let err: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!out.status.success());
    assert_eq!(err["code"], 50);
    assert_eq!(err["cniVersion"], "0.4.0");
}

/// The shared tools folder (`MARGAY_SHARED`, default `../shared` beside the checkout).
fn shared() -> PathBuf {
    std::env::var("MARGAY_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared")))
}

/// Runs one of the real CNI client scripts of `shared/tools/cni-clients` against the plugin,
/// with the agent's namespace as the host side.
fn real_client(script: &str, chained: bool) {
    let s = setup();
    let tools = shared().join("tools/cni-clients");
    assert!(
        tools.exists(),
        "{} not found: set MARGAY_SHARED to the shared/ checkout",
        tools.display()
    );
    let mut plugins = vec![
        json!({"type": "margay-cni", "agent_socket": s.dir.path().join("agent.sock"), "mtu": 1400}),
    ];
    if chained {
        // As the shared example chain: the reference bandwidth plugin's CHECK needs static rates.
        plugins.push(json!({"type": "tuning", "mtu": 1400, "sysctl": {"net.ipv4.conf.eth0.arp_notify": "1"}}));
        plugins
            .push(json!({"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}));
        plugins.push(json!({"type": "bandwidth", "ingressRate": 8000000, "ingressBurst": 800000, "egressRate": 8000000, "egressBurst": 800000}));
    }
    let list = json!({"cniVersion": "1.0.0", "name": "margay-test", "plugins": plugins});
    let path = s.dir.path().join("10-margay.conflist");
    std::fs::write(&path, serde_json::to_string_pretty(&list).unwrap()).unwrap();
    let plugin_dir = PathBuf::from(env!("CARGO_BIN_EXE_margay-cni"))
        .parent()
        .unwrap()
        .to_owned();
    let out = Command::new("timeout")
        .arg("600")
        .arg(tools.join(script))
        .arg(&plugin_dir)
        .arg(&path)
        .env("HOST_NETNS", s.node.name())
        .env("HOST_ADDR", "198.18.0.11")
        .output()
        .expect("the client script runs");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{script} failed:\n{text}\nagent:\n{}",
        s.agent.log_tail(30)
    );
    assert!(
        routes(&s).lines().all(|l| !l.contains(" dev mgy")),
        "routes left behind: {}",
        routes(&s)
    );
}

// One test per client, each alone and chained. The clients' packages come from
// scripts/install-deps.sh, so the scripts' own first-run installs never race each other.

#[test]
fn libcni_through_cnitool_runs_the_whole_lifecycle_alone_and_chained() {
    real_client("cnitool.sh", false);
    real_client("cnitool.sh", true);
}

#[test]
fn podman_with_its_cni_backend_runs_containers_alone_and_chained() {
    real_client("podman.sh", false);
    real_client("podman.sh", true);
}

#[test]
fn containerd_cri_runs_pod_sandboxes_alone_and_chained() {
    real_client("containerd.sh", false);
    real_client("containerd.sh", true);
}

#[test]
fn a_dual_stack_pod_gets_both_families_and_is_reachable_over_both() {
    let s = setup();
    s.node
        .exec(&[
            "ip",
            "addr",
            "add",
            "fd00:198:18::11/64",
            "dev",
            "eth0",
            "nodad",
        ])
        .unwrap();
    let pod = Netns::with_tag("cni-dual").unwrap();
    let mut c = conf(&s, None);
    c["ipam"] = json!({"assign_ipv4": true, "assign_ipv6": true});
    let (code, res) = plugin(&s, "ADD", "c6", Some(&pod), &c);
    assert_eq!(code, 0, "{res}\n{}", s.agent.log_tail(20));
    let addrs: Vec<String> = res["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["address"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(addrs.len(), 2, "{res}");
    let v6 = addrs
        .iter()
        .find(|a| a.contains(':'))
        .expect("an IPv6 address")
        .trim_end_matches("/128")
        .to_owned();
    assert!(v6.starts_with("fd00:100:64:"), "{v6}");
    assert!(
        res["routes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["dst"] == "::/0"),
        "{res}"
    );
    let route = pod
        .exec(&["ip", "-6", "route", "show", "default"])
        .unwrap()
        .stdout;
    assert!(
        route.contains("via fe80::ecee:eeff:feee:eeee dev eth0"),
        "{route}"
    );
    // The pod's address may be tentative (duplicate address detection) for a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    while s
        .node
        .exec(&["ping", "-6", "-c", "1", "-W", "1", &v6])
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "node cannot reach the pod over IPv6: {}",
            routes(&s)
        );
    }
    assert_eq!(plugin(&s, "DEL", "c6", Some(&pod), &c).0, 0);
    assert!(!routes(&s).contains(&v6), "{}", routes(&s));
}
