//! OPEN message and capabilities (RFC 4271 §4.2, RFC 5492, RFC 4760, RFC 6793,
//! RFC 2918, RFC 4724, RFC 9072 extended optional parameters).

use std::net::Ipv4Addr;

use super::error::{DecodeError, codes};

/// AS number placed in 2-octet fields by a speaker whose AS does not fit (RFC 6793).
pub const AS_TRANS: u16 = 23456;

/// Address family identifier.
pub type Afi = u16;
/// Subsequent address family identifier.
pub type Safi = u8;

/// The address families this speaker carries.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// AFI 1 SAFI 1 (`ipv4-unicast`).
    Ipv4Unicast,
    /// AFI 2 SAFI 1 (`ipv6-unicast`).
    Ipv6Unicast,
}

impl Family {
    /// Both families.
    pub const ALL: [Family; 2] = [Family::Ipv4Unicast, Family::Ipv6Unicast];
    /// From AFI/SAFI, if supported.
    pub fn from_afi_safi(afi: Afi, safi: Safi) -> Option<Self> {
        match (afi, safi) {
            (1, 1) => Some(Family::Ipv4Unicast),
            (2, 1) => Some(Family::Ipv6Unicast),
            _ => None,
        }
    }
    /// AFI/SAFI of this family.
    pub fn afi_safi(self) -> (Afi, Safi) {
        match self {
            Family::Ipv4Unicast => (1, 1),
            Family::Ipv6Unicast => (2, 1),
        }
    }
}

/// Graceful restart capability (RFC 4724), parsed so that issue 8 can act on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GracefulRestartCap {
    /// Restart flags (high 4 bits of the first octet: R = 0x8, N = 0x4 per RFC 8538).
    pub flags: u8,
    /// Restart time in seconds (12 bits).
    pub restart_time: u16,
    /// Per family: AFI, SAFI, flags (F bit = 0x80).
    pub families: Vec<(Afi, Safi, u8)>,
}

impl GracefulRestartCap {
    /// Restart State (R) flag, in [`GracefulRestartCap::flags`].
    pub const RESTART: u8 = 0x8;
    /// Graceful Notification (N) flag of RFC 8538, in [`GracefulRestartCap::flags`].
    pub const NOTIFICATION: u8 = 0x4;
    /// Forwarding State (F) flag, in a family's flags.
    pub const FORWARDING: u8 = 0x80;
    /// Largest restart time the 12-bit field holds.
    pub const MAX_RESTART_TIME: u16 = 0x0fff;

    /// The capability this speaker advertises: `restarting` sets R, `notification`
    /// the N bit; every family in `families` is listed with F = `forwarding`.
    pub fn new(
        restart_time: u16,
        restarting: bool,
        notification: bool,
        families: &[Family],
        forwarding: bool,
    ) -> Self {
        let mut flags = 0;
        if restarting {
            flags |= Self::RESTART;
        }
        if notification {
            flags |= Self::NOTIFICATION;
        }
        Self {
            flags,
            restart_time: restart_time.min(Self::MAX_RESTART_TIME),
            families: families
                .iter()
                .map(|f| {
                    let (afi, safi) = f.afi_safi();
                    (afi, safi, if forwarding { Self::FORWARDING } else { 0 })
                })
                .collect(),
        }
    }
    /// The R bit: the sender has restarted.
    pub fn restarting(&self) -> bool {
        self.flags & Self::RESTART != 0
    }
    /// The N bit (RFC 8538): NOTIFICATIONs other than Hard Reset keep GR.
    pub fn notification(&self) -> bool {
        self.flags & Self::NOTIFICATION != 0
    }
    /// For a listed family, whether its forwarding state was preserved (F bit);
    /// `None` if the family is not listed (its routes are not retained).
    pub fn forwarding(&self, f: Family) -> Option<bool> {
        let (afi, safi) = f.afi_safi();
        self.families
            .iter()
            .find(|(a, s, _)| *a == afi && *s == safi)
            .map(|(_, _, fl)| fl & Self::FORWARDING != 0)
    }
}

/// A capability advertised in OPEN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capability {
    /// Multiprotocol extensions (code 1).
    Multiprotocol(Afi, Safi),
    /// Route refresh (code 2).
    RouteRefresh,
    /// Graceful restart (code 64).
    GracefulRestart(GracefulRestartCap),
    /// 4-octet AS number (code 65).
    FourOctetAs(u32),
    /// Enhanced route refresh (code 70, RFC 7313).
    EnhancedRouteRefresh,
    /// Anything else, kept as received.
    Unknown {
        /// Capability code.
        code: u8,
        /// Capability value.
        value: Vec<u8>,
    },
}

