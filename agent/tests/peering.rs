//! Peering from the datastore, as Calico: the mesh turned off with a dedicated route reflector
//! and BGPPeers selecting it; an external router (real BIRD) peering eBGP with every node,
//! learning every block and the service CIDRs, and sending a default route the nodes install.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::cluster::*;
use common::*;
use margay_api::bgp::{BGPPassword, SecretKeyRef, ServiceIPBlock};
use margay_api::k8s_openapi::ByteString;
use margay_api::k8s_openapi::api::core::v1::Secret;
use margay_api::{
    BGPConfiguration, BGPConfigurationSpec, BGPPeer, BGPPeerSpec, IPPool, IPPoolSpec,
};
use margay_datastore::{Datastore, Typed};
use margay_harness::{Daemon, Netns, Ready};

fn pool(ds: &Arc<dyn Datastore>) -> impl std::future::Future<Output = ()> + use<> {
    let ds = Arc::clone(ds);
    async move {
        Typed::<IPPool>::new(ds)
            .create(&IPPool::new(
                "default-ipv4",
                IPPoolSpec::new("100.64.0.0/16"),
            ))
            .await
            .unwrap();
    }
}

fn bgp_config(spec: BGPConfigurationSpec) -> BGPConfiguration {
    BGPConfiguration::new("default", spec)
}

/// Sessions (established, not established) in `node`'s NodeStatus.
fn sessions(c: &Cluster, node: &str) -> Option<(u32, u32)> {
    let node = node.to_owned();
    with_datastore(&c.nodes[0], &c.endpoint, move |ds| {
        Box::pin(async move {
            let s = Typed::<margay_api::NodeStatus>::new(ds)
                .get(None, &node)
                .await
                .ok()?;
            let bgp = s.status?.bgp?;
            Some((bgp.number_established, bgp.number_not_established))
        })
    })
}

#[test]
fn with_the_mesh_off_one_reflector_carries_every_route_between_four_nodes() {
    let setup: Setup = Box::new(|ds| {
        Box::pin(async move {
            pool(&ds).await;
            Typed::<BGPConfiguration>::new(Arc::clone(&ds))
                .create(&bgp_config(BGPConfigurationSpec {
                    node_to_node_mesh_enabled: Some(false),
                    ..Default::default()
                }))
                .await
                .unwrap();
            let peers = Typed::<BGPPeer>::new(ds);
            for (name, nodes, peers_sel) in [
                (
                    "clients-to-rr",
                    "!has(route-reflector)",
                    "has(route-reflector)",
                ),
                (
                    "rr-to-clients",
                    "has(route-reflector)",
                    "!has(route-reflector)",
                ),
            ] {
                let p = BGPPeer::new(
                    name,
                    BGPPeerSpec {
                        node_selector: Some(nodes.into()),
                        peer_selector: Some(peers_sel.into()),
                        ..Default::default()
                    },
                );
                peers.create(&p).await.unwrap();
            }
        })
    });
    let roles = [
        NodeRole::Reflector,
        NodeRole::Node,
        NodeRole::Node,
        NodeRole::Node,
        NodeRole::Node,
    ];
    let c = Cluster::start("rr", &roles, setup);
    let mut pods = Vec::new();
    for i in 1..roles.len() {
        let ns = Netns::with_tag(&format!("rr-p{i}")).unwrap();
        let name = format!("pod-{i}");
        let ip = wire_pod(
            &c.clients[i],
            &c.nodes[i],
            &ns,
            &name,
            &format!("mgytestrr{i}pod00"),
        );
        pods.push((ns, ip, i));
    }
    // Every client learns the three other clients' blocks, with the originating node as the
    // next hop (the reflector does not put itself in the path), and nothing from the mesh.
    for i in 1..roles.len() {
        wait_for(
            &format!(
                "node-{} learns three remote blocks through the reflector",
                i + 1
            ),
            Duration::from_secs(60),
            || {
                routes(&c.nodes[i])
                    .lines()
                    .filter(|l| l.contains(" via 198.18.0.1") && !l.contains("via 198.18.0.11 "))
                    .count()
                    >= 3
            },
            || {
                format!(
                    "{}\nreflector:\n{}",
                    routes(&c.nodes[i]),
                    c.agents[0].log_tail(30)
                )
            },
        );
    }
    for (from, _, fi) in &pods {
        for (_, ip, ti) in &pods {
            from.exec(&["ping", "-c", "1", "-W", "3", ip])
                .unwrap_or_else(|e| {
                    panic!(
                        "pod on node-{} cannot reach {ip} on node-{}: {e}",
                        fi + 1,
                        ti + 1
                    )
                });
        }
    }
    // The reflector has four sessions and no routes of its own; each client has one session.
    wait_for(
        "the reflector's NodeStatus shows 4 established sessions",
        Duration::from_secs(40),
        || sessions(&c, "node-1") == Some((4, 0)),
        || format!("{:?}", sessions(&c, "node-1")),
    );
    assert_eq!(
        routes(&c.nodes[0]).trim(),
        "",
        "a dedicated reflector installs nothing"
    );
    for i in 2..=5 {
        let node = format!("node-{i}");
        wait_for(
            &format!("{node} has exactly one session, to the reflector"),
            Duration::from_secs(40),
            || sessions(&c, &node) == Some((1, 0)),
            || format!("{:?}", sessions(&c, &node)),
        );
    }
}

