//! Every resource round-trips through YAML and JSON unchanged, whatever its field values
//! (including strings that YAML would read as something else if they were not quoted).

use std::collections::BTreeMap;
use std::fmt::Debug;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use margay_api::agentconfig::{IptablesBackend, ProtoPort, Protocol};
use margay_api::bgp::{BGPPassword, LogSeverity, SecretKeyRef, ServiceIPBlock};
use margay_api::ipam::AffinityState;
use margay_api::ippool::{AllowedUse, AssignmentMode};
use margay_api::node::{BGPPeerStatus, BGPPeerType, BGPSessionState, BGPStatus, NodeBGPSpec};
use margay_api::workload::EndpointPort;
use margay_api::*;
use proptest::option::of;
use proptest::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Strings, with a bias to ones YAML 1.1/1.2 would misread unquoted.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "",
            "yes",
            "no",
            "y",
            "n",
            "on",
            "off",
            "true",
            "null",
            "~",
            "0644",
            "0x1f",
            "1e3",
            "12",
            "-1",
            ".5",
            " lead",
            "trail ",
            "a: b",
            "#c",
            "- d",
            "[e]",
            "{f}",
            "'g'",
            "\"h\"",
            "has(route-reflector)",
            "all()",
            "role == 'rr'",
            "2026-01-01",
            "multi\nline",
            "tab\t",
        ])
        .prop_map(str::to_string),
        "[ -~]{0,12}",
        "\\PC{0,6}",
    ]
}

fn name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9.-]{0,10}[a-z0-9]"
}

fn cidr() -> impl Strategy<Value = String> {
    prop_oneof![
        (any::<[u8; 4]>(), 0u8..=32)
            .prop_map(|(a, p)| format!("{}.{}.{}.{}/{p}", a[0], a[1], a[2], a[3])),
        (any::<u128>(), 0u8..=128)
            .prop_map(|(a, p)| format!("{}/{p}", std::net::Ipv6Addr::from(a))),
        text(),
    ]
}

fn labels() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(name(), text(), 0..3)
}

fn time() -> impl Strategy<Value = Time> {
    (0i64..4_000_000_000).prop_map(|s| Time(Timestamp::from_second(s).unwrap()))
}

fn severity() -> impl Strategy<Value = LogSeverity> {
    prop::sample::select(vec![
        LogSeverity::Debug,
        LogSeverity::Info,
        LogSeverity::Warning,
        LogSeverity::Error,
    ])
}

fn password() -> impl Strategy<Value = BGPPassword> {
    (name(), text()).prop_map(|(name, key)| BGPPassword {
        secret_key_ref: SecretKeyRef { name, key },
    })
}

fn proto_port() -> impl Strategy<Value = ProtoPort> {
    (
        prop::sample::select(vec![Protocol::Tcp, Protocol::Udp, Protocol::Sctp]),
        any::<u16>(),
    )
        .prop_map(|(protocol, port)| ProtoPort { protocol, port })
}

#[track_caller]
fn round_trips<T: Serialize + DeserializeOwned + PartialEq + Debug + Validate>(
    obj: &T,
) -> Result<(), TestCaseError> {
    // Validation copes with any value (it must never panic on what a user can write).
    let _ = obj.field_errors();
    let yaml = serde_saphyr::to_string(obj).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let back: T =
        serde_saphyr::from_str(&yaml).map_err(|e| TestCaseError::fail(format!("{e}\n{yaml}")))?;
    prop_assert_eq!(&back, obj, "via YAML:\n{}", yaml);
    let json = serde_json::to_string(obj).unwrap();
    let back: T =
        serde_json::from_str(&json).map_err(|e| TestCaseError::fail(format!("{e}\n{json}")))?;
    prop_assert_eq!(&back, obj, "via JSON:\n{}", json);
    Ok(())
}

