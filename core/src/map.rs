//! [`MapStore`] (feature `alloc`): a growable table up to a run-time cap,
//! with the same keyed hash and the same eviction rule as
//! [`FixedStore`](crate::FixedStore).
//!
//! * Slab: nodes (key, reference bit, 24 bits of its hash, entry: one
//!   64-byte line with the boxed-cold, growing-log entry) live inline in
//!   chunks of 16 KiB, so growth never moves a node and unused room is at
//!   most one chunk; freed slots are reused.
//! * Index: a `SlotIndex` (`index.rs`) of slab slots (4 bytes a bucket:
//!   an 8-bit tag and the slot, probed linearly, so a lookup reads one
//!   index line before the node), hashed with the tables' keyed SipHash
//!   (its top 24 bits, which the node caches for rehashing and removal
//!   without hashing again). `upsert` hashes once per request.
//! * Eviction: a reference bit per node, set on touch, and a CLOCK hand
//!   over the slab slots (the rule and why CLOCK: [`store`](crate::store)).
//!   The hand walks the slab in memory order; a touch sets one bit in the
//!   node the lookup already read. (It replaced an exact LRU queue of slot
//!   records with stamps, which cost a queue append per touch and periodic
//!   compaction.)
//! * Shrinking: when the slab is less than half full, trailing chunks are
//!   emptied into free slots lower down and released.
//!
//! Slots are 24 bits, so a store holds at most 16 777 214 keys; keys whose
//! 8-bit index tags agree are told apart by comparing the keys.

use crate::entry::{BoxedCold, Entry};
use crate::index::{SlotIndex, MAX_SLOT};
use crate::key::{Key, KeyHasher, Seed};
use crate::store::{sweep, Class, Store, Upsert, Victim};
use crate::window::GrowLog;
use alloc::boxed::Box;
use alloc::vec::Vec;

/// Target chunk size in bytes.
const CHUNK_BYTES: usize = 16384;

/// The entry a [`MapStore`] keeps: cold part boxed on first use, log
/// growing with use.
type MapEntry<const W: usize> = Entry<W, BoxedCold, GrowLog<W>>;

/// One key's slot: the entry inline, plus what the index and order need.
/// 64 bytes, aligned so a lookup reads one cache line (a test keeps the
/// size at 64: a bigger node would be padded to 128).
#[repr(align(64))]
struct Node<const W: usize> {
    key: Key,
    /// Touched since the CLOCK hand last passed.
    referenced: bool,
    /// Top 24 bits of the keyed hash of `key` (little-endian).
    hash: [u8; 3],
    entry: MapEntry<W>,
}

impl<const W: usize> Node<W> {
    /// The cached 24-bit keyed hash.
    fn hash(&self) -> u32 {
        let [a, b, c] = self.hash;
        u32::from_le_bytes([a, b, c, 0])
    }
}

type Chunk<const W: usize> = Box<[Option<Node<W>>]>;

/// Growable key table: keyed open-addressing index over a chunked slab,
/// CLOCK eviction.
/// `repr(C)`: what a lookup reads first (hash keys, index, chunk table)
/// together at the start.
#[repr(C)]
pub struct MapStore<const W: usize> {
    hasher: KeyHasher,
    index: SlotIndex,
    chunks: Vec<Chunk<W>>,
    /// Nodes per chunk is `1 << chunk_bits`.
    chunk_bits: u32,
    /// The CLOCK hand: the slab slot the next eviction sweep starts at.
    hand: u32,
    cap: usize,
    /// Every empty slot of `chunks`.
    free: Vec<u32>,
}

impl<const W: usize> MapStore<W> {
    /// An empty store holding at most `max_entries` keys (at most
    /// 16 777 214, what the index can address: more is cut to that).
    pub fn new(seed: Seed, max_entries: usize) -> Self {
        let cap = max_entries.min(MAX_SLOT as usize);
        // Chunks of about CHUNK_BYTES, fewer nodes for small stores:
        // min(floor(log2(CHUNK_BYTES / node)), ceil(log2(cap))).
        let per = CHUNK_BYTES
            .checked_div(core::mem::size_of::<Option<Node<W>>>())
            .unwrap_or(1)
            .max(1);
        let by_size = usize::BITS
            .wrapping_sub(1)
            .wrapping_sub(per.leading_zeros());
        let by_cap = usize::BITS.wrapping_sub(cap.saturating_sub(1).leading_zeros());
        MapStore {
            index: SlotIndex::default(),
            chunks: Vec::new(),
            chunk_bits: by_size.min(by_cap),
            free: Vec::new(),
            hand: 0,
            hasher: KeyHasher::new(seed),
            cap,
        }
    }

