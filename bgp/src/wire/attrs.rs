//! Path attributes (RFC 4271 §4.3, §5; RFC 1997; RFC 4456; RFC 6793).
//!
//! [`PathAttrs`] is the decoded, hashable form the RIB interns: every attribute of one
//! UPDATE except MP_REACH/MP_UNREACH (which carry NLRI and live in
//! [`super::Update`]). For IPv6 routes the RIB stores the MP_REACH next hop in
//! [`PathAttrs::next_hop`], so one type describes a route of either family.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::error::{DecodeError, codes};
use super::message::Codec;
use super::open::AS_TRANS;
use super::update::{MpReach, MpUnreach};

pub(crate) const FLAG_OPTIONAL: u8 = 0x80;
pub(crate) const FLAG_TRANSITIVE: u8 = 0x40;
pub(crate) const FLAG_PARTIAL: u8 = 0x20;
pub(crate) const FLAG_EXTENDED: u8 = 0x10;

pub(crate) const ORIGIN: u8 = 1;
pub(crate) const AS_PATH: u8 = 2;
pub(crate) const NEXT_HOP: u8 = 3;
pub(crate) const MED: u8 = 4;
pub(crate) const LOCAL_PREF: u8 = 5;
pub(crate) const ATOMIC_AGGREGATE: u8 = 6;
pub(crate) const AGGREGATOR: u8 = 7;
pub(crate) const COMMUNITIES: u8 = 8;
pub(crate) const ORIGINATOR_ID: u8 = 9;
pub(crate) const CLUSTER_LIST: u8 = 10;
pub(crate) const MP_REACH: u8 = 14;
pub(crate) const MP_UNREACH: u8 = 15;
pub(crate) const AS4_PATH: u8 = 17;
pub(crate) const AS4_AGGREGATOR: u8 = 18;

/// ORIGIN values, ordered as the decision process prefers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Origin {
    /// IGP (0).
    #[default]
    Igp,
    /// EGP (1).
    Egp,
    /// INCOMPLETE (2).
    Incomplete,
}

/// AS_PATH segment types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SegmentType {
    /// AS_SET (1).
    Set,
    /// AS_SEQUENCE (2).
    Sequence,
    /// AS_CONFED_SEQUENCE (3, RFC 5065).
    ConfedSequence,
    /// AS_CONFED_SET (4, RFC 5065).
    ConfedSet,
}

impl SegmentType {
    fn code(self) -> u8 {
        match self {
            Self::Set => 1,
            Self::Sequence => 2,
            Self::ConfedSequence => 3,
            Self::ConfedSet => 4,
        }
    }
    fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            1 => Self::Set,
            2 => Self::Sequence,
            3 => Self::ConfedSequence,
            4 => Self::ConfedSet,
            _ => return None,
        })
    }
}

/// One AS_PATH segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AsSegment {
    /// Segment type.
    pub kind: SegmentType,
    /// AS numbers, always held as 4-octet values.
    pub asns: Vec<u32>,
}

/// An AS_PATH with 4-octet AS numbers (AS4_PATH already merged in).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct AsPath {
    /// Segments in wire order.
    pub segments: Vec<AsSegment>,
}

