//! Allocation on one block, as pure functions: a block goes in, the new block comes out.
//!
//! Nothing here reads or writes the datastore. [`apply`] runs a batch of [`BlockOp`]s (the
//! requests that one group-commit write carries) against a copy of the block and says what each
//! one got; the caller writes the result with one compare-and-swap and, only if that succeeds,
//! hands the results out. A conflict throws the copy away and the batch is applied again to the
//! block as read anew.
//!
//! Reuse order is FIFO, as Calico's: addresses are handed out from the front of `unallocated`
//! and freed ones go to its back, so a freed address is the last to be reused (a restarted pod
//! does not meet a stale conntrack or ARP entry for its old peer's address).

use std::net::IpAddr;

use margay_api::ipam::{AFFINITY_HOST_PREFIX, AllocationAttribute, IPAMBlockSpec};

/// How an [`BlockOp::Allocate`] may use a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Only if the block is affine to the allocating node.
    Affine,
    /// Borrowing from a block of another node (or of none): only if the block is not strict.
    Borrow,
}

/// One change to a block.
#[derive(Debug, Clone, PartialEq)]
pub enum BlockOp {
    /// Take up to `n` free addresses, in FIFO order, for `attr`'s handle.
    Allocate {
        /// How many addresses.
        n: usize,
        /// Who holds them (handle id and pod details).
        attr: AllocationAttribute,
        /// The allocating node.
        node: String,
        /// Whether the block must be the node's own.
        mode: Use,
    },
    /// Take one given address.
    Assign {
        /// The address.
        ip: IpAddr,
        /// Who holds it.
        attr: AllocationAttribute,
        /// The allocating node.
        node: String,
    },
    /// Free every address held by a handle.
    ReleaseHandle {
        /// The handle id.
        handle: String,
    },
    /// Free given addresses; with `handle`, only those it still holds (so that a leak report
    /// acted on late never frees an address that was given to someone else meanwhile).
    ReleaseIps {
        /// The addresses.
        ips: Vec<IpAddr>,
        /// The handle that must hold them, if any.
        handle: Option<String>,
    },
}

/// What a [`BlockOp`] got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Addresses taken (an `Allocate` may get fewer than it asked for, or none).
    Allocated(Vec<IpAddr>),
    /// Addresses freed, each with the handle that held it.
    Released(Vec<(IpAddr, Option<String>)>),
}

/// Why a [`BlockOp`] could not be carried out on this block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// The address is held.
    #[error("address {ip} is already in use by handle {handle:?}")]
    InUse {
        /// The address.
        ip: IpAddr,
        /// Its holder (empty when the allocation has no handle).
        handle: String,
    },
    /// The address is not in this block.
    #[error("address {ip} is not in block {block}")]
    NotInBlock {
        /// The address.
        ip: IpAddr,
        /// The block.
        block: String,
    },
    /// An `Affine` allocation on a block that is not (or no longer) the node's.
    #[error("block {block} is not affine to node {node:?}")]
    NotAffine {
        /// The block.
        block: String,
        /// The node.
        node: String,
    },
    /// Borrowing from a block whose owner has strict affinity.
    #[error("block {block} has strict affinity to {owner:?}")]
    Strict {
        /// The block.
        block: String,
        /// Its owner.
        owner: String,
    },
    /// The block is being deleted.
    #[error("block {block} is being deleted")]
    Deleted {
        /// The block.
        block: String,
    },
}

fn owner(block: &IPAMBlockSpec) -> Option<&str> {
    block
        .affinity
        .as_deref()
        .and_then(|a| a.strip_prefix(AFFINITY_HOST_PREFIX))
}

