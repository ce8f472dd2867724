//! Sliding logs: timestamps oldest first, in a fixed-capacity ring
//! ([`Log`], inline, no allocator) or a ring that grows with use up to its
//! cap ([`GrowLog`], feature `alloc`: up to ten events inline, then a
//! ring sized to the events, not to `W`). Both are a [`TimeLog`].
//!
//! An event counts iff it lies in `(now - window, now]`. Logs are kept in
//! time order because a limiter never moves its clock backwards.
//!
//! ```text
//! // (a private module: this runs as the unit test `log_doc_example`)
//! use crate::window::{Log, TimeLog};
//! let mut log = Log::<4>::new();
//! for t in [10, 20, 30] {
//!     log.push(t);
//! }
//! log.prune(35, 20); // window (15, 35]: 10 leaves
//! assert_eq!((log.len(), log.oldest()), (2, Some(20)));
//! ```

use crate::time::{within, Tick};

/// What the rules need of a sliding log. Events are pushed in time order.
pub trait TimeLog: Default + Clone + core::fmt::Debug + PartialEq {
    /// Events in the window at `now`, without changing anything.
    fn count(&self, now: Tick, window: u64) -> u32 {
        let n = self.iter().filter(|&t| within(now, t, window)).count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }
    /// Drop events that left the window.
    fn prune(&mut self, now: Tick, window: u64) {
        while let Some(t) = self.oldest() {
            if within(now, t, window) {
                break;
            }
            self.pop_oldest();
        }
    }
    /// Oldest event still in the window.
    fn oldest_in(&self, now: Tick, window: u64) -> Option<Tick> {
        self.iter().find(|&t| within(now, t, window))
    }
    /// Oldest stored event (after a [`prune`](Self::prune): the oldest in
    /// the window).
    fn oldest(&self) -> Option<Tick>;
    /// Newest event.
    fn newest(&self) -> Option<Tick>;
    /// Remove the oldest event.
    fn pop_oldest(&mut self);
    /// Append, dropping the oldest event when full.
    fn push(&mut self, t: Tick);
    /// Keep at most `n` newest events.
    fn truncate_front(&mut self, n: usize) {
        while self.len() > n {
            self.pop_oldest();
        }
    }
    /// Give back storage beyond the events held (a log that reached its
    /// limit stays there for a while). Nothing for fixed logs.
    fn fit(&mut self) {}
    /// Remove one event at exactly `t` (a reserved login attempt turned
    /// into a success), keeping the others in order. False if none is there.
    /// Rebuilds the log: rare, so kept simple rather than fast.
    fn remove_one(&mut self, t: Tick) -> bool {
        if !self.iter().any(|x| x == t) {
            return false;
        }
        let old = self.clone();
        self.clear();
        let mut skipped = false;
        for x in old.iter() {
            if !skipped && x == t {
                skipped = true;
            } else {
                self.push(x);
            }
        }
        true
    }
    /// Forget everything.
    fn clear(&mut self);
    /// Number of stored events (in window or not).
    fn len(&self) -> usize;
    /// Whether no event is stored.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Stored events, oldest first.
    fn iter(&self) -> impl Iterator<Item = Tick> + '_;
}

/// Read access to a log of events: a [`TimeLog`] (through a reference) or
/// a store's view of a log it keeps in pieces. What the rules read of an
/// entry's log.
pub trait Events {
    /// Oldest stored event.
    fn oldest(&self) -> Option<Tick>;
    /// Newest event.
    fn newest(&self) -> Option<Tick>;
    /// Number of stored events (in window or not).
    fn len(&self) -> usize;
    /// Whether no event is stored.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Stored events, oldest first.
    fn iter(&self) -> impl Iterator<Item = Tick> + '_;
    /// Events in the window at `now`.
    fn count(&self, now: Tick, window: u64) -> u32;
    /// Oldest event still in the window.
    fn oldest_in(&self, now: Tick, window: u64) -> Option<Tick>;
}

/// Write access to a log of events (see [`Events`]).
pub trait EventsMut: Events {
    /// Append, dropping the oldest event when full.
    fn push(&mut self, t: Tick);
    /// Drop events that left the window.
    fn prune(&mut self, now: Tick, window: u64);
    /// Give back storage beyond the events held.
    fn fit(&mut self);
    /// Remove one event at exactly `t`; false if none is there.
    fn remove_one(&mut self, t: Tick) -> bool;
    /// Keep at most `n` newest events.
    fn truncate_front(&mut self, n: usize);
    /// Forget everything.
    fn clear(&mut self);
}