impl AsPath {
    /// A path of one AS_SEQUENCE.
    pub fn sequence(asns: impl IntoIterator<Item = u32>) -> Self {
        let asns: Vec<u32> = asns.into_iter().collect();
        if asns.is_empty() {
            return Self::default();
        }
        Self {
            segments: vec![AsSegment {
                kind: SegmentType::Sequence,
                asns,
            }],
        }
    }
    /// Path length as the decision process counts it (RFC 4271 §9.1.2.2 a): an
    /// AS_SET counts 1, confederation segments 0.
    pub fn len(&self) -> usize {
        self.segments
            .iter()
            .map(|s| match s.kind {
                SegmentType::Sequence => s.asns.len(),
                SegmentType::Set => 1,
                _ => 0,
            })
            .sum()
    }
    /// Whether the path has no ASes.
    pub fn is_empty(&self) -> bool {
        self.segments.iter().all(|s| s.asns.is_empty())
    }
    /// The neighbouring AS: first AS of a leading AS_SEQUENCE.
    pub fn neighbour_as(&self) -> Option<u32> {
        self.segments
            .iter()
            .find(|s| matches!(s.kind, SegmentType::Sequence | SegmentType::Set))
            .filter(|s| s.kind == SegmentType::Sequence)
            .and_then(|s| s.asns.first().copied())
    }
    /// Whether `asn` appears anywhere (loop detection).
    pub fn contains(&self, asn: u32) -> bool {
        self.segments.iter().any(|s| s.asns.contains(&asn))
    }
    /// Prepends `asn` as a speaker does when sending to an external peer.
    pub fn prepend(&mut self, asn: u32) {
        match self.segments.first_mut() {
            Some(s) if s.kind == SegmentType::Sequence && s.asns.len() < 255 => {
                s.asns.insert(0, asn)
            }
            _ => self.segments.insert(
                0,
                AsSegment {
                    kind: SegmentType::Sequence,
                    asns: vec![asn],
                },
            ),
        }
    }
}

/// A route's next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NextHop {
    /// IPv4 (NEXT_HOP attribute, or MP_REACH with a 4-octet next hop).
    V4(Ipv4Addr),
    /// IPv6 (MP_REACH): global and optional link-local (RFC 2545).
    V6 {
        /// Global (or, from some speakers, link-local) address.
        global: Ipv6Addr,
        /// Link-local address when the next-hop field was 32 octets.
        link_local: Option<Ipv6Addr>,
    },
}

/// A path attribute this speaker does not interpret, kept to be passed on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RawAttr {
    /// Flags as received (the Partial bit is set when passed on).
    pub flags: u8,
    /// Type code.
    pub code: u8,
    /// Value.
    pub value: Box<[u8]>,
}

/// All path attributes of a route except MP_REACH/MP_UNREACH.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct PathAttrs {
    /// ORIGIN.
    pub origin: Origin,
    /// AS_PATH (with AS4_PATH merged).
    pub as_path: AsPath,
    /// NEXT_HOP, or for IPv6 routes in the RIB the MP_REACH next hop.
    pub next_hop: Option<NextHop>,
    /// MULTI_EXIT_DISC.
    pub med: Option<u32>,
    /// LOCAL_PREF.
    pub local_pref: Option<u32>,
    /// ATOMIC_AGGREGATE.
    pub atomic_aggregate: bool,
    /// AGGREGATOR: AS (4-octet, AS4_AGGREGATOR merged) and address.
    pub aggregator: Option<(u32, Ipv4Addr)>,
    /// COMMUNITIES (RFC 1997).
    pub communities: Vec<u32>,
    /// ORIGINATOR_ID (RFC 4456).
    pub originator_id: Option<Ipv4Addr>,
    /// CLUSTER_LIST (RFC 4456).
    pub cluster_list: Vec<Ipv4Addr>,
    /// Unrecognised optional transitive attributes, sorted by type code.
    pub unknown: Vec<RawAttr>,
}

/// Decoded attribute section of an UPDATE.
pub(crate) struct DecodedAttrs {
    pub attrs: PathAttrs,
    pub mp_reach: Option<MpReach>,
    pub mp_unreach: Option<MpUnreach>,
    pub has_origin: bool,
    pub has_as_path: bool,
    pub has_next_hop: bool,
    pub any: bool,
    pub errors: Vec<AttrError>,
}

/// How an UPDATE error is contained (RFC 7606 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorAction {
    /// The UPDATE's NLRI are withdrawn as if listed as withdrawn routes.
    TreatAsWithdraw,
    /// The malformed attribute is ignored; the routes are used without it.
    AttributeDiscard,
}

