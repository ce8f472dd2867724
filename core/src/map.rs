//! [`MapStore`] (feature `alloc`): a growable table up to a run-time cap,
//! with the same keyed hash and the same eviction rule as
//! [`FixedStore`](crate::internals::FixedStore).
//!
//! * One table: the entries themselves live in one `Vec` of 64-byte
//!   slots aligned to cache lines (an 8-byte key word beside the 56-byte
//!   entry: a log with up to ten events inline and the cold-part
//!   pointer), so a key found costs exactly one slot line, with a parallel
//!   array of 2-byte metas (occupied, reference bit, key kind and form,
//!   10 bits of the key's hash). Open addressing with linear probing over
//!   both, backward-shift deletion (no tombstones, so a flood of new keys
//!   never forces a rebuild). A lookup scans metas (one line, which stays
//!   cached far more than the slots do: 2 bytes a key) and reads the one
//!   slot whose meta matches: one random line per decision, where the
//!   chunked slab under a separate index it replaces read three dependent
//!   ones (bucket, chunk table, node).
//! * Compact keys: an address key whose address fits in 64 bits (IPv4,
//!   an IPv6 prefix up to /64) and an account key are their 8-byte word
//!   plus kind and form in the meta, compared exactly. Any other key (a
//!   (username, address) pair, an IPv6 key longer than /64) is held by a
//!   keyed 64-bit fingerprint (its table hash), its full key kept in the
//!   entry's cold part ([`BoxedCold`]) and compared there on a match.
//! * Hash: the keyed SipHash-1-3 of the tables, over the 9 bytes of a
//!   compact key's word and shape (the full key's 25 bytes for the
//!   fingerprint); the home slot from its top 32 bits (any table size),
//!   the meta tag from its low 10.
//! * Size: at most 7/8 full; grown by doubling, the last step sized to the
//!   cap (so a full table holds `cap` keys at 7/8, not a power of two at
//!   under half), and cut back to half full when under a quarter after
//!   removals.
//! * Eviction: a reference bit per key, set on touch, and a CLOCK hand
//!   stepping by a stride coprime with the table size (the rule and why
//!   CLOCK: [`store`](crate::store); why a stride:
//!   [`FixedStore`](crate::internals::FixedStore)).

use crate::entry::{BoxedCold, Entry};
use crate::key::{Addr, Key, KeyKind, Seed, DOMAIN_TABLE};
use crate::store::{coprime_stride, sweep, Class, Store, Upsert, Victim};
use crate::window::GrowLog;
use alloc::vec::Vec;
use siphasher::sip::SipHasher13;

/// The entry a [`MapStore`] keeps: cold part boxed on first use, log
/// growing with use.
type MapEntry<const W: usize> = Entry<W, BoxedCold, GrowLog<W>>;

/// One key: its word (see [`Shape`]) and its entry: 64 bytes, aligned to
/// a cache line (a 40-byte slot, with four events inline, straddled two
/// lines for 3 keys in 8: +0.5 lines missed per decision; issue 24).
#[derive(Default)]
#[repr(align(64))]
struct Slot<const W: usize> {
    word: u64,
    entry: MapEntry<W>,
}

/// Meta bits: `OCCUPIED | REFERENCED? | shape << 10 | tag`; 0 is empty.
const OCCUPIED: u16 = 1 << 15;
/// Touched since the CLOCK hand last passed.
const REFERENCED: u16 = 1 << 14;
const SHAPE_SHIFT: u32 = 10;
const TAG_MASK: u16 = (1 << SHAPE_SHIFT) - 1;

/// How a slot's word holds its key.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Form {
    /// The address's low 64 bits (its high ones are zero: IPv4, mapped),
    /// or an account key's username hash.
    Low = 0,
    /// The address's high 64 bits (its low ones are zero: an IPv6 prefix
    /// up to /64).
    High = 1,
    /// A keyed fingerprint; the full key is in the entry's cold part.
    Full = 2,
}

/// A key's kind and form, 4 bits.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Shape(u16);

