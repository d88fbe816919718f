//! RIB behaviour: decision, split horizon, reflection, export transformations,
//! packing and order independence.

use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;

use super::*;
use crate::policy::{PrefixList, PrefixListEntry};
use crate::wire::{Message, MpReach, Prefix6, frame};

const AS: u32 = 64512;

fn rib(rr: bool) -> Rib {
    Rib::new(RibConfig {
        local_as: AS,
        router_id: Ipv4Addr::new(198, 18, 0, 1),
        cluster_id: rr.then(|| Ipv4Addr::new(198, 18, 0, 1)),
    })
}

fn settings(last: u8, remote_as: u32, rr_client: bool) -> PeerSettings {
    PeerSettings {
        addr: IpAddr::from([198, 18, 0, last]),
        remote_as,
        rr_client,
        next_hop: if remote_as == AS {
            NextHopMode::Unchanged
        } else {
            NextHopMode::OwnAddress
        },
        policy: PeerPolicy::default(),
    }
}

fn up(last: u8) -> PeerUp {
    PeerUp {
        router_id: Ipv4Addr::new(10, 0, 0, last),
        local_addr: IpAddr::from([198, 18, 0, 1]),
        codec: Codec::default(),
        families: Family::ALL.to_vec(),
    }
}

fn add(r: &mut Rib, last: u8, remote_as: u32, client: bool) -> PeerId {
    let id = r.add_peer(settings(last, remote_as, client));
    r.peer_up(id, up(last));
    id
}

fn p4(s: &str) -> Prefix4 {
    s.parse::<ipnet::Ipv4Net>().unwrap().into()
}

fn attrs(nh: [u8; 4], path: &[u32]) -> PathAttrs {
    PathAttrs {
        as_path: AsPath::sequence(path.iter().copied()),
        next_hop: Some(NextHop::V4(Ipv4Addr::from(nh))),
        ..PathAttrs::default()
    }
}

fn announce(a: PathAttrs, ps: &[&str]) -> Update {
    Update {
        attrs: Some(a),
        nlri: ps.iter().map(|s| p4(s)).collect(),
        ..Update::default()
    }
}

fn decode_all(data: &[u8]) -> Vec<Update> {
    let mut rest = data;
    let mut v = Vec::new();
    while !rest.is_empty() {
        let (_, len) = frame(rest).unwrap().unwrap();
        if let Message::Update(u) = Message::decode(&rest[..len], Codec::default()).unwrap() {
            v.push(u);
        }
        rest = &rest[len..];
    }
    v
}

/// Updates each peer receives from a flush, End-of-RIB markers left out.
fn received(outputs: &[Output], peer: PeerId) -> Vec<Update> {
    outputs
        .iter()
        .filter(|o| o.peers.contains(&peer))
        .flat_map(|o| decode_all(&o.data))
        .filter(|u| u.end_of_rib().is_none())
        .collect()
}

#[test]
fn ibgp_routes_are_not_sent_to_other_ibgp_peers_without_reflection() {
    let mut r = rib(false);
    let a = add(&mut r, 2, AS, false);
    let b = add(&mut r, 3, AS, false);
    let e = add(&mut r, 4, 65001, false);
    r.apply_update(
        a,
        &announce(attrs([198, 18, 0, 2], &[]), &["100.64.0.0/24"]),
    );
    let f = r.flush();
    assert!(received(&f.outputs, b).is_empty());
    assert!(received(&f.outputs, a).is_empty());
    let to_e = received(&f.outputs, e);
    assert_eq!(to_e.len(), 1);
    let at = to_e[0].attrs.as_ref().unwrap();
    assert_eq!(at.as_path, AsPath::sequence([AS]));
    assert_eq!(at.next_hop, Some(NextHop::V4(Ipv4Addr::new(198, 18, 0, 1))));
    assert_eq!(at.local_pref, None);
}

