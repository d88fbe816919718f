//! Who this node peers with: a pure function of the Nodes, BGPPeers and BGPConfiguration, with
//! Calico's rules.
//!
//! - While `nodeToNodeMeshEnabled` is on (the default), every node peers with every other node
//!   that has a BGP address, per address family.
//! - Each `BGPPeer` that selects this node (`node`, `nodeSelector`, or neither = all nodes) adds
//!   either one external peer (`peerIP` + `asNumber`) or every Margay node that `peerSelector`
//!   matches (their addresses and AS numbers from their Node objects).
//! - A node with `routeReflectorClusterID` is a route reflector: the Margay nodes it peers with
//!   are its clients unless they are reflectors of the same cluster.
//! - One session per address: an explicit BGPPeer wins over the mesh, and of two BGPPeers the
//!   first by name wins. A node never peers with its own addresses.
//!
//! Passwords are resolved by the caller's closure (Secrets live in the datastore); a peer whose
//! password cannot be read is left out with a reason, never started without its password.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use margay_api::bgp::BGPPassword;
use margay_api::node::BGPPeerType;
use margay_api::{BGPConfigurationSpec, BGPPeer, MargayNode};

/// One BGP session this node should have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredPeer {
    /// The peer's address.
    pub addr: IpAddr,
    /// The peer's BGP port.
    pub port: u16,
    /// The peer's AS.
    pub asn: u32,
    /// Why the session exists (mesh, global or node-specific BGPPeer).
    pub kind: BGPPeerType,
    /// The BGPPeer that asked for it (`None` for the mesh).
    pub bgp_peer: Option<String>,
    /// The Margay node at that address, if it is one.
    pub node: Option<String>,
    /// Whether we reflect routes to and from it (we are a reflector, it is a client).
    pub rr_client: bool,
    /// TCP MD5 password.
    pub password: Option<String>,
    /// Send our routes with their original next hop instead of our address (eBGP).
    pub keep_original_next_hop: bool,
    /// How long the peer keeps our routes while we restart (graceful restart).
    pub restart_time: Duration,
}

/// The speaker-wide settings that follow from the same inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalBgp {
    /// Our AS (the Node's own, else the cluster's).
    pub asn: u32,
    /// Our route-reflector cluster id, if we are a reflector.
    pub cluster_id: Option<Ipv4Addr>,
    /// The BGP port, ours and the other nodes'.
    pub port: u16,
}

/// The peers of node `me` and the reasons some were left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peering {
    /// Sessions by peer address.
    pub peers: BTreeMap<IpAddr, DesiredPeer>,
    /// Peers left out, each with why (a bad selector, a missing password, …).
    pub skipped: Vec<String>,
}

/// The speaker settings of node `me` (`None` until its Node exists).
pub fn local_bgp(
    me: &str,
    nodes: &BTreeMap<String, MargayNode>,
    cfg: &BGPConfigurationSpec,
) -> Option<LocalBgp> {
    let n = nodes.get(me)?;
    Some(LocalBgp {
        asn: n.as_number(cfg.as_number()),
        cluster_id: n
            .spec
            .bgp
            .as_ref()
            .and_then(|b| b.route_reflector_cluster_id()),
        port: cfg.listen_port(),
    })
}

fn addresses(n: &MargayNode) -> Vec<IpAddr> {
    let Some(b) = n.spec.bgp.as_ref() else {
        return Vec::new();
    };
    let mut v: Vec<IpAddr> = Vec::new();
    v.extend(b.ipv4().map(IpAddr::V4));
    v.extend(b.ipv6().map(IpAddr::V6));
    v
}

fn cluster_id(n: &MargayNode) -> Option<Ipv4Addr> {
    n.spec
        .bgp
        .as_ref()
        .and_then(|b| b.route_reflector_cluster_id())
}

fn labels(n: &MargayNode) -> BTreeMap<String, String> {
    n.metadata.labels.clone().unwrap_or_default()
}