impl Shape {
    fn new(kind: KeyKind, form: Form) -> Shape {
        Shape((u16::from(kind.tag()) << 2) | form as u16)
    }

    fn of_meta(m: u16) -> Shape {
        Shape((m >> SHAPE_SHIFT) & 0xF)
    }

    fn form(self) -> Form {
        match self.0 & 3 {
            0 => Form::Low,
            1 => Form::High,
            _ => Form::Full,
        }
    }

    fn kind(self) -> Option<KeyKind> {
        KeyKind::from_tag(u8::try_from(self.0 >> 2).ok()?)
    }
}

/// A key as the table holds it: shape and word (for [`Form::Full`], the
/// word is filled with the fingerprint when hashed).
#[inline]
fn compact(key: &Key) -> (Shape, u64) {
    // Two 64-bit reads, the width the key's address was written with, so
    // a key built just before is read back from registers.
    let (hi, lo) = key.addr().halves();
    match key.kind() {
        KeyKind::Account => (Shape::new(KeyKind::Account, Form::Low), key.user()),
        k @ (KeyKind::Request | KeyKind::LoginIp) if hi == 0 => (Shape::new(k, Form::Low), lo),
        k @ (KeyKind::Request | KeyKind::LoginIp) if lo == 0 => (Shape::new(k, Form::High), hi),
        k => (Shape::new(k, Form::Full), 0),
    }
}

/// The key a compact shape and word stand for (`None` for
/// [`Form::Full`], whose key is in the cold part).
fn expand(shape: Shape, word: u64) -> Option<Key> {
    let kind = shape.kind()?;
    let addr = |a: u128| Addr::from_octets(a.to_be_bytes());
    match (kind, shape.form()) {
        (KeyKind::Account, Form::Low) => Some(Key::account(word)),
        (KeyKind::Request, Form::Low) => Some(Key::request(addr(u128::from(word)))),
        (KeyKind::Request, Form::High) => Some(Key::request(addr(u128::from(word) << 64))),
        (KeyKind::LoginIp, Form::Low) => Some(Key::login_ip(addr(u128::from(word)))),
        (KeyKind::LoginIp, Form::High) => Some(Key::login_ip(addr(u128::from(word) << 64))),
        _ => None,
    }
}

/// A key looked up: its shape, word and table hash.
#[derive(Clone, Copy)]
struct Probe {
    shape: Shape,
    word: u64,
    hash: u64,
}

impl Probe {
    /// The meta an occupied slot of this key has (reference bit aside).
    fn meta(&self) -> u16 {
        OCCUPIED | (self.shape.0 << SHAPE_SHIFT) | (self.hash as u16 & TAG_MASK)
    }
}

/// SipHash-1-3 keyed by `k` of the 9 bytes `word` (little-endian) then
/// `last`: what [`SipHasher13`] gives for that string (a test checks),
/// written out for one word and the final block, without the streaming
/// hasher's byte buffer (a third of a decision's instructions before).
#[inline(always)]
fn sip13_word(k: (u64, u64), word: u64, last: u8) -> u64 {
    let mut v0 = k.0 ^ 0x736f_6d65_7073_6575;
    let mut v1 = k.1 ^ 0x646f_7261_6e64_6f6d;
    let mut v2 = k.0 ^ 0x6c79_6765_6e65_7261;
    let mut v3 = k.1 ^ 0x7465_6462_7974_6573;
    let round = |v0: &mut u64, v1: &mut u64, v2: &mut u64, v3: &mut u64| {
        *v0 = v0.wrapping_add(*v1);
        *v1 = v1.rotate_left(13) ^ *v0;
        *v0 = v0.rotate_left(32);
        *v2 = v2.wrapping_add(*v3);
        *v3 = v3.rotate_left(16) ^ *v2;
        *v0 = v0.wrapping_add(*v3);
        *v3 = v3.rotate_left(21) ^ *v0;
        *v2 = v2.wrapping_add(*v1);
        *v1 = v1.rotate_left(17) ^ *v2;
        *v2 = v2.rotate_left(32);
    };
    // One compression round per 8-byte block: the word, then the final
    // block (the length, 9, in the top byte, and the last byte).
    for m in [word, (9u64 << 56) | u64::from(last)] {
        v3 ^= m;
        round(&mut v0, &mut v1, &mut v2, &mut v3);
        v0 ^= m;
    }
    v2 ^= 0xff;
    for _ in 0..3 {
        round(&mut v0, &mut v1, &mut v2, &mut v3);
    }
    v0 ^ v1 ^ v2 ^ v3
}

