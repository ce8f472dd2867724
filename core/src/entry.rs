//! The state kept per key.

use crate::slots::Slots;
use crate::time::{running, within, Tick};
use crate::window::Log;

/// Violation timestamps kept per key; `block_after` and `ban_after` are
/// at most this.
pub const VIOLATION_LOG: usize = 16;

/// Everything one key remembers. Which parts are used depends on the key's
/// [`KeyKind`](crate::KeyKind): request keys use the log for requests and the
/// violation/block/ban parts; login keys use the log for failures, the lock
/// and (ip keys) the slots.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Entry<const W: usize> {
    pub(crate) log: Log<W>,
    pub(crate) violations: Log<VIOLATION_LOG>,
    pub(crate) block_until: Option<Tick>,
    pub(crate) block_level: u8,
    pub(crate) last_block_start: Option<Tick>,
    pub(crate) banned: bool,
    pub(crate) lock_until: Option<Tick>,
    pub(crate) slots: Slots,
}

impl<const W: usize> Entry<W> {
    /// A fresh entry.
    pub fn new() -> Self {
        Entry::default()
    }

    /// Permanently banned.
    pub fn is_banned(&self) -> bool {
        self.banned
    }

    /// End of the current or last temporary block.
    pub fn block_deadline(&self) -> Option<embassy_time::Instant> {
        self.block_until.map(embassy_time::Instant::from_ticks)
    }

    /// End of the current or last login lock.
    pub fn lock_deadline(&self) -> Option<embassy_time::Instant> {
        self.lock_until.map(embassy_time::Instant::from_ticks)
    }

    /// Ban, block end and lock end: what persistence must not lose.
    pub fn pin_state(&self) -> (bool, Option<u64>, Option<u64>) {
        (self.banned, self.block_until, self.lock_until)
    }

    /// Forget any ban, block, escalation and violation history (the
    /// operator's unban); true if a ban or block was recorded.
    pub(crate) fn clear_block_and_ban(&mut self) -> bool {
        let had = self.banned || self.block_until.is_some();
        self.banned = false;
        self.block_until = None;
        self.block_level = 0;
        self.last_block_start = None;
        self.violations.clear();
        had
    }

    /// A block in force at `now` (ticks).
    pub(crate) fn blocked(&self, now: Tick) -> bool {
        matches!(self.block_until, Some(u) if running(u, now))
    }

    /// A lock in force at `now`.
    pub(crate) fn locked(&self, now: Tick) -> bool {
        matches!(self.lock_until, Some(u) if running(u, now))
    }

    /// Holds a ban, block, lock or live slot: never evicted.
    pub(crate) fn pinned(&self, now: Tick, slot_ttl: u64) -> bool {
        self.banned || self.blocked(now) || self.locked(now) || self.slots.live(now, slot_ttl) > 0
    }

    /// Nothing left that could change a decision at or after `now`, given
    /// the window of its log and the block memory.
    pub(crate) fn idle(&self, now: Tick, log_window: u64, memory: u64, slot_ttl: u64) -> bool {
        !self.pinned(now, slot_ttl)
            && self.log.count(now, log_window) == 0
            && self.violations.count(now, memory) == 0
            && !matches!(self.last_block_start, Some(s) if within(now, s, memory))
    }
}