#[test]
fn reflector_sends_a_client_route_to_the_other_clients_with_originator_and_cluster() {
    let mut r = rib(true);
    let peers: Vec<PeerId> = (2..6).map(|i| add(&mut r, i, AS, true)).collect();
    r.apply_update(
        peers[0],
        &announce(
            attrs([198, 18, 0, 2], &[]),
            &["100.64.0.0/24", "100.64.1.0/24"],
        ),
    );
    let f = r.flush();
    assert!(
        received(&f.outputs, peers[0]).is_empty(),
        "no reflection back to the source"
    );
    // One shared buffer for the three other clients.
    let shared: Vec<&Output> = f.outputs.iter().filter(|o| o.peers.len() == 3).collect();
    assert_eq!(shared.len(), 1);
    for p in &peers[1..] {
        let u = received(&f.outputs, *p);
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].nlri.len(), 2);
        let a = u[0].attrs.as_ref().unwrap();
        assert_eq!(a.originator_id, Some(Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(a.cluster_list, vec![Ipv4Addr::new(198, 18, 0, 1)]);
        assert_eq!(
            a.next_hop,
            Some(NextHop::V4(Ipv4Addr::new(198, 18, 0, 2))),
            "next hop unchanged"
        );
        assert_eq!(a.local_pref, Some(100));
    }
}

#[test]
fn reflector_drops_routes_carrying_its_own_cluster_id() {
    let mut r = rib(true);
    let a = add(&mut r, 2, AS, true);
    let mut at = attrs([198, 18, 0, 2], &[]);
    at.cluster_list = vec![Ipv4Addr::new(198, 18, 0, 1)];
    r.apply_update(a, &announce(at, &["100.64.0.0/24"]));
    assert!(r.is_empty());
}

#[test]
fn ebgp_routes_containing_our_as_are_ignored() {
    let mut r = rib(false);
    let e = add(&mut r, 4, 65001, false);
    r.apply_update(
        e,
        &announce(attrs([198, 18, 0, 4], &[65001, AS]), &["100.64.0.0/24"]),
    );
    assert!(r.is_empty());
}

#[test]
fn withdrawal_is_sent_to_the_group_and_the_fib_stream() {
    let mut r = rib(false);
    r.track_changes(true);
    let e = add(&mut r, 4, 65001, false);
    let i = add(&mut r, 2, AS, false);
    r.apply_update(
        e,
        &announce(attrs([198, 18, 0, 4], &[65001]), &["100.64.0.0/24"]),
    );
    let f = r.flush();
    assert_eq!(
        f.changes,
        vec![RouteChange::Add {
            prefix: p4("100.64.0.0/24").into(),
            next_hop: IpAddr::from([198, 18, 0, 4])
        }]
    );
    assert_eq!(received(&f.outputs, i)[0].nlri, vec![p4("100.64.0.0/24")]);
    assert_eq!(r.counters(i).advertised, 1);
    r.apply_update(
        e,
        &Update {
            withdrawn: vec![p4("100.64.0.0/24")],
            ..Update::default()
        },
    );
    let f = r.flush();
    assert_eq!(
        f.changes,
        vec![RouteChange::Withdraw {
            prefix: p4("100.64.0.0/24").into()
        }]
    );
    assert_eq!(
        received(&f.outputs, i)[0].withdrawn,
        vec![p4("100.64.0.0/24")]
    );
    assert!(
        received(&f.outputs, e).is_empty(),
        "the source never had the route from us"
    );
    assert_eq!(r.counters(i).advertised, 0);
    assert_eq!(r.counters(e).received, 1);
    assert_eq!(r.counters(e).withdrawn, 1);
}

#[test]
fn a_change_is_not_lost_when_another_peer_comes_up_before_the_flush() {
    // The core applies everything queued, then flushes: an UPDATE from one peer and another
    // peer's session coming up can fall in one batch, and the peer coming up flushes first.
    let mut r = rib(false);
    r.track_changes(true);
    let a = add(&mut r, 4, AS, false);
    r.apply_update(
        a,
        &announce(attrs([198, 18, 0, 4], &[]), &["100.64.0.0/26"]),
    );
    let b = r.add_peer(settings(5, AS, false));
    let to_b = r.peer_up(b, up(5));
    assert!(!to_b.is_empty(), "the new peer is sent the table");
    r.set_policy(b, PeerPolicy::default());
    assert_eq!(
        r.flush().changes,
        vec![RouteChange::Add {
            prefix: p4("100.64.0.0/26").into(),
            next_hop: IpAddr::from([198, 18, 0, 4])
        }]
    );
    assert!(r.flush().changes.is_empty(), "handed out once");
}