/// Smallest table once anything is stored.
const MIN_SLOTS: usize = 8;

/// Growable key table: entries inline in one open-addressing array,
/// CLOCK eviction.
///
/// `repr(C)`: what a lookup reads (hash keys, the two arrays) first.
#[repr(C)]
pub struct MapStore<const W: usize> {
    /// The tables' SipHash keys (those of [`KeyHasher`](crate::key::KeyHasher)).
    sip: (u64, u64),
    metas: Vec<u16>,
    slots: Vec<Slot<W>>,
    len: usize,
    cap: usize,
    /// The CLOCK hand: the slot the next eviction sweep starts at.
    hand: usize,
    /// The hand's step (coprime with the table size).
    stride: usize,
}

impl<const W: usize> MapStore<W> {
    /// An empty store holding at most `max_entries` keys.
    pub fn new(seed: Seed, max_entries: usize) -> Self {
        MapStore {
            sip: seed.sip_keys(DOMAIN_TABLE),
            metas: Vec::new(),
            slots: Vec::new(),
            len: 0,
            cap: max_entries.min(u32::MAX as usize / 2),
            hand: 0,
            stride: 1,
        }
    }

    /// Bytes this store holds on the heap for its table: slots and metas
    /// (not the logs and cold parts of the few keys that grew them). Flat
    /// once the store is full.
    pub fn table_bytes(&self) -> usize {
        self.slots
            .capacity()
            .saturating_mul(core::mem::size_of::<Slot<W>>())
            .saturating_add(self.metas.capacity().saturating_mul(2))
    }

    /// Slots in the table.
    fn size(&self) -> usize {
        self.metas.len()
    }

    /// The table size that holds `cap` keys at 7/8 full.
    fn full_size(&self) -> usize {
        self.cap
            .saturating_add(self.cap.div_ceil(7))
            .saturating_add(1)
            .max(MIN_SLOTS)
    }

    /// Whether `n` keys fit a table of `size` slots (at most 7/8 full,
    /// always one slot empty).
    fn fits(n: usize, size: usize) -> bool {
        n.saturating_mul(8) <= size.saturating_mul(7) && n < size
    }

    #[inline(always)]
    fn probe(&self, key: &Key) -> Probe {
        let (shape, word) = compact(key);
        if shape.form() == Form::Full {
            // The tables' keyed hash of the full key (`KeyHasher::hash`).
            let fp = self.sip_hash(&key.bytes());
            return Probe {
                shape,
                word: fp,
                hash: fp,
            };
        }
        Probe {
            shape,
            word,
            hash: self.hash_word(shape, word),
        }
    }

    /// The keyed hash of a compact key (a full key's is its word).
    #[inline]
    fn hash_word(&self, shape: Shape, word: u64) -> u64 {
        if shape.form() == Form::Full {
            return word;
        }
        sip13_word(self.sip, word, shape.0 as u8)
    }

    /// Keyed SipHash-1-3 of `bytes` (the one-shot form).
    fn sip_hash(&self, bytes: &[u8]) -> u64 {
        SipHasher13::new_with_keys(self.sip.0, self.sip.1).hash(bytes)
    }

    /// Home slot of hash `h` in a table of `n` slots.
    fn home(h: u64, n: usize) -> usize {
        ((h >> 32).wrapping_mul(n as u64) >> 32) as usize
    }

    fn next(i: usize, n: usize) -> usize {
        let j = i.wrapping_add(1);
        if j >= n {
            0
        } else {
            j
        }
    }

