//! Which pools an allocation may use, and what a pod asks for in its annotations (pure).
//!
//! A pool is usable for a pod on a node when it is enabled, of the right family, allows
//! workload addresses and its `nodeSelector` matches the node's labels. `Manual` pools are used
//! only when asked for by name. A pod (or, failing that, its namespace) may ask for pools with
//! the annotations [`ANNOTATION_IPV4_POOLS`] / [`ANNOTATION_IPV6_POOLS`] (JSON lists of pool
//! names or CIDRs, as Calico's `cni.projectcalico.org/ipv4pools`), and for given addresses with
//! [`ANNOTATION_IP_ADDRS`] (pod only).

use std::collections::BTreeMap;
use std::net::IpAddr;

use margay_api::IPPool;
use margay_api::ippool::{AllowedUse, AssignmentMode};

use crate::errors::{Family, IpamError, Result};

/// Pod or namespace annotation: the IPv4 pools to allocate from, a JSON list of names or CIDRs.
pub const ANNOTATION_IPV4_POOLS: &str = "margay.dev/ipv4pools";
/// Pod or namespace annotation: the IPv6 pools to allocate from, a JSON list of names or CIDRs.
pub const ANNOTATION_IPV6_POOLS: &str = "margay.dev/ipv6pools";
/// Pod annotation: the exact addresses the pod gets, a JSON list.
pub const ANNOTATION_IP_ADDRS: &str = "margay.dev/ipAddrs";

/// What a pod asked for through annotations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodRequest {
    /// IPv4 pools asked for (names or CIDRs), if any.
    pub ipv4_pools: Option<Vec<String>>,
    /// IPv6 pools asked for (names or CIDRs), if any.
    pub ipv6_pools: Option<Vec<String>>,
    /// Exact addresses asked for, if any.
    pub ip_addrs: Option<Vec<IpAddr>>,
}

impl PodRequest {
    /// The pools asked for in `family`.
    pub fn pools(&self, family: Family) -> Option<&[String]> {
        match family {
            Family::V4 => self.ipv4_pools.as_deref(),
            Family::V6 => self.ipv6_pools.as_deref(),
        }
    }
}

fn string_list(name: &str, value: &str) -> Result<Vec<String>> {
    let bad = |why: String| IpamError::BadAnnotation {
        name: name.to_string(),
        why,
    };
    let list: Vec<String> = serde_json::from_str(value).map_err(|e| {
        bad(format!(
            "expected a JSON list of strings like [\"a\",\"b\"]: {e}"
        ))
    })?;
    if list.iter().any(|s| s.trim().is_empty()) {
        return Err(bad("contains an empty entry".into()));
    }
    Ok(list.into_iter().map(|s| s.trim().to_string()).collect())
}