#[test]
fn a_better_path_replaces_the_best_and_the_fib_next_hop() {
    let mut r = rib(false);
    r.track_changes(true);
    let e1 = add(&mut r, 4, 65001, false);
    let e2 = add(&mut r, 5, 65002, false);
    r.apply_update(
        e1,
        &announce(attrs([198, 18, 0, 4], &[65001, 65009]), &["100.64.0.0/24"]),
    );
    r.flush();
    r.apply_update(
        e2,
        &announce(attrs([198, 18, 0, 5], &[65002]), &["100.64.0.0/24"]),
    );
    let f = r.flush();
    assert_eq!(
        f.changes,
        vec![RouteChange::Replace {
            prefix: p4("100.64.0.0/24").into(),
            next_hop: IpAddr::from([198, 18, 0, 5])
        }]
    );
    // e2 is now the source: e1 gets the new best, e2 gets nothing (split horizon
    // for its own route) but the withdrawal of the route it was sent before.
    let to_e1 = received(&f.outputs, e1);
    assert_eq!(
        to_e1[0].attrs.as_ref().unwrap().as_path,
        AsPath::sequence([AS, 65002])
    );
    let to_e2 = received(&f.outputs, e2);
    assert_eq!(to_e2.len(), 1);
    assert_eq!(to_e2[0].withdrawn, vec![p4("100.64.0.0/24")]);
    assert_eq!(r.counters(e2).best, 1);
    assert_eq!(r.counters(e1).best, 0);
}

#[test]
fn peer_down_withdraws_its_routes() {
    let mut r = rib(false);
    let e = add(&mut r, 4, 65001, false);
    let i = add(&mut r, 2, AS, false);
    r.apply_update(
        e,
        &announce(
            attrs([198, 18, 0, 4], &[65001]),
            &["100.64.0.0/24", "100.64.1.0/24"],
        ),
    );
    r.flush();
    r.peer_down(e);
    let f = r.flush();
    assert_eq!(received(&f.outputs, i)[0].withdrawn.len(), 2);
    assert!(r.is_empty());
}

#[test]
fn import_and_export_prefix_lists_filter() {
    let mut r = rib(false);
    let mut s = settings(4, 65001, false);
    s.policy.import = Some(PrefixList::new(vec![PrefixListEntry::permit(
        "100.64.0.0/10".parse().unwrap(),
        Some(24),
        Some(24),
    )]));
    let e = r.add_peer(s);
    r.peer_up(e, up(4));
    let mut s2 = settings(5, 65002, false);
    s2.policy.export = Some(PrefixList::new(vec![PrefixListEntry::permit(
        "100.64.1.0/24".parse().unwrap(),
        None,
        None,
    )]));
    let e2 = r.add_peer(s2);
    r.peer_up(e2, up(5));
    r.apply_update(
        e,
        &announce(
            attrs([198, 18, 0, 4], &[65001]),
            &["100.64.0.0/24", "100.64.1.0/24", "100.64.2.0/25"],
        ),
    );
    assert_eq!(r.len().0, 2);
    assert_eq!(r.counters(e).accepted, 2);
    let f = r.flush();
    assert_eq!(received(&f.outputs, e2)[0].nlri, vec![p4("100.64.1.0/24")]);
}

#[test]
fn originated_prefixes_go_out_with_next_hop_self_and_new_peers_get_a_dump() {
    let mut r = rib(false);
    r.originate(p4("100.64.7.0/26").into(), None);
    let i = r.add_peer(settings(2, AS, false));
    let out = r.peer_up(i, up(2));
    let u = received(&out, i);
    assert_eq!(u[0].nlri, vec![p4("100.64.7.0/26")]);
    assert_eq!(
        u[0].attrs.as_ref().unwrap().next_hop,
        Some(NextHop::V4(Ipv4Addr::new(198, 18, 0, 1)))
    );
    // End-of-RIB for both families follows the dump.
    let eors = out
        .iter()
        .flat_map(|o| decode_all(&o.data))
        .filter(|u| u.end_of_rib().is_some())
        .count();
    assert_eq!(eors, 2);
    r.withdraw_local(p4("100.64.7.0/26").into());
    let f = r.flush();
    assert_eq!(
        received(&f.outputs, i)[0].withdrawn,
        vec![p4("100.64.7.0/26")]
    );
}

#[test]
fn ipv6_routes_are_reflected_in_mp_reach_with_their_next_hops() {
    let mut r = rib(true);
    let a = add(&mut r, 2, AS, true);
    let b = add(&mut r, 3, AS, true);
    let nh = NextHop::V6 {
        global: "fd00::2".parse().unwrap(),
        link_local: Some("fe80::2".parse().unwrap()),
    };
    let px = Prefix6::new("fd00:64::".parse().unwrap(), 64).unwrap();
    r.apply_update(
        a,
        &Update {
            attrs: Some(PathAttrs::default()),
            mp_reach: Some(MpReach {
                next_hop: nh,
                nlri: MpNlri::V6(vec![px]),
            }),
            ..Update::default()
        },
    );
    let f = r.flush();
    let u = received(&f.outputs, b);
    let reach = u[0].mp_reach.as_ref().unwrap();
    assert_eq!(reach.next_hop, nh);
    assert_eq!(reach.nlri, MpNlri::V6(vec![px]));
}