/// Computes node `me`'s sessions. `password` reads a Secret key (`Err` says why it could not).
pub fn desired_peers(
    me: &str,
    nodes: &BTreeMap<String, MargayNode>,
    bgp_peers: &[BGPPeer],
    cfg: &BGPConfigurationSpec,
    password: &dyn Fn(&BGPPassword) -> Result<String, String>,
) -> Peering {
    let mut out = Peering::default();
    let Some(my) = nodes.get(me) else {
        return out;
    };
    let mine = addresses(my);
    let my_cluster = cluster_id(my);
    let my_labels = labels(my);
    let port = cfg.listen_port();
    // The address a Margay node is reachable at, to recognise nodes among peerIPs.
    let node_at: BTreeMap<IpAddr, &str> = nodes
        .iter()
        .flat_map(|(name, n)| addresses(n).into_iter().map(move |a| (a, name.as_str())))
        .collect();
    let rr_client = |node: Option<&str>| -> bool {
        let Some(c) = my_cluster else { return false };
        node.and_then(|n| nodes.get(n))
            .is_some_and(|n| cluster_id(n) != Some(c))
    };
    let same_family = |a: &IpAddr| mine.iter().any(|m| m.is_ipv4() == a.is_ipv4());

    let mut explicit: Vec<&BGPPeer> = bgp_peers
        .iter()
        .filter(|p| p.spec.applies_to_node(me, &my_labels))
        .collect();
    explicit.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for p in explicit {
        let name = p.metadata.name.clone().unwrap_or_default();
        let kind = if p.spec.node.is_some() || p.spec.node_selector.is_some() {
            BGPPeerType::NodePeer
        } else {
            BGPPeerType::GlobalPeer
        };
        let pw = match &p.spec.password {
            None => None,
            Some(ref_) => match password(ref_) {
                Ok(pw) => Some(pw),
                Err(why) => {
                    out.skipped.push(format!(
                        "BGPPeer {name}: password from Secret {}/{}: {why}",
                        ref_.secret_key_ref.name, ref_.secret_key_ref.key
                    ));
                    continue;
                }
            },
        };
        let restart_time = p
            .spec
            .max_restart_time
            .as_deref()
            .and_then(|s| margay_api::duration::parse_duration(s).ok())
            .unwrap_or_else(|| cfg.node_mesh_max_restart_time());
        let mut targets: Vec<(IpAddr, u16, u32, Option<String>)> = Vec::new();
        if let Some(sel) = p.spec.peer_selector() {
            let sel = match sel {
                Ok(s) => s,
                Err(e) => {
                    out.skipped
                        .push(format!("BGPPeer {name}: invalid peerSelector: {e}"));
                    continue;
                }
            };
            for (n_name, n) in nodes {
                if n_name == me || !sel.matches(&labels(n)) {
                    continue;
                }
                for a in addresses(n) {
                    targets.push((a, port, n.as_number(cfg.as_number()), Some(n_name.clone())));
                }
            }
        } else if let Some(sa) = p.spec.peer_addr(port) {
            let Some(asn) = p.spec.as_number else {
                out.skipped
                    .push(format!("BGPPeer {name}: peerIP needs asNumber"));
                continue;
            };
            targets.push((
                sa.ip(),
                sa.port(),
                asn,
                node_at.get(&sa.ip()).map(|s| s.to_string()),
            ));
        } else {
            out.skipped.push(format!(
                "BGPPeer {name}: set peerIP (with asNumber) or peerSelector"
            ));
            continue;
        }
        for (addr, port, asn, node) in targets {
            if mine.contains(&addr) || !same_family(&addr) || out.peers.contains_key(&addr) {
                continue;
            }
            out.peers.insert(
                addr,
                DesiredPeer {
                    addr,
                    port,
                    asn,
                    kind,
                    bgp_peer: Some(name.clone()),
                    rr_client: rr_client(node.as_deref()),
                    node,
                    password: pw.clone(),
                    keep_original_next_hop: p.spec.keep_original_next_hop,
                    restart_time,
                },
            );
        }
    }

    if cfg.node_to_node_mesh_enabled() {
        let pw = match &cfg.node_mesh_password {
            None => Ok(None),
            Some(r) => password(r).map(Some).map_err(|why| {
                format!(
                    "node-to-node mesh: password from Secret {}/{}: {why}",
                    r.secret_key_ref.name, r.secret_key_ref.key
                )
            }),
        };
        match pw {
            Err(why) => out.skipped.push(why),
            Ok(pw) => {
                for (n_name, n) in nodes {
                    if n_name == me {
                        continue;
                    }
                    for addr in addresses(n) {
                        if mine.contains(&addr)
                            || !same_family(&addr)
                            || out.peers.contains_key(&addr)
                        {
                            continue;
                        }
                        out.peers.insert(
                            addr,
                            DesiredPeer {
                                addr,
                                port,
                                asn: n.as_number(cfg.as_number()),
                                kind: BGPPeerType::NodeMesh,
                                bgp_peer: None,
                                node: Some(n_name.clone()),
                                rr_client: rr_client(Some(n_name)),
                                password: pw.clone(),
                                keep_original_next_hop: false,
                                restart_time: cfg.node_mesh_max_restart_time(),
                            },
                        );
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use margay_api::BGPPeerSpec;
    use margay_api::NodeSpec;
    use margay_api::bgp::SecretKeyRef;
    use margay_api::node::NodeBGPSpec;
    use proptest::prelude::*;

    fn node(name: &str, v4: &str, labels: &[(&str, &str)], cluster: Option<&str>) -> MargayNode {
        let mut n = MargayNode::new(
            name,
            NodeSpec {
                bgp: Some(NodeBGPSpec {
                    ipv4_address: Some(format!("{v4}/24")),
                    route_reflector_cluster_id: cluster.map(str::to_string),
                    ..Default::default()
                }),
            },
        );
        n.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        n
    }

    fn nodes(list: Vec<MargayNode>) -> BTreeMap<String, MargayNode> {
        list.into_iter()
            .map(|n| (n.metadata.name.clone().unwrap_or_default(), n))
            .collect()
    }

    fn peer(name: &str, spec: BGPPeerSpec) -> BGPPeer {
        BGPPeer::new(name, spec)
    }

    fn no_secrets(_: &BGPPassword) -> Result<String, String> {
        Err("no secrets in this test".into())
    }

    fn mesh_off() -> BGPConfigurationSpec {
        BGPConfigurationSpec {
            node_to_node_mesh_enabled: Some(false),
            ..Default::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn three() -> BTreeMap<String, MargayNode> {
        nodes(vec![
            node("n1", "198.18.0.1", &[], None),
            node("n2", "198.18.0.2", &[], None),
            node(
                "rr",
                "198.18.0.9",
                &[("route-reflector", "true")],
                Some("244.0.0.1"),
            ),
        ])
    }

    #[test]
    fn the_mesh_peers_with_every_other_node_but_not_itself() {
        let p = desired_peers("n1", &three(), &[], &Default::default(), &no_secrets);
        let addrs: Vec<IpAddr> = p.peers.keys().copied().collect();
        assert_eq!(addrs, vec![ip("198.18.0.2"), ip("198.18.0.9")]);
        assert!(p.peers.values().all(|d| d.kind == BGPPeerType::NodeMesh));
        assert!(p.peers.values().all(|d| d.asn == 64512 && d.port == 179));
        assert!(p.skipped.is_empty());
    }

    #[test]
    fn a_node_not_yet_registered_has_no_peers() {
        let p = desired_peers("ghost", &three(), &[], &Default::default(), &no_secrets);
        assert!(p.peers.is_empty());
    }

    #[test]
    fn with_the_mesh_off_clients_peer_only_with_the_reflector_it_selects() {
        let to_rr = peer(
            "to-rr",
            BGPPeerSpec {
                node_selector: Some("!has(route-reflector)".into()),
                peer_selector: Some("has(route-reflector)".into()),
                ..Default::default()
            },
        );
        let rr_side = peer(
            "rr-to-all",
            BGPPeerSpec {
                node_selector: Some("has(route-reflector)".into()),
                peer_selector: Some("all()".into()),
                ..Default::default()
            },
        );
        let ns = three();
        let peers = [to_rr, rr_side];
        let c = desired_peers("n1", &ns, &peers, &mesh_off(), &no_secrets);
        assert_eq!(c.peers.len(), 1);
        let d = &c.peers[&ip("198.18.0.9")];
        assert_eq!(d.kind, BGPPeerType::NodePeer);
        assert_eq!(d.node.as_deref(), Some("rr"));
        assert!(!d.rr_client, "a client does not reflect");

        let r = desired_peers("rr", &ns, &peers, &mesh_off(), &no_secrets);
        assert_eq!(r.peers.len(), 2);
        assert!(r.peers.values().all(|d| d.rr_client));
    }

    #[test]
    fn reflectors_of_one_cluster_are_not_each_others_clients() {
        let ns = nodes(vec![
            node("rr1", "198.18.0.8", &[("rr", "")], Some("244.0.0.1")),
            node("rr2", "198.18.0.9", &[("rr", "")], Some("244.0.0.1")),
            node("rr3", "198.18.0.10", &[("rr", "")], Some("244.0.0.2")),
        ]);
        let all = peer(
            "rrs",
            BGPPeerSpec {
                peer_selector: Some("has(rr)".into()),
                ..Default::default()
            },
        );
        let p = desired_peers("rr1", &ns, &[all], &mesh_off(), &no_secrets);
        assert!(!p.peers[&ip("198.18.0.9")].rr_client);
        assert!(p.peers[&ip("198.18.0.10")].rr_client);
    }

    #[test]
    fn an_external_peer_has_its_own_as_and_port_and_explicit_wins_over_mesh() {
        let tor = peer(
            "tor",
            BGPPeerSpec {
                peer_ip: Some("198.18.0.254:1179".into()),
                as_number: Some(65001),
                keep_original_next_hop: true,
                max_restart_time: Some("30s".into()),
                ..Default::default()
            },
        );
        let to_n2 = peer(
            "to-n2",
            BGPPeerSpec {
                node: Some("n1".into()),
                peer_ip: Some("198.18.0.2".into()),
                as_number: Some(64512),
                ..Default::default()
            },
        );
        let p = desired_peers(
            "n1",
            &three(),
            &[tor, to_n2],
            &Default::default(),
            &no_secrets,
        );
        let t = &p.peers[&ip("198.18.0.254")];
        assert_eq!(
            (t.asn, t.port, t.kind),
            (65001, 1179, BGPPeerType::GlobalPeer)
        );
        assert!(t.keep_original_next_hop);
        assert_eq!(t.restart_time, Duration::from_secs(30));
        assert_eq!(t.node, None);
        let n2 = &p.peers[&ip("198.18.0.2")];
        assert_eq!(n2.kind, BGPPeerType::NodePeer);
        assert_eq!(n2.node.as_deref(), Some("n2"));
        assert_eq!(p.peers.len(), 3);
    }

    #[test]
    fn a_node_specific_peer_for_another_node_does_not_apply() {
        let other = peer(
            "n2-only",
            BGPPeerSpec {
                node: Some("n2".into()),
                peer_ip: Some("198.18.0.254".into()),
                as_number: Some(65001),
                ..Default::default()
            },
        );
        let p = desired_peers("n1", &three(), &[other], &mesh_off(), &no_secrets);
        assert!(p.peers.is_empty());
    }

    #[test]
    fn a_peer_whose_password_cannot_be_read_is_skipped_with_the_reason() {
        let pw = BGPPassword {
            secret_key_ref: SecretKeyRef {
                name: "bgp".into(),
                key: "tor".into(),
            },
        };
        let tor = peer(
            "tor",
            BGPPeerSpec {
                peer_ip: Some("198.18.0.254".into()),
                as_number: Some(65001),
                password: Some(pw.clone()),
                ..Default::default()
            },
        );
        let p = desired_peers(
            "n1",
            &three(),
            std::slice::from_ref(&tor),
            &mesh_off(),
            &no_secrets,
        );
        assert!(p.peers.is_empty());
        assert!(p.skipped[0].contains("BGPPeer tor") && p.skipped[0].contains("bgp/tor"));

        let ok = |r: &BGPPassword| -> Result<String, String> {
            Ok(format!(
                "{}-{}",
                r.secret_key_ref.name, r.secret_key_ref.key
            ))
        };
        let p = desired_peers("n1", &three(), &[tor], &mesh_off(), &ok);
        assert_eq!(
            p.peers[&ip("198.18.0.254")].password.as_deref(),
            Some("bgp-tor")
        );
    }

    #[test]
    fn an_invalid_selector_is_reported_not_fatal() {
        let bad = peer(
            "bad",
            BGPPeerSpec {
                peer_selector: Some("has(".into()),
                ..Default::default()
            },
        );
        let p = desired_peers("n1", &three(), &[bad], &Default::default(), &no_secrets);
        assert_eq!(p.peers.len(), 2, "the mesh still stands");
        assert!(p.skipped[0].contains("invalid peerSelector"));
    }

    #[test]
    fn local_settings_follow_the_node_and_the_cluster() {
        let mut ns = three();
        ns.get_mut("n1")
            .unwrap()
            .spec
            .bgp
            .as_mut()
            .unwrap()
            .as_number = Some(65010);
        let cfg = BGPConfigurationSpec {
            listen_port: Some(1179),
            ..Default::default()
        };
        assert_eq!(
            local_bgp("n1", &ns, &cfg),
            Some(LocalBgp {
                asn: 65010,
                cluster_id: None,
                port: 1179
            })
        );
        assert_eq!(
            local_bgp("rr", &ns, &cfg).unwrap().cluster_id,
            Some("244.0.0.1".parse().unwrap())
        );
    }

    proptest! {
        #[test]
        fn peers_do_not_depend_on_the_order_of_bgp_peers(seed in 0u64..1000, mesh: bool) {
            let mut peers: Vec<BGPPeer> = (0..6)
                .map(|i| peer(&format!("p{i}"), BGPPeerSpec {
                    peer_ip: Some(format!("198.18.1.{}", (i * 7 + seed as usize) % 4 + 1)),
                    as_number: Some(65000 + i as u32),
                    ..Default::default()
                }))
                .collect();
            let cfg = BGPConfigurationSpec { node_to_node_mesh_enabled: Some(mesh), ..Default::default() };
            let a = desired_peers("n1", &three(), &peers, &cfg, &no_secrets);
            peers.reverse();
            peers.rotate_left((seed % 6) as usize);
            let b = desired_peers("n1", &three(), &peers, &cfg, &no_secrets);
            prop_assert_eq!(a, b);
        }
    }
}
