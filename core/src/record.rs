//! Export and import of all state as plain records with wall-clock times,
//! for persistence (host: SQLite) and for firmware flash.
//!
//! Times in records are Unix milliseconds, so a restart restores the
//! *remaining* block, ban and lock time whatever the new uptime. In-flight
//! slots are not exported. Username hashes depend on the [`Seed`](crate::Seed):
//! keep it with the records.
//!
//! **Import keeps each time's wall-clock age.** A time `a` ms before
//! `clock.unix_ms` becomes the tick `a` ms before `clock.now`, even when
//! that is before the new process's (or boot's) clock zero: the limiter's
//! ticks run [`MAX_LOOKBACK`](crate::MAX_LOOKBACK) ahead of the caller's
//! `Instant`, and every configured lookback is at most that long. A time
//! older still is placed at the limiter's tick 0, which at any `now` is
//! older than every lookback, so it counts for nothing, as its true time
//! would. So after a restart a key whose requests or failures left the
//! window is clean, violations older than `violation_memory` or
//! `ban_lookback` no longer count, an old block start no longer escalates,
//! and a running block or lock keeps its remaining time. Times keep
//! millisecond resolution: an export truncates each age to whole
//! milliseconds (an event reads up to 1 ms younger, never older).

use crate::{Duration, Instant};

use crate::entry::{ColdPart, EntryRef, VIOLATION_LOG};
use crate::fixed_vec::FixedVec;
use crate::key::Key;
use crate::limiter::{Hold, Limiter};
use crate::store::{EntryOf, Store};
use crate::time::{ms_to_ticks, tick, ticks_to_ms, OptTick, Tick};
use crate::window::{Events, TimeLog};

/// Ties the limiter's monotonic clock to wall-clock time at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct WallClock {
    /// The monotonic instant…
    pub now: Instant,
    /// …and the Unix time in milliseconds at that instant.
    pub unix_ms: u64,
}

impl WallClock {
    /// Unix ms of tick `t`.
    pub(crate) fn unix_of(self, t: Tick) -> u64 {
        let now = tick(self.now);
        if t <= now {
            self.unix_ms
                .saturating_sub(ticks_to_ms(now.saturating_sub(t)))
        } else {
            self.unix_ms
                .saturating_add(ticks_to_ms(t.saturating_sub(now)))
        }
    }

    /// Tick of Unix ms `ms`; tick 0 ("older than every lookback") for a
    /// time before the limiter's tick 0 (see the module doc).
    pub(crate) fn tick_of(self, ms: u64) -> Tick {
        let now = tick(self.now);
        if ms <= self.unix_ms {
            now.saturating_sub(ms_to_ticks(self.unix_ms.saturating_sub(ms)))
        } else {
            now.saturating_add(ms_to_ticks(ms.saturating_sub(self.unix_ms)))
        }
    }
}

/// One key's state, with Unix-millisecond times.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Record<const W: usize> {
    /// Whose state.
    pub key: Key,
    /// Counted events (requests or failures), oldest first.
    pub log: FixedVec<u64, W>,
    /// Violations, oldest first.
    pub violations: FixedVec<u64, VIOLATION_LOG>,
    /// End of the current or last block.
    pub block_until: Option<u64>,
    /// Blocks so far within the memory.
    pub block_level: u8,
    /// Start of the last block.
    pub last_block_start: Option<u64>,
    /// Permanently banned.
    pub banned: bool,
    /// End of the current or last lock.
    pub lock_until: Option<u64>,
}

impl<const W: usize> Record<W> {
    /// A record with nothing but a key.
    pub fn empty(key: Key) -> Self {
        Record {
            key,
            log: FixedVec::new(),
            violations: FixedVec::new(),
            block_until: None,
            block_level: 0,
            last_block_start: None,
            banned: false,
            lock_until: None,
        }
    }

    /// Whether the record holds a ban, or a block or lock still running at `unix_ms`.
    pub fn is_pinned_at(&self, unix_ms: u64) -> bool {
        self.banned
            || self.block_until.is_some_and(|u| u > unix_ms)
            || self.lock_until.is_some_and(|u| u > unix_ms)
    }

    /// What holds this key at `unix_ms`, if anything: the record's form of
    /// [`Limiter::for_each_hold`] (through the same [`Hold::of`]).
    pub fn hold(&self, unix_ms: u64) -> Option<Hold> {
        let left = |u: Option<u64>| {
            u.filter(|&u| u > unix_ms)
                .map(|u| Duration::from_millis(u.saturating_sub(unix_ms)))
        };
        Hold::of(
            &self.key,
            self.banned,
            left(self.block_until),
            left(self.lock_until),
        )
    }

    /// Lift everything on this key: [`Limiter::lift`]'s rule for one key,
    /// on a record (for tools that edit a store without a limiter): the
    /// ban, block, escalation, violation history, lock and log are
    /// forgotten. True if a ban, block or lock was recorded (running or
    /// not).
    pub fn lift(&mut self) -> bool {
        let held = self.banned || self.block_until.is_some() || self.lock_until.is_some();
        self.banned = false;
        self.block_until = None;
        self.block_level = 0;
        self.last_block_start = None;
        self.violations.clear();
        self.lock_until = None;
        self.log.clear();
        held
    }

