//! Compact prefixes and their NLRI encoding (RFC 4271 §4.3, RFC 4760 §5).
//!
//! A prefix is stored as an integer and a length (8 octets for IPv4, 24 for IPv6
//! because of `u128` alignment) with the host bits always zero, so that equal
//! prefixes compare and hash equal whatever the wire carried.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// An IPv4 prefix: network bits in a `u32` (host bits zero) and a length 0..=32.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix4 {
    addr: u32,
    len: u8,
}

/// An IPv6 prefix: network bits in a `u128` (host bits zero) and a length 0..=128.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix6 {
    addr: u128,
    len: u8,
}

/// Either family's prefix.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum Prefix {
    /// IPv4 unicast.
    V4(Prefix4),
    /// IPv6 unicast.
    V6(Prefix6),
}

fn mask4(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

fn mask6(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

impl Prefix4 {
    /// Builds a prefix, clearing host bits; `None` if `len > 32`.
    pub fn new(addr: Ipv4Addr, len: u8) -> Option<Self> {
        (len <= 32).then(|| Self {
            addr: u32::from(addr) & mask4(len),
            len,
        })
    }
    /// Network address.
    pub fn addr(self) -> Ipv4Addr {
        Ipv4Addr::from(self.addr)
    }
    /// Prefix length.
    pub fn len(self) -> u8 {
        self.len
    }
    /// Whether this is the default route (`0.0.0.0/0`).
    pub fn is_empty(self) -> bool {
        self.len == 0
    }
    /// Network bits as an integer.
    pub fn bits(self) -> u32 {
        self.addr
    }
    /// Whether `other` lies within this prefix (or equals it).
    pub fn contains(self, other: Prefix4) -> bool {
        other.len >= self.len && other.addr & mask4(self.len) == self.addr
    }
}

impl Prefix6 {
    /// Builds a prefix, clearing host bits; `None` if `len > 128`.
    pub fn new(addr: Ipv6Addr, len: u8) -> Option<Self> {
        (len <= 128).then(|| Self {
            addr: u128::from(addr) & mask6(len),
            len,
        })
    }
    /// Network address.
    pub fn addr(self) -> Ipv6Addr {
        Ipv6Addr::from(self.addr)
    }
    /// Prefix length.
    pub fn len(self) -> u8 {
        self.len
    }
    /// Whether this is the default route (`::/0`).
    pub fn is_empty(self) -> bool {
        self.len == 0
    }
    /// Whether `other` lies within this prefix (or equals it).
    pub fn contains(self, other: Prefix6) -> bool {
        other.len >= self.len && other.addr & mask6(self.len) == self.addr
    }
}

impl Prefix {
    /// Prefix length.
    pub fn len(self) -> u8 {
        match self {
            Prefix::V4(p) => p.len(),
            Prefix::V6(p) => p.len(),
        }
    }
    /// Whether this is a default route.
    pub fn is_empty(self) -> bool {
        self.len() == 0
    }
    /// Network address.
    pub fn addr(self) -> IpAddr {
        match self {
            Prefix::V4(p) => IpAddr::V4(p.addr()),
            Prefix::V6(p) => IpAddr::V6(p.addr()),
        }
    }
    /// Whether `other` is of the same family and lies within this prefix.
    pub fn contains(self, other: Prefix) -> bool {
        match (self, other) {
            (Prefix::V4(a), Prefix::V4(b)) => a.contains(b),
            (Prefix::V6(a), Prefix::V6(b)) => a.contains(b),
            _ => false,
        }
    }
}

impl fmt::Display for Prefix4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr(), self.len)
    }
}
impl fmt::Debug for Prefix4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
impl fmt::Display for Prefix6 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr(), self.len)
    }
}
impl fmt::Debug for Prefix6 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Prefix::V4(p) => p.fmt(f),
            Prefix::V6(p) => p.fmt(f),
        }
    }
}

impl From<Ipv4Net> for Prefix4 {
    fn from(n: Ipv4Net) -> Self {
        Self {
            addr: u32::from(n.network()),
            len: n.prefix_len(),
        }
    }
}
impl From<Ipv6Net> for Prefix6 {
    fn from(n: Ipv6Net) -> Self {
        Self {
            addr: u128::from(n.network()),
            len: n.prefix_len(),
        }
    }
}
impl From<IpNet> for Prefix {
    fn from(n: IpNet) -> Self {
        match n {
            IpNet::V4(n) => Prefix::V4(n.into()),
            IpNet::V6(n) => Prefix::V6(n.into()),
        }
    }
}
impl From<Prefix> for IpNet {
    fn from(p: Prefix) -> Self {
        match p {
            // Lengths are validated at construction, so these cannot fail.
            Prefix::V4(p) => IpNet::V4(Ipv4Net::new(p.addr(), p.len).unwrap_or_default()),
            Prefix::V6(p) => IpNet::V6(Ipv6Net::new(p.addr(), p.len).unwrap_or_default()),
        }
    }
}
impl From<Prefix4> for Prefix {
    fn from(p: Prefix4) -> Self {
        Prefix::V4(p)
    }
}
impl From<Prefix6> for Prefix {
    fn from(p: Prefix6) -> Self {
        Prefix::V6(p)
    }
}

