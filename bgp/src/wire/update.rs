//! UPDATE message (RFC 4271 §4.3) with MP_REACH_NLRI / MP_UNREACH_NLRI (RFC 4760).

use std::net::{Ipv4Addr, Ipv6Addr};

use super::attrs::{
    AttrError, DecodedAttrs, ErrorAction, FLAG_EXTENDED, FLAG_OPTIONAL, MP_REACH, MP_UNREACH,
    NextHop, PathAttrs, decode_attrs, encode_attrs,
};
use super::error::{DecodeError, codes};
use super::message::Codec;
use super::prefix::{Prefix4, Prefix6, parse_prefixes4, parse_prefixes6, put_prefix4, put_prefix6};

/// NLRI of one multiprotocol family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MpNlri {
    /// AFI 1 SAFI 1.
    V4(Vec<Prefix4>),
    /// AFI 2 SAFI 1.
    V6(Vec<Prefix6>),
}

impl MpNlri {
    /// Number of prefixes.
    pub fn len(&self) -> usize {
        match self {
            MpNlri::V4(v) => v.len(),
            MpNlri::V6(v) => v.len(),
        }
    }
    /// Whether there are none (an End-of-RIB marker when in MP_UNREACH alone).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// MP_REACH_NLRI for a supported family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpReach {
    /// Next hop (IPv6: global and optional link-local).
    pub next_hop: NextHop,
    /// Reachable prefixes.
    pub nlri: MpNlri,
}

/// MP_UNREACH_NLRI for a supported family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpUnreach {
    /// Withdrawn prefixes.
    pub withdrawn: MpNlri,
}

fn opt_err(whole: &[u8], reason: &'static str) -> DecodeError {
    DecodeError::new(codes::UPDATE, codes::UPD_OPTIONAL_ATTR, reason).with_data(whole)
}

fn parse_mp_nlri(afi: u16, v: &[u8], whole: &[u8]) -> Result<MpNlri, DecodeError> {
    Ok(if afi == 1 {
        let mut p = Vec::new();
        parse_prefixes4(v, &mut p).map_err(|_| opt_err(whole, "bad NLRI in MP attribute"))?;
        MpNlri::V4(p)
    } else {
        let mut p = Vec::new();
        parse_prefixes6(v, &mut p).map_err(|_| opt_err(whole, "bad NLRI in MP attribute"))?;
        MpNlri::V6(p)
    })
}

impl MpReach {
    /// Decodes the attribute value; `None` for a family we did not negotiate.
    pub(crate) fn decode(v: &[u8], whole: &[u8]) -> Result<Option<MpReach>, DecodeError> {
        if v.len() < 5 {
            return Err(opt_err(whole, "MP_REACH_NLRI too short"));
        }
        let afi = u16::from_be_bytes([v[0], v[1]]);
        let safi = v[2];
        let nhlen = usize::from(v[3]);
        if v.len() < 5 + nhlen {
            return Err(opt_err(whole, "MP_REACH_NLRI next hop overruns"));
        }
        if safi != 1 || !(afi == 1 || afi == 2) {
            return Ok(None);
        }
        let nh = &v[4..4 + nhlen];
        let next_hop = match (afi, nhlen) {
            (1, 4) => NextHop::V4(Ipv4Addr::new(nh[0], nh[1], nh[2], nh[3])),
            (2, 16) | (2, 32) => {
                let g: [u8; 16] = nh[..16].try_into().unwrap_or_default();
                let link_local = (nhlen == 32).then(|| {
                    let l: [u8; 16] = nh[16..32].try_into().unwrap_or_default();
                    Ipv6Addr::from(l)
                });
                NextHop::V6 {
                    global: Ipv6Addr::from(g),
                    link_local,
                }
            }
            _ => return Err(opt_err(whole, "MP_REACH_NLRI next hop has a bad length")),
        };
        // One reserved octet (formerly SNPA count) follows the next hop.
        let nlri = parse_mp_nlri(afi, &v[5 + nhlen..], whole)?;
        Ok(Some(MpReach { next_hop, nlri }))
    }