/// Takes up to `n` free addresses for `attr`, from the front of `unallocated`. Returns the new
/// block and the ordinals taken (fewer than `n` when the block runs out).
pub fn allocate(
    mut block: IPAMBlockSpec,
    n: usize,
    attr: &AllocationAttribute,
) -> (IPAMBlockSpec, Vec<usize>) {
    let mut taken = Vec::new();
    if n == 0 {
        return (block, taken);
    }
    let idx = block.attributes.len();
    let mut rest = Vec::with_capacity(block.unallocated.len());
    for ord in std::mem::take(&mut block.unallocated) {
        let usable =
            block.allocations.get(ord).is_some_and(Option::is_none) && !taken.contains(&ord);
        if taken.len() < n && usable {
            taken.push(ord);
        } else if usable {
            rest.push(ord);
        }
        // An ordinal listed as free but allocated (or out of range) is dropped: the list is
        // repaired by the write.
    }
    block.unallocated = rest;
    if taken.is_empty() {
        return (block, taken);
    }
    block.attributes.push(attr.clone());
    let seq = block.sequence_number + 1;
    for &ord in &taken {
        block.allocations[ord] = Some(idx);
        block
            .sequence_number_for_allocation
            .insert(ord.to_string(), seq);
    }
    (block, taken)
}

/// Takes the address with `ordinal` for `attr`. If it is taken (or out of range) the block
/// comes back unchanged with the current holder, if any.
#[allow(clippy::result_large_err)]
pub fn assign(
    mut block: IPAMBlockSpec,
    ordinal: usize,
    attr: &AllocationAttribute,
) -> Result<IPAMBlockSpec, (IPAMBlockSpec, Option<String>)> {
    match block.allocations.get(ordinal) {
        None => return Err((block, None)),
        Some(Some(_)) => {
            let holder = block.handle_of(ordinal).unwrap_or("").to_string();
            return Err((block, Some(holder)));
        }
        Some(None) => {}
    }
    let idx = block.attributes.len();
    block.attributes.push(attr.clone());
    block.allocations[ordinal] = Some(idx);
    block.unallocated.retain(|&o| o != ordinal);
    block
        .sequence_number_for_allocation
        .insert(ordinal.to_string(), block.sequence_number + 1);
    Ok(block)
}

/// Frees the allocated ordinals for which `release` says yes; they go to the back of
/// `unallocated`. Returns the new block and the freed ordinals with their handles.
pub fn release_where(
    mut block: IPAMBlockSpec,
    mut release: impl FnMut(usize, Option<&str>) -> bool,
) -> (IPAMBlockSpec, Vec<(usize, Option<String>)>) {
    let mut freed = Vec::new();
    for ord in 0..block.allocations.len() {
        if block.allocations[ord].is_none() {
            continue;
        }
        let handle = block.handle_of(ord).map(str::to_string);
        if release(ord, handle.as_deref()) {
            freed.push((ord, handle));
        }
    }
    for (ord, _) in &freed {
        block.allocations[*ord] = None;
        block
            .sequence_number_for_allocation
            .remove(&ord.to_string());
        if !block.unallocated.contains(ord) {
            block.unallocated.push(*ord);
        }
    }
    if !freed.is_empty() {
        block = compact_attributes(block);
    }
    (block, freed)
}

/// Drops attributes no allocation refers to, renumbering the rest.
fn compact_attributes(mut block: IPAMBlockSpec) -> IPAMBlockSpec {
    let mut used = vec![false; block.attributes.len()];
    for idx in block.allocations.iter().flatten() {
        if let Some(u) = used.get_mut(*idx) {
            *u = true;
        }
    }
    let mut renumber = vec![None; used.len()];
    let mut kept = Vec::new();
    for (i, attr) in std::mem::take(&mut block.attributes)
        .into_iter()
        .enumerate()
    {
        if used[i] {
            renumber[i] = Some(kept.len());
            kept.push(attr);
        }
    }
    block.attributes = kept;
    for a in block.allocations.iter_mut() {
        *a = a.and_then(|idx| renumber.get(idx).copied().flatten());
    }
    block
}

