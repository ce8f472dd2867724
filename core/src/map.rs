//! [`MapStore`] (feature `alloc`): a growable table up to a run-time cap,
//! with the same keyed hash and the same eviction rule as
//! [`FixedStore`](crate::internals::FixedStore).
//!
//! * One table: the keys live in one `Vec` of 32-byte slots aligned to
//!   half cache lines (an 8-byte key word; the log's first four events,
//!   a 64-bit base and three 32-bit offsets from it; a 4-byte tail: the
//!   log's state, four events or fewer inline or "spilled", in 3 bits and
//!   a 29-bit handle into the table's slab of records), so a key found
//!   costs exactly one slot line, with a parallel array of 2-byte metas
//!   (occupied, reference bit, key kind and form, 10 bits of the key's
//!   hash). Open addressing with linear probing over both, backward-shift
//!   deletion (no tombstones, so a flood of new keys never forces a
//!   rebuild). A lookup scans metas (one line, which stays cached far
//!   more than the slots do: 2 bytes a key) and reads the one slot whose
//!   meta matches: one random line per decision while the key holds at
//!   most four events and no cold part; a push writes only that line.
//! * Records: a key with more than four events (or events further apart
//!   than `u32::MAX` ticks), a cold part, or a fingerprint (below) has a
//!   48-byte record in the table's slab (a `Vec`, freed records reused
//!   first): its whole log once spilled (a [`GrowLog`]: eight events
//!   inline, then a boxed heap ring) and its cold part ([`BoxedCold`]). A
//!   spilled log comes back inline when pruned to two events, and a
//!   record that holds nothing more is given back. The store hands out
//!   views ([`MapRef`], [`MapMut`]) that put the pieces together.
//! * Compact keys: an address key whose address fits in 64 bits (IPv4,
//!   an IPv6 prefix up to /64) and an account key are their 8-byte word
//!   plus kind and form in the meta, compared exactly. Any other key (a
//!   (username, address) pair, an IPv6 key longer than /64) is held by a
//!   keyed 64-bit fingerprint (its table hash), its full key kept in its
//!   record's cold part and compared there on a match.
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

use crate::entry::{BoxedCold, Cold, ColdPart, Entry, EntryMut, EntryRef, VIOLATION_LOG};
use crate::key::{Addr, Key, KeyKind, Seed, DOMAIN_TABLE};
use crate::store::{coprime_stride, sweep, Class, Store, Upsert, Victim};
use crate::time::{within, Tick};
use crate::window::{Events, EventsMut, GrowLog, Log, TimeLog};
use alloc::vec::Vec;
use siphasher::sip::SipHasher13;

/// The entry a [`MapStore`] takes in and gives back (its owned form):
/// cold part boxed on first use, log growing with use. In the table it
/// is kept in pieces (a [`Slot`], and [`Block`]s when needed).
type MapEntry<const W: usize> = Entry<W, BoxedCold, GrowLog<W>>;

/// Events a slot holds inline: the base and three 32-bit offsets.
const INLINE: usize = 4;

/// Events a [`Block`] holds: 32-bit offsets from its slot's base.
const PER_BLOCK: usize = 5;

/// A key's first block (which no cold part holds) is given back when its
/// log is cut to this many events, not at [`INLINE`]: a key going to and
/// fro across four events keeps its block rather than taking one from the
/// free list and giving it back at every request.
const UNSPILL: usize = 2;

/// One key: its word (see [`Shape`]), its first events (a 64-bit base
/// and three 32-bit offsets from it) and the log's state and the handle
/// of its first block. 32 bytes, aligned so a slot never straddles a
/// cache line.
#[derive(Clone, Copy, Default)]
#[repr(C, align(32))]
struct Slot {
    word: u64,
    base: Tick,
    off: [u32; INLINE - 1],
    /// Log state and block handle ([`Slot::state`], [`Slot::handle`]).
    tail: u32,
}

/// A key's events past its slot's four, in its table's arena: 32 bytes,
/// aligned so a block never straddles a cache line. A key's first block
/// also holds its cold part (boxed on first use; for a key held by a
/// fingerprint, with the full key), so a key with a cold part has one
/// even with four events or fewer.
#[derive(Debug, Default)]
#[repr(C, align(32))]
struct Block {
    cold: BoxedCold,
    /// The next block's handle (0: none) in the low 29 bits and the
    /// events held here in the top 3; in the first block of a
    /// [`WIDE`] log, the wide log's handle.
    link: u32,
    off: [u32; PER_BLOCK],
}

impl Block {
    #[inline]
    fn next(&self) -> u32 {
        self.link & HANDLE_MASK
    }

    #[inline]
    fn count(&self) -> usize {
        (self.link >> STATE_SHIFT) as usize
    }

    #[inline]
    fn set(&mut self, next: u32, count: usize) {
        self.link = (next & HANDLE_MASK) | (((count & 7) as u32) << STATE_SHIFT);
    }
}

/// Items behind 29-bit handles: a `Vec` indexed by handle − 1, freed
/// items reused first.
#[derive(Default)]
struct Slab<T> {
    items: Vec<T>,
    free: Vec<u32>,
}

impl<T: Default> Slab<T> {
    #[inline]
    fn get(&self, h: u32) -> Option<&T> {
        self.items.get((h as usize).checked_sub(1)?)
    }

    #[inline]
    fn get_mut(&mut self, h: u32) -> Option<&mut T> {
        self.items.get_mut((h as usize).checked_sub(1)?)
    }

    /// A fresh item's handle (0 if none is left: not reached, the
    /// store's cap is below).
    fn alloc(&mut self) -> u32 {
        if let Some(h) = self.free.pop() {
            return h;
        }
        match u32::try_from(self.items.len().saturating_add(1)) {
            Ok(h) if h <= HANDLE_MASK => {
                self.items.push(T::default());
                h
            }
            _ => 0,
        }
    }