    /// Distance from `a` forward to `b` around a ring of `n`.
    fn dist(a: usize, b: usize, n: usize) -> usize {
        if b >= a {
            b.wrapping_sub(a)
        } else {
            b.wrapping_add(n).wrapping_sub(a)
        }
    }

    /// The slot holding `p`'s key (`Ok`), or the empty slot ending its
    /// probe (`Err`; `None` for an empty table).
    ///
    /// The probe runs from the home slot to the end of the table, then
    /// from the start back to the home slot: two plain slice walks, so a
    /// step is a load and two compares (no wrap-around or bounds test).
    #[inline(always)]
    fn find(&self, p: &Probe, key: &Key) -> Result<usize, Option<usize>> {
        let (metas, slots) = (self.metas.as_slice(), self.slots.as_slice());
        let home = Self::home(p.hash, metas.len());
        let Some((before, from)) = metas.split_at_checked(home) else {
            return Err(None);
        };
        let want = p.meta();
        // Never full (at most 7/8), so an empty slot ends every probe;
        // each slot is visited at most once, so a broken invariant ends
        // the probe after one turn.
        let scan = |start: usize, part: &[u16]| {
            for (j, &m) in part.iter().enumerate() {
                let i = start.wrapping_add(j);
                if m == 0 {
                    return Some(Err(Some(i)));
                }
                if m & !REFERENCED == want {
                    if let Some(s) = slots.get(i) {
                        if s.word == p.word
                            && (p.shape.form() != Form::Full
                                || s.entry.cold.full_key() == Some(key))
                        {
                            return Some(Ok(i));
                        }
                    }
                }
            }
            None
        };
        scan(home, from)
            .or_else(|| scan(0, before))
            .unwrap_or(Err(None))
    }

    fn locate(&self, key: &Key) -> Option<usize> {
        self.find(&self.probe(key), key).ok()
    }

    /// [`Store::upsert`] of a key not found (`hint`: the empty slot that
    /// ended its probe): room made by eviction if full, then the key
    /// placed. Inlined: out of line it saves one more instruction on a
    /// found key and costs a new key about 30 (`icount host-cold`).
    #[inline(always)]
    fn upsert_new(
        &mut self,
        key: &Key,
        p: &Probe,
        mut hint: Option<usize>,
        classify: &mut dyn FnMut(&Key, &MapEntry<W>) -> Class,
    ) -> Upsert<&mut MapEntry<W>> {
        let mut evicted = None;
        if self.len >= self.cap {
            evicted = self.evict(classify);
            if evicted.is_none() {
                return Upsert::Full;
            }
            // The backward shift moved slots: probe again.
            hint = None;
        }
        let Ok(i) = self.place(key, *p, hint, MapEntry::new()) else {
            return Upsert::Full;
        };
        match self.slots.get_mut(i) {
            Some(s) => Upsert::Found {
                entry: &mut s.entry,
                evicted,
            },
            None => Upsert::Full,
        }
    }

    /// Set the reference bit of slot `i`.
    fn mark(&mut self, i: usize) {
        if let Some(m) = self.metas.get_mut(i) {
            // Written only when it changes: a hot key's meta line stays clean.
            if *m & REFERENCED == 0 {
                *m |= REFERENCED;
            }
        }
    }

    /// The key in slot `i` (with meta `m`).
    fn key_at(&self, i: usize, m: u16) -> Option<Key> {
        let s = self.slots.get(i)?;
        let shape = Shape::of_meta(m);
        match shape.form() {
            Form::Full => s.entry.cold.full_key().copied(),
            _ => expand(shape, s.word),
        }
    }

    /// The table hash of the key in slot `i` (with meta `m`).
    fn hash_at(&self, i: usize, m: u16) -> u64 {
        let word = self.slots.get(i).map_or(0, |s| s.word);
        self.hash_word(Shape::of_meta(m), word)
    }