/// The [`Events`] of a log read through a shared or unique reference.
macro_rules! events_by_ref {
    ($($r:tt)*) => {
        impl<L: TimeLog> Events for $($r)* L {
            #[inline]
            fn oldest(&self) -> Option<Tick> {
                TimeLog::oldest(&**self)
            }
            #[inline]
            fn newest(&self) -> Option<Tick> {
                TimeLog::newest(&**self)
            }
            #[inline]
            fn len(&self) -> usize {
                TimeLog::len(&**self)
            }
            #[inline]
            fn iter(&self) -> impl Iterator<Item = Tick> + '_ {
                TimeLog::iter(&**self)
            }
            #[inline]
            fn count(&self, now: Tick, window: u64) -> u32 {
                TimeLog::count(&**self, now, window)
            }
            #[inline]
            fn oldest_in(&self, now: Tick, window: u64) -> Option<Tick> {
                TimeLog::oldest_in(&**self, now, window)
            }
        }
    };
}

events_by_ref!(&);
events_by_ref!(&mut);

impl<L: TimeLog> EventsMut for &mut L {
    #[inline]
    fn push(&mut self, t: Tick) {
        TimeLog::push(&mut **self, t);
    }
    #[inline]
    fn prune(&mut self, now: Tick, window: u64) {
        TimeLog::prune(&mut **self, now, window);
    }
    #[inline]
    fn fit(&mut self) {
        TimeLog::fit(&mut **self);
    }
    #[inline]
    fn remove_one(&mut self, t: Tick) -> bool {
        TimeLog::remove_one(&mut **self, t)
    }
    #[inline]
    fn truncate_front(&mut self, n: usize) {
        TimeLog::truncate_front(&mut **self, n);
    }
    #[inline]
    fn clear(&mut self) {
        TimeLog::clear(&mut **self);
    }
}

/// A sliding log of at most `C` timestamps: a ring of `C` ticks, the
/// oldest pushed out when full.
#[derive(Clone, Copy)]
pub struct Log<const C: usize> {
    /// The ring; the `len` events start at `head`.
    times: [Tick; C],
    head: usize,
    len: usize,
}

impl<const C: usize> Log<C> {
    /// An empty log.
    pub const fn new() -> Self {
        Log {
            times: [0; C],
            head: 0,
            len: 0,
        }
    }

    /// The ring index of the `i`-th event (oldest first), `i < C`.
    fn at(&self, i: usize) -> usize {
        let j = self.head.wrapping_add(i);
        if j >= C {
            j.wrapping_sub(C)
        } else {
            j
        }
    }

    fn get(&self, i: usize) -> Option<Tick> {
        if i >= self.len {
            return None;
        }
        self.times.get(self.at(i)).copied()
    }
}

impl<const C: usize> Default for Log<C> {
    fn default() -> Self {
        Self::new()
    }
}

/// Equal when they hold the same events, wherever the ring starts.
impl<const C: usize> PartialEq for Log<C> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl<const C: usize> Eq for Log<C> {}

impl<const C: usize> core::fmt::Debug for Log<C> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<const C: usize> TimeLog for Log<C> {
    fn oldest(&self) -> Option<Tick> {
        self.get(0)
    }

    fn newest(&self) -> Option<Tick> {
        self.get(self.len.checked_sub(1)?)
    }

    fn pop_oldest(&mut self) {
        if self.len > 0 {
            self.head = self.at(1);
            self.len = self.len.saturating_sub(1);
        }
    }

    fn push(&mut self, t: Tick) {
        if C == 0 {
            return; // a zero-capacity log keeps nothing
        }
        if self.len >= C {
            self.pop_oldest();
        }
        let end = self.at(self.len);
        if let Some(place) = self.times.get_mut(end) {
            *place = t;
            self.len = self.len.saturating_add(1);
        }
    }

    fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
    }

    fn len(&self) -> usize {
        self.len
    }

    fn iter(&self) -> impl Iterator<Item = Tick> + '_ {
        (0..self.len).filter_map(move |i| self.get(i))
    }
}

/// A sliding log of at most `C` timestamps stored compactly (the fixed
/// tables' logs): one 64-bit base tick and a ring of `C` 32-bit offsets
/// from it, `4 × C + 10` bytes with no padding (alignment 4) instead of
/// [`Log`]'s `8 × C + 24`.
///
/// **Exact while the stored events span at most `u32::MAX` ticks** (49.7
/// days at 1 kHz, 71.6 minutes at 1 MHz). Pushing an event more than
/// `u32::MAX` ticks after the oldest stored one first drops the events
/// that far behind it (they are older than [`MAX_SPAN`](Self::MAX_SPAN) at
/// the new event's time), then moves the base to the oldest event left.
/// So every question asked with a lookback of at most `MAX_SPAN` ticks is
/// answered exactly as [`Log`] answers it; the fixed tables refuse a
/// configuration with a longer lookback (see
/// [`Store::MAX_SPAN`](crate::store::Store::MAX_SPAN)). Events are pushed
/// in time order (the limiter's clock never moves back); an event before
/// the base (never pushed by the limiter) is taken at the base.
#[derive(Clone, Copy, Debug)]
pub struct CompactLog<const C: usize> {
    /// Base tick, low then high 32 bits (two words: alignment 4).
    base: [u32; 2],
    /// Offsets from the base; the ring's `len` events start at `head`.
    off: [u32; C],
    head: u8,
    len: u8,
}

