//! TCP MD5 signatures (RFC 2385) on a socket: the one `unsafe` call of the speaker.
//!
//! Linux keys MD5 per peer address on a socket with `setsockopt(IPPROTO_TCP,
//! TCP_MD5SIG, struct tcp_md5sig)`. Neither `nix` nor `socket2` wraps this option
//! and `libc` has the constant but not the struct, so the struct is laid out here
//! as bytes (`include/uapi/linux/tcp.h`):
//!
//! ```text
//! struct tcp_md5sig {
//!     struct __kernel_sockaddr_storage tcpm_addr;  /* 128 octets */
//!     __u8  tcpm_flags;                            /* TCP_MD5SIG_EXT only */
//!     __u8  tcpm_prefixlen;                        /* TCP_MD5SIG_EXT only */
//!     __u16 tcpm_keylen;                           /* 0 deletes the key */
//!     int   tcpm_ifindex;                          /* TCP_MD5SIG_EXT only */
//!     __u8  tcpm_key[TCP_MD5SIG_MAXKEYLEN];        /* 80 octets */
//! };
//! ```
//!
//! A key set on a listening socket is inherited by the connections it accepts; a
//! key must be set on a connecting socket before `connect`. Once keyed, the kernel
//! silently drops the peer's segments that are unsigned or signed with another key,
//! so a wrong password shows only as connections that never complete.
#![allow(unsafe_code)]

use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Longest key the kernel accepts.
pub const MAX_KEY_LEN: usize = 80;

const SOCKADDR_STORAGE: usize = 128;
const STRUCT_LEN: usize = SOCKADDR_STORAGE + 1 + 1 + 2 + 4 + MAX_KEY_LEN;

/// Why a key could not be set.
#[derive(Debug, thiserror::Error)]
pub enum Md5Error {
    /// The password is longer than the kernel allows.
    #[error("the TCP MD5 password is {0} octets long; at most 80 are allowed")]
    TooLong(usize),
    /// An IPv6 peer on an IPv4 socket.
    #[error("cannot key IPv6 peer {0} on an IPv4 socket")]
    Family(IpAddr),
    /// The kernel refused (e.g. no CONFIG_TCP_MD5SIG).
    #[error("setsockopt(TCP_MD5SIG) failed")]
    Sys(#[source] std::io::Error),
}

/// The `struct tcp_md5sig` bytes for `peer` and `key` (empty: delete). `v6_socket`
/// says whether the socket is AF_INET6: an IPv4 peer on it is keyed by its
/// IPv4-mapped address, as the kernel then sees it.
fn encode(v6_socket: bool, peer: IpAddr, key: &[u8]) -> Result<[u8; STRUCT_LEN], Md5Error> {
    if key.len() > MAX_KEY_LEN {
        return Err(Md5Error::TooLong(key.len()));
    }
    let mut b = [0u8; STRUCT_LEN];
    match (v6_socket, peer) {
        (false, IpAddr::V4(a)) => {
            b[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            // sin_port (0) then sin_addr.
            b[4..8].copy_from_slice(&a.octets());
        }
        (true, _) => {
            let a = match peer {
                IpAddr::V4(a) => a.to_ipv6_mapped(),
                IpAddr::V6(a) => a,
            };
            b[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            // sin6_port (0), sin6_flowinfo (0), then sin6_addr.
            b[8..24].copy_from_slice(&a.octets());
        }
        (false, IpAddr::V6(_)) => return Err(Md5Error::Family(peer)),
    }
    b[SOCKADDR_STORAGE + 2..SOCKADDR_STORAGE + 4]
        .copy_from_slice(&(key.len() as u16).to_ne_bytes());
    b[SOCKADDR_STORAGE + 8..SOCKADDR_STORAGE + 8 + key.len()].copy_from_slice(key);
    Ok(b)
}

/// Sets (`Some`) or deletes (`None`) the MD5 key for `peer` on `fd`.
pub fn set_key(
    fd: BorrowedFd<'_>,
    v6_socket: bool,
    peer: IpAddr,
    key: Option<&[u8]>,
) -> Result<(), Md5Error> {
    let opt = encode(v6_socket, peer, key.unwrap_or_default())?;
    // SAFETY: `fd` is a valid, open descriptor for the duration of the call (it is
    // borrowed); `opt` is a live, initialised buffer of exactly the length passed,
    // laid out as the kernel's `struct tcp_md5sig`; the kernel only reads from it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            opt.as_ptr().cast::<libc::c_void>(),
            STRUCT_LEN as libc::socklen_t,
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        // Deleting a key that is not there is not an error for us.
        if key.is_none() && e.raw_os_error() == Some(libc::ENOENT) {
            return Ok(());
        }
        return Err(Md5Error::Sys(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::os::fd::AsFd;

    #[test]
    fn struct_layout_matches_the_kernel() {
        let b = encode(false, "198.18.0.2".parse().unwrap(), b"secret").unwrap();
        assert_eq!(b.len(), 216);
        assert_eq!(u16::from_ne_bytes([b[0], b[1]]), libc::AF_INET as u16);
        assert_eq!(&b[4..8], &[198, 18, 0, 2]);
        assert_eq!(u16::from_ne_bytes([b[130], b[131]]), 6);
        assert_eq!(&b[136..142], b"secret");
        let b = encode(true, "198.18.0.2".parse().unwrap(), b"k").unwrap();
        assert_eq!(u16::from_ne_bytes([b[0], b[1]]), libc::AF_INET6 as u16);
        assert_eq!(
            &b[8..24],
            &"::ffff:198.18.0.2"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );
        assert!(matches!(
            encode(false, "fd00::1".parse().unwrap(), b"k"),
            Err(Md5Error::Family(_))
        ));
        assert!(matches!(
            encode(false, "198.18.0.2".parse().unwrap(), &[0; 81]),
            Err(Md5Error::TooLong(81))
        ));
    }

    #[test]
    fn a_key_is_set_and_deleted_on_a_listening_socket() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let peer: IpAddr = "127.0.0.9".parse().unwrap();
        match set_key(l.as_fd(), false, peer, Some(b"pw")) {
            Ok(()) => {}
            // A kernel without CONFIG_TCP_MD5SIG: nothing more to check here.
            Err(Md5Error::Sys(e)) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => return,
            Err(e) => panic!("{e}: {:?}", std::error::Error::source(&e)),
        }
        set_key(l.as_fd(), false, peer, None).unwrap();
        // Deleting again is fine.
        set_key(l.as_fd(), false, peer, None).unwrap();
    }
}