/// Octets an NLRI entry of this length takes on the wire (length octet included).
pub fn nlri_len(len: u8) -> usize {
    1 + usize::from(len).div_ceil(8)
}

/// Appends `p` as an NLRI entry.
pub fn put_prefix4(out: &mut Vec<u8>, p: Prefix4) {
    out.push(p.len);
    let bytes = p.addr.to_be_bytes();
    out.extend_from_slice(&bytes[..usize::from(p.len).div_ceil(8)]);
}

/// Appends `p` as an NLRI entry.
pub fn put_prefix6(out: &mut Vec<u8>, p: Prefix6) {
    out.push(p.len);
    let bytes = p.addr.to_be_bytes();
    out.extend_from_slice(&bytes[..usize::from(p.len).div_ceil(8)]);
}

/// Why an NLRI field could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadNlri;

/// Parses a run of IPv4 NLRI entries. Host bits set on the wire are cleared.
pub fn parse_prefixes4(mut buf: &[u8], out: &mut Vec<Prefix4>) -> Result<(), BadNlri> {
    while let Some((&len, rest)) = buf.split_first() {
        if len > 32 {
            return Err(BadNlri);
        }
        let n = usize::from(len).div_ceil(8);
        if rest.len() < n {
            return Err(BadNlri);
        }
        let mut b = [0u8; 4];
        b[..n].copy_from_slice(&rest[..n]);
        out.push(Prefix4 {
            addr: u32::from_be_bytes(b) & mask4(len),
            len,
        });
        buf = &rest[n..];
    }
    Ok(())
}

/// Parses a run of IPv6 NLRI entries. Host bits set on the wire are cleared.
pub fn parse_prefixes6(mut buf: &[u8], out: &mut Vec<Prefix6>) -> Result<(), BadNlri> {
    while let Some((&len, rest)) = buf.split_first() {
        if len > 128 {
            return Err(BadNlri);
        }
        let n = usize::from(len).div_ceil(8);
        if rest.len() < n {
            return Err(BadNlri);
        }
        let mut b = [0u8; 16];
        b[..n].copy_from_slice(&rest[..n]);
        out.push(Prefix6 {
            addr: u128::from_be_bytes(b) & mask6(len),
            len,
        });
        buf = &rest[n..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_bits_are_cleared_at_construction() {
        let p = Prefix4::new(Ipv4Addr::new(100, 64, 1, 77), 24).unwrap();
        assert_eq!(p.to_string(), "100.64.1.0/24");
        assert_eq!(p, Prefix4::new(Ipv4Addr::new(100, 64, 1, 0), 24).unwrap());
    }

    #[test]
    fn nlri_round_trips_for_every_length() {
        for len in 0..=32u8 {
            let p = Prefix4::new(Ipv4Addr::new(255, 255, 255, 255), len).unwrap();
            let mut buf = Vec::new();
            put_prefix4(&mut buf, p);
            assert_eq!(buf.len(), nlri_len(len));
            let mut out = Vec::new();
            parse_prefixes4(&buf, &mut out).unwrap();
            assert_eq!(out, vec![p]);
        }
        for len in 0..=128u8 {
            let p = Prefix6::new(Ipv6Addr::from(u128::MAX), len).unwrap();
            let mut buf = Vec::new();
            put_prefix6(&mut buf, p);
            let mut out = Vec::new();
            parse_prefixes6(&buf, &mut out).unwrap();
            assert_eq!(out, vec![p]);
        }
    }

    #[test]
    fn truncated_or_overlong_nlri_is_rejected() {
        assert_eq!(parse_prefixes4(&[24, 10, 0], &mut Vec::new()), Err(BadNlri));
        assert_eq!(
            parse_prefixes4(&[33, 1, 1, 1, 1, 1], &mut Vec::new()),
            Err(BadNlri)
        );
        assert_eq!(parse_prefixes6(&[129], &mut Vec::new()), Err(BadNlri));
    }

    #[test]
    fn containment_respects_lengths() {
        let a: Prefix = "100.64.0.0/10".parse::<IpNet>().unwrap().into();
        let b: Prefix = "100.64.3.0/24".parse::<IpNet>().unwrap().into();
        assert!(a.contains(b));
        assert!(!b.contains(a));
    }
}