impl<const C: usize> Default for CompactLog<C> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const C: usize> CompactLog<C> {
    const VALID: () = assert!(C <= u8::MAX as usize, "CompactLog: C must fit a u8");

    /// Longest span of stored events kept exactly, in ticks.
    pub const MAX_SPAN: u64 = crate::FIXED_MAX_SPAN;

    /// An empty log.
    pub const fn new() -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::VALID;
        CompactLog {
            base: [0; 2],
            off: [0; C],
            head: 0,
            len: 0,
        }
    }

    fn base(&self) -> Tick {
        let [lo, hi] = self.base;
        (u64::from(hi) << 32) | u64::from(lo)
    }

    fn set_base(&mut self, t: Tick) {
        // Truncations intended: the two halves of `t`.
        #[allow(clippy::cast_possible_truncation)]
        {
            self.base = [t as u32, (t >> 32) as u32];
        }
    }

    /// Ring position of the `i`-th event (`i` < `C`).
    fn pos(&self, i: usize) -> usize {
        usize::from(self.head)
            .wrapping_add(i)
            .checked_rem(C)
            .unwrap_or(0)
    }

    /// The `i`-th stored event, oldest first.
    fn at(&self, i: usize) -> Option<Tick> {
        if i >= usize::from(self.len) {
            return None;
        }
        let o = self.off.get(self.pos(i)).copied()?;
        Some(self.base().saturating_add(u64::from(o)))
    }

    /// Make the oldest stored event the base (offsets shift down by its
    /// offset); nothing when empty.
    fn rebase(&mut self) {
        let Some(d) = self.off.get(usize::from(self.head)).copied() else {
            return;
        };
        if self.len == 0 || d == 0 {
            return;
        }
        for i in 0..usize::from(self.len) {
            let p = self.pos(i);
            if let Some(o) = self.off.get_mut(p) {
                *o = o.wrapping_sub(d);
            }
        }
        self.set_base(self.base().saturating_add(u64::from(d)));
    }
}

impl<const C: usize> PartialEq for CompactLog<C> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl<const C: usize> Eq for CompactLog<C> {}

impl<const C: usize> TimeLog for CompactLog<C> {
    fn oldest(&self) -> Option<Tick> {
        self.at(0)
    }

    fn newest(&self) -> Option<Tick> {
        usize::from(self.len)
            .checked_sub(1)
            .and_then(|i| self.at(i))
    }

    fn pop_oldest(&mut self) {
        if self.len > 0 {
            self.head = u8::try_from(self.pos(1)).unwrap_or(0);
            self.len = self.len.saturating_sub(1);
        }
    }

    fn push(&mut self, t: Tick) {
        if C == 0 {
            return;
        }
        if usize::from(self.len) >= C {
            self.pop_oldest();
        }
        // Events more than MAX_SPAN before `t` go first.
        while let Some(o) = self.oldest() {
            if t.saturating_sub(o) <= Self::MAX_SPAN {
                break;
            }
            self.pop_oldest();
        }
        if self.len == 0 {
            self.head = 0;
            self.set_base(t);
        } else if t.saturating_sub(self.base()) > Self::MAX_SPAN {
            // The oldest event is within MAX_SPAN of `t`: it becomes the base.
            self.rebase();
        }
        let d = u32::try_from(t.saturating_sub(self.base())).unwrap_or(u32::MAX);
        let p = self.pos(usize::from(self.len));
        if let Some(slot) = self.off.get_mut(p) {
            *slot = d;
            self.len = self.len.saturating_add(1);
        }
    }

    fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
    }

    fn len(&self) -> usize {
        usize::from(self.len)
    }

    fn iter(&self) -> impl Iterator<Item = Tick> + '_ {
        (0..usize::from(self.len)).filter_map(move |i| self.at(i))
    }
}

#[cfg(feature = "defmt")]
impl<const C: usize> defmt::Format for CompactLog<C> {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(
            f,
            "CompactLog {{ len: {=usize}, newest: {=?} }}",
            self.len(),
            self.newest()
        );
    }
}

/// A log of at most `W` timestamps whose storage follows use (feature
/// `alloc`): up to ten events inline (the oldest, then 32-bit offsets
/// from it: 71 minutes at 1 MHz ticks), more, or events further apart, in
/// a heap ring of 20 that doubles as events arrive and is cut back as they
/// leave (and fitted to its events when the key reaches its limit); the
/// ring too holds 32-bit offsets from a 64-bit base while its events span
/// at most `u32::MAX` ticks (rebased, or widened to full ticks, when a new
/// event does not fit: exact either way). 48
/// bytes plus the ring (so the growable table's slot, with its key word
/// and cold-part pointer, is one 64-byte cache line); a key allocates
/// only from its eleventh event in the window.
#[cfg(feature = "alloc")]
#[derive(Clone, Debug)]
pub struct GrowLog<const W: usize> {
    repr: Repr,
}

