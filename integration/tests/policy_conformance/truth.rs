//! The oracle: what the policies of a scenario allow, computed from the API reference's
//! semantics, as a truth table over every (from, to, port, protocol).

use std::collections::BTreeMap;

use crate::PORTS;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// (from pod, to pod, port, protocol); pods are indices into [`Conformance::names`].
pub type Key = (usize, usize, u16, Proto);

/// What each direction allows; a connection passes when both do. Starts with everything
/// allowed (no policy); `isolate_*` makes the pods a policy selects take / send nothing, and
/// `allow_*` adds what the policies' rules allow.
pub struct Truth {
    names: Vec<String>,
    ingress: BTreeMap<Key, bool>,
    egress: BTreeMap<Key, bool>,
}

pub fn all_keys(n: usize) -> Vec<Key> {
    let mut out = Vec::new();
    for f in 0..n {
        for t in 0..n {
            for port in PORTS {
                for proto in [Proto::Tcp, Proto::Udp] {
                    out.push((f, t, port, proto));
                }
            }
        }
    }
    out
}

#[derive(Clone, Copy)]
pub enum Dir {
    Ingress,
    Egress,
}

pub type Pred<'a> = &'a dyn Fn(&str, &str) -> bool;
pub type PortPred<'a> = &'a dyn Fn(u16, Proto) -> bool;

pub fn any(_: &str, _: &str) -> bool {
    true
}
pub fn every(_: u16, _: Proto) -> bool {
    true
}

impl Truth {
    pub fn new(names: &[String]) -> Truth {
        let keys = all_keys(names.len());
        Truth {
            names: names.to_vec(),
            ingress: keys.iter().map(|k| (*k, true)).collect(),
            egress: keys.iter().map(|k| (*k, true)).collect(),
        }
    }

    /// Pods matching `to` take nothing (until allowed).
    pub fn isolate_ingress(&mut self, to: Pred) -> &mut Self {
        self.set(Dir::Ingress, &any, to, &every, false)
    }

    /// Pods matching `from` send nothing (until allowed).
    pub fn isolate_egress(&mut self, from: Pred) -> &mut Self {
        self.set(Dir::Egress, from, &any, &every, false)
    }

    pub fn allow_ingress(&mut self, from: Pred, to: Pred, ports: PortPred) -> &mut Self {
        self.set(Dir::Ingress, from, to, ports, true)
    }

    pub fn allow_egress(&mut self, from: Pred, to: Pred, ports: PortPred) -> &mut Self {
        self.set(Dir::Egress, from, to, ports, true)
    }

    /// Sets what `dir` says of every connection from `from` to `to` on `ports`.
    pub fn set(
        &mut self,
        dir: Dir,
        from: Pred,
        to: Pred,
        ports: PortPred,
        allowed: bool,
    ) -> &mut Self {
        let names = &self.names;
        let ns_pod = |i: usize| names[i].split_once('/').unwrap();
        let map = match dir {
            Dir::Ingress => &mut self.ingress,
            Dir::Egress => &mut self.egress,
        };
        for (k, v) in map.iter_mut() {
            let ((fns, fp), (tns, tp)) = (ns_pod(k.0), ns_pod(k.1));
            if from(fns, fp) && to(tns, tp) && ports(k.2, k.3) {
                *v = allowed;
            }
        }
        self
    }

    /// A pod always reaches itself (loopback, no policy on the way).
    pub fn expected(&self, k: &Key) -> bool {
        k.0 == k.1 || (self.ingress[k] && self.egress[k])
    }
}

pub fn is(ns: &'static str, pod: &'static str) -> impl Fn(&str, &str) -> bool {
    move |n, p| n == ns && p == pod
}
pub fn in_ns(ns: &'static str) -> impl Fn(&str, &str) -> bool {
    move |n, _| n == ns
}
pub fn port(n: u16, proto: Proto) -> impl Fn(u16, Proto) -> bool {
    move |p, q| p == n && q == proto
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_always_reaches_itself_and_both_directions_must_allow() {
        let names: Vec<String> = ["x/a", "x/b"].iter().map(|s| s.to_string()).collect();
        let mut t = Truth::new(&names);
        t.isolate_ingress(&any).allow_egress(&any, &any, &every);
        assert!(t.expected(&(0, 0, 80, Proto::Tcp)));
        assert!(!t.expected(&(0, 1, 80, Proto::Tcp)));
        t.allow_ingress(&is("x", "a"), &is("x", "b"), &port(80, Proto::Udp));
        assert!(t.expected(&(0, 1, 80, Proto::Udp)));
        assert!(!t.expected(&(1, 0, 80, Proto::Udp)));
    }
}