/// An OPEN message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// BGP version (4).
    pub version: u8,
    /// The 2-octet "My Autonomous System" field (AS_TRANS for large ASNs).
    pub my_as: u16,
    /// Proposed hold time in seconds.
    pub hold_time: u16,
    /// BGP identifier.
    pub bgp_id: Ipv4Addr,
    /// Capabilities, in the order received.
    pub capabilities: Vec<Capability>,
}

impl Open {
    /// Builds the OPEN this speaker sends: version 4, capabilities for `families`,
    /// 4-octet AS, route refresh (plus any `extra`, e.g. graceful restart).
    pub fn new(asn: u32, hold_time: u16, bgp_id: Ipv4Addr, families: &[Family]) -> Self {
        let mut capabilities: Vec<Capability> = families
            .iter()
            .map(|f| {
                let (afi, safi) = f.afi_safi();
                Capability::Multiprotocol(afi, safi)
            })
            .collect();
        capabilities.push(Capability::RouteRefresh);
        capabilities.push(Capability::FourOctetAs(asn));
        Self {
            version: 4,
            my_as: u16::try_from(asn).unwrap_or(AS_TRANS),
            hold_time,
            bgp_id,
            capabilities,
        }
    }

    /// The sender's AS: the 4-octet capability if present, else the 2-octet field.
    pub fn asn(&self) -> u32 {
        self.capabilities
            .iter()
            .find_map(|c| match c {
                Capability::FourOctetAs(a) => Some(*a),
                _ => None,
            })
            .unwrap_or(u32::from(self.my_as))
    }

    /// Whether the 4-octet AS capability is present.
    pub fn four_octet_as(&self) -> bool {
        self.capabilities
            .iter()
            .any(|c| matches!(c, Capability::FourOctetAs(_)))
    }

    /// Whether route refresh (RFC 2918) is advertised.
    pub fn route_refresh(&self) -> bool {
        self.capabilities
            .iter()
            .any(|c| matches!(c, Capability::RouteRefresh))
    }

    /// Supported families advertised with the multiprotocol capability. A speaker
    /// that sends no multiprotocol capability at all implicitly carries IPv4 unicast
    /// only (RFC 4760 §8).
    pub fn families(&self) -> Vec<Family> {
        let mp: Vec<(Afi, Safi)> = self
            .capabilities
            .iter()
            .filter_map(|c| match c {
                Capability::Multiprotocol(a, s) => Some((*a, *s)),
                _ => None,
            })
            .collect();
        if mp.is_empty() {
            return vec![Family::Ipv4Unicast];
        }
        let mut f: Vec<Family> = mp
            .into_iter()
            .filter_map(|(a, s)| Family::from_afi_safi(a, s))
            .collect();
        f.sort();
        f.dedup();
        f
    }

