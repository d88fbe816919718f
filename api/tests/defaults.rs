//! Defaults: context-free ones come from serde (and appear in the CRD schema); the rest from
//! `Defaults::apply_defaults` and the accessors.

use std::collections::BTreeMap;

use margay_api::ippool::AllowedUse;
use margay_api::*;
use serde_json::json;

fn from<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).unwrap()
}

#[test]
fn an_ipv4_pool_defaults_to_26_bit_blocks_and_an_ipv6_pool_to_122() {
    let mut v4: IPPool = from(json!({"metadata": {"name": "a"}, "spec": {"cidr": "10.0.0.0/16"}}));
    let mut v6: IPPool = from(json!({"metadata": {"name": "b"}, "spec": {"cidr": "fd00::/48"}}));
    assert_eq!((v4.spec.block_size, v4.spec.block_size()), (None, 26));
    assert_eq!((v6.spec.block_size, v6.spec.block_size()), (None, 122));
    v4.apply_defaults();
    v6.apply_defaults();
    assert_eq!(v4.spec.block_size, Some(26));
    assert_eq!(v6.spec.block_size, Some(122));
}

#[test]
fn pool_fields_have_serde_defaults() {
    let p: IPPool = from(json!({"metadata": {"name": "a"}, "spec": {"cidr": "10.0.0.0/16"}}));
    assert_eq!(p.spec, IPPoolSpec::new("10.0.0.0/16"));
    assert_eq!(p.spec.node_selector, "all()");
    assert_eq!(p.spec.allowed_uses, vec![AllowedUse::Workload]);
    assert!(!p.spec.nat_outgoing && !p.spec.disabled && !p.spec.disable_bgp_export);
    assert!(p.spec.usable_by_node(&BTreeMap::new()));
    assert!(p.spec.allows_workloads());
}

#[test]
fn apply_defaults_keeps_what_is_set() {
    let mut p: IPPool = from(json!({"metadata": {"name": "a"},
        "spec": {"cidr": "10.0.0.0/16", "blockSize": 28, "nodeSelector": "", "allowedUses": []}}));
    p.apply_defaults();
    assert_eq!(p.spec.block_size, Some(28));
    assert_eq!(p.spec.node_selector, "all()");
    assert_eq!(p.spec.allowed_uses, vec![AllowedUse::Workload]);
}

#[test]
fn bgp_configuration_defaults_to_as_64512_with_the_mesh_on() {
    let mut c: BGPConfiguration = from(json!({"metadata": {"name": "default"}, "spec": {}}));
    assert_eq!(c.spec.as_number(), 64512);
    assert!(c.spec.node_to_node_mesh_enabled());
    assert_eq!(c.spec.listen_port(), 179);
    assert_eq!(c.spec.log_severity_screen(), bgp::LogSeverity::Info);
    assert_eq!(
        c.spec.node_mesh_max_restart_time(),
        std::time::Duration::from_secs(120)
    );
    c.apply_defaults();
    assert_eq!(c.spec.as_number, Some(64512));
    assert_eq!(c.spec.node_to_node_mesh_enabled, Some(true));
    assert_eq!(c.spec.listen_port, Some(179));
    assert_eq!(c.spec.node_mesh_max_restart_time.as_deref(), Some("120s"));
}

#[test]
fn a_per_node_bgp_configuration_overrides_the_default_field_by_field() {
    let default = BGPConfigurationSpec {
        as_number: Some(65000),
        node_to_node_mesh_enabled: Some(false),
        ..Default::default()
    };
    let node = BGPConfigurationSpec {
        listen_port: Some(1179),
        ..Default::default()
    };
    let m = node.merged_over(&default);
    assert_eq!(
        (
            m.as_number(),
            m.node_to_node_mesh_enabled(),
            m.listen_port()
        ),
        (65000, false, 1179)
    );
}

#[test]
fn the_node_as_number_overrides_the_cluster_one() {
    let n: MargayNode =
        from(json!({"metadata": {"name": "n"}, "spec": {"bgp": {"asNumber": 65010}}}));
    assert_eq!(n.as_number(64512), 65010);
    let plain: MargayNode = from(json!({"metadata": {"name": "n"}, "spec": {}}));
    assert_eq!(plain.as_number(64512), 64512);
    assert!(!plain.is_route_reflector());
}

#[test]
fn ipam_config_defaults_allow_auto_allocation_without_a_block_limit() {
    let c: IPAMConfig = from(json!({"metadata": {"name": "default"}, "spec": {}}));
    assert_eq!(c.spec, IPAMConfigSpec::default());
    assert!(c.spec.auto_allocate_blocks && !c.spec.strict_affinity);
    assert_eq!(c.spec.max_blocks_per_host(), None);
}

#[test]
fn workload_endpoint_and_node_status_defaults() {
    let w: WorkloadEndpoint = from(json!({"metadata": {"name": "w", "namespace": "d"},
        "spec": {"node": "n", "pod": "p", "interfaceName": "mgy0"}}));
    assert_eq!(
        (w.spec.orchestrator.as_str(), w.spec.endpoint.as_str()),
        ("k8s", "eth0")
    );
    let s: NodeStatus = from(json!({"metadata": {"name": "n"}, "spec": {"node": "n"}}));
    assert_eq!(s.spec.update_period_seconds, 10);
}

#[test]
fn serde_defaults_appear_in_the_crd_schema() {
    let yaml = include_str!("../../manifests/crds.yaml");
    for needle in [
        "default: 64512",
        "default: true",
        "default: all()",
        "default: Automatic",
        "default: 179",
    ] {
        assert!(yaml.contains(needle), "{needle}");
    }
}

#[test]
fn bgp_peers_select_their_local_nodes() {
    let labels: BTreeMap<String, String> = [("rack".to_string(), "r1".to_string())].into();
    let by_name = bgp::BGPPeerSpec {
        node: Some("n1".into()),
        ..Default::default()
    };
    assert!(by_name.applies_to_node("n1", &labels));
    assert!(!by_name.applies_to_node("n2", &labels));
    let by_sel = bgp::BGPPeerSpec {
        node_selector: Some("rack == 'r1'".into()),
        ..Default::default()
    };
    assert!(by_sel.applies_to_node("n2", &labels));
    assert!(!by_sel.applies_to_node("n2", &BTreeMap::new()));
    assert!(bgp::BGPPeerSpec::default().applies_to_node("any", &labels));
}
