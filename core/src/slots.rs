//! Rule 7: concurrency slots, as tokens with a time to live.
//!
//! A key holds at most `slots` tokens at once. A token not handed back
//! within `slot_ttl` is reclaimed, so a lost token (a crashed task, a
//! dropped future) cannot keep a slot forever.

use crate::key::Key;
use crate::time::{within, Tick};

/// Most slots a key can be configured for.
pub const MAX_SLOTS: usize = 4;

/// Proof of a held slot. Hand it back with `release_slot`; it is not
/// `Clone`, so it is released at most once.
#[derive(Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SlotToken {
    pub(crate) key: Key,
    pub(crate) id: u32,
}

impl SlotToken {
    /// The key whose slot this is.
    pub fn key(&self) -> Key {
        self.key
    }
}

/// One key's slots.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub(crate) struct Slots {
    /// `(id, taken_at)`; id 0 marks a free slot (ids start at 1).
    held: [(u32, Tick); MAX_SLOTS],
}

const FREE: (u32, Tick) = (0, 0);

impl Slots {
    /// No slot held.
    pub(crate) const fn new() -> Self {
        Slots {
            held: [FREE; MAX_SLOTS],
        }
    }

    /// Drop slots older than `ttl`.
    pub(crate) fn reclaim(&mut self, now: Tick, ttl: u64) {
        for s in self.held.iter_mut() {
            if s.0 != 0 && !within(now, s.1, ttl) {
                *s = FREE;
            }
        }
    }

    /// Slots held and not yet expired at `now`.
    pub(crate) fn live(&self, now: Tick, ttl: u64) -> u32 {
        let n = self
            .held
            .iter()
            .filter(|s| s.0 != 0 && within(now, s.1, ttl))
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Take a slot with `id` if fewer than `limit` are live.
    pub(crate) fn acquire(&mut self, id: u32, now: Tick, ttl: u64, limit: u32) -> bool {
        self.reclaim(now, ttl);
        if self.live(now, ttl) >= limit {
            return false;
        }
        match self.held.iter_mut().find(|s| s.0 == 0) {
            Some(free) if id != 0 => {
                *free = (id, now);
                true
            }
            _ => false,
        }
    }

    /// Hand back slot `id`; false if it was already reclaimed.
    pub(crate) fn release(&mut self, id: u32) -> bool {
        for s in self.held.iter_mut() {
            if id != 0 && s.0 == id {
                *s = FREE;
                return true;
            }
        }
        false
    }
}
