//! Compact route tables: one hash map per family from prefix to its paths.
//!
//! An entry is a 8-octet (IPv4) key and a 16-octet [`Paths`]: the common case of one
//! path is stored inline (an `Arc` to interned attributes and a peer index), more
//! paths go to the heap. The Loc-RIB and the Adj-RIBs-In share these entries: every
//! accepted path of every peer is in the table, the best one first, so a peer's
//! Adj-RIB-In is the set of paths carrying its index, not a second copy.

use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;

use std::collections::HashMap;

use crate::wire::{PathAttrs, Prefix, Prefix4, Prefix6};

/// A fast, non-cryptographic hasher (the Fx hash of rustc). Keys are prefixes that
/// peers choose, so a hash-flooding peer could degrade lookups; BGP peers are
/// configured and trusted, and the speed matters at a million routes.
#[derive(Debug, Default, Clone, Copy)]
pub struct FxHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(b));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.hash = (self.hash.rotate_left(5) ^ i).wrapping_mul(SEED);
    }
    fn write_u128(&mut self, i: u128) {
        self.write_u64(i as u64);
        self.write_u64((i >> 64) as u64);
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
    fn finish(&self) -> u64 {
        self.hash
    }
}

/// `HashMap` with [`FxHasher`].
pub type FxHashMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// Index of a peer in the RIB; [`PeerId::LOCAL`] marks routes this speaker originates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u32);

impl PeerId {
    /// Locally originated routes.
    pub const LOCAL: PeerId = PeerId(0);
}

/// One path: interned attributes and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    /// Attributes (shared by every route with the same ones).
    pub attrs: Arc<PathAttrs>,
    /// Source peer.
    pub peer: PeerId,
    /// Kept from a session that went down for a graceful restart (RFC 4724) and not
    /// yet refreshed by the peer; swept at its End-of-RIB or when the restart ends.
    pub stale: bool,
}

impl Path {
    /// A fresh path.
    pub fn new(attrs: Arc<PathAttrs>, peer: PeerId) -> Self {
        Self {
            attrs,
            peer,
            stale: false,
        }
    }

    /// Same source and the very same interned attributes.
    pub fn same(&self, other: &Path) -> bool {
        self.peer == other.peer && Arc::ptr_eq(&self.attrs, &other.attrs)
    }
}

/// The paths of one prefix, best first.
#[derive(Debug, Clone)]
pub enum Paths {
    /// The usual case.
    One(Path),
    /// Several peers have a path.
    Many(Box<Vec<Path>>),
}

impl Paths {
    /// All paths, best first.
    pub fn as_slice(&self) -> &[Path] {
        match self {
            Paths::One(p) => std::slice::from_ref(p),
            Paths::Many(v) => v,
        }
    }
    /// The best path.
    pub fn best(&self) -> Option<&Path> {
        self.as_slice().first()
    }
    /// The path of `peer`, if any.
    pub fn of(&self, peer: PeerId) -> Option<&Path> {
        self.as_slice().iter().find(|p| p.peer == peer)
    }
    /// Inserts or replaces `peer`'s path; returns whether anything changed. A stale
    /// path re-sent unchanged becomes fresh without counting as a change.
    pub fn upsert(&mut self, path: Path) -> bool {
        match self {
            Paths::One(p) if p.peer == path.peer => {
                if p.same(&path) {
                    p.stale = path.stale;
                    return false;
                }
                *p = path;
            }
            Paths::One(p) => {
                *self = Paths::Many(Box::new(vec![p.clone(), path]));
            }
            Paths::Many(v) => match v.iter_mut().find(|p| p.peer == path.peer) {
                Some(p) if p.same(&path) => {
                    p.stale = path.stale;
                    return false;
                }
                Some(p) => *p = path,
                None => v.push(path),
            },
        }
        true
    }
    /// Removes `peer`'s path; returns `None` if no path is left (drop the entry),
    /// else whether something was removed.
    pub fn remove(&mut self, peer: PeerId) -> Option<bool> {
        match self {
            Paths::One(p) => {
                if p.peer == peer {
                    None
                } else {
                    Some(false)
                }
            }
            Paths::Many(v) => {
                let n = v.len();
                v.retain(|p| p.peer != peer);
                if v.len() == 1 {
                    let only = v[0].clone();
                    *self = Paths::One(only);
                    return Some(true);
                }
                if v.is_empty() {
                    None
                } else {
                    Some(v.len() != n)
                }
            }
        }
    }
    /// Marks `peer`'s path stale; returns whether it has one that was fresh.
    pub fn mark_stale(&mut self, peer: PeerId) -> bool {
        let p = match self {
            Paths::One(p) if p.peer == peer => p,
            Paths::One(_) => return false,
            Paths::Many(v) => match v.iter_mut().find(|p| p.peer == peer) {
                Some(p) => p,
                None => return false,
            },
        };
        !std::mem::replace(&mut p.stale, true)
    }
    /// Moves the path at `i` to the front.
    pub fn make_best(&mut self, i: usize) {
        if let Paths::Many(v) = self {
            v.swap(0, i);
        }
    }
}

