//! One failing example per rule, with the exact message.

use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::*;
use crate::{
    AgentConfiguration, BGPConfiguration, BGPPeer, BlockAffinity, IPAMBlock, IPAMConfig,
    IPAMHandle, IPPool, MargayNode, NodeStatus, WorkloadEndpoint,
};

fn obj<T: DeserializeOwned>(kind: &str, name: &str, spec: Value) -> T {
    serde_json::from_value(json!({
        "apiVersion": "crd.margay.dev/v1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap_or_else(|e| panic!("{kind} {name}: {e}"))
}

fn pool(name: &str, spec: Value) -> IPPool {
    obj("IPPool", name, spec)
}

/// The messages of every error.
fn errors(v: &impl Validate) -> Vec<String> {
    v.field_errors().iter().map(ToString::to_string).collect()
}

#[track_caller]
fn assert_errors(v: &impl Validate, expected: &[&str]) {
    assert_eq!(errors(v), expected);
}

#[test]
fn a_valid_pool_has_no_errors() {
    assert_errors(&pool("p1", json!({"cidr": "100.64.0.0/16"})), &[]);
    assert_errors(
        &pool("p6", json!({"cidr": "fd00::/112", "blockSize": 122})),
        &[],
    );
}

#[test]
fn block_size_must_be_in_the_family_range() {
    assert_errors(
        &pool("p1", json!({"cidr": "10.0.0.0/16", "blockSize": 33})),
        &[r#"IPPool "p1": spec.blockSize 33 out of range 20..=32"#],
    );
    assert_errors(
        &pool("p1", json!({"cidr": "10.0.0.0/16", "blockSize": 19})),
        &[r#"IPPool "p1": spec.blockSize 19 out of range 20..=32"#],
    );
    // Family consistency: an IPv4 block size on an IPv6 pool.
    assert_errors(
        &pool("p6", json!({"cidr": "fd00::/48", "blockSize": 26})),
        &[r#"IPPool "p6": spec.blockSize 26 out of range 116..=128"#],
    );
}

#[test]
fn a_block_must_fit_in_its_pool() {
    assert_errors(
        &pool("small", json!({"cidr": "10.0.0.0/28"})),
        &[
            r#"IPPool "small": spec.blockSize 26 is shorter than the prefix of spec.cidr 10.0.0.0/28 (a block must fit in the pool)"#,
        ],
    );
}

#[test]
fn pool_cidrs_must_parse_without_host_bits() {
    assert_errors(
        &pool("p1", json!({"cidr": "10.0.0.0/33"})),
        &[
            r#"IPPool "p1": spec.cidr "10.0.0.0/33" is not a valid CIDR (e.g. 10.0.0.0/16, fd00::/48)"#,
        ],
    );
    assert_errors(
        &pool("p1", json!({"cidr": "10.0.0.1/16"})),
        &[r#"IPPool "p1": spec.cidr 10.0.0.1/16 has host bits set (did you mean 10.0.0.0/16?)"#],
    );
}

#[test]
fn pools_must_not_cover_reserved_ranges() {
    assert_errors(
        &pool("ll", json!({"cidr": "169.254.0.0/16"})),
        &[r#"IPPool "ll": spec.cidr 169.254.0.0/16 overlaps the link-local range 169.254.0.0/16"#],
    );
    assert_errors(
        &pool("everything", json!({"cidr": "::/0", "blockSize": 122})),
        &[
            r#"IPPool "everything": spec.cidr ::/0 overlaps the loopback address ::1/128"#,
            r#"IPPool "everything": spec.cidr ::/0 overlaps the link-local range fe80::/10"#,
            r#"IPPool "everything": spec.cidr ::/0 overlaps the multicast range ff00::/8"#,
            r#"IPPool "everything": spec.cidr ::/0 covers every IPv6 address"#,
        ],
    );
}

#[test]
fn names_must_be_dns1123_subdomains() {
    assert_errors(
        &pool("Pool_1", json!({"cidr": "10.0.0.0/16"})),
        &[
            r#"IPPool "Pool_1": metadata.name "Pool_1" is not a valid DNS-1123 subdomain: contains 'P' (lowercase letters, digits, '-' and '.', starting and ending with a letter or digit)"#,
        ],
    );
    assert_errors(
        &pool("-p", json!({"cidr": "10.0.0.0/16"})),
        &[
            r#"IPPool "-p": metadata.name "-p" is not a valid DNS-1123 subdomain: must start and end with a letter or digit (lowercase letters, digits, '-' and '.', starting and ending with a letter or digit)"#,
        ],
    );
    let long = "a".repeat(254);
    assert_eq!(
        errors(&pool(&long, json!({"cidr": "10.0.0.0/16"}))),
        [format!(
            r#"IPPool "{long}": metadata.name "{long}" is not a valid DNS-1123 subdomain: is 254 characters long, at most 253 allowed"#
        )]
    );
}

#[test]
fn selectors_must_parse() {
    assert_errors(
        &pool(
            "p1",
            json!({"cidr": "10.0.0.0/16", "nodeSelector": "role = x"}),
        ),
        &[
            r#"IPPool "p1": spec.nodeSelector selector "role = x": column 6: expected ==, !=, in or not in"#,
        ],
    );
}

#[test]
fn every_error_of_an_object_is_returned() {
    let p = pool(
        "P",
        json!({"cidr": "10.0.0.0/8", "blockSize": 40, "nodeSelector": "(", "allowedUses": []}),
    );
    assert_eq!(errors(&p).len(), 4, "{:?}", errors(&p));
    let e = p.validate().unwrap_err();
    assert_eq!(e.to_string().lines().count(), 4);
}

#[test]
fn overlapping_pools_are_reported_once_per_pair() {
    let a = pool("a", json!({"cidr": "10.0.0.0/8"}));
    let b = pool("b", json!({"cidr": "10.1.0.0/16"}));
    let c = pool("c", json!({"cidr": "192.168.0.0/16"}));
    let d = pool("d", json!({"cidr": "10.1.2.0/24"}));
    let expected = [
        r#"IPPool "b": spec.cidr 10.1.0.0/16 overlaps IPPool "a" (10.0.0.0/8)"#,
        r#"IPPool "d": spec.cidr 10.1.2.0/24 overlaps IPPool "a" (10.0.0.0/8)"#,
        r#"IPPool "d": spec.cidr 10.1.2.0/24 overlaps IPPool "b" (10.1.0.0/16)"#,
    ];
    let got: Vec<String> = pool_overlaps([&d, &c, &b, &a])
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(got, expected);
    let got: Vec<String> = pool_overlaps([&a, &b, &c, &d])
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(got, expected, "order of the input does not matter");
    // The same object twice (an update) does not overlap itself.
    let a2 = pool("a", json!({"cidr": "10.0.0.0/9"}));
    assert!(pool_overlaps([&a, &a2, &c]).is_empty());
}

#[test]
fn bgp_peer_rules() {
    let peer = |spec: Value| -> BGPPeer { obj("BGPPeer", "p", spec) };
    assert_errors(
        &peer(json!({"peerIP": "192.0.2.1", "asNumber": 65001})),
        &[],
    );
    assert_errors(
        &peer(json!({"peerIP": "[2001:db8::1]:1179", "asNumber": 65001})),
        &[],
    );
    assert_errors(&peer(json!({"peerSelector": "has(route-reflector)"})), &[]);
    assert_errors(
        &peer(json!({"peerIP": "192.0.2.1", "asNumber": 0})),
        &[r#"BGPPeer "p": spec.asNumber 0 out of range 1..=4294967295"#],
    );
    assert_errors(
        &peer(json!({"peerIP": "192.0.2.300", "asNumber": 1})),
        &[
            r#"BGPPeer "p": spec.peerIP "192.0.2.300" is not an IP address or IP:port (e.g. 192.0.2.1, [2001:db8::1]:179)"#,
        ],
    );
    assert_errors(
        &peer(json!({"peerIP": "192.0.2.1"})),
        &[r#"BGPPeer "p": spec.asNumber is required with spec.peerIP"#],
    );
    assert_errors(
        &peer(json!({})),
        &[r#"BGPPeer "p": spec one of peerIP (with asNumber) or peerSelector is required"#],
    );
    assert_errors(
        &peer(json!({"peerIP": "192.0.2.1", "asNumber": 1, "peerSelector": "all()"})),
        &[r#"BGPPeer "p": spec.peerSelector must not be set together with spec.peerIP"#],
    );
    assert_errors(
        &peer(json!({"peerSelector": "all()", "asNumber": 1})),
        &[
            r#"BGPPeer "p": spec.asNumber must not be set with spec.peerSelector (the selected nodes' AS numbers are used)"#,
        ],
    );
    assert_errors(
        &peer(json!({"node": "n1", "nodeSelector": "all()", "peerSelector": "has(rr"})),
        &[
            r#"BGPPeer "p": spec.nodeSelector must not be set together with spec.node"#,
            r#"BGPPeer "p": spec.peerSelector selector "has(rr": column 7: expected )"#,
        ],
    );
    assert_errors(
        &peer(
            json!({"peerSelector": "all()", "maxRestartTime": "2 minutes",
                     "password": {"secretKeyRef": {"name": "Bad", "key": ""}}}),
        ),
        &[
            r#"BGPPeer "p": spec.maxRestartTime "2 minutes" is not a duration (expected e.g. 90s, 1m30s, 500ms, 2h): unknown unit"#,
            r#"BGPPeer "p": spec.password.secretKeyRef.name "Bad" is not a valid DNS-1123 subdomain: contains 'B' (lowercase letters, digits, '-' and '.', starting and ending with a letter or digit)"#,
            r#"BGPPeer "p": spec.password.secretKeyRef.key must not be empty"#,
        ],
    );
}

#[test]
fn bgp_configuration_rules() {
    let cfg = |name: &str, spec: Value| -> BGPConfiguration { obj("BGPConfiguration", name, spec) };
    assert_errors(&cfg("default", json!({})), &[]);
    assert_errors(&cfg("node.n1", json!({"listenPort": 1179})), &[]);
    assert_errors(
        &cfg(
            "global",
            json!({"asNumber": 0, "listenPort": 0, "serviceClusterIPs": [{"cidr": "10.96.0.0/33"}]}),
        ),
        &[
            r#"BGPConfiguration "global": metadata.name "global" must be "default" or "node.NODENAME""#,
            r#"BGPConfiguration "global": spec.asNumber 0 out of range 1..=4294967295"#,
            r#"BGPConfiguration "global": spec.listenPort 0 out of range 1..=65535"#,
            r#"BGPConfiguration "global": spec.serviceClusterIPs[0].cidr "10.96.0.0/33" is not a valid CIDR (e.g. 10.0.0.0/16, fd00::/48)"#,
        ],
    );
}

#[test]
fn node_rules() {
    let node = |spec: Value| -> MargayNode { obj("Node", "n1", spec) };
    assert_errors(
        &node(json!({"bgp": {"ipv4Address": "198.18.0.1/15", "ipv6Address": "fd00::1"}})),
        &[],
    );
    assert_errors(
        &node(
            json!({"bgp": {"ipv4Address": "fd00::1", "ipv6Address": "198.18.0.1",
                             "asNumber": 0, "routeReflectorClusterID": "fd00::1"}}),
        ),
        &[
            r#"Node "n1": spec.bgp.ipv4Address fd00::1 is not an IPv4 address"#,
            r#"Node "n1": spec.bgp.ipv6Address 198.18.0.1 is not an IPv6 address"#,
            r#"Node "n1": spec.bgp.asNumber 0 out of range 1..=4294967295"#,
            r#"Node "n1": spec.bgp.routeReflectorClusterID fd00::1 is not an IPv4 address"#,
        ],
    );
    assert_errors(
        &node(json!({"bgp": {"ipv4Address": "198.18.0.1/40", "routeReflectorClusterID": "x"}})),
        &[
            r#"Node "n1": spec.bgp.ipv4Address "198.18.0.1/40" is not a valid IP address (with optional /prefix)"#,
            r#"Node "n1": spec.bgp.routeReflectorClusterID "x" is not a valid IP address"#,
        ],
    );
}

#[test]
fn node_status_rules() {
    let mut s: NodeStatus = obj("NodeStatus", "n1", json!({"node": "N1"}));
    s.status = Some(
        serde_json::from_value(json!({"bgp": {"peers": [
            {"peerIP": "1.2.3", "type": "NodeMesh", "state": "Idle"}
        ]}}))
        .unwrap(),
    );
    assert_errors(
        &s,
        &[
            r#"NodeStatus "n1": spec.node "N1" is not a valid DNS-1123 subdomain: contains 'N' (lowercase letters, digits, '-' and '.', starting and ending with a letter or digit)"#,
            r#"NodeStatus "n1": status.bgp.peers[0].peerIP "1.2.3" is not a valid IP address"#,
        ],
    );
}

#[test]
fn agent_configuration_rules() {
    let ac =
        |name: &str, spec: Value| -> AgentConfiguration { obj("AgentConfiguration", name, spec) };
    assert_errors(
        &ac("default", json!({"routeRefreshInterval": "1m30s"})),
        &[],
    );
    assert_errors(&ac("node.n1", json!({})), &[]);
    assert_errors(
        &ac(
            "node.N_1",
            json!({"reportingInterval": "10", "healthPort": 0,
                               "failsafeInboundHostPorts": [{"protocol": "TCP", "port": 0}]}),
        ),
        &[
            r#"AgentConfiguration "node.N_1": metadata.name "node.N_1" is not a valid DNS-1123 subdomain: contains 'N' (lowercase letters, digits, '-' and '.', starting and ending with a letter or digit)"#,
            r#"AgentConfiguration "node.N_1": metadata.name "node.N_1" must be "default" or "node.NODENAME""#,
            r#"AgentConfiguration "node.N_1": spec.reportingInterval "10" is not a duration (expected e.g. 90s, 1m30s, 500ms, 2h): missing unit"#,
            r#"AgentConfiguration "node.N_1": spec.healthPort 0 out of range 1..=65535"#,
            r#"AgentConfiguration "node.N_1": spec.failsafeInboundHostPorts[0].port 0 out of range 1..=65535"#,
        ],
    );
}

#[test]
fn workload_endpoint_rules() {
    let mut w: WorkloadEndpoint = obj(
        "WorkloadEndpoint",
        "n1-k8s-p-eth0",
        json!({"node": "n1", "pod": "p", "interfaceName": "mgy0123456789ab",
               "ipNetworks": ["100.64.0.5/32"]}),
    );
    assert_errors(
        &w,
        &[
            r#"WorkloadEndpoint "n1-k8s-p-eth0": metadata.namespace is required (a WorkloadEndpoint lives in its pod's namespace)"#,
        ],
    );
    w.metadata.namespace = Some("default".into());
    assert_errors(&w, &[]);
    w.spec.interface_name = "mgy0123456789abc".into();
    w.spec.ip_networks = vec!["100.64.0.5".into()];
    w.spec.mac = Some("ee:ee:ee".into());
    w.spec.ports = vec![crate::workload::EndpointPort {
        name: String::new(),
        protocol: Default::default(),
        port: 0,
    }];
    assert_errors(
        &w,
        &[
            r#"WorkloadEndpoint "default/n1-k8s-p-eth0": spec.interfaceName "mgy0123456789abc" is not a valid interface name (1-15 characters, no '/' or spaces)"#,
            r#"WorkloadEndpoint "default/n1-k8s-p-eth0": spec.ipNetworks[0] "100.64.0.5" is not a valid CIDR (e.g. 10.0.0.0/16, fd00::/48)"#,
            r#"WorkloadEndpoint "default/n1-k8s-p-eth0": spec.mac "ee:ee:ee" is not a MAC address (e.g. ee:ee:ee:ee:ee:ee)"#,
            r#"WorkloadEndpoint "default/n1-k8s-p-eth0": spec.ports[0].name must not be empty"#,
            r#"WorkloadEndpoint "default/n1-k8s-p-eth0": spec.ports[0].port 0 out of range 1..=65535"#,
        ],
    );
}

#[test]
fn ipam_config_must_be_named_default() {
    assert_errors(&obj::<IPAMConfig>("IPAMConfig", "default", json!({})), &[]);
    assert_errors(
        &obj::<IPAMConfig>("IPAMConfig", "cluster", json!({})),
        &[
            r#"IPAMConfig "cluster": metadata.name "cluster" must be "default" (only that object is read)"#,
        ],
    );
}

fn block(cidr: &str) -> IPAMBlock {
    IPAMBlock::empty(cidr.parse().unwrap(), Some("n1")).unwrap()
}

#[test]
fn an_empty_block_is_consistent() {
    assert_errors(&block("10.0.0.0/26"), &[]);
    assert_errors(&block("fd00::40/122"), &[]);
}

#[test]
fn a_block_is_named_after_its_cidr_and_owned_by_a_host() {
    let mut b = block("10.0.0.0/30");
    b.metadata.name = Some("block-1".into());
    b.spec.affinity = Some("n1".into());
    assert_errors(
        &b,
        &[
            r#"IPAMBlock "block-1": metadata.name "block-1" does not match spec.cidr 10.0.0.0/30 (expected "10-0-0-0-30")"#,
            r#"IPAMBlock "block-1": spec.affinity "n1" is not of the form host:NODE"#,
        ],
    );
}

#[test]
fn block_allocations_unallocated_and_attributes_agree() {
    let mut b = block("10.0.0.0/30");
    b.spec.allocations.pop();
    assert_errors(
        &b,
        &[r#"IPAMBlock "10-0-0-0-30": spec.allocations has 3 entries, expected 4 for 10.0.0.0/30"#],
    );
    let mut b = block("10.0.0.0/30");
    b.spec.allocations[1] = Some(0);
    b.spec.unallocated = vec![0, 1, 7, 0];
    assert_errors(
        &b,
        &[
            r#"IPAMBlock "10-0-0-0-30": spec.allocations[1] 0 is not an index into spec.attributes (0 entries)"#,
            r#"IPAMBlock "10-0-0-0-30": spec.unallocated[1] 1 is allocated"#,
            r#"IPAMBlock "10-0-0-0-30": spec.unallocated[2] 7 out of range 0..4"#,
            r#"IPAMBlock "10-0-0-0-30": spec.unallocated[3] 0 is listed twice"#,
        ],
    );
    let mut b = block("10.0.0.0/30");
    b.spec.unallocated.pop();
    assert_errors(
        &b,
        &[r#"IPAMBlock "10-0-0-0-30": spec.unallocated lists 3 ordinals but 4 are free"#],
    );
}

#[test]
fn block_affinity_rules() {
    let a = BlockAffinity::pending("n1", &"10.0.0.0/26".parse().unwrap());
    assert_errors(&a, &[]);
    let bad: BlockAffinity = obj(
        "BlockAffinity",
        "x",
        json!({"node": "n1", "cidr": "10.0.0.0/26", "state": "confirmed"}),
    );
    assert_errors(
        &bad,
        &[
            r#"BlockAffinity "x": metadata.name "x" does not match spec.node and spec.cidr (expected "n1-10-0-0-0-26")"#,
        ],
    );
}

#[test]
fn ipam_handle_rules() {
    let h: IPAMHandle = obj(
        "IPAMHandle",
        "h1",
        json!({"handleID": "", "block": {"10.0.0.0/26": 1, "10.0.0.1/26": 1}}),
    );
    assert_errors(
        &h,
        &[
            r#"IPAMHandle "h1": spec.handleID must not be empty"#,
            r#"IPAMHandle "h1": spec.block["10.0.0.1/26"] 10.0.0.1/26 has host bits set (did you mean 10.0.0.0/26?)"#,
        ],
    );
}

#[test]
fn network_policy_rules() {
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    let np: NetworkPolicy = serde_json::from_value(json!({
        "metadata": {"name": "allow-web", "namespace": "default"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "web"}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"namespaceSelector": {}}, {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
                         "ports": [{"port": 8080}, {"port": "http", "protocol": "TCP"}, {"port": 30000, "endPort": 30100}]}],
            "egress": [{"to": [{"podSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["db"]}]}}]}]
        }
    }))
    .unwrap();
    assert_errors(&np, &[]);
    let bad: NetworkPolicy = serde_json::from_value(json!({
        "metadata": {"name": "bad"},
        "spec": {
            "podSelector": {"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["x"]}]},
            "policyTypes": ["Both"],
            "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.1.0.0/24"]}, "podSelector": {}}],
                         "ports": [{"port": 0, "protocol": "ICMP"}, {"port": "http", "endPort": 90}, {"port": 100, "endPort": 90}]}],
            "egress": [{"to": [{"namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}}]}]
        }
    }))
    .unwrap();
    assert_errors(
        &bad,
        &[
            r#"NetworkPolicy "bad": metadata.namespace is required"#,
            r#"NetworkPolicy "bad": spec.podSelector.matchExpressions[0].operator "Equals" is not one of In, NotIn, Exists, DoesNotExist"#,
            r#"NetworkPolicy "bad": spec.policyTypes "Both" is not one of Ingress, Egress"#,
            r#"NetworkPolicy "bad": spec.ingress[0].from[0].ipBlock must not be set together with podSelector or namespaceSelector"#,
            r#"NetworkPolicy "bad": spec.ingress[0].from[0].ipBlock.except[0] 10.1.0.0/24 is not within ipBlock.cidr 10.0.0.0/16"#,
            r#"NetworkPolicy "bad": spec.ingress[0].ports[0].protocol "ICMP" is not one of TCP, UDP, SCTP"#,
            r#"NetworkPolicy "bad": spec.ingress[0].ports[0].port 0 out of range 1..=65535"#,
            r#"NetworkPolicy "bad": spec.ingress[0].ports[1].endPort requires a numeric port"#,
            r#"NetworkPolicy "bad": spec.ingress[0].ports[2].endPort 90 out of range 100..=65535"#,
            r#"NetworkPolicy "bad": spec.egress[0].to[0].namespaceSelector.matchExpressions[0].values must be empty for operator Exists"#,
        ],
    );
}

#[test]
fn namespace_names_are_dns1123_labels() {
    use k8s_openapi::api::core::v1::Namespace;
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "kube.system"}})).unwrap();
    assert_errors(
        &ns,
        &[
            r#"Namespace "kube.system": metadata.name "kube.system" is not a valid DNS-1123 label: contains '.' (lowercase letters, digits and '-', starting and ending with a letter or digit)"#,
        ],
    );
}

#[test]
fn a_pool_needs_some_allowed_use() {
    assert_errors(
        &pool("p1", json!({"cidr": "10.0.0.0/16", "allowedUses": []})),
        &[r#"IPPool "p1": spec.allowedUses must not be empty (e.g. [Workload])"#],
    );
}

#[test]
fn a_block_owner_must_be_a_valid_node_name_and_blocks_stay_small() {
    let mut b = block("10.0.0.0/30");
    b.spec.affinity = Some("host:Node_1".into());
    assert_errors(
        &b,
        &[
            r#"IPAMBlock "10-0-0-0-30": spec.affinity "host:Node_1": node name contains 'N' (lowercase letters, digits, '-' and '.', starting and ending with a letter or digit)"#,
        ],
    );
    let big: IPAMBlock = obj("IPAMBlock", "10-0-0-0-8", json!({"cidr": "10.0.0.0/8"}));
    assert_errors(
        &big,
        &[r#"IPAMBlock "10-0-0-0-8": spec.cidr 10.0.0.0/8 has more than 65536 addresses"#],
    );
}

#[test]
fn a_missing_name_is_reported() {
    let p: IPPool =
        serde_json::from_value(json!({"metadata": {}, "spec": {"cidr": "10.0.0.0/16"}})).unwrap();
    assert_errors(&p, &[r#"IPPool "": metadata.name is required"#]);
}

proptest::proptest! {
    #[test]
    fn pool_overlaps_do_not_depend_on_order(
        pools in proptest::collection::vec((0u8..4, 8u8..=24), 1..6),
        seed in proptest::prelude::any::<u64>(),
    ) {
        let objs: Vec<IPPool> = pools
            .iter()
            .enumerate()
            .map(|(i, (second, prefix))| {
                let net: ipnet::IpNet = format!("10.{second}.0.0/{prefix}").parse().unwrap();
                pool(&format!("p{i}"), json!({"cidr": net.trunc().to_string()}))
            })
            .collect();
        let mut shuffled: Vec<&IPPool> = objs.iter().collect();
        let n = shuffled.len();
        shuffled.rotate_left((seed as usize) % n);
        if seed % 2 == 0 {
            shuffled.reverse();
        }
        let a = pool_overlaps(objs.iter());
        let b = pool_overlaps(shuffled);
        proptest::prop_assert_eq!(&a, &b);
        // Every overlapping pair is reported exactly once.
        let mut pairs = 0;
        for i in 0..objs.len() {
            for j in 0..i {
                let (x, y) = (objs[i].spec.net().unwrap(), objs[j].spec.net().unwrap());
                if x.contains(&y.network()) || y.contains(&x.network()) {
                    pairs += 1;
                }
            }
        }
        proptest::prop_assert_eq!(a.len(), pairs);
    }
}
