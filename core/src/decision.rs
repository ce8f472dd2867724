//! What every call answers: allow with the quota left, or deny with a
//! reason and when to come back.

use crate::{Duration, Instant};

use crate::time::{tick, until, Tick};

/// Why a request or login was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Reason {
    /// The sliding window is full (rule 1).
    RateLimited,
    /// A temporary block after repeated violations (rule 3).
    Blocked,
    /// A permanent ban; only an operator lifts it (rule 4).
    Banned,
    /// The (username, address) pair is locked after its login failures
    /// (rule 5): that username from that address, not the account.
    PairLocked,
    /// The address is locked after login failures (rule 5): its own count
    /// (`ip_max_failures`) or a pair lock (`lock_ip_on_account_lock`).
    IpLocked,
    /// The address is on the denylist (rule 9).
    Denylisted,
    /// No room for a new key and nothing evictable.
    TableFull,
    /// The shared store is unreachable and the host fails closed.
    Unavailable,
}

impl Reason {
    /// A stable snake_case name, for logs, headers and metrics labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::RateLimited => "rate_limited",
            Reason::Blocked => "blocked",
            Reason::Banned => "banned",
            Reason::PairLocked => "pair_locked",
            Reason::IpLocked => "ip_locked",
            Reason::Denylisted => "denylisted",
            Reason::TableFull => "table_full",
            Reason::Unavailable => "unavailable",
        }
    }

    /// Every reason, for metrics.
    pub const ALL: [Reason; 8] = [
        Reason::RateLimited,
        Reason::Blocked,
        Reason::Banned,
        Reason::PairLocked,
        Reason::IpLocked,
        Reason::Denylisted,
        Reason::TableFull,
        Reason::Unavailable,
    ];

    /// Whether a client should read this as "forbidden" (403) rather than
    /// "slow down" (429).
    pub const fn is_forbidden(self) -> bool {
        matches!(self, Reason::Banned | Reason::Denylisted)
    }
}

impl core::fmt::Display for Reason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The answer to a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Decision {
    /// Go ahead. `remaining` more would be allowed now; one more unit of
    /// quota comes back after `reset_after` (zero when nothing is used).
    Allow {
        /// Quota left after this call.
        remaining: u32,
        /// Time until the oldest counted event leaves the window.
        reset_after: Duration,
    },
    /// Refused. `retry_after` is [`Duration::MAX`] for bans and denylist.
    Deny {
        /// Why.
        reason: Reason,
        /// When asking again can succeed.
        retry_after: Duration,
    },
}

impl Decision {
    /// Whether the call was allowed.
    pub const fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }

    /// The reason of a denial.
    pub const fn reason(&self) -> Option<Reason> {
        match self {
            Decision::Allow { .. } => None,
            Decision::Deny { reason, .. } => Some(*reason),
        }
    }
}

/// What a failed login costs the caller: delay the *response* by `delay`
/// while holding `slot` (release it afterwards), or refuse outright when
/// `refused` (no slot free and the policy is [`NoSlot::Refuse`](crate::NoSlot::Refuse)).
///
/// The one penalty type of every layer: the core's slot is a
/// [`SlotToken`](crate::SlotToken) (the default `S`); a host wraps it in
/// whatever releases it (an RAII guard, a slot held in Redis) with
/// [`map_slot`](Self::map_slot).
#[derive(Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Penalty<S = crate::SlotToken> {
    /// How long to hold the response.
    pub delay: Duration,
    /// The concurrency slot the delay runs in, if one was free.
    pub slot: Option<S>,
    /// No slot was free and the policy refuses rather than caps.
    pub refused: bool,
    /// The username's account throttle (rule 8) is on.
    pub throttled: bool,
    /// This failure locked the (username, ip) pair or the ip (rule 5).
    pub locked: bool,
}

impl<S> Penalty<S> {
    /// No delay, no slot.
    pub const NONE: Penalty<S> = Penalty {
        delay: Duration::from_ticks(0),
        slot: None,
        refused: false,
        throttled: false,
        locked: false,
    };

    /// The same penalty with its slot turned into `T` (e.g. a guard that
    /// releases it when dropped).
    pub fn map_slot<T>(self, f: impl FnOnce(S) -> T) -> Penalty<T> {
        Penalty {
            delay: self.delay,
            slot: self.slot.map(f),
            refused: self.refused,
            throttled: self.throttled,
            locked: self.locked,
        }
    }
}

/// Counters a limiter keeps about itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Stats {
    /// New keys refused (or let through per `on_full`) because nothing was evictable.
    pub table_full: u64,
    /// Entries evicted to make room: `evicted_dead + evicted_live`.
    pub evictions: u64,
    /// Of those, entries whose state could no longer affect a decision
    /// (reclaimed: changes nothing).
    pub evicted_dead: u64,
    /// Of those, entries with live state (evicted because the table was
    /// full of such entries: the only evictions that can change a later
    /// decision).
    pub evicted_live: u64,
    /// Entries removed by `purge`.
    pub purged: u64,
    /// Bans, blocks and locks set or lifted: a host compares this before
    /// and after a call to know whether to persist, without extra lookups.
    pub pin_changes: u64,
}

/// A denial that stays the same, but for its countdown, until
/// `holds_until` or until the limiter changes: what
/// [`Limiter::standing_denial`](crate::Limiter::standing_denial) finds for a
/// key that is banned, blocked, denylisted, or rate limited with no new
/// violation due. A host may keep one beside its lock and answer a
/// hammering client from it, for as long as nothing took the lock to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StandingDenial {
    pub(crate) reason: Reason,
    /// `retry_after` counts down to this tick; `None`: `Duration::MAX`.
    pub(crate) deadline: Option<Tick>,
    /// First tick at which the answer may differ.
    pub(crate) holds_until: Tick,
    /// The limiter's clock when found (an earlier `now` reads as this).
    pub(crate) clock: Tick,
}

impl StandingDenial {
    /// The limiter's answer at `now`, if the denial still holds then.
    #[inline]
    pub fn decision_at(&self, now: Instant) -> Option<Decision> {
        let now = tick(now).max(self.clock);
        if now >= self.holds_until {
            return None;
        }
        Some(Decision::Deny {
            reason: self.reason,
            retry_after: self.deadline.map_or(Duration::MAX, |d| until(now, d)),
        })
    }

    /// The reason it gives.
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// Four words, for hosts that keep it in atomics.
    pub fn to_words(&self) -> [u64; 4] {
        let code = Reason::ALL
            .iter()
            .position(|&r| r == self.reason)
            .unwrap_or(0) as u64;
        let has = u64::from(self.deadline.is_some()) << 8;
        [
            code | has,
            self.deadline.unwrap_or(0),
            self.holds_until,
            self.clock,
        ]
    }

    /// Back from [`to_words`](Self::to_words); `None` for words it never made.
    #[inline]
    pub fn from_words(w: [u64; 4]) -> Option<StandingDenial> {
        let [head, deadline, holds_until, clock] = w;
        if head >> 9 != 0 {
            return None;
        }
        let reason = *Reason::ALL.get(usize::try_from(head & 0xFF).ok()?)?;
        Some(StandingDenial {
            reason,
            deadline: (head & 0x100 != 0).then_some(deadline),
            holds_until,
            clock,
        })
    }
}
