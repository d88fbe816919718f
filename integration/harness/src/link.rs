//! Links, addresses, routes and sysctls inside harness namespaces, and a bridge segment.
//!
//! Everything here runs `ip -n <ns> ...` or `ip netns exec <ns> sysctl`, so the host's own
//! namespace is never touched; addresses are checked against [`crate::addr::ALLOWED_RANGES`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, Ordering};

use ipnet::IpNet;

use crate::addr::{check_addr, check_net};
use crate::cmd;
use crate::error::{Error, Result};
use crate::netns::Netns;

/// Linux limits interface names to 15 bytes.
const IFNAMSIZ_MAX: usize = 15;

fn check_ifname(name: &str) -> Result<&str> {
    let ok = !name.is_empty()
        && name.len() <= IFNAMSIZ_MAX
        && name != "."
        && name != ".."
        && !name.contains(['/', ':'])
        && !name.contains(char::is_whitespace);
    if ok {
        Ok(name)
    } else {
        Err(Error::invalid(
            "interface name",
            format!("{name:?}: 1 to 15 characters, no '/', ':' or spaces"),
        ))
    }
}

fn is_link_local(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => a.is_link_local(),
        IpAddr::V6(a) => a.segments()[0] & 0xffc0 == 0xfe80,
    }
}

impl Netns {
    fn ip(&self, args: &[&str]) -> Result<()> {
        let mut argv = vec!["ip", "-n", self.name()];
        argv.extend_from_slice(args);
        cmd::run(&argv).map(drop)
    }

    /// Sets link `dev` up.
    pub fn link_up(&self, dev: &str) -> Result<()> {
        self.ip(&["link", "set", check_ifname(dev)?, "up"])
    }

    /// Creates a veth pair: `name` in this namespace, `peer_name` in `peer` (which may be this
    /// namespace). Neither end is brought up.
    pub fn add_veth(&self, name: &str, peer: &Netns, peer_name: &str) -> Result<()> {
        let (name, peer_name) = (check_ifname(name)?, check_ifname(peer_name)?);
        let mut args = vec![
            "link", "add", name, "type", "veth", "peer", "name", peer_name,
        ];
        if peer.name() != self.name() {
            args.extend(["netns", peer.name()]);
        }
        self.ip(&args)
    }

    /// Creates a bridge named `name` and sets it up.
    pub fn add_bridge(&self, name: &str) -> Result<()> {
        self.ip(&["link", "add", check_ifname(name)?, "type", "bridge"])?;
        self.link_up(name)
    }

    /// Enslaves `port` to `bridge` and sets the port up.
    pub fn set_master(&self, port: &str, bridge: &str) -> Result<()> {
        self.ip(&[
            "link",
            "set",
            check_ifname(port)?,
            "master",
            check_ifname(bridge)?,
            "up",
        ])
    }

    /// Adds `addr` (e.g. `198.18.0.1/24`) to `dev`; IPv6 addresses skip duplicate address
    /// detection so that they are usable at once. Refuses addresses outside the test ranges.
    pub fn add_addr(&self, dev: &str, addr: IpNet) -> Result<()> {
        let addr = check_net(addr)?.to_string();
        let dev = check_ifname(dev)?;
        if addr.contains(':') {
            self.ip(&["addr", "add", &addr, "dev", dev, "nodad"])
        } else {
            self.ip(&["addr", "add", &addr, "dev", dev])
        }
    }

    /// Adds a route to `dest` via `gateway` and/or out of `dev`. The destination must be in the
    /// test ranges or a default route (this namespace's own); the gateway in the test ranges or
    /// link-local (169.254.0.0/16, fe80::/10, as pods use).
    pub fn add_route(&self, dest: IpNet, gateway: Option<IpAddr>, dev: Option<&str>) -> Result<()> {
        if dest.prefix_len() != 0 {
            check_net(dest)?;
        }
        let dest = dest.to_string();
        let mut args = vec!["route", "add", dest.as_str()];
        let gw;
        if let Some(g) = gateway {
            if !is_link_local(g) {
                check_addr(g)?;
            }
            gw = g.to_string();
            args.extend(["via", gw.as_str()]);
        }
        if let Some(d) = dev {
            args.extend(["dev", check_ifname(d)?]);
        }
        if gateway.is_some() && dev.is_some() {
            args.push("onlink");
        }
        self.ip(&args)
    }