    /// Bytes this store holds on the heap for its table: slab chunks, index
    /// buckets and the free list (not the logs and cold parts of the few
    /// keys that grew them). Flat once the store is full.
    pub fn table_bytes(&self) -> usize {
        let chunk = self
            .chunk_len()
            .saturating_mul(core::mem::size_of::<Option<Node<W>>>());
        self.chunks
            .capacity()
            .saturating_mul(core::mem::size_of::<Chunk<W>>())
            .saturating_add(self.chunks.len().saturating_mul(chunk))
            .saturating_add(self.index.bytes())
            .saturating_add(self.free.capacity().saturating_mul(4))
    }

    /// The top 24 bits of the keyed hash of `key`.
    fn hash24(&self, key: &Key) -> u32 {
        (self.hasher.hash(key) >> 40) as u32
    }

    fn chunk_len(&self) -> usize {
        1usize.checked_shl(self.chunk_bits).unwrap_or(1)
    }

    /// Slots in the slab.
    fn slots(&self) -> usize {
        self.chunks.len().saturating_mul(self.chunk_len())
    }

    fn slot_in(chunks: &[Chunk<W>], bits: u32, i: u32) -> Option<&Option<Node<W>>> {
        let mask = 1u32.checked_shl(bits).map_or(0, |c| c.wrapping_sub(1));
        chunks
            .get(i.checked_shr(bits).unwrap_or(0) as usize)?
            .get((i & mask) as usize)
    }

    fn slot_mut_in(chunks: &mut [Chunk<W>], bits: u32, i: u32) -> Option<&mut Option<Node<W>>> {
        let mask = 1u32.checked_shl(bits).map_or(0, |c| c.wrapping_sub(1));
        chunks
            .get_mut(i.checked_shr(bits).unwrap_or(0) as usize)?
            .get_mut((i & mask) as usize)
    }

    fn node_in(chunks: &[Chunk<W>], bits: u32, i: u32) -> Option<&Node<W>> {
        Self::slot_in(chunks, bits, i).and_then(Option::as_ref)
    }

    fn node_mut_in(chunks: &mut [Chunk<W>], bits: u32, i: u32) -> Option<&mut Node<W>> {
        Self::slot_mut_in(chunks, bits, i).and_then(Option::as_mut)
    }

    fn node(&self, i: u32) -> Option<&Node<W>> {
        Self::node_in(&self.chunks, self.chunk_bits, i)
    }

    fn node_mut(&mut self, i: u32) -> Option<&mut Node<W>> {
        Self::node_mut_in(&mut self.chunks, self.chunk_bits, i)
    }

    /// Cached hash of the node in slot `i` (for the index's rehash).
    fn hash_in(chunks: &[Chunk<W>], bits: u32, i: u32) -> u32 {
        Self::node_in(chunks, bits, i).map_or(0, Node::hash)
    }

    /// The slot holding `key`, whose 24-bit hash is `h`.
    fn find(&self, key: &Key, h: u32) -> Option<u32> {
        let (chunks, bits) = (&self.chunks, self.chunk_bits);
        self.index.find(h, |i| {
            Self::node_in(chunks, bits, i).is_some_and(|n| n.key == *key)
        })
    }

    /// The slot holding `key`.
    fn locate(&self, key: &Key) -> Option<u32> {
        self.find(key, self.hash24(key))
    }

    /// Set the reference bit of slot `i`.
    fn mark(&mut self, i: u32) {
        if let Some(n) = self.node_mut(i) {
            n.referenced = true;
        }
    }

    /// A free slot, adding a chunk if none is left.
    fn alloc_slot(&mut self) -> Option<u32> {
        if self.free.is_empty() {
            let base = self.slots();
            let n = self.chunk_len();
            let end = u32::try_from(base.checked_add(n)?)
                .ok()
                .filter(|&e| e <= MAX_SLOT.saturating_add(1))?;
            let base = u32::try_from(base).ok()?;
            let chunk: Vec<Option<Node<W>>> = (0..n).map(|_| None).collect();
            self.chunks.push(chunk.into_boxed_slice());
            // Lowest slot popped first.
            self.free.extend((base..end).rev());
        }
        self.free.pop()
    }

