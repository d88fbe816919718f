//! The compiler's outputs: rules, chains and ipsets, as the driver writes them.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::model::Family;

/// One iptables rule of a chain: what it matches and does (`-p tcp -m tcp --dport 80 -j …`),
/// and an identity for its comment (`pol=x/deny in r0`). The driver adds the comment with a
/// hash of the rule, by which it recognises its rules in `iptables-save`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    /// Matches and target, in iptables-restore syntax, without `-A CHAIN`.
    pub body: String,
    /// What the rule is for: letters, digits and `=/:._-` and spaces only.
    pub comment: String,
}

impl Rule {
    /// A rule.
    pub fn new(body: impl Into<String>, comment: impl Into<String>) -> Self {
        Self {
            body: body.into(),
            comment: comment.into(),
        }
    }
}

/// The type of an ipset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SetType {
    /// `hash:net`: addresses and networks, with `nomatch` exceptions.
    Net,
    /// `hash:ip,port`: an address with a protocol and port (`100.64.0.5,tcp:80`).
    IpPort,
}

impl SetType {
    /// The type as ipset names it.
    pub fn ipset_type(self) -> &'static str {
        match self {
            SetType::Net => "hash:net",
            SetType::IpPort => "hash:ip,port",
        }
    }
}

/// What an ipset is: its family and type (its members are tracked apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SetDesc {
    /// `inet` or `inet6`.
    pub family: Family,
    /// Its type.
    pub kind: SetType,
}

/// A `hash:net` member as `ipset save` prints it: a host route as its bare address,
/// others as `addr/len`.
pub fn net_member(net: IpNet) -> String {
    let net = net.trunc();
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

/// A `hash:ip,port` member as `ipset save` prints it: `100.64.0.5,tcp:80`.
pub fn ip_port_member(ip: IpAddr, proto: &str, port: u16) -> String {
    format!("{ip},{proto}:{port}")
}

/// The networks a `hash:net` set must hold to contain `net`: itself, or its two halves for a
/// /0, which the kernel does not accept as an entry.
pub fn net_entries(net: IpNet) -> Vec<IpNet> {
    let net = net.trunc();
    if net.prefix_len() > 0 {
        return vec![net];
    }
    match net {
        IpNet::V4(_) => vec![
            "0.0.0.0/1".parse().expect("constant"),
            "128.0.0.0/1".parse().expect("constant"),
        ],
        IpNet::V6(_) => vec![
            "::/1".parse().expect("constant"),
            "8000::/1".parse().expect("constant"),
        ],
    }
}