    /// Give item `h` back (emptied).
    fn release(&mut self, h: u32) {
        if let Some(x) = self.get_mut(h) {
            *x = T::default();
            self.free.push(h);
        }
    }

    /// Take item `h` out, giving its handle back.
    fn take(&mut self, h: u32) -> T {
        match self.get_mut(h) {
            Some(x) => {
                let out = core::mem::take(x);
                self.free.push(h);
                out
            }
            None => T::default(),
        }
    }
}

/// What a table keeps beside its slots: the blocks of the keys whose logs
/// outgrow their slots or that have a cold part, and the rare logs whose
/// events lie further apart than 32-bit offsets reach.
#[derive(Default)]
struct Side<const W: usize> {
    blocks: Slab<Block>,
    wides: Slab<GrowLog<W>>,
    /// Written when no block handle is left (not reached: the store's
    /// cap is below), so every write has somewhere to go.
    spare: BoxedCold,
}

impl<const W: usize> Side<W> {
    fn full_key(&self, h: u32) -> Option<&Key> {
        self.blocks.get(h)?.cold.full_key()
    }

    /// The first block of `slot`, made if it has none.
    fn first(&mut self, slot: &mut Slot) -> Option<&mut Block> {
        if self.blocks.get(slot.handle()).is_none() {
            slot.set_handle(self.blocks.alloc());
        }
        self.blocks.get_mut(slot.handle())
    }

    /// The wide log of a slot in state [`WIDE`] with first block `h`.
    fn wide(&self, h: u32) -> Option<&GrowLog<W>> {
        self.wides.get(self.blocks.get(h)?.link)
    }

    fn wide_mut(&mut self, h: u32) -> Option<&mut GrowLog<W>> {
        let w = self.blocks.get(h)?.link;
        self.wides.get_mut(w)
    }

    /// Give back every block after the first (`h`), leaving it empty.
    fn cut_chain(&mut self, h: u32) {
        let Some(b) = self.blocks.get_mut(h) else {
            return;
        };
        let mut n = b.next();
        b.set(0, 0);
        while n != 0 {
            let next = self.blocks.get(n).map_or(0, Block::next);
            self.blocks.release(n);
            n = next;
        }
    }
}

/// Meta bits: `OCCUPIED | REFERENCED? | shape << 10 | tag`; 0 is empty.
const OCCUPIED: u16 = 1 << 15;
/// Touched since the CLOCK hand last passed.
const REFERENCED: u16 = 1 << 14;
const SHAPE_SHIFT: u32 = 10;
const TAG_MASK: u16 = (1 << SHAPE_SHIFT) - 1;

/// A slot's last word: the log's state (its events in the slot, 0 to
/// [`INLINE`], or [`CHAINED`] or [`WIDE`]) in the top 3 bits, so a push
/// writes only the slot's line (and a block's, past four), and the first
/// block's handle in the low 29.
const STATE_SHIFT: u32 = 29;
const HANDLE_MASK: u32 = (1 << STATE_SHIFT) - 1;
/// The slot holds four events, the block chain from its handle the rest
/// (at least one).
const CHAINED: u16 = 5;
/// The log is a [`GrowLog`] in the table's wide logs (a new event lay more
/// than `u32::MAX` ticks after the oldest): the first block's link names it.
const WIDE: u16 = 7;

impl Slot {
    /// The log's state: events in the slot, or [`CHAINED`], [`WIDE`].
    #[inline]
    fn state(&self) -> u16 {
        (self.tail >> STATE_SHIFT) as u16
    }

    #[inline]
    fn set_state(&mut self, state: u16) {
        self.tail = (self.tail & HANDLE_MASK) | ((u32::from(state) & 7) << STATE_SHIFT);
    }

    /// The first block's handle (0: none).
    #[inline]
    fn handle(&self) -> u32 {
        self.tail & HANDLE_MASK
    }

    #[inline]
    fn set_handle(&mut self, h: u32) {
        self.tail = (self.tail & !HANDLE_MASK) | (h & HANDLE_MASK);
    }

    /// Events held in the slot itself.
    #[inline]
    fn inline_len(&self) -> usize {
        match self.state() {
            WIDE => 0,
            n => usize::from(n).min(INLINE),
        }
    }
}

/// The `i`-th inline event of `s`.
#[inline]
fn inline_at(s: &Slot, i: usize) -> Option<Tick> {
    match i.checked_sub(1) {
        None => Some(s.base),
        Some(j) => s.off.get(j).map(|&o| s.base.wrapping_add(u64::from(o))),
    }
}

/// The events of a block chain from handle `h`, offsets from `base`.
#[derive(Clone)]
struct Chain<'a> {
    blocks: &'a Slab<Block>,
    h: u32,
    i: usize,
    base: Tick,
}

impl Iterator for Chain<'_> {
    type Item = Tick;
    #[inline]
    fn next(&mut self) -> Option<Tick> {
        loop {
            let b = self.blocks.get(self.h)?;
            if self.i < b.count() {
                let o = *b.off.get(self.i)?;
                self.i = self.i.wrapping_add(1);
                return Some(self.base.wrapping_add(u64::from(o)));
            }
            self.h = b.next();
            self.i = 0;
        }
    }
}