    /// Appends the MP_REACH_NLRI attribute (always with a 2-octet length).
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let start = begin_mp_reach(out, &self.next_hop);
        match &self.nlri {
            MpNlri::V4(v) => v.iter().for_each(|p| put_prefix4(out, *p)),
            MpNlri::V6(v) => v.iter().for_each(|p| put_prefix6(out, *p)),
        }
        finish_mp(out, start);
    }
}

/// Writes an MP_REACH_NLRI header and next hop; returns the attribute's start so that
/// NLRI can be appended and the length patched with [`finish_mp`].
pub(crate) fn begin_mp_reach(out: &mut Vec<u8>, nh: &NextHop) -> usize {
    let start = out.len();
    out.extend_from_slice(&[FLAG_OPTIONAL | FLAG_EXTENDED, MP_REACH, 0, 0]);
    match nh {
        NextHop::V4(a) => {
            out.extend_from_slice(&[0, 1, 1, 4]);
            out.extend_from_slice(&a.octets());
        }
        NextHop::V6 { global, link_local } => {
            out.extend_from_slice(&[0, 2, 1, if link_local.is_some() { 32 } else { 16 }]);
            out.extend_from_slice(&global.octets());
            if let Some(l) = link_local {
                out.extend_from_slice(&l.octets());
            }
        }
    }
    out.push(0);
    start
}

/// Writes an MP_UNREACH_NLRI header for `afi`/SAFI 1; finish with [`finish_mp`].
pub(crate) fn begin_mp_unreach(out: &mut Vec<u8>, afi: u16) -> usize {
    let start = out.len();
    out.extend_from_slice(&[FLAG_OPTIONAL | FLAG_EXTENDED, MP_UNREACH, 0, 0]);
    out.extend_from_slice(&afi.to_be_bytes());
    out.push(1);
    start
}

/// Patches the 2-octet length of an MP attribute begun at `start`.
pub(crate) fn finish_mp(out: &mut [u8], start: usize) {
    let len = (out.len() - start - 4) as u16;
    out[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
}

impl MpUnreach {
    pub(crate) fn decode(v: &[u8], whole: &[u8]) -> Result<Option<MpUnreach>, DecodeError> {
        if v.len() < 3 {
            return Err(opt_err(whole, "MP_UNREACH_NLRI too short"));
        }
        let afi = u16::from_be_bytes([v[0], v[1]]);
        if v[2] != 1 || !(afi == 1 || afi == 2) {
            return Ok(None);
        }
        Ok(Some(MpUnreach {
            withdrawn: parse_mp_nlri(afi, &v[3..], whole)?,
        }))
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let afi = if matches!(self.withdrawn, MpNlri::V4(_)) {
            1
        } else {
            2
        };
        let start = begin_mp_unreach(out, afi);
        match &self.withdrawn {
            MpNlri::V4(v) => v.iter().for_each(|p| put_prefix4(out, *p)),
            MpNlri::V6(v) => v.iter().for_each(|p| put_prefix6(out, *p)),
        }
        finish_mp(out, start);
    }
}

/// An UPDATE message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Update {
    /// Withdrawn IPv4 routes.
    pub withdrawn: Vec<Prefix4>,
    /// Path attributes, if the UPDATE carries any besides MP_UNREACH_NLRI.
    pub attrs: Option<PathAttrs>,
    /// IPv4 NLRI.
    pub nlri: Vec<Prefix4>,
    /// MP_REACH_NLRI, for a supported family.
    pub mp_reach: Option<MpReach>,
    /// MP_UNREACH_NLRI, for a supported family.
    pub mp_unreach: Option<MpUnreach>,
    /// Attribute errors contained by RFC 7606 (empty for a well-formed UPDATE). With
    /// a treat-as-withdraw error `attrs` is `None` and every NLRI of this UPDATE
    /// (`nlri` and `mp_reach`) must be withdrawn; see [`Update::treat_as_withdraw`].
    pub errors: Vec<AttrError>,
}

