//! The address ranges tests may use, and the check that refuses everything else.
//!
//! Tests must never configure an address that could collide with a real network: only the
//! benchmarking range (198.18.0.0/15, RFC 2544), shared address space (100.64.0.0/10, RFC 6598),
//! unique-local IPv6 (fd00::/8) and loopback are accepted.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::error::{Error, Result};

/// The ranges the harness accepts, as strings for documentation and messages.
pub const ALLOWED_RANGES: [&str; 5] = [
    "198.18.0.0/15",
    "100.64.0.0/10",
    "fd00::/8",
    "127.0.0.0/8",
    "::1/128",
];

fn allowed_nets() -> impl Iterator<Item = IpNet> {
    ALLOWED_RANGES.iter().map(|s| {
        s.parse()
            .expect("ALLOWED_RANGES entries are valid prefixes")
    })
}

/// Whether `addr` lies in one of the [`ALLOWED_RANGES`].
pub fn is_allowed_addr(addr: IpAddr) -> bool {
    allowed_nets().any(|n| n.contains(&addr))
}

/// Accepts `addr` if it lies in one of the [`ALLOWED_RANGES`].
pub fn check_addr(addr: IpAddr) -> Result<IpAddr> {
    if is_allowed_addr(addr) {
        Ok(addr)
    } else {
        Err(Error::AddressNotAllowed {
            addr: addr.to_string(),
        })
    }
}

/// Accepts an interface address or route prefix if the whole prefix (not just the address) lies in
/// one of the [`ALLOWED_RANGES`]: `198.18.0.1/24` is fine, `198.18.0.1/8` is not.
pub fn check_net(net: IpNet) -> Result<IpNet> {
    if allowed_nets().any(|n| n.contains(&net.trunc())) {
        Ok(net)
    } else {
        Err(Error::AddressNotAllowed {
            addr: net.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn test_ranges_are_accepted() {
        for s in [
            "198.18.0.1/24",
            "198.19.255.254/32",
            "100.64.0.0/10",
            "100.127.1.1/32",
            "fd00::1/64",
            "fdff:1::/48",
            "127.0.0.1/8",
            "::1/128",
        ] {
            assert!(check_net(net(s)).is_ok(), "{s}");
        }
    }

    #[test]
    fn real_networks_are_refused_with_a_clear_error() {
        for s in [
            "10.0.0.1/24",
            "192.168.1.1/24",
            "198.20.0.1/24",
            "100.128.0.1/24",
            "2001:db8::1/64",
            "fe80::1/64",
            "8.8.8.8/32",
        ] {
            let err = check_net(net(s)).unwrap_err();
            assert!(err.to_string().contains("outside the test ranges"), "{err}");
        }
    }

    #[test]
    fn a_prefix_wider_than_the_range_is_refused() {
        assert!(check_net(net("198.18.0.1/8")).is_err());
        assert!(check_net(net("100.64.0.1/9")).is_err());
        assert!(check_net(net("fd00::1/7")).is_err());
    }

    #[test]
    fn single_addresses_are_checked_too() {
        assert!(check_addr("198.18.0.254".parse().unwrap()).is_ok());
        assert!(check_addr("169.254.1.1".parse().unwrap()).is_err());
    }
}
