//! Decode errors, each carrying the NOTIFICATION it must be answered with.

use std::fmt;

/// NOTIFICATION error codes and subcodes (RFC 4271 §4.5, §6; RFC 4486; RFC 7313).
pub mod codes {
    /// Message Header Error.
    pub const HEADER: u8 = 1;
    /// Header: connection not synchronized (bad marker).
    pub const HDR_NOT_SYNCHRONIZED: u8 = 1;
    /// Header: bad message length.
    pub const HDR_BAD_LENGTH: u8 = 2;
    /// Header: bad message type.
    pub const HDR_BAD_TYPE: u8 = 3;

    /// OPEN Message Error.
    pub const OPEN: u8 = 2;
    /// OPEN: unsupported version number.
    pub const OPEN_UNSUPPORTED_VERSION: u8 = 1;
    /// OPEN: bad peer AS.
    pub const OPEN_BAD_PEER_AS: u8 = 2;
    /// OPEN: bad BGP identifier.
    pub const OPEN_BAD_BGP_ID: u8 = 3;
    /// OPEN: unsupported optional parameter.
    pub const OPEN_UNSUPPORTED_PARAM: u8 = 4;
    /// OPEN: unacceptable hold time.
    pub const OPEN_UNACCEPTABLE_HOLD: u8 = 6;
    /// OPEN: unsupported capability (RFC 5492).
    pub const OPEN_UNSUPPORTED_CAPABILITY: u8 = 7;

    /// UPDATE Message Error.
    pub const UPDATE: u8 = 3;
    /// UPDATE: malformed attribute list.
    pub const UPD_MALFORMED_ATTR_LIST: u8 = 1;
    /// UPDATE: unrecognized well-known attribute.
    pub const UPD_UNRECOGNIZED_WELL_KNOWN: u8 = 2;
    /// UPDATE: missing well-known attribute.
    pub const UPD_MISSING_WELL_KNOWN: u8 = 3;
    /// UPDATE: attribute flags error.
    pub const UPD_ATTR_FLAGS: u8 = 4;
    /// UPDATE: attribute length error.
    pub const UPD_ATTR_LENGTH: u8 = 5;
    /// UPDATE: invalid ORIGIN attribute.
    pub const UPD_INVALID_ORIGIN: u8 = 6;
    /// UPDATE: invalid NEXT_HOP attribute.
    pub const UPD_INVALID_NEXT_HOP: u8 = 8;
    /// UPDATE: optional attribute error.
    pub const UPD_OPTIONAL_ATTR: u8 = 9;
    /// UPDATE: invalid network field.
    pub const UPD_INVALID_NETWORK: u8 = 10;
    /// UPDATE: malformed AS_PATH.
    pub const UPD_MALFORMED_AS_PATH: u8 = 11;

    /// Hold Timer Expired.
    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    /// Finite State Machine Error.
    pub const FSM: u8 = 5;
    /// FSM error: unexpected message in OpenSent (RFC 6608).
    pub const FSM_UNEXPECTED_IN_OPEN_SENT: u8 = 1;
    /// FSM error: unexpected message in OpenConfirm (RFC 6608).
    pub const FSM_UNEXPECTED_IN_OPEN_CONFIRM: u8 = 2;
    /// FSM error: unexpected message in Established (RFC 6608).
    pub const FSM_UNEXPECTED_IN_ESTABLISHED: u8 = 3;

    /// Cease.
    pub const CEASE: u8 = 6;
    /// Cease: maximum number of prefixes reached.
    pub const CEASE_MAX_PREFIXES: u8 = 1;
    /// Cease: administrative shutdown.
    pub const CEASE_ADMIN_SHUTDOWN: u8 = 2;
    /// Cease: peer de-configured.
    pub const CEASE_PEER_DECONFIGURED: u8 = 3;
    /// Cease: administrative reset.
    pub const CEASE_ADMIN_RESET: u8 = 4;
    /// Cease: connection rejected.
    pub const CEASE_CONNECTION_REJECTED: u8 = 5;
    /// Cease: other configuration change.
    pub const CEASE_OTHER_CONFIG_CHANGE: u8 = 6;
    /// Cease: connection collision resolution.
    pub const CEASE_COLLISION: u8 = 7;
    /// Cease: out of resources.
    pub const CEASE_OUT_OF_RESOURCES: u8 = 8;
    /// Cease: hard reset (RFC 8538): the peer must not keep our routes; the data
    /// carries the code and subcode of the underlying reason.
    pub const CEASE_HARD_RESET: u8 = 9;

    /// ROUTE-REFRESH Message Error (RFC 7313).
    pub const ROUTE_REFRESH: u8 = 7;
    /// ROUTE-REFRESH: invalid message length.
    pub const RR_INVALID_LENGTH: u8 = 1;
}

/// A message that could not be decoded, with the NOTIFICATION (code, subcode, data)
/// RFC 4271 §6 prescribes for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// NOTIFICATION error code.
    pub code: u8,
    /// NOTIFICATION error subcode.
    pub subcode: u8,
    /// NOTIFICATION data field.
    pub data: Vec<u8>,
    /// What was wrong, for logs.
    pub reason: &'static str,
}

impl DecodeError {
    pub(crate) fn new(code: u8, subcode: u8, reason: &'static str) -> Self {
        Self {
            code,
            subcode,
            data: Vec::new(),
            reason,
        }
    }
    pub(crate) fn with_data(mut self, data: &[u8]) -> Self {
        self.data = data.to_vec();
        self
    }
    /// The NOTIFICATION to send to the peer.
    pub fn notification(&self) -> super::Notification {
        super::Notification {
            code: self.code,
            subcode: self.subcode,
            data: self.data.clone(),
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (NOTIFICATION {}/{})",
            self.reason, self.code, self.subcode
        )
    }
}

impl std::error::Error for DecodeError {}
