//! Object identity and the etcd v3 key layout.
//!
//! Every stored object is named by `(kind, namespace, name)`. Cluster-scoped kinds (IPPool, Node,
//! BGPPeer, …) have no namespace; namespaced kinds (WorkloadEndpoint, NetworkPolicy) have one.
//!
//! In etcd the layout is
//!
//! ```text
//! /margay/v1/<kind>/<name>                  cluster-scoped resources
//! /margay/v1/<kind>/<namespace>/<name>      namespaced resources
//! /margay/ipam/v1/<kind>/<name>             IPAM state (blocks, affinities, handles, config)
//! ```
//!
//! IPAM lives under its own prefix so that an operator can back it up, watch it or compact it on
//! its own, as Calico does with `/calico/ipam/v2`. Kinds are lower-case plurals, as in a
//! Kubernetes resource path. Names and namespaces are DNS-1123 labels or subdomains, so they never
//! contain `/`; a key that does is rejected, never silently mangled.

use std::fmt;

/// The root of every key Margay writes in etcd.
pub const ETCD_ROOT: &str = "/margay";

/// Kinds stored under the IPAM prefix rather than the resource prefix.
const IPAM_KINDS: &[&str] = &[
    "ipamblocks",
    "blockaffinities",
    "ipamhandles",
    "ipamconfigs",
];

/// Names one stored object: its kind (lower-case plural), optional namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// Lower-case plural kind, e.g. `ippools`, `workloadendpoints`.
    pub kind: String,
    /// Namespace for namespaced kinds, `None` for cluster-scoped ones.
    pub namespace: Option<String>,
    /// The object's name.
    pub name: String,
}

/// An object's revision: opaque, compared only for equality, meaningful only for that object.
///
/// In etcd it is the key's `mod_revision`; in Kubernetes the object's `resourceVersion`. Callers
/// never do arithmetic on it: a Kubernetes resourceVersion is not a global counter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Revision(pub String);

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a key could not be built or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// A kind, namespace or name was empty or held a character that cannot appear in a key.
    #[error("{what} {value:?} is not valid in a datastore key: {why}")]
    InvalidPart {
        /// Which part: `kind`, `namespace` or `name`.
        what: &'static str,
        /// The offending value.
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// An etcd key that is not under Margay's layout.
    #[error("etcd key {0:?} is not a Margay key (expected /margay/v1/<kind>/[<namespace>/]<name>)")]
    NotOurs(String),
}

fn check_part(what: &'static str, value: &str) -> Result<(), KeyError> {
    let why = if value.is_empty() {
        "it is empty"
    } else if value.contains('/') {
        "it contains '/'"
    } else if value == "." || value == ".." {
        "it is a path component"
    } else if value.chars().any(|c| c.is_control() || c.is_whitespace()) {
        "it contains white space or a control character"
    } else {
        return Ok(());
    };
    Err(KeyError::InvalidPart {
        what,
        value: value.to_owned(),
        why,
    })
}

impl Key {
    /// A key for a cluster-scoped object.
    pub fn cluster(kind: &str, name: &str) -> Result<Self, KeyError> {
        check_part("kind", kind)?;
        check_part("name", name)?;
        Ok(Self {
            kind: kind.to_owned(),
            namespace: None,
            name: name.to_owned(),
        })
    }

    /// A key for a namespaced object.
    pub fn namespaced(kind: &str, namespace: &str, name: &str) -> Result<Self, KeyError> {
        check_part("kind", kind)?;
        check_part("namespace", namespace)?;
        check_part("name", name)?;
        Ok(Self {
            kind: kind.to_owned(),
            namespace: Some(namespace.to_owned()),
            name: name.to_owned(),
        })
    }

    /// Whether this kind is IPAM state (stored under `/margay/ipam/v1`).
    pub fn is_ipam(&self) -> bool {
        IPAM_KINDS.contains(&self.kind.as_str())
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}/{}/{}", self.kind, ns, self.name),
            None => write!(f, "{}/{}", self.kind, self.name),
        }
    }
}

