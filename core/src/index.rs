//! [`SlotIndex`] (feature `alloc`): the hash index of a
//! [`MapStore`](crate::MapStore), mapping a key's 24-bit hash to its slab
//! slot.
//!
//! Why not hashbrown: a hashbrown lookup reads a control-byte group and
//! then, in another cache line, the bucket. Here a bucket is one `u32`
//! holding both an 8-bit tag and the slot, in one array probed linearly,
//! so a lookup on a large table touches one index line before the node
//! (16 buckets a line; the load stays at or under 3/4, where the average
//! probe is under three buckets). On a million keys that is one dependent
//! cache/TLB miss fewer per request, measured in `BENCHMARKS.md`. Deletion
//! shifts later buckets back (no tombstones), which needs their hashes:
//! the caller's `hash_of(slot)` reads them from the nodes, which cache them.
//!
//! Bucket: `0` is empty, else `tag << 24 | (slot + 1)`, so slots go up to
//! [`MAX_SLOT`] (16 777 214 keys per store).

use alloc::vec::Vec;

/// Largest slot an index can hold.
pub(crate) const MAX_SLOT: u32 = SLOT_MASK - 1;

const SLOT_MASK: u32 = (1 << 24) - 1;

/// Smallest bucket array once anything is stored.
const MIN_BUCKETS: usize = 16;

/// The 8-bit tag of a 24-bit hash (its top bits; the home bucket comes
/// from all of them, mixed).
fn tag(h: u32) -> u32 {
    (h >> 16) & 0xFF
}

fn bucket(h: u32, slot: u32) -> u32 {
    (tag(h) << 24) | (slot.wrapping_add(1) & SLOT_MASK)
}

/// The slot a non-empty bucket holds.
fn slot_of(b: u32) -> u32 {
    (b & SLOT_MASK).wrapping_sub(1)
}

/// Open-addressing index from 24-bit key hashes to slots.
#[derive(Default)]
pub(crate) struct SlotIndex {
    buckets: Vec<u32>,
    len: usize,
}

impl SlotIndex {
    /// Slots stored.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Bytes of the bucket array.
    pub(crate) fn bytes(&self) -> usize {
        self.buckets.capacity().saturating_mul(4)
    }

    /// Buckets allocated.
    #[cfg(test)]
    pub(crate) fn buckets(&self) -> usize {
        self.buckets.len()
    }

    fn mask(&self) -> usize {
        self.buckets.len().wrapping_sub(1)
    }

    /// Home bucket of hash `h` in a table of `mask + 1` buckets.
    fn home(h: u32, mask: usize) -> usize {
        // Fibonacci mixing of all 24 bits; the product's bits 32.. spread
        // well for tables of up to 2^32 buckets.
        ((u64::from(h).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize) & mask
    }

    /// The slot whose hash is `h` and for which `eq(slot)` holds.
    pub(crate) fn find(&self, h: u32, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        let mask = self.mask();
        let want = tag(h);
        let mut i = Self::home(h, mask);
        // Never full (load <= 3/4), so an empty bucket ends every probe;
        // the bound only keeps a broken invariant from looping forever.
        for _ in 0..self.buckets.len() {
            let b = *self.buckets.get(i)?;
            if b == 0 {
                return None;
            }
            if b >> 24 == want && eq(slot_of(b)) {
                return Some(slot_of(b));
            }
            i = i.wrapping_add(1) & mask;
        }
        None
    }

    /// Position of the bucket holding `slot` (hash `h`).
    fn position(&self, h: u32, slot: u32) -> Option<usize> {
        let mask = self.mask();
        let mut i = Self::home(h, mask);
        for _ in 0..self.buckets.len() {
            let b = *self.buckets.get(i)?;
            if b == 0 {
                return None;
            }
            if slot_of(b) == slot {
                return Some(i);
            }
            i = i.wrapping_add(1) & mask;
        }
        None
    }

    /// Add `slot` (not present, `<= MAX_SLOT`) under hash `h`, growing the
    /// table (rehashing with `hash_of`) past 3/4 full. False if the slot
    /// is out of range.
    pub(crate) fn insert(&mut self, h: u32, slot: u32, hash_of: impl Fn(u32) -> u32) -> bool {
        if slot > MAX_SLOT {
            return false;
        }
        let need = self.len.saturating_add(1);
        if need.saturating_mul(4) > self.buckets.len().saturating_mul(3) {
            let n = self
                .buckets
                .len()
                .saturating_mul(2)
                .max(MIN_BUCKETS)
                .max(need.saturating_mul(2).next_power_of_two());
            self.rebuild(n, &hash_of);
        }
        self.place(h, slot);
        true
    }

    /// Put a bucket in the first empty place from `h`'s home.
    fn place(&mut self, h: u32, slot: u32) {
        let mask = self.mask();
        let mut i = Self::home(h, mask);
        for _ in 0..self.buckets.len() {
            match self.buckets.get_mut(i) {
                Some(b) if *b == 0 => {
                    *b = bucket(h, slot);
                    self.len = self.len.saturating_add(1);
                    return;
                }
                Some(_) => i = i.wrapping_add(1) & mask,
                None => return,
            }
        }
    }

    /// Move every bucket into a table of `n` (a power of two) buckets.
    fn rebuild(&mut self, n: usize, hash_of: &impl Fn(u32) -> u32) {
        let old = core::mem::replace(&mut self.buckets, alloc::vec![0; n]);
        self.len = 0;
        for b in old.into_iter().filter(|&b| b != 0) {
            let s = slot_of(b);
            self.place(hash_of(s), s);
        }
    }

    /// Take `slot` (hash `h`) out, shifting later buckets of its run back
    /// (their hashes from `hash_of`). False if it was not there.
    pub(crate) fn remove(&mut self, h: u32, slot: u32, hash_of: impl Fn(u32) -> u32) -> bool {
        let Some(mut hole) = self.position(h, slot) else {
            return false;
        };
        let mask = self.mask();
        let mut j = hole;
        for _ in 0..self.buckets.len() {
            j = j.wrapping_add(1) & mask;
            let b = match self.buckets.get(j) {
                Some(&b) if b != 0 => b,
                _ => break,
            };
            let home = Self::home(hash_of(slot_of(b)), mask);
            // `b` may fill the hole iff its home is not in (hole, j]
            // (cyclically): then it still finds itself from its home.
            if j.wrapping_sub(home) & mask >= j.wrapping_sub(hole) & mask {
                if let Some(h) = self.buckets.get_mut(hole) {
                    *h = b;
                }
                hole = j;
            }
        }
        if let Some(h) = self.buckets.get_mut(hole) {
            *h = 0;
        }
        self.len = self.len.saturating_sub(1);
        true
    }

    /// Point the bucket of `from` (hash `h`) at `to`.
    pub(crate) fn replace(&mut self, h: u32, from: u32, to: u32) {
        if to > MAX_SLOT {
            return;
        }
        if let Some(i) = self.position(h, from) {
            if let Some(b) = self.buckets.get_mut(i) {
                *b = bucket(h, to);
            }
        }
    }

    /// Cut the table to the smallest size that keeps the load at or under
    /// 1/2 (below the growth threshold of 3/4, so it does not flap).
    pub(crate) fn shrink(&mut self, hash_of: impl Fn(u32) -> u32) {
        let want = if self.len == 0 {
            0
        } else {
            self.len
                .saturating_mul(2)
                .next_power_of_two()
                .max(MIN_BUCKETS)
        };
        if want < self.buckets.len() {
            if want == 0 {
                self.buckets = Vec::new();
            } else {
                self.rebuild(want, &hash_of);
            }
        }
    }

    /// Forget everything and give the memory back.
    pub(crate) fn clear(&mut self) {
        self.buckets = Vec::new();
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::unwrap_used
    )]
    use super::*;
    use alloc::collections::BTreeMap;

