//! The storage trait behind a limiter: a map from [`Key`] to [`Entry`] that
//! also knows which entry was touched least recently.
//!
//! Two backends: [`FixedStore`](crate::FixedStore) (fixed array, no
//! allocator, the default) and, with the `alloc` feature,
//! [`MapStore`](crate::MapStore) (hashbrown, grows up to a run-time cap).
//! Both run the same tests.

use crate::entry::{ColdPart, Entry};
use crate::key::Key;

/// Key → entry storage with least-recently-touched order.
pub trait Store<const W: usize> {
    /// How entries hold their cold part (inline or boxed).
    type Cold: ColdPart;
    /// Most entries held at once.
    fn capacity(&self) -> usize;
    /// Entries held.
    fn len(&self) -> usize;
    /// Whether empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Look up without touching.
    fn get(&self, key: &Key) -> Option<&Entry<W, Self::Cold>>;
    /// Look up mutably without touching.
    fn get_mut(&mut self, key: &Key) -> Option<&mut Entry<W, Self::Cold>>;
    /// Mark `key` most recently touched.
    fn touch(&mut self, key: &Key);
    /// Mark `key` most recently touched and return its entry (one lookup
    /// where the store can).
    fn touch_get_mut(&mut self, key: &Key) -> Option<&mut Entry<W, Self::Cold>> {
        self.touch(key);
        self.get_mut(key)
    }
    /// Add a new key as most recently touched; hands the entry back when full
    /// (the heapless convention, hence the large `Err`).
    #[allow(clippy::result_large_err)]
    fn insert(&mut self, key: Key, entry: Entry<W, Self::Cold>) -> Result<(), Entry<W, Self::Cold>>;
    /// Remove a key.
    fn remove(&mut self, key: &Key) -> Option<Entry<W, Self::Cold>>;
    /// Remove the least recently touched entry for which `evictable` holds.
    fn evict_lru(&mut self, evictable: &mut dyn FnMut(&Key, &Entry<W, Self::Cold>) -> bool) -> Option<Key>;
    /// Keep only entries for which `keep` holds; returns how many went.
    fn retain(&mut self, keep: &mut dyn FnMut(&Key, &Entry<W, Self::Cold>) -> bool) -> usize;
    /// Visit every entry, least recently touched first.
    fn for_each(&self, f: &mut dyn FnMut(&Key, &Entry<W, Self::Cold>));
    /// Visit every entry mutably (order unspecified). O(capacity): for
    /// operator actions, not the hot path.
    fn for_each_mut(&mut self, f: &mut dyn FnMut(&Key, &mut Entry<W, Self::Cold>));
    /// Remove everything.
    fn clear(&mut self);
}
