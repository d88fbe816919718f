//! Packing: many NLRI per UPDATE, up to [`MAX_MESSAGE_LEN`] octets.
//!
//! The caller encodes an attribute block once ([`encode_attr_block`]) and then
//! appends as many UPDATEs as the prefixes need to one output buffer. Each UPDATE
//! repeats the attribute block and is filled with NLRI until the next one would not
//! fit, so 1,000 /32 routes with one attribute set become two UPDATEs, not 1,000. The
//! same buffer is then shared (reference-counted) by every peer of an update group.

use super::attrs::{NextHop, PathAttrs, encode_attrs};
use super::message::{Codec, HEADER_LEN, MAX_MESSAGE_LEN, MessageType, begin, finish};
use super::open::Family;
use super::prefix::{Prefix4, Prefix6, nlri_len, put_prefix4, put_prefix6};
use super::update::{begin_mp_reach, begin_mp_unreach, finish_mp};

/// Encodes the attribute block of a route for one family: every attribute, with
/// NEXT_HOP for IPv4 and without it for IPv6 (whose next hop goes in MP_REACH).
pub fn encode_attr_block(a: &PathAttrs, codec: Codec, family: Family, out: &mut Vec<u8>) {
    encode_attrs(a, codec, family == Family::Ipv4Unicast, out);
}

/// Room left for NLRI in an UPDATE whose attribute section is `attr_len` long.
fn room(attr_len: usize) -> usize {
    MAX_MESSAGE_LEN.saturating_sub(HEADER_LEN + 4 + attr_len)
}

/// Appends UPDATEs announcing `prefixes` with IPv4 attribute block `attrs`.
/// Returns the number of UPDATEs written (0 if the attributes alone do not fit).
pub fn announce4(out: &mut Vec<u8>, attrs: &[u8], prefixes: &[Prefix4]) -> usize {
    let mut msgs = 0;
    let mut rest = prefixes;
    let cap = room(attrs.len());
    if cap < 5 {
        return 0;
    }
    while !rest.is_empty() {
        let start = begin(out, MessageType::Update);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        out.extend_from_slice(attrs);
        let mut used = 0;
        let mut n = 0;
        for p in rest {
            let l = nlri_len(p.len());
            if used + l > cap {
                break;
            }
            put_prefix4(out, *p);
            used += l;
            n += 1;
        }
        rest = &rest[n..];
        finish(out, start);
        msgs += 1;
    }
    msgs
}

/// Appends UPDATEs announcing IPv6 `prefixes` with attribute block `attrs` (no
/// NEXT_HOP) and next hop `nh` in MP_REACH_NLRI. Returns the number of UPDATEs.
pub fn announce6(out: &mut Vec<u8>, attrs: &[u8], nh: &NextHop, prefixes: &[Prefix6]) -> usize {
    let mut msgs = 0;
    let mut rest = prefixes;
    let mut probe = Vec::new();
    begin_mp_reach(&mut probe, nh);
    let cap = room(attrs.len() + probe.len());
    if cap < 17 {
        return 0;
    }
    while !rest.is_empty() {
        let start = begin(out, MessageType::Update);
        out.extend_from_slice(&[0, 0]);
        let alen_at = out.len();
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(attrs);
        let mp = begin_mp_reach(out, nh);
        let mut used = 0;
        let mut n = 0;
        for p in rest {
            let l = nlri_len(p.len());
            if used + l > cap {
                break;
            }
            put_prefix6(out, *p);
            used += l;
            n += 1;
        }
        rest = &rest[n..];
        finish_mp(out, mp);
        let alen = (out.len() - alen_at - 2) as u16;
        out[alen_at..alen_at + 2].copy_from_slice(&alen.to_be_bytes());
        finish(out, start);
        msgs += 1;
    }
    msgs
}