/// A prefix type of one family.
pub trait FamilyPrefix:
    Copy + Eq + Hash + Ord + std::fmt::Debug + Into<Prefix> + Send + 'static
{
}
impl FamilyPrefix for Prefix4 {}
impl FamilyPrefix for Prefix6 {}

/// Shards of a [`Table`]. A power of two.
const SHARDS: usize = 64;

/// One family's table, split into 64 hash maps by bits of the prefix's hash
/// that neither the bucket index nor the control tag of the maps use. A hash map
/// grows by allocating a table twice the size and moving every entry, so a single map
/// of a million routes briefly holds both (≈1.5× its steady size, the process's peak
/// memory). Shards grow one at a time, so the peak is the steady size plus one
/// shard's growth.
#[derive(Debug)]
pub struct Table<P> {
    shards: Box<[FxHashMap<P, Paths>]>,
}

impl<P: FamilyPrefix> Default for Table<P> {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| FxHashMap::default()).collect(),
        }
    }
}

impl<P: FamilyPrefix> Table<P> {
    fn shard(&self, p: &P) -> usize {
        let mut h = FxHasher::default();
        p.hash(&mut h);
        // hashbrown uses the low bits (index) and the top 7 bits (tag): take the middle.
        ((h.finish() >> 32) as usize) & (SHARDS - 1)
    }
    /// The paths of `p`.
    pub fn get(&self, p: &P) -> Option<&Paths> {
        self.shards[self.shard(p)].get(p)
    }
    /// The entry of `p`, for in-place insertion or removal.
    pub fn entry(&mut self, p: P) -> std::collections::hash_map::Entry<'_, P, Paths> {
        let i = self.shard(&p);
        self.shards[i].entry(p)
    }
    /// Number of prefixes.
    pub fn len(&self) -> usize {
        self.shards.iter().map(HashMap::len).sum()
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(HashMap::is_empty)
    }
    /// Marks every path of `peer` stale; returns how many were fresh.
    pub fn mark_stale(&mut self, peer: PeerId) -> u64 {
        self.shards
            .iter_mut()
            .flat_map(|s| s.values_mut())
            .map(|ps| u64::from(ps.mark_stale(peer)))
            .sum()
    }
    /// Every prefix and its paths, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&P, &Paths)> {
        self.shards.iter().flat_map(|s| s.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_path_entries_are_sixteen_octets() {
        assert_eq!(std::mem::size_of::<Paths>(), 16);
    }

    #[test]
    fn upsert_and_remove_keep_the_shape() {
        let a = Arc::new(PathAttrs::default());
        let mut ps = Paths::One(Path::new(a.clone(), PeerId(1)));
        assert!(!ps.upsert(Path::new(a.clone(), PeerId(1))));
        assert!(ps.upsert(Path::new(a.clone(), PeerId(2))));
        assert!(ps.mark_stale(PeerId(2)));
        assert!(!ps.mark_stale(PeerId(2)));
        assert!(ps.of(PeerId(2)).unwrap().stale);
        // Re-sent unchanged: fresh again, no change for the decision process.
        assert!(!ps.upsert(Path::new(a.clone(), PeerId(2))));
        assert!(!ps.of(PeerId(2)).unwrap().stale);
        assert_eq!(ps.as_slice().len(), 2);
        assert_eq!(ps.remove(PeerId(1)), Some(true));
        assert!(matches!(ps, Paths::One(_)));
        assert_eq!(ps.remove(PeerId(2)), None);
    }
}