/// Where a [`GrowLog`] keeps its events.
#[cfg(feature = "alloc")]
#[derive(Clone, Debug)]
enum Repr {
    /// `len` events, oldest first: `base`, then `base + off[i]`.
    Inline {
        base: Tick,
        off: [u32; INLINE - 1],
        len: u8,
    },
    /// A heap ring.
    Heap(Ring),
}

/// A heap ring of a [`GrowLog`]'s events: `len` of them from `head`.
#[cfg(feature = "alloc")]
#[derive(Clone, Debug)]
struct Ring {
    buf: RingBuf,
    /// What [`RingBuf::Narrow`] offsets count from (at most the oldest).
    base: Tick,
    head: u16,
    len: u16,
}

/// A ring's slots: 32-bit offsets from its base while the events span
/// at most `u32::MAX` ticks (half the bytes, so half the lines a spilled
/// log's oldest and newest events fall on), full ticks otherwise.
#[cfg(feature = "alloc")]
#[derive(Clone, Debug)]
enum RingBuf {
    Narrow(alloc::boxed::Box<[u32]>),
    Wide(alloc::boxed::Box<[Tick]>),
}

#[cfg(feature = "alloc")]
impl Ring {
    /// A ring of `cap` (at least `len`) slots holding the `len` `events`
    /// (oldest first, from `first` to `last`) that also takes `next`
    /// after them without moving, if it has room for it.
    fn new(
        cap: usize,
        len: usize,
        (first, last): (Option<Tick>, Option<Tick>),
        next: Option<Tick>,
        events: impl Iterator<Item = Tick>,
    ) -> Ring {
        // Events are in time order; `next` normally comes after them.
        let ends = [first, last, next];
        let oldest = ends.iter().flatten().copied().min().unwrap_or(0);
        let newest = ends.iter().flatten().copied().max().unwrap_or(0);
        let buf = if u32::try_from(newest.saturating_sub(oldest)).is_ok() {
            let mut b = alloc::vec::Vec::with_capacity(cap);
            b.extend(events.map(|t| u32::try_from(t.saturating_sub(oldest)).unwrap_or(u32::MAX)));
            b.resize(cap, 0);
            RingBuf::Narrow(b.into_boxed_slice())
        } else {
            let mut b = alloc::vec::Vec::with_capacity(cap);
            b.extend(events);
            b.resize(cap, 0);
            RingBuf::Wide(b.into_boxed_slice())
        };
        Ring {
            buf,
            base: oldest,
            head: 0,
            len: u16::try_from(len).unwrap_or(u16::MAX),
        }
    }

    #[inline]
    fn cap(&self) -> usize {
        match &self.buf {
            RingBuf::Narrow(b) => b.len(),
            RingBuf::Wide(b) => b.len(),
        }
    }

    /// Slot of the `i`-th event (`i` at most the ring's size; `head` is
    /// below it, so one subtraction wraps: no division).
    #[inline]
    fn pos(&self, i: usize) -> Option<usize> {
        let cap = self.cap();
        let j = usize::from(self.head).wrapping_add(i);
        if j < cap {
            return Some(j);
        }
        let k = j.wrapping_sub(cap);
        (k < cap).then_some(k)
    }

    #[inline]
    fn get(&self, i: usize) -> Option<Tick> {
        if i >= usize::from(self.len) {
            return None;
        }
        let j = self.pos(i)?;
        match &self.buf {
            RingBuf::Narrow(b) => b.get(j).map(|&o| self.base.saturating_add(u64::from(o))),
            RingBuf::Wide(b) => b.get(j).copied(),
        }
    }

    fn pop(&mut self) {
        if self.len > 0 {
            self.len = self.len.saturating_sub(1);
            let next = self.pos(1).unwrap_or(0);
            self.head = u16::try_from(next).unwrap_or(0);
        }
    }

    /// Append `t` (not before the newest event) if it fits: room in the
    /// ring, and for a narrow one an offset from the base. False if not.
    #[inline]
    fn try_push(&mut self, t: Tick) -> bool {
        if self.len == 0 {
            self.head = 0;
            self.base = t;
        }
        let Some(j) = self.pos(usize::from(self.len)) else {
            return false;
        };
        if usize::from(self.len) >= self.cap() {
            return false;
        }
        let base = self.base;
        let stored = match &mut self.buf {
            RingBuf::Narrow(b) => match (
                b.get_mut(j),
                t.checked_sub(base).and_then(|d| u32::try_from(d).ok()),
            ) {
                (Some(slot), Some(d)) => {
                    *slot = d;
                    true
                }
                _ => false,
            },
            RingBuf::Wide(b) => b.get_mut(j).map(|slot| *slot = t).is_some(),
        };
        if stored {
            self.len = self.len.saturating_add(1);
        }
        stored
    }
}

