//! One desired-vs-actual tracker for every dataplane driver (Felix's `deltatracker`).
//!
//! A driver states what it wants (`desired`), records what the kernel has (`actual`, from a dump
//! or from its own successful writes), and asks for the difference: what to write and what to
//! remove. Nothing here does I/O, so each driver's logic is tested without a kernel.

use std::collections::BTreeMap;

/// Desired and actual state of one kind of kernel object, keyed by `K`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaTracker<K: Ord, V> {
    desired: BTreeMap<K, V>,
    actual: BTreeMap<K, V>,
}

impl<K: Ord, V> Default for DeltaTracker<K, V> {
    fn default() -> Self {
        Self {
            desired: BTreeMap::new(),
            actual: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Clone, V: PartialEq + Clone> DeltaTracker<K, V> {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Wants `key` to be `value`.
    pub fn set_desired(&mut self, key: K, value: V) {
        self.desired.insert(key, value);
    }

    /// No longer wants `key`.
    pub fn remove_desired(&mut self, key: &K) {
        self.desired.remove(key);
    }

    /// Replaces the whole desired state.
    pub fn replace_desired(&mut self, desired: BTreeMap<K, V>) {
        self.desired = desired;
    }

    /// Replaces what the kernel is known to hold (after a dump).
    pub fn replace_actual(&mut self, actual: BTreeMap<K, V>) {
        self.actual = actual;
    }

    /// Records a successful write of `key`.
    pub fn applied(&mut self, key: K, value: V) {
        self.actual.insert(key, value);
    }

    /// Records a successful removal of `key`.
    pub fn removed(&mut self, key: &K) {
        self.actual.remove(key);
    }

    /// What is desired.
    pub fn desired(&self) -> &BTreeMap<K, V> {
        &self.desired
    }

    /// What the kernel is known to hold.
    pub fn actual(&self) -> &BTreeMap<K, V> {
        &self.actual
    }

    /// Keys to write: desired and missing or different in the kernel.
    pub fn pending_updates(&self) -> Vec<(K, V)> {
        self.desired
            .iter()
            .filter(|(k, v)| self.actual.get(k) != Some(v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Keys to remove: in the kernel and not desired.
    pub fn pending_deletes(&self) -> Vec<(K, V)> {
        self.actual
            .iter()
            .filter(|(k, _)| !self.desired.contains_key(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Whether the kernel matches the desired state as far as the tracker knows.
    pub fn in_sync(&self) -> bool {
        self.desired == self.actual
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_new_desire_is_an_update_and_a_stale_actual_a_delete() {
        let mut t = DeltaTracker::new();
        t.set_desired(1, "a");
        t.replace_actual(BTreeMap::from([(2, "b")]));
        assert_eq!(t.pending_updates(), vec![(1, "a")]);
        assert_eq!(t.pending_deletes(), vec![(2, "b")]);
    }

    #[test]
    fn a_changed_value_is_rewritten_not_deleted() {
        let mut t = DeltaTracker::new();
        t.set_desired(1, "new");
        t.applied(1, "old");
        assert_eq!(t.pending_updates(), vec![(1, "new")]);
        assert!(t.pending_deletes().is_empty());
    }

    proptest! {
        #[test]
        fn applying_every_pending_change_brings_the_tracker_in_sync(
            desired in prop::collection::btree_map(0u8..40, 0u8..4, 0..30),
            actual in prop::collection::btree_map(0u8..40, 0u8..4, 0..30),
        ) {
            let mut t = DeltaTracker::new();
            t.replace_desired(desired.clone());
            t.replace_actual(actual);
            for (k, v) in t.pending_updates() {
                t.applied(k, v);
            }
            for (k, _) in t.pending_deletes() {
                t.removed(&k);
            }
            prop_assert!(t.in_sync());
            prop_assert_eq!(t.actual(), &desired);
            prop_assert!(t.pending_updates().is_empty() && t.pending_deletes().is_empty());
        }
    }
}
