//! Sliding logs: timestamps oldest first, in a fixed-capacity deque
//! ([`Log`], inline, no allocator) or a ring that grows with use up to its
//! cap ([`GrowLog`], feature `alloc`: a key with two requests in its window
//! holds two timestamps' worth, not `W`). Both are a [`TimeLog`].
//!
//! An event counts iff it lies in `(now - window, now]`. Logs are kept in
//! time order because a limiter never moves its clock backwards.
//!
//! ```
//! use portcullis_core::window::{Log, TimeLog};
//! let mut log = Log::<4>::new();
//! for t in [10, 20, 30] {
//!     log.push(t);
//! }
//! log.prune(35, 20); // window (15, 35]: 10 leaves
//! assert_eq!((log.len(), log.oldest()), (2, Some(20)));
//! ```

use heapless::Deque;

use crate::time::{within, Tick};

/// What the rules need of a sliding log. Events are pushed in time order.
pub trait TimeLog: Default + Clone + core::fmt::Debug + PartialEq {
    /// Most events held; a push beyond drops the oldest.
    const CAPACITY: usize;
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

/// A sliding log of at most `C` timestamps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Log<const C: usize> {
    times: Deque<Tick, C>,
}

impl<const C: usize> Log<C> {
    /// An empty log.
    pub const fn new() -> Self {
        Log {
            times: Deque::new(),
        }
    }
}

impl<const C: usize> TimeLog for Log<C> {
    const CAPACITY: usize = C;

    fn oldest(&self) -> Option<Tick> {
        self.times.front().copied()
    }

    fn newest(&self) -> Option<Tick> {
        self.times.back().copied()
    }

    fn pop_oldest(&mut self) {
        self.times.pop_front();
    }

    fn push(&mut self, t: Tick) {
        if self.times.is_full() {
            self.times.pop_front();
        }
        // Cannot fail: room was made above (a zero-capacity log keeps nothing).
        let _ = self.times.push_back(t);
    }

    fn clear(&mut self) {
        self.times.clear();
    }

    fn len(&self) -> usize {
        self.times.len()
    }

    fn iter(&self) -> impl Iterator<Item = Tick> + '_ {
        self.times.iter().copied()
    }
}

/// A ring of at most `W` timestamps on the heap that grows (doubling from
/// 4) as events arrive and shrinks as they leave (feature `alloc`): memory
/// follows use, with 16 bytes of header when empty.
#[cfg(feature = "alloc")]
#[derive(Clone, Debug, Default)]
pub struct GrowLog<const W: usize> {
    buf: alloc::boxed::Box<[Tick]>,
    head: u16,
    len: u16,
}

#[cfg(feature = "alloc")]
impl<const W: usize> GrowLog<W> {
    const VALID: () = assert!(W <= u16::MAX as usize, "GrowLog: W must fit a u16");
    const MIN: usize = if W < 4 { W } else { 4 };

    /// An empty log (no allocation).
    pub fn new() -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::VALID;
        GrowLog::default()
    }

    fn at(&self, i: usize) -> Option<Tick> {
        let cap = self.buf.len();
        let j = usize::from(self.head).wrapping_add(i).checked_rem(cap)?;
        self.buf.get(j).copied()
    }

    /// Drop the oldest event, keeping the buffer.
    fn pop_raw(&mut self) {
        if self.len == 0 {
            return;
        }
        self.len = self.len.saturating_sub(1);
        let next = usize::from(self.head)
            .wrapping_add(1)
            .checked_rem(self.buf.len())
            .unwrap_or(0);
        self.head = u16::try_from(next).unwrap_or(0);
    }

    /// Cut the buffer to twice the events when a quarter or less of it is used (never below
    /// the minimum: a quiet key that comes back does not reallocate).
    fn shrink(&mut self) {
        let cap = self.buf.len();
        let len = usize::from(self.len);
        if cap > Self::MIN && len.saturating_mul(4) <= cap {
            self.resize(len.saturating_mul(2).max(Self::MIN));
        }
    }

    /// Move the events into a buffer of `cap` (>= len) slots, oldest first.
    fn resize(&mut self, cap: usize) {
        let mut buf = alloc::vec::Vec::with_capacity(cap);
        buf.extend(self.iter());
        buf.resize(cap, 0);
        self.buf = buf.into_boxed_slice();
        self.head = 0;
    }
}

#[cfg(feature = "alloc")]
impl<const W: usize> PartialEq for GrowLog<W> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

#[cfg(feature = "alloc")]
impl<const W: usize> Eq for GrowLog<W> {}

#[cfg(feature = "alloc")]
impl<const W: usize> TimeLog for GrowLog<W> {
    const CAPACITY: usize = W;

    fn oldest(&self) -> Option<Tick> {
        if self.len == 0 {
            return None;
        }
        self.at(0)
    }

    fn newest(&self) -> Option<Tick> {
        usize::from(self.len)
            .checked_sub(1)
            .and_then(|i| self.at(i))
    }

    fn pop_oldest(&mut self) {
        self.pop_raw();
        self.shrink();
    }

    fn prune(&mut self, now: Tick, window: u64) {
        while let Some(t) = self.oldest() {
            if within(now, t, window) {
                break;
            }
            self.pop_raw();
        }
        self.shrink();
    }

    fn truncate_front(&mut self, n: usize) {
        while usize::from(self.len) > n {
            self.pop_raw();
        }
        self.shrink();
    }

    fn push(&mut self, t: Tick) {
        if W == 0 {
            return;
        }
        if usize::from(self.len) >= W {
            self.pop_oldest();
        }
        let cap = self.buf.len();
        let len = usize::from(self.len);
        if len >= cap {
            self.resize(cap.saturating_mul(2).clamp(Self::MIN, W));
        }
        let cap = self.buf.len();
        let j = usize::from(self.head)
            .wrapping_add(len)
            .checked_rem(cap)
            .unwrap_or(0);
        if let Some(slot) = self.buf.get_mut(j) {
            *slot = t;
            self.len = self.len.saturating_add(1);
        }
    }

    fn clear(&mut self) {
        *self = GrowLog::default();
    }

    fn len(&self) -> usize {
        usize::from(self.len)
    }

    fn iter(&self) -> impl Iterator<Item = Tick> + '_ {
        (0..usize::from(self.len)).filter_map(move |i| self.at(i))
    }
}

#[cfg(all(feature = "alloc", feature = "defmt"))]
impl<const W: usize> defmt::Format for GrowLog<W> {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(
            f,
            "GrowLog {{ len: {=u16}, newest: {=?} }}",
            self.len,
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
            self.times.len(),
            self.newest()
        );
    }
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    #![allow(clippy::arithmetic_side_effects)]
    use super::*;

    /// A growing log answers exactly as the fixed one under the same
    /// pushes, prunes, truncations and clears, and its buffer follows use.
    #[test]
    fn grow_log_matches_fixed_log() {
        let mut fixed = Log::<40>::new();
        let mut grow = GrowLog::<40>::new();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut now = 0;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            now += x % 7;
            match x % 100 {
                0..=69 => {
                    fixed.push(now);
                    grow.push(now);
                }
                70..=89 => {
                    let w = x % 200;
                    fixed.prune(now, w);
                    grow.prune(now, w);
                }
                90..=97 => {
                    let n = (x % 50) as usize;
                    fixed.truncate_front(n);
                    grow.truncate_front(n);
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
            let cap = grow.buf.len();
            assert!(cap <= 40 && grow.len() <= cap);
            assert!(
                cap <= 4 || grow.len() * 4 > cap,
                "len {} cap {cap}",
                grow.len()
            );
        }
    }
}