/// Events kept without allocating: the oldest and nine 32-bit offsets,
/// with the length and the variant's tag 48 bytes (issue 24 measured 4,
/// 6 and 10: `BENCHMARKS.md`).
#[cfg(feature = "alloc")]
const INLINE: usize = 10;

#[cfg(feature = "alloc")]
impl<const W: usize> Default for GrowLog<W> {
    fn default() -> Self {
        // Evaluated here, where every entry's log is made (`Entry::new`
        // goes through `Default`), so an oversized `W` fails to compile.
        #[allow(clippy::let_unit_value)]
        let () = Self::VALID;
        GrowLog {
            repr: Repr::Inline {
                base: 0,
                off: [0; INLINE - 1],
                len: 0,
            },
        }
    }
}

#[cfg(feature = "alloc")]
impl<const W: usize> GrowLog<W> {
    const VALID: () = assert!(W <= u16::MAX as usize, "GrowLog: W must fit a u16");
    /// Smallest heap ring.
    const MIN: usize = 4;

    /// An empty log (no allocation).
    pub fn new() -> Self {
        GrowLog::default()
    }

    /// The `i`-th event, oldest first.
    fn at(&self, i: usize) -> Option<Tick> {
        match &self.repr {
            Repr::Inline { base, off, len } => {
                if i >= usize::from(*len) {
                    None
                } else if let Some(j) = i.checked_sub(1) {
                    off.get(j).map(|&o| base.wrapping_add(u64::from(o)))
                } else {
                    Some(*base)
                }
            }
            Repr::Heap(r) => r.get(i),
        }
    }

    /// Heap slots, 0 when inline.
    #[cfg(test)]
    fn heap_cap(&self) -> usize {
        match &self.repr {
            Repr::Inline { .. } => 0,
            Repr::Heap(r) => r.cap(),
        }
    }

    /// Whether the heap ring holds 32-bit offsets (false when inline).
    #[cfg(test)]
    fn narrow(&self) -> bool {
        matches!(
            &self.repr,
            Repr::Heap(Ring {
                buf: RingBuf::Narrow(_),
                ..
            })
        )
    }

    /// Drop the oldest event, keeping the storage.
    fn pop_raw(&mut self) {
        match &mut self.repr {
            Repr::Inline { base, off, len } => {
                if *len > 1 {
                    // The second event becomes the base; the others move
                    // down one place, rebased (a few vector moves; the
                    // `rotate_left` before was a call: `icount
                    // host-steady-2` 583 -> 478 instructions a decision).
                    // Past `len` the offsets mean nothing.
                    let [d, ..] = *off;
                    *base = base.wrapping_add(u64::from(d));
                    off.copy_within(1.., 0);
                    for o in off.iter_mut() {
                        *o = o.wrapping_sub(d);
                    }
                }
                *len = len.saturating_sub(1);
            }
            Repr::Heap(r) => r.pop(),
        }
    }

    /// When a quarter or less of the ring is used, move to a ring of twice
    /// the events, or inline if they fit.
    fn shrink(&mut self) {
        if let Repr::Heap(r) = &self.repr {
            let (cap, len) = (r.cap(), usize::from(r.len));
            if len.saturating_mul(4) <= cap {
                self.relocate(len.saturating_mul(2));
            }
        }
    }

    /// The events inline, if they fit: at most [`INLINE`], each within
    /// `u32::MAX` ticks of the oldest.
    fn inline(&self) -> Option<Repr> {
        let n = self.len();
        if n > INLINE {
            return None;
        }
        let base = self.oldest().unwrap_or(0);
        let mut off = [0u32; INLINE - 1];
        for (d, t) in off.iter_mut().zip(self.iter().skip(1)) {
            *d = Self::offset(base, t)?;
        }
        Some(Repr::Inline {
            base,
            off,
            len: u8::try_from(n).ok()?,
        })
    }

    /// `t` as an inline offset from `base`, if it is one.
    fn offset(base: Tick, t: Tick) -> Option<u32> {
        u32::try_from(t.checked_sub(base)?).ok()
    }

    /// Whether `t` can join an inline log holding `len` events from `base`.
    fn fits_inline(base: Tick, len: u8, t: Tick) -> bool {
        usize::from(len) < INLINE && (len == 0 || Self::offset(base, t).is_some())
    }

    /// Move the events, oldest first, inline (if `cap` <= [`INLINE`] and
    /// they fit) or into a ring of `cap` (>= len, >= [`Self::MIN`]) slots.
    fn relocate(&mut self, cap: usize) {
        if cap <= INLINE {
            if let Some(r) = self.inline() {
                self.repr = r;
                return;
            }
        }
        self.move_to_heap(cap, None);
    }

    /// Move the events, oldest first, into a ring of `cap` (at least the
    /// events and [`Self::MIN`]) slots, narrow if they and `next` (an
    /// event about to be pushed) span at most `u32::MAX` ticks.
    fn move_to_heap(&mut self, cap: usize, next: Option<Tick>) {
        let n = self.len();
        let cap = cap.max(Self::MIN).max(n);
        let ends = (self.oldest(), self.newest());
        self.repr = Repr::Heap(Ring::new(cap, n, ends, next, self.iter()));
    }

