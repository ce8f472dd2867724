//! # portcullis-core
//!
//! The decision core of portcullis: rate limiting and brute-force lockout
//! with no allocator, no clock, no panics and no `unsafe`. The same rules
//! run on a 64 KiB microcontroller, inside a std server and (through the
//! host crate's Lua port, tested differentially) in Redis.
//!
//! Every call takes `now` as an [`Instant`] (the core's own: `u64` ticks at
//! [`TICK_HZ`] per second, a microsecond each, or embassy-time's rate and
//! `From`/`Into` its types with the `embassy` feature) and returns a
//! [`Decision`]: `Allow { remaining, reset_after }` or
//! `Deny { reason, retry_after }`.
//!
//! The rules are numbered 1–9 and cited by number throughout the code
//! ("rule 5", "rules 1–4 and 9"): `docs/rules.md` in the repository
//! explains each one, its defaults, the module that holds it, what mirrors
//! it in the host and in Redis, and which tests prove it.
//!
//! ```
//! use core::net::{IpAddr, Ipv4Addr};
//! use portcullis_core::{Config, Decision, Duration, FixedLimiter, Instant, Reason, Seed, FIXED_MAX_SPAN};
//!
//! let mut config = Config::default();
//! // A fixed table's logs keep 32-bit tick offsets: every lookback at most
//! // 2^32 - 1 ticks (49.7 days at 1 kHz, but 71.6 min at std's 1 MHz).
//! config.clamp_lookbacks(FIXED_MAX_SPAN);
//! config.requests.max_requests = 3;
//! config.login.account_max_failures = Some(16); // every log fits W = 16
//! // 64 slots (56 keys), 16 timestamps per key; the seed comes from your RNG.
//! let mut limiter: FixedLimiter<64, 16> = FixedLimiter::new(config, Seed::new([42; 16])).unwrap();
//! let ip = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9));
//! let t0 = Instant::from_secs(100);
//! for left in [2, 1, 0] {
//!     assert!(matches!(limiter.check_request(ip, t0), Decision::Allow { remaining, .. } if remaining == left));
//! }
//! assert_eq!(
//!     limiter.check_request(ip, t0),
//!     Decision::Deny { reason: Reason::RateLimited, retry_after: Duration::from_secs(60) }
//! );
//! // A minute later the window has slid past the burst.
//! assert!(limiter.check_request(ip, t0 + Duration::from_secs(60)).is_allowed());
//! ```
//!
//! ## Contents
//!
//! Every public item is re-exported at the crate root (one path per type);
//! the modules themselves are private. Grouped by layer:
//!
//! | layer | items |
//! | --- | --- |
//! | rules and configuration | [`Config`] and its parts ([`RequestRules`], [`BlockRules`], [`LoginRules`], [`PenaltyRules`], [`SlotRules`], [`Growth`], [`Jitter`], [`NoSlot`], [`OnFull`]), [`ConfigError`]; allow/deny [`Lists`] of [`Cidr`]s ([`Listed`], [`CidrError`], [`MAX_LIST`], rule 9); manual bans of ranges in a [`RangeSet`] over a [`RangeStore`] ([`RangeError`], [`MIN_V4_PREFIX`], [`MIN_V6_PREFIX`]); [`MAX_LOOKBACK`], [`FIXED_MAX_SPAN`], [`VIOLATION_LOG`], [`MAX_SLOTS`] |
//! | time | [`Instant`], [`Duration`], [`TICK_HZ`]: the core's time types (`u64` ticks) |
//! | keys | [`Key`], [`KeyKind`], [`Addr`] (IPv6 prefix aggregation), [`Seed`], [`UserHasher`] (keyed username hashing), [`KeyHasher`] |
//! | decisions | [`Decision`], [`Reason`], [`Penalty`] (rule 6's delay, in a [`SlotToken`] slot, rule 7), [`Attempt`] and [`AttemptId`] (a login reserved before its password is checked), [`StandingDenial`], [`Stats`] |
//! | tables | [`Limiter`] (rules 1–9 over a table), [`FixedLimiter`] (fixed array, no allocator), `MapLimiter` (feature `alloc`, growable); what a call changed: [`Changed`] ([`CHANGED_KEYS`], [`Spill`]) and [`Evicted`] ([`EVICTED_KEYS`]) |
//! | records | [`Record`] (export/import with wall-clock times, [`Record::hold`], [`Record::lift`]), [`Hold`] (what a listing of bans, blocks and locks shows), [`WallClock`], [`ImportError`] |
//! | sharing | `Shared` (feature `critical-section`), `Reentered` |
//! | containers | [`FixedVec`]: at most `N` elements in place, never panics ([`Blank`] fills the rest) |
//!
//! The storage layer under [`Limiter`] (the `Store` trait, per-key `Entry`
//! and its cold part, the logs, the table layouts) is private: a storage
//! change is not an API change. The `unstable-internals` feature re-exports
//! it under `internals` for the crate's own benchmarks and tests; it
//! follows no semver promise.
//!
//! ## Memory
//!
//! A [`FixedLimiter<N, W>`] is `size_of` a few words, the [`Changed`] set
//! ([`CHANGED_KEYS`] keys) and the [`Evicted`] list plus `N` slots; one
//! slot holds a key, a reference bit, a `W`-timestamp log and a cold
//! part: either a request key's 16-entry violation log and block/ban
//! state or a login key's lock and [`MAX_SLOTS`] slot tokens (no key kind
//! uses both, so they share their bytes). Both logs are
//! compact logs (a 64-bit base and 32-bit offsets, exact for lookbacks
//! up to [`FIXED_MAX_SPAN`] ticks: 49.7 days at 1 kHz, 71.6 minutes at
//! 1 MHz), so a slot is about `4·W + 136` bytes on 64-bit hosts (measured
//! by the `sizes` test, which prints the table):
//!
//! | configuration | bytes per slot | total |
//! | --- | --- | --- |
//! | `FixedLimiter<32, 16>` | 201 | 8 040 |
//! | `FixedLimiter<64, 16>` | 200 | 14 440 |
//! | `FixedLimiter<70, 16>` (firmware example: 62 keys in the 16 224 B of the 28-key `FixedLimiter<32, 16>` before issue 18) | 200 | 15 640 |
//! | `FixedLimiter<256, 16>` | 200 | 52 840 |
//! | `FixedLimiter<1024, 50>` (server defaults) | 336 | 345 704 |
//!
//! At most `N - N/8` keys live at once (short probe chains).
//!
//! A `MapStore` key (feature `alloc`) is one 64-byte slot aligned to a
//! cache line (an 8-byte key word, up to ten timestamps inline, a pointer
//! to its cold part) and a 2-byte meta (kind, form, CLOCK reference bit,
//! hash tag) in a table at most 7/8 full, its last growth step sized to
//! the cap: about 83 bytes at 1 000 000 keys with one to ten events each
//! (75 at the cap). Logs longer than ten events live in a heap ring sized
//! to them; the cold part is
//! allocated only for keys that were denied, blocked, banned, locked or
//! hold slots, and for keys held by a fingerprint (a (username, address)
//! pair, an IPv6 key longer than /64), whose full key it keeps.
//!
//! ## Features
//!
//! None pulls in `std`; the tests build all of them for `thumbv7m-none-eabi`,
//! `thumbv6m-none-eabi` (Cortex-M0: no compare-and-swap) and
//! `riscv32imc-unknown-none-elf` (no atomics: the core uses none), and run
//! the core's rule checks on a Cortex-M0 in QEMU (`firmware-m0-tests/`).
//! The list is generated from `Cargo.toml` (`document-features`):
//!
#![doc = document_features::document_features!()]
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;

