//! Import and export policy: prefix lists with `ge`/`le`, as operators know them from
//! Cisco-style and BIRD/FRR configurations.
//!
//! An entry matches a prefix of its family that lies within `prefix` and whose length
//! is in the entry's range: exactly `prefix`'s length when neither bound is given,
//! `ge..=max` with only `ge`, `len..=le` with only `le`. The first matching entry
//! decides; a list that matches nothing denies (implicit deny). A peer without a list
//! accepts or advertises everything.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::wire::Prefix;

/// What a matching entry does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Accept (import) or advertise (export).
    #[default]
    Permit,
    /// Drop.
    Deny,
}

/// One prefix-list entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefixListEntry {
    /// The covering prefix.
    pub prefix: IpNet,
    /// Minimum length matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ge: Option<u8>,
    /// Maximum length matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub le: Option<u8>,
    /// Permit (default) or deny.
    #[serde(default)]
    pub action: Verdict,
}

/// Why an entry is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// `ge`/`le` outside `prefix-len..=max` or `ge > le`.
    #[error("entry {index} ({prefix}): ge/le must satisfy len <= ge <= le <= {max}")]
    BadRange {
        /// Position in the list.
        index: usize,
        /// The entry's prefix.
        prefix: IpNet,
        /// Family's maximum length.
        max: u8,
    },
}

impl PrefixListEntry {
    /// A permit entry.
    pub fn permit(prefix: IpNet, ge: Option<u8>, le: Option<u8>) -> Self {
        Self {
            prefix,
            ge,
            le,
            action: Verdict::Permit,
        }
    }

    fn range(&self) -> (u8, u8) {
        let len = self.prefix.prefix_len();
        let max = self.prefix.max_prefix_len();
        match (self.ge, self.le) {
            (None, None) => (len, len),
            (Some(ge), None) => (ge, max),
            (None, Some(le)) => (len, le),
            (Some(ge), Some(le)) => (ge, le),
        }
    }

    /// Whether the entry matches `p`.
    pub fn matches(&self, p: Prefix) -> bool {
        let (lo, hi) = self.range();
        Prefix::from(self.prefix.trunc()).contains(p) && (lo..=hi).contains(&p.len())
    }
}

/// An ordered prefix list.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PrefixList {
    /// Entries, first match wins.
    pub entries: Vec<PrefixListEntry>,
}

impl PrefixList {
    /// A list of these entries.
    pub fn new(entries: Vec<PrefixListEntry>) -> Self {
        Self { entries }
    }

    /// Checks every entry's `ge`/`le`.
    pub fn validate(&self) -> Result<(), PolicyError> {
        for (index, e) in self.entries.iter().enumerate() {
            let len = e.prefix.prefix_len();
            let max = e.prefix.max_prefix_len();
            let (lo, hi) = e.range();
            if lo < len || hi > max || lo > hi {
                return Err(PolicyError::BadRange {
                    index,
                    prefix: e.prefix,
                    max,
                });
            }
        }
        Ok(())
    }

    /// Whether `p` is permitted.
    pub fn permits(&self, p: Prefix) -> bool {
        self.entries
            .iter()
            .find(|e| e.matches(p))
            .is_some_and(|e| e.action == Verdict::Permit)
    }
}

/// A peer's import and export filters. `None` permits everything.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct PeerPolicy {
    /// Applied to routes received from the peer.
    pub import: Option<PrefixList>,
    /// Applied to routes advertised to the peer.
    pub export: Option<PrefixList>,
}

impl PeerPolicy {
    /// Whether a received route for `p` is accepted.
    pub fn imports(&self, p: Prefix) -> bool {
        self.import.as_ref().is_none_or(|l| l.permits(p))
    }
    /// Whether a route for `p` may be advertised.
    pub fn exports(&self, p: Prefix) -> bool {
        self.export.as_ref().is_none_or(|l| l.permits(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        s.parse::<IpNet>().unwrap().into()
    }

    fn entry(s: &str, ge: Option<u8>, le: Option<u8>) -> PrefixListEntry {
        PrefixListEntry::permit(s.parse().unwrap(), ge, le)
    }

    #[test]
    fn entry_without_bounds_matches_exactly() {
        let e = entry("100.64.0.0/10", None, None);
        assert!(e.matches(p("100.64.0.0/10")));
        assert!(!e.matches(p("100.64.0.0/24")));
    }

    #[test]
    fn ge_and_le_bound_the_length() {
        let e = entry("100.64.0.0/10", Some(26), Some(32));
        assert!(e.matches(p("100.64.1.0/26")));
        assert!(e.matches(p("100.64.1.1/32")));
        assert!(!e.matches(p("100.64.1.0/24")));
        assert!(!e.matches(p("10.0.0.0/26")));
        let ge = entry("fd00::/8", Some(64), None);
        assert!(ge.matches(p("fd00:1::/128")));
        assert!(!ge.matches(p("100.64.0.0/26")));
        let le = entry("100.64.0.0/10", None, Some(16));
        assert!(le.matches(p("100.64.0.0/16")));
        assert!(!le.matches(p("100.64.0.0/17")));
    }

    #[test]
    fn first_match_wins_and_nothing_matched_is_denied() {
        let mut deny = entry("100.64.0.0/16", Some(16), Some(32));
        deny.action = Verdict::Deny;
        let l = PrefixList::new(vec![deny, entry("100.64.0.0/10", Some(10), Some(32))]);
        assert!(!l.permits(p("100.64.5.0/24")));
        assert!(l.permits(p("100.65.5.0/24")));
        assert!(!l.permits(p("10.0.0.0/8")));
    }

    #[test]
    fn inverted_or_out_of_range_bounds_are_invalid() {
        assert!(
            PrefixList::new(vec![entry("100.64.0.0/10", Some(8), None)])
                .validate()
                .is_err()
        );
        assert!(
            PrefixList::new(vec![entry("100.64.0.0/10", Some(28), Some(24))])
                .validate()
                .is_err()
        );
        assert!(
            PrefixList::new(vec![entry("fd00::/8", None, Some(129))])
                .validate()
                .is_err()
        );
        assert!(
            PrefixList::new(vec![entry("fd00::/8", Some(48), Some(128))])
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn no_list_permits_everything() {
        assert!(PeerPolicy::default().imports(p("0.0.0.0/0")));
    }
}
