//! Host-side interface names.
//!
//! As Calico: a fixed prefix and the first 11 hex characters of the SHA-1 of the endpoint id
//! (`NAMESPACE.POD` for a Kubernetes pod, as Calico's `VethNameForWorkload`; the IPAM handle when
//! the runtime names no pod), so the name is stable across plugin runs (DEL finds what ADD made
//! without any state), fits IFNAMSIZ (15 characters) and tells an operator at a glance which
//! links are Margay's. In Kubernetes mode the agent derives the same name from the Pod
//! ([`margay_api::pod::host_interface_name`]), so the two must agree: both use that function.

pub use margay_api::pod::HOST_INTERFACE_PREFIX as HOST_PREFIX;

/// The fixed MAC of every host-side veth (as Calico), so that the pod's neighbour entry for
/// 169.254.1.1 never changes and IPv6 gets the link-local `fe80::ecee:eeff:feee:eeee`.
pub const HOST_MAC: [u8; 6] = [0xee; 6];

/// The host-side veth name for an endpoint id (e.g. `"default.nginx-1"` or a handle).
pub fn host_veth_name(endpoint_id: &str) -> String {
    margay_api::pod::host_interface_name(endpoint_id)
}

/// The host-side veth name of an attachment: from the pod's namespace and name when the runtime
/// gave them (as the agent derives it from the Pod), else from the IPAM handle.
pub fn attachment_veth_name(namespace: &str, pod: &str, handle_id: &str) -> String {
    if pod.is_empty() {
        host_veth_name(handle_id)
    } else {
        let ns = if namespace.is_empty() {
            "default"
        } else {
            namespace
        };
        host_veth_name(&margay_api::pod::pod_endpoint_id(ns, pod))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_name_is_the_prefix_and_eleven_hex_chars_of_sha1() {
        // `printf default.nginx | sha1sum` = c440f455693b69cdd48a37aa5ecd78038f50413d
        assert_eq!(host_veth_name("default.nginx"), "mgyc440f455693");
    }

    #[test]
    fn a_pods_veth_is_named_after_its_namespace_and_name() {
        assert_eq!(
            attachment_veth_name("default", "nginx", "net.cid"),
            "mgyc440f455693"
        );
        assert_eq!(
            attachment_veth_name("", "nginx", "net.cid"),
            "mgyc440f455693"
        );
        assert_eq!(
            attachment_veth_name("", "", "net.cid"),
            host_veth_name("net.cid")
        );
    }

    proptest! {
        #[test]
        fn names_fit_ifnamsiz_and_are_stable(id in ".{0,200}") {
            let a = host_veth_name(&id);
            prop_assert!(a.len() <= 15);
            prop_assert!(a.starts_with(HOST_PREFIX));
            prop_assert_eq!(a, host_veth_name(&id));
        }
    }
}
