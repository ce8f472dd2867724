//! [`FixedStore`]: the fixed-capacity, allocation-free table.
//!
//! Open addressing with linear probing over `[Option<Slot>; N]`, keyed
//! SipHash-1-3 for the home slot (so an attacker cannot aim keys at one
//! probe chain), backward-shift deletion (no tombstones), and an intrusive
//! doubly linked list through the slots for least-recently-touched order,
//! so lookup, insert, touch and remove are expected O(1) and eviction walks
//! only past pinned entries. At most [`FixedStore::MAX_ENTRIES`]
//! (`N - N/8`) keys live at once, which keeps probe chains short.

use crate::entry::{Cold, Entry};
use crate::key::{Key, KeyHasher, Seed};
use crate::store::{Store, Upsert};
use crate::window::Log;

/// Slot index type (`N` ≤ 32 768).
type Ix = u16;

#[derive(Clone, Debug)]
struct Slot<const W: usize> {
    key: Key,
    home: Ix,
    older: Option<Ix>,
    newer: Option<Ix>,
    entry: Entry<W>,
}

/// Fixed-capacity key table of `N` slots with `W`-timestamp logs.
pub struct FixedStore<const N: usize, const W: usize> {
    slots: [Option<Slot<W>>; N],
    len: usize,
    newest: Option<Ix>,
    oldest: Option<Ix>,
    hasher: KeyHasher,
}

impl<const N: usize, const W: usize> FixedStore<N, W> {
    /// Compile-time check of `N`.
    const VALID: () = assert!(N > 0 && N <= 32768, "FixedStore: N must be in 1..=32768");

    /// Most keys held at once: `N - N/8`.
    pub const MAX_ENTRIES: usize = N.saturating_sub(N / 8);

    /// An empty table whose hash is keyed by `seed`.
    pub fn new(seed: Seed) -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::VALID;
        FixedStore {
            slots: [const { None }; N],
            len: 0,
            newest: None,
            oldest: None,
            hasher: KeyHasher::new(seed),
        }
    }

    fn home(&self, key: &Key) -> usize {
        let h = self.hasher.hash(key);
        let n = u64::try_from(N).unwrap_or(1);
        usize::try_from(h.checked_rem(n).unwrap_or(0)).unwrap_or(0)
    }

    fn next(i: usize) -> usize {
        let j = i.wrapping_add(1);
        if j >= N {
            0
        } else {
            j
        }
    }

    /// Distance from `a` forward to `b` around the ring.
    fn dist(a: usize, b: usize) -> usize {
        if b >= a {
            b.wrapping_sub(a)
        } else {
            b.wrapping_add(N).wrapping_sub(a)
        }
    }

    fn slot(&self, i: usize) -> Option<&Slot<W>> {
        self.slots.get(i).and_then(Option::as_ref)
    }

    fn slot_mut(&mut self, i: usize) -> Option<&mut Slot<W>> {
        self.slots.get_mut(i).and_then(Option::as_mut)
    }

    fn find(&self, key: &Key) -> Option<usize> {
        let mut i = self.home(key);
        for _ in 0..N {
            match self.slot(i) {
                Some(s) if s.key == *key => return Some(i),
                Some(_) => i = Self::next(i),
                None => return None,
            }
        }
        None
    }

    fn ix(i: usize) -> Option<Ix> {
        Ix::try_from(i).ok()
    }

    /// Link slot `i` as newest.
    fn link_newest(&mut self, i: usize) {
        let old_newest = self.newest;
        if let Some(s) = self.slot_mut(i) {
            s.older = old_newest;
            s.newer = None;
        }
        match old_newest {
            Some(n) => {
                if let Some(s) = self.slot_mut(usize::from(n)) {
                    s.newer = Self::ix(i);
                }
            }
            None => self.oldest = Self::ix(i),
        }
        self.newest = Self::ix(i);
    }

    /// Take slot `i` out of the order list.
    fn unlink(&mut self, i: usize) {
        let Some((older, newer)) = self.slot(i).map(|s| (s.older, s.newer)) else {
            return;
        };
        match older {
            Some(o) => {
                if let Some(s) = self.slot_mut(usize::from(o)) {
                    s.newer = newer;
                }
            }
            None => self.oldest = newer,
        }
        match newer {
            Some(n) => {
                if let Some(s) = self.slot_mut(usize::from(n)) {
                    s.older = older;
                }
            }
            None => self.newest = older,
        }
    }

    /// Move the occupant of `from` into the empty slot `to`, fixing links.
    fn relocate(&mut self, from: usize, to: usize) {
        let Some(s) = self.slots.get_mut(from).and_then(Option::take) else {
            return;
        };
        let to_ix = Self::ix(to);
        match s.older {
            Some(o) => {
                if let Some(p) = self.slot_mut(usize::from(o)) {
                    p.newer = to_ix;
                }
            }
            None => self.oldest = to_ix,
        }
        match s.newer {
            Some(n) => {
                if let Some(p) = self.slot_mut(usize::from(n)) {
                    p.older = to_ix;
                }
            }
            None => self.newest = to_ix,
        }
        if let Some(dst) = self.slots.get_mut(to) {
            *dst = Some(s);
        }
    }

    /// Remove slot `i` and close the gap (backward-shift deletion).
    fn remove_at(&mut self, i: usize) -> Option<Slot<W>> {
        self.unlink(i);
        let out = self.slots.get_mut(i).and_then(Option::take)?;
        self.len = self.len.saturating_sub(1);
        let mut hole = i;
        let mut k = Self::next(i);
        for _ in 0..N {
            let Some(home) = self.slot(k).map(|s| usize::from(s.home)) else {
                break;
            };
            if Self::dist(home, k) >= Self::dist(hole, k) {
                self.relocate(k, hole);
                hole = k;
            }
            k = Self::next(k);
        }
        Some(out)
    }
}