impl Update {
    /// Whether this is an End-of-RIB marker (RFC 4724 §2), and for which AFI.
    pub fn end_of_rib(&self) -> Option<u16> {
        if !self.errors.is_empty()
            || !self.withdrawn.is_empty()
            || !self.nlri.is_empty()
            || self.mp_reach.is_some()
        {
            return None;
        }
        match (&self.attrs, &self.mp_unreach) {
            (None, None) => Some(1),
            (None, Some(u)) if u.withdrawn.is_empty() => {
                Some(if matches!(u.withdrawn, MpNlri::V4(_)) {
                    1
                } else {
                    2
                })
            }
            _ => None,
        }
    }

    /// Whether RFC 7606 treat-as-withdraw applies: the NLRI this UPDATE announces
    /// (IPv4 and MP_REACH) are to be withdrawn.
    pub fn treat_as_withdraw(&self) -> bool {
        self.errors
            .iter()
            .any(|e| e.action == ErrorAction::TreatAsWithdraw)
    }

    pub(crate) fn decode(body: &[u8], codec: Codec) -> Result<Update, DecodeError> {
        let malformed = || {
            DecodeError::new(
                codes::UPDATE,
                codes::UPD_MALFORMED_ATTR_LIST,
                "lengths overrun",
            )
        };
        if body.len() < 4 {
            return Err(malformed());
        }
        let wlen = usize::from(u16::from_be_bytes([body[0], body[1]]));
        if body.len() < 2 + wlen + 2 {
            return Err(malformed());
        }
        let wbuf = &body[2..2 + wlen];
        let alen = usize::from(u16::from_be_bytes([body[2 + wlen], body[3 + wlen]]));
        let astart = 4 + wlen;
        if body.len() < astart + alen {
            return Err(malformed());
        }
        let abuf = &body[astart..astart + alen];
        let nbuf = &body[astart + alen..];
        let bad_net = || {
            DecodeError::new(
                codes::UPDATE,
                codes::UPD_INVALID_NETWORK,
                "invalid network field",
            )
        };
        let mut withdrawn = Vec::new();
        parse_prefixes4(wbuf, &mut withdrawn).map_err(|_| bad_net())?;
        let mut nlri = Vec::new();
        parse_prefixes4(nbuf, &mut nlri).map_err(|_| bad_net())?;
        let DecodedAttrs {
            attrs,
            mp_reach,
            mp_unreach,
            has_origin,
            has_as_path,
            has_next_hop,
            any,
            mut errors,
        } = decode_attrs(abuf, codec)?;
        let reach = !nlri.is_empty() || mp_reach.as_ref().is_some_and(|m| !m.nlri.is_empty());
        let withdraw = errors
            .iter()
            .any(|e| e.action == ErrorAction::TreatAsWithdraw);
        if reach && !withdraw {
            // RFC 7606 §3 d: a missing well-known mandatory attribute is
            // treat-as-withdraw (NEXT_HOP only when there are IPv4 NLRI, RFC 4760).
            let missing = if !has_origin {
                Some(super::attrs::ORIGIN)
            } else if !has_as_path {
                Some(super::attrs::AS_PATH)
            } else if !nlri.is_empty() && !has_next_hop {
                Some(super::attrs::NEXT_HOP)
            } else {
                None
            };
            if let Some(t) = missing {
                errors.push(AttrError {
                    action: ErrorAction::TreatAsWithdraw,
                    error: DecodeError::new(
                        codes::UPDATE,
                        codes::UPD_MISSING_WELL_KNOWN,
                        "missing well-known attribute",
                    )
                    .with_data(&[t]),
                });
            }
        }
        let withdraw = errors
            .iter()
            .any(|e| e.action == ErrorAction::TreatAsWithdraw);
        let attrs = (!withdraw && any && (has_origin || has_as_path)).then_some(attrs);
        Ok(Update {
            withdrawn,
            attrs,
            nlri,
            mp_reach,
            mp_unreach,
            errors,
        })
    }