    /// Move every key into a table of `n` slots (at least `len + 1`).
    fn rebuild(&mut self, n: usize) {
        let old_metas = core::mem::replace(&mut self.metas, alloc::vec![0; n]);
        let mut old_slots = core::mem::take(&mut self.slots);
        self.slots.resize_with(n, Slot::default);
        self.slots.shrink_to_fit();
        self.metas.shrink_to_fit();
        for (i, &m) in old_metas.iter().enumerate() {
            if m == 0 {
                continue;
            }
            let Some(s) = old_slots.get_mut(i) else {
                continue;
            };
            let h = self.hash_word(Shape::of_meta(m), s.word);
            let mut j = Self::home(h, n);
            for _ in 0..n {
                match self.metas.get_mut(j) {
                    Some(dst) if *dst == 0 => {
                        *dst = m;
                        if let Some(d) = self.slots.get_mut(j) {
                            *d = core::mem::take(s);
                        }
                        break;
                    }
                    _ => j = Self::next(j, n),
                }
            }
        }
        self.stride = coprime_stride(n);
        if self.hand >= n {
            self.hand = 0;
        }
    }

    /// Make room for one more key: grow past 7/8 (doubling, the last step
    /// sized to the cap).
    fn reserve_one(&mut self) {
        let need = self.len.saturating_add(1);
        let n = self.size();
        if Self::fits(need, n) {
            return;
        }
        let full = self.full_size();
        let mut m = n.saturating_mul(2).max(MIN_SLOTS);
        while !Self::fits(need, m) {
            m = m.saturating_mul(2);
        }
        // The last step: straight to the size that holds the cap (not a
        // power of two far past it).
        if m >= full || m.saturating_mul(2) > full {
            m = full.max(n);
        }
        if !Self::fits(need, m) {
            m = need.saturating_mul(2);
        }
        self.rebuild(m);
    }

    /// Add the absent `key` (its probe `p`), not yet referenced (a new key
    /// earns its second chance by coming back); its slot, or the entry
    /// back when full.
    #[allow(clippy::result_large_err)]
    fn place(
        &mut self,
        key: &Key,
        p: Probe,
        hint: Option<usize>,
        mut entry: MapEntry<W>,
    ) -> Result<usize, MapEntry<W>> {
        if self.len >= self.cap {
            return Err(entry);
        }
        let n = self.size();
        let at = match hint {
            Some(i) if Self::fits(self.len.saturating_add(1), n) => Some(i),
            _ => {
                self.reserve_one();
                self.find(&p, key).err().flatten()
            }
        };
        let Some(i) = at else {
            return Err(entry);
        };
        if p.shape.form() == Form::Full {
            entry.cold.set_full_key(*key);
        }
        match (self.metas.get_mut(i), self.slots.get_mut(i)) {
            (Some(m), Some(s)) if *m == 0 => {
                *m = p.meta();
                *s = Slot {
                    word: p.word,
                    entry,
                };
                self.len = self.len.saturating_add(1);
                Ok(i)
            }
            _ => Err(entry),
        }
    }

    /// Remove slot `i` and close the gap (backward-shift deletion).
    fn remove_at(&mut self, i: usize) -> Option<(Key, MapEntry<W>)> {
        let m = *self.metas.get(i).filter(|&&m| m != 0)?;
        let key = self.key_at(i, m)?;
        let out = core::mem::take(self.slots.get_mut(i)?);
        if let Some(m) = self.metas.get_mut(i) {
            *m = 0;
        }
        self.len = self.len.saturating_sub(1);
        let n = self.size();
        let mut hole = i;
        let mut k = Self::next(i, n);
        for _ in 0..n {
            let mk = match self.metas.get(k) {
                Some(&mk) if mk != 0 => mk,
                _ => break,
            };
            let home = Self::home(self.hash_at(k, mk), n);
            // `k` may fill the hole iff its home is not in (hole, k]
            // (cyclically): it then still finds itself from its home.
            if Self::dist(home, k, n) >= Self::dist(hole, k, n) {
                let moved = self.slots.get_mut(k).map(core::mem::take);
                if let (Some(s), Some(dst)) = (moved, self.slots.get_mut(hole)) {
                    *dst = s;
                }
                if let Some(h) = self.metas.get_mut(hole) {
                    *h = mk;
                }
                if let Some(mk) = self.metas.get_mut(k) {
                    *mk = 0;
                }
                hole = k;
            }
            k = Self::next(k, n);
        }
        Some((key, out.entry))
    }

