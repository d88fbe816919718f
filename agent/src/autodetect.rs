//! The node's BGP address, configured or detected as Calico's `IP_AUTODETECTION_METHOD` does:
//! `first-found`, `interface=REGEX`, `skip-interface=REGEX`, `can-reach=ADDR`, `cidr=CIDR[,CIDR…]`.
//!
//! Choosing is a pure function of the interfaces and their addresses ([`choose`]); reading them
//! ([`interfaces`]) and asking the kernel for a source address ([`source_towards`]) are the edges.

use std::net::{IpAddr, SocketAddr, UdpSocket};

use ipnet::IpNet;
use regex::Regex;

/// Interfaces that never carry the node's address (as Calico's default exclusions, plus ours).
const EXCLUDED: &str = r"^(lo|docker.*|cbr.*|dummy.*|virbr.*|lxcbr.*|veth.*|cali.*|mgy.*|tunl.*|flannel.*|kube-ipvs.*|cni.*|vxlan.*|wireguard.*|lxc.*|weave.*|nodelocaldns.*|br-.*)$";

/// How to find the node's address.
#[derive(Debug, Clone)]
pub enum Method {
    /// The first usable address of the first interface that is not excluded.
    FirstFound,
    /// The first usable address of an interface whose name matches.
    Interface(Regex),
    /// Like first-found, also skipping interfaces whose name matches.
    SkipInterface(Regex),
    /// The address the kernel would use as source towards this destination.
    CanReach(IpAddr),
    /// The first address inside one of these networks.
    Cidr(Vec<IpNet>),
}

/// A detection method that cannot be used, or a detection that found nothing.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// The method string is not understood.
    #[error("IP autodetection method {value:?}: {why}")]
    BadMethod {
        /// The method as given.
        value: String,
        /// What is wrong and what is accepted.
        why: String,
    },
    /// No interface has an address that fits.
    #[error(
        "no {family} address found by {method}; set the node's address explicitly or choose another method"
    )]
    NotFound {
        /// The method used.
        method: String,
        /// IPv4 or IPv6.
        family: &'static str,
    },
    /// The interfaces or routes could not be read.
    #[error("cannot read the node's addresses")]
    Io(#[source] std::io::Error),
}

impl std::str::FromStr for Method {
    type Err = DetectError;
    fn from_str(s: &str) -> Result<Self, DetectError> {
        let bad = |why: &str| DetectError::BadMethod {
            value: s.to_owned(),
            why: why.to_owned(),
        };
        let regex = |r: &str| {
            Regex::new(r).map_err(|e| bad(&format!("not a valid regular expression: {e}")))
        };
        match s.split_once('=') {
            None if s == "first-found" => Ok(Method::FirstFound),
            Some(("interface", r)) => Ok(Method::Interface(regex(r)?)),
            Some(("skip-interface", r)) => Ok(Method::SkipInterface(regex(r)?)),
            Some(("can-reach", a)) => a
                .parse()
                .map(Method::CanReach)
                .map_err(|_| bad("can-reach takes an IP address, e.g. can-reach=198.18.0.254")),
            Some(("cidr", list)) => list
                .split(',')
                .map(|c| c.trim().parse::<IpNet>())
                .collect::<Result<Vec<_>, _>>()
                .map(Method::Cidr)
                .map_err(|_| bad("cidr takes CIDRs separated by commas, e.g. cidr=198.18.0.0/24")),
            _ => Err(bad(
                "use first-found, interface=REGEX, skip-interface=REGEX, can-reach=ADDR or cidr=CIDR[,CIDR]",
            )),
        }
    }
}

/// An interface and its addresses, in the kernel's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Its name.
    pub name: String,
    /// Its addresses with their prefix lengths.
    pub addrs: Vec<IpNet>,
}

/// An address a node may be reached at: not loopback, link-local, multicast or unspecified.
fn usable(a: &IpNet) -> bool {
    let ip = a.addr();
    !(ip.is_loopback() || ip.is_multicast() || ip.is_unspecified())
        && match ip {
            IpAddr::V4(v4) => !v4.is_link_local(),
            IpAddr::V6(v6) => !v6.is_unicast_link_local(),
        }
}

/// Picks the node's address of one family from `ifaces` (for `can-reach`, pass the kernel's
/// source address as `reach_source`).
pub fn choose(
    method: &Method,
    ifaces: &[Interface],
    ipv6: bool,
    reach_source: Option<IpAddr>,
) -> Option<IpNet> {
    let excluded = Regex::new(EXCLUDED).expect("the exclusion pattern is valid");
    let family = |a: &&IpNet| a.addr().is_ipv6() == ipv6 && usable(a);
    let first_of = |pick: &dyn Fn(&Interface) -> bool| {
        ifaces
            .iter()
            .filter(|i| pick(i))
            .flat_map(|i| i.addrs.iter())
            .find(family)
            .copied()
    };
    match method {
        Method::FirstFound => first_of(&|i| !excluded.is_match(&i.name)),
        Method::SkipInterface(r) => {
            first_of(&|i| !excluded.is_match(&i.name) && !r.is_match(&i.name))
        }
        Method::Interface(r) => first_of(&|i| r.is_match(&i.name)),
        Method::Cidr(nets) => ifaces
            .iter()
            .flat_map(|i| i.addrs.iter())
            .filter(family)
            .find(|a| nets.iter().any(|n| n.contains(&a.addr())))
            .copied(),
        Method::CanReach(_) => {
            let src = reach_source?;
            ifaces
                .iter()
                .flat_map(|i| i.addrs.iter())
                .find(|a| a.addr() == src)
                .copied()
        }
    }
}