    fn check(&self) -> Result<(), &'static str> {
        if !self.log.windows(2).all(|p| matches!(p, [a, b] if a <= b)) {
            return Err("log times out of order");
        }
        if !self
            .violations
            .windows(2)
            .all(|p| matches!(p, [a, b] if a <= b))
        {
            return Err("violation times out of order");
        }
        if self.block_level > 64 {
            return Err("block level above 64");
        }
        if self.block_until.is_some() != self.last_block_start.is_some() {
            return Err("block end without block start (or the reverse)");
        }
        if let (Some(s), Some(u)) = (self.last_block_start, self.block_until) {
            if u < s {
                return Err("block ends before it starts");
            }
        }
        if self.holds_request_state() && self.lock_until.is_some() {
            // No key kind holds both: a request key is blocked and banned,
            // a login key locked (the limiter keeps one of the two).
            return Err("violations, block or ban together with a lock");
        }
        Ok(())
    }

    /// Whether violations, a block (level) or a ban are recorded: the
    /// request keys' half of the state.
    fn holds_request_state(&self) -> bool {
        !self.violations.is_empty()
            || self.block_until.is_some()
            || self.last_block_start.is_some()
            || self.block_level != 0
            || self.banned
    }
}

/// Why an import was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ImportError {
    /// More records than the table holds.
    TooMany {
        /// Records offered.
        records: usize,
        /// Table capacity.
        capacity: usize,
    },
    /// A record is inconsistent.
    Malformed {
        /// Position of the record.
        index: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// Two records for one key (the limiter is left empty).
    Duplicate {
        /// Position of the second record.
        index: usize,
    },
}

impl core::fmt::Display for ImportError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ImportError::TooMany { records, capacity } => {
                write!(f, "{records} records do not fit a table of {capacity}")
            }
            ImportError::Malformed { index, reason } => write!(f, "record {index}: {reason}"),
            ImportError::Duplicate { index } => write!(f, "record {index}: duplicate key"),
        }
    }
}

fn to_record<const W: usize>(k: &Key, e: &impl EntryRef, clock: WallClock) -> Record<W> {
    let mut r = Record::empty(*k);
    for t in e.log().iter() {
        let _ = r.log.push(clock.unix_of(t));
    }
    let e = e.cold();
    for t in e.violations().into_iter().flat_map(TimeLog::iter) {
        let _ = r.violations.push(clock.unix_of(t));
    }
    r.block_until = e.block_until().get().map(|t| clock.unix_of(t));
    r.block_level = e.block_level();
    r.last_block_start = e.last_block_start().get().map(|t| clock.unix_of(t));
    r.banned = e.banned();
    r.lock_until = e.lock_until().get().map(|t| clock.unix_of(t));
    r
}

impl<S: Store<W>, const W: usize> Limiter<S, W> {
    /// The record of one key, if held.
    pub fn record(&self, key: &Key, clock: WallClock) -> Option<Record<W>> {
        self.head.store.get(key).map(|e| to_record(key, &e, clock))
    }

    /// Hand every entry to `f` as a record (order unspecified).
    pub fn export(&self, clock: WallClock, mut f: impl FnMut(&Record<W>)) {
        self.head
            .store
            .for_each(&mut |k, e| f(&to_record(k, &e, clock)));
    }

    /// Replace all state with `records` (in export order). Every record is
    /// checked before anything changes; a refused import leaves the limiter
    /// as it was, except for duplicate keys, which are found while loading
    /// and leave it empty. Past times map back through `clock`; event times
    /// in the future are clamped to `clock.now`.
    pub fn import(
        &mut self,
        clock: WallClock,
        records: &[Record<W>],
    ) -> Result<usize, ImportError> {
        if records.len() > self.head.store.capacity() {
            return Err(ImportError::TooMany {
                records: records.len(),
                capacity: self.head.store.capacity(),
            });
        }
        for (index, r) in records.iter().enumerate() {
            r.check()
                .map_err(|reason| ImportError::Malformed { index, reason })?;
        }
        let now = self.clock(clock.now);
        // Everything is replaced by what was stored: nothing to write back.
        self.stats.pin_changes = self.stats.pin_changes.wrapping_add(1);
        self.changed = crate::Changed::default();
        self.head.store.clear();
        for (index, r) in records.iter().enumerate() {
            if self.head.store.get(&r.key).is_some() {
                self.head.store.clear();
                return Err(ImportError::Duplicate { index });
            }
            let mut entry = EntryOf::<S, W>::new();
            for &t in r.log.iter() {
                entry.log.push(clock.tick_of(t).min(now));
            }
            // `check` refused a record holding both halves.
            if r.holds_request_state() {
                let e = entry.cold.make().request_mut();
                for &t in r.violations.iter() {
                    e.violations.push(clock.tick_of(t).min(now));
                }
                e.block_until = r.block_until.map(|t| clock.tick_of(t)).into();
                e.block_level = r.block_level;
                e.last_block_start = r.last_block_start.map(|t| clock.tick_of(t).min(now)).into();
                e.banned = r.banned;
            }
            if let Some(u) = r.lock_until {
                entry.cold.make().login_mut().lock_until = OptTick::some(clock.tick_of(u));
            }
            entry.cold.shrink();
            if self.head.store.insert(r.key, entry).is_err() {
                self.head.store.clear();
                return Err(ImportError::TooMany {
                    records: records.len(),
                    capacity: self.head.store.capacity(),
                });
            }
        }
        Ok(records.len())
    }
}

impl core::error::Error for ImportError {}