    /// After removals: cut a table under a quarter full to half full.
    fn tidy(&mut self) {
        let n = self.size();
        if n > MIN_SLOTS && self.len.saturating_mul(4) < n {
            let want = if self.len == 0 {
                0
            } else {
                self.len.saturating_mul(2).max(MIN_SLOTS)
            };
            if want == 0 {
                self.metas = Vec::new();
                self.slots = Vec::new();
                self.hand = 0;
                self.stride = 1;
            } else {
                self.rebuild(want);
            }
        }
    }
}

impl<const W: usize> Store<W> for MapStore<W> {
    type Cold = BoxedCold;
    type Log = GrowLog<W>;
    type Ref<'a> = &'a MapEntry<W>;
    type Mut<'a> = &'a mut MapEntry<W>;
    type Rules = crate::store::HotCopy;

    fn capacity(&self) -> usize {
        self.cap
    }

    fn len(&self) -> usize {
        self.len
    }

    fn get(&self, key: &Key) -> Option<&MapEntry<W>> {
        self.slots.get(self.locate(key)?).map(|s| &s.entry)
    }

    fn get_if_touched(&self, key: &Key) -> Option<&MapEntry<W>> {
        let i = self.locate(key)?;
        let m = *self.metas.get(i)?;
        if m & REFERENCED == 0 {
            return None;
        }
        self.slots.get(i).map(|s| &s.entry)
    }

    fn get_mut(&mut self, key: &Key) -> Option<&mut MapEntry<W>> {
        let i = self.locate(key)?;
        self.slots.get_mut(i).map(|s| &mut s.entry)
    }

    fn touch(&mut self, key: &Key) {
        if let Some(i) = self.locate(key) {
            self.mark(i);
        }
    }

    fn touch_get_mut(&mut self, key: &Key) -> Option<&mut MapEntry<W>> {
        let i = self.locate(key)?;
        self.mark(i);
        self.slots.get_mut(i).map(|s| &mut s.entry)
    }

    // Inlined into `check_request_with` (through `upsert_in`): the probe,
    // hash and find in the decision's own frame. A key found returns at
    // once (no eviction slot carried to a join with the insertion), and
    // the insertion takes the probe by value: the found path keeps it in
    // registers instead of spilling it for `place`.
    #[inline(always)]
    fn upsert(
        &mut self,
        key: Key,
        classify: &mut dyn FnMut(&Key, &MapEntry<W>) -> Class,
    ) -> Upsert<&mut MapEntry<W>> {
        let p = self.probe(&key);
        match self.find(&p, &key) {
            Ok(i) => {
                self.mark(i);
                match self.slots.get_mut(i) {
                    Some(s) => Upsert::Found {
                        entry: &mut s.entry,
                        evicted: None,
                    },
                    None => Upsert::Full,
                }
            }
            Err(hint) => self.upsert_new(&key, &p, hint, classify),
        }
    }

    #[allow(clippy::result_large_err)]
    fn insert(&mut self, key: Key, mut entry: MapEntry<W>) -> Result<(), MapEntry<W>> {
        let p = self.probe(&key);
        match self.find(&p, &key) {
            Ok(i) => {
                if p.shape.form() == Form::Full {
                    entry.cold.set_full_key(key);
                }
                if let Some(s) = self.slots.get_mut(i) {
                    s.entry = entry;
                }
                self.mark(i);
                Ok(())
            }
            Err(hint) => self.place(&key, p, hint, entry).map(|_| ()),
        }
    }

    fn remove(&mut self, key: &Key) -> Option<MapEntry<W>> {
        let i = self.locate(key)?;
        let (_, entry) = self.remove_at(i)?;
        self.tidy();
        Some(entry)
    }