/// An error in an UPDATE's attributes that did not reset the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrError {
    /// What was done about it.
    pub action: ErrorAction,
    /// The error, with the NOTIFICATION RFC 4271 would have sent (for logs).
    pub error: DecodeError,
}

fn err(sub: u8, reason: &'static str, attr: &[u8]) -> DecodeError {
    DecodeError::new(codes::UPDATE, sub, reason).with_data(attr)
}

fn u32_at(v: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([v[i], v[i + 1], v[i + 2], v[i + 3]])
}

fn parse_as_path(v: &[u8], four: bool) -> Option<AsPath> {
    let w = if four { 4 } else { 2 };
    let mut segments = Vec::new();
    let mut rest = v;
    while !rest.is_empty() {
        if rest.len() < 2 {
            return None;
        }
        let kind = SegmentType::from_code(rest[0])?;
        let n = usize::from(rest[1]);
        if n == 0 || rest.len() < 2 + n * w {
            return None;
        }
        let asns = rest[2..2 + n * w]
            .chunks_exact(w)
            .map(|c| {
                if four {
                    u32::from_be_bytes([c[0], c[1], c[2], c[3]])
                } else {
                    u32::from(u16::from_be_bytes([c[0], c[1]]))
                }
            })
            .collect();
        segments.push(AsSegment { kind, asns });
        rest = &rest[2 + n * w..];
    }
    Some(AsPath { segments })
}

/// RFC 6793 §4.2.3: rebuild the real path from AS_PATH (2-octet) and AS4_PATH.
fn merge_as4(as_path: AsPath, as4: AsPath) -> AsPath {
    let n2 = as_path.len();
    let n4 = as4.len();
    if n2 < n4 {
        return as_path;
    }
    let mut keep = n2 - n4;
    let mut segments = Vec::new();
    // Leading ASes of AS_PATH that AS4_PATH does not cover, and every confederation
    // segment (AS4_PATH carries none).
    for s in as_path.segments {
        match s.kind {
            SegmentType::Sequence if keep > 0 => {
                let take = keep.min(s.asns.len());
                keep -= take;
                segments.push(AsSegment {
                    kind: s.kind,
                    asns: s.asns[..take].to_vec(),
                });
            }
            SegmentType::Set if keep > 0 => {
                keep -= 1;
                segments.push(s);
            }
            SegmentType::ConfedSequence | SegmentType::ConfedSet => segments.push(s),
            _ => {}
        }
    }
    segments.extend(
        as4.segments
            .into_iter()
            .filter(|s| matches!(s.kind, SegmentType::Sequence | SegmentType::Set)),
    );
    // Adjacent sequences are one sequence; folding them makes the result the same
    // whichever way the two attributes split the path.
    let mut folded: Vec<AsSegment> = Vec::with_capacity(segments.len());
    for s in segments {
        match folded.last_mut() {
            Some(last)
                if last.kind == SegmentType::Sequence
                    && s.kind == SegmentType::Sequence
                    && last.asns.len() + s.asns.len() <= 255 =>
            {
                last.asns.extend(s.asns)
            }
            _ => folded.push(s),
        }
    }
    let segments = folded;
    AsPath { segments }
}

/// Records an RFC 7606 error; the first treat-as-withdraw wins the log line.
fn note(d: &mut DecodedAttrs, action: ErrorAction, e: DecodeError) {
    d.errors.push(AttrError { action, error: e });
}