fn with_labels<K: kube_core::Resource>(mut o: K, l: BTreeMap<String, String>) -> K {
    if !l.is_empty() {
        o.meta_mut().labels = Some(l);
    }
    o
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn ippools_round_trip(
        n in name(), l in labels(), cidr in cidr(), block_size in of(any::<u8>()),
        nat in any::<bool>(), disabled in any::<bool>(), no_export in any::<bool>(), sel in text(),
        uses in prop::collection::vec(prop::sample::select(vec![AllowedUse::Workload, AllowedUse::LoadBalancer]), 0..3),
        manual in any::<bool>(),
    ) {
        let spec = IPPoolSpec {
            cidr, block_size, nat_outgoing: nat, disabled, disable_bgp_export: no_export,
            node_selector: sel, allowed_uses: uses,
            assignment_mode: if manual { AssignmentMode::Manual } else { AssignmentMode::Automatic },
        };
        round_trips(&with_labels(IPPool::new(&n, spec), l))?;
    }

    #[test]
    fn ipam_configs_round_trip(strict in any::<bool>(), auto in any::<bool>(), max in any::<u32>()) {
        let spec = IPAMConfigSpec { strict_affinity: strict, auto_allocate_blocks: auto, max_blocks_per_host: max };
        round_trips(&IPAMConfig::new("default", spec))?;
    }

    #[test]
    fn ipam_blocks_round_trip(
        cidr in cidr(), affinity in of(text()), strict in any::<bool>(),
        allocations in prop::collection::vec(of(0usize..100), 0..70),
        unallocated in prop::collection::vec(0usize..100, 0..70),
        attrs in prop::collection::vec((of(text()), labels()), 0..4),
        seq in any::<u64>(), seq_for in prop::collection::btree_map("[0-9]{1,2}", any::<u64>(), 0..3),
        deleted in any::<bool>(),
    ) {
        let spec = IPAMBlockSpec {
            cidr, affinity, strict_affinity: strict, allocations, unallocated,
            attributes: attrs.into_iter().map(|(handle_id, secondary)| AllocationAttribute { handle_id, secondary }).collect(),
            sequence_number: seq, sequence_number_for_allocation: seq_for, deleted,
        };
        round_trips(&IPAMBlock::new("b", spec))?;
    }

    #[test]
    fn block_affinities_round_trip(
        state in prop::sample::select(vec![AffinityState::Pending, AffinityState::Confirmed, AffinityState::PendingDeletion]),
        node in text(), cidr in cidr(), deleted in any::<bool>(),
    ) {
        round_trips(&BlockAffinity::new("a", BlockAffinitySpec { state, node, cidr, deleted }))?;
    }

    #[test]
    fn ipam_handles_round_trip(id in text(), block in prop::collection::btree_map(cidr(), any::<u32>(), 0..3), deleted in any::<bool>()) {
        round_trips(&IPAMHandle::new("h", IPAMHandleSpec { handle_id: id, block, deleted }))?;
    }

    #[test]
    fn nodes_round_trip(
        l in labels(),
        bgp in of((of(text()), of(text()), of(any::<u32>()), of(text()))),
    ) {
        let bgp = bgp.map(|(v4, v6, asn, rr)| NodeBGPSpec {
            ipv4_address: v4, ipv6_address: v6, as_number: asn, route_reflector_cluster_id: rr,
        });
        round_trips(&with_labels(MargayNode::new("n", NodeSpec { bgp }), l))?;
    }

    #[test]
    fn node_statuses_round_trip(
        node in text(), period in any::<u32>(), version in of(text()), sync in of(time()), updated in of(time()),
        peers in prop::collection::vec(
            (text(), 0usize..3, 0usize..6, of(time()), of(text()), any::<(u32, u32, u32)>()), 0..3),
        counts in any::<(u32, u32)>(), has_bgp in any::<bool>(), has_status in any::<bool>(),
    ) {
        let types = [BGPPeerType::NodeMesh, BGPPeerType::GlobalPeer, BGPPeerType::NodePeer];
        let states = [BGPSessionState::Idle, BGPSessionState::Connect, BGPSessionState::Active,
                      BGPSessionState::OpenSent, BGPSessionState::OpenConfirm, BGPSessionState::Established];
        let peers = peers.into_iter().map(|(ip, t, s, since, err, (rx, acc, tx))| BGPPeerStatus {
            peer_ip: ip, as_number: Some(rx), peer_type: types[t], state: states[s], since, last_error: err,
            prefixes_received: rx, prefixes_accepted: acc, prefixes_advertised: tx,
        }).collect();
        let mut o = NodeStatus::new("n", NodeStatusSpec { node, update_period_seconds: period });
        o.status = has_status.then(|| NodeStatusStatus {
            agent_version: version, last_dataplane_sync: sync, last_updated: updated,
            bgp: has_bgp.then_some(BGPStatus { number_established: counts.0, number_not_established: counts.1, peers }),
        });
        round_trips(&o)?;
    }

    #[test]
    fn bgp_configurations_round_trip(
        asn in of(any::<u32>()), mesh in of(any::<bool>()), port in of(any::<u16>()), sev in of(severity()),
        cips in prop::collection::vec(cidr(), 0..2), eips in prop::collection::vec(cidr(), 0..2),
        lbips in prop::collection::vec(cidr(), 0..2), restart in of(text()), pw in of(password()),
    ) {
        let blocks = |v: Vec<String>| v.into_iter().map(|cidr| ServiceIPBlock { cidr }).collect();
        let spec = BGPConfigurationSpec {
            as_number: asn, node_to_node_mesh_enabled: mesh, listen_port: port, log_severity_screen: sev,
            service_cluster_ips: blocks(cips), service_external_ips: blocks(eips),
            service_load_balancer_ips: blocks(lbips), node_mesh_max_restart_time: restart, node_mesh_password: pw,
        };
        round_trips(&BGPConfiguration::new("default", spec))?;
    }

    #[test]
    fn bgp_peers_round_trip(
        node in of(text()), node_sel in of(text()), ip in of(text()), asn in of(any::<u32>()),
        peer_sel in of(text()), pw in of(password()), keep in any::<bool>(), restart in of(text()),
    ) {
        let spec = BGPPeerSpec {
            node, node_selector: node_sel, peer_ip: ip, as_number: asn, peer_selector: peer_sel,
            password: pw, keep_original_next_hop: keep, max_restart_time: restart,
        };
        round_trips(&BGPPeer::new("p", spec))?;
    }

    #[test]
    fn agent_configurations_round_trip(
        durations in prop::collection::vec(of(text()), 5), sev in of(severity()),
        bools in any::<(Option<bool>, Option<bool>)>(), hosts in (of(text()), of(text())),
        ports in any::<(Option<u16>, Option<u16>)>(),
        backend in of(prop::sample::select(vec![IptablesBackend::Auto, IptablesBackend::Nft, IptablesBackend::Legacy])),
        fin in of(prop::collection::vec(proto_port(), 0..3)), fout in of(prop::collection::vec(proto_port(), 0..3)),
    ) {
        let spec = AgentConfigurationSpec {
            route_refresh_interval: durations[0].clone(),
            iptables_refresh_interval: durations[1].clone(),
            ipsets_refresh_interval: durations[2].clone(),
            datastore_resync_interval: durations[3].clone(),
            reporting_interval: durations[4].clone(),
            log_severity_screen: sev,
            health_enabled: bools.0, health_host: hosts.0, health_port: ports.0,
            prometheus_metrics_enabled: bools.1, prometheus_metrics_host: hosts.1, prometheus_metrics_port: ports.1,
            iptables_backend: backend, failsafe_inbound_host_ports: fin, failsafe_outbound_host_ports: fout,
        };
        round_trips(&AgentConfiguration::new("default", spec))?;
    }

    #[test]
    fn workload_endpoints_round_trip(
        l in labels(), strings in prop::collection::vec(text(), 5),
        opts in prop::collection::vec(of(text()), 4),
        ips in prop::collection::vec(cidr(), 0..3), profiles in prop::collection::vec(text(), 0..3),
        ports in prop::collection::vec((text(), proto_port()), 0..3),
    ) {
        let spec = WorkloadEndpointSpec {
            orchestrator: strings[0].clone(), node: strings[1].clone(), pod: strings[2].clone(),
            container_id: opts[0].clone(), endpoint: strings[3].clone(), interface_name: strings[4].clone(),
            mac: opts[1].clone(), ip_networks: ips, ipam_handle_id: opts[2].clone(), profiles,
            service_account_name: opts[3].clone(),
            ports: ports.into_iter().map(|(name, pp)| EndpointPort { name, protocol: pp.protocol, port: pp.port }).collect(),
        };
        let mut o = with_labels(WorkloadEndpoint::new("w", spec), l);
        o.metadata.namespace = Some("default".into());
        round_trips(&o)?;
    }
}
