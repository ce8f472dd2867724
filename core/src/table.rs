//! [`FixedStore`]: the fixed-capacity, allocation-free table.
//!
//! Open addressing with linear probing over `[Option<Slot>; N]`, keyed
//! SipHash-1-3 for the home slot (so an attacker cannot aim keys at one
//! probe chain), backward-shift deletion (no tombstones), and a reference
//! bit per slot with a CLOCK hand for eviction (the rule and why CLOCK:
//! [`store`](crate::store); the hand steps by a stride coprime with `N`,
//! see `STRIDE`), so lookup, insert, touch and remove are
//! expected O(1) and a touch writes nothing outside the slot it found. At
//! most [`FixedStore::MAX_ENTRIES`] (`N - N/8`) keys live at once, which
//! keeps probe chains short.

use crate::entry::{CompactCold, Entry};
use crate::key::{Key, KeyHasher, Seed};
use crate::store::{sweep, Class, Store, Upsert, Victim};
use crate::window::CompactLog;

/// A fixed table's entry: the log and the inline cold part's violations
/// are [`CompactLog`]s (exact within [`FixedStore::MAX_SPAN`] ticks).
pub type FixedEntry<const W: usize> = Entry<W, CompactCold, CompactLog<W>>;

/// Longest lookback (ticks) a fixed table's logs answer exactly: their
/// Compact logs keep 32-bit offsets, so `u32::MAX` ticks (49.7 days at
/// the firmware's 1 kHz, 71.6 minutes at std's 1 MHz). A
/// [`FixedLimiter`](crate::FixedLimiter) refuses a configuration with a
/// longer lookback ([`ConfigError::Span`](crate::ConfigError::Span)).
pub const FIXED_MAX_SPAN: u64 = u32::MAX as u64;

/// Slot index type (`N` ≤ 32 768).
type Ix = u16;

#[derive(Clone, Debug)]
struct Slot<const W: usize> {
    key: Key,
    home: Ix,
    /// Touched since the CLOCK hand last passed.
    referenced: bool,
    entry: FixedEntry<W>,
}

/// Fixed-capacity key table of `N` slots with `W`-timestamp logs.
pub struct FixedStore<const N: usize, const W: usize> {
    slots: [Option<Slot<W>>; N],
    len: usize,
    /// The CLOCK hand: the slot the next eviction sweep starts at.
    hand: usize,
    hasher: KeyHasher,
}

impl<const N: usize, const W: usize> FixedStore<N, W> {
    /// Compile-time check of `N`.
    const VALID: () = assert!(N > 0 && N <= 32768, "FixedStore: N must be in 1..=32768");

    /// The CLOCK hand's step: near `N / φ` and coprime with `N`, so the
    /// slots it empties are spread over the table. (A hand stepping by one
    /// empties slots in one region while new keys land anywhere: the rest
    /// of the table grows one long probe run, which made every insert and
    /// backward shift walk hundreds of slots.)
    const STRIDE: usize = crate::store::coprime_stride(N);

    /// Most keys held at once: `N - N/8`.
    pub const MAX_ENTRIES: usize = N.saturating_sub(N / 8);