    pub(crate) fn encode_body(&self, codec: Codec, out: &mut Vec<u8>) {
        let wstart = out.len();
        out.extend_from_slice(&[0, 0]);
        self.withdrawn.iter().for_each(|p| put_prefix4(out, *p));
        let wlen = (out.len() - wstart - 2) as u16;
        out[wstart..wstart + 2].copy_from_slice(&wlen.to_be_bytes());
        let astart = out.len();
        out.extend_from_slice(&[0, 0]);
        if let Some(a) = &self.attrs {
            encode_attrs(a, codec, true, out);
        }
        if let Some(m) = &self.mp_reach {
            m.encode(out);
        }
        if let Some(m) = &self.mp_unreach {
            m.encode(out);
        }
        let alen = (out.len() - astart - 2) as u16;
        out[astart..astart + 2].copy_from_slice(&alen.to_be_bytes());
        self.nlri.iter().for_each(|p| put_prefix4(out, *p));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{AsPath, Message, Origin, RawAttr};

    fn p4(s: &str) -> Prefix4 {
        s.parse::<ipnet::Ipv4Net>().unwrap().into()
    }

    fn sample() -> Update {
        Update {
            withdrawn: vec![p4("100.64.9.0/24")],
            attrs: Some(PathAttrs {
                origin: Origin::Igp,
                as_path: AsPath::sequence([65001, 65002]),
                next_hop: Some(NextHop::V4(Ipv4Addr::new(198, 18, 0, 2))),
                med: Some(10),
                local_pref: Some(200),
                communities: vec![0xfde8_0001],
                ..PathAttrs::default()
            }),
            nlri: vec![p4("100.64.0.0/24"), p4("100.64.1.1/32")],
            mp_reach: None,
            mp_unreach: None,
            errors: Vec::new(),
        }
    }

    #[test]
    fn update_round_trips() {
        let m = Message::Update(sample());
        let b = m.to_bytes(Codec::default());
        assert_eq!(Message::decode(&b, Codec::default()).unwrap(), m);
    }

    #[test]
    fn ipv6_next_hop_with_link_local_round_trips() {
        let u = Update {
            attrs: Some(PathAttrs::default()),
            mp_reach: Some(MpReach {
                next_hop: NextHop::V6 {
                    global: "fd00::1".parse().unwrap(),
                    link_local: Some("fe80::1".parse().unwrap()),
                },
                nlri: MpNlri::V6(vec![
                    Prefix6::new("fd00:64::".parse().unwrap(), 64).unwrap(),
                ]),
            }),
            ..Update::default()
        };
        let b = Message::Update(u.clone()).to_bytes(Codec::default());
        assert_eq!(
            Message::decode(&b, Codec::default()).unwrap(),
            Message::Update(u)
        );
    }

    /// Decodes and checks an RFC 7606 treat-as-withdraw with this (code, subcode).
    fn withdrawn_with(b: &[u8], code: (u8, u8)) -> Update {
        let Message::Update(u) = Message::decode(b, Codec::default()).unwrap() else {
            panic!("not an UPDATE")
        };
        assert!(u.treat_as_withdraw(), "{u:?}");
        assert_eq!(u.attrs, None);
        let e = &u.errors[0].error;
        assert_eq!((e.code, e.subcode), code, "{e}");
        u
    }

    /// `sample()` encoded, with the attribute of type `code` replaced by `new`
    /// (flags, type, length, value), lengths patched.
    fn with_attr(code: u8, new: &[u8]) -> Vec<u8> {
        let b = Message::Update(sample()).to_bytes(Codec::default());
        let alen_at = 19 + 2 + 4;
        let alen = u16::from_be_bytes([b[alen_at], b[alen_at + 1]]) as usize;
        let mut i = alen_at + 2;
        let end = i + alen;
        let mut attrs = Vec::new();
        let mut found = false;
        while i < end {
            let ext = b[i] & 0x10 != 0;
            let (h, l) = if ext {
                (4, u16::from_be_bytes([b[i + 2], b[i + 3]]) as usize)
            } else {
                (3, b[i + 2] as usize)
            };
            if b[i + 1] == code {
                found = true;
                attrs.extend_from_slice(new);
            } else {
                attrs.extend_from_slice(&b[i..i + h + l]);
            }
            i += h + l;
        }
        if !found {
            attrs.extend_from_slice(new);
        }
        let mut out = b[..alen_at].to_vec();
        out.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        out.extend_from_slice(&attrs);
        out.extend_from_slice(&b[end..]);
        let l = out.len() as u16;
        out[16..18].copy_from_slice(&l.to_be_bytes());
        out
    }

    #[test]
    fn missing_next_hop_is_treat_as_withdraw_naming_its_type_code() {
        let mut u = sample();
        u.attrs.as_mut().unwrap().next_hop = None;
        let b = Message::Update(u).to_bytes(Codec::default());
        let d = withdrawn_with(&b, (3, 3));
        assert_eq!(d.errors[0].error.data, vec![3u8]);
        // The withdrawn routes and the NLRI to withdraw are all still there.
        assert_eq!(d.withdrawn, sample().withdrawn);
        assert_eq!(d.nlri, sample().nlri);
    }

    #[test]
    fn invalid_origin_value_length_or_flags_are_treat_as_withdraw() {
        withdrawn_with(&with_attr(1, &[0x40, 1, 1, 7]), (3, 6));
        withdrawn_with(&with_attr(1, &[0x40, 1, 2, 0, 0]), (3, 5));
        withdrawn_with(&with_attr(1, &[0xc0, 1, 1, 0]), (3, 4));
    }

    #[test]
    fn malformed_as_path_next_hop_med_local_pref_communities_are_treat_as_withdraw() {
        withdrawn_with(&with_attr(2, &[0x40, 2, 3, 2, 2, 0]), (3, 11));
        withdrawn_with(&with_attr(3, &[0x40, 3, 3, 198, 18, 0]), (3, 5));
        withdrawn_with(&with_attr(3, &[0x40, 3, 4, 0, 0, 0, 0]), (3, 8));
        withdrawn_with(&with_attr(4, &[0x80, 4, 2, 0, 1]), (3, 5));
        withdrawn_with(&with_attr(5, &[0x40, 5, 5, 0, 0, 0, 0, 1]), (3, 5));
        withdrawn_with(&with_attr(8, &[0xc0, 8, 0]), (3, 5));
        withdrawn_with(&with_attr(8, &[0xc0, 8, 3, 1, 2, 3]), (3, 5));
    }

    #[test]
    fn malformed_originator_id_and_cluster_list_are_treat_as_withdraw() {
        let mut b = with_attr(9, &[0x80, 9, 3, 1, 1, 1]);
        withdrawn_with(&b, (3, 5));
        b = with_attr(10, &[0x80, 10, 6, 1, 1, 1, 1, 2, 2]);
        withdrawn_with(&b, (3, 5));
    }

    #[test]
    fn malformed_atomic_aggregate_and_aggregator_are_discarded_and_routes_kept() {
        for (code, attr) in [
            (6u8, &[0x40u8, 6, 1, 0][..]),
            (7, &[0xc0, 7, 3, 0, 1, 2][..]),
        ] {
            let b = with_attr(code, attr);
            let Message::Update(u) = Message::decode(&b, Codec::default()).unwrap() else {
                panic!()
            };
            assert!(!u.treat_as_withdraw(), "{u:?}");
            assert_eq!(u.errors.len(), 1);
            assert_eq!(u.errors[0].action, ErrorAction::AttributeDiscard);
            let a = u.attrs.expect("routes kept");
            assert!(!a.atomic_aggregate && a.aggregator.is_none());
            assert_eq!(u.nlri, sample().nlri);
        }
    }

    #[test]
    fn attribute_overrunning_the_section_is_treat_as_withdraw() {
        // MED claims 200 octets of value inside a short attribute section.
        let b = with_attr(4, &[0x80, 4, 200, 0, 0, 0, 1]);
        withdrawn_with(&b, (3, 5));
    }

    #[test]
    fn unknown_well_known_attribute_is_treat_as_withdraw() {
        let b = with_attr(99, &[0x40, 99, 1, 0]);
        withdrawn_with(&b, (3, 2));
        // Without NLRI it is still not an End-of-RIB.
        let body = vec![0, 0, 0, 3, 0x40, 99, 0];
        let u = Update::decode(&body, Codec::default()).unwrap();
        assert_eq!(u.errors[0].error.subcode, 2);
        assert_eq!(u.end_of_rib(), None);
    }

    #[test]
    fn duplicate_attribute_is_discarded_after_the_first() {
        let body = [0, 0, 0, 8, 0x40, 1, 1, 2, 0x40, 1, 1, 0];
        let u = Update::decode(&body, Codec::default()).unwrap();
        assert_eq!(u.errors.len(), 1);
        assert_eq!(u.errors[0].action, ErrorAction::AttributeDiscard);
        assert_eq!(u.attrs.unwrap().origin, Origin::Incomplete);
    }

    #[test]
    fn repeated_or_malformed_mp_attribute_resets_the_session() {
        let body = [
            0, 0, 0, 14, 0x90, 15, 0, 3, 0, 2, 1, 0x90, 15, 0, 3, 0, 2, 1,
        ];
        let e = Update::decode(&body, Codec::default()).unwrap_err();
        assert_eq!((e.code, e.subcode), (3, 1));
        // MP_REACH with a 5-octet IPv6 next hop: the NLRI cannot be located.
        let body = [0, 0, 0, 14, 0x90, 14, 0, 10, 0, 2, 1, 5, 1, 2, 3, 4, 5, 0];
        let e = Update::decode(&body, Codec::default()).unwrap_err();
        assert_eq!((e.code, e.subcode), (3, 9));
    }

    #[test]
    fn unknown_optional_transitive_attribute_is_kept_with_partial_set() {
        let mut u = sample();
        let mut b = Message::Update(u.clone()).to_bytes(Codec::default());
        // Append an optional transitive attribute (type 99) to the attribute list.
        let wlen = 4;
        let alen_at = 19 + 2 + wlen;
        let alen = u16::from_be_bytes([b[alen_at], b[alen_at + 1]]) as usize;
        let ins = alen_at + 2 + alen;
        b.splice(ins..ins, [0xc0, 99, 2, 0xab, 0xcd]);
        let new = (alen + 5) as u16;
        b[alen_at..alen_at + 2].copy_from_slice(&new.to_be_bytes());
        let l = b.len() as u16;
        b[16..18].copy_from_slice(&l.to_be_bytes());
        let d = Message::decode(&b, Codec::default()).unwrap();
        u.attrs.as_mut().unwrap().unknown = vec![RawAttr {
            flags: 0xe0,
            code: 99,
            value: vec![0xab, 0xcd].into(),
        }];
        assert_eq!(d, Message::Update(u));
    }

    #[test]
    fn bad_nlri_is_invalid_network_field() {
        let mut b = Message::Update(sample()).to_bytes(Codec::default());
        let n = b.len();
        b[n - 5] = 40; // the /32's length octet
        let e = Message::decode(&b, Codec::default()).unwrap_err();
        assert_eq!((e.code, e.subcode), (3, 10));
    }

    #[test]
    fn empty_update_is_ipv4_end_of_rib() {
        assert_eq!(Update::default().end_of_rib(), Some(1));
        let u = Update {
            mp_unreach: Some(MpUnreach {
                withdrawn: MpNlri::V6(vec![]),
            }),
            ..Update::default()
        };
        assert_eq!(u.end_of_rib(), Some(2));
        assert_eq!(sample().end_of_rib(), None);
    }
}