    /// [`TimeLog::prune`] past its inline fast path.
    #[inline(never)]
    fn prune_slow(&mut self, now: Tick, window: u64) {
        while let Some(t) = self.oldest() {
            if within(now, t, window) {
                break;
            }
            self.pop_raw();
        }
        self.shrink();
    }

    /// [`TimeLog::push`] past its inline fast path.
    #[inline(never)]
    fn push_slow(&mut self, t: Tick) {
        if W == 0 {
            return;
        }
        if self.len() >= W {
            self.pop_raw();
        }
        // Where `t` goes when it does not fit: a ring (inline was full, or
        // `t` is too far from its oldest for an offset), twice the size
        // when the ring is full, the same size (rebased or widened) when
        // only the offset does not fit.
        let cap = match &mut self.repr {
            Repr::Inline { base, off, len } => {
                if Self::fits_inline(*base, *len, t) {
                    if *len == 0 {
                        *base = t;
                        *len = 1;
                    } else if let Some(slot) = off.get_mut(usize::from(*len).wrapping_sub(1)) {
                        *slot = Self::offset(*base, t).unwrap_or(u32::MAX);
                        *len = len.saturating_add(1);
                    }
                    return;
                }
                INLINE.saturating_mul(2).min(W)
            }
            Repr::Heap(r) => {
                if r.try_push(t) {
                    return;
                }
                if usize::from(r.len) >= r.cap() {
                    r.cap().saturating_mul(2).min(W)
                } else {
                    r.cap()
                }
            }
        };
        self.move_to_heap(cap.max(self.len().saturating_add(1)), Some(t));
        // Takes `t`: the new ring has room and spans it.
        if let Repr::Heap(r) = &mut self.repr {
            r.try_push(t);
        }
    }
}

#[cfg(feature = "alloc")]
impl<const W: usize> PartialEq for GrowLog<W> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

#[cfg(feature = "alloc")]
impl<const W: usize> Eq for GrowLog<W> {}

#[cfg(feature = "alloc")]
impl<const W: usize> TimeLog for GrowLog<W> {
    fn oldest(&self) -> Option<Tick> {
        self.at(0)
    }

    fn newest(&self) -> Option<Tick> {
        self.len().checked_sub(1).and_then(|i| self.at(i))
    }

    fn pop_oldest(&mut self) {
        self.pop_raw();
        self.shrink();
    }

    // Inline into the caller: an inline log whose oldest event is still
    // in the window (or an empty one) has nothing to drop or give back;
    // anything else goes to `prune_slow`.
    #[inline]
    fn prune(&mut self, now: Tick, window: u64) {
        if let Repr::Inline { base, len, .. } = &self.repr {
            if *len == 0 || within(now, *base, window) {
                return;
            }
        }
        self.prune_slow(now, window);
    }

    fn truncate_front(&mut self, n: usize) {
        while self.len() > n {
            self.pop_raw();
        }
        self.shrink();
    }

    // Inline into the caller: an event joining an inline log with room
    // (not full at `W`, under `INLINE` events, within an offset of the
    // oldest) is one store; anything else goes to `push_slow`.
    #[inline]
    fn push(&mut self, t: Tick) {
        if let Repr::Inline { base, off, len } = &mut self.repr {
            let n = usize::from(*len);
            if n < W && n < INLINE {
                if n == 0 {
                    *base = t;
                    *len = 1;
                    return;
                }
                if let (Some(d), Some(slot)) =
                    (Self::offset(*base, t), off.get_mut(n.wrapping_sub(1)))
                {
                    *slot = d;
                    *len = len.saturating_add(1);
                    return;
                }
            }
        }
        self.push_slow(t);
    }
    fn fit(&mut self) {
        if let Repr::Heap(r) = &self.repr {
            let (len, cap) = (usize::from(r.len), r.cap());
            if let Some(inline) = self.inline() {
                self.repr = inline;
            } else if len.max(Self::MIN) < cap {
                self.move_to_heap(len, None);
            }
        }
    }

    fn clear(&mut self) {
        *self = GrowLog::default();
    }

    fn len(&self) -> usize {
        match &self.repr {
            Repr::Inline { len, .. } => usize::from(*len),
            Repr::Heap(r) => usize::from(r.len),
        }
    }

    fn iter(&self) -> impl Iterator<Item = Tick> + '_ {
        (0..self.len()).filter_map(move |i| self.at(i))
    }
}

#[cfg(all(feature = "alloc", feature = "defmt"))]
impl<const W: usize> defmt::Format for GrowLog<W> {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(
            f,
            "GrowLog {{ len: {=usize}, newest: {=?} }}",
            self.len(),
            self.newest()
        );
    }
}