const TOR: &str = "198.18.0.250";
const MD5: &str = "rack-1-secret";

/// A top-of-rack BIRD in `ns` (AS 65001) with eBGP sessions to `nodes`; it sends a default
/// route and installs what it learns in its namespace's kernel table.
fn start_tor(ns: &Netns, dir: &std::path::Path, nodes: &[&str]) -> Daemon {
    // Its own routes point at 198.18.1.2, on a link of its own that the nodes reach through it:
    // sent with `next hop keep`, they test the nodes' recursive next-hop resolution.
    let mut conf = format!(
        "router id {TOR};\n\
         protocol device {{}}\n\
         protocol static tor_static {{ ipv4; route 0.0.0.0/0 via 198.18.1.2; route 100.127.0.0/24 via 198.18.1.2; }}\n\
         protocol kernel k4 {{ ipv4 {{ import none; export where proto != \"tor_static\"; }}; }}\n\
         template bgp node {{ local {TOR} as 65001; password \"{MD5}\"; ipv4 {{ import all; export all; next hop keep; }}; }}\n"
    );
    for (i, n) in nodes.iter().enumerate() {
        conf.push_str(&format!(
            "protocol bgp n{i} from node {{ neighbor {n} as 64512; }}\n"
        ));
    }
    let path = dir.join("tor.conf");
    std::fs::write(&path, conf).unwrap();
    let sock = dir.join("tor.ctl");
    Daemon::builder("bird-tor", "bird")
        .args([
            "-f",
            "-c",
            path.to_str().unwrap(),
            "-s",
            sock.to_str().unwrap(),
        ])
        .netns(ns)
        .log_file(dir.join("tor.log"))
        .ready(Ready::File(sock))
        .timeout(Duration::from_secs(20))
        .spawn()
        .expect("bird starts")
}