/// Applies a batch of operations in order to a block, as one write would carry them. Returns
/// the new block (its `sequenceNumber` incremented if anything changed), whether anything
/// changed, and the outcome of each operation.
pub fn apply(
    block: &IPAMBlockSpec,
    ops: &[BlockOp],
) -> (IPAMBlockSpec, bool, Vec<Result<Outcome, OpError>>) {
    let mut cur = block.clone();
    let mut changed = false;
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        let (next, ch, result) = apply_one(cur, op);
        cur = next;
        changed |= ch;
        results.push(result);
    }
    if changed {
        cur.sequence_number += 1;
    }
    (cur, changed, results)
}

fn apply_one(cur: IPAMBlockSpec, op: &BlockOp) -> (IPAMBlockSpec, bool, Result<Outcome, OpError>) {
    let cidr = || cur.cidr.clone();
    match op {
        BlockOp::Allocate {
            n,
            attr,
            node,
            mode,
        } => {
            if cur.deleted {
                let e = OpError::Deleted { block: cidr() };
                return (cur, false, Err(e));
            }
            let own = owner(&cur);
            let refused = match (mode, own) {
                (Use::Affine, o) if o != Some(node.as_str()) => Some(OpError::NotAffine {
                    block: cidr(),
                    node: node.clone(),
                }),
                (Use::Borrow, Some(o)) if cur.strict_affinity && o != node => {
                    Some(OpError::Strict {
                        block: cidr(),
                        owner: o.to_string(),
                    })
                }
                _ => None,
            };
            if let Some(e) = refused {
                return (cur, false, Err(e));
            }
            let (next, taken) = allocate(cur, *n, attr);
            let ips = taken.iter().filter_map(|&o| next.address_of(o)).collect();
            (next, !taken.is_empty(), Ok(Outcome::Allocated(ips)))
        }
        BlockOp::Assign { ip, attr, node } => {
            let Some(ord) = cur.ordinal_of(*ip) else {
                let e = OpError::NotInBlock {
                    ip: *ip,
                    block: cidr(),
                };
                return (cur, false, Err(e));
            };
            if cur.deleted {
                let e = OpError::Deleted { block: cidr() };
                return (cur, false, Err(e));
            }
            if let Some(o) = owner(&cur)
                && cur.strict_affinity
                && o != node
            {
                let e = OpError::Strict {
                    block: cidr(),
                    owner: o.to_string(),
                };
                return (cur, false, Err(e));
            }
            match assign(cur, ord, attr) {
                Ok(next) => (next, true, Ok(Outcome::Allocated(vec![*ip]))),
                Err((same, holder)) => {
                    let e = OpError::InUse {
                        ip: *ip,
                        handle: holder.unwrap_or_default(),
                    };
                    (same, false, Err(e))
                }
            }
        }
        BlockOp::ReleaseHandle { handle } => {
            let (next, freed) = release_where(cur, |_, h| h == Some(handle.as_str()));
            let ch = !freed.is_empty();
            let out = released(&next, freed);
            (next, ch, Ok(out))
        }
        BlockOp::ReleaseIps { ips, handle } => {
            let ords: Vec<usize> = ips.iter().filter_map(|ip| cur.ordinal_of(*ip)).collect();
            let (next, freed) = release_where(cur, |o, h| {
                ords.contains(&o) && (handle.is_none() || handle.as_deref() == h)
            });
            let ch = !freed.is_empty();
            let out = released(&next, freed);
            (next, ch, Ok(out))
        }
    }
}

fn released(block: &IPAMBlockSpec, freed: Vec<(usize, Option<String>)>) -> Outcome {
    Outcome::Released(
        freed
            .into_iter()
            .filter_map(|(o, h)| Some((block.address_of(o)?, h)))
            .collect(),
    )
}

/// The addresses of a block held by `handle`.
pub fn addresses_of_handle(block: &IPAMBlockSpec, handle: &str) -> Vec<IpAddr> {
    block
        .allocations
        .iter()
        .enumerate()
        .filter(|(o, a)| a.is_some() && block.handle_of(*o) == Some(handle))
        .filter_map(|(o, _)| block.address_of(o))
        .collect()
}

