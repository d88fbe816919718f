//! Message framing (RFC 4271 §4.1) and the small messages: KEEPALIVE, NOTIFICATION,
//! ROUTE-REFRESH.

use std::fmt;

use super::error::{DecodeError, codes};
use super::open::Open;
use super::update::Update;

/// Length of the common header: 16-octet marker, 2-octet length, 1-octet type.
pub const HEADER_LEN: usize = 19;
/// Largest message without RFC 8654 extended messages.
pub const MAX_MESSAGE_LEN: usize = 4096;

/// Per-session decoding and encoding context: what the capabilities negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Codec {
    /// Both sides advertised 4-octet AS numbers (RFC 6793): AS_PATH carries 4-octet ASNs.
    pub four_octet_as: bool,
}

impl Default for Codec {
    fn default() -> Self {
        Self {
            four_octet_as: true,
        }
    }
}

/// Message type codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// OPEN (1).
    Open,
    /// UPDATE (2).
    Update,
    /// NOTIFICATION (3).
    Notification,
    /// KEEPALIVE (4).
    Keepalive,
    /// ROUTE-REFRESH (5, RFC 2918).
    RouteRefresh,
}

impl MessageType {
    fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            1 => Self::Open,
            2 => Self::Update,
            3 => Self::Notification,
            4 => Self::Keepalive,
            5 => Self::RouteRefresh,
            _ => return None,
        })
    }
    /// The type code on the wire.
    pub fn code(self) -> u8 {
        match self {
            Self::Open => 1,
            Self::Update => 2,
            Self::Notification => 3,
            Self::Keepalive => 4,
            Self::RouteRefresh => 5,
        }
    }
}

/// A BGP message.
// Messages are transient (decoded, acted on, dropped), so the size of the UPDATE
// variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// OPEN.
    Open(Open),
    /// UPDATE.
    Update(Update),
    /// NOTIFICATION.
    Notification(Notification),
    /// KEEPALIVE.
    Keepalive,
    /// ROUTE-REFRESH.
    RouteRefresh(RouteRefresh),
}

/// A NOTIFICATION message (RFC 4271 §4.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Error code.
    pub code: u8,
    /// Error subcode.
    pub subcode: u8,
    /// Data, meaning depends on code and subcode.
    pub data: Vec<u8>,
}

impl Notification {
    /// A NOTIFICATION without data.
    pub fn new(code: u8, subcode: u8) -> Self {
        Self {
            code,
            subcode,
            data: Vec::new(),
        }
    }
    /// Cease with a subcode (RFC 4486).
    pub fn cease(subcode: u8) -> Self {
        Self::new(codes::CEASE, subcode)
    }
    /// An RFC 8538 Hard Reset carrying `inner` (e.g. Cease/administrative shutdown).
    pub fn hard_reset(inner: &Notification) -> Self {
        let mut data = vec![inner.code, inner.subcode];
        data.extend_from_slice(&inner.data);
        Self {
            code: codes::CEASE,
            subcode: codes::CEASE_HARD_RESET,
            data,
        }
    }
    /// Whether this is an RFC 8538 Hard Reset.
    pub fn is_hard_reset(&self) -> bool {
        self.code == codes::CEASE && self.subcode == codes::CEASE_HARD_RESET
    }
    /// Human-readable name of the code and subcode.
    pub fn describe(&self) -> &'static str {
        use codes::*;
        match (self.code, self.subcode) {
            (HEADER, HDR_NOT_SYNCHRONIZED) => "header error: connection not synchronized",
            (HEADER, HDR_BAD_LENGTH) => "header error: bad message length",
            (HEADER, HDR_BAD_TYPE) => "header error: bad message type",
            (HEADER, _) => "header error",
            (OPEN, OPEN_UNSUPPORTED_VERSION) => "open error: unsupported version",
            (OPEN, OPEN_BAD_PEER_AS) => "open error: bad peer AS",
            (OPEN, OPEN_BAD_BGP_ID) => "open error: bad BGP identifier",
            (OPEN, OPEN_UNSUPPORTED_PARAM) => "open error: unsupported optional parameter",
            (OPEN, OPEN_UNACCEPTABLE_HOLD) => "open error: unacceptable hold time",
            (OPEN, OPEN_UNSUPPORTED_CAPABILITY) => "open error: unsupported capability",
            (OPEN, _) => "open error",
            (UPDATE, UPD_MALFORMED_ATTR_LIST) => "update error: malformed attribute list",
            (UPDATE, UPD_UNRECOGNIZED_WELL_KNOWN) => {
                "update error: unrecognized well-known attribute"
            }
            (UPDATE, UPD_MISSING_WELL_KNOWN) => "update error: missing well-known attribute",
            (UPDATE, UPD_ATTR_FLAGS) => "update error: attribute flags error",
            (UPDATE, UPD_ATTR_LENGTH) => "update error: attribute length error",
            (UPDATE, UPD_INVALID_ORIGIN) => "update error: invalid ORIGIN",
            (UPDATE, UPD_INVALID_NEXT_HOP) => "update error: invalid NEXT_HOP",
            (UPDATE, UPD_OPTIONAL_ATTR) => "update error: optional attribute error",
            (UPDATE, UPD_INVALID_NETWORK) => "update error: invalid network field",
            (UPDATE, UPD_MALFORMED_AS_PATH) => "update error: malformed AS_PATH",
            (UPDATE, _) => "update error",
            (HOLD_TIMER_EXPIRED, _) => "hold timer expired",
            (FSM, _) => "finite state machine error",
            (CEASE, CEASE_MAX_PREFIXES) => "cease: maximum number of prefixes reached",
            (CEASE, CEASE_ADMIN_SHUTDOWN) => "cease: administrative shutdown",
            (CEASE, CEASE_PEER_DECONFIGURED) => "cease: peer de-configured",
            (CEASE, CEASE_ADMIN_RESET) => "cease: administrative reset",
            (CEASE, CEASE_CONNECTION_REJECTED) => "cease: connection rejected",
            (CEASE, CEASE_OTHER_CONFIG_CHANGE) => "cease: other configuration change",
            (CEASE, CEASE_COLLISION) => "cease: connection collision resolution",
            (CEASE, CEASE_OUT_OF_RESOURCES) => "cease: out of resources",
            (CEASE, CEASE_HARD_RESET) => "cease: hard reset",
            (CEASE, _) => "cease",
            (ROUTE_REFRESH, _) => "route-refresh message error",
            _ => "unknown error code",
        }
    }
}

