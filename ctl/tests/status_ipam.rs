//! `node status`, `version` and `ipam` end to end against a real etcd on loopback, with
//! statuses and allocations the test plants.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use common::Ctl;
use margay_ctl::ipam::{Report, ReportFinding};

fn statuses(fresh: &str) -> String {
    format!(
        r#"apiVersion: crd.margay.dev/v1
kind: NodeStatus
metadata: {{name: node-1}}
spec: {{node: node-1, updatePeriodSeconds: 10}}
status:
  agentVersion: "{version}"
  lastUpdated: "{fresh}"
  bgp:
    numberEstablished: 1
    numberNotEstablished: 1
    peers:
    - {{peerIP: 198.18.0.2, type: NodeMesh, state: Established, since: "2026-11-20T08:00:00Z", prefixesReceived: 3, prefixesAccepted: 3, prefixesAdvertised: 2}}
    - {{peerIP: 198.18.0.250, asNumber: 65000, type: NodePeer, state: Active, since: "2026-11-20T09:30:00Z", lastError: "Connect: connection refused"}}
---
apiVersion: crd.margay.dev/v1
kind: NodeStatus
metadata: {{name: node-2}}
spec: {{node: node-2, updatePeriodSeconds: 10}}
status:
  agentVersion: "0.0.9"
  lastUpdated: "2026-01-01T00:00:00Z"
  bgp:
    peers:
    - {{peerIP: 198.18.0.1, type: NodeMesh, state: Established, since: "2025-12-31T23:00:00Z"}}
---
apiVersion: crd.margay.dev/v1
kind: NodeStatus
metadata: {{name: node-3}}
spec: {{node: node-3}}
"#,
        version = env!("CARGO_PKG_VERSION")
    )
}

#[test]
fn node_status_shows_any_node_and_warns_about_stale_ones() {
    let ctl = Ctl::start();
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    ctl.write("status.yaml", &statuses(&now));
    ctl.run(&["create", "-f", "status.yaml"]).ok();
    // The client's version changes with releases; the transcript names it <version>.
    let transcript = ctl.transcript(&[
        "node status",
        "node status node-2",
        "node status --all",
        "node status nope",
        "version",
        "version --client",
    ]);
    insta::assert_snapshot!(transcript.replace(env!("CARGO_PKG_VERSION"), "<version>"));
}