/// The events of slot `s`'s log, oldest first.
fn log_iter<'a, const W: usize>(s: &'a Slot, side: &'a Side<W>) -> impl Iterator<Item = Tick> + 'a {
    let state = s.state();
    let wide = if state == WIDE {
        side.wide(s.handle())
    } else {
        None
    };
    let chain = Chain {
        blocks: &side.blocks,
        h: if state == CHAINED { s.handle() } else { 0 },
        i: 0,
        base: s.base,
    };
    wide.into_iter()
        .flat_map(TimeLog::iter)
        .chain((0..s.inline_len()).filter_map(move |i| inline_at(s, i)))
        .chain(chain)
}

/// A key's log read in place: the first four events in its slot, the
/// rest in its blocks.
#[derive(Clone, Copy)]
pub struct MapLog<'a, const W: usize> {
    slot: &'a Slot,
    side: &'a Side<W>,
}

impl<const W: usize> MapLog<'_, W> {
    /// The last block of a chained log, and its event count.
    #[inline]
    fn last_block(&self) -> Option<&Block> {
        let mut b = self.side.blocks.get(self.slot.handle())?;
        while b.next() != 0 {
            b = self.side.blocks.get(b.next())?;
        }
        Some(b)
    }
}

impl<const W: usize> Events for MapLog<'_, W> {
    #[inline]
    fn oldest(&self) -> Option<Tick> {
        match self.slot.state() {
            WIDE => self.side.wide(self.slot.handle())?.oldest(),
            0 => None,
            _ => Some(self.slot.base),
        }
    }
    #[inline]
    fn newest(&self) -> Option<Tick> {
        match self.slot.state() {
            WIDE => self.side.wide(self.slot.handle())?.newest(),
            CHAINED => {
                let b = self.last_block()?;
                let o = *b.off.get(b.count().checked_sub(1)?)?;
                Some(self.slot.base.wrapping_add(u64::from(o)))
            }
            n => usize::from(n)
                .checked_sub(1)
                .and_then(|i| inline_at(self.slot, i)),
        }
    }
    #[inline]
    fn len(&self) -> usize {
        match self.slot.state() {
            WIDE => self.side.wide(self.slot.handle()).map_or(0, |w| w.len()),
            CHAINED => {
                let mut n = INLINE;
                let mut h = self.slot.handle();
                while let Some(b) = self.side.blocks.get(h) {
                    n = n.saturating_add(b.count());
                    h = b.next();
                }
                n
            }
            n => usize::from(n),
        }
    }
    fn iter(&self) -> impl Iterator<Item = Tick> + '_ {
        log_iter(self.slot, self.side)
    }
    #[inline]
    fn count(&self, now: Tick, window: u64) -> u32 {
        if self.slot.state() == WIDE {
            return self
                .side
                .wide(self.slot.handle())
                .map_or(0, |w| w.count(now, window));
        }
        let n = self.iter().filter(|&t| within(now, t, window)).count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }
    #[inline]
    fn oldest_in(&self, now: Tick, window: u64) -> Option<Tick> {
        if self.slot.state() == WIDE {
            return self.side.wide(self.slot.handle())?.oldest_in(now, window);
        }
        self.iter().find(|&t| within(now, t, window))
    }
}

/// A key's log written in place.
pub struct MapLogMut<'a, const W: usize> {
    slot: &'a mut Slot,
    side: &'a mut Side<W>,
}

