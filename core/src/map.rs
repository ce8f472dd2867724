//! [`MapStore`] (feature `alloc`): a growable table up to a run-time cap,
//! with the same keyed hash and the same eviction order as
//! [`FixedStore`](crate::FixedStore).
//!
//! * Slab: nodes (key, touch stamp, 24 bits of its hash, entry: one
//!   64-byte line with the boxed-cold, growing-log entry) live inline in
//!   chunks of 16 KiB, so growth never moves a node and unused room is at
//!   most one chunk; freed slots are reused.
//! * Index: a `SlotIndex` (`index.rs`) of slab slots (4 bytes a bucket:
//!   an 8-bit tag and the slot, probed linearly, so a lookup reads one
//!   index line before the node), hashed with the tables' keyed SipHash
//!   (its top 24 bits, which the node caches for rehashing and removal
//!   without hashing again). `upsert` hashes once per request.
//! * Order: no linked list (a touch would dirty two neighbours). `order` is
//!   a queue of slot numbers; the record at position `p` has stamp
//!   `head + p` (mod 2³²) and is live iff its node's `stamp` equals it, so a
//!   touch sets the node's stamp and appends one record (nothing if the node
//!   already is the newest). Walking the live records front to back gives
//!   least recently touched first. When stale records exceed half the live
//!   ones (plus a constant) the queue is compacted in order and stamps are
//!   renumbered from 0, so compaction is amortised O(1) per touch.
//! * Shrinking: when the slab is less than half full, trailing chunks are
//!   emptied into free slots lower down and released.
//!
//! Slots are 24 bits, so a store holds at most 16 777 214 keys; keys whose
//! 8-bit index tags agree are told apart by comparing the keys.

use crate::entry::{BoxedCold, Entry};
use crate::index::{SlotIndex, MAX_SLOT};
use crate::key::{Key, KeyHasher, Seed};
use crate::store::{Store, Upsert};
use crate::window::GrowLog;
use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec::Vec;

/// Target chunk size in bytes.
const CHUNK_BYTES: usize = 16384;

/// Stale records tolerated beyond half the live ones before compaction.
const SLACK: usize = 64;

/// The entry a [`MapStore`] keeps: cold part boxed on first use, log
/// growing with use.
type MapEntry<const W: usize> = Entry<W, BoxedCold, GrowLog<W>>;

/// One key's slot: the entry inline, plus what the index and order need.
/// 64 bytes, aligned so a lookup reads one cache line (a test keeps the
/// size at 64: a bigger node would be padded to 128).
#[repr(align(64))]
struct Node<const W: usize> {
    key: Key,
    /// Stamp of this node's live record in the order queue.
    stamp: u32,
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

/// Most records the order queue may hold for `live` keys before compaction.
fn limit(live: usize) -> usize {
    live.saturating_add(live / 2).saturating_add(SLACK).min(
        usize::try_from(u32::MAX)
            .unwrap_or(usize::MAX)
            .saturating_sub(1),
    )
}

/// Growable key table: keyed open-addressing index over a chunked slab, with a
/// stamped queue for least-recently-touched order.
pub struct MapStore<const W: usize> {
    index: SlotIndex,
    chunks: Vec<Chunk<W>>,
    /// Nodes per chunk is `1 << chunk_bits`.
    chunk_bits: u32,
    /// Every empty slot of `chunks`.
    free: Vec<u32>,
    /// Slot numbers in touch order, oldest first (stale records included).
    order: VecDeque<u32>,
    /// Stamp of the front record of `order`.
    head: u32,
    hasher: KeyHasher,
    cap: usize,
    #[cfg(test)]
    compactions: usize,
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
            order: VecDeque::new(),
            head: 0,
            hasher: KeyHasher::new(seed),
            cap,
            #[cfg(test)]
            compactions: 0,
        }
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

    /// Stamp of the record at queue position `pos`.
    fn stamp_at(&self, pos: usize) -> u32 {
        // Stamps count modulo 2^32; the queue is shorter than that.
        self.head.wrapping_add(pos as u32)
    }

    /// Whether the record `(i, stamp)` is live.
    fn live(&self, i: u32, stamp: u32) -> bool {
        self.node(i).is_some_and(|n| n.stamp == stamp)
    }

    /// Append a record for slot `i` (whose stamp the caller has set to
    /// `stamp_at(order.len())`), growing the queue by a quarter when full.
    fn push(&mut self, i: u32) {
        if self.order.len() == self.order.capacity() {
            let more = (self.order.capacity() / 4).max(16);
            self.order.reserve_exact(more);
        }
        self.order.push_back(i);
    }

