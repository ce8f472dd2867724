//! [`MapStore`] (feature `alloc`): a hashbrown map that grows up to a
//! run-time cap, with the same keyed hash and the same eviction order as
//! [`FixedStore`](crate::FixedStore).

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use core::hash::BuildHasher;
use hashbrown::HashMap;
use siphasher::sip::SipHasher13;

use crate::entry::Entry;
use crate::key::{Key, KeyHasher, Seed};
use crate::store::Store;

/// Builds keyed SipHash-1-3 hashers for hashbrown.
#[derive(Clone, Copy, Debug)]
pub struct SipBuild(KeyHasher);

impl BuildHasher for SipBuild {
    type Hasher = SipHasher13;
    fn build_hasher(&self) -> SipHasher13 {
        self.0.build()
    }
}

/// Growable key table: hashbrown for lookup, a B-tree of touch sequence
/// numbers for least-recently-touched order (O(log n) per touch).
pub struct MapStore<const W: usize> {
    /// Entries are boxed so the table's spare buckets cost a pointer, not an entry.
    map: HashMap<Key, (u64, Box<Entry<W>>), SipBuild>,
    order: BTreeMap<u64, Key>,
    seq: u64,
    cap: usize,
}

impl<const W: usize> MapStore<W> {
    /// An empty store holding at most `max_entries` keys.
    pub fn new(seed: Seed, max_entries: usize) -> Self {
        MapStore {
            map: HashMap::with_hasher(SipBuild(KeyHasher::new(seed))),
            order: BTreeMap::new(),
            seq: 0,
            cap: max_entries,
        }
    }

    fn bump(&mut self) -> u64 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }
}

impl<const W: usize> Store<W> for MapStore<W> {
    fn capacity(&self) -> usize {
        self.cap
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn get(&self, key: &Key) -> Option<&Entry<W>> {
        self.map.get(key).map(|(_, e)| &**e)
    }

    fn get_mut(&mut self, key: &Key) -> Option<&mut Entry<W>> {
        self.map.get_mut(key).map(|(_, e)| &mut **e)
    }

    fn touch(&mut self, key: &Key) {
        let seq = self.bump();
        if let Some((s, _)) = self.map.get_mut(key) {
            self.order.remove(s);
            *s = seq;
            self.order.insert(seq, *key);
        }
    }

    #[allow(clippy::result_large_err)]
    fn insert(&mut self, key: Key, entry: Entry<W>) -> Result<(), Entry<W>> {
        if !self.map.contains_key(&key) && self.map.len() >= self.cap {
            return Err(entry);
        }
        let seq = self.bump();
        if let Some((old, _)) = self.map.insert(key, (seq, Box::new(entry))) {
            self.order.remove(&old);
        }
        self.order.insert(seq, key);
        Ok(())
    }

    fn remove(&mut self, key: &Key) -> Option<Entry<W>> {
        let (seq, e) = self.map.remove(key)?;
        self.order.remove(&seq);
        Some(*e)
    }

    fn evict_lru(&mut self, evictable: &mut dyn FnMut(&Key, &Entry<W>) -> bool) -> Option<Key> {
        let victim = self
            .order
            .values()
            .copied()
            .find(|k| self.map.get(k).is_some_and(|(_, e)| evictable(k, e)))?;
        self.remove(&victim);
        Some(victim)
    }

    fn retain(&mut self, keep: &mut dyn FnMut(&Key, &Entry<W>) -> bool) -> usize {
        let before = self.map.len();
        let order = &mut self.order;
        self.map.retain(|k, (seq, e)| {
            let k_ = keep(k, e);
            if !k_ {
                order.remove(seq);
            }
            k_
        });
        before.saturating_sub(self.map.len())
    }

    fn for_each(&self, f: &mut dyn FnMut(&Key, &Entry<W>)) {
        for k in self.order.values() {
            if let Some((_, e)) = self.map.get(k) {
                f(k, e);
            }
        }
    }

    fn for_each_mut(&mut self, f: &mut dyn FnMut(&Key, &mut Entry<W>)) {
        for (k, (_, e)) in self.map.iter_mut() {
            f(k, e);
        }
    }

    fn clear(&mut self) {
        self.map.clear();
        self.order.clear();
    }
}