impl<const W: usize> MapLogMut<'_, W> {
    #[inline]
    fn view(&self) -> MapLog<'_, W> {
        MapLog {
            slot: self.slot,
            side: self.side,
        }
    }

    /// Drop the oldest of the `n` events in the slot.
    #[inline]
    fn pop_inline(&mut self, n: u16) {
        if n > 1 {
            // The second event becomes the base.
            let [d, ..] = self.slot.off;
            self.slot.base = self.slot.base.wrapping_add(u64::from(d));
            self.slot.off.rotate_left(1);
            for o in self.slot.off.iter_mut() {
                *o = o.wrapping_sub(d);
            }
        }
        self.slot.set_state(n.saturating_sub(1));
    }

    /// Drop the oldest event of a chained log: every event moves one place
    /// towards the slot (the first block's first into the slot's last),
    /// offsets rebased on the new oldest; an emptied last block is given
    /// back (the first is kept: see [`UNSPILL`]).
    fn pop_chained(&mut self) {
        let d = self.slot.off.first().copied().unwrap_or(0);
        let blocks = &mut self.side.blocks;
        let h0 = self.slot.handle();
        let carry = |blocks: &Slab<Block>, h: u32| {
            blocks
                .get(h)
                .filter(|b| b.count() > 0)
                .and_then(|b| b.off.first().copied())
        };
        let Some(first) = carry(blocks, h0) else {
            self.slot.set_state(INLINE as u16);
            self.pop_inline(INLINE as u16);
            return;
        };
        self.slot.base = self.slot.base.wrapping_add(u64::from(d));
        let [_, a, b] = self.slot.off;
        self.slot.off = [a.wrapping_sub(d), b.wrapping_sub(d), first.wrapping_sub(d)];
        let (mut prev, mut h) = (0u32, h0);
        while let Some(blk) = blocks.get(h) {
            let (c, next) = (blk.count(), blk.next());
            let moved = carry(blocks, next);
            let Some(blk) = blocks.get_mut(h) else {
                break;
            };
            if let Some(live) = blk.off.get_mut(..c) {
                live.rotate_left(1);
                for o in live.iter_mut() {
                    *o = o.wrapping_sub(d);
                }
            }
            if let Some(x) = moved {
                if let Some(o) = blk.off.get_mut(c.wrapping_sub(1)) {
                    *o = x.wrapping_sub(d);
                }
                prev = h;
                h = next;
                continue;
            }
            let c = c.saturating_sub(1);
            if c == 0 && prev != 0 {
                blocks.release(h);
                if let Some(p) = blocks.get_mut(prev) {
                    let pc = p.count();
                    p.set(0, pc);
                }
            } else {
                blk.set(0, c);
            }
            break;
        }
        if carry(blocks, h0).is_none() {
            self.slot.set_state(INLINE as u16);
        }
    }

    /// After the log shrank: give the first block back if the log is
    /// down to [`UNSPILL`] events in the slot and no cold part is held.
    #[inline]
    fn release_if_idle(&mut self) {
        let h = self.slot.handle();
        if h == 0 || usize::from(self.slot.state()) > UNSPILL {
            return;
        }
        if self
            .side
            .blocks
            .get(h)
            .is_some_and(|b| b.cold.get().is_none())
        {
            self.side.blocks.release(h);
            self.slot.set_handle(0);
        }
    }

    /// Move a wide log of at most [`UNSPILL`] events back into the slot
    /// when their offsets fit.
    fn unwide(&mut self) {
        let h = self.slot.handle();
        let Some(w) = self.side.wide(h) else {
            self.slot.set_state(0);
            return;
        };
        let n = w.len();
        if n > UNSPILL {
            return;
        }
        let base = w.oldest().unwrap_or(0);
        let mut off = [0u32; INLINE - 1];
        for (d, t) in off.iter_mut().zip(TimeLog::iter(w).skip(1)) {
            match t.checked_sub(base).and_then(|x| u32::try_from(x).ok()) {
                Some(x) => *d = x,
                None => return,
            }
        }
        if let Some(b) = self.side.blocks.get_mut(h) {
            let wh = b.link;
            b.set(0, 0);
            self.side.wides.release(wh);
        }
        self.slot.base = base;
        self.slot.off = off;
        self.slot.set_state(u16::try_from(n).unwrap_or(0));
        self.release_if_idle();
    }

    /// Move the log and `t` into a wide log (`t` lies too far from the
    /// slot's base for a 32-bit offset).
    fn widen(&mut self, t: Tick) {
        let mut w = GrowLog::<W>::new();
        for e in log_iter(self.slot, self.side) {
            TimeLog::push(&mut w, e);
        }
        TimeLog::push(&mut w, t);
        let h = self.slot.handle();
        if self.slot.state() == CHAINED || usize::from(self.slot.state()) == INLINE {
            self.side.cut_chain(h);
        }
        let wh = self.side.wides.alloc();
        if let Some(x) = self.side.wides.get_mut(wh) {
            *x = w;
        }
        if let Some(b) = self.side.first(self.slot) {
            b.set(wh, 0);
        }
        self.slot.set_state(WIDE);
    }

    /// Append offset `d` to the block chain (made if none).
    fn append(&mut self, d: u32) {
        let Some(first) = self.side.first(self.slot) else {
            return;
        };
        let mut h = self.slot.handle();
        let mut next = first.next();
        while next != 0 {
            h = next;
            next = self.side.blocks.get(h).map_or(0, Block::next);
        }
        let blocks = &mut self.side.blocks;
        let c = blocks.get(h).map_or(0, Block::count);
        if c < PER_BLOCK {
            if let Some(b) = blocks.get_mut(h) {
                if let Some(o) = b.off.get_mut(c) {
                    *o = d;
                }
                b.set(0, c.saturating_add(1));
            }
        } else {
            let nh = blocks.alloc();
            if let Some(nb) = blocks.get_mut(nh) {
                if let Some(o) = nb.off.first_mut() {
                    *o = d;
                }
                nb.set(0, 1);
            }
            if let Some(b) = blocks.get_mut(h) {
                b.set(nh, c);
            }
        }
        self.slot.set_state(CHAINED);
    }

    fn pop_oldest(&mut self) {
        match self.slot.state() {
            0 => {}
            WIDE => {
                if let Some(w) = self.side.wide_mut(self.slot.handle()) {
                    w.pop_oldest();
                }
                self.unwide();
            }
            CHAINED => self.pop_chained(),
            n => {
                self.pop_inline(n);
                self.release_if_idle();
            }
        }
    }
}

impl<const W: usize> Events for MapLogMut<'_, W> {
    #[inline]
    fn oldest(&self) -> Option<Tick> {
        self.view().oldest()
    }
    #[inline]
    fn newest(&self) -> Option<Tick> {
        self.view().newest()
    }
    #[inline]
    fn len(&self) -> usize {
        self.view().len()
    }
    fn iter(&self) -> impl Iterator<Item = Tick> + '_ {
        log_iter(self.slot, self.side)
    }
    #[inline]
    fn count(&self, now: Tick, window: u64) -> u32 {
        self.view().count(now, window)
    }
    #[inline]
    fn oldest_in(&self, now: Tick, window: u64) -> Option<Tick> {
        self.view().oldest_in(now, window)
    }
}