    fn evict(
        &mut self,
        classify: &mut dyn FnMut(&Key, &MapEntry<W>) -> Class,
    ) -> Option<(Key, Victim)> {
        let (n, hand, len, stride) = (self.size(), self.hand, self.len, self.stride);
        let (i, victim) = {
            let this = &mut *self;
            sweep(n, hand, len, stride, |i, clear| {
                let m = *this.metas.get(i)?;
                if m == 0 {
                    return None;
                }
                if clear {
                    if let Some(m) = this.metas.get_mut(i) {
                        *m &= !REFERENCED;
                    }
                    return None;
                }
                let key = this.key_at(i, m)?;
                let s = this.slots.get(i)?;
                Some((classify(&key, &s.entry), m & REFERENCED != 0))
            })?
        };
        let (key, _) = self.remove_at(i)?;
        // The backward shift may have moved a later entry into `i`: the
        // next sweep starts there. No `tidy`: the new key comes at once.
        self.hand = i;
        Some((key, victim))
    }

    fn retain(&mut self, keep: &mut dyn FnMut(&Key, &MapEntry<W>) -> bool) -> usize {
        let mut removed = 0usize;
        let mut i = 0usize;
        // Backward shifts only move entries into the slot being examined or
        // from already-visited slots (wrapping around: those are visited
        // again, and kept again), so re-examining `i` after a removal
        // visits every entry.
        while i < self.size() {
            let m = self.metas.get(i).copied().unwrap_or(0);
            let drop = m != 0
                && match (self.key_at(i, m), self.slots.get(i)) {
                    (Some(k), Some(s)) => !keep(&k, &s.entry),
                    _ => false,
                };
            if drop {
                self.remove_at(i);
                removed = removed.saturating_add(1);
            } else {
                i = i.wrapping_add(1);
            }
        }
        if removed > 0 {
            self.tidy();
        }
        removed
    }

    fn for_each(&self, f: &mut dyn FnMut(&Key, &MapEntry<W>)) {
        for (i, &m) in self.metas.iter().enumerate() {
            if m == 0 {
                continue;
            }
            if let (Some(k), Some(s)) = (self.key_at(i, m), self.slots.get(i)) {
                f(&k, &s.entry);
            }
        }
    }

    fn for_each_mut(&mut self, f: &mut dyn FnMut(&Key, &mut MapEntry<W>)) {
        for i in 0..self.size() {
            let m = self.metas.get(i).copied().unwrap_or(0);
            if m == 0 {
                continue;
            }
            if let Some(k) = self.key_at(i, m) {
                if let Some(s) = self.slots.get_mut(i) {
                    f(&k, &mut s.entry);
                }
            }
        }
    }