fn birdc(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new("birdc")
        .args(["-s", dir.join("tor.ctl").to_str().unwrap()])
        .args(args)
        .output()
        .expect("birdc runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn tor_routes(dir: &std::path::Path) -> String {
    birdc(dir, &["show", "route"])
}

#[test]
fn an_external_router_learns_every_block_and_service_cidr_and_its_default_route_is_installed() {
    let setup: Setup = Box::new(|ds| {
        Box::pin(async move {
            pool(&ds).await;
            Typed::<BGPConfiguration>::new(Arc::clone(&ds))
                .create(&bgp_config(BGPConfigurationSpec {
                    service_cluster_ips: vec![ServiceIPBlock {
                        cidr: "100.96.0.0/12".into(),
                    }],
                    ..Default::default()
                }))
                .await
                .unwrap();
            let mut secret = Secret::default();
            secret.metadata.name = Some("bgp-passwords".into());
            secret.metadata.namespace = Some("margay-system".into());
            secret.data = Some(
                [("tor".to_string(), ByteString(MD5.as_bytes().to_vec()))]
                    .into_iter()
                    .collect(),
            );
            Typed::<Secret>::new(Arc::clone(&ds))
                .create(&secret)
                .await
                .unwrap();
            Typed::<BGPPeer>::new(ds)
                .create(&BGPPeer::new(
                    "tor",
                    BGPPeerSpec {
                        peer_ip: Some(TOR.into()),
                        as_number: Some(65001),
                        password: Some(BGPPassword {
                            secret_key_ref: SecretKeyRef {
                                name: "bgp-passwords".into(),
                                key: "tor".into(),
                            },
                        }),
                        ..Default::default()
                    },
                ))
                .await
                .unwrap();
        })
    });
    let c = Cluster::start("tor", &[NodeRole::Node, NodeRole::Node], setup);
    let tor = Netns::with_tag("tor-tor").unwrap();
    c.bridge
        .attach(&tor, "eth0", &["198.18.0.250/24".parse().unwrap()])
        .unwrap();
    // Behind the router: a network with 198.18.1.2 (the next hop it sends) and 100.127.0.1.
    let far = Netns::with_tag("tor-far").unwrap();
    tor.connect(
        "eth1",
        &["198.18.1.1/24".parse().unwrap()],
        &far,
        "eth0",
        &[
            "198.18.1.2/24".parse().unwrap(),
            "100.127.0.1/24".parse().unwrap(),
        ],
    )
    .unwrap();
    far.exec(&["ip", "route", "add", "default", "via", "198.18.1.1"])
        .unwrap();
    tor.exec(&["ip", "route", "add", "100.127.0.0/24", "via", "198.18.1.2"])
        .unwrap();
    tor.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        .unwrap();
    // The operator's route to the router's other link (not Margay's).
    for n in &c.nodes {
        n.exec(&["ip", "route", "add", "198.18.1.0/24", "via", TOR])
            .unwrap();
    }
    let dir = c.dir.path().to_owned();
    let _bird = start_tor(&tor, &dir, &["198.18.0.11", "198.18.0.12"]);

    let pods = c.pods("tor", 2);
    // The router learns both nodes' blocks (with the owning node as next hop) and the service
    // CIDR, and reaches the pods through what it learned.
    let blocks: Vec<String> = (0..2)
        .map(|i| {
            let r = routes(&c.nodes[i]);
            let line = r
                .lines()
                .find(|l| l.starts_with("blackhole"))
                .expect("a block")
                .to_owned();
            line.split_whitespace().nth(1).unwrap().to_owned()
        })
        .collect();
    wait_for(
        "the router learns both blocks and the service CIDR",
        Duration::from_secs(60),
        || {
            let r = tor_routes(&dir);
            blocks.iter().all(|b| r.contains(b.as_str())) && r.contains("100.96.0.0/12")
        },
        || tor_routes(&dir),
    );
    for (_, ip) in &pods {
        tor.exec(&["ping", "-c", "1", "-W", "3", ip])
            .unwrap_or_else(|e| {
                panic!(
                    "the router cannot reach pod {ip}: {e}\n{}",
                    tor_routes(&dir)
                )
            });
    }
    // Each node installs the router's default route, preferred over its own (metric 1000), and
    // its 100.127.0.0/24, both sent with next hop 198.18.1.2 and installed through the router.
    for (i, n) in c.nodes.iter().enumerate() {
        wait_for(
            &format!(
                "node-{} installs the default route learned from the router",
                i + 1
            ),
            Duration::from_secs(60),
            || {
                let r = routes(n);
                r.contains(&format!("default via {TOR}"))
                    && r.contains(&format!("100.127.0.0/24 via {TOR}"))
            },
            || format!("{}\n{}", routes(n), c.agents[i].log_tail(20)),
        );
    }
    for (p, ip) in &pods {
        p.exec(&["ping", "-c", "1", "-W", "3", "100.127.0.1"])
            .unwrap_or_else(|e| panic!("pod {ip} cannot reach the router's network: {e}"));
    }
    // Removing the service CIDR from BGPConfiguration withdraws it, and the sessions, whose
    // settings did not change, stay up (BIRD's "since" of each is unchanged).
    let since = || birdc(&dir, &["show", "protocols"]);
    wait_for(
        "both of the router's sessions are Established",
        Duration::from_secs(60),
        || since().matches("Established").count() == 2,
        since,
    );
    // BIRD may touch a session's "since" once more in the milliseconds after it shows
    // Established (a run saw .246 → .247); take the reference once two reads 500 ms apart agree.
    let mut before = since();
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(500));
        let now = since();
        if now == before {
            break;
        }
        before = now;
    }
    with_datastore(&c.nodes[0], &c.endpoint, |ds| {
        Box::pin(async move {
            Typed::<BGPConfiguration>::new(ds)
                .update_with(None, "default", 5, |c| {
                    c.spec.service_cluster_ips.clear();
                    Ok(true)
                })
                .await
                .unwrap();
        })
    });
    wait_for(
        "the router loses the service CIDR",
        Duration::from_secs(60),
        || !tor_routes(&dir).contains("100.96.0.0/12"),
        || tor_routes(&dir),
    );
    assert_eq!(
        since(),
        before,
        "a BGPConfiguration change reset unchanged sessions"
    );
}
