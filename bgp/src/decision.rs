//! The decision process of RFC 4271 §9.1, extended by RFC 4456 §9 for route
//! reflection.
//!
//! [`select_best`] eliminates candidates step by step, as the RFC describes, rather
//! than sorting with a pairwise comparison: MED is only comparable between routes
//! from the same neighbouring AS, which makes a pairwise order non-transitive and the
//! result dependent on the order routes arrived in. Set-wise elimination is not.

use std::net::IpAddr;

use crate::wire::Origin;

/// LOCAL_PREF assumed when a route carries none (routes from eBGP peers).
pub const DEFAULT_LOCAL_PREF: u32 = 100;

/// What the decision process looks at in one route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Originated by this speaker (always preferred, like a weight).
    pub local: bool,
    /// LOCAL_PREF (default applied).
    pub local_pref: u32,
    /// AS_PATH length (AS_SET counts 1).
    pub as_path_len: usize,
    /// ORIGIN.
    pub origin: Origin,
    /// MED, 0 if absent.
    pub med: u32,
    /// First AS of the path (MED is compared only between equal ones).
    pub neighbour_as: Option<u32>,
    /// Learned over eBGP.
    pub ebgp: bool,
    /// ORIGINATOR_ID if present, else the peer's BGP identifier.
    pub router_id: u32,
    /// CLUSTER_LIST length.
    pub cluster_len: usize,
    /// The peer's address.
    pub peer_addr: IpAddr,
    /// The peer's index, the last tie-breaker (two sessions from one address).
    pub peer: u32,
}

/// Index of the best candidate, `None` if there are none.
pub fn select_best(c: &[Candidate]) -> Option<usize> {
    if c.len() <= 1 {
        return (!c.is_empty()).then_some(0);
    }
    let mut live: Vec<usize> = (0..c.len()).collect();
    fn keep_min<K: Ord>(live: &mut Vec<usize>, key: impl Fn(usize) -> K) {
        if let Some(m) = live.iter().map(|&i| key(i)).min() {
            live.retain(|&i| key(i) == m);
        }
    }
    keep_min(&mut live, |i| !c[i].local);
    keep_min(&mut live, |i| std::cmp::Reverse(c[i].local_pref));
    keep_min(&mut live, |i| c[i].as_path_len);
    keep_min(&mut live, |i| c[i].origin);
    // §9.1.2.2 c: drop a route if another from the same neighbour AS has a lower MED.
    let before = live.clone();
    live.retain(|&i| {
        !before
            .iter()
            .any(|&j| c[j].neighbour_as == c[i].neighbour_as && c[j].med < c[i].med)
    });
    keep_min(&mut live, |i| !c[i].ebgp);
    keep_min(&mut live, |i| c[i].router_id);
    keep_min(&mut live, |i| c[i].cluster_len);
    keep_min(&mut live, |i| c[i].peer_addr);
    keep_min(&mut live, |i| c[i].peer);
    live.first().copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn base(peer: u32) -> Candidate {
        Candidate {
            local: false,
            local_pref: 100,
            as_path_len: 2,
            origin: Origin::Igp,
            med: 0,
            neighbour_as: Some(65001),
            ebgp: true,
            router_id: peer,
            cluster_len: 0,
            peer_addr: IpAddr::from([198, 18, 0, peer as u8]),
            peer,
        }
    }

    #[test]
    fn higher_local_pref_wins_over_shorter_path() {
        let mut a = base(1);
        a.local_pref = 200;
        a.as_path_len = 5;
        assert_eq!(select_best(&[base(2), a]), Some(1));
    }

    #[test]
    fn shorter_as_path_wins() {
        let mut a = base(1);
        a.as_path_len = 1;
        assert_eq!(select_best(&[base(2), a]), Some(1));
    }

    #[test]
    fn lower_origin_wins() {
        let mut a = base(1);
        a.origin = Origin::Incomplete;
        assert_eq!(select_best(&[a, base(2)]), Some(1));
    }

    #[test]
    fn med_is_compared_only_within_the_same_neighbour_as() {
        let mut a = base(1);
        a.med = 50;
        let mut b = base(2);
        b.med = 10;
        assert_eq!(select_best(&[a.clone(), b.clone()]), Some(1));
        // From different neighbour ASes MED is ignored and router id decides.
        b.neighbour_as = Some(65002);
        assert_eq!(select_best(&[a, b]), Some(0));
    }

    #[test]
    fn ebgp_wins_over_ibgp() {
        let mut a = base(1);
        a.ebgp = false;
        assert_eq!(select_best(&[a, base(2)]), Some(1));
    }

    #[test]
    fn lower_router_id_then_shorter_cluster_list_then_lower_address_win() {
        assert_eq!(select_best(&[base(3), base(2)]), Some(1));
        let mut a = base(2);
        a.cluster_len = 1;
        let mut b = base(3);
        b.router_id = 2;
        assert_eq!(select_best(&[a, b]), Some(1));
        let mut c = base(4);
        c.router_id = 1;
        let mut d = base(5);
        d.router_id = 1;
        assert_eq!(select_best(&[d, c]), Some(1));
    }

    #[test]
    fn local_routes_win() {
        let mut a = base(9);
        a.local = true;
        a.local_pref = 0;
        assert_eq!(select_best(&[base(1), a]), Some(1));
    }

    fn cand() -> impl Strategy<Value = Candidate> {
        (
            0u32..3,
            0usize..3,
            0u8..3,
            0u32..3,
            0u32..3,
            any::<bool>(),
            0u32..4,
            0usize..2,
        )
            .prop_map(|(lp, len, origin, med, nas, ebgp, rid, cl)| Candidate {
                local: false,
                local_pref: 100 + lp,
                as_path_len: len,
                origin: [Origin::Igp, Origin::Egp, Origin::Incomplete][origin as usize],
                med,
                neighbour_as: Some(65000 + nas),
                ebgp,
                router_id: rid,
                cluster_len: cl,
                peer_addr: IpAddr::from([0, 0, 0, 0]),
                peer: 0,
            })
    }

    proptest! {
        #[test]
        fn the_best_route_does_not_depend_on_the_order_of_candidates(
            mut cs in prop::collection::vec(cand(), 1..8),
            seed in any::<u64>(),
        ) {
            for (i, c) in cs.iter_mut().enumerate() {
                c.peer = i as u32;
                c.peer_addr = IpAddr::from([198, 18, 0, i as u8]);
            }
            let best = cs[select_best(&cs).unwrap()].peer;
            let mut shuffled = cs.clone();
            let mut s = seed;
            for i in (1..shuffled.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shuffled.swap(i, (s >> 33) as usize % (i + 1));
            }
            prop_assert_eq!(shuffled[select_best(&shuffled).unwrap()].peer, best);
        }
    }
}
