//! Hash-consing of path attributes: every distinct attribute set is stored once and
//! shared by every route (and every peer's path) that carries it. A route reflector
//! with a million routes from one injector holds one `PathAttrs`, not a million.

use std::collections::HashSet;
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use super::table::FxHasher;
use crate::wire::PathAttrs;

/// The attribute interner.
#[derive(Debug, Default)]
pub struct Interner {
    set: HashSet<Arc<PathAttrs>, BuildHasherDefault<FxHasher>>,
    since_gc: usize,
}

impl Interner {
    /// The shared copy of `a`.
    pub fn intern(&mut self, a: PathAttrs) -> Arc<PathAttrs> {
        if let Some(x) = self.set.get(&a) {
            return x.clone();
        }
        let x = Arc::new(a);
        self.set.insert(x.clone());
        self.since_gc += 1;
        if self.since_gc > 4096 && self.since_gc > self.set.len() / 2 {
            self.gc();
        }
        x
    }

    /// Drops attribute sets no route uses any more.
    pub fn gc(&mut self) {
        self.set.retain(|a| Arc::strong_count(a) > 1);
        self.since_gc = 0;
    }

    /// Distinct attribute sets held.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_attributes_share_one_allocation_and_unused_ones_are_collected() {
        let mut i = Interner::default();
        let a = i.intern(PathAttrs {
            med: Some(1),
            ..PathAttrs::default()
        });
        let b = i.intern(PathAttrs {
            med: Some(1),
            ..PathAttrs::default()
        });
        assert!(Arc::ptr_eq(&a, &b));
        let c = i.intern(PathAttrs {
            med: Some(2),
            ..PathAttrs::default()
        });
        assert_eq!(i.len(), 2);
        drop(c);
        i.gc();
        assert_eq!(i.len(), 1);
    }
}