    /// Make slot `i` the most recently touched.
    fn touch_at(&mut self, i: u32) {
        let len = self.order.len();
        let next = self.stamp_at(len);
        let newest = next.wrapping_sub(1);
        let Some(n) = self.node_mut(i) else { return };
        if len > 0 && n.stamp == newest {
            return;
        }
        n.stamp = next;
        self.push(i);
        self.maybe_compact();
    }

    fn maybe_compact(&mut self) {
        if self.order.len() > limit(self.index.len()) {
            self.compact();
        }
    }

    /// Drop stale records, keep live ones in order, renumber stamps from 0.
    fn compact(&mut self) {
        let (chunks, bits) = (&mut self.chunks, self.chunk_bits);
        let mut stamp = self.head;
        let mut kept = 0u32;
        self.order.retain(|&i| {
            let live = match Self::node_mut_in(chunks, bits, i) {
                Some(n) if n.stamp == stamp => {
                    n.stamp = kept;
                    kept = kept.wrapping_add(1);
                    true
                }
                _ => false,
            };
            stamp = stamp.wrapping_add(1);
            live
        });
        self.head = 0;
        #[cfg(test)]
        {
            self.compactions = self.compactions.wrapping_add(1);
        }
        let need = limit(self.order.len()).saturating_add(1);
        if self.order.capacity() > need.saturating_mul(2) {
            self.order.shrink_to(need);
        }
    }

