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
//! | module | holds |
//! | --- | --- |
//! | `instant` | [`Instant`], [`Duration`], [`TICK_HZ`]: the core's time types (`u64` ticks) |
//! | `fixed_vec` | [`FixedVec`]: at most `N` elements in place, never panics ([`Blank`] fills the rest) |
//! | [`config`] | every rule's knobs and defaults (`docs/rules.md`), [`ConfigError`] |
//! | [`decision`] | [`Decision`], [`Reason`], [`Penalty`], [`Stats`] |
//! | [`key`] | [`Key`]s, IPv6 prefix aggregation, keyed username hashing, [`Seed`] |
//! | [`lists`] | allow/deny [`Cidr`] lists and their [`Lists::lookup`] (rule 9) |
//! | [`ranges`] | [`RangeSet`]: manual bans of addresses and CIDR ranges, looked up by prefix length and binary search |
//! | [`window`] | sliding logs (rule 1): fixed [`Log`], growing `GrowLog` |
//! | [`block`] | violations, escalating blocks, bans (rules 2–4) |
//! | [`lockout`] | login lockout and account throttle (rules 5, 8) |
//! | [`penalty`] | back-off delays (rule 6) |
//! | [`slots`] | concurrency slot tokens with TTL (rule 7) |
//! | [`entry`] | per-key state: the log, and a [`Cold`] part (a request key's violations, block and ban, or a login key's lock and slots, in the same bytes) held inline or boxed on first use |
//! | [`store`] | the [`Store`] trait |
//! | [`table`] | [`FixedStore`]: fixed array, keyed open addressing, CLOCK eviction (dead entries first) |
//! | `map` | `MapStore` (feature `alloc`): growable, the entries themselves in one open-addressing table (40-byte slots, compact 8-byte keys, a 2-byte meta per slot), CLOCK eviction |
//! | [`limiter`] | [`Limiter`], tying rules to a store; [`Hold`] (what a listing of bans, blocks and locks shows), [`Changed`] (the keys a call's bans, blocks and locks changed, for write-through) |
//! | [`record`] | export/import with wall-clock times; [`Record::hold`], [`Record::lift`] |
//! | `shared` | `Shared` (feature `critical-section`) |
//!
//! ## Memory
//!
//! A [`FixedLimiter<N, W>`] is `size_of` a few words, the [`Changed`] set
//! ([`CHANGED_KEYS`] keys) and the [`Evicted`] list plus `N` slots; one
//! slot holds a key, a reference bit, a `W`-timestamp log and a [`Cold`]
//! part: either a request key's 16-entry violation log and block/ban
//! state or a login key's lock and [`MAX_SLOTS`] slot tokens (no key kind
//! uses both, so they share their bytes). Both logs are
//! [`CompactLog`]s (a 64-bit base and 32-bit offsets, exact for lookbacks
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
//! A `MapStore` key (feature `alloc`) is one 40-byte slot (an 8-byte key
//! word, up to four timestamps inline, a pointer to its cold part) and a
//! 2-byte meta (kind, form, CLOCK reference bit, hash tag) in a table at
//! most 7/8 full, its last growth step sized to the cap: about 53 bytes
//! at 1 000 000 keys with one event each (48 at the cap). Logs longer than
//! four events live in a heap ring sized to them; the cold part is
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

pub mod block;
pub mod config;
pub mod decision;
pub mod entry;
mod fixed_vec;
mod instant;
pub mod key;
pub mod limiter;
pub mod lists;
pub mod lockout;
#[cfg(feature = "alloc")]
pub mod map;
pub mod penalty;
pub mod ranges;
pub mod record;
#[cfg(feature = "critical-section")]
pub mod shared;
pub mod slots;
pub mod store;
pub mod table;
mod time;
pub mod window;

pub use config::{
    BlockRules, Config, ConfigError, Growth, Jitter, LoginRules, NoSlot, OnFull, PenaltyRules,
    RequestRules, SlotRules,
};
pub use decision::{Decision, Penalty, Reason, StandingDenial, Stats};
#[cfg(feature = "alloc")]
pub use entry::BoxedCold;
pub use entry::{Cold, ColdPart, CompactCold, Entry, VIOLATION_LOG};
pub use fixed_vec::{Blank, FixedVec};
pub use instant::{Duration, Instant, TICK_HZ};
pub use key::{Addr, Key, KeyKind, Seed, UserHasher};
#[cfg(feature = "alloc")]
pub use limiter::MapLimiter;
pub use limiter::{
    Changed, Evicted, FixedLimiter, Hold, Limiter, Spill, CHANGED_KEYS, EVICTED_KEYS,
};
pub use lists::{Cidr, CidrError, Listed, Lists};
pub use lockout::{Attempt, AttemptId};
#[cfg(feature = "alloc")]
pub use map::MapStore;
pub use ranges::{RangeError, RangeSet, RangeStore};
pub use record::{ImportError, Record, WallClock};
pub use slots::{SlotToken, MAX_SLOTS};
pub use store::{Class, EntryOf, Store, Upsert, Victim, SCAN};
pub use table::{FixedEntry, FixedStore, FIXED_MAX_SPAN};
pub use time::MAX_LOOKBACK;
#[cfg(feature = "alloc")]
pub use window::GrowLog;
pub use window::{CompactLog, Log, TimeLog};