impl<const W: usize> EventsMut for MapLogMut<'_, W> {
    #[inline]
    fn push(&mut self, t: Tick) {
        if W == 0 {
            return;
        }
        let mut n = self.slot.state();
        if n != WIDE && usize::from(n) >= INLINE.min(W) && self.view().len() >= W {
            self.pop_oldest();
            n = self.slot.state();
        }
        match n {
            WIDE => {
                if let Some(w) = self.side.wide_mut(self.slot.handle()) {
                    TimeLog::push(w, t);
                }
            }
            0 => {
                self.slot.base = t;
                self.slot.set_state(1);
            }
            n => {
                let d = t
                    .checked_sub(self.slot.base)
                    .and_then(|d| u32::try_from(d).ok());
                let Some(d) = d else {
                    self.widen(t);
                    return;
                };
                match self.slot.off.get_mut(usize::from(n).wrapping_sub(1)) {
                    Some(o) if usize::from(n) < INLINE => {
                        *o = d;
                        self.slot.set_state(n.saturating_add(1));
                    }
                    _ => self.append(d),
                }
            }
        }
    }

    fn prune(&mut self, now: Tick, window: u64) {
        if self.slot.state() == WIDE {
            if let Some(w) = self.side.wide_mut(self.slot.handle()) {
                TimeLog::prune(w, now, window);
            }
            self.unwide();
            return;
        }
        while self.slot.state() != 0 && !within(now, self.slot.base, window) {
            self.pop_oldest();
        }
    }

    fn fit(&mut self) {
        if self.slot.state() == WIDE {
            if let Some(w) = self.side.wide_mut(self.slot.handle()) {
                TimeLog::fit(w);
            }
        }
    }

    fn remove_one(&mut self, t: Tick) -> bool {
        let events: Vec<Tick> = self.iter().collect();
        let Some(at) = events.iter().position(|&x| x == t) else {
            return false;
        };
        self.clear();
        for (i, &x) in events.iter().enumerate() {
            if i != at {
                self.push(x);
            }
        }
        true
    }

    fn truncate_front(&mut self, n: usize) {
        while self.len() > n {
            self.pop_oldest();
        }
    }

    fn clear(&mut self) {
        let h = self.slot.handle();
        if self.slot.state() == WIDE {
            if let Some(b) = self.side.blocks.get_mut(h) {
                let wh = b.link;
                b.set(0, 0);
                self.side.wides.release(wh);
            }
        } else {
            self.side.cut_chain(h);
        }
        self.slot.set_state(0);
        self.release_if_idle();
    }
}

/// A [`MapStore`] entry read in place.
#[derive(Clone, Copy)]
pub struct MapRef<'a, const W: usize> {
    meta: u16,
    slot: &'a Slot,
    side: &'a Side<W>,
}

impl<const W: usize> EntryRef for MapRef<'_, W> {
    type Violations = Log<VIOLATION_LOG>;
    #[inline]
    fn log(&self) -> impl Events + '_ {
        MapLog {
            slot: self.slot,
            side: self.side,
        }
    }
    #[inline]
    fn cold_held(&self) -> Option<&Cold> {
        self.side.blocks.get(self.slot.handle())?.cold.get()
    }
    #[inline]
    fn cold(&self) -> &Cold {
        self.cold_held().unwrap_or_else(|| BoxedCold::empty())
    }
}

/// A [`MapStore`] entry written in place.
pub struct MapMut<'a, const W: usize> {
    slot: &'a mut Slot,
    side: &'a mut Side<W>,
}

impl<const W: usize> EntryRef for MapMut<'_, W> {
    type Violations = Log<VIOLATION_LOG>;
    #[inline]
    fn log(&self) -> impl Events + '_ {
        MapLog {
            slot: &*self.slot,
            side: &*self.side,
        }
    }
    #[inline]
    fn cold_held(&self) -> Option<&Cold> {
        self.side.blocks.get(self.slot.handle())?.cold.get()
    }
    #[inline]
    fn cold(&self) -> &Cold {
        self.cold_held().unwrap_or_else(|| BoxedCold::empty())
    }
}