/// The etcd prefix under which every object of `kind` lives (ends with `/`), for list and watch.
pub fn etcd_kind_prefix(kind: &str) -> String {
    if IPAM_KINDS.contains(&kind) {
        format!("{ETCD_ROOT}/ipam/v1/{kind}/")
    } else {
        format!("{ETCD_ROOT}/v1/{kind}/")
    }
}

/// The etcd key of one object.
pub fn etcd_key(key: &Key) -> String {
    let mut out = etcd_kind_prefix(&key.kind);
    if let Some(ns) = &key.namespace {
        out.push_str(ns);
        out.push('/');
    }
    out.push_str(&key.name);
    out
}

/// Parses an etcd key back into a [`Key`]; the inverse of [`etcd_key`].
pub fn parse_etcd_key(raw: &str) -> Result<Key, KeyError> {
    let not_ours = || KeyError::NotOurs(raw.to_owned());
    let rest = raw.strip_prefix(ETCD_ROOT).ok_or_else(not_ours)?;
    let (ipam, rest) = match rest.strip_prefix("/ipam/v1/") {
        Some(r) => (true, r),
        None => (false, rest.strip_prefix("/v1/").ok_or_else(not_ours)?),
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let key = match parts.as_slice() {
        [kind, name] => Key::cluster(kind, name),
        [kind, ns, name] => Key::namespaced(kind, ns, name),
        _ => return Err(not_ours()),
    }
    .map_err(|_| not_ours())?;
    if key.is_ipam() != ipam {
        return Err(not_ours());
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cluster_scoped_resources_live_under_v1() {
        let k = Key::cluster("ippools", "default-ipv4").unwrap();
        assert_eq!(etcd_key(&k), "/margay/v1/ippools/default-ipv4");
    }

    #[test]
    fn namespaced_resources_carry_their_namespace() {
        let k =
            Key::namespaced("workloadendpoints", "kube-system", "node1-k8s-coredns-eth0").unwrap();
        assert_eq!(
            etcd_key(&k),
            "/margay/v1/workloadendpoints/kube-system/node1-k8s-coredns-eth0"
        );
    }

    #[test]
    fn ipam_state_has_its_own_prefix() {
        let k = Key::cluster("ipamblocks", "100-64-0-0-26").unwrap();
        assert_eq!(etcd_key(&k), "/margay/ipam/v1/ipamblocks/100-64-0-0-26");
        assert_eq!(
            etcd_kind_prefix("ipamblocks"),
            "/margay/ipam/v1/ipamblocks/"
        );
    }

    #[test]
    fn a_name_with_a_slash_is_rejected_with_the_offending_value() {
        let err = Key::cluster("ippools", "a/b").unwrap_err();
        assert_eq!(
            err.to_string(),
            "name \"a/b\" is not valid in a datastore key: it contains '/'"
        );
    }

    #[test]
    fn foreign_keys_are_not_ours() {
        for raw in [
            "/calico/v1/ippools/x",
            "/margay/v2/ippools/x",
            "/margay/v1/ippools",
            "/margay/v1/ipamblocks/x",
        ] {
            assert_eq!(
                parse_etcd_key(raw),
                Err(KeyError::NotOurs(raw.to_owned())),
                "{raw}"
            );
        }
    }

    fn part() -> impl Strategy<Value = String> {
        "[a-z0-9][a-z0-9.-]{0,20}".prop_filter("not a path component", |s| s != "." && s != "..")
    }

    proptest! {
        #[test]
        fn etcd_keys_round_trip(kind in prop::sample::select(vec!["ippools", "nodes", "ipamblocks", "workloadendpoints"]),
                                ns in prop::option::of(part()), name in part()) {
            let key = match &ns {
                Some(ns) => Key::namespaced(kind, ns, &name).unwrap(),
                None => Key::cluster(kind, &name).unwrap(),
            };
            prop_assert_eq!(parse_etcd_key(&etcd_key(&key)).unwrap(), key);
        }
    }
}