impl fmt::Display for Notification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_hard_reset() && self.data.len() >= 2 {
            let inner = Notification::new(self.data[0], self.data[1]);
            return write!(
                f,
                "{} for {} ({}/{}, {}/{})",
                self.describe(),
                inner.describe(),
                self.code,
                self.subcode,
                inner.code,
                inner.subcode
            );
        }
        write!(f, "{} ({}/{})", self.describe(), self.code, self.subcode)
    }
}

/// A ROUTE-REFRESH message (RFC 2918; subtype from RFC 7313).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRefresh {
    /// Address family identifier.
    pub afi: u16,
    /// Subtype: 0 normal request (RFC 7313 also defines 1 BoRR, 2 EoRR).
    pub subtype: u8,
    /// Subsequent address family identifier.
    pub safi: u8,
}

/// Checks the common header at the start of `buf`.
///
/// Returns `Ok(None)` if fewer than a whole message is buffered, otherwise the
/// message type and total length. Errors carry the header-error NOTIFICATION.
pub fn frame(buf: &[u8]) -> Result<Option<(MessageType, usize)>, DecodeError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    if buf[..16].iter().any(|&b| b != 0xff) {
        return Err(DecodeError::new(
            codes::HEADER,
            codes::HDR_NOT_SYNCHRONIZED,
            "marker is not all ones",
        ));
    }
    let len = usize::from(u16::from_be_bytes([buf[16], buf[17]]));
    let bad_len = || {
        DecodeError::new(codes::HEADER, codes::HDR_BAD_LENGTH, "bad message length")
            .with_data(&buf[16..18])
    };
    let Some(ty) = MessageType::from_code(buf[18]) else {
        return Err(
            DecodeError::new(codes::HEADER, codes::HDR_BAD_TYPE, "unknown message type")
                .with_data(&buf[18..19]),
        );
    };
    let min = match ty {
        MessageType::Open => 29,
        MessageType::Update => 23,
        MessageType::Notification => 21,
        MessageType::Keepalive => 19,
        MessageType::RouteRefresh => 23,
    };
    if !(min..=MAX_MESSAGE_LEN).contains(&len)
        || (ty == MessageType::Keepalive && len != HEADER_LEN)
    {
        return Err(bad_len());
    }
    if buf.len() < len {
        return Ok(None);
    }
    Ok(Some((ty, len)))
}

/// Writes a header with a placeholder length; returns the offset to patch.
pub(crate) fn begin(out: &mut Vec<u8>, ty: MessageType) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0xff; 16]);
    out.extend_from_slice(&[0, 0, ty.code()]);
    start
}

/// Patches the length of the message that starts at `start`.
pub(crate) fn finish(out: &mut [u8], start: usize) {
    let len = (out.len() - start) as u16;
    out[start + 16..start + 18].copy_from_slice(&len.to_be_bytes());
}