    /// Take the node out of slot `i` and its slot out of the index.
    fn remove_at(&mut self, i: u32) -> Option<Node<W>> {
        let node = Self::slot_mut_in(&mut self.chunks, self.chunk_bits, i)?.take()?;
        let (chunks, bits) = (&self.chunks, self.chunk_bits);
        self.index
            .remove(node.hash(), i, |j| Self::hash_in(chunks, bits, j));
        self.free.push(i);
        Some(node)
    }

    /// After removals: release a mostly empty slab.
    fn tidy(&mut self) {
        let live = self.index.len();
        let chunk = self.chunk_len();
        if self.slots()
            >= live
                .saturating_mul(2)
                .saturating_add(chunk.saturating_mul(2))
        {
            self.shrink();
        }
    }

    /// Move the nodes of trailing chunks into free slots lower down, release
    /// the emptied chunks, and shrink the index and the free list.
    fn shrink(&mut self) {
        let live = self.index.len();
        let keep = live
            .div_ceil(self.chunk_len())
            .saturating_mul(self.chunk_len());
        let slots = u32::try_from(self.slots()).unwrap_or(u32::MAX);
        let keep = u32::try_from(keep).unwrap_or(u32::MAX);
        self.free.retain(|&j| j < keep);
        for from in keep..slots {
            if self.node(from).is_none() {
                continue;
            }
            let Some(to) = self.free.pop() else { break };
            self.relocate(from, to);
        }
        while self
            .chunks
            .last()
            .is_some_and(|c| c.iter().all(Option::is_none))
        {
            self.chunks.pop();
        }
        self.chunks.shrink_to_fit();
        // Every empty slot left, lowest popped first.
        let slots = u32::try_from(self.slots()).unwrap_or(u32::MAX);
        self.free.clear();
        for i in (0..slots).rev() {
            if self.node(i).is_none() {
                self.free.push(i);
            }
        }
        self.free.shrink_to_fit();
        let (chunks, bits) = (&self.chunks, self.chunk_bits);
        self.index.shrink(|i| Self::hash_in(chunks, bits, i));
    }

    /// Move the node in slot `from` to the empty slot `to`.
    fn relocate(&mut self, from: u32, to: u32) {
        if self.node(to).is_some() {
            return;
        }
        let Some(node) =
            Self::slot_mut_in(&mut self.chunks, self.chunk_bits, from).and_then(Option::take)
        else {
            return;
        };
        self.index.replace(node.hash(), from, to);
        if let Some(dst) = Self::slot_mut_in(&mut self.chunks, self.chunk_bits, to) {
            *dst = Some(node);
        }
    }
}

impl<const W: usize> MapStore<W> {
    /// Add `key` (absent, with 24-bit hash `h`), not yet referenced (a new
    /// key earns its second chance by coming back).
    #[allow(clippy::result_large_err)]
    fn insert_new(&mut self, key: Key, h: u32, entry: MapEntry<W>) -> Result<u32, MapEntry<W>> {
        if self.index.len() >= self.cap {
            return Err(entry);
        }
        let Some(i) = self.alloc_slot() else {
            return Err(entry);
        };
        let Some(slot) = Self::slot_mut_in(&mut self.chunks, self.chunk_bits, i) else {
            return Err(entry);
        };
        let [a, b, c, _] = h.to_le_bytes();
        *slot = Some(Node {
            key,
            referenced: false,
            hash: [a, b, c],
            entry,
        });
        let (chunks, bits) = (&self.chunks, self.chunk_bits);
        if !self.index.insert(h, i, |j| Self::hash_in(chunks, bits, j)) {
            // Unreachable: `alloc_slot` never hands out a slot past MAX_SLOT.
            let node =
                Self::slot_mut_in(&mut self.chunks, self.chunk_bits, i).and_then(Option::take);
            self.free.push(i);
            return node.map_or(Err(MapEntry::new()), |n| Err(n.entry));
        }
        Ok(i)
    }
}

impl<const W: usize> Store<W> for MapStore<W> {
    type Cold = BoxedCold;
    type Log = GrowLog<W>;

