//! [`MapStore`] (feature `alloc`): a growable table up to a run-time cap,
//! with the same keyed hash and the same eviction order as
//! [`FixedStore`](crate::FixedStore).
//!
//! A hashbrown index maps keys to slots of a slab; the slab's nodes form a
//! doubly linked list in touch order, so lookup, touch, insert and remove
//! are O(1) and eviction walks only past pinned entries. Entries are boxed:
//! spare capacity in the index and the slab costs a few words, not an entry.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::hash::BuildHasher;
use hashbrown::HashMap;
use siphasher::sip::SipHasher13;

use crate::entry::{BoxedCold, Entry};
use crate::key::{Key, KeyHasher, Seed};
use crate::store::Store;
use crate::window::GrowLog;

/// Builds keyed SipHash-1-3 hashers for hashbrown.
#[derive(Clone, Copy, Debug)]
pub struct SipBuild(KeyHasher);

impl BuildHasher for SipBuild {
    type Hasher = SipHasher13;
    fn build_hasher(&self) -> SipHasher13 {
        self.0.build()
    }
}

struct Node<const W: usize> {
    key: Key,
    older: Option<u32>,
    newer: Option<u32>,
    entry: Box<Entry<W, BoxedCold, GrowLog<W>>>,
}

/// Growable key table: keyed hashbrown index over a slab linked in touch order.
pub struct MapStore<const W: usize> {
    index: HashMap<Key, u32, SipBuild>,
    nodes: Vec<Option<Node<W>>>,
    free: Vec<u32>,
    newest: Option<u32>,
    oldest: Option<u32>,
    cap: usize,
}

impl<const W: usize> MapStore<W> {
    /// An empty store holding at most `max_entries` keys.
    pub fn new(seed: Seed, max_entries: usize) -> Self {
        MapStore {
            index: HashMap::with_hasher(SipBuild(KeyHasher::new(seed))),
            nodes: Vec::new(),
            free: Vec::new(),
            newest: None,
            oldest: None,
            cap: max_entries.min(u32::MAX as usize),
        }
    }

    fn node(&self, i: u32) -> Option<&Node<W>> {
        self.nodes.get(i as usize).and_then(Option::as_ref)
    }

    fn node_mut(&mut self, i: u32) -> Option<&mut Node<W>> {
        self.nodes.get_mut(i as usize).and_then(Option::as_mut)
    }

    fn unlink(&mut self, i: u32) {
        let Some((older, newer)) = self.node(i).map(|n| (n.older, n.newer)) else {
            return;
        };
        match older {
            Some(o) => {
                if let Some(n) = self.node_mut(o) {
                    n.newer = newer;
                }
            }
            None => self.oldest = newer,
        }
        match newer {
            Some(n) => {
                if let Some(n) = self.node_mut(n) {
                    n.older = older;
                }
            }
            None => self.newest = older,
        }
    }

    fn link_newest(&mut self, i: u32) {
        let prev = self.newest;
        if let Some(n) = self.node_mut(i) {
            n.older = prev;
            n.newer = None;
        }
        match prev {
            Some(p) => {
                if let Some(n) = self.node_mut(p) {
                    n.newer = Some(i);
                }
            }
            None => self.oldest = Some(i),
        }
        self.newest = Some(i);
    }

    fn remove_at(&mut self, i: u32) -> Option<Node<W>> {
        self.unlink(i);
        let node = self.nodes.get_mut(i as usize).and_then(Option::take)?;
        self.index.remove(&node.key);
        self.free.push(i);
        Some(node)
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

    fn get(&self, key: &Key) -> Option<&Entry<W, BoxedCold, GrowLog<W>>> {
        let i = *self.index.get(key)?;
        self.node(i).map(|n| &*n.entry)
    }

    fn get_mut(&mut self, key: &Key) -> Option<&mut Entry<W, BoxedCold, GrowLog<W>>> {
        let i = *self.index.get(key)?;
        self.node_mut(i).map(|n| &mut *n.entry)
    }

    fn touch(&mut self, key: &Key) {
        if let Some(&i) = self.index.get(key) {
            if self.newest != Some(i) {
                self.unlink(i);
                self.link_newest(i);
            }
        }
    }

    fn touch_get_mut(&mut self, key: &Key) -> Option<&mut Entry<W, BoxedCold, GrowLog<W>>> {
        let i = *self.index.get(key)?;
        if self.newest != Some(i) {
            self.unlink(i);
            self.link_newest(i);
        }
        self.node_mut(i).map(|n| &mut *n.entry)
    }

    #[allow(clippy::result_large_err)]
    fn insert(
        &mut self,
        key: Key,
        entry: Entry<W, BoxedCold, GrowLog<W>>,
    ) -> Result<(), Entry<W, BoxedCold, GrowLog<W>>> {
        if let Some(&i) = self.index.get(&key) {
            if let Some(n) = self.node_mut(i) {
                *n.entry = entry;
            }
            self.touch(&key);
            return Ok(());
        }
        if self.index.len() >= self.cap {
            return Err(entry);
        }
        let node = Node {
            key,
            older: None,
            newer: None,
            entry: Box::new(entry),
        };
        let i = match self.free.pop() {
            Some(i) => {
                if let Some(slot) = self.nodes.get_mut(i as usize) {
                    *slot = Some(node);
                }
                i
            }
            None => {
                let Ok(i) = u32::try_from(self.nodes.len()) else {
                    return Err(*node.entry);
                };
                self.nodes.push(Some(node));
                i
            }
        };
        self.index.insert(key, i);
        self.link_newest(i);
        Ok(())
    }

    fn remove(&mut self, key: &Key) -> Option<Entry<W, BoxedCold, GrowLog<W>>> {
        let i = *self.index.get(key)?;
        self.remove_at(i).map(|n| *n.entry)
    }

    fn evict_lru(
        &mut self,
        evictable: &mut dyn FnMut(&Key, &Entry<W, BoxedCold, GrowLog<W>>) -> bool,
    ) -> Option<Key> {
        let mut cur = self.oldest;
        while let Some(i) = cur {
            let n = self.node(i)?;
            if evictable(&n.key, &n.entry) {
                let key = n.key;
                self.remove_at(i);
                return Some(key);
            }
            cur = n.newer;
        }
        None
    }

    fn retain(
        &mut self,
        keep: &mut dyn FnMut(&Key, &Entry<W, BoxedCold, GrowLog<W>>) -> bool,
    ) -> usize {
        let mut removed = 0usize;
        for i in 0..self.nodes.len() {
            let Ok(i) = u32::try_from(i) else { break };
            let drop = self.node(i).is_some_and(|n| !keep(&n.key, &n.entry));
            if drop {
                self.remove_at(i);
                removed = removed.saturating_add(1);
            }
        }
        removed
    }

    fn for_each(&self, f: &mut dyn FnMut(&Key, &Entry<W, BoxedCold, GrowLog<W>>)) {
        let mut cur = self.oldest;
        while let Some(i) = cur {
            let Some(n) = self.node(i) else { return };
            f(&n.key, &n.entry);
            cur = n.newer;
        }
    }

    fn for_each_mut(&mut self, f: &mut dyn FnMut(&Key, &mut Entry<W, BoxedCold, GrowLog<W>>)) {
        for n in self.nodes.iter_mut().flatten() {
            f(&n.key, &mut n.entry);
        }
    }

    fn clear(&mut self) {
        self.index.clear();
        self.nodes.clear();
        self.free.clear();
        self.newest = None;
        self.oldest = None;
    }
}