/// The interfaces of the calling thread's network namespace and their addresses.
pub fn interfaces() -> Result<Vec<Interface>, DetectError> {
    let mut out: Vec<Interface> = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs().map_err(|e| DetectError::Io(e.into()))? {
        let (Some(addr), Some(mask)) = (ifa.address, ifa.netmask) else {
            continue;
        };
        let (ip, prefix) = match (
            addr.as_sockaddr_in(),
            mask.as_sockaddr_in(),
            addr.as_sockaddr_in6(),
            mask.as_sockaddr_in6(),
        ) {
            (Some(a), Some(m), _, _) => (IpAddr::V4(a.ip()), u32::from(m.ip()).count_ones()),
            (_, _, Some(a), Some(m)) => (IpAddr::V6(a.ip()), u128::from(m.ip()).count_ones()),
            _ => continue,
        };
        let Ok(net) = IpNet::new(ip, prefix as u8) else {
            continue;
        };
        match out.iter_mut().find(|i| i.name == ifa.interface_name) {
            Some(i) => i.addrs.push(net),
            None => out.push(Interface {
                name: ifa.interface_name,
                addrs: vec![net],
            }),
        }
    }
    Ok(out)
}

/// The source address the kernel would use towards `dest` (a UDP connect: no packet is sent).
pub fn source_towards(dest: IpAddr) -> Result<IpAddr, DetectError> {
    let bind: SocketAddr = if dest.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    }
    .parse()
    .expect("literal");
    let s = UdpSocket::bind(bind).map_err(DetectError::Io)?;
    s.connect(SocketAddr::new(dest, 179))
        .map_err(DetectError::Io)?;
    Ok(s.local_addr().map_err(DetectError::Io)?.ip())
}

/// Detects the node's address of one family with `method` in the calling thread's namespace.
pub fn detect(method: &Method, ipv6: bool, method_text: &str) -> Result<IpNet, DetectError> {
    let ifaces = interfaces()?;
    let reach = match method {
        Method::CanReach(dest) => Some(source_towards(*dest)?),
        _ => None,
    };
    choose(method, &ifaces, ipv6, reach).ok_or_else(|| DetectError::NotFound {
        method: method_text.to_owned(),
        family: if ipv6 { "IPv6" } else { "IPv4" },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ifaces() -> Vec<Interface> {
        let i = |name: &str, addrs: &[&str]| Interface {
            name: name.into(),
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        };
        vec![
            i("lo", &["127.0.0.1/8", "::1/128"]),
            i("docker0", &["198.18.9.1/24"]),
            i("mgyc440f455693", &["fe80::ecee:eeff:feee:eeee/64"]),
            i(
                "eth0",
                &["198.18.0.11/24", "fe80::1/64", "fd00:198:18::11/64"],
            ),
            i("eth1", &["198.19.0.11/24"]),
        ]
    }

    fn pick(m: &str, v6: bool) -> Option<String> {
        choose(&m.parse().unwrap(), &ifaces(), v6, None).map(|n| n.to_string())
    }

    #[test]
    fn first_found_skips_loopback_docker_and_pod_veths() {
        assert_eq!(
            pick("first-found", false).as_deref(),
            Some("198.18.0.11/24")
        );
        assert_eq!(
            pick("first-found", true).as_deref(),
            Some("fd00:198:18::11/64")
        );
    }

    #[test]
    fn interface_skip_interface_and_cidr_select_as_calico_does() {
        assert_eq!(
            pick("interface=eth1", false).as_deref(),
            Some("198.19.0.11/24")
        );
        assert_eq!(
            pick("skip-interface=eth0", false).as_deref(),
            Some("198.19.0.11/24")
        );
        assert_eq!(
            pick("cidr=198.19.0.0/16", false).as_deref(),
            Some("198.19.0.11/24")
        );
        assert_eq!(pick("interface=wlan.*", false), None);
    }

    #[test]
    fn can_reach_takes_the_kernel_source_address() {
        let m: Method = "can-reach=198.19.0.254".parse().unwrap();
        let got = choose(&m, &ifaces(), false, Some("198.19.0.11".parse().unwrap()));
        assert_eq!(got.unwrap().to_string(), "198.19.0.11/24");
    }

    #[test]
    fn bad_methods_say_what_is_accepted() {
        let e = "firstfound".parse::<Method>().unwrap_err().to_string();
        assert!(
            e.starts_with("IP autodetection method \"firstfound\": use first-found"),
            "{e}"
        );
        let e = "cidr=198.18.0.0/33"
            .parse::<Method>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("cidr takes CIDRs"), "{e}");
        assert!(
            "interface=("
                .parse::<Method>()
                .unwrap_err()
                .to_string()
                .contains("regular expression")
        );
    }
}