    /// Adds a default route via `gateway` (IPv4 or IPv6, in the test ranges) at `metric`.
    pub fn add_default_route(&self, gateway: IpAddr, metric: u32) -> Result<()> {
        check_addr(gateway)?;
        let family = if gateway.is_ipv4() { "-4" } else { "-6" };
        let (gw, metric) = (gateway.to_string(), metric.to_string());
        self.ip(&[
            family, "route", "add", "default", "via", &gw, "metric", &metric,
        ])
    }

    /// Sets sysctl `key` (e.g. `net.ipv4.ip_forward`) to `value` inside this namespace only.
    /// Only `net.*` keys are accepted: the others are not per-namespace and would change the host.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let key = check_sysctl_key(key)?;
        if value.is_empty() || value.contains(['\n', '=']) {
            return Err(Error::invalid("sysctl value", format!("{value:?}")));
        }
        self.exec(&["sysctl", "-q", "-w", &format!("{key}={value}")])
            .map(drop)
    }

    /// Reads sysctl `key` inside this namespace (trimmed).
    pub fn read_sysctl(&self, key: &str) -> Result<String> {
        let key = check_sysctl_key(key)?;
        Ok(self.exec(&["sysctl", "-n", key])?.stdout.trim().to_owned())
    }

    /// Connects this namespace and `peer` with a veth pair (`name` here, `peer_name` there),
    /// gives each end its addresses and sets both up: the usual point-to-point underlay link.
    pub fn connect(
        &self,
        name: &str,
        addrs: &[IpNet],
        peer: &Netns,
        peer_name: &str,
        peer_addrs: &[IpNet],
    ) -> Result<()> {
        for a in addrs.iter().chain(peer_addrs) {
            check_net(*a)?;
        }
        self.add_veth(name, peer, peer_name)?;
        for a in addrs {
            self.add_addr(name, *a)?;
        }
        for a in peer_addrs {
            peer.add_addr(peer_name, *a)?;
        }
        self.link_up(name)?;
        peer.link_up(peer_name)
    }
}

fn check_sysctl_key(key: &str) -> Result<&str> {
    let ok = key.starts_with("net.")
        && key.len() > 4
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
    if ok {
        Ok(key)
    } else {
        Err(Error::invalid(
            "sysctl key",
            format!("{key:?}: only net.* keys are per-namespace"),
        ))
    }
}

/// A shared layer-2 segment: a namespace of its own holding bridge `br0`, to which other
/// namespaces are attached through veth pairs (as the lab's underlay).
#[derive(Debug)]
pub struct Bridge {
    ns: Netns,
    ports: AtomicU32,
}

impl Bridge {
    /// The bridge's name inside its namespace.
    pub const NAME: &'static str = "br0";

    /// Creates a namespace (tagged `br`) with bridge `br0` up.
    pub fn new() -> Result<Bridge> {
        let ns = Netns::with_tag("br")?;
        ns.add_bridge(Self::NAME)?;
        Ok(Bridge {
            ns,
            ports: AtomicU32::new(0),
        })
    }

    /// The namespace that holds the bridge.
    pub fn netns(&self) -> &Netns {
        &self.ns
    }

    /// Attaches `node` to the bridge: a veth pair whose end in `node` is called `ifname` and has
    /// `addrs`; the bridge end is named `p<n>`. Both ends are up. Returns the bridge port's name.
    pub fn attach(&self, node: &Netns, ifname: &str, addrs: &[IpNet]) -> Result<String> {
        for a in addrs {
            check_net(*a)?;
        }
        let port = format!("p{}", self.ports.fetch_add(1, Ordering::Relaxed));
        self.ns.add_veth(&port, node, ifname)?;
        self.ns.set_master(&port, Self::NAME)?;
        for a in addrs {
            node.add_addr(ifname, *a)?;
        }
        node.link_up(ifname)?;
        Ok(port)
    }
}

/// The underlay the multi-node tests share (and the lab's layout): one [`Bridge`], an infra
/// namespace `TAG-infra` at [`Underlay::INFRA_V4`]/24 (where etcd or the API server runs), and
/// node namespaces `TAG-node1`, `TAG-node2`, … at [`Underlay::node_v4`]/24, each with a default
/// route via infra at [`Underlay::DEFAULT_METRIC`].
#[derive(Debug)]
pub struct Underlay {
    /// The bridge.
    pub bridge: Bridge,
    /// The infra namespace (loopback up).
    pub infra: Netns,
    /// The nodes, node1 first.
    pub nodes: Vec<Netns>,
}