/// Appends UPDATEs withdrawing IPv4 `prefixes`.
pub fn withdraw4(out: &mut Vec<u8>, prefixes: &[Prefix4]) -> usize {
    let mut msgs = 0;
    let cap = room(0);
    for chunk in chunk_by_size(prefixes, cap, |p| nlri_len(p.len())) {
        let start = begin(out, MessageType::Update);
        let wl_at = out.len();
        out.extend_from_slice(&[0, 0]);
        chunk.iter().for_each(|p| put_prefix4(out, *p));
        let wl = (out.len() - wl_at - 2) as u16;
        out[wl_at..wl_at + 2].copy_from_slice(&wl.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        finish(out, start);
        msgs += 1;
    }
    msgs
}

/// Appends UPDATEs withdrawing IPv6 `prefixes` in MP_UNREACH_NLRI.
pub fn withdraw6(out: &mut Vec<u8>, prefixes: &[Prefix6]) -> usize {
    let mut msgs = 0;
    let cap = room(7);
    for chunk in chunk_by_size(prefixes, cap, |p| nlri_len(p.len())) {
        let start = begin(out, MessageType::Update);
        out.extend_from_slice(&[0, 0]);
        let alen_at = out.len();
        out.extend_from_slice(&[0, 0]);
        let mp = begin_mp_unreach(out, 2);
        chunk.iter().for_each(|p| put_prefix6(out, *p));
        finish_mp(out, mp);
        let alen = (out.len() - alen_at - 2) as u16;
        out[alen_at..alen_at + 2].copy_from_slice(&alen.to_be_bytes());
        finish(out, start);
        msgs += 1;
    }
    msgs
}

/// Appends an End-of-RIB marker for `family` (RFC 4724 §2).
pub fn end_of_rib(out: &mut Vec<u8>, family: Family) {
    let start = begin(out, MessageType::Update);
    match family {
        Family::Ipv4Unicast => out.extend_from_slice(&[0, 0, 0, 0]),
        Family::Ipv6Unicast => {
            out.extend_from_slice(&[0, 0, 0, 7]);
            let mp = begin_mp_unreach(out, 2);
            finish_mp(out, mp);
        }
    }
    finish(out, start);
}

fn chunk_by_size<T>(items: &[T], cap: usize, size: impl Fn(&T) -> usize) -> Vec<&[T]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut used = 0;
    for (i, it) in items.iter().enumerate() {
        let s = size(it);
        if used + s > cap {
            out.push(&items[start..i]);
            start = i;
            used = 0;
        }
        used += s;
    }
    if start < items.len() {
        out.push(&items[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{AsPath, Message, MpNlri, Update, frame};
    use std::net::Ipv4Addr;

    fn split(buf: &[u8]) -> Vec<Update> {
        let mut rest = buf;
        let mut v = Vec::new();
        while !rest.is_empty() {
            let (_, len) = frame(rest).unwrap().unwrap();
            assert!(len <= MAX_MESSAGE_LEN);
            match Message::decode(&rest[..len], Codec::default()).unwrap() {
                Message::Update(u) => v.push(u),
                m => panic!("{m:?}"),
            }
            rest = &rest[len..];
        }
        v
    }

    fn attrs() -> PathAttrs {
        PathAttrs {
            as_path: AsPath::default(),
            next_hop: Some(NextHop::V4(Ipv4Addr::new(198, 18, 0, 2))),
            local_pref: Some(100),
            ..PathAttrs::default()
        }
    }

    #[test]
    fn ten_thousand_host_routes_pack_into_about_810_per_update() {
        let a = attrs();
        let mut block = Vec::new();
        encode_attr_block(&a, Codec::default(), Family::Ipv4Unicast, &mut block);
        let prefixes: Vec<Prefix4> = (0..10_000u32)
            .map(|i| Prefix4::new(Ipv4Addr::from(0x6440_0000 + i), 32).unwrap())
            .collect();
        let mut out = Vec::new();
        let n = announce4(&mut out, &block, &prefixes);
        let ups = split(&out);
        assert_eq!(ups.len(), n);
        assert!(n <= 13, "{n} updates");
        let got: Vec<Prefix4> = ups.iter().flat_map(|u| u.nlri.clone()).collect();
        assert_eq!(got, prefixes);
        assert!(ups.iter().all(|u| u.attrs.as_ref() == Some(&a)));
    }

    #[test]
    fn ipv6_announcements_and_withdrawals_pack_and_round_trip() {
        let mut a = attrs();
        a.next_hop = None;
        let nh = NextHop::V6 {
            global: "fd00::2".parse().unwrap(),
            link_local: Some("fe80::2".parse().unwrap()),
        };
        let mut block = Vec::new();
        encode_attr_block(&a, Codec::default(), Family::Ipv6Unicast, &mut block);
        let prefixes: Vec<Prefix6> = (0..2_000u128)
            .map(|i| Prefix6::new((0xfd00_u128 << 112 | i).into(), 128).unwrap())
            .collect();
        let mut out = Vec::new();
        announce6(&mut out, &block, &nh, &prefixes);
        withdraw6(&mut out, &prefixes);
        let ups = split(&out);
        let mut ann = Vec::new();
        let mut wd = Vec::new();
        for u in ups {
            if let Some(r) = u.mp_reach {
                assert_eq!(r.next_hop, nh);
                let MpNlri::V6(v) = r.nlri else { panic!() };
                ann.extend(v);
            }
            if let Some(w) = u.mp_unreach {
                let MpNlri::V6(v) = w.withdrawn else { panic!() };
                wd.extend(v);
            }
        }
        assert_eq!(ann, prefixes);
        assert_eq!(wd, prefixes);
    }

    #[test]
    fn ipv4_withdrawals_pack() {
        let prefixes: Vec<Prefix4> = (0..3_000u32)
            .map(|i| Prefix4::new(Ipv4Addr::from(0x6440_0000 + (i << 8)), 24).unwrap())
            .collect();
        let mut out = Vec::new();
        withdraw4(&mut out, &prefixes);
        let got: Vec<Prefix4> = split(&out).into_iter().flat_map(|u| u.withdrawn).collect();
        assert_eq!(got, prefixes);
    }

    #[test]
    fn end_of_rib_markers_decode_as_such() {
        let mut out = Vec::new();
        end_of_rib(&mut out, Family::Ipv4Unicast);
        end_of_rib(&mut out, Family::Ipv6Unicast);
        let u = split(&out);
        assert_eq!(u[0].end_of_rib(), Some(1));
        assert_eq!(u[1].end_of_rib(), Some(2));
    }
}
