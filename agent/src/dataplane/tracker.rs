//! One desired-vs-actual tracker for every dataplane driver (Felix's `deltatracker`).
//!
//! A driver states what it wants (`desired`), records what the kernel has (`actual`, from a dump
//! or from its own successful writes), and asks for the difference: what to write and what to
//! remove. Nothing here does I/O, so each driver's logic is tested without a kernel.
//!
//! The keys that may differ are kept in a dirty set, so asking for the difference costs what
//! changed, not the size of the table: 100k learned routes arriving in batches are not compared
//! again at every batch.

use std::collections::{BTreeMap, BTreeSet};

/// Desired and actual state of one kind of kernel object, keyed by `K`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaTracker<K: Ord, V> {
    desired: BTreeMap<K, V>,
    actual: BTreeMap<K, V>,
    /// Every key whose desired and actual values may differ (a superset of those that do).
    dirty: BTreeSet<K>,
}

impl<K: Ord, V> Default for DeltaTracker<K, V> {
    fn default() -> Self {
        Self {
            desired: BTreeMap::new(),
            actual: BTreeMap::new(),
            dirty: BTreeSet::new(),
        }
    }
}

impl<K: Ord + Clone, V: PartialEq + Clone> DeltaTracker<K, V> {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks `key` dirty unless its desired and actual values agree.
    fn recheck(&mut self, key: &K) {
        let differ = self.desired.get(key) != self.actual.get(key);
        self.mark(key, differ);
    }

    fn mark(&mut self, key: &K, differ: bool) {
        if differ {
            self.dirty.insert(key.clone());
        } else {
            self.dirty.remove(key);
        }
    }

    /// Recomputes the dirty set from scratch (after a wholesale replacement).
    fn recheck_all(&mut self) {
        let keys: BTreeSet<K> = self
            .desired
            .keys()
            .chain(self.actual.keys())
            .cloned()
            .collect();
        self.dirty.clear();
        for k in keys {
            self.recheck(&k);
        }
    }

    /// Wants `key` to be `value`.
    pub fn set_desired(&mut self, key: K, value: V) {
        // One lookup of the other side, not a second one of this side: 100k learned routes
        // pass through here in a burst.
        let differ = self.actual.get(&key) != Some(&value);
        self.mark(&key, differ);
        self.desired.insert(key, value);
    }

    /// No longer wants `key`.
    pub fn remove_desired(&mut self, key: &K) {
        self.desired.remove(key);
        let differ = self.actual.contains_key(key);
        self.mark(key, differ);
    }

    /// Replaces the whole desired state.
    pub fn replace_desired(&mut self, desired: BTreeMap<K, V>) {
        self.desired = desired;
        self.recheck_all();
    }

    /// Replaces what the kernel is known to hold (after a dump).
    pub fn replace_actual(&mut self, actual: BTreeMap<K, V>) {
        self.actual = actual;
        self.recheck_all();
    }

    /// Records a successful write of `key`.
    pub fn applied(&mut self, key: K, value: V) {
        let differ = self.desired.get(&key) != Some(&value);
        self.mark(&key, differ);
        self.actual.insert(key, value);
    }

    /// Records a successful removal of `key`.
    pub fn removed(&mut self, key: &K) {
        self.actual.remove(key);
        let differ = self.desired.contains_key(key);
        self.mark(key, differ);
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
        self.dirty
            .iter()
            .filter_map(|k| {
                let v = self.desired.get(k)?;
                (self.actual.get(k) != Some(v)).then(|| (k.clone(), v.clone()))
            })
            .collect()
    }

    /// Keys to remove: in the kernel and not desired.
    pub fn pending_deletes(&self) -> Vec<(K, V)> {
        self.dirty
            .iter()
            .filter(|k| !self.desired.contains_key(k))
            .filter_map(|k| self.actual.get(k).map(|v| (k.clone(), v.clone())))
            .collect()
    }

    /// Whether the kernel matches the desired state as far as the tracker knows.
    pub fn in_sync(&self) -> bool {
        self.dirty.is_empty()
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

        #[test]
        fn the_dirty_set_finds_exactly_what_a_full_comparison_finds(
            ops in prop::collection::vec((0u8..6, 0u8..20, 0u8..3), 0..80),
        ) {
            let mut t = DeltaTracker::new();
            for (op, k, v) in ops {
                match op {
                    0 => t.set_desired(k, v),
                    1 => t.remove_desired(&k),
                    2 => t.applied(k, v),
                    3 => t.removed(&k),
                    4 => {
                        let d = t.desired().clone();
                        t.replace_actual(d.into_iter().filter(|(x, _)| *x != k).collect());
                    }
                    _ => {
                        let a = t.actual().clone();
                        t.replace_desired(a);
                    }
                }
                let full_updates: Vec<(u8, u8)> = t
                    .desired()
                    .iter()
                    .filter(|(k, v)| t.actual().get(k) != Some(v))
                    .map(|(k, v)| (*k, *v))
                    .collect();
                let full_deletes: Vec<(u8, u8)> = t
                    .actual()
                    .iter()
                    .filter(|(k, _)| !t.desired().contains_key(k))
                    .map(|(k, v)| (*k, *v))
                    .collect();
                prop_assert_eq!(t.pending_updates(), full_updates);
                prop_assert_eq!(t.pending_deletes(), full_deletes);
                prop_assert_eq!(t.in_sync(), t.desired() == t.actual());
            }
        }
    }
}