#[test]
fn ten_thousand_routes_are_packed_into_few_updates_shared_by_the_group() {
    let mut r = rib(true);
    let inj = add(&mut r, 2, AS, true);
    let rx: Vec<PeerId> = (3..7).map(|i| add(&mut r, i, AS, true)).collect();
    let nlri: Vec<Prefix4> = (0..10_000u32)
        .map(|i| Prefix4::new(Ipv4Addr::from(0x6440_0000 + i), 32).unwrap())
        .collect();
    for chunk in nlri.chunks(810) {
        r.apply_update(
            inj,
            &Update {
                attrs: Some(attrs([198, 18, 0, 2], &[])),
                nlri: chunk.to_vec(),
                ..Update::default()
            },
        );
    }
    let f = r.flush();
    assert_eq!(f.outputs.len(), 1);
    assert_eq!(f.outputs[0].peers, rx);
    let u = decode_all(&f.outputs[0].data);
    assert!(u.len() <= 14, "{} updates", u.len());
    assert_eq!(u.iter().map(|u| u.nlri.len()).sum::<usize>(), 10_000);
    assert_eq!(r.attribute_sets(), 1);
}

#[derive(Debug, Clone)]
struct Ann {
    peer: usize,
    prefix: u8,
    lp: Option<u32>,
    path: Vec<u32>,
    med: Option<u32>,
}

fn ann() -> impl Strategy<Value = Ann> {
    (
        0usize..4,
        0u8..4,
        prop::option::of(90u32..110),
        prop::collection::vec(65001u32..65004, 0..3),
        prop::option::of(0u32..3),
    )
        .prop_map(|(peer, prefix, lp, path, med)| Ann {
            peer,
            prefix,
            lp,
            path,
            med,
        })
}

fn run(anns: &[Ann]) -> Vec<(Prefix4, Option<(PeerId, PathAttrs)>)> {
    let mut r = rib(true);
    // Peers 0,1 iBGP clients, 2,3 eBGP in different ASes.
    let ids: Vec<PeerId> = [(2u8, AS), (3, AS), (4, 65001), (5, 65002)]
        .iter()
        .map(|&(l, a)| add(&mut r, l, a, a == AS))
        .collect();
    for a in anns {
        let mut path = a.path.clone();
        if a.peer >= 2 {
            path.insert(0, [65001, 65002][a.peer - 2]);
        }
        let at = PathAttrs {
            as_path: AsPath::sequence(path),
            local_pref: a.lp,
            med: a.med,
            next_hop: Some(NextHop::V4(Ipv4Addr::new(198, 18, 0, a.peer as u8 + 2))),
            ..PathAttrs::default()
        };
        let p = Prefix4::new(Ipv4Addr::new(100, 64, a.prefix, 0), 24).unwrap();
        r.apply_update(
            ids[a.peer],
            &Update {
                attrs: Some(at),
                nlri: vec![p],
                ..Update::default()
            },
        );
    }
    r.flush();
    (0..4u8)
        .map(|i| {
            let p = Prefix4::new(Ipv4Addr::new(100, 64, i, 0), 24).unwrap();
            (
                p,
                r.paths(p.into())
                    .first()
                    .map(|x| (x.peer, (*x.attrs).clone())),
            )
        })
        .collect()
}

proptest! {
    #[test]
    fn the_decision_does_not_depend_on_the_order_routes_arrive_in(
        anns in prop::collection::vec(ann(), 1..24),
        seed in any::<u64>(),
    ) {
        // Only the last announcement of each (peer, prefix) counts: keep one each so
        // that any order yields the same final Adj-RIBs-In.
        let mut uniq: Vec<Ann> = Vec::new();
        for a in anns {
            if !uniq.iter().any(|u| u.peer == a.peer && u.prefix == a.prefix) {
                uniq.push(a);
            }
        }
        let mut shuffled = uniq.clone();
        let mut s = seed;
        for i in (1..shuffled.len()).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            shuffled.swap(i, (s >> 33) as usize % (i + 1));
        }
        prop_assert_eq!(run(&uniq), run(&shuffled));
    }
}

