//! The state kept per key: a hot sliding log, and a cold part most keys
//! never use.
//!
//! Every key has a log; only keys that were denied, blocked, banned, locked
//! or hold slots need the rest. [`Entry`] therefore keeps that rest in a
//! [`ColdPart`]: inline ([`Cold`], the fixed tables: no allocator) or boxed
//! on first use ([`BoxedCold`], feature `alloc`: a million quiet keys cost
//! one pointer each instead of the whole record). An absent cold part and a
//! default one mean the same thing.

use crate::slots::Slots;
use crate::time::{running, within, OptTick, Tick};
use crate::window::{CompactLog, Log, TimeLog};

/// Violation timestamps kept per key; `block_after` and `ban_after` are
/// at most this.
pub const VIOLATION_LOG: usize = 16;

/// The rarely used part of an entry: violations, block, ban, lock, slots.
/// `V` is the violation log: [`Log`] in the growable table's boxed part,
/// [`CompactLog`] inline in the fixed tables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Cold<V = Log<VIOLATION_LOG>> {
    pub(crate) violations: V,
    pub(crate) block_until: OptTick,
    pub(crate) block_level: u8,
    pub(crate) last_block_start: OptTick,
    pub(crate) banned: bool,
    pub(crate) lock_until: OptTick,
    pub(crate) slots: Slots,
}

/// The fixed tables' cold part: inline, violations in a [`CompactLog`].
pub type CompactCold = Cold<CompactLog<VIOLATION_LOG>>;

/// The cold part with nothing in it.
static EMPTY: Cold = Cold {
    violations: Log::new(),
    block_until: OptTick::NONE,
    block_level: 0,
    last_block_start: OptTick::NONE,
    banned: false,
    lock_until: OptTick::NONE,
    slots: Slots::new(),
};

/// The compact cold part with nothing in it.
static EMPTY_COMPACT: CompactCold = Cold {
    violations: CompactLog::new(),
    block_until: OptTick::NONE,
    block_level: 0,
    last_block_start: OptTick::NONE,
    banned: false,
    lock_until: OptTick::NONE,
    slots: Slots::new(),
};

#[cfg(feature = "alloc")]
impl Cold {
    /// Whether it holds nothing (what an absent cold part means).
    fn is_empty(&self) -> bool {
        *self == EMPTY
    }
}

/// How an [`Entry`] holds its [`Cold`] part.
pub trait ColdPart: Default + Clone + core::fmt::Debug {
    /// The violation log of its cold part.
    type Violations: TimeLog + 'static;
    /// The cold part, if one is held.
    fn get(&self) -> Option<&Cold<Self::Violations>>;
    /// The cold part mutably, if one is held.
    fn get_mut(&mut self) -> Option<&mut Cold<Self::Violations>>;
    /// The cold part, created empty if absent.
    fn make(&mut self) -> &mut Cold<Self::Violations>;
    /// Give the storage back if the cold part holds nothing.
    fn shrink(&mut self);
    /// An empty cold part (what an absent one reads as).
    fn empty() -> &'static Cold<Self::Violations>;
}

/// An inline cold part over the violation log `$v`, empty as `$empty`.
macro_rules! inline_cold {
    ($v:ty, $empty:ident) => {
        impl ColdPart for Cold<$v> {
            type Violations = $v;
            fn get(&self) -> Option<&Cold<$v>> {
                Some(self)
            }
            fn get_mut(&mut self) -> Option<&mut Cold<$v>> {
                Some(self)
            }
            fn make(&mut self) -> &mut Cold<$v> {
                self
            }
            fn shrink(&mut self) {}
            fn empty() -> &'static Cold<$v> {
                &$empty
            }
        }
    };
}

inline_cold!(Log<VIOLATION_LOG>, EMPTY);
inline_cold!(CompactLog<VIOLATION_LOG>, EMPTY_COMPACT);

/// A cold part allocated on first use (feature `alloc`).
#[cfg(feature = "alloc")]
#[derive(Clone, Debug, Default)]
pub struct BoxedCold(Option<alloc::boxed::Box<Cold>>);

#[cfg(feature = "alloc")]
impl ColdPart for BoxedCold {
    type Violations = Log<VIOLATION_LOG>;
    fn get(&self) -> Option<&Cold> {
        self.0.as_deref()
    }
    fn get_mut(&mut self) -> Option<&mut Cold> {
        self.0.as_deref_mut()
    }
    fn make(&mut self) -> &mut Cold {
        self.0.get_or_insert_with(Default::default)
    }
    fn shrink(&mut self) {
        if self.0.as_deref().is_some_and(Cold::is_empty) {
            self.0 = None;
        }
    }
    fn empty() -> &'static Cold {
        &EMPTY
    }
}

#[cfg(all(feature = "alloc", feature = "defmt"))]
impl defmt::Format for BoxedCold {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "{=?}", self.0.as_deref());
    }
}

/// Everything one key remembers. Which parts are used depends on the key's
/// [`KeyKind`](crate::KeyKind): request keys use the log for requests and the
/// violation/block/ban parts; login keys use the log for failures, the lock
/// and (ip keys) the slots.
#[derive(Clone, Debug, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Entry<const W: usize, C: ColdPart = Cold, L: TimeLog = Log<W>> {
    pub(crate) log: L,
    pub(crate) cold: C,
}