    fn clear(&mut self) {
        self.metas = Vec::new();
        self.slots = Vec::new();
        self.len = 0;
        self.hand = 0;
        self.stride = 1;
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
    use crate::window::TimeLog;

    const W: usize = 4;

    fn store(cap: usize) -> MapStore<W> {
        MapStore::new(Seed::new([9; 16]), cap)
    }

    /// Internal invariants: every key found from its home, metas and
    /// length agree, at most 7/8 full.
    fn check(s: &MapStore<W>) {
        let mut live = 0usize;
        for (i, &m) in s.metas.iter().enumerate() {
            if m == 0 {
                continue;
            }
            live += 1;
            let k = s.key_at(i, m).unwrap();
            assert_eq!(s.locate(&k), Some(i));
            assert_eq!(s.probe(&k).meta(), m & !REFERENCED);
        }
        assert_eq!(live, s.len());
        assert_eq!(s.metas.len(), s.slots.len());
        assert!(s.len() == 0 || MapStore::<W>::fits(s.len(), s.size()));
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
    fn small_stores_stay_small() {
        for cap in [0, 1, 2, 3, 5, 31, 33, 200] {
            let mut s = store(cap);
            run(&mut s, cap, 8, 3_000, cap as u64);
            check(&s);
            assert!(s.size() <= MIN_SLOTS.max(s.full_size()), "cap {cap}");
        }
    }

    #[test]
    fn every_key_shape_round_trips() {
        let v4 = Addr::from_ip("192.0.2.7".parse().unwrap(), 64);
        let v6 = Addr::from_ip("2001:db8:1:2:3:4:5:6".parse().unwrap(), 64);
        let v6_long = Addr::from_ip("2001:db8:1:2:3:4:5:6".parse().unwrap(), 96);
        let ks = [
            Key::request(v4),
            Key::request(v6),
            Key::request(v6_long),
            Key::request(Addr::NONE),
            Key::login_ip(v4),
            Key::login_ip(v6),
            Key::login_ip(v6_long),
            Key::login_user(7, v4),
            Key::login_user(7, v6),
            Key::login_user(8, v4),
            Key::account(7),
            Key::account(0),
        ];
        let mut s = store(100);
        for (n, k) in ks.iter().enumerate() {
            s.insert(*k, Entry::new()).unwrap();
            s.get_mut(k).unwrap().log.push(n as u64 + 1);
        }
        check(&s);
        for (n, k) in ks.iter().enumerate() {
            assert_eq!(s.get(k).unwrap().log.oldest(), Some(n as u64 + 1), "{k:?}");
        }
        let mut seen = Vec::new();
        s.for_each(&mut |k, _| seen.push(*k));
        seen.sort();
        let mut want = ks.to_vec();
        want.sort();
        assert_eq!(seen, want);
        // Only the keys that need one have a cold part.
        for k in &ks {
            let full = s.get(k).unwrap().cold.full_key().is_some();
            assert_eq!(full, compact(k).0.form() == Form::Full, "{k:?}");
        }
        for k in &ks {
            assert!(s.remove(k).is_some());
            check(&s);
        }
        assert!(s.is_empty());
    }

    #[test]
    fn the_word_hash_is_siphash_1_3() {
        let s = store(1);
        for (w, last) in [(0u64, 0u8), (1, 7), (0xffff_c000_0201, 1), (u64::MAX, 15)] {
            let [a, b, c, d, e, f, g, h] = w.to_le_bytes();
            let want = s.sip_hash(&[a, b, c, d, e, f, g, h, last]);
            assert_eq!(sip13_word(s.sip, w, last), want);
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
    fn a_mostly_empty_table_is_released() {
        let mut s = store(10_000);
        for k in 0..2000 {
            s.insert(key(k), Entry::new()).unwrap();
        }
        assert_eq!(s.retain(&mut |k, _| id(k) % 10 == 0), 1800);
        let want: Vec<u64> = (0..2000).filter(|u| u % 10 == 0).collect();
        assert_eq!(keys(&s), want);
        assert!(s.size() <= 400, "{} slots", s.size());
        check(&s);
        for k in 0..200 {
            s.remove(&key(k * 10));
        }
        assert!(s.is_empty());
        assert!(s.size() <= MIN_SLOTS, "{} slots", s.size());
        check(&s);
    }

    #[test]
    fn a_full_table_is_sized_to_its_cap() {
        let cap = 17_187;
        let mut s = store(cap);
        for k in 0..cap as u64 {
            s.insert(key(k), Entry::new()).unwrap();
        }
        assert_eq!(s.size(), s.full_size());
        assert!(s.size() * 7 < cap * 8 + 16, "{} slots", s.size());
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
            let keep = |u: u64| (u ^ round).wrapping_mul(0x9E37_79B9) % 5 == 0;
            let gone = s.retain(&mut |k, _| keep(id(k)));
            let n = m.len();
            m.retain(|&u| keep(u));
            assert_eq!(gone, n - m.len());
            assert_eq!(
                keys(&s),
                m.iter().copied().collect::<Vec<_>>(),
                "round {round}"
            );
            check(&s);
        }
    }

    #[test]
    fn slots_are_inline_and_small() {
        // Key word 8 beside the 56-byte entry (48-byte log, 8-byte cold
        // pointer), one cache line; kind, form, reference bit and hash
        // tag in the 2-byte meta.
        assert_eq!(core::mem::size_of::<MapEntry<W>>(), 56);
        assert_eq!(core::mem::size_of::<Slot<W>>(), 64);
        assert_eq!(core::mem::align_of::<Slot<W>>(), 64);
    }
}