#[test]
fn a_narrower_export_filter_withdraws_and_a_wider_one_announces() {
    let mut r = rib(false);
    let e = add(&mut r, 4, 65001, false);
    let i = add(&mut r, 2, AS, false);
    r.apply_update(
        e,
        &announce(
            attrs([198, 18, 0, 4], &[65001]),
            &["100.64.0.0/24", "100.64.1.0/24"],
        ),
    );
    r.flush();
    let only_1 = PeerPolicy {
        import: None,
        export: Some(PrefixList::new(vec![PrefixListEntry::permit(
            "100.64.1.0/24".parse().unwrap(),
            None,
            None,
        )])),
    };
    let out = r.set_policy(i, only_1);
    let u = received(&out, i);
    assert_eq!(u[0].withdrawn, vec![p4("100.64.0.0/24")]);
    assert_eq!(u[1].nlri, vec![p4("100.64.1.0/24")]);
    let out = r.set_policy(i, PeerPolicy::default());
    let got: Vec<Prefix4> = received(&out, i).into_iter().flat_map(|u| u.nlri).collect();
    assert_eq!(got, vec![p4("100.64.0.0/24"), p4("100.64.1.0/24")]);
}

#[test]
fn a_new_import_filter_applies_when_the_peer_resends() {
    let mut r = rib(false);
    let e = add(&mut r, 4, 65001, false);
    let u = announce(
        attrs([198, 18, 0, 4], &[65001]),
        &["100.64.0.0/24", "100.64.1.0/26"],
    );
    r.apply_update(e, &u);
    assert_eq!(r.len().0, 2);
    let only_24s = PeerPolicy {
        import: Some(PrefixList::new(vec![PrefixListEntry::permit(
            "100.64.0.0/10".parse().unwrap(),
            Some(24),
            Some(24),
        )])),
        export: None,
    };
    assert!(r.set_policy(e, only_24s).is_empty());
    // As after a ROUTE-REFRESH: the same routes again.
    r.apply_update(e, &u);
    assert_eq!(r.len().0, 1);
    assert_eq!(r.counters(e).accepted, 1);
}

// ---- Graceful restart (RFC 4724) and RFC 7606 --------------------------------

#[test]
fn a_restarting_peers_routes_stay_stale_until_refreshed_or_swept() {
    let mut r = rib(false);
    r.track_changes(true);
    let e = add(&mut r, 2, 65002, false);
    let i = add(&mut r, 3, AS, false);
    r.apply_update(
        e,
        &announce(
            attrs([198, 18, 0, 2], &[65002]),
            &["100.64.0.0/24", "100.64.1.0/24"],
        ),
    );
    assert_eq!(r.flush().changes.len(), 2);

    // The session drops gracefully: nothing changes for the FIB or the other peer.
    assert_eq!(r.peer_down_graceful(e, &[Family::Ipv4Unicast]), 2);
    let f = r.flush();
    assert!(f.changes.is_empty() && f.outputs.is_empty(), "{f:?}");
    assert_eq!(r.counters(e).stale, 2);
    assert!(r.has_stale(e, Family::Ipv4Unicast));
    assert!(r.counters(i).advertised == 2);

    // Back: one route is re-sent unchanged (fresh again, no change), then End-of-RIB.
    r.peer_up(e, up(2));
    r.apply_update(
        e,
        &announce(attrs([198, 18, 0, 2], &[65002]), &["100.64.0.0/24"]),
    );
    let f = r.flush();
    assert!(f.changes.is_empty(), "{:?}", f.changes);
    assert_eq!(r.counters(e).stale, 1);
    assert_eq!(r.sweep_stale(e, Family::Ipv4Unicast), 1);
    let f = r.flush();
    assert_eq!(
        f.changes,
        vec![RouteChange::Withdraw {
            prefix: p4("100.64.1.0/24").into()
        }]
    );
    assert_eq!(
        received(&f.outputs, i)[0].withdrawn,
        vec![p4("100.64.1.0/24")]
    );
    assert_eq!((r.counters(e).stale, r.counters(e).accepted), (0, 1));
    assert!(!r.has_stale(e, Family::Ipv4Unicast));
}

