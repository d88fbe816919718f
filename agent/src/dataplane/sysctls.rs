//! The sysctl driver: what a node and each pod's host-side veth need from the kernel.
//!
//! Node-wide: IPv4 and IPv6 forwarding. Per host-side veth (as Calico): proxy ARP with no delay,
//! so the pod's ARP for its gateway 169.254.1.1 is answered by the host side; forwarding; for
//! IPv6 proxy NDP and no router advertisements accepted. Values are written under `/proc/sys`
//! of the calling thread's network namespace; resync reads them back and rewrites what drifted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tracing::{info, warn};

use super::tracker::DeltaTracker;

/// A sysctl, as its path components under `/proc/sys` (interface names may hold dots, so the
/// dotted form would be ambiguous).
pub type Key = Vec<String>;

fn key(parts: &[&str]) -> Key {
    parts.iter().map(|s| (*s).to_owned()).collect()
}

/// The node-wide settings.
pub fn node_sysctls(ipv6: bool) -> Vec<(Key, String)> {
    let mut out = vec![(key(&["net", "ipv4", "ip_forward"]), "1".into())];
    if ipv6 {
        out.push((
            key(&["net", "ipv6", "conf", "all", "forwarding"]),
            "1".into(),
        ));
    }
    out
}

/// The settings of one host-side veth.
pub fn interface_sysctls(ifname: &str, ipv4: bool, ipv6: bool) -> Vec<(Key, String)> {
    let mut out = Vec::new();
    if ipv4 {
        out.push((
            key(&["net", "ipv4", "conf", ifname, "proxy_arp"]),
            "1".into(),
        ));
        out.push((
            key(&["net", "ipv4", "neigh", ifname, "proxy_delay"]),
            "0".into(),
        ));
        out.push((
            key(&["net", "ipv4", "conf", ifname, "forwarding"]),
            "1".into(),
        ));
    }
    if ipv6 {
        out.push((
            key(&["net", "ipv6", "conf", ifname, "proxy_ndp"]),
            "1".into(),
        ));
        out.push((
            key(&["net", "ipv6", "conf", ifname, "forwarding"]),
            "1".into(),
        ));
        out.push((
            key(&["net", "ipv6", "conf", ifname, "accept_ra"]),
            "0".into(),
        ));
    }
    out
}

/// The dotted name of a key, for logs (`net.ipv4.conf.mgy….proxy_arp`).
pub fn dotted(k: &Key) -> String {
    k.join(".")
}

/// Keeps the desired sysctls written.
#[derive(Debug)]
pub struct SysctlDriver {
    root: PathBuf,
    tracker: DeltaTracker<Key, String>,
}

/// One sysctl that could not be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysctlFailure {
    /// `net.ipv4.conf.X.proxy_arp`.
    pub name: String,
    /// The kernel's reason (an interface that is gone: "No such file or directory").
    pub error: String,
}

impl Default for SysctlDriver {
    fn default() -> Self {
        Self::new()
    }
}

impl SysctlDriver {
    /// A driver writing under `/proc/sys` of the calling thread's network namespace.
    pub fn new() -> Self {
        Self::with_root("/proc/sys")
    }

    /// A driver writing under another root (tests).
    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            tracker: DeltaTracker::new(),
        }
    }

    fn path(&self, k: &Key) -> PathBuf {
        k.iter().fold(self.root.clone(), |p, c| p.join(c))
    }

    /// Wants these settings.
    pub fn set(&mut self, settings: impl IntoIterator<Item = (Key, String)>) {
        for (k, v) in settings {
            self.tracker.set_desired(k, v);
        }
    }

    /// Forgets the settings of an interface that is gone (nothing is written back).
    pub fn forget_interface(&mut self, ifname: &str) {
        let gone: Vec<Key> = self
            .tracker
            .desired()
            .keys()
            .filter(|k| k.get(3).is_some_and(|c| c == ifname))
            .cloned()
            .collect();
        for k in gone {
            self.tracker.remove_desired(&k);
            self.tracker.removed(&k);
        }
    }

    /// Reads the desired sysctls back from the kernel, then writes what differs.
    pub fn resync(&mut self) -> Vec<SysctlFailure> {
        self.resync_counted().1
    }

    /// As [`Self::resync`], also counting the sysctls that had drifted (changed behind our back,
    /// or never written) and were written again.
    pub fn resync_counted(&mut self) -> (usize, Vec<SysctlFailure>) {
        let actual: BTreeMap<Key, String> = self
            .tracker
            .desired()
            .keys()
            .filter_map(|k| read(&self.path(k)).map(|v| (k.clone(), v)))
            .collect();
        self.tracker.replace_actual(actual);
        let drifted = self.tracker.pending_updates().len();
        let failures = self.apply();
        if drifted > failures.len() {
            info!(repaired = drifted - failures.len(), "sysctls repaired");
        }
        (drifted - failures.len().min(drifted), failures)
    }

    /// Writes the desired sysctls not yet known to be set.
    pub fn apply(&mut self) -> Vec<SysctlFailure> {
        let mut failures = Vec::new();
        for (k, v) in self.tracker.pending_updates() {
            match std::fs::write(self.path(&k), format!("{v}\n")) {
                Ok(()) => self.tracker.applied(k, v),
                Err(e) => {
                    warn!(sysctl = %dotted(&k), value = %v, error = %e, "cannot set sysctl; will retry");
                    failures.push(SysctlFailure {
                        name: dotted(&k),
                        error: e.to_string(),
                    });
                }
            }
        }
        failures
    }
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dual_stack_veth_gets_proxy_arp_and_proxy_ndp() {
        let names: Vec<String> = interface_sysctls("mgyabc", true, true)
            .iter()
            .map(|(k, v)| format!("{}={v}", dotted(k)))
            .collect();
        assert_eq!(
            names,
            [
                "net.ipv4.conf.mgyabc.proxy_arp=1",
                "net.ipv4.neigh.mgyabc.proxy_delay=0",
                "net.ipv4.conf.mgyabc.forwarding=1",
                "net.ipv6.conf.mgyabc.proxy_ndp=1",
                "net.ipv6.conf.mgyabc.forwarding=1",
                "net.ipv6.conf.mgyabc.accept_ra=0"
            ]
        );
    }

    #[test]
    fn drift_is_rewritten_and_a_missing_interface_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("net/ipv4/conf/mgyabc");
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::create_dir_all(dir.path().join("net/ipv4/neigh/mgyabc")).unwrap();
        let mut d = SysctlDriver::with_root(dir.path());
        d.set(interface_sysctls("mgyabc", true, false));
        d.set(interface_sysctls("mgygone", true, false));
        let failures = d.resync();
        assert_eq!(failures.len(), 3, "{failures:?}");
        assert!(failures.iter().all(|f| f.name.contains("mgygone")));
        assert_eq!(
            std::fs::read_to_string(conf.join("proxy_arp")).unwrap(),
            "1\n"
        );
        d.forget_interface("mgygone");
        std::fs::write(conf.join("proxy_arp"), "0\n").unwrap();
        assert!(d.resync().is_empty());
        assert_eq!(
            std::fs::read_to_string(conf.join("proxy_arp")).unwrap(),
            "1\n"
        );
    }
}
