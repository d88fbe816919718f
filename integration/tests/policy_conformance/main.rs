//! NetworkPolicy conformance in the shape of the upstream sig-network e2e suite, driven through
//! `margay-lab` as a user drives it: one dual-stack lab of two nodes with real agents, real
//! iptables and ipsets (in network namespaces), namespaces x, y, z with pods a, b, c each, every
//! pod serving TCP and UDP on ports 80 and 81 with the named ports `serve-80-tcp` … . The lab is
//! brought up once and reused: each scenario applies policies (`margay-lab policy apply -`) and
//! label changes, checks the full reachability matrix (`probe --matrix PORT/PROTO -o json`, 9 × 9
//! pods × ports 80, 81 × TCP, UDP × IPv4, IPv6) against a truth table computed from the policy
//! semantics of the API reference, and is undone (policies deleted, labels restored) before the
//! next. Every scenario runs; the test fails at the end naming each one that failed.
//!
//! Needs root, etcd, and Margay's binaries beside `margay-lab`:
//! `cargo build -p margay-agent -p margay-cni -p margay-ctl --bins` before
//! `cargo nextest run -p margay-integration --test policy_conformance`.

mod changes;
#[path = "../common/mod.rs"]
mod common;
mod conformance;
mod egress;
mod ingress;
mod truth;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use changes::*;
use conformance::Conformance;
use egress::*;
use ingress::*;

pub const NSS: [&str; 3] = ["x", "y", "z"];
pub const PODS: [&str; 3] = ["a", "b", "c"];
/// The ports every pod serves, on TCP and UDP.
pub const PORTS: [u16; 2] = [80, 81];
/// A probe in the matrix waits this long; a blocked pair costs it. Pairs that should connect
/// and did not are probed once more with [`RECHECK_TIMEOUT`] before they count (a loaded machine
/// can be slow); a pair that connects where it should not counts at once over TCP, and over
/// UDP only if a probe from a fresh source port connects too (see `Conformance::check_family`).
pub const MATRIX_TIMEOUT: &str = "0.5";
pub const RECHECK_TIMEOUT: &str = "2";
/// The agents' iptables and ipset resync interval in this lab (the tamper scenarios wait for it).
pub const RESYNC: &str = "3s";

type Scenario = (&'static str, fn(&Conformance));

const SCENARIOS: &[Scenario] = &[
    ("no policy: everything connects", no_policy),
    ("deny all ingress in x", deny_all_ingress),
    ("allow all ingress in x", allow_all_ingress),
    ("deny all + allow all: the union allows", deny_and_allow_all),
    ("podSelector peer: own namespace only", pod_selector_peer),
    (
        "policy updated in place: podSelector → namespaceSelector",
        policy_update_in_place,
    ),
    (
        "namespaceSelector AND podSelector in one peer",
        ns_and_pod_selector,
    ),
    ("two peers: OR", two_peers),
    ("matchExpressions In / NotIn", match_expressions_in_notin),
    (
        "matchExpressions DoesNotExist / Exists",
        match_expressions_exists,
    ),
    (
        "matchExpressions NotIn / DoesNotExist, then a namespace label change",
        match_expressions_notin_doesnotexist,
    ),
    ("port 80 (TCP by default) from anywhere", port_only),
    ("named port serve-81-tcp", named_port),
    ("named UDP port from namespace y", named_udp_port),
    (
        "named ports resolved per destination pod, ingress and egress",
        named_port_per_pod,
    ),
    ("endPort range (and SCTP, compiled, not probed)", end_port),
    ("unknown named port allows nothing", unknown_named_port),
    ("empty from list with a UDP port", empty_from),
    ("ipBlock with except", ip_block_except),
    ("IPv6 ipBlock with except", ip_block_v6),
    ("egress deny (policyTypes Egress, no rules)", egress_deny),
    ("egress deny all in namespace x", egress_deny_namespace),
    ("allow all egress beside deny all egress", egress_allow_all),
    ("egress to namespace y", egress_to_namespace),
    (
        "egress to y/c TCP 80: namespaceSelector + podSelector, port",
        egress_ns_and_pod,
    ),
    (
        "egress named port resolved on the destination",
        egress_named_port,
    ),
    ("egress endPort range over UDP", egress_end_port_udp),
    ("egress ipBlock 0.0.0.0/0 except z", egress_ip_block),
    (
        "egress allowed but the destination's ingress denies",
        egress_and_ingress_both_needed,
    ),
    ("x isolated to itself both ways", isolated_namespace),
    (
        "multiple policies: their union on one pod, another namespace's own",
        multiple_policies,
    ),
    ("pod label change enters a peer set", pod_label_enters_peers),
    (
        "pod label change enters a policy's podSelector",
        pod_label_enters_selector,
    ),
    (
        "pod label added and removed mid-test",
        pod_label_added_and_removed,
    ),
    (
        "namespace label change enters a namespaceSelector",
        namespace_label_change,
    ),
    (
        "namespace by its kubernetes.io/metadata.name label",
        namespace_name_label,
    ),
    (
        "ingress and egress on one pod (default policyTypes)",
        ingress_and_egress,
    ),
    (
        "explicit policyTypes Ingress ignores egress rules",
        policy_types_ingress_only,
    ),
    (
        "policy updates while traffic flows",
        updates_while_traffic_flows,
    ),
    ("all policies deleted: the full matrix again", all_deleted),
    (
        "a node reaches its own pods under deny all",
        node_reaches_local_pods,
    ),
    (
        "tamper: flushed to-workload chains are repaired",
        tamper_chain,
    ),
    ("tamper: a deleted ipset member is repaired", tamper_ipset),
];

#[test]
fn network_policy_conformance() {
    let started = Instant::now();
    let c = Conformance::up();
    eprintln!(
        "lab up with 9 pods in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut failed = Vec::new();
    for (i, (name, run)) in SCENARIOS.iter().enumerate() {
        let t = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| run(&c)));
        let verdict = match &result {
            Ok(()) => "ok".to_owned(),
            Err(e) => {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panicked".to_owned());
                failed.push(format!("{:2}. {name}:\n{msg}", i + 1));
                "FAILED".to_owned()
            }
        };
        eprintln!(
            "{:2}/{} {name}: {verdict} ({:.1} s)",
            i + 1,
            SCENARIOS.len(),
            t.elapsed().as_secs_f64()
        );
        // Undo whatever the scenario left; if that fails, what follows would fail for it.
        if let Err(e) = catch_unwind(AssertUnwindSafe(|| c.reset())) {
            let msg = e.downcast_ref::<String>().cloned().unwrap_or_default();
            failed.push(format!(
                "resetting the lab after {name:?} failed, so the remaining {} scenarios did not run:\n{msg}",
                SCENARIOS.len() - i - 1
            ));
            break;
        }
    }
    eprintln!(
        "{} scenarios, {} failed, in {:.1} s",
        SCENARIOS.len(),
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failed.is_empty(),
        "{} of {} scenarios failed:\n\n{}",
        failed.len(),
        SCENARIOS.len(),
        failed.join("\n\n")
    );
}