#[test]
fn version_as_json_lists_every_agent() {
    let ctl = Ctl::start();
    ctl.write("status.yaml", &statuses("2026-01-01T00:00:00Z"));
    ctl.run(&["create", "-f", "status.yaml"]).ok();
    let out = ctl.run(&["version", "-o", "json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["clientVersion"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["agents"][1]["version"], "0.0.9");
    assert_eq!(v["agents"][2]["version"], "unknown");
    assert_eq!(out.stderr.lines().count(), 2, "{}", out.stderr);
}

const POOL_AND_NODE: &str = "apiVersion: crd.margay.dev/v1\nkind: IPPool\nmetadata: {name: pods}\n\
spec: {cidr: 100.64.0.0/16}\n---\napiVersion: crd.margay.dev/v1\nkind: Node\nmetadata: {name: node-1}\nspec: {}\n";

fn wep(handle: &str, ip: IpAddr) -> String {
    format!(
        "apiVersion: crd.margay.dev/v1\nkind: WorkloadEndpoint\nmetadata: {{name: node--1-k8s-live-eth0, namespace: default}}\n\
         spec: {{orchestrator: k8s, node: node-1, pod: live, endpoint: eth0, interfaceName: mgy000000000001, \
         ipNetworks: [{ip}/32], ipamHandleID: {handle}}}\n"
    )
}

#[tokio::test]
async fn ipam_check_finds_planted_leaks_and_release_frees_exactly_those() {
    let ctl = Ctl::start();
    ctl.write("pool.yaml", POOL_AND_NODE);
    ctl.run(&["apply", "-f", "pool.yaml"]).ok();
    let ipam = margay_ipam::Ipam::new(ctl.datastore().await);
    let node = ipam.node("node-1", BTreeMap::new());
    let mut ip_of = BTreeMap::new();
    for h in ["h-live", "h-leak-1", "h-leak-2"] {
        let attrs = BTreeMap::from([
            ("namespace".to_string(), "default".to_string()),
            ("pod".to_string(), h.to_string()),
        ]);
        let got = node.auto_assign(h, &attrs, 1, 0).await.expect("assign");
        ip_of.insert(h, got.ips()[0]);
    }
    ctl.write("wep.yaml", &wep("h-live", ip_of["h-live"]));
    ctl.run(&["apply", "-f", "wep.yaml"]).ok();

    let check = ctl
        .run(&["ipam", "check", "--grace-seconds", "0", "-o", "report.json"])
        .ok();
    assert!(
        check
            .stdout
            .ends_with("2 confirmed, 0 suspected, 0 problems\n"),
        "{}",
        check.stdout
    );
    let report: Report =
        serde_json::from_str(&std::fs::read_to_string(ctl.path().join("report.json")).unwrap())
            .unwrap();
    let leaked: BTreeSet<IpAddr> = report
        .confirmed
        .iter()
        .map(|f| match f {
            ReportFinding::LeakedAddress { ip, .. } => *ip,
            other => panic!("unexpected finding {other:?}"),
        })
        .collect();
    assert_eq!(
        leaked,
        BTreeSet::from([ip_of["h-leak-1"], ip_of["h-leak-2"]])
    );

    let release = ctl
        .run(&["ipam", "release", "--from-report", "report.json"])
        .ok();
    assert!(
        release.stdout.contains("2 addresses released"),
        "{}",
        release.stdout
    );
    let usage = ipam.usage().await.unwrap();
    assert_eq!(usage.pools[0].in_use, 1, "only the live address is left");
    let again = ctl.run(&["ipam", "check", "--grace-seconds", "0"]).ok();
    assert_eq!(again.stdout, "0 confirmed, 0 suspected, 0 problems\n");

    // Releasing the report again frees nothing: each finding is re-checked first.
    let twice = ctl
        .run(&["ipam", "release", "--from-report", "report.json"])
        .ok();
    assert!(
        twice.stdout.contains("0 addresses released"),
        "{}",
        twice.stdout
    );

    let live = ip_of["h-live"].to_string();
    let shown = ctl.run(&["ipam", "show", "--ip", &live]).ok();
    assert!(
        shown.stdout.contains("is in use") && shown.stdout.contains("h-live"),
        "{}",
        shown.stdout
    );
    let table = ctl.run(&["ipam", "show", "--show-blocks"]).ok();
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(
        lines[0]
            .split("   ")
            .collect::<Vec<_>>()
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>(),
        ["GROUPING", "CIDR", "IPS TOTAL", "IPS IN USE", "IPS FREE"]
    );
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["IP", "Pool", "100.64.0.0/16", "65536", "1", "65535"]
    );
    assert_eq!(
        &lines[2].split_whitespace().collect::<Vec<_>>()[2..],
        ["64", "1", "63"]
    );

    let freed = ctl.run(&["ipam", "release", "--ip", &live]).ok();
    assert!(
        freed
            .stdout
            .starts_with(&format!("released {live} (handle h-live")),
        "{}",
        freed.stdout
    );
    assert!(
        ctl.run(&["ipam", "show", "--ip", &live])
            .ok()
            .stdout
            .contains("is not assigned")
    );
}

#[tokio::test]
async fn ipam_configure_and_release_node() {
    let ctl = Ctl::start();
    ctl.write("pool.yaml", POOL_AND_NODE);
    ctl.run(&["apply", "-f", "pool.yaml"]).ok();
    let ipam = margay_ipam::Ipam::new(ctl.datastore().await);
    let got = ipam
        .node("node-1", BTreeMap::new())
        .auto_assign("h1", &BTreeMap::new(), 1, 0)
        .await
        .unwrap();
    let block = got.v4[0].block.to_string();
    insta::assert_snapshot!(ctl.transcript(&[
        "ipam configure --strictaffinity=true --max-blocks-per-host 4",
        "get ipamconfig -o custom-columns=NAME:.metadata.name,STRICT:.spec.strictAffinity,MAX:.spec.maxBlocksPerHost",
        "ipam configure --max-blocks-per-host 0",
        "get ipamconfig -o custom-columns=NAME:.metadata.name,STRICT:.spec.strictAffinity,MAX:.spec.maxBlocksPerHost",
        "ipam configure",
    ]));
    let blocks = ctl.run(&["get", "ipamblock", "-o", "wide"]).ok().stdout;
    assert!(
        blocks.contains(&block) && blocks.contains("host:node-1"),
        "{blocks}"
    );
    let kept = ctl.run(&["ipam", "release-node", "node-1"]).ok();
    assert!(
        kept.stdout
            .contains(&format!("kept block {block}: 1 addresses still in use")),
        "{}",
        kept.stdout
    );
    ipam.release_handle("h1").await.unwrap();
    let released = ctl.run(&["ipam", "release-node", "node-1"]).ok();
    assert!(
        released.stdout.contains(&format!("released block {block}")),
        "{}",
        released.stdout
    );
    assert_eq!(
        ctl.run(&["get", "ipamblock"]).ok().stdout,
        "NAME   CIDR   AFFINITY\n"
    );
}

#[tokio::test]
async fn ipam_blocks_and_usage_print_as_golden() {
    let ctl = Ctl::start();
    ctl.write("pool.yaml", POOL_AND_NODE);
    ctl.run(&["apply", "-f", "pool.yaml"]).ok();
    let blocks = margay_datastore::Typed::<margay_api::IPAMBlock>::new(ctl.datastore().await);
    let mut owned =
        margay_api::IPAMBlock::empty("100.64.0.0/26".parse().unwrap(), Some("node-1")).unwrap();
    // Two addresses in use, as an allocation leaves them.
    for ord in [0usize, 1] {
        owned.spec.allocations[ord] = Some(0);
        owned.spec.unallocated.retain(|o| *o != ord);
    }
    owned.spec.attributes = vec![margay_api::AllocationAttribute::for_pod(
        "h1", "default", "web-0", "node-1",
    )];
    blocks.create(&owned).await.unwrap();
    let free = margay_api::IPAMBlock::empty("100.64.0.64/26".parse().unwrap(), None).unwrap();
    blocks.create(&free).await.unwrap();
    insta::assert_snapshot!(ctl.transcript(&[
        "get ipamblock",
        "get ipamblocks -o wide",
        "ipam show",
        "ipam show --show-blocks",
        "ipam show --ip 100.64.0.1",
        "ipam show --ip 100.64.0.70",
        "ipam show --ip 10.0.0.1",
    ]));
}