/// Decodes the path attributes with RFC 7606 error handling: errors that RFC 7606
/// (and RFC 6793 for AS4_PATH/AS4_AGGREGATOR) allow to be contained are recorded in
/// [`DecodedAttrs::errors`] as treat-as-withdraw or attribute-discard and decoding
/// goes on; only errors that make the UPDATE's NLRI impossible to locate (a
/// malformed or repeated MP_REACH_NLRI/MP_UNREACH_NLRI) are returned as `Err`, for a
/// session reset.
pub(crate) fn decode_attrs(mut buf: &[u8], codec: Codec) -> Result<DecodedAttrs, DecodeError> {
    let mut a = PathAttrs::default();
    let mut seen = [0u64; 4];
    let (mut mp_reach, mut mp_unreach) = (None, None);
    let mut as4_path = None;
    let mut as4_aggr = None;
    let mut d = DecodedAttrs {
        attrs: PathAttrs::default(),
        mp_reach: None,
        mp_unreach: None,
        has_origin: false,
        has_as_path: false,
        has_next_hop: false,
        any: !buf.is_empty(),
        errors: Vec::new(),
    };
    let withdraw = ErrorAction::TreatAsWithdraw;
    let discard = ErrorAction::AttributeDiscard;
    while !buf.is_empty() {
        // RFC 7606 §4: an attribute header or length that overruns the attribute
        // section leaves the rest unparseable; the NLRI field and the MP attributes
        // found so far are still located, so treat-as-withdraw.
        let hdr_len = if buf[0] & FLAG_EXTENDED != 0 { 4 } else { 3 };
        if buf.len() < hdr_len {
            note(
                &mut d,
                withdraw,
                err(
                    codes::UPD_MALFORMED_ATTR_LIST,
                    "truncated attribute header",
                    &[],
                ),
            );
            break;
        }
        let flags = buf[0];
        let code = buf[1];
        let (hdr, len) = if hdr_len == 4 {
            (4, usize::from(u16::from_be_bytes([buf[2], buf[3]])))
        } else {
            (3, usize::from(buf[2]))
        };
        if buf.len() < hdr + len {
            note(
                &mut d,
                withdraw,
                err(
                    codes::UPD_ATTR_LENGTH,
                    "attribute longer than the attribute section",
                    &buf[..hdr],
                ),
            );
            break;
        }
        let whole = &buf[..hdr + len];
        let v = &buf[hdr..hdr + len];
        buf = &buf[hdr + len..];
        let bit = 1u64 << (code % 64);
        if seen[usize::from(code / 64)] & bit != 0 {
            // RFC 7606 §3 g: a repeated MP attribute resets the session; any other
            // repeated attribute is discarded after its first occurrence.
            if code == MP_REACH || code == MP_UNREACH {
                return Err(err(
                    codes::UPD_MALFORMED_ATTR_LIST,
                    "MP_REACH_NLRI or MP_UNREACH_NLRI appears twice",
                    &[],
                ));
            }
            note(
                &mut d,
                discard,
                err(
                    codes::UPD_MALFORMED_ATTR_LIST,
                    "attribute appears twice (later copy discarded)",
                    whole,
                ),
            );
            continue;
        }
        seen[usize::from(code / 64)] |= bit;

        let ot = flags & (FLAG_OPTIONAL | FLAG_TRANSITIVE);
        let expect = match code {
            ORIGIN | AS_PATH | NEXT_HOP | LOCAL_PREF | ATOMIC_AGGREGATE => Some(FLAG_TRANSITIVE),
            MED | ORIGINATOR_ID | CLUSTER_LIST | MP_REACH | MP_UNREACH => Some(FLAG_OPTIONAL),
            AGGREGATOR | COMMUNITIES | AS4_PATH | AS4_AGGREGATOR => {
                Some(FLAG_OPTIONAL | FLAG_TRANSITIVE)
            }
            _ => None,
        };
        // What a malformed instance of this attribute gets (RFC 7606 §7, RFC 6793 §6).
        let on_error = match code {
            ATOMIC_AGGREGATE | AGGREGATOR | AS4_PATH | AS4_AGGREGATOR => discard,
            _ => withdraw,
        };
        if let Some(e) = expect
            && ot != e
        {
            // RFC 7606 §3 c; the MP attributes must still be parsed (§5.3).
            note(
                &mut d,
                on_error,
                err(
                    codes::UPD_ATTR_FLAGS,
                    "attribute flags do not match its type",
                    whole,
                ),
            );
            if code != MP_REACH && code != MP_UNREACH {
                continue;
            }
        }
        let bad_len = || {
            err(
                codes::UPD_ATTR_LENGTH,
                "attribute has the wrong length",
                whole,
            )
        };
        match code {
            ORIGIN => {
                if v.len() != 1 {
                    note(&mut d, withdraw, bad_len());
                    continue;
                }
                a.origin = match v[0] {
                    0 => Origin::Igp,
                    1 => Origin::Egp,
                    2 => Origin::Incomplete,
                    _ => {
                        note(
                            &mut d,
                            withdraw,
                            err(codes::UPD_INVALID_ORIGIN, "invalid ORIGIN", whole),
                        );
                        continue;
                    }
                };
                d.has_origin = true;
            }
            AS_PATH => match parse_as_path(v, codec.four_octet_as) {
                Some(p) => {
                    a.as_path = p;
                    d.has_as_path = true;
                }
                None => note(
                    &mut d,
                    withdraw,
                    err(codes::UPD_MALFORMED_AS_PATH, "malformed AS_PATH", &[]),
                ),
            },
            NEXT_HOP => {
                if v.len() != 4 {
                    note(&mut d, withdraw, bad_len());
                    continue;
                }
                let nh = Ipv4Addr::new(v[0], v[1], v[2], v[3]);
                // RFC 7606 §7.3: a semantically invalid next hop.
                if nh.is_unspecified() || nh.is_multicast() || nh.is_broadcast() {
                    note(
                        &mut d,
                        withdraw,
                        err(codes::UPD_INVALID_NEXT_HOP, "invalid NEXT_HOP", whole),
                    );
                    continue;
                }
                a.next_hop = Some(NextHop::V4(nh));
                d.has_next_hop = true;
            }
            MED | LOCAL_PREF | ORIGINATOR_ID => {
                if v.len() != 4 {
                    note(&mut d, withdraw, bad_len());
                    continue;
                }
                let x = u32_at(v, 0);
                match code {
                    MED => a.med = Some(x),
                    LOCAL_PREF => a.local_pref = Some(x),
                    _ => a.originator_id = Some(Ipv4Addr::from(x)),
                }
            }
            ATOMIC_AGGREGATE => {
                if !v.is_empty() {
                    note(&mut d, discard, bad_len());
                    continue;
                }
                a.atomic_aggregate = true;
            }
            AGGREGATOR => {
                let w = if codec.four_octet_as { 8 } else { 6 };
                if v.len() != w {
                    note(&mut d, discard, bad_len());
                    continue;
                }
                let (asn, ip) = if codec.four_octet_as {
                    (u32_at(v, 0), u32_at(v, 4))
                } else {
                    (u32::from(u16::from_be_bytes([v[0], v[1]])), u32_at(v, 2))
                };
                a.aggregator = Some((asn, Ipv4Addr::from(ip)));
            }
            COMMUNITIES | CLUSTER_LIST => {
                // RFC 7606 §7.8, §7.10: a zero length or not a multiple of 4.
                if v.is_empty() || !v.len().is_multiple_of(4) {
                    note(&mut d, withdraw, bad_len());
                    continue;
                }
                let it = v
                    .chunks_exact(4)
                    .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
                if code == COMMUNITIES {
                    a.communities = it.collect();
                } else {
                    a.cluster_list = it.map(Ipv4Addr::from).collect();
                }
            }
            MP_REACH => mp_reach = MpReach::decode(v, whole)?,
            MP_UNREACH => mp_unreach = MpUnreach::decode(v, whole)?,
            AS4_PATH => {
                // A NEW speaker ignores AS4_PATH from a NEW speaker (RFC 6793 §4.2.2).
                if !codec.four_octet_as {
                    match parse_as_path(v, true) {
                        Some(p) => as4_path = Some(p),
                        None => note(
                            &mut d,
                            discard,
                            err(codes::UPD_OPTIONAL_ATTR, "malformed AS4_PATH", whole),
                        ),
                    }
                }
            }
            AS4_AGGREGATOR => {
                if v.len() != 8 {
                    note(&mut d, discard, bad_len());
                    continue;
                }
                if !codec.four_octet_as {
                    as4_aggr = Some((u32_at(v, 0), Ipv4Addr::from(u32_at(v, 4))));
                }
            }
            _ => {
                if flags & FLAG_OPTIONAL == 0 {
                    // An unrecognised well-known attribute: the route cannot be
                    // understood, but the session need not die for it (RFC 7606 §2).
                    note(
                        &mut d,
                        withdraw,
                        err(
                            codes::UPD_UNRECOGNIZED_WELL_KNOWN,
                            "unrecognized well-known attribute",
                            whole,
                        ),
                    );
                    continue;
                }
                if flags & FLAG_TRANSITIVE != 0 {
                    a.unknown.push(RawAttr {
                        flags: (flags & !FLAG_EXTENDED) | FLAG_PARTIAL,
                        code,
                        value: v.into(),
                    });
                }
            }
        }
    }
    if let Some(as4) = as4_path {
        a.as_path = merge_as4(std::mem::take(&mut a.as_path), as4);
    }
    if let (Some(aggr4), Some((asn, _))) = (as4_aggr, a.aggregator)
        && asn == u32::from(AS_TRANS)
    {
        a.aggregator = Some(aggr4);
    }
    a.unknown.sort_by_key(|r| r.code);
    d.attrs = a;
    d.mp_reach = mp_reach;
    d.mp_unreach = mp_unreach;
    Ok(d)
}

