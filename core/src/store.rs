//! The storage trait behind a limiter: a map from [`Key`] to [`Entry`] that
//! also knows which entry was touched least recently.
//!
//! Two backends: [`FixedStore`](crate::FixedStore) (fixed array, no
//! allocator, the default) and, with the `alloc` feature,
//! [`MapStore`](crate::MapStore) (grows up to a run-time cap).
//! Both run the same tests.

use crate::entry::{ColdPart, Entry};
use crate::key::Key;
use crate::window::TimeLog;

/// The entry type of store `S`.
pub type EntryOf<S, const W: usize> = Entry<W, <S as Store<W>>::Cold, <S as Store<W>>::Log>;

/// What [`Store::upsert`] found.
#[derive(Debug)]
pub enum Upsert<'a, E> {
    /// The entry (new or old); `evicted` if another key made room for it.
    Found {
        /// The entry, touched.
        entry: &'a mut E,
        /// Whether an entry was evicted to make room.
        evicted: bool,
    },
    /// No room: the store is full of entries that may not be evicted.
    Full,
}

/// Key → entry storage with least-recently-touched order.
pub trait Store<const W: usize> {
    /// How entries hold their cold part (inline or boxed).
    type Cold: ColdPart;
    /// How entries hold their log (inline or growing).
    type Log: TimeLog;
    /// Most entries held at once.
    fn capacity(&self) -> usize;
    /// Entries held.
    fn len(&self) -> usize;
    /// Whether empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Look up without touching.
    fn get(&self, key: &Key) -> Option<&EntryOf<Self, W>>;
    /// Look up mutably without touching.
    fn get_mut(&mut self, key: &Key) -> Option<&mut EntryOf<Self, W>>;
    /// The entry for `key` if it is the most recently touched (so touching
    /// it again would change nothing). `None` otherwise, and by default.
    fn get_if_newest(&self, key: &Key) -> Option<&EntryOf<Self, W>> {
        let _ = key;
        None
    }
    /// Mark `key` most recently touched.
    fn touch(&mut self, key: &Key);
    /// Mark `key` most recently touched and return its entry (one lookup
    /// where the store can).
    fn touch_get_mut(&mut self, key: &Key) -> Option<&mut EntryOf<Self, W>> {
        self.touch(key);
        self.get_mut(key)
    }
    /// The entry for `key`, touched; when absent, a fresh one is inserted,
    /// first evicting the least recently touched entry for which
    /// `evictable` holds if the store is full. One lookup where the store
    /// can (the default does two).
    fn upsert(
        &mut self,
        key: Key,
        evictable: &mut dyn FnMut(&Key, &EntryOf<Self, W>) -> bool,
    ) -> Upsert<'_, EntryOf<Self, W>> {
        let mut evicted = false;
        if self.get(&key).is_none() {
            if self.len() >= self.capacity() {
                if self.evict_lru(evictable).is_none() {
                    return Upsert::Full;
                }
                evicted = true;
            }
            if self.insert(key, Entry::new()).is_err() {
                return Upsert::Full;
            }
        }
        match self.touch_get_mut(&key) {
            Some(e) => Upsert::Found { entry: e, evicted },
            None => Upsert::Full,
        }
    }
    /// Add a new key as most recently touched; hands the entry back when full
    /// (the heapless convention, hence the large `Err`).
    #[allow(clippy::result_large_err)]
    fn insert(&mut self, key: Key, entry: EntryOf<Self, W>) -> Result<(), EntryOf<Self, W>>;
    /// Remove a key.
    fn remove(&mut self, key: &Key) -> Option<EntryOf<Self, W>>;
    /// Remove the least recently touched entry for which `evictable` holds.
    fn evict_lru(
        &mut self,
        evictable: &mut dyn FnMut(&Key, &EntryOf<Self, W>) -> bool,
    ) -> Option<Key>;
    /// Keep only entries for which `keep` holds; returns how many went.
    fn retain(&mut self, keep: &mut dyn FnMut(&Key, &EntryOf<Self, W>) -> bool) -> usize;
    /// Visit every entry, least recently touched first.
    fn for_each(&self, f: &mut dyn FnMut(&Key, &EntryOf<Self, W>));
    /// Visit every entry mutably (order unspecified). O(capacity): for
    /// operator actions, not the hot path.
    fn for_each_mut(&mut self, f: &mut dyn FnMut(&Key, &mut EntryOf<Self, W>));
    /// Remove everything.
    fn clear(&mut self);
}
