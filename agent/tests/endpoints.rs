//! The local API handler end to end on one node: IPAM over an in-memory datastore, real routes
//! and sysctls in a node namespace, a pod namespace wired as the CNI plugin will wire it.

use std::collections::BTreeMap;
use std::sync::Arc;

use margay_agent::dataplane::{RouteDriver, SysctlDriver};
use margay_agent::endpoints::LocalAgent;
use margay_agent::health::Readiness;
use margay_agent::localapi::Handler;
use margay_agent::localapi::proto::*;
use margay_api::{IPPool, IPPoolSpec, WorkloadEndpoint};
use margay_datastore::{Datastore, Memory, Typed};
use margay_harness::Netns;
use tokio::sync::Mutex;

fn attachment(handle: &str) -> Option<Attachment> {
    Some(Attachment {
        handle_id: handle.into(),
        container_id: "c0ffee".into(),
        namespace: "default".into(),
        pod: "web-0".into(),
        ifname: "eth0".into(),
    })
}

/// The handler of node-1 over `ds`, with drivers in the calling thread's namespace.
fn local_agent(ds: &Arc<dyn Datastore>) -> LocalAgent {
    let ipam = margay_ipam::Ipam::new(Arc::clone(ds));
    LocalAgent::new(
        "node-1",
        ipam.node("node-1", BTreeMap::new()),
        margay_datastore::Workloads::stored(Arc::clone(ds)),
        Arc::new(Mutex::new(RouteDriver::new().unwrap())),
        Arc::new(Mutex::new(SysctlDriver::new())),
        Readiness::default(),
    )
}

#[test]
fn a_pod_gets_an_address_and_a_route_and_loses_both_on_delete() {
    let node = Netns::with_tag("ep-node").expect("namespace (run as root)");
    let peer = Netns::with_tag("ep-peer").unwrap();
    let pod = Netns::with_tag("ep-pod").unwrap();
    let net = |s: &str| s.parse().unwrap();
    node.connect(
        "eth0",
        &[net("198.18.0.1/24")],
        &peer,
        "eth0",
        &[net("198.18.0.2/24")],
    )
    .unwrap();
    // Proxy ARP answers the pod's ARP for 169.254.1.1 only if the node has a route there (a
    // real node always has a default route).
    node.exec(&["ip", "route", "add", "default", "via", "198.18.0.2"])
        .unwrap();

    let ds: Arc<dyn Datastore> = Arc::new(Memory::new());
    let node2 = node.clone();
    let pod2 = pod.clone();
    let pod_ip = node
        .block_on(async move {
            Typed::<IPPool>::new(Arc::clone(&ds))
                .create(&IPPool::new(
                    "default-ipv4",
                    IPPoolSpec::new("100.64.0.0/24"),
                ))
                .await
                .unwrap();
            let agent = local_agent(&ds);
            let got = agent
                .allocate(Allocate {
                    attachment: attachment("net.c0ffee"),
                    num_v4: 1,
                    ..Default::default()
                })
                .await
                .unwrap();
            assert_eq!(got.addresses.len(), 1);
            let cidr = got.addresses[0].clone();
            // A repeated ADD gets the same address.
            let again = agent
                .allocate(Allocate {
                    attachment: attachment("net.c0ffee"),
                    num_v4: 1,
                    ..Default::default()
                })
                .await
                .unwrap();
            assert_eq!(again.addresses, got.addresses);
            assert!(
                cidr.starts_with("100.64.0.") && cidr.ends_with("/32"),
                "{cidr}"
            );
            let ip = cidr.trim_end_matches("/32").to_owned();

            // What the CNI plugin does: the veth, the pod's address and its default route.
            node2
                .connect("mgytestpod0001", &[], &pod2, "eth0", &[])
                .unwrap();
            pod2.exec(&["ip", "addr", "add", &cidr, "dev", "eth0"])
                .unwrap();
            pod2.exec(&[
                "ip",
                "route",
                "add",
                "169.254.1.1",
                "dev",
                "eth0",
                "scope",
                "link",
            ])
            .unwrap();
            pod2.exec(&[
                "ip",
                "route",
                "add",
                "default",
                "via",
                "169.254.1.1",
                "dev",
                "eth0",
            ])
            .unwrap();

            let up = EndpointUp {
                attachment: attachment("net.c0ffee"),
                host_ifname: "mgytestpod0001".into(),
                addresses: vec![cidr.clone()],
                mac: String::new(),
            };
            agent.endpoint_up(up.clone()).await.unwrap();
            // A repeated ADD is harmless.
            agent.endpoint_up(up).await.unwrap();
            let weps = Typed::<WorkloadEndpoint>::new(Arc::clone(&ds));
            let wep = weps
                .get(Some("default"), "node--1-k8s-web--0-eth0")
                .await
                .unwrap();
            assert_eq!(wep.spec.ip_networks, std::slice::from_ref(&cidr));
            assert_eq!(wep.spec.interface_name, "mgytestpod0001");

            // The node reaches the pod through the route the agent programmed.
            node2
                .exec(&["ping", "-c", "1", "-W", "2", &ip])
                .expect("node pings the pod");

            agent
                .endpoint_down(EndpointDown {
                    attachment: attachment("net.c0ffee"),
                })
                .await
                .unwrap();
            agent
                .endpoint_down(EndpointDown {
                    attachment: attachment("net.c0ffee"),
                })
                .await
                .unwrap();
            assert!(matches!(
                weps.get(Some("default"), "node--1-k8s-web--0-eth0").await,
                Err(margay_datastore::Error::NotFound(_))
            ));
            let freed = agent
                .release(Release {
                    handle_id: "net.c0ffee".into(),
                })
                .await
                .unwrap();
            assert_eq!(freed.detail, "released 1 address(es)");
            let again = agent
                .release(Release {
                    handle_id: "net.c0ffee".into(),
                })
                .await
                .unwrap();
            assert_eq!(again.detail, "released 0 address(es)");
            ip
        })
        .unwrap();
    let routes = node
        .exec(&["ip", "route", "show", "proto", "80"])
        .unwrap()
        .stdout;
    assert!(
        !routes.contains(&pod_ip),
        "the pod route outlived endpoint_down: {routes}"
    );
}

#[test]
fn an_exhausted_pool_is_reported_as_such() {
    let node = Netns::with_tag("ep-full").expect("namespace (run as root)");
    node.block_on(async {
        let ds: Arc<dyn Datastore> = Arc::new(Memory::new());
        let mut spec = IPPoolSpec::new("100.64.1.0/30");
        spec.block_size = Some(30);
        Typed::<IPPool>::new(Arc::clone(&ds))
            .create(&IPPool::new("tiny", spec))
            .await
            .unwrap();
        let agent = local_agent(&ds);
        let mut last = None;
        for i in 0..5 {
            let req = Allocate {
                attachment: attachment(&format!("net.c{i}")),
                num_v4: 1,
                ..Default::default()
            };
            if let Err(e) = agent.allocate(req).await {
                last = Some(e);
                break;
            }
        }
        let e = last.expect("a /30 runs out");
        assert_eq!(e.kind, ErrorKind::Exhausted, "{e}");
        assert!(
            e.message.contains("tiny") || e.message.contains("100.64.1.0/30"),
            "{e}"
        );
    })
    .unwrap();
}
