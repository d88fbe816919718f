//! BGP-4 wire codec: RFC 4271 messages, RFC 4760 multiprotocol, RFC 6793 4-octet AS,
//! RFC 2918 route refresh.
//!
//! # Why our own codec
//!
//! The issue allowed `netgauze-bgp-pkt` behind this module. We wrote the codec instead
//! because the speaker's hot path is *packing*: one attribute block encoded once per
//! update group and followed by as many NLRI as fit in 4,096 octets, written straight
//! into a buffer shared by every member of the group (see [`pack`]). netgauze builds
//! an owned message tree per UPDATE (a `Vec` of attributes and a `Vec` of NLRI, each
//! prefix an `Ipv4Net` wrapper) which we would then have to serialise again; its
//! decoder likewise allocates per attribute where we decode straight into the compact,
//! hashable [`PathAttrs`] that the RIB interns. The codec is ~1,500 lines, covers
//! every attribute the issue lists, preserves unknown optional transitive attributes
//! (with the Partial bit set, RFC 4271 §5), and maps every decode error to the
//! NOTIFICATION code/subcode of RFC 4271 §6 ([`DecodeError`]). It is checked by
//! round-trip property tests, golden byte strings and, in the interop tests, by
//! BIRD, GoBGP and FRR.

mod attrs;
mod error;
mod message;
mod open;
pub mod pack;
mod prefix;
mod update;

pub use attrs::{
    AsPath, AsSegment, AttrError, ErrorAction, NextHop, Origin, PathAttrs, RawAttr, SegmentType,
};
pub use error::{DecodeError, codes};
pub use message::{
    Codec, HEADER_LEN, MAX_MESSAGE_LEN, Message, MessageType, Notification, RouteRefresh, frame,
};
pub use open::{AS_TRANS, Afi, Capability, Family, GracefulRestartCap, Open, Safi};
pub use pack::end_of_rib as end_of_rib_into;
pub use prefix::{
    BadNlri, Prefix, Prefix4, Prefix6, nlri_len, parse_prefixes4, parse_prefixes6, put_prefix4,
    put_prefix6,
};
pub use update::{MpNlri, MpReach, MpUnreach, Update};

#[cfg(test)]
mod proptests;