mod block;
mod config;
mod decision;
mod entry;
mod fixed_vec;
mod instant;
mod key;
mod limiter;
mod lists;
mod lockout;
#[cfg(feature = "alloc")]
mod map;
mod penalty;
mod ranges;
mod record;
#[cfg(feature = "critical-section")]
mod shared;
mod slots;
mod store;
mod table;
mod time;
mod window;

// Rules and configuration.
pub use config::{
    BlockRules, Config, ConfigError, Growth, Jitter, LoginRules, NoSlot, OnFull, PenaltyRules,
    RequestRules, SlotRules,
};
pub use entry::VIOLATION_LOG;
pub use lists::{Cidr, CidrError, Listed, Lists, MAX_LIST};
pub use ranges::{RangeError, RangeSet, RangeStore, MIN_V4_PREFIX, MIN_V6_PREFIX};
pub use slots::MAX_SLOTS;
pub use table::FIXED_MAX_SPAN;
pub use time::MAX_LOOKBACK;

// Time.
pub use instant::{Duration, Instant, TICK_HZ};

// Keys.
pub use key::{Addr, Key, KeyHasher, KeyKind, Seed, UserHasher};

// Decisions.
pub use decision::{Decision, Penalty, Reason, StandingDenial, Stats};
pub use lockout::{Attempt, AttemptId};
pub use slots::SlotToken;

// Tables.
#[cfg(feature = "alloc")]
pub use limiter::MapLimiter;
pub use limiter::{Changed, Evicted, FixedLimiter, Limiter, Spill, CHANGED_KEYS, EVICTED_KEYS};

// Records.
pub use limiter::Hold;
pub use record::{ImportError, Record, WallClock};

// Containers.
pub use fixed_vec::{Blank, FixedVec};

// Sharing.
#[cfg(feature = "critical-section")]
pub use shared::{Reentered, Shared};

/// The storage layer under [`Limiter`] (feature `unstable-internals`): the
/// [`Store`](internals::Store) trait, per-key entries, their cold parts
/// and logs, and the two table layouts. For the workspace's benchmarks and
/// tests; it changes with the storage and follows no semver promise.
#[cfg(feature = "unstable-internals")]
pub mod internals {
    #[cfg(feature = "alloc")]
    pub use crate::entry::BoxedCold;
    pub use crate::entry::{Cold, ColdPart, CompactCold, Entry, EntryMut, EntryRef};
    #[cfg(feature = "alloc")]
    pub use crate::map::MapStore;
    pub use crate::store::{Class, EntryOf, Store, Upsert, Victim, SCAN};
    pub use crate::table::{FixedEntry, FixedStore};
    #[cfg(feature = "alloc")]
    pub use crate::window::GrowLog;
    pub use crate::window::{CompactLog, Log, TimeLog};
}