/// Whether the block's bookkeeping is consistent: every ordinal is either allocated (pointing at
/// an existing attribute) or listed once in `unallocated`, never both. `None` when it is, else
/// what is wrong.
pub fn inconsistency(block: &IPAMBlockSpec) -> Option<String> {
    let size = block.allocations.len();
    if block.size() != Some(size) {
        return Some(format!(
            "block {} has {} allocation slots for {:?} addresses",
            block.cidr,
            size,
            block.size()
        ));
    }
    let mut listed = vec![false; size];
    for &o in &block.unallocated {
        match listed.get_mut(o) {
            None => return Some(format!("ordinal {o} out of range in {}", block.cidr)),
            Some(true) => return Some(format!("ordinal {o} listed free twice in {}", block.cidr)),
            Some(l) => *l = true,
        }
    }
    for (o, a) in block.allocations.iter().enumerate() {
        match a {
            Some(idx) if *idx >= block.attributes.len() => {
                return Some(format!("ordinal {o} of {} has no attribute", block.cidr));
            }
            Some(_) if listed[o] => {
                return Some(format!("ordinal {o} of {} allocated and free", block.cidr));
            }
            None if !listed[o] => {
                return Some(format!(
                    "ordinal {o} of {} neither allocated nor free",
                    block.cidr
                ));
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn block(cidr: &str, node: Option<&str>) -> IPAMBlockSpec {
        IPAMBlockSpec::empty(cidr.parse().unwrap(), node).unwrap()
    }

    fn attr(h: &str) -> AllocationAttribute {
        AllocationAttribute::for_pod(h, "ns", h, "n1")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn alloc(n: usize, h: &str, mode: Use) -> BlockOp {
        BlockOp::Allocate {
            n,
            attr: attr(h),
            node: "n1".into(),
            mode,
        }
    }

    #[test]
    fn addresses_are_handed_out_in_order_and_freed_ones_go_last() {
        let b = block("100.64.0.0/30", Some("n1"));
        let (b, got) = allocate(b, 2, &attr("a"));
        assert_eq!(got, [0, 1]);
        let (b, freed) = release_where(b, |_, h| h == Some("a"));
        assert_eq!(freed.len(), 2);
        assert_eq!(b.unallocated, [2, 3, 0, 1]);
        let (_, got) = allocate(b, 3, &attr("b"));
        assert_eq!(got, [2, 3, 0], "a freed address is reused last");
    }

    #[test]
    fn a_full_block_gives_what_it_has() {
        let b = block("100.64.0.0/31", Some("n1"));
        let (b, got) = allocate(b, 5, &attr("a"));
        assert_eq!(got, [0, 1]);
        let (_, got) = allocate(b, 1, &attr("b"));
        assert!(got.is_empty());
    }

    #[test]
    fn assigning_a_held_address_names_its_holder() {
        let b = block("100.64.0.0/30", Some("n1"));
        let (b, _, r) = apply(
            &b,
            &[
                BlockOp::Assign {
                    ip: ip("100.64.0.2"),
                    attr: attr("a"),
                    node: "n1".into(),
                },
                BlockOp::Assign {
                    ip: ip("100.64.0.2"),
                    attr: attr("b"),
                    node: "n1".into(),
                },
            ],
        );
        assert_eq!(r[0], Ok(Outcome::Allocated(vec![ip("100.64.0.2")])));
        assert_eq!(
            r[1],
            Err(OpError::InUse {
                ip: ip("100.64.0.2"),
                handle: "a".into()
            })
        );
        assert_eq!(b.unallocated, [0, 1, 3]);
    }

    #[test]
    fn a_batch_is_applied_in_order_and_bumps_the_sequence_once() {
        let b = block("100.64.0.0/29", Some("n1"));
        let ops = [
            alloc(1, "a", Use::Affine),
            alloc(2, "b", Use::Affine),
            BlockOp::ReleaseHandle { handle: "a".into() },
        ];
        let (b2, changed, r) = apply(&b, &ops);
        assert!(changed);
        assert_eq!(b2.sequence_number, b.sequence_number + 1);
        assert_eq!(r[0], Ok(Outcome::Allocated(vec![ip("100.64.0.0")])));
        assert_eq!(
            r[1],
            Ok(Outcome::Allocated(vec![ip("100.64.0.1"), ip("100.64.0.2")]))
        );
        assert_eq!(
            r[2],
            Ok(Outcome::Released(vec![(
                ip("100.64.0.0"),
                Some("a".into())
            )]))
        );
        assert_eq!(b2.attributes.len(), 1, "a's attribute is gone");
        assert_eq!(addresses_of_handle(&b2, "b").len(), 2);
        assert_eq!(inconsistency(&b2), None);
    }

    #[test]
    fn the_input_block_is_never_changed() {
        let b = block("100.64.0.0/30", Some("n1"));
        let before = b.clone();
        let _ = apply(&b, &[alloc(2, "a", Use::Affine)]);
        assert_eq!(b, before);
    }

    #[test]
    fn affine_allocation_refuses_another_nodes_block_and_borrowing_respects_strictness() {
        let mut b = block("100.64.0.0/30", Some("n2"));
        let (_, changed, r) = apply(&b, &[alloc(1, "a", Use::Affine)]);
        assert!(!changed);
        assert!(matches!(r[0], Err(OpError::NotAffine { .. })));
        let (_, _, r) = apply(&b, &[alloc(1, "a", Use::Borrow)]);
        assert!(matches!(&r[0], Ok(Outcome::Allocated(v)) if v.len() == 1));
        b.strict_affinity = true;
        let (_, _, r) = apply(&b, &[alloc(1, "a", Use::Borrow)]);
        assert!(matches!(r[0], Err(OpError::Strict { .. })));
    }

    #[test]
    fn release_by_ip_with_a_handle_frees_only_what_that_handle_holds() {
        let b = block("100.64.0.0/30", Some("n1"));
        let (b, _, _) = apply(
            &b,
            &[alloc(1, "a", Use::Affine), alloc(1, "b", Use::Affine)],
        );
        let (b, _, r) = apply(
            &b,
            &[BlockOp::ReleaseIps {
                ips: vec![ip("100.64.0.0"), ip("100.64.0.1")],
                handle: Some("b".into()),
            }],
        );
        assert_eq!(
            r[0],
            Ok(Outcome::Released(vec![(
                ip("100.64.0.1"),
                Some("b".into())
            )]))
        );
        assert_eq!(b.handle_of(0), Some("a"));
    }

    #[test]
    fn releasing_what_is_not_held_changes_nothing() {
        let b = block("100.64.0.0/30", Some("n1"));
        let (b2, changed, r) = apply(&b, &[BlockOp::ReleaseHandle { handle: "x".into() }]);
        assert!(!changed);
        assert_eq!(b2, b);
        assert_eq!(r[0], Ok(Outcome::Released(vec![])));
    }

    #[derive(Debug, Clone)]
    enum Step {
        Alloc(usize, u8),
        Assign(usize, u8),
        ReleaseHandle(u8),
        ReleaseIp(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (1usize..4, 0u8..6).prop_map(|(n, h)| Step::Alloc(n, h)),
            (0usize..16, 0u8..6).prop_map(|(o, h)| Step::Assign(o, h)),
            (0u8..6).prop_map(Step::ReleaseHandle),
            (0usize..16).prop_map(Step::ReleaseIp),
        ]
    }

    fn to_op(b: &IPAMBlockSpec, s: &Step) -> BlockOp {
        match s {
            Step::Alloc(n, h) => alloc(*n, &h.to_string(), Use::Affine),
            Step::Assign(o, h) => BlockOp::Assign {
                ip: b.address_of(*o).unwrap(),
                attr: attr(&h.to_string()),
                node: "n1".into(),
            },
            Step::ReleaseHandle(h) => BlockOp::ReleaseHandle {
                handle: h.to_string(),
            },
            Step::ReleaseIp(o) => BlockOp::ReleaseIps {
                ips: vec![b.address_of(*o).unwrap()],
                handle: None,
            },
        }
    }

    proptest! {
        #[test]
        fn a_batch_gives_each_request_what_it_would_get_alone_in_order(
            steps in proptest::collection::vec(step(), 1..20)
        ) {
            let b = block("100.64.0.0/28", Some("n1"));
            let ops: Vec<BlockOp> = steps.iter().map(|s| to_op(&b, s)).collect();
            let (batched, _, batch_results) = apply(&b, &ops);
            let mut one_by_one = b.clone();
            let mut results = Vec::new();
            for op in &ops {
                let (next, _, mut r) = apply(&one_by_one, std::slice::from_ref(op));
                one_by_one = next;
                results.push(r.remove(0));
            }
            prop_assert_eq!(batch_results, results);
            prop_assert_eq!(&batched.allocations, &one_by_one.allocations);
            prop_assert_eq!(&batched.unallocated, &one_by_one.unallocated);
            prop_assert_eq!(&batched.attributes, &one_by_one.attributes);
            prop_assert!(batched.sequence_number <= b.sequence_number + 1, "one write");
        }

        #[test]
        fn any_sequence_keeps_the_block_consistent_and_never_doubles_an_address(
            steps in proptest::collection::vec(step(), 1..60)
        ) {
            let mut b = block("100.64.0.0/28", Some("n1"));
            // The model: which handle holds each ordinal, and the FIFO order of free ones.
            let mut held: Vec<Option<u8>> = vec![None; 16];
            for s in steps {
                let op = match &s {
                    Step::Alloc(n, h) => alloc(*n, &h.to_string(), Use::Affine),
                    Step::Assign(o, h) => BlockOp::Assign {
                        ip: b.address_of(*o).unwrap(), attr: attr(&h.to_string()), node: "n1".into() },
                    Step::ReleaseHandle(h) => BlockOp::ReleaseHandle { handle: h.to_string() },
                    Step::ReleaseIp(o) => BlockOp::ReleaseIps {
                        ips: vec![b.address_of(*o).unwrap()], handle: None },
                };
                let front = b.unallocated.clone();
                let (next, _, r) = apply(&b, std::slice::from_ref(&op));
                match (&s, &r[0]) {
                    (Step::Alloc(n, h), Ok(Outcome::Allocated(ips))) => {
                        let free = held.iter().filter(|x| x.is_none()).count();
                        prop_assert_eq!(ips.len(), (*n).min(free));
                        for (i, ip) in ips.iter().enumerate() {
                            let o = next.ordinal_of(*ip).unwrap();
                            prop_assert_eq!(o, front[i], "FIFO order");
                            prop_assert!(held[o].is_none(), "address given twice");
                            held[o] = Some(*h);
                        }
                    }
                    (Step::Assign(o, h), Ok(_)) => {
                        prop_assert!(held[*o].is_none());
                        held[*o] = Some(*h);
                    }
                    (Step::Assign(o, _), Err(OpError::InUse { handle, .. })) => {
                        prop_assert_eq!(Some(handle.clone()), held[*o].map(|h| h.to_string()));
                    }
                    (Step::ReleaseHandle(h), Ok(Outcome::Released(freed))) => {
                        let want = held.iter().filter(|x| **x == Some(*h)).count();
                        prop_assert_eq!(freed.len(), want, "release by handle is exact");
                        for x in held.iter_mut() {
                            if *x == Some(*h) { *x = None; }
                        }
                    }
                    (Step::ReleaseIp(o), Ok(Outcome::Released(freed))) => {
                        prop_assert_eq!(freed.len(), usize::from(held[*o].is_some()));
                        held[*o] = None;
                    }
                    (s, r) => prop_assert!(false, "unexpected {:?} for {:?}", r, s),
                }
                b = next;
                prop_assert_eq!(inconsistency(&b), None);
                for (o, h) in held.iter().enumerate() {
                    prop_assert_eq!(b.handle_of(o).map(str::to_string), h.map(|h| h.to_string()));
                }
            }
        }
    }
}
