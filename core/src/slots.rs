//! Rule 7: concurrency slots, as tokens with a time to live.
//!
//! A key holds at most `slots` tokens at once. A token not handed back
//! within `slot_ttl` is reclaimed, so a lost token (a crashed task, a
//! dropped future) cannot keep a slot forever.

use crate::key::Key;
use crate::time::{within, OptTick, Tick};

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

/// One key's slots: ids and the ticks they were taken at, in two arrays
/// of 32-bit words (no padding between a `u32` id and a `u64` tick).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub(crate) struct Slots {
    /// Slot ids; 0 marks a free slot (ids start at 1).
    ids: [u32; MAX_SLOTS],
    /// When each held slot was taken.
    at: [OptTick; MAX_SLOTS],
}

impl Slots {
    /// `(id, taken_at)` of every position.
    fn held(&self) -> impl Iterator<Item = (u32, Tick)> + '_ {
        self.ids
            .iter()
            .zip(self.at.iter())
            .map(|(&id, at)| (id, at.get().unwrap_or(0)))
    }

    /// Drop slots older than `ttl`.
    pub(crate) fn reclaim(&mut self, now: Tick, ttl: u64) {
        for (id, at) in self.ids.iter_mut().zip(self.at.iter_mut()) {
            if *id != 0 && !within(now, at.get().unwrap_or(0), ttl) {
                *id = 0;
                *at = OptTick::NONE;
            }
        }
    }

    /// Slots held and not yet expired at `now`.
    pub(crate) fn live(&self, now: Tick, ttl: u64) -> u32 {
        let n = self
            .held()
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
        match self
            .ids
            .iter_mut()
            .zip(self.at.iter_mut())
            .find(|s| *s.0 == 0)
        {
            Some((free, at)) if id != 0 => {
                *free = id;
                *at = OptTick::some(now);
                true
            }
            _ => false,
        }
    }

    /// Hand back slot `id`; false if it was already reclaimed.
    pub(crate) fn release(&mut self, id: u32) -> bool {
        for (s, at) in self.ids.iter_mut().zip(self.at.iter_mut()) {
            if id != 0 && *s == id {
                *s = 0;
                *at = OptTick::NONE;
                return true;
            }
        }
        false
    }
}
