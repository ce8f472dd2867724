//! Sliding logs: timestamps in a fixed-capacity deque, oldest first.
//!
//! An event counts iff it lies in `(now - window, now]`. Logs are kept in
//! time order because a limiter never moves its clock backwards.

use heapless::Deque;

use crate::time::{within, Tick};

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

    /// Events in the window at `now`, without changing anything.
    pub fn count(&self, now: Tick, window: u64) -> u32 {
        let n = self
            .times
            .iter()
            .filter(|&&t| within(now, t, window))
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Drop events that left the window.
    pub fn prune(&mut self, now: Tick, window: u64) {
        while let Some(&t) = self.times.front() {
            if within(now, t, window) {
                break;
            }
            self.times.pop_front();
        }
    }

    /// Oldest event still in the window.
    pub fn oldest_in(&self, now: Tick, window: u64) -> Option<Tick> {
        self.times.iter().copied().find(|&t| within(now, t, window))
    }

    /// Oldest stored event (after a [`prune`](Self::prune): the oldest in
    /// the window).
    pub fn oldest(&self) -> Option<Tick> {
        self.times.front().copied()
    }

    /// Newest event.
    pub fn newest(&self) -> Option<Tick> {
        self.times.back().copied()
    }

    /// Append, dropping the oldest event when full.
    pub fn push(&mut self, t: Tick) {
        if self.times.is_full() {
            self.times.pop_front();
        }
        // Cannot fail: room was made above (a zero-capacity log keeps nothing).
        let _ = self.times.push_back(t);
    }

    /// Keep at most `n` newest events.
    pub fn truncate_front(&mut self, n: usize) {
        while self.times.len() > n {
            self.times.pop_front();
        }
    }

    /// Forget everything.
    pub fn clear(&mut self) {
        self.times.clear();
    }

    /// Whether no event is stored.
    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    /// Stored events, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = Tick> + '_ {
        self.times.iter().copied()
    }

    /// Number of stored events (in window or not).
    pub fn len(&self) -> usize {
        self.times.len()
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