    fn capacity(&self) -> usize {
        self.cap
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    fn get(&self, key: &Key) -> Option<&MapEntry<W>> {
        self.node(self.locate(key)?).map(|n| &n.entry)
    }

    fn get_if_touched(&self, key: &Key) -> Option<&MapEntry<W>> {
        let n = self.node(self.locate(key)?)?;
        n.referenced.then_some(&n.entry)
    }

    fn get_mut(&mut self, key: &Key) -> Option<&mut MapEntry<W>> {
        let i = self.locate(key)?;
        self.node_mut(i).map(|n| &mut n.entry)
    }

    fn touch(&mut self, key: &Key) {
        if let Some(i) = self.locate(key) {
            self.mark(i);
        }
    }

    fn touch_get_mut(&mut self, key: &Key) -> Option<&mut MapEntry<W>> {
        let i = self.locate(key)?;
        let n = self.node_mut(i)?;
        n.referenced = true;
        Some(&mut n.entry)
    }

    fn upsert(
        &mut self,
        key: Key,
        classify: &mut dyn FnMut(&Key, &MapEntry<W>) -> Class,
    ) -> Upsert<'_, MapEntry<W>> {
        let h = self.hash24(&key);
        let mut evicted = None;
        let i = match self.find(&key, h) {
            Some(i) => {
                if let Some(n) = self.node_mut(i) {
                    n.referenced = true;
                    return Upsert::Found {
                        entry: &mut n.entry,
                        evicted,
                    };
                }
                return Upsert::Full;
            }
            None => {
                if self.index.len() >= self.cap {
                    evicted = self.evict(classify);
                    if evicted.is_none() {
                        return Upsert::Full;
                    }
                }
                match self.insert_new(key, h, MapEntry::new()) {
                    Ok(i) => i,
                    Err(_) => return Upsert::Full,
                }
            }
        };
        match self.node_mut(i) {
            Some(n) => Upsert::Found {
                entry: &mut n.entry,
                evicted,
            },
            None => Upsert::Full,
        }
    }

    #[allow(clippy::result_large_err)]
    fn insert(&mut self, key: Key, entry: MapEntry<W>) -> Result<(), MapEntry<W>> {
        let h = self.hash24(&key);
        if let Some(i) = self.find(&key, h) {
            if let Some(n) = self.node_mut(i) {
                n.entry = entry;
                n.referenced = true;
            }
            return Ok(());
        }
        self.insert_new(key, h, entry).map(|_| ())
    }

    fn remove(&mut self, key: &Key) -> Option<MapEntry<W>> {
        let i = self.locate(key)?;
        let node = self.remove_at(i)?;
        self.tidy();
        Some(node.entry)
    }

    fn evict(
        &mut self,
        classify: &mut dyn FnMut(&Key, &MapEntry<W>) -> Class,
    ) -> Option<(Key, Victim)> {
        let slots = self.slots();
        let len = self.index.len();
        let (chunks, bits) = (&mut self.chunks, self.chunk_bits);
        // Stride 1: the slab is not the hash table (the index is), so the
        // hand walks nodes in memory order.
        let (i, victim) = sweep(slots, self.hand as usize, len, 1, |i, clear| {
            let n = Self::node_mut_in(chunks, bits, u32::try_from(i).ok()?)?;
            if clear {
                n.referenced = false;
                return None;
            }
            Some((classify(&n.key, &n.entry), n.referenced))
        })?;
        let i = u32::try_from(i).ok()?;
        let node = self.remove_at(i)?;
        self.hand = i.wrapping_add(1);
        // No `tidy`: the new key takes the slot at once.
        Some((node.key, victim))
    }

    fn retain(&mut self, keep: &mut dyn FnMut(&Key, &MapEntry<W>) -> bool) -> usize {
        let mut removed = 0usize;
        let slots = u32::try_from(self.slots()).unwrap_or(u32::MAX);
        for i in 0..slots {
            let drop = self.node(i).is_some_and(|n| !keep(&n.key, &n.entry));
            if drop {
                self.remove_at(i);
                removed = removed.saturating_add(1);
            }
        }
        if removed > 0 {
            self.tidy();
        }
        removed
    }

    fn for_each(&self, f: &mut dyn FnMut(&Key, &MapEntry<W>)) {
        for n in self.chunks.iter().flat_map(|c| c.iter()).flatten() {
            f(&n.key, &n.entry);
        }
    }

    fn for_each_mut(&mut self, f: &mut dyn FnMut(&Key, &mut MapEntry<W>)) {
        for n in self.chunks.iter_mut().flat_map(|c| c.iter_mut()).flatten() {
            f(&n.key, &mut n.entry);
        }
    }

    fn clear(&mut self) {
        self.index.clear();
        self.chunks.clear();
        self.free.clear();
        self.hand = 0;
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::panic
)]
mod tests {
    use super::*;
    use crate::store::harness::{id, key, keys, rng, run, second_chance};

    const W: usize = 4;