/// Reads the IPAM annotations of a pod and of its namespace. The pod's pool annotations take
/// precedence over the namespace's; addresses come only from the pod.
pub fn parse_annotations(
    pod: &BTreeMap<String, String>,
    namespace: &BTreeMap<String, String>,
) -> Result<PodRequest> {
    let pools = |key: &str| -> Result<Option<Vec<String>>> {
        match pod.get(key).or_else(|| namespace.get(key)) {
            None => Ok(None),
            Some(v) => string_list(key, v).map(Some),
        }
    };
    let ip_addrs = match pod.get(ANNOTATION_IP_ADDRS) {
        None => None,
        Some(v) => {
            let list = string_list(ANNOTATION_IP_ADDRS, v)?;
            let ips = list
                .iter()
                .map(|s| {
                    s.parse::<IpAddr>().map_err(|_| IpamError::BadAnnotation {
                        name: ANNOTATION_IP_ADDRS.into(),
                        why: format!("{s:?} is not an IP address"),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Some(ips)
        }
    };
    Ok(PodRequest {
        ipv4_pools: pools(ANNOTATION_IPV4_POOLS)?,
        ipv6_pools: pools(ANNOTATION_IPV6_POOLS)?,
        ip_addrs,
    })
}

/// `name (cidr)`, how errors name a pool.
pub fn describe(pool: &IPPool) -> String {
    format!(
        "{} ({})",
        pool.metadata.name.as_deref().unwrap_or("?"),
        pool.spec.cidr
    )
}

fn pool_family(pool: &IPPool) -> Family {
    if pool.spec.is_ipv6() {
        Family::V6
    } else {
        Family::V4
    }
}

/// The pools an allocation of `family` for a pod on `node` (with `labels`) may use, in the order
/// given. `requested` (names or CIDRs) restricts the choice to those pools, which must exist.
/// Fails naming every pool and why it was skipped when none is usable.
pub fn select_pools<'a>(
    pools: &'a [IPPool],
    family: Family,
    node: &str,
    labels: &BTreeMap<String, String>,
    requested: Option<&[String]>,
    usage: AllowedUse,
) -> Result<Vec<&'a IPPool>> {
    let mut skipped = Vec::new();
    let mut usable = Vec::new();
    if let Some(req) = requested {
        for r in req {
            let found = pools.iter().any(|p| {
                p.metadata.name.as_deref() == Some(r.as_str()) || p.spec.cidr == r.as_str()
            });
            if !found {
                skipped.push(format!("requested pool {r:?} does not exist"));
            }
        }
    }
    for p in pools {
        let name = p.metadata.name.as_deref().unwrap_or("");
        let asked = requested.map(|req| req.iter().any(|r| r == name || *r == p.spec.cidr));
        let why = if pool_family(p) != family {
            continue;
        } else if asked == Some(false) {
            "not requested by the pod or namespace"
        } else if p.spec.net().is_none() {
            "its CIDR does not parse"
        } else if p.spec.disabled {
            "disabled"
        } else if !p.spec.allowed_uses.contains(&usage) {
            "allowedUses excludes this use"
        } else if asked.is_none() && p.spec.assignment_mode == AssignmentMode::Manual {
            "assignmentMode Manual and not requested"
        } else if !p.spec.usable_by_node(labels) {
            "its nodeSelector does not match the node"
        } else {
            usable.push(p);
            continue;
        };
        skipped.push(format!("{}: {why}", describe(p)));
    }
    if usable.is_empty() {
        let why = if skipped.is_empty() {
            "there are no pools of this family".to_string()
        } else {
            skipped.join("; ")
        };
        return Err(IpamError::NoPool {
            family,
            node: node.to_string(),
            why,
        });
    }
    Ok(usable)
}

/// The pool that holds `ip`, if any.
pub fn pool_containing(pools: &[IPPool], ip: IpAddr) -> Option<&IPPool> {
    pools
        .iter()
        .find(|p| p.spec.net().is_some_and(|n| n.contains(&ip)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use margay_api::IPPoolSpec;

    fn pool(name: &str, cidr: &str) -> IPPool {
        IPPool::new(name, IPPoolSpec::new(cidr))
    }

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn names(ps: &[&IPPool]) -> Vec<String> {
        ps.iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect()
    }

    #[test]
    fn pools_are_chosen_by_family_selector_and_state() {
        let mut zone_b = pool("b", "100.65.0.0/16");
        zone_b.spec.node_selector = "zone == 'b'".into();
        let mut off = pool("off", "100.66.0.0/16");
        off.spec.disabled = true;
        let mut manual = pool("manual", "100.67.0.0/16");
        manual.spec.assignment_mode = AssignmentMode::Manual;
        let mut lb = pool("lb", "100.68.0.0/16");
        lb.spec.allowed_uses = vec![AllowedUse::LoadBalancer];
        let pools = vec![
            pool("a", "100.64.0.0/16"),
            zone_b,
            off,
            manual,
            lb,
            pool("v6", "fd00:1::/48"),
        ];
        let l = labels(&[("zone", "a")]);
        let v4 = select_pools(&pools, Family::V4, "n1", &l, None, AllowedUse::Workload).unwrap();
        assert_eq!(names(&v4), ["a"]);
        let l = labels(&[("zone", "b")]);
        let v4 = select_pools(&pools, Family::V4, "n1", &l, None, AllowedUse::Workload).unwrap();
        assert_eq!(names(&v4), ["a", "b"]);
        let v6 = select_pools(&pools, Family::V6, "n1", &l, None, AllowedUse::Workload).unwrap();
        assert_eq!(names(&v6), ["v6"]);
    }

    #[test]
    fn requested_pools_are_used_by_name_or_cidr_even_when_manual() {
        let mut manual = pool("manual", "100.67.0.0/16");
        manual.spec.assignment_mode = AssignmentMode::Manual;
        let pools = vec![pool("a", "100.64.0.0/16"), manual];
        let req = vec!["manual".to_string()];
        let got = select_pools(
            &pools,
            Family::V4,
            "n1",
            &labels(&[]),
            Some(&req),
            AllowedUse::Workload,
        )
        .unwrap();
        assert_eq!(names(&got), ["manual"]);
        let req = vec!["100.64.0.0/16".to_string()];
        let got = select_pools(
            &pools,
            Family::V4,
            "n1",
            &labels(&[]),
            Some(&req),
            AllowedUse::Workload,
        )
        .unwrap();
        assert_eq!(names(&got), ["a"]);
    }

    #[test]
    fn no_usable_pool_names_each_pool_and_why() {
        let mut off = pool("off", "100.66.0.0/16");
        off.spec.disabled = true;
        let req = vec!["ghost".to_string()];
        let err = select_pools(
            &[off],
            Family::V4,
            "n1",
            &labels(&[]),
            Some(&req),
            AllowedUse::Workload,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("requested pool \"ghost\" does not exist"),
            "{err}"
        );
        assert!(err.contains("off (100.66.0.0/16): not requested"), "{err}");
        let err = select_pools(
            &[],
            Family::V6,
            "n1",
            &labels(&[]),
            None,
            AllowedUse::Workload,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("no usable IPv6 pool for node \"n1\""), "{err}");
    }

    #[test]
    fn pod_annotations_override_the_namespace_and_addresses_are_parsed() {
        let pod = labels(&[
            (ANNOTATION_IPV4_POOLS, r#"["pod-pool"]"#),
            (ANNOTATION_IP_ADDRS, r#"["100.64.0.5", "fd00::5"]"#),
        ]);
        let ns = labels(&[
            (ANNOTATION_IPV4_POOLS, r#"["ns-pool"]"#),
            (ANNOTATION_IPV6_POOLS, r#"["ns-v6"]"#),
        ]);
        let req = parse_annotations(&pod, &ns).unwrap();
        assert_eq!(req.pools(Family::V4), Some(&["pod-pool".to_string()][..]));
        assert_eq!(req.pools(Family::V6), Some(&["ns-v6".to_string()][..]));
        assert_eq!(
            req.ip_addrs,
            Some(vec![
                "100.64.0.5".parse().unwrap(),
                "fd00::5".parse().unwrap()
            ])
        );
    }

    #[test]
    fn bad_annotations_are_refused_naming_the_annotation() {
        let pod = labels(&[(ANNOTATION_IP_ADDRS, r#"["100.64.0.300"]"#)]);
        let err = parse_annotations(&pod, &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("margay.dev/ipAddrs"), "{err}");
        let pod = labels(&[(ANNOTATION_IPV4_POOLS, "pool-a")]);
        let err = parse_annotations(&pod, &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("margay.dev/ipv4pools") && err.contains("JSON list"),
            "{err}"
        );
    }

    #[test]
    fn the_pool_of_an_address_is_found() {
        let pools = vec![pool("a", "100.64.0.0/16"), pool("b", "fd00:1::/48")];
        let ip: IpAddr = "fd00:1::9".parse().unwrap();
        assert_eq!(
            pool_containing(&pools, ip)
                .unwrap()
                .metadata
                .name
                .as_deref(),
            Some("b")
        );
        assert!(pool_containing(&pools, "100.65.0.1".parse().unwrap()).is_none());
    }
}