impl<const W: usize, C: ColdPart, L: TimeLog> PartialEq for Entry<W, C, L> {
    fn eq(&self, other: &Self) -> bool {
        self.log == other.log && self.cold() == other.cold()
    }
}

impl<const W: usize, C: ColdPart, L: TimeLog> Eq for Entry<W, C, L> {}

impl<const W: usize, C: ColdPart, L: TimeLog> Entry<W, C, L> {
    /// A fresh entry.
    pub fn new() -> Self {
        Entry::default()
    }

    /// The cold part (empty if none is held).
    pub(crate) fn cold(&self) -> &Cold<C::Violations> {
        self.cold.get().unwrap_or_else(|| C::empty())
    }

    /// Permanently banned.
    pub fn is_banned(&self) -> bool {
        self.cold().banned
    }

    /// End of the current or last temporary block.
    pub fn block_deadline(&self) -> Option<embassy_time::Instant> {
        self.cold().block_until.get().map(crate::time::instant)
    }

    /// End of the current or last login lock.
    pub fn lock_deadline(&self) -> Option<embassy_time::Instant> {
        self.cold().lock_until.get().map(crate::time::instant)
    }

    /// Ban, block end and lock end: what persistence must not lose (ends
    /// in the limiter's internal ticks, for comparing; see
    /// [`block_deadline`](Self::block_deadline) for instants).
    pub fn pin_state(&self) -> (bool, Option<u64>, Option<u64>) {
        let c = self.cold();
        (c.banned, c.block_until.get(), c.lock_until.get())
    }

    /// Forget any ban, block, escalation and violation history (the
    /// operator's unban); true if a ban or block was recorded.
    pub(crate) fn clear_block_and_ban(&mut self) -> bool {
        let Some(c) = self.cold.get_mut() else {
            return false;
        };
        let had = c.banned || c.block_until.is_some();
        c.banned = false;
        c.block_until = OptTick::NONE;
        c.block_level = 0;
        c.last_block_start = OptTick::NONE;
        c.violations.clear();
        self.cold.shrink();
        had
    }

    /// Lift a login lock; true if one was recorded.
    pub(crate) fn clear_lock(&mut self) -> bool {
        let had = self
            .cold
            .get_mut()
            .is_some_and(|c| c.lock_until.take().is_some());
        self.cold.shrink();
        had
    }

    /// Lift everything on this key (the operator's "unban", one key of
    /// [`Limiter::lift`](crate::Limiter::lift)): ban, block, escalation,
    /// violation history, lock and the log, so it is allowed at once. True
    /// if a ban, block or lock was recorded (running or not).
    /// [`Record::lift`](crate::Record::lift) is the same rule on a record.
    pub(crate) fn lift(&mut self) -> bool {
        let locked = self.clear_lock();
        let held = self.clear_block_and_ban() || locked;
        self.log.clear();
        held
    }

    /// What holds `key` at `now`, if anything (see [`Hold::of`]).
    pub(crate) fn hold(&self, key: &crate::Key, now: Tick) -> Option<crate::Hold> {
        let c = self.cold.get()?;
        let left = |u: OptTick| {
            u.get()
                .filter(|&u| running(u, now))
                .map(|u| crate::time::until(now, u))
        };
        crate::Hold::of(key, c.banned, left(c.block_until), left(c.lock_until))
    }

    /// Holds a ban, block, lock or live slot: never evicted.
    pub(crate) fn pinned(&self, now: Tick, slot_ttl: u64) -> bool {
        let Some(c) = self.cold.get() else {
            return false;
        };
        c.banned
            || matches!(c.block_until.get(), Some(u) if running(u, now))
            || matches!(c.lock_until.get(), Some(u) if running(u, now))
            || c.slots.live(now, slot_ttl) > 0
    }

    /// Nothing left that could change a decision at or after `now`, given
    /// the window of its log and the block memory.
    pub(crate) fn idle(&self, now: Tick, log_window: u64, memory: u64, slot_ttl: u64) -> bool {
        if self.log.count(now, log_window) != 0 || self.pinned(now, slot_ttl) {
            return false;
        }
        let c = self.cold();
        c.violations.count(now, memory) == 0
            && !matches!(c.last_block_start.get(), Some(s) if within(now, s, memory))
    }
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use super::*;
    use crate::window::GrowLog;

    type MapEntry = Entry<8, BoxedCold, GrowLog<8>>;

    /// The boxed cold part exists only while it holds something, and an
    /// empty one equals an absent one.
    #[test]
    fn boxed_cold_part_comes_and_goes() {
        let mut e = MapEntry::new();
        assert!(e.cold.get().is_none());
        assert!(!e.clear_block_and_ban() && !e.clear_lock());
        e.cold.make().banned = true;
        assert!(e.is_banned() && e.pinned(0, 1));
        assert!(e.clear_block_and_ban());
        assert!(e.cold.get().is_none(), "unban frees the cold part");
        e.cold.make().lock_until = OptTick::some(5);
        assert_eq!(e.pin_state(), (false, None, Some(5)));
        assert!(e.clear_lock());
        assert!(e.cold.get().is_none(), "lifting the lock frees it");
        let mut f = MapEntry::new();
        f.cold.make();
        assert_eq!(e, f);
        // Something left (a violation) keeps the part.
        e.cold.make().violations.push(1);
        e.cold.make().lock_until = OptTick::some(9);
        assert!(e.clear_lock());
        assert!(e.cold.get().is_some());
    }
}