    /// Pop stale records off the front of the queue.
    fn pop_stale_front(&mut self) {
        while let Some(&i) = self.order.front() {
            if self.live(i, self.head) {
                return;
            }
            self.order.pop_front();
            self.head = self.head.wrapping_add(1);
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

    /// Take the node out of slot `i` and its slot out of the index; its
    /// queue record goes stale.
    fn remove_at(&mut self, i: u32) -> Option<Node<W>> {
        let node = Self::slot_mut_in(&mut self.chunks, self.chunk_bits, i)?.take()?;
        let (chunks, bits) = (&self.chunks, self.chunk_bits);
        self.index
            .remove(node.hash(), i, |j| Self::hash_in(chunks, bits, j));
        self.free.push(i);
        Some(node)
    }

    /// After removals: compact the queue, release a mostly empty slab.
    fn tidy(&mut self) {
        self.maybe_compact();
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
        let pos = node.stamp.wrapping_sub(self.head) as usize;
        if let Some(r) = self.order.get_mut(pos) {
            *r = to;
        }
        if let Some(dst) = Self::slot_mut_in(&mut self.chunks, self.chunk_bits, to) {
            *dst = Some(node);
        }
    }
}

impl<const W: usize> MapStore<W> {
    /// Add `key` (absent, with 24-bit hash `h`) as the newest entry.
    #[allow(clippy::result_large_err)]
    fn insert_new(&mut self, key: Key, h: u32, entry: MapEntry<W>) -> Result<u32, MapEntry<W>> {
        if self.index.len() >= self.cap {
            return Err(entry);
        }
        let Some(i) = self.alloc_slot() else {
            return Err(entry);
        };
        let stamp = self.stamp_at(self.order.len());
        let Some(slot) = Self::slot_mut_in(&mut self.chunks, self.chunk_bits, i) else {
            return Err(entry);
        };
        let [a, b, c, _] = h.to_le_bytes();
        *slot = Some(Node {
            key,
            stamp,
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
        self.push(i);
        self.maybe_compact();
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

    fn get_if_newest(&self, key: &Key) -> Option<&MapEntry<W>> {
        // The last record is the newest node's, if that node still holds
        // its stamp: no hashing, one (hot) node read.
        let len = self.order.len();
        let n = self.node(*self.order.back()?)?;
        (n.key == *key && n.stamp == self.stamp_at(len).wrapping_sub(1)).then_some(&n.entry)
    }

    fn get_mut(&mut self, key: &Key) -> Option<&mut MapEntry<W>> {
        let i = self.locate(key)?;
        self.node_mut(i).map(|n| &mut n.entry)
    }

    fn touch(&mut self, key: &Key) {
        if let Some(i) = self.locate(key) {
            self.touch_at(i);
        }
    }

    fn touch_get_mut(&mut self, key: &Key) -> Option<&mut MapEntry<W>> {
        let i = self.locate(key)?;
        self.touch_at(i);
        self.node_mut(i).map(|n| &mut n.entry)
    }

    fn upsert(
        &mut self,
        key: Key,
        evictable: &mut dyn FnMut(&Key, &MapEntry<W>) -> bool,
    ) -> Upsert<'_, MapEntry<W>> {
        let h = self.hash24(&key);
        let mut evicted = false;
        let i = match self.find(&key, h) {
            Some(i) => {
                self.touch_at(i);
                i
            }
            None => {
                if self.index.len() >= self.cap {
                    if self.evict_lru(evictable).is_none() {
                        return Upsert::Full;
                    }
                    evicted = true;
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
            }
            self.touch_at(i);
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

    fn evict_lru(&mut self, evictable: &mut dyn FnMut(&Key, &MapEntry<W>) -> bool) -> Option<Key> {
        self.pop_stale_front();
        let mut found = None;
        for (pos, &i) in self.order.iter().enumerate() {
            let Some(n) = self.node(i) else { continue };
            if n.stamp == self.stamp_at(pos) && evictable(&n.key, &n.entry) {
                found = Some(i);
                break;
            }
        }
        let node = self.remove_at(found?)?;
        self.pop_stale_front();
        self.tidy();
        Some(node.key)
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
        for (pos, &i) in self.order.iter().enumerate() {
            if let Some(n) = self.node(i) {
                if n.stamp == self.stamp_at(pos) {
                    f(&n.key, &n.entry);
                }
            }
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
        self.order.clear();
        self.head = 0;
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
    use crate::key::{Addr, KeyKind};

    const W: usize = 4;

    /// Key number `n`, of every kind in turn.
    fn key(n: u64) -> Key {
        let addr = Addr::from_octets((u128::from(n) + 1).to_be_bytes());
        match n % 4 {
            0 => Key::request(addr),
            1 => Key::login_ip(addr),
            2 => Key::login_user(n, addr),
            _ => Key::account(n),
        }
    }

    /// The number of a key made by [`key`].
    fn id(k: &Key) -> u64 {
        match k.kind() {
            KeyKind::LoginUser | KeyKind::Account => k.user(),
            _ => (u128::from_be_bytes(k.addr().octets()) - 1) as u64,
        }
    }

    fn store(cap: usize) -> MapStore<W> {
        MapStore::new(Seed::new([9; 16]), cap)
    }

    fn order(s: &MapStore<W>) -> Vec<u64> {
        let mut v = Vec::new();
        s.for_each(&mut |k, _| v.push(id(k)));
        v
    }

    /// SplitMix64.
    fn rng(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Reference LRU: keys oldest first.
    struct Model {
        keys: Vec<u64>,
        cap: usize,
    }

    impl Model {
        fn pos(&self, k: u64) -> Option<usize> {
            self.keys.iter().position(|&x| x == k)
        }
        fn touch(&mut self, k: u64) {
            if let Some(p) = self.pos(k) {
                self.keys.remove(p);
                self.keys.push(k);
            }
        }
    }

    /// Internal invariants: queue bounded, every live node's record in
    /// place, free list and slab consistent, index complete.
    fn check(s: &MapStore<W>) {
        assert!(s.order.len() <= limit(s.len()) + 1);
        let mut live = 0usize;
        for c in 0..s.chunks.len() {
            for j in 0..s.chunk_len() {
                let i = u32::try_from(c * s.chunk_len() + j).unwrap();
                if let Some(n) = s.node(i) {
                    live += 1;
                    let pos = n.stamp.wrapping_sub(s.head) as usize;
                    assert_eq!(s.order.get(pos), Some(&i), "record of slot {i}");
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

    /// Random inserts, touches, lookups, removals, evictions, retains and
    /// clears against the reference; returns how many compactions ran.
    fn run(s: &mut MapStore<W>, cap: usize, pool: u64, ops: usize, seed: u64) -> usize {
        run_mix(s, cap, pool, ops, seed, false)
    }

    fn run_mix(
        s: &mut MapStore<W>,
        cap: usize,
        pool: u64,
        ops: usize,
        seed: u64,
        touchy: bool,
    ) -> usize {
        let mut m = Model {
            keys: order(s),
            cap,
        };
        let mut st = seed;
        let compactions = s.compactions;
        for step in 0..ops {
            let r = rng(&mut st);
            let k = (r >> 8) % pool;
            let mut op = r % 100;
            if touchy && (80..98).contains(&op) && (r >> 20) % 8 != 0 {
                op = 30; // mostly touches: long runs between compactions
            }
            match op {
                15..=29 => {
                    let salt = r >> 40;
                    let ok = |u: u64| (u ^ salt) % 3 != 0;
                    let got = match s.upsert(key(k), &mut |key, _| ok(id(key))) {
                        Upsert::Found { evicted, .. } => Some(evicted),
                        Upsert::Full => None,
                    };
                    let want = if m.pos(k).is_some() {
                        m.touch(k);
                        Some(false)
                    } else if m.keys.len() >= m.cap {
                        match m.keys.iter().position(|&u| ok(u)) {
                            Some(p) if m.cap > 0 => {
                                m.keys.remove(p);
                                m.keys.push(k);
                                Some(true)
                            }
                            _ => None,
                        }
                    } else {
                        m.keys.push(k);
                        Some(false)
                    };
                    assert_eq!(got, want, "upsert at step {step}");
                }
                0..=14 => {
                    let res = s.insert(key(k), Entry::new());
                    if m.pos(k).is_some() {
                        assert!(res.is_ok());
                        m.touch(k);
                    } else if m.keys.len() >= m.cap {
                        assert!(res.is_err());
                    } else {
                        assert!(res.is_ok());
                        m.keys.push(k);
                    }
                }
                30..=54 => {
                    s.touch(&key(k));
                    m.touch(k);
                }
                55..=69 => {
                    assert_eq!(s.touch_get_mut(&key(k)).is_some(), m.pos(k).is_some());
                    m.touch(k);
                }
                70..=79 => {
                    assert_eq!(s.get(&key(k)).is_some(), m.pos(k).is_some());
                    assert_eq!(s.get_mut(&key(k)).is_some(), m.pos(k).is_some());
                }
                80..=87 => {
                    assert_eq!(s.remove(&key(k)).is_some(), m.pos(k).is_some());
                    if let Some(p) = m.pos(k) {
                        m.keys.remove(p);
                    }
                }
                88..=97 => {
                    // Pin about a third of the keys, varying which.
                    let salt = r >> 40;
                    let ok = |u: u64| (u ^ salt) % 3 != 0;
                    let got = s.evict_lru(&mut |key, _| ok(id(key)));
                    let want = m.keys.iter().position(|&u| ok(u));
                    let want = want.map(|p| m.keys.remove(p));
                    assert_eq!(got.map(|key| id(&key)), want, "evict at step {step}");
                }
                98 => {
                    let salt = r >> 40;
                    let keep = |u: u64| (u ^ salt) % 4 != 0;
                    let gone = s.retain(&mut |key, _| keep(id(key)));
                    let n = m.keys.len();
                    m.keys.retain(|&u| keep(u));
                    assert_eq!(gone, n - m.keys.len());
                }
                _ => {
                    if r % 7 == 0 {
                        s.clear();
                        m.keys.clear();
                    }
                }
            }
            assert_eq!(s.len(), m.keys.len());
            assert_eq!(order(s), m.keys, "order at step {step}");
            if step % 97 == 0 {
                check(s);
            }
        }
        check(s);
        s.compactions - compactions
    }

    #[test]
    fn matches_reference_lru_across_compactions() {
        for seed in 0..8 {
            let mut s = store(48);
            let c = run_mix(&mut s, 48, 64, 20_000, seed, true);
            assert!(c >= 50, "only {c} compactions");
        }
    }

    #[test]
    fn matches_reference_lru_in_a_big_store() {
        let mut s = store(1000);
        run(&mut s, 1000, 1500, 30_000, 77);
    }

    #[test]
    fn small_stores_use_small_chunks() {
        for cap in [0, 1, 2, 3, 5, 31, 33, 200] {
            let mut s = store(cap);
            assert_eq!(s.chunk_len(), cap.max(1).next_power_of_two().min(256));
            run(&mut s, cap, 8, 3_000, cap as u64);
        }
    }

    #[test]
    fn stamps_wrap_around() {
        let mut s = store(250);
        s.head = u32::MAX - 100;
        // 200 records, no compaction: stamps run across 2^32.
        for k in 0..200 {
            s.insert(key(k), Entry::new()).unwrap();
        }
        for k in (0..200).step_by(7) {
            s.touch(&key(k));
        }
        assert!(s.head == u32::MAX - 100 && s.stamp_at(s.order.len()) < 1000);
        let mut want: Vec<u64> = (0..200).filter(|k| k % 7 != 0).collect();
        want.extend((0..200).step_by(7));
        assert_eq!(order(&s), want);
        check(&s);
        assert_eq!(s.evict_lru(&mut |k, _| id(k) > 100), Some(key(101)));
        run(&mut s, 250, 300, 5_000, 3);
    }

    #[test]
    fn compaction_renumbers_stamps_in_order() {
        let mut s = store(100);
        for k in 0..10 {
            s.insert(key(k), Entry::new()).unwrap();
        }
        for k in [3, 1, 3, 7, 0, 3] {
            s.touch(&key(k));
        }
        s.remove(&key(5));
        let want = [2, 4, 6, 8, 9, 1, 7, 0, 3];
        assert_eq!(order(&s), want);
        assert_eq!(s.order.len(), 16);
        s.compact();
        assert_eq!(s.head, 0);
        assert_eq!(s.order.len(), want.len());
        for (pos, (&i, &k)) in s.order.iter().zip(want.iter()).enumerate() {
            let n = s.node(i).unwrap();
            assert_eq!(n.key, key(k));
            assert_eq!(n.stamp as usize, pos);
        }
        assert_eq!(order(&s), want);
        // The newest is not pushed again; the next touch gets stamp 9.
        s.touch(&key(3));
        assert_eq!(s.order.len(), 9);
        s.touch(&key(2));
        assert_eq!(s.node(*s.order.back().unwrap()).unwrap().stamp, 9);
        check(&s);
    }

    #[test]
    fn for_each_goes_least_recently_touched_first() {
        let mut s = store(10);
        for k in [1, 2, 3, 4] {
            s.insert(key(k), Entry::new()).unwrap();
        }
        assert_eq!(order(&s), [1, 2, 3, 4]);
        s.touch(&key(1));
        assert!(s.get(&key(2)).is_some()); // no touch
        assert!(s.get_mut(&key(2)).is_some()); // no touch
        s.insert(key(3), Entry::new()).unwrap(); // existing: touch
        assert_eq!(order(&s), [2, 4, 1, 3]);
        assert!(s.touch_get_mut(&key(4)).is_some());
        assert_eq!(order(&s), [2, 1, 3, 4]);
        assert_eq!(s.evict_lru(&mut |k, _| id(k) != 2), Some(key(1)));
        assert_eq!(order(&s), [2, 3, 4]);
        let mut n = 0;
        s.for_each_mut(&mut |_, _| n += 1);
        assert_eq!(n, 3);
    }

    #[test]
    fn full_store_hands_the_entry_back() {
        let mut s = store(2);
        s.insert(key(1), Entry::new()).unwrap();
        s.insert(key(2), Entry::new()).unwrap();
        assert!(s.insert(key(3), Entry::new()).is_err());
        assert!(s.insert(key(1), Entry::new()).is_ok());
        assert_eq!(order(&s), [2, 1]);
    }

    #[test]
    fn a_mostly_empty_slab_is_released() {
        let mut s = store(10_000);
        for k in 0..2000 {
            s.insert(key(k), Entry::new()).unwrap();
        }
        for k in (0..2000).step_by(3) {
            s.touch(&key(k));
        }
        let before = order(&s);
        assert_eq!(s.retain(&mut |k, _| id(k) % 10 == 0), 1800);
        let want: Vec<u64> = before.into_iter().filter(|u| u % 10 == 0).collect();
        assert_eq!(order(&s), want);
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
    fn growth_and_sweeps_keep_order() {
        let mut s = store(100_000);
        let mut m = Model {
            keys: Vec::new(),
            cap: 100_000,
        };
        let mut st = 11u64;
        for round in 0..8u64 {
            for k in round * 700..round * 700 + 1500 {
                s.insert(key(k), Entry::new()).unwrap();
                if m.pos(k).is_some() {
                    m.touch(k);
                } else {
                    m.keys.push(k);
                }
            }
            for _ in 0..2000 {
                let k = rng(&mut st) % (round * 700 + 1500);
                s.touch(&key(k));
                m.touch(k);
            }
            let slots = s.slots();
            let keep = |u: u64| (u ^ round).wrapping_mul(0x9E37_79B9) % 5 == 0;
            let gone = s.retain(&mut |k, _| keep(id(k)));
            let n = m.keys.len();
            m.keys.retain(|&u| keep(u));
            assert_eq!(gone, n - m.keys.len());
            assert!(s.slots() < slots, "round {round}: no shrink");
            assert_eq!(order(&s), m.keys, "round {round}");
            check(&s);
        }
    }

    #[test]
    fn nodes_are_inline_and_small() {
        // Key 25 + stamp 4 + hash 3 beside the entry: one 64-byte line.
        assert_eq!(core::mem::size_of::<MapEntry<W>>(), 32);
        assert_eq!(core::mem::size_of::<Option<Node<W>>>(), 64);
    }
}
