//! Object names: DNS-1123 checks and the names Margay derives for IPAM objects.

/// Why a name is not a valid DNS-1123 subdomain, or `None` when it is one.
///
/// A subdomain is at most 253 characters of lowercase letters, digits, `-` and `.`, and starts and
/// ends with a letter or digit (every dot-separated part too, as Kubernetes checks it).
pub fn dns1123_subdomain_error(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("must not be empty".to_string());
    }
    if name.len() > 253 {
        return Some(format!(
            "is {} characters long, at most 253 allowed",
            name.len()
        ));
    }
    for part in name.split('.') {
        if let Some(why) = label_error(part, SUBDOMAIN_RULE) {
            return Some(why);
        }
    }
    None
}

/// Why a name is not a valid DNS-1123 label (at most 63 characters, no dots), or `None`.
pub fn dns1123_label_error(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("must not be empty".to_string());
    }
    if name.len() > 63 {
        return Some(format!(
            "is {} characters long, at most 63 allowed",
            name.len()
        ));
    }
    label_error(name, LABEL_RULE)
}

const SUBDOMAIN_RULE: &str =
    "lowercase letters, digits, '-' and '.', starting and ending with a letter or digit";
const LABEL_RULE: &str =
    "lowercase letters, digits and '-', starting and ending with a letter or digit";

fn label_error(part: &str, rule: &str) -> Option<String> {
    if part.is_empty() {
        return Some(format!("has an empty part ({rule})"));
    }
    if let Some(c) = part
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Some(format!("contains {c:?} ({rule})"));
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !alnum(part.chars().next()) || !alnum(part.chars().last()) {
        return Some(format!(
            "must start and end with a letter or digit ({rule})"
        ));
    }
    None
}

/// `true` when `name` is a valid DNS-1123 subdomain.
pub fn is_dns1123_subdomain(name: &str) -> bool {
    dns1123_subdomain_error(name).is_none()
}

/// The part of an object name that stands for a CIDR, as Calico writes it: `10.0.0.0/26` becomes
/// `10-0-0-0-26`, `fd00:1::/122` becomes `fd00-1--122`.
pub fn cidr_name_part(cidr: &ipnet::IpNet) -> String {
    cidr.to_string().replace(['.', ':', '/'], "-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subdomains_follow_kubernetes() {
        for ok in ["a", "node-1", "node.node-1", "k8s-pod-network.0f1e", "1a"] {
            assert!(is_dns1123_subdomain(ok), "{ok}");
        }
        for bad in ["", "A", "a_b", "-a", "a-", "a..b", ".a", "a.", "a.-b"] {
            assert!(!is_dns1123_subdomain(bad), "{bad}");
        }
        assert!(is_dns1123_subdomain(&"a".repeat(253)));
        assert!(!is_dns1123_subdomain(&"a".repeat(254)));
    }

    #[test]
    fn labels_have_no_dots_and_at_most_63_characters() {
        assert_eq!(dns1123_label_error("default"), None);
        assert!(dns1123_label_error("a.b").is_some());
        assert!(dns1123_label_error(&"a".repeat(64)).is_some());
        assert_eq!(
            dns1123_label_error(""),
            Some("must not be empty".to_string())
        );
    }
}