impl<const W: usize> EntryMut for MapMut<'_, W> {
    #[inline]
    fn log_mut(&mut self) -> impl EventsMut + '_ {
        MapLogMut {
            slot: &mut *self.slot,
            side: &mut *self.side,
        }
    }
    fn cold_held_mut(&mut self) -> Option<&mut Cold> {
        self.side.blocks.get_mut(self.slot.handle())?.cold.get_mut()
    }
    fn cold_make(&mut self) -> &mut Cold {
        if self.side.first(self.slot).is_none() {
            return self.side.spare.make();
        }
        match self.side.blocks.get_mut(self.slot.handle()) {
            Some(b) => b.cold.make(),
            None => self.side.spare.make(),
        }
    }
    fn cold_shrink(&mut self) {
        let h = self.slot.handle();
        let Some(b) = self.side.blocks.get_mut(h) else {
            return;
        };
        b.cold.shrink();
        if b.cold.get().is_none() && usize::from(self.slot.state()) <= INLINE {
            self.side.cut_chain(h);
            self.side.blocks.release(h);
            self.slot.set_handle(0);
        }
    }
}

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
    let a = u128::from_be_bytes(key.addr().octets());
    let (hi, lo) = ((a >> 64) as u64, a as u64);
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
    slots: Vec<Slot>,
    /// The keys' blocks (events past a slot's four, cold parts, full
    /// keys) and wide logs; its `Vec`s beside the slots' (per-shard state
    /// a decision reads in one line).
    side: Side<W>,
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
        // Blocks have 29-bit handles: at most the first and one per
        // `PER_BLOCK` events past the slot's four a key.
        let per_key = W
            .saturating_sub(INLINE)
            .div_ceil(PER_BLOCK)
            .saturating_add(1);
        let cap = max_entries.min(
            (HANDLE_MASK as usize)
                .saturating_sub(1)
                .checked_div(per_key)
                .unwrap_or(0),
        );
        MapStore {
            sip: seed.sip_keys(DOMAIN_TABLE),
            metas: Vec::new(),
            slots: Vec::new(),
            side: Side::default(),
            len: 0,
            cap,
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
            .saturating_mul(core::mem::size_of::<Slot>())
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

    #[inline]
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
    #[inline(always)]
    fn find(&self, p: &Probe, key: &Key) -> Result<usize, Option<usize>> {
        let (metas, slots) = (self.metas.as_slice(), self.slots.as_slice());
        let n = metas.len();
        let want = p.meta();
        let mut i = Self::home(p.hash, n);
        // Never full (at most 7/8), so an empty slot ends every probe; the
        // bound only keeps a broken invariant from looping forever.
        for _ in 0..n {
            let Some(&m) = metas.get(i) else {
                return Err(None);
            };
            if m == 0 {
                return Err(Some(i));
            }
            if m & !REFERENCED == want {
                if let Some(s) = slots.get(i) {
                    if s.word == p.word
                        && (p.shape.form() != Form::Full
                            || self.side.full_key(s.handle()) == Some(key))
                    {
                        return Ok(i);
                    }
                }
            }
            i = i.wrapping_add(1);
            if i == n {
                i = 0;
            }
        }
        Err(None)
    }

    fn locate(&self, key: &Key) -> Option<usize> {
        self.find(&self.probe(key), key).ok()
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
            Form::Full => self.side.full_key(s.handle()).copied(),
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

    /// Slot `i` read in place.
    #[inline]
    fn view(&self, i: usize) -> Option<MapRef<'_, W>> {
        let meta = *self.metas.get(i)?;
        let slot = self.slots.get(i)?;
        Some(MapRef {
            meta,
            slot,
            side: &self.side,
        })
    }

    /// Slot `i` written in place.
    #[inline]
    fn view_mut(&mut self, i: usize) -> Option<MapMut<'_, W>> {
        let slot = self.slots.get_mut(i)?;
        Some(MapMut {
            slot,
            side: &mut self.side,
        })
    }

    /// Put the owned `entry` of `key` into slot `i` (occupied, its log
    /// empty and no block): the events inline while they fit, the rest
    /// into blocks, the cold part into the first block.
    fn load(&mut self, i: usize, key: &Key, full: bool, mut entry: MapEntry<W>) {
        if full {
            entry.cold.set_full_key(*key);
        }
        let Some(mut v) = self.view_mut(i) else {
            return;
        };
        {
            let mut log = v.log_mut();
            for t in TimeLog::iter(&entry.log) {
                log.push(t);
            }
        }
        if entry.cold.get().is_some() {
            if let Some(b) = v.side.first(v.slot) {
                b.cold = entry.cold;
            }
        }
    }

    /// Take slot `i`'s entry out in its owned form, its blocks given back
    /// (the slot keeps its key, with an empty log).
    fn unload(&mut self, i: usize) -> MapEntry<W> {
        let mut entry = MapEntry::new();
        let Some(s) = self.slots.get_mut(i) else {
            return entry;
        };
        for t in log_iter(s, &self.side) {
            TimeLog::push(&mut entry.log, t);
        }
        let h = s.handle();
        if s.state() == WIDE {
            if let Some(b) = self.side.blocks.get_mut(h) {
                let wh = b.link;
                b.set(0, 0);
                self.side.wides.release(wh);
            }
        } else {
            self.side.cut_chain(h);
        }
        entry.cold = self.side.blocks.take(h).cold;
        s.tail = 0;
        entry
    }

    /// Add the absent `key` (its probe `p`), not yet referenced (a new key
    /// earns its second chance by coming back); its slot, or the entry
    /// back when full.
    #[allow(clippy::result_large_err)]
    fn place(
        &mut self,
        key: &Key,
        p: &Probe,
        hint: Option<usize>,
        entry: MapEntry<W>,
    ) -> Result<usize, MapEntry<W>> {
        if self.len >= self.cap {
            return Err(entry);
        }
        let n = self.size();
        let at = match hint {
            Some(i) if Self::fits(self.len.saturating_add(1), n) => Some(i),
            _ => {
                self.reserve_one();
                self.find(p, key).err().flatten()
            }
        };
        let Some(i) = at else {
            return Err(entry);
        };
        match (self.metas.get_mut(i), self.slots.get_mut(i)) {
            (Some(m), Some(s)) if *m == 0 => {
                *m = p.meta();
                *s = Slot {
                    word: p.word,
                    ..Slot::default()
                };
                self.len = self.len.saturating_add(1);
            }
            _ => return Err(entry),
        }
        let full = p.shape.form() == Form::Full;
        if full || !TimeLog::is_empty(&entry.log) || entry.cold.get().is_some() {
            self.load(i, key, full, entry);
        }
        Ok(i)
    }

    /// Remove slot `i` and close the gap (backward-shift deletion).
    fn remove_at(&mut self, i: usize) -> Option<(Key, MapEntry<W>)> {
        let m = *self.metas.get(i).filter(|&&m| m != 0)?;
        let key = self.key_at(i, m)?;
        let out = self.unload(i);
        if let Some(s) = self.slots.get_mut(i) {
            *s = Slot::default();
        }
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
        Some((key, out))
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
                self.side = Side::default();
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
    type Ref<'a> = MapRef<'a, W>;
    type Mut<'a> = MapMut<'a, W>;
    type Rules = crate::store::HotCopy;

    fn capacity(&self) -> usize {
        self.cap
    }

    fn len(&self) -> usize {
        self.len
    }

    fn get(&self, key: &Key) -> Option<MapRef<'_, W>> {
        self.view(self.locate(key)?)
    }

    fn get_if_touched(&self, key: &Key) -> Option<MapRef<'_, W>> {
        let v = self.view(self.locate(key)?)?;
        (v.meta & REFERENCED != 0).then_some(v)
    }

    fn get_mut(&mut self, key: &Key) -> Option<MapMut<'_, W>> {
        let i = self.locate(key)?;
        self.view_mut(i)
    }

    fn touch(&mut self, key: &Key) {
        if let Some(i) = self.locate(key) {
            self.mark(i);
        }
    }

    fn touch_get_mut(&mut self, key: &Key) -> Option<MapMut<'_, W>> {
        let i = self.locate(key)?;
        self.mark(i);
        self.view_mut(i)
    }

    fn upsert(
        &mut self,
        key: Key,
        classify: &mut dyn FnMut(&Key, MapRef<'_, W>) -> Class,
    ) -> Upsert<MapMut<'_, W>> {
        let p = self.probe(&key);
        let (i, evicted) = match self.find(&p, &key) {
            Ok(i) => {
                self.mark(i);
                (i, None)
            }
            Err(mut hint) => {
                let mut evicted = None;
                if self.len >= self.cap {
                    evicted = self.evict(classify);
                    if evicted.is_none() {
                        return Upsert::Full;
                    }
                    // The backward shift moved slots: probe again.
                    hint = None;
                }
                match self.place(&key, &p, hint, MapEntry::new()) {
                    Ok(i) => (i, evicted),
                    Err(_) => return Upsert::Full,
                }
            }
        };
        match self.view_mut(i) {
            Some(entry) => Upsert::Found { entry, evicted },
            None => Upsert::Full,
        }
    }

    #[allow(clippy::result_large_err)]
    fn insert(&mut self, key: Key, entry: MapEntry<W>) -> Result<(), MapEntry<W>> {
        let p = self.probe(&key);
        match self.find(&p, &key) {
            Ok(i) => {
                drop(self.unload(i));
                self.load(i, &key, p.shape.form() == Form::Full, entry);
                self.mark(i);
                Ok(())
            }
            Err(hint) => self.place(&key, &p, hint, entry).map(|_| ()),
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
        classify: &mut dyn FnMut(&Key, MapRef<'_, W>) -> Class,
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
                let v = this.view(i)?;
                Some((classify(&key, v), m & REFERENCED != 0))
            })?
        };
        let (key, _) = self.remove_at(i)?;
        // The backward shift may have moved a later entry into `i`: the
        // next sweep starts there. No `tidy`: the new key comes at once.
        self.hand = i;
        Some((key, victim))
    }

    fn retain(&mut self, keep: &mut dyn FnMut(&Key, MapRef<'_, W>) -> bool) -> usize {
        let mut removed = 0usize;
        let mut i = 0usize;
        // Backward shifts only move entries into the slot being examined or
        // from already-visited slots (wrapping around: those are visited
        // again, and kept again), so re-examining `i` after a removal
        // visits every entry.
        while i < self.size() {
            let m = self.metas.get(i).copied().unwrap_or(0);
            let drop = m != 0
                && match (self.key_at(i, m), self.view(i)) {
                    (Some(k), Some(v)) => !keep(&k, v),
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

    fn for_each(&self, f: &mut dyn FnMut(&Key, MapRef<'_, W>)) {
        for (i, &m) in self.metas.iter().enumerate() {
            if m == 0 {
                continue;
            }
            if let (Some(k), Some(v)) = (self.key_at(i, m), self.view(i)) {
                f(&k, v);
            }
        }
    }

    fn for_each_mut(&mut self, f: &mut dyn FnMut(&Key, MapMut<'_, W>)) {
        for i in 0..self.size() {
            let m = self.metas.get(i).copied().unwrap_or(0);
            if m == 0 {
                continue;
            }
            if let Some(k) = self.key_at(i, m) {
                if let Some(v) = self.view_mut(i) {
                    f(&k, v);
                }
            }
        }
    }

    fn clear(&mut self) {
        self.metas = Vec::new();
        self.slots = Vec::new();
        self.side = Side::default();
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
    fn check<const V: usize>(s: &MapStore<V>) {
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
        assert!(s.len() == 0 || MapStore::<V>::fits(s.len(), s.size()));
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
            s.get_mut(k).unwrap().log_mut().push(n as u64 + 1);
        }
        check(&s);
        for (n, k) in ks.iter().enumerate() {
            assert_eq!(
                s.get(k).unwrap().log().oldest(),
                Some(n as u64 + 1),
                "{k:?}"
            );
        }
        let mut seen = Vec::new();
        s.for_each(&mut |k, _| seen.push(*k));
        seen.sort();
        let mut want = ks.to_vec();
        want.sort();
        assert_eq!(seen, want);
        // Only the keys that need one have a cold part.
        for k in &ks {
            let full = s.side.full_key(s.get(k).unwrap().slot.handle()).is_some();
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
        // Key word 8, base 8, three offsets 12, record handle 4: half a
        // cache line, never straddling one; kind, form, reference bit,
        // log length and hash tag in the 2-byte meta.
        assert_eq!(core::mem::size_of::<Slot>(), 32);
        assert_eq!(core::mem::align_of::<Slot>(), 32);
        // A block: the cold-part pointer, its link and five offsets, half
        // a cache line too.
        assert_eq!(core::mem::size_of::<Block>(), 32);
        assert_eq!(core::mem::align_of::<Block>(), 32);
    }

    /// A slot's log (four events inline, then its blocks, or a wide log
    /// past `u32::MAX` ticks) reads and writes exactly as a [`GrowLog`]
    /// does, through chains, widening, prunes back inline, `remove_one`
    /// and `clear`, for logs shorter and longer than the inline part;
    /// blocks are given back when nothing is left in them.
    #[test]
    fn the_slot_log_is_a_grow_log() {
        fn run<const V: usize>(seed: u64) {
            let mut st = seed;
            let mut s = MapStore::<V>::new(Seed::new([3; 16]), 64);
            let mut want: alloc::vec::Vec<GrowLog<V>> = (0..8).map(|_| GrowLog::new()).collect();
            for k in 0..8 {
                s.insert(key(k), Entry::new()).unwrap();
            }
            let mut now = 1u64;
            let (mut chains, mut wides) = (0usize, 0usize);
            for step in 0..20_000 {
                let r = rng(&mut st);
                let k = (r % 8) as usize;
                // Gaps past 32-bit offsets now and then (wide logs), rarely
                // enough for long chains to form between them.
                let rare = (r >> 59) == 0;
                now += match (r >> 8) % 16 {
                    0 if rare => 1 << 33,
                    1 if rare => u64::from(u32::MAX),
                    2..=5 => 0,
                    _ => (r >> 16) % 1000,
                };
                let w = &mut want[k];
                let mut e = s.get_mut(&key(k as u64)).unwrap();
                let mut log = e.log_mut();
                match (r >> 40) % 10 {
                    0..=4 => {
                        log.push(now);
                        TimeLog::push(w, now);
                    }
                    5 | 6 => {
                        // Short windows, and long ones the logs grow under.
                        let win = match (r >> 50) % 3 {
                            0 => (r >> 20) % 5000 + 1,
                            1 => (r >> 20) % 50_000 + 1,
                            _ => 1 << 40,
                        };
                        log.prune(now, win);
                        TimeLog::prune(w, now, win);
                    }
                    7 => {
                        let t = TimeLog::iter(w)
                            .nth(((r >> 24) % 8) as usize)
                            .unwrap_or(now);
                        assert_eq!(log.remove_one(t), TimeLog::remove_one(w, t));
                    }
                    8 => {
                        log.fit();
                        let n = ((r >> 24) % 24) as usize;
                        log.truncate_front(n);
                        TimeLog::truncate_front(w, n);
                    }
                    _ => {
                        if (r >> 30) % 8 == 0 {
                            log.clear();
                            TimeLog::clear(w);
                        }
                    }
                }
                assert_eq!(log.len(), TimeLog::len(w), "step {step}");
                assert!(log.iter().eq(TimeLog::iter(w)), "step {step}");
                assert_eq!(log.oldest(), TimeLog::oldest(w));
                assert_eq!(log.newest(), TimeLog::newest(w));
                assert_eq!(log.count(now, 700), TimeLog::count(w, now, 700));
                assert_eq!(log.oldest_in(now, 700), TimeLog::oldest_in(w, now, 700));
                drop(log);
                assert!(e.log().iter().eq(TimeLog::iter(w)));
                // A block while the log is chained or wide, kept down to
                // three events (no cold part here), and for a
                // fingerprinted key's full key.
                let state = e.slot.state();
                let spilled = state == CHAINED || state == WIDE;
                let full = compact(&key(k as u64)).0.form() == Form::Full;
                if spilled || full {
                    assert_ne!(e.slot.handle(), 0, "step {step}");
                } else if usize::from(state) <= UNSPILL {
                    assert_eq!(e.slot.handle(), 0, "step {step}");
                }
                assert!(spilled || TimeLog::len(w) <= INLINE);
                chains += usize::from(TimeLog::len(w) > INLINE + PER_BLOCK && state == CHAINED);
                wides += usize::from(state == WIDE);
                if state == CHAINED {
                    assert!(TimeLog::len(w) > INLINE, "step {step}");
                }
            }
            // Chains of two blocks and more, and wide logs, were met.
            assert!(
                V <= INLINE + PER_BLOCK || chains > 100,
                "{chains} long chains"
            );
            assert!(wides > 100, "{wides} steps wide");
            // Export and import keep every log.
            for (k, w) in want.iter().enumerate() {
                let e = s.remove(&key(k as u64)).unwrap();
                assert_eq!(&e.log, w);
                s.insert(key(k as u64), e).unwrap();
                assert!(s
                    .get(&key(k as u64))
                    .unwrap()
                    .log()
                    .iter()
                    .eq(TimeLog::iter(w)));
            }
            check(&s);
        }
        for seed in 0..4 {
            run::<3>(seed);
            run::<8>(seed);
            run::<50>(seed);
        }
    }

    /// A cold part lives in the key's first block, which goes back to the
    /// arena's free list when the part is emptied and the log is inline;
    /// a fingerprinted key keeps its block (its full key) throughout.
    #[test]
    fn records_come_and_go() {
        let mut s = store(100);
        let (a, b) = (key(0), key(2)); // a request key, a (user, address) pair
        assert!(compact(&b).0.form() == Form::Full);
        for k in [a, b] {
            let Upsert::Found { mut entry, .. } = s.upsert(k, &mut |_, _| Class::Live) else {
                panic!("full");
            };
            entry.log_mut().push(5);
            entry.cold_make().request_mut().banned = true;
        }
        assert_eq!(s.side.blocks.items.len(), 2);
        assert!(s.get(&a).unwrap().is_banned() && s.get(&b).unwrap().is_banned());
        assert!(s.get_mut(&a).unwrap().clear_block_and_ban());
        assert_eq!(
            s.get(&a).unwrap().slot.handle(),
            0,
            "an emptied record is given back"
        );
        assert_eq!(s.side.blocks.free.len(), 1);
        assert!(s.get_mut(&b).unwrap().clear_block_and_ban());
        assert_ne!(s.get(&b).unwrap().slot.handle(), 0, "the full key stays");
        assert_eq!(s.get(&b).unwrap().log().oldest(), Some(5));
        // The free record is reused.
        s.get_mut(&a).unwrap().cold_make().login_mut().lock_until = crate::time::OptTick::some(9);
        assert_eq!(
            (s.side.blocks.items.len(), s.side.blocks.free.len()),
            (2, 0)
        );
        check(&s);
        let e = s.remove(&a).unwrap();
        assert!(e.lock_deadline().is_some());
        assert_eq!(s.side.blocks.free.len(), 1);
        s.clear();
        assert!(s.side.blocks.items.is_empty());
    }
}