    fn store(cap: usize) -> MapStore<W> {
        MapStore::new(Seed::new([9; 16]), cap)
    }

    /// Internal invariants: free list and slab consistent, index complete.
    fn check(s: &MapStore<W>) {
        let mut live = 0usize;
        for c in 0..s.chunks.len() {
            for j in 0..s.chunk_len() {
                let i = u32::try_from(c * s.chunk_len() + j).unwrap();
                if let Some(n) = s.node(i) {
                    live += 1;
                    assert_eq!(s.find(&n.key, s.hash24(&n.key)), Some(i));
                    assert_eq!(n.hash(), s.hash24(&n.key));
                } else {
                    assert!(s.free.contains(&i), "empty slot {i} not free");
                }
            }
        }
        assert_eq!(live, s.len());
        assert_eq!(live + s.free.len(), s.slots());
    }

    #[test]
    fn matches_a_set_and_the_eviction_rule() {
        for seed in 0..8 {
            let mut s = store(24);
            let (dead, live) = run(&mut s, 24, 40, 20_000, seed);
            assert!(dead > 100 && live > 100, "{dead} dead, {live} live");
            check(&s);
        }
    }

    #[test]
    fn matches_a_set_in_a_big_store() {
        let mut s = store(1000);
        run(&mut s, 1000, 1500, 30_000, 77);
        check(&s);
    }

    #[test]
    fn clock_gives_a_second_chance_and_takes_dead_keys_first() {
        for cap in [2, 20, 32, 5000] {
            second_chance(&mut store(cap));
        }
    }

    #[test]
    fn small_stores_use_small_chunks() {
        for cap in [0, 1, 2, 3, 5, 31, 33, 200] {
            let mut s = store(cap);
            assert_eq!(s.chunk_len(), cap.max(1).next_power_of_two().min(256));
            run(&mut s, cap, 8, 3_000, cap as u64);
            check(&s);
        }
    }

    #[test]
    fn full_store_hands_the_entry_back() {
        let mut s = store(2);
        s.insert(key(1), Entry::new()).unwrap();
        s.insert(key(2), Entry::new()).unwrap();
        assert!(s.insert(key(3), Entry::new()).is_err());
        assert!(s.insert(key(1), Entry::new()).is_ok());
        assert_eq!(keys(&s), [1, 2]);
    }

    #[test]
    fn a_mostly_empty_slab_is_released() {
        let mut s = store(10_000);
        for k in 0..2000 {
            s.insert(key(k), Entry::new()).unwrap();
        }
        assert_eq!(s.retain(&mut |k, _| id(k) % 10 == 0), 1800);
        let want: Vec<u64> = (0..2000).filter(|u| u % 10 == 0).collect();
        assert_eq!(keys(&s), want);
        assert!(s.slots() <= 200 + s.chunk_len(), "{} slots", s.slots());
        assert!(s.index.buckets() < 800);
        check(&s);
        for k in 0..200 {
            s.remove(&key(k * 10));
        }
        assert!(s.is_empty());
        assert!(s.slots() <= 2 * s.chunk_len(), "{} slots", s.slots());
        check(&s);
    }

    #[test]
    fn growth_and_sweeps_keep_every_key() {
        let mut s = store(100_000);
        let mut m = alloc::collections::BTreeSet::new();
        let mut st = 11u64;
        for round in 0..8u64 {
            for k in round * 700..round * 700 + 1500 {
                s.insert(key(k), Entry::new()).unwrap();
                m.insert(k);
            }
            for _ in 0..2000 {
                let k = rng(&mut st) % (round * 700 + 1500);
                s.touch(&key(k));
            }
            let slots = s.slots();
            let keep = |u: u64| (u ^ round).wrapping_mul(0x9E37_79B9) % 5 == 0;
            let gone = s.retain(&mut |k, _| keep(id(k)));
            let n = m.len();
            m.retain(|&u| keep(u));
            assert_eq!(gone, n - m.len());
            assert!(s.slots() < slots, "round {round}: no shrink");
            assert_eq!(
                keys(&s),
                m.iter().copied().collect::<Vec<_>>(),
                "round {round}"
            );
            check(&s);
        }
    }

    #[test]
    fn nodes_are_inline_and_small() {
        // Key 25 + reference bit 1 + hash 3 beside the entry: one 64-byte line.
        assert_eq!(core::mem::size_of::<MapEntry<W>>(), 32);
        assert_eq!(core::mem::size_of::<Option<Node<W>>>(), 64);
    }
}