    fn rng(s: &mut u64) -> u64 {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        *s
    }

    /// Random inserts, removals, moves and shrinks against a BTreeMap,
    /// with hashes from a small range so tags and homes collide often.
    #[test]
    fn matches_a_map_under_churn() {
        for bits in [4u32, 10, 24] {
            let mut s = 0x1234_5678_9abc_def0u64 ^ u64::from(bits);
            let mut ix = SlotIndex::default();
            // slot -> hash
            let mut model: BTreeMap<u32, u32> = BTreeMap::new();
            let mut next = 0u32;
            for step in 0..20_000 {
                let r = rng(&mut s);
                match r % 10 {
                    0..=4 => {
                        let h = (rng(&mut s) as u32) & ((1 << bits) - 1);
                        let slot = next;
                        next += 1;
                        assert!(ix.insert(h, slot, |x| model[&x]));
                        model.insert(slot, h);
                    }
                    5..=7 if !model.is_empty() => {
                        let k = *model.keys().nth((r as usize >> 8) % model.len()).unwrap();
                        let h = model.remove(&k).unwrap();
                        assert!(ix.remove(h, k, |x| model[&x]));
                        assert!(!ix.remove(h, k, |x| model[&x]));
                    }
                    8 if !model.is_empty() => {
                        let k = *model.keys().nth((r as usize >> 8) % model.len()).unwrap();
                        let h = model.remove(&k).unwrap();
                        let to = next;
                        next += 1;
                        ix.replace(h, k, to);
                        model.insert(to, h);
                    }
                    _ => {
                        ix.shrink(|x| model[&x]);
                    }
                }
                assert_eq!(ix.len(), model.len());
                assert!(ix.len() * 4 <= ix.buckets() * 3);
                if step % 193 == 0 {
                    for (&slot, &h) in &model {
                        assert_eq!(ix.find(h, |x| x == slot), Some(slot), "step {step}");
                    }
                    assert_eq!(ix.find(0, |x| x == next + 1), None);
                }
            }
        }
    }

    #[test]
    fn out_of_range_slots_are_refused() {
        let mut ix = SlotIndex::default();
        assert!(!ix.insert(1, MAX_SLOT + 1, |_| 1));
        assert!(ix.insert(1, MAX_SLOT, |_| 1));
        assert_eq!(ix.find(1, |_| true), Some(MAX_SLOT));
        ix.clear();
        assert_eq!((ix.len(), ix.buckets()), (0, 0));
    }
}