#[cfg(feature = "defmt")]
impl<const C: usize> defmt::Format for Log<C> {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(
            f,
            "Log {{ len: {=usize}, newest: {=?} }}",
            self.len,
            self.newest()
        );
    }
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    #![allow(clippy::arithmetic_side_effects)]
    use super::*;

    /// The module doc's example.
    #[test]
    fn log_doc_example() {
        let mut log = Log::<4>::new();
        for t in [10, 20, 30] {
            log.push(t);
        }
        log.prune(35, 20); // window (15, 35]: 10 leaves
        assert_eq!((log.len(), log.oldest()), (2, Some(20)));
    }

    /// `remove_one` takes out one event equal to `t`, keeping the order.
    #[test]
    fn remove_one_keeps_the_rest_in_order() {
        let mut log = Log::<8>::new();
        for t in [1, 2, 2, 5, 9] {
            log.push(t);
        }
        assert!(log.remove_one(2));
        assert!(log.iter().eq([1, 2, 5, 9]));
        assert!(log.remove_one(9));
        assert!(!log.remove_one(7));
        assert!(log.iter().eq([1, 2, 5]));
    }

    /// A growing log answers exactly as the fixed one under the same
    /// pushes, prunes, truncations and clears (with gaps too wide for
    /// inline offsets or a narrow ring's), and its buffer follows use.
    #[test]
    fn grow_log_matches_fixed_log() {
        let mut fixed = Log::<40>::new();
        let mut grow = GrowLog::<40>::new();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut now = 0;
        let mut spilled = 0usize;
        let (mut narrow, mut wide) = (0usize, 0usize);
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Now and then a gap wider than an inline offset (2^32 ticks
            // after two of them), so logs spill to the heap for distance.
            now += if x % 61 == 0 { 1 << 31 } else { x % 7 };
            match x % 100 {
                0..=69 => {
                    fixed.push(now);
                    grow.push(now);
                }
                70..=89 => {
                    let w = if x % 3 == 0 { 1 << 33 } else { x % 200 };
                    fixed.prune(now, w);
                    grow.prune(now, w);
                }
                90..=93 => {
                    fixed.fit();
                    grow.fit();
                    let cap = grow.heap_cap();
                    assert!(cap == 0 || cap == grow.len().max(4), "fit: {cap}");
                }
                94..=97 => {
                    let n = (x % 50) as usize;
                    fixed.truncate_front(n);
                    grow.truncate_front(n);
                }
                98 => {
                    // An event that is there (a middle one when there are
                    // several), or one that is not.
                    let t = fixed.iter().nth(fixed.len() / 2).unwrap_or(now + 1);
                    let before = fixed.len();
                    let removed = fixed.remove_one(t);
                    assert_eq!(removed, grow.remove_one(t));
                    assert_eq!(fixed.len(), before - usize::from(removed));
                }
                _ => {
                    fixed.clear();
                    grow.clear();
                }
            }
            assert!(fixed.iter().eq(grow.iter()));
            assert_eq!(fixed.len(), grow.len());
            assert_eq!(fixed.oldest(), grow.oldest());
            assert_eq!(fixed.newest(), grow.newest());
            assert_eq!(fixed.count(now, 50), grow.count(now, 50));
            let cap = grow.heap_cap();
            assert!(cap <= 40 && (cap == 0 || grow.len() <= cap));
            assert!(
                cap == 0 || grow.len() * 4 > cap,
                "len {} cap {cap}",
                grow.len()
            );
            assert!(cap > 0 || grow.len() <= INLINE);
            spilled += usize::from(cap > 0 && grow.len() <= INLINE && grow.len() >= 2);
            narrow += usize::from(cap > 0 && grow.narrow());
            wide += usize::from(cap > 0 && !grow.narrow());
        }
        assert!(spilled > 0, "no log went to the heap for distance");
        assert!(
            narrow > 0 && wide > 0,
            "rings: {narrow} narrow, {wide} wide"
        );
    }

    /// A spilled ring of 32-bit offsets: rebased (still narrow) when a new
    /// event is too far from its base but not from its oldest event,
    /// widened to full ticks when it is too far from the oldest too, and
    /// narrow again once the far events are gone; every time exact.
    #[test]
    fn spilled_ring_rebases_widens_and_narrows() {
        const FAR: u64 = u32::MAX as u64;
        let mut log = GrowLog::<64>::new();
        let mut want = Log::<64>::new();
        let push = |log: &mut GrowLog<64>, want: &mut Log<64>, t: u64| {
            log.push(t);
            want.push(t);
            assert!(log.iter().eq(want.iter()), "{t}");
        };
        let e = 1u64 << 40;
        for k in 0..12 {
            push(&mut log, &mut want, e + k);
        }
        assert!(log.heap_cap() > 0 && log.narrow());
        // Drop the oldest: the base stays at e, the oldest is now e + 6.
        for _ in 0..6 {
            log.pop_raw();
            want.pop_oldest();
        }
        // Too far from the base, not from the oldest: rebased, narrow.
        push(&mut log, &mut want, e + 6 + FAR);
        assert!(log.narrow(), "rebased");
        // Too far from the oldest as well: widened.
        push(&mut log, &mut want, e + 7 + FAR + FAR);
        assert!(log.heap_cap() > 0 && !log.narrow(), "widened");
        // The far events leave; the rest fits offsets again.
        log.truncate_front(1);
        want.truncate_front(1);
        for k in 1..20 {
            push(&mut log, &mut want, e + 7 + FAR + FAR + k);
        }
        assert!(log.heap_cap() > 0 && log.narrow(), "narrow again");
        assert_eq!(log.len(), 20);
    }

    /// The compact ring: order, push when full, wrap, rebase, and only
    /// events more than MAX_SPAN before a new one dropped.
    #[test]
    fn compact_log_ring_wraps_rebases_and_drops_only_beyond_the_span() {
        const SPAN: u64 = CompactLog::<4>::MAX_SPAN;
        let mut log = CompactLog::<4>::new();
        assert!(log.is_empty() && log.oldest().is_none() && log.newest().is_none());
        let e = 1u64 << 40;
        for t in [e, e + 1, e + 5, e + 9] {
            log.push(t);
        }
        assert!(log.iter().eq([e, e + 1, e + 5, e + 9]));
        // Full: the oldest goes, the ring wraps.
        log.push(e + 10);
        log.push(e + 11);
        assert!(log.iter().eq([e + 5, e + 9, e + 10, e + 11]));
        assert_eq!((log.oldest(), log.newest()), (Some(e + 5), Some(e + 11)));
        // An event exactly MAX_SPAN after the oldest: nothing dropped, and
        // the base moves up to the oldest (its offset no longer fits from
        // the old base e).
        log.pop_oldest();
        log.pop_oldest();
        assert!(log.iter().eq([e + 10, e + 11]));
        log.push(e + 10 + SPAN);
        assert!(log.iter().eq([e + 10, e + 11, e + 10 + SPAN]));
        assert_eq!(log.base(), e + 10, "rebased to the oldest");
        // One tick further from e + 10: only e + 10 is beyond the span.
        log.push(e + 11 + SPAN);
        assert!(log.iter().eq([e + 11, e + 10 + SPAN, e + 11 + SPAN]));
        assert_eq!(log.base(), e + 11);
        // Far in the future: everything older goes, the base follows.
        log.push(e * 3);
        assert!(log.iter().eq([e * 3]));
        assert_eq!(log.base(), e * 3);
        log.clear();
        assert!(log.is_empty());
        log.push(7);
        assert!(log.iter().eq([7]));
        // A zero-capacity log keeps nothing.
        let mut z = CompactLog::<0>::new();
        z.push(1);
        assert!(z.is_empty());
    }

    /// Under random pushes, prunes, truncations, removals and clears with
    /// gaps of up to 2^31 ticks, the compact log holds exactly what
    /// [`Log`] holds after dropping events more than MAX_SPAN before each
    /// push, and answers every lookback of at most MAX_SPAN as [`Log`] does.
    #[test]
    fn compact_log_matches_fixed_log_within_its_span() {
        const SPAN: u64 = CompactLog::<16>::MAX_SPAN;
        let mut fixed = Log::<16>::new();
        let mut compact = CompactLog::<16>::new();
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut now = 1u64 << 48;
        let mut rebased = 0usize;
        for _ in 0..50_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            now += match x % 40 {
                0 => 1 << 31,
                1 => SPAN,
                _ => x % 1000,
            };
            match x % 100 {
                0..=69 => {
                    let before = compact.base();
                    fixed.push(now);
                    // What the compact log may forget: events more than
                    // MAX_SPAN before the new one.
                    while fixed.oldest().is_some_and(|o| now - o > SPAN) {
                        fixed.pop_oldest();
                    }
                    compact.push(now);
                    rebased += usize::from(compact.base() != before && compact.len() > 1);
                }
                70..=89 => {
                    let w = 1 + x % SPAN;
                    fixed.prune(now, w);
                    compact.prune(now, w);
                }
                90..=95 => {
                    let n = (x % 20) as usize;
                    fixed.truncate_front(n);
                    compact.truncate_front(n);
                }
                96..=98 => {
                    let t = fixed.iter().nth(fixed.len() / 2).unwrap_or(now + 1);
                    assert_eq!(fixed.remove_one(t), compact.remove_one(t));
                }
                _ => {
                    fixed.clear();
                    compact.clear();
                }
            }
            assert!(fixed.iter().eq(compact.iter()));
            assert_eq!(fixed.len(), compact.len());
            assert_eq!(fixed.oldest(), compact.oldest());
            assert_eq!(fixed.newest(), compact.newest());
            for w in [1, 50, 1 << 20, SPAN] {
                assert_eq!(fixed.count(now, w), compact.count(now, w));
                assert_eq!(fixed.oldest_in(now, w), compact.oldest_in(now, w));
            }
        }
        assert!(rebased > 0, "no rebase happened");
    }
}