    /// The graceful restart capability, if advertised.
    pub fn graceful_restart(&self) -> Option<&GracefulRestartCap> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::GracefulRestart(g) => Some(g),
            _ => None,
        })
    }

    pub(crate) fn decode(body: &[u8]) -> Result<Open, DecodeError> {
        let bad_len = || DecodeError::new(codes::HEADER, codes::HDR_BAD_LENGTH, "OPEN too short");
        if body.len() < 10 {
            return Err(bad_len());
        }
        let version = body[0];
        if version != 4 {
            return Err(DecodeError::new(
                codes::OPEN,
                codes::OPEN_UNSUPPORTED_VERSION,
                "unsupported BGP version",
            )
            .with_data(&[0, 4]));
        }
        let my_as = u16::from_be_bytes([body[1], body[2]]);
        let hold_time = u16::from_be_bytes([body[3], body[4]]);
        let bgp_id = Ipv4Addr::new(body[5], body[6], body[7], body[8]);
        let mut opt_len = usize::from(body[9]);
        let mut rest = &body[10..];
        let mut extended = false;
        // RFC 9072: a non-extended length of 255 followed by type 255 introduces a
        // 2-octet length and 2-octet parameter lengths.
        if opt_len == 255 && rest.first() == Some(&255) {
            if rest.len() < 3 {
                return Err(bad_len());
            }
            opt_len = usize::from(u16::from_be_bytes([rest[1], rest[2]]));
            rest = &rest[3..];
            extended = true;
        }
        if rest.len() != opt_len {
            return Err(DecodeError::new(
                codes::OPEN,
                codes::OPEN_UNSUPPORTED_PARAM,
                "optional parameters length mismatch",
            ));
        }
        let mut capabilities = Vec::new();
        while !rest.is_empty() {
            let (ty, len, hdr) = if extended {
                if rest.len() < 3 {
                    return Err(malformed_params());
                }
                (
                    rest[0],
                    usize::from(u16::from_be_bytes([rest[1], rest[2]])),
                    3,
                )
            } else {
                if rest.len() < 2 {
                    return Err(malformed_params());
                }
                (rest[0], usize::from(rest[1]), 2)
            };
            if rest.len() < hdr + len {
                return Err(malformed_params());
            }
            let value = &rest[hdr..hdr + len];
            rest = &rest[hdr + len..];
            if ty != 2 {
                return Err(DecodeError::new(
                    codes::OPEN,
                    codes::OPEN_UNSUPPORTED_PARAM,
                    "unsupported optional parameter",
                ));
            }
            decode_capabilities(value, &mut capabilities)?;
        }
        Ok(Open {
            version,
            my_as,
            hold_time,
            bgp_id,
            capabilities,
        })
    }

    pub(crate) fn encode_body(&self, out: &mut Vec<u8>) {
        out.push(self.version);
        out.extend_from_slice(&self.my_as.to_be_bytes());
        out.extend_from_slice(&self.hold_time.to_be_bytes());
        out.extend_from_slice(&self.bgp_id.octets());
        let mut caps = Vec::new();
        for c in &self.capabilities {
            encode_capability(c, &mut caps);
        }
        // One capabilities parameter per capability keeps every parameter short
        // (no RFC 9072 needed below 255 octets in total).
        let len_at = out.len();
        out.push(0);
        let mut params = Vec::new();
        let mut rest = caps.as_slice();
        while !rest.is_empty() {
            let clen = 2 + usize::from(rest[1]);
            params.push(2u8);
            params.push(clen as u8);
            params.extend_from_slice(&rest[..clen]);
            rest = &rest[clen..];
        }
        if params.len() < 255 {
            out[len_at] = params.len() as u8;
            out.extend_from_slice(&params);
        } else {
            out[len_at] = 255;
            out.push(255);
            out.extend_from_slice(&((caps.len() + 3) as u16).to_be_bytes());
            out.push(2);
            out.extend_from_slice(&(caps.len() as u16).to_be_bytes());
            out.extend_from_slice(&caps);
        }
    }
}

fn malformed_params() -> DecodeError {
    DecodeError::new(
        codes::OPEN,
        codes::OPEN_UNSUPPORTED_PARAM,
        "malformed optional parameter",
    )
}