impl Underlay {
    /// The infra namespace's address, 198.18.0.254.
    pub const INFRA_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);
    /// The metric of the nodes' default route via infra: a default route learned over BGP
    /// (metric 32) or set by an operator (0) takes over. With it, proxy ARP answers pods.
    pub const DEFAULT_METRIC: u32 = 1000;

    /// Node `i`'s address (0-based): 198.18.0.11, .12, …
    pub fn node_v4(i: usize) -> Ipv4Addr {
        let i = u8::try_from(i)
            .ok()
            .filter(|i| *i < 240)
            .expect("at most 240 nodes");
        Ipv4Addr::new(198, 18, 0, 11 + i)
    }

    /// Creates the bridge, infra and `nodes` node namespaces.
    pub fn new(tag: &str, nodes: usize) -> Result<Underlay> {
        let bridge = Bridge::new()?;
        let infra = Netns::with_tag(&format!("{tag}-infra"))?;
        bridge.attach(
            &infra,
            "eth0",
            &[IpNet::new(Self::INFRA_V4.into(), 24).expect("/24")],
        )?;
        infra.link_up("lo")?;
        let nodes = (0..nodes)
            .map(|i| {
                let node = Netns::with_tag(&format!("{tag}-node{}", i + 1))?;
                let addr = IpNet::new(Self::node_v4(i).into(), 24).expect("/24");
                bridge.attach(&node, "eth0", &[addr])?;
                node.add_default_route(Self::INFRA_V4.into(), Self::DEFAULT_METRIC)?;
                Ok(node)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Underlay {
            bridge,
            infra,
            nodes,
        })
    }
}

/// Two namespaces joined by one veth, `eth0` on both sides: the usual two-speaker interop
/// topology. Side a has [`Pair::A_V4`]/24 and [`Pair::A_V6`]/64, side b [`Pair::B_V4`] and
/// [`Pair::B_V6`].
#[derive(Debug)]
pub struct Pair {
    /// Side a.
    pub a: Netns,
    /// Side b.
    pub b: Netns,
}

impl Pair {
    /// Side a's IPv4 address, 198.18.0.1.
    pub const A_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
    /// Side b's IPv4 address, 198.18.0.2.
    pub const B_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));
    /// Side a's IPv6 address, fd00:18::1.
    pub const A_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 1));
    /// Side b's IPv6 address, fd00:18::2.
    pub const B_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 2));

    /// Creates the two namespaces (tagged `<tag>-a` and `<tag>-b`, so `tag` has at most 10
    /// characters) and the link.
    pub fn new(tag: &str) -> Result<Pair> {
        let a = Netns::with_tag(&format!("{tag}-a"))?;
        let b = Netns::with_tag(&format!("{tag}-b"))?;
        let host = |ip: IpAddr| IpNet::new(ip, if ip.is_ipv4() { 24 } else { 64 });
        let addrs = |v4, v6| -> Result<Vec<IpNet>> {
            [v4, v6]
                .into_iter()
                .map(|ip| host(ip).map_err(|e| Error::invalid("prefix", e.to_string())))
                .collect()
        };
        a.connect(
            "eth0",
            &addrs(Self::A_V4, Self::A_V6)?,
            &b,
            "eth0",
            &addrs(Self::B_V4, Self::B_V6)?,
        )?;
        Ok(Pair { a, b })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_follow_kernel_rules() {
        assert!(check_ifname("eth0").is_ok());
        assert!(check_ifname("mgy0123456789ab").is_ok());
        assert!(check_ifname("mgy0123456789abc").is_err());
        assert!(check_ifname("").is_err());
        assert!(check_ifname("a/b").is_err());
        assert!(check_ifname("a b").is_err());
    }

    #[test]
    fn only_net_sysctls_are_accepted() {
        assert!(check_sysctl_key("net.ipv4.ip_forward").is_ok());
        assert!(check_sysctl_key("net.ipv4.conf.eth0.proxy_arp").is_ok());
        assert!(check_sysctl_key("kernel.pid_max").is_err());
        assert!(check_sysctl_key("vm.swappiness").is_err());
        assert!(check_sysctl_key("net.ipv4.ip_forward=1").is_err());
    }

    #[test]
    fn link_local_gateways_are_recognised() {
        assert!(is_link_local("169.254.1.1".parse().unwrap()));
        assert!(is_link_local("fe80::ecee:eeff:feee:eeee".parse().unwrap()));
        assert!(!is_link_local("198.18.0.1".parse().unwrap()));
    }
}