impl<const N: usize, const W: usize> Store<W> for FixedStore<N, W> {
    type Cold = Cold;
    type Log = Log<W>;

    fn capacity(&self) -> usize {
        Self::MAX_ENTRIES
    }

    fn len(&self) -> usize {
        self.len
    }

    fn get(&self, key: &Key) -> Option<&Entry<W>> {
        self.find(key).and_then(|i| self.slot(i)).map(|s| &s.entry)
    }

    fn get_mut(&mut self, key: &Key) -> Option<&mut Entry<W>> {
        let i = self.find(key)?;
        self.slot_mut(i).map(|s| &mut s.entry)
    }

    fn get_if_newest(&self, key: &Key) -> Option<&Entry<W>> {
        // No hashing: compare with the newest slot's key.
        let s = self.slot(usize::from(self.newest?))?;
        (s.key == *key).then_some(&s.entry)
    }

    fn touch(&mut self, key: &Key) {
        if let Some(i) = self.find(key) {
            if self.newest != Self::ix(i) {
                self.unlink(i);
                self.link_newest(i);
            }
        }
    }

    fn upsert(
        &mut self,
        key: Key,
        evictable: &mut dyn FnMut(&Key, &Entry<W>) -> bool,
    ) -> Upsert<'_, Entry<W>> {
        let (i, evicted) = match self.find(&key) {
            Some(i) => {
                if self.newest != Self::ix(i) {
                    self.unlink(i);
                    self.link_newest(i);
                }
                (i, false)
            }
            None => {
                let mut evicted = false;
                if self.len >= Self::MAX_ENTRIES {
                    if self.evict_lru(evictable).is_none() {
                        return Upsert::Full;
                    }
                    evicted = true;
                }
                if self.insert(key, Entry::new()).is_err() {
                    return Upsert::Full;
                }
                // The insert linked it as newest; find its (possibly
                // shifted) slot once more.
                let Some(i) = self.find(&key) else {
                    return Upsert::Full;
                };
                (i, evicted)
            }
        };
        match self.slot_mut(i) {
            Some(s) => Upsert::Found {
                entry: &mut s.entry,
                evicted,
            },
            None => Upsert::Full,
        }
    }

    #[allow(clippy::result_large_err)]
    fn touch_get_mut(&mut self, key: &Key) -> Option<&mut Entry<W>> {
        let i = self.find(key)?;
        if self.newest != Self::ix(i) {
            self.unlink(i);
            self.link_newest(i);
        }
        self.slot_mut(i).map(|s| &mut s.entry)
    }

    fn insert(&mut self, key: Key, entry: Entry<W>) -> Result<(), Entry<W>> {
        if let Some(i) = self.find(&key) {
            if let Some(s) = self.slot_mut(i) {
                s.entry = entry;
            }
            self.touch(&key);
            return Ok(());
        }
        if self.len >= Self::MAX_ENTRIES {
            return Err(entry);
        }
        let home = self.home(&key);
        let Some(home_ix) = Self::ix(home) else {
            return Err(entry);
        };
        let mut i = home;
        for _ in 0..N {
            if let Some(cell) = self.slots.get_mut(i) {
                if cell.is_none() {
                    *cell = Some(Slot {
                        key,
                        home: home_ix,
                        older: None,
                        newer: None,
                        entry,
                    });
                    self.len = self.len.saturating_add(1);
                    self.link_newest(i);
                    return Ok(());
                }
            }
            i = Self::next(i);
        }
        Err(entry)
    }

    fn remove(&mut self, key: &Key) -> Option<Entry<W>> {
        let i = self.find(key)?;
        self.remove_at(i).map(|s| s.entry)
    }

    fn evict_lru(&mut self, evictable: &mut dyn FnMut(&Key, &Entry<W>) -> bool) -> Option<Key> {
        let mut cur = self.oldest;
        while let Some(i) = cur {
            let i = usize::from(i);
            let s = self.slot(i)?;
            if evictable(&s.key, &s.entry) {
                let key = s.key;
                self.remove_at(i);
                return Some(key);
            }
            cur = s.newer;
        }
        None
    }

    fn retain(&mut self, keep: &mut dyn FnMut(&Key, &Entry<W>) -> bool) -> usize {
        let mut removed = 0usize;
        let mut i = 0usize;
        // Backward shifts only move entries into the slot being examined or
        // from already-visited slots, so re-examining `i` after a removal
        // visits every entry.
        while i < N {
            let drop = match self.slot(i) {
                Some(s) => !keep(&s.key, &s.entry),
                None => false,
            };
            if drop {
                self.remove_at(i);
                removed = removed.saturating_add(1);
            } else {
                i = i.wrapping_add(1);
            }
        }
        removed
    }

    fn for_each(&self, f: &mut dyn FnMut(&Key, &Entry<W>)) {
        let mut cur = self.oldest;
        while let Some(i) = cur {
            let Some(s) = self.slot(usize::from(i)) else {
                return;
            };
            f(&s.key, &s.entry);
            cur = s.newer;
        }
    }

    fn for_each_mut(&mut self, f: &mut dyn FnMut(&Key, &mut Entry<W>)) {
        for s in self.slots.iter_mut().flatten() {
            f(&s.key, &mut s.entry);
        }
    }

    fn clear(&mut self) {
        for s in self.slots.iter_mut() {
            *s = None;
        }
        self.len = 0;
        self.newest = None;
        self.oldest = None;
    }
}