fn decode_capabilities(mut buf: &[u8], out: &mut Vec<Capability>) -> Result<(), DecodeError> {
    while !buf.is_empty() {
        if buf.len() < 2 || buf.len() < 2 + usize::from(buf[1]) {
            return Err(malformed_params());
        }
        let code = buf[0];
        let v = &buf[2..2 + usize::from(buf[1])];
        buf = &buf[2 + v.len()..];
        let bad = || {
            DecodeError::new(
                codes::OPEN,
                codes::OPEN_UNSUPPORTED_PARAM,
                "malformed capability",
            )
        };
        out.push(match code {
            1 => {
                if v.len() != 4 {
                    return Err(bad());
                }
                Capability::Multiprotocol(u16::from_be_bytes([v[0], v[1]]), v[3])
            }
            2 => Capability::RouteRefresh,
            64 => {
                if v.len() < 2 || !(v.len() - 2).is_multiple_of(4) {
                    return Err(bad());
                }
                let families = v[2..]
                    .chunks_exact(4)
                    .map(|c| (u16::from_be_bytes([c[0], c[1]]), c[2], c[3]))
                    .collect();
                Capability::GracefulRestart(GracefulRestartCap {
                    flags: v[0] >> 4,
                    restart_time: u16::from_be_bytes([v[0] & 0x0f, v[1]]),
                    families,
                })
            }
            65 => {
                if v.len() != 4 {
                    return Err(bad());
                }
                Capability::FourOctetAs(u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
            }
            70 => Capability::EnhancedRouteRefresh,
            _ => Capability::Unknown {
                code,
                value: v.to_vec(),
            },
        });
    }
    Ok(())
}

fn encode_capability(c: &Capability, out: &mut Vec<u8>) {
    match c {
        Capability::Multiprotocol(afi, safi) => {
            out.extend_from_slice(&[1, 4]);
            out.extend_from_slice(&afi.to_be_bytes());
            out.extend_from_slice(&[0, *safi]);
        }
        Capability::RouteRefresh => out.extend_from_slice(&[2, 0]),
        Capability::GracefulRestart(g) => {
            out.push(64);
            out.push((2 + 4 * g.families.len()) as u8);
            let t = g.restart_time & 0x0fff;
            out.push((g.flags << 4) | (t >> 8) as u8);
            out.push(t as u8);
            for (afi, safi, fl) in &g.families {
                out.extend_from_slice(&afi.to_be_bytes());
                out.extend_from_slice(&[*safi, *fl]);
            }
        }
        Capability::FourOctetAs(a) => {
            out.extend_from_slice(&[65, 4]);
            out.extend_from_slice(&a.to_be_bytes());
        }
        Capability::EnhancedRouteRefresh => out.extend_from_slice(&[70, 0]),
        Capability::Unknown { code, value } => {
            out.push(*code);
            out.push(value.len().min(255) as u8);
            out.extend_from_slice(&value[..value.len().min(255)]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Codec, Message};

    #[test]
    fn open_round_trips_with_every_capability() {
        let mut o = Open::new(
            4_200_000_000,
            90,
            Ipv4Addr::new(198, 18, 0, 1),
            &Family::ALL,
        );
        o.capabilities
            .push(Capability::GracefulRestart(GracefulRestartCap {
                flags: 0x8,
                restart_time: 120,
                families: vec![(1, 1, 0x80), (2, 1, 0x80)],
            }));
        o.capabilities.push(Capability::Unknown {
            code: 73,
            value: b"host".to_vec(),
        });
        assert_eq!(o.my_as, AS_TRANS);
        let b = Message::Open(o.clone()).to_bytes(Codec::default());
        assert_eq!(
            Message::decode(&b, Codec::default()).unwrap(),
            Message::Open(o.clone())
        );
        assert_eq!(o.asn(), 4_200_000_000);
        assert_eq!(o.families(), vec![Family::Ipv4Unicast, Family::Ipv6Unicast]);
    }

    #[test]
    fn version_3_is_refused_with_supported_version_4() {
        let mut b = Message::Open(Open::new(64512, 90, Ipv4Addr::new(1, 1, 1, 1), &[]))
            .to_bytes(Codec::default());
        b[19] = 3;
        let e = Message::decode(&b, Codec::default()).unwrap_err();
        assert_eq!(
            (e.code, e.subcode, e.data.as_slice()),
            (2, 1, &[0u8, 4][..])
        );
    }

    #[test]
    fn unknown_optional_parameter_is_unsupported_parameter() {
        let o = Open {
            version: 4,
            my_as: 1,
            hold_time: 90,
            bgp_id: Ipv4Addr::new(1, 1, 1, 1),
            capabilities: vec![],
        };
        let mut b = Message::Open(o).to_bytes(Codec::default());
        b.extend_from_slice(&[7, 0]);
        b[28] = 2;
        b[17] = b.len() as u8;
        let e = Message::decode(&b, Codec::default()).unwrap_err();
        assert_eq!((e.code, e.subcode), (2, 4));
    }

    #[test]
    fn extended_optional_parameters_decode() {
        // RFC 9072 encoding: 255, 255, len16, then type 2 + len16 + capabilities.
        let o = Open::new(64512, 90, Ipv4Addr::new(1, 1, 1, 1), &[Family::Ipv4Unicast]);
        let mut caps = Vec::new();
        for c in &o.capabilities {
            encode_capability(c, &mut caps);
        }
        let mut body = vec![4, 0xfc, 0, 0, 90, 1, 1, 1, 1, 255, 255];
        body.extend_from_slice(&((caps.len() + 3) as u16).to_be_bytes());
        body.push(2);
        body.extend_from_slice(&(caps.len() as u16).to_be_bytes());
        body.extend_from_slice(&caps);
        let d = Open::decode(&body).unwrap();
        assert_eq!(d.capabilities, o.capabilities);
    }

    #[test]
    fn no_multiprotocol_capability_means_ipv4_unicast_only() {
        let o = Open {
            version: 4,
            my_as: 1,
            hold_time: 90,
            bgp_id: Ipv4Addr::new(1, 1, 1, 1),
            capabilities: vec![],
        };
        assert_eq!(o.families(), vec![Family::Ipv4Unicast]);
        assert_eq!(o.asn(), 1);
    }
}