/// Appends one attribute with the extended-length flag iff it needs it.
pub(crate) fn put_attr(out: &mut Vec<u8>, flags: u8, code: u8, value: &[u8]) {
    if value.len() > 255 {
        out.push(flags | FLAG_EXTENDED);
        out.push(code);
        out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    } else {
        out.push(flags & !FLAG_EXTENDED);
        out.push(code);
        out.push(value.len() as u8);
    }
    out.extend_from_slice(value);
}

fn put_as_path(p: &AsPath, four: bool, v: &mut Vec<u8>) {
    v.clear();
    for s in &p.segments {
        for chunk in s.asns.chunks(255) {
            v.push(s.kind.code());
            v.push(chunk.len() as u8);
            for &asn in chunk {
                if four {
                    v.extend_from_slice(&asn.to_be_bytes());
                } else {
                    v.extend_from_slice(&u16::try_from(asn).unwrap_or(AS_TRANS).to_be_bytes());
                }
            }
        }
    }
}

/// Appends every attribute of `a` in type-code order. NEXT_HOP is written only if
/// `with_next_hop` and the next hop is IPv4 (IPv6 routes carry theirs in MP_REACH).
pub(crate) fn encode_attrs(a: &PathAttrs, codec: Codec, with_next_hop: bool, out: &mut Vec<u8>) {
    let four = codec.four_octet_as;
    let mut v = Vec::new();
    put_attr(out, FLAG_TRANSITIVE, ORIGIN, &[a.origin as u8]);
    put_as_path(&a.as_path, four, &mut v);
    put_attr(out, FLAG_TRANSITIVE, AS_PATH, &v);
    if with_next_hop && let Some(NextHop::V4(nh)) = a.next_hop {
        put_attr(out, FLAG_TRANSITIVE, NEXT_HOP, &nh.octets());
    }
    if let Some(m) = a.med {
        put_attr(out, FLAG_OPTIONAL, MED, &m.to_be_bytes());
    }
    if let Some(lp) = a.local_pref {
        put_attr(out, FLAG_TRANSITIVE, LOCAL_PREF, &lp.to_be_bytes());
    }
    if a.atomic_aggregate {
        put_attr(out, FLAG_TRANSITIVE, ATOMIC_AGGREGATE, &[]);
    }
    if let Some((asn, ip)) = a.aggregator {
        v.clear();
        if four {
            v.extend_from_slice(&asn.to_be_bytes());
        } else {
            v.extend_from_slice(&u16::try_from(asn).unwrap_or(AS_TRANS).to_be_bytes());
        }
        v.extend_from_slice(&ip.octets());
        put_attr(out, FLAG_OPTIONAL | FLAG_TRANSITIVE, AGGREGATOR, &v);
    }
    if !a.communities.is_empty() {
        v.clear();
        a.communities
            .iter()
            .for_each(|c| v.extend_from_slice(&c.to_be_bytes()));
        put_attr(out, FLAG_OPTIONAL | FLAG_TRANSITIVE, COMMUNITIES, &v);
    }
    if let Some(o) = a.originator_id {
        put_attr(out, FLAG_OPTIONAL, ORIGINATOR_ID, &o.octets());
    }
    if !a.cluster_list.is_empty() {
        v.clear();
        a.cluster_list
            .iter()
            .for_each(|c| v.extend_from_slice(&c.octets()));
        put_attr(out, FLAG_OPTIONAL, CLUSTER_LIST, &v);
    }
    if !four {
        let big = a
            .as_path
            .segments
            .iter()
            .any(|s| s.asns.iter().any(|&x| x > 0xffff));
        if big {
            let mut p = a.as_path.clone();
            p.segments
                .retain(|s| matches!(s.kind, SegmentType::Sequence | SegmentType::Set));
            put_as_path(&p, true, &mut v);
            put_attr(out, FLAG_OPTIONAL | FLAG_TRANSITIVE, AS4_PATH, &v);
        }
        if let Some((asn, ip)) = a.aggregator
            && asn > 0xffff
        {
            v.clear();
            v.extend_from_slice(&asn.to_be_bytes());
            v.extend_from_slice(&ip.octets());
            put_attr(out, FLAG_OPTIONAL | FLAG_TRANSITIVE, AS4_AGGREGATOR, &v);
        }
    }
    for r in &a.unknown {
        put_attr(out, r.flags, r.code, &r.value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_set_counts_one_and_confederation_segments_count_zero() {
        let p = AsPath {
            segments: vec![
                AsSegment {
                    kind: SegmentType::ConfedSequence,
                    asns: vec![1, 2],
                },
                AsSegment {
                    kind: SegmentType::Sequence,
                    asns: vec![3, 4],
                },
                AsSegment {
                    kind: SegmentType::Set,
                    asns: vec![5, 6, 7],
                },
            ],
        };
        assert_eq!(p.len(), 3);
        assert_eq!(p.neighbour_as(), Some(3));
    }

    #[test]
    fn as4_path_restores_large_asns_behind_as_trans() {
        let two = AsPath::sequence([65001, u32::from(AS_TRANS), 65002]);
        let four = AsPath::sequence([4_200_000_000, 65002]);
        assert_eq!(
            merge_as4(two, four),
            AsPath::sequence([65001, 4_200_000_000, 65002])
        );
    }

    #[test]
    fn prepend_extends_a_leading_sequence() {
        let mut p = AsPath::sequence([2, 3]);
        p.prepend(1);
        assert_eq!(p, AsPath::sequence([1, 2, 3]));
        let mut e = AsPath::default();
        e.prepend(9);
        assert_eq!(e, AsPath::sequence([9]));
    }

    #[test]
    fn two_octet_session_encodes_as_trans_and_as4_path() {
        let a = PathAttrs {
            as_path: AsPath::sequence([4_200_000_000, 65001]),
            next_hop: Some(NextHop::V4(Ipv4Addr::new(198, 18, 0, 2))),
            ..PathAttrs::default()
        };
        let codec = Codec {
            four_octet_as: false,
        };
        let mut out = Vec::new();
        encode_attrs(&a, codec, true, &mut out);
        let d = decode_attrs(&out, codec).unwrap();
        assert_eq!(d.attrs, a);
    }
}
