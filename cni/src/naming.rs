//! Host-side interface names.
//!
//! As Calico: a fixed prefix and the first 11 hex characters of the SHA-1 of the endpoint id, so
//! the name is stable across plugin runs (DEL finds what ADD made without any state), fits
//! IFNAMSIZ (15 characters) and tells an operator at a glance which links are Margay's.

/// The prefix of every host-side veth Margay creates.
pub const HOST_PREFIX: &str = "mgy";

/// The fixed MAC of every host-side veth (as Calico), so that the pod's neighbour entry for
/// 169.254.1.1 never changes and IPv6 gets the link-local `fe80::ecee:eeff:feee:eeee`.
pub const HOST_MAC: [u8; 6] = [0xee; 6];

/// The host-side veth name for an endpoint id (e.g. `"default.nginx-1"` or a container id).
pub fn host_veth_name(endpoint_id: &str) -> String {
    let digest = sha1_smol::Sha1::from(endpoint_id).digest().to_string();
    format!("{HOST_PREFIX}{}", &digest[..11])
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