impl Message {
    /// Decodes one whole message (as delimited by [`frame`]).
    pub fn decode(msg: &[u8], codec: Codec) -> Result<Message, DecodeError> {
        let Some((ty, len)) = frame(msg)? else {
            return Err(DecodeError::new(
                codes::HEADER,
                codes::HDR_BAD_LENGTH,
                "truncated message",
            ));
        };
        let body = &msg[HEADER_LEN..len];
        Ok(match ty {
            MessageType::Open => Message::Open(Open::decode(body)?),
            MessageType::Update => Message::Update(Update::decode(body, codec)?),
            MessageType::Notification => Message::Notification(Notification {
                code: body[0],
                subcode: body[1],
                data: body[2..].to_vec(),
            }),
            MessageType::Keepalive => Message::Keepalive,
            MessageType::RouteRefresh => {
                if body.len() != 4 {
                    return Err(DecodeError::new(
                        codes::ROUTE_REFRESH,
                        codes::RR_INVALID_LENGTH,
                        "bad ROUTE-REFRESH length",
                    )
                    .with_data(msg));
                }
                Message::RouteRefresh(RouteRefresh {
                    afi: u16::from_be_bytes([body[0], body[1]]),
                    subtype: body[2],
                    safi: body[3],
                })
            }
        })
    }

    /// Appends the encoded message to `out`.
    ///
    /// An UPDATE too large for one message is written as it is (callers that build
    /// UPDATEs from RIB contents use [`super::pack`], which never exceeds the limit).
    pub fn encode(&self, codec: Codec, out: &mut Vec<u8>) {
        let ty = match self {
            Message::Open(_) => MessageType::Open,
            Message::Update(_) => MessageType::Update,
            Message::Notification(_) => MessageType::Notification,
            Message::Keepalive => MessageType::Keepalive,
            Message::RouteRefresh(_) => MessageType::RouteRefresh,
        };
        let start = begin(out, ty);
        match self {
            Message::Open(o) => o.encode_body(out),
            Message::Update(u) => u.encode_body(codec, out),
            Message::Notification(n) => {
                out.push(n.code);
                out.push(n.subcode);
                out.extend_from_slice(&n.data);
            }
            Message::Keepalive => {}
            Message::RouteRefresh(r) => {
                out.extend_from_slice(&r.afi.to_be_bytes());
                out.push(r.subtype);
                out.push(r.safi);
            }
        }
        finish(out, start);
    }

    /// Encodes into a fresh buffer.
    pub fn to_bytes(&self, codec: Codec) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(codec, &mut v);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalive_is_nineteen_octets_of_header() {
        let b = Message::Keepalive.to_bytes(Codec::default());
        assert_eq!(b.len(), 19);
        assert_eq!(b[18], 4);
        assert_eq!(
            Message::decode(&b, Codec::default()).unwrap(),
            Message::Keepalive
        );
    }

    #[test]
    fn bad_marker_is_connection_not_synchronized() {
        let mut b = Message::Keepalive.to_bytes(Codec::default());
        b[3] = 0;
        let e = frame(&b).unwrap_err();
        assert_eq!((e.code, e.subcode), (1, 1));
    }

    #[test]
    fn keepalive_with_a_body_is_bad_length_with_the_length_as_data() {
        let mut b = Message::Keepalive.to_bytes(Codec::default());
        b.push(0);
        b[17] = 20;
        let e = frame(&b).unwrap_err();
        assert_eq!(
            (e.code, e.subcode, e.data.as_slice()),
            (1, 2, &[0u8, 20][..])
        );
    }

    #[test]
    fn unknown_type_is_bad_type_with_the_type_as_data() {
        let mut b = Message::Keepalive.to_bytes(Codec::default());
        b[18] = 9;
        let e = frame(&b).unwrap_err();
        assert_eq!((e.code, e.subcode, e.data.as_slice()), (1, 3, &[9u8][..]));
    }

    #[test]
    fn partial_messages_wait_for_more_bytes() {
        let b = Message::RouteRefresh(RouteRefresh {
            afi: 2,
            subtype: 0,
            safi: 1,
        })
        .to_bytes(Codec::default());
        assert_eq!(frame(&b[..20]).unwrap(), None);
        assert_eq!(frame(&b).unwrap(), Some((MessageType::RouteRefresh, 23)));
    }

    #[test]
    fn notification_round_trips_with_data() {
        let n = Message::Notification(Notification {
            code: 6,
            subcode: 2,
            data: vec![3, b'b', b'y', b'e'],
        });
        let b = n.to_bytes(Codec::default());
        assert_eq!(Message::decode(&b, Codec::default()).unwrap(), n);
    }

    #[test]
    fn oversized_route_refresh_is_a_route_refresh_error() {
        let mut b = Message::RouteRefresh(RouteRefresh {
            afi: 1,
            subtype: 0,
            safi: 1,
        })
        .to_bytes(Codec::default());
        b.push(0);
        b[17] = 24;
        let e = Message::decode(&b, Codec::default()).unwrap_err();
        assert_eq!((e.code, e.subcode), (7, 1));
    }
}