#[test]
fn families_not_kept_are_withdrawn_when_the_session_drops() {
    let mut r = rib(false);
    r.track_changes(true);
    let e = add(&mut r, 2, 65002, false);
    r.apply_update(
        e,
        &announce(attrs([198, 18, 0, 2], &[65002]), &["100.64.0.0/24"]),
    );
    r.flush();
    assert_eq!(r.peer_down_graceful(e, &[Family::Ipv6Unicast]), 0);
    assert_eq!(
        r.flush().changes,
        vec![RouteChange::Withdraw {
            prefix: p4("100.64.0.0/24").into()
        }]
    );
}

#[test]
fn a_stale_route_replaced_with_new_attributes_is_a_change_and_fresh() {
    let mut r = rib(false);
    r.track_changes(true);
    let e = add(&mut r, 2, 65002, false);
    r.apply_update(
        e,
        &announce(attrs([198, 18, 0, 2], &[65002]), &["100.64.0.0/24"]),
    );
    r.flush();
    r.peer_down_graceful(e, &[Family::Ipv4Unicast]);
    r.peer_up(e, up(2));
    r.apply_update(
        e,
        &announce(attrs([198, 18, 0, 9], &[65002]), &["100.64.0.0/24"]),
    );
    assert_eq!(
        r.flush().changes,
        vec![RouteChange::Replace {
            prefix: p4("100.64.0.0/24").into(),
            next_hop: IpAddr::from([198, 18, 0, 9])
        }]
    );
    assert_eq!(r.sweep_stale(e, Family::Ipv4Unicast), 0);
    assert_eq!(r.counters(e).stale, 0);
}

#[test]
fn treat_as_withdraw_removes_the_announced_routes_of_that_peer_only() {
    let mut r = rib(false);
    r.track_changes(true);
    let a = add(&mut r, 2, 65002, false);
    let b = add(&mut r, 3, 65003, false);
    r.apply_update(
        a,
        &announce(attrs([198, 18, 0, 2], &[65002]), &["100.64.0.0/24"]),
    );
    r.apply_update(
        b,
        &announce(attrs([198, 18, 0, 3], &[65003]), &["100.64.9.0/24"]),
    );
    r.flush();
    let mut bad = announce(attrs([198, 18, 0, 2], &[65002]), &["100.64.0.0/24"]);
    bad.attrs = None;
    bad.errors.push(crate::wire::AttrError {
        action: crate::wire::ErrorAction::TreatAsWithdraw,
        error: crate::wire::DecodeError {
            code: 3,
            subcode: 5,
            data: Vec::new(),
            reason: "test",
        },
    });
    r.apply_update(a, &bad);
    assert_eq!(
        r.flush().changes,
        vec![RouteChange::Withdraw {
            prefix: p4("100.64.0.0/24").into()
        }]
    );
    assert_eq!(r.counters(b).accepted, 1);
}

#[test]
fn end_of_rib_can_be_held_back_and_sent_later() {
    let mut r = rib(false);
    let id = r.add_peer(settings(2, 65002, false));
    let out = r.peer_up_eor(id, up(2), false);
    let ups: Vec<Update> = out.iter().flat_map(|o| decode_all(&o.data)).collect();
    assert!(ups.iter().all(|u| u.end_of_rib().is_none()), "{ups:?}");
    let eor = decode_all(&r.end_of_rib(id).unwrap().data);
    assert_eq!(
        eor.iter().map(Update::end_of_rib).collect::<Vec<_>>(),
        vec![Some(1), Some(2)]
    );
}

#[test]
fn confederation_segments_and_ibgp_only_attributes_from_ebgp_are_handled_per_rfc_7606() {
    let mut r = rib(false);
    r.track_changes(true);
    let e = add(&mut r, 2, 65002, false);
    let mut confed = attrs([198, 18, 0, 2], &[65002]);
    confed.as_path.segments.insert(
        0,
        crate::wire::AsSegment {
            kind: crate::wire::SegmentType::ConfedSequence,
            asns: vec![65100],
        },
    );
    r.apply_update(e, &announce(confed, &["100.64.0.0/24"]));
    assert!(r.flush().changes.is_empty());
    let mut a = attrs([198, 18, 0, 2], &[65002]);
    a.originator_id = Some(Ipv4Addr::new(10, 9, 9, 9));
    a.cluster_list = vec![Ipv4Addr::new(10, 8, 8, 8)];
    a.local_pref = Some(500);
    r.apply_update(e, &announce(a, &["100.64.1.0/24"]));
    r.flush();
    let got = r.paths(p4("100.64.1.0/24").into());
    let got = &got[0].attrs;
    assert_eq!(
        (got.originator_id, got.cluster_list.len(), got.local_pref),
        (None, 0, None)
    );
}