    /// An empty table whose hash is keyed by `seed`.
    pub fn new(seed: Seed) -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::VALID;
        FixedStore {
            slots: [const { None }; N],
            len: 0,
            hand: 0,
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

    /// Move the occupant of `from` into the empty slot `to`.
    fn relocate(&mut self, from: usize, to: usize) {
        let Some(s) = self.slots.get_mut(from).and_then(Option::take) else {
            return;
        };
        if let Some(dst) = self.slots.get_mut(to) {
            *dst = Some(s);
        }
    }

    /// Set the reference bit of slot `i`.
    fn mark(&mut self, i: usize) {
        if let Some(s) = self.slot_mut(i) {
            s.referenced = true;
        }
    }

    /// Put an absent `key` in the first free slot of its probe chain, not
    /// yet referenced (a new key earns its second chance by coming back);
    /// its slot, or the entry back when full.
    #[allow(clippy::result_large_err)]
    fn place(&mut self, key: Key, entry: FixedEntry<W>) -> Result<usize, FixedEntry<W>> {
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
                        referenced: false,
                        entry,
                    });
                    self.len = self.len.saturating_add(1);
                    return Ok(i);
                }
            }
            i = Self::next(i);
        }
        Err(entry)
    }

    /// Remove slot `i` and close the gap (backward-shift deletion).
    fn remove_at(&mut self, i: usize) -> Option<Slot<W>> {
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
    type Cold = CompactCold;
    type Log = CompactLog<W>;
    type Ref<'a> = &'a FixedEntry<W>;
    type Mut<'a> = &'a mut FixedEntry<W>;
    type Rules = crate::store::HotInConfig;
    const MAX_SPAN: u64 = FIXED_MAX_SPAN;

    fn capacity(&self) -> usize {
        Self::MAX_ENTRIES
    }

    fn len(&self) -> usize {
        self.len
    }

    fn get(&self, key: &Key) -> Option<&FixedEntry<W>> {
        self.find(key).and_then(|i| self.slot(i)).map(|s| &s.entry)
    }

    fn get_mut(&mut self, key: &Key) -> Option<&mut FixedEntry<W>> {
        let i = self.find(key)?;
        self.slot_mut(i).map(|s| &mut s.entry)
    }

    fn get_if_touched(&self, key: &Key) -> Option<&FixedEntry<W>> {
        let s = self.slot(self.find(key)?)?;
        s.referenced.then_some(&s.entry)
    }

    fn touch(&mut self, key: &Key) {
        if let Some(i) = self.find(key) {
            self.mark(i);
        }
    }

    fn upsert(
        &mut self,
        key: Key,
        classify: &mut dyn FnMut(&Key, &FixedEntry<W>) -> Class,
    ) -> Upsert<&mut FixedEntry<W>> {
        let (i, evicted) = match self.find(&key) {
            Some(i) => {
                self.mark(i);
                (i, None)
            }
            None => {
                let mut evicted = None;
                if self.len >= Self::MAX_ENTRIES {
                    evicted = self.evict(classify);
                    if evicted.is_none() {
                        return Upsert::Full;
                    }
                }
                match self.place(key, Entry::new()) {
                    Ok(i) => (i, evicted),
                    Err(_) => return Upsert::Full,
                }
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

    fn touch_get_mut(&mut self, key: &Key) -> Option<&mut FixedEntry<W>> {
        let i = self.find(key)?;
        let s = self.slot_mut(i)?;
        s.referenced = true;
        Some(&mut s.entry)
    }

    fn insert(&mut self, key: Key, entry: FixedEntry<W>) -> Result<(), FixedEntry<W>> {
        if let Some(i) = self.find(&key) {
            if let Some(s) = self.slot_mut(i) {
                s.entry = entry;
                s.referenced = true;
            }
            return Ok(());
        }
        self.place(key, entry).map(|_| ())
    }

    fn remove(&mut self, key: &Key) -> Option<FixedEntry<W>> {
        let i = self.find(key)?;
        self.remove_at(i).map(|s| s.entry)
    }

    fn evict(
        &mut self,
        classify: &mut dyn FnMut(&Key, &FixedEntry<W>) -> Class,
    ) -> Option<(Key, Victim)> {
        let (hand, len) = (self.hand, self.len);
        let slots = &mut self.slots;
        let (i, victim) = sweep(N, hand, len, Self::STRIDE, |i, clear| {
            let s = slots.get_mut(i)?.as_mut()?;
            if clear {
                s.referenced = false;
                return None;
            }
            Some((classify(&s.key, &s.entry), s.referenced))
        })?;
        let key = self.remove_at(i)?.key;
        // The backward shift may have moved a later entry into `i`: the
        // next sweep starts there.
        self.hand = i;
        Some((key, victim))
    }

    fn retain(&mut self, keep: &mut dyn FnMut(&Key, &FixedEntry<W>) -> bool) -> usize {
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

    fn for_each(&self, f: &mut dyn FnMut(&Key, &FixedEntry<W>)) {
        for s in self.slots.iter().flatten() {
            f(&s.key, &s.entry);
        }
    }

    fn for_each_mut(&mut self, f: &mut dyn FnMut(&Key, &mut FixedEntry<W>)) {
        for s in self.slots.iter_mut().flatten() {
            f(&s.key, &mut s.entry);
        }
    }

    fn clear(&mut self) {
        for s in self.slots.iter_mut() {
            *s = None;
        }
        self.len = 0;
        self.hand = 0;
    }
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use super::*;
    use crate::store::harness::{run, second_chance};

    #[test]
    fn matches_a_set_and_the_eviction_rule() {
        for seed in 0..8 {
            let mut s = FixedStore::<32, 4>::new(Seed::new([7; 16]));
            let cap = FixedStore::<32, 4>::MAX_ENTRIES;
            let (dead, live) = run(&mut s, cap, 40, 20_000, seed);
            assert!(dead > 100 && live > 100, "{dead} dead, {live} live");
        }
        let mut s = FixedStore::<2048, 4>::new(Seed::new([8; 16]));
        run(&mut s, FixedStore::<2048, 4>::MAX_ENTRIES, 2500, 30_000, 5);
    }

    #[test]
    fn clock_gives_a_second_chance_and_takes_dead_keys_first() {
        second_chance(&mut FixedStore::<4, 4>::new(Seed::new([1; 16])));
        second_chance(&mut FixedStore::<32, 4>::new(Seed::new([2; 16])));
        second_chance(&mut FixedStore::<2048, 4>::new(Seed::new([3; 16])));
    }
}
