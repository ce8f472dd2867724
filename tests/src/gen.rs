//! Proptest generators shared by the model-based test and the Redis
//! differential test: the addresses, usernames, time steps and random
//! configurations both drive through the core and its counterpart.

use std::net::IpAddr;

use portcullis_core::Duration;
use portcullis_core::{Config, Growth, NoSlot};
use proptest::prelude::*;

/// A few addresses: IPv4, two in one IPv6 /64, an IPv4-mapped alias, a
/// denylisted and an allowlisted one (see [`config`]).
pub fn ips() -> Vec<IpAddr> {
    [
        "10.0.0.1",
        "10.0.0.2",
        "2001:db8:0:1::1",
        "2001:db8:0:1::ffff", // same /64 as the one above
        "2001:db8:0:2::1",
        "::ffff:10.0.0.1", // IPv4-mapped: the same key as 10.0.0.1
        "192.0.2.66",      // denylisted
        "198.51.100.7",    // allowlisted
    ]
    .iter()
    .filter_map(|s| s.parse().ok())
    .collect()
}

/// Usernames; the first two are one account after normalisation.
pub const USERS: [&str; 4] = ["alice", " ALICE ", "bob", "carol"];

/// A time step: mostly small, sometimes hours or days, sometimes sub-ms.
pub fn step() -> impl Strategy<Value = u64> {
    let ms = 1_000u64; // µs per ms
    prop_oneof![
        4 => Just(0u64),
        4 => (1u64..2_000).prop_map(move |x| x * ms),
        3 => (1u64..120).prop_map(move |x| x * 1000 * ms),
        2 => (1u64..90).prop_map(move |x| x * 60_000 * ms),
        1 => (1u64..48).prop_map(move |x| x * 3_600_000 * ms),
        1 => (1u64..30).prop_map(move |x| x * 86_400_000 * ms),
        1 => 1u64..1_000_000,
    ]
}

/// Whole seconds in `lo..=hi`.
pub fn secs(lo: u64, hi: u64) -> impl Strategy<Value = Duration> {
    (lo..=hi).prop_map(Duration::from_secs)
}

/// A growth factor from 1 to `hi`: integral ones as before, and fractional
/// ones in thousandths (1.001, 1.5, 2.718 …) that round at every step.
pub fn growth(hi: u32) -> impl Strategy<Value = Growth> {
    prop_oneof![
        (1u32..=hi).prop_map(Growth::times),
        (1000u32..=hi * 1000).prop_map(Growth::from_thousandths),
        prop_oneof![Just(1001u32), Just(1500), Just(1999), Just(2500)]
            .prop_map(Growth::from_thousandths),
    ]
}

/// A random valid configuration whose logs fit `w` timestamps.
pub fn config(w: u32) -> impl Strategy<Value = Config> {
    (
        (
            1u32..=w,
            secs(1, 120),
            1u32..=4,
            secs(60, 7200),
            secs(1, 900),
            growth(3),
        ),
        (
            secs(60, 86_400),
            proptest::option::of(2u32..=8),
            secs(60, 86_400),
            prop_oneof![Just(64u8), Just(48u8), Just(128u8)],
            prop_oneof![Just(Duration::from_ticks(0)), secs(1, 7200)],
        ),
        (
            1u32..=w,
            secs(1, 600),
            secs(1, 600),
            any::<bool>(),
            proptest::option::of(1u32..=w),
            secs(60, 7200),
            // The ip's own lock: at max_failures (0), its own count, or never.
            prop_oneof![2 => Just(0u32), 1 => 1u32..=w, 1 => Just(u32::MAX)],
        ),
        (
            (1u64..=5_000_000).prop_map(Duration::from_micros),
            growth(3),
            5u64..=60,
            1u32..=4,
            secs(1, 120),
            any::<bool>(),
        ),
    )
        .prop_map(|(r, b, l, p)| {
            let mut c = Config::default();
            c.requests.max_requests = r.0;
            c.requests.window = r.1;
            c.blocks.block_after = r.2;
            c.blocks.violation_memory = r.3;
            c.blocks.block_for = r.4;
            c.blocks.block_growth = r.5;
            c.blocks.max_block = b.0.max(r.4);
            c.blocks.ban_after = b.1;
            c.blocks.ban_lookback = b.2;
            c.ipv6_prefix = b.3;
            c.blocks.block_jitter = b.4;
            c.login.max_failures = l.0;
            c.login.failure_window = l.1;
            c.login.lock_for = l.2;
            c.login.lock_ip_on_account_lock = l.3;
            c.login.account_max_failures = l.4;
            c.login.account_window = l.5;
            c.login.ip_max_failures = match l.6 {
                0 => Some(l.0),
                u32::MAX => None,
                n => Some(n),
            };
            c.penalty.base = p.0;
            c.penalty.multiplier = p.1;
            c.penalty.max = Duration::from_secs(p.2).max(p.0);
            c.slots.slots = p.3;
            c.slots.slot_ttl = p.4;
            c.slots.when_full = if p.5 {
                NoSlot::CapToBase
            } else {
                NoSlot::Refuse
            };
            if let Ok(deny) = "192.0.2.0/24".parse() {
                let _ = c.lists.deny.push(deny);
            }
            if let Ok(allow) = "198.51.100.7/32".parse() {
                let _ = c.lists.allow.push(allow);
            }
            c
        })
}

/// [`config`] for a fixed table at std's 1 MHz ticks: every lookback
/// shortened to at most [`FIXED_MAX_SPAN`](portcullis_core::FIXED_MAX_SPAN)
/// ticks (71.6 min), the longest its 32-bit offsets answer exactly (the
/// table refuses longer ones). Many land exactly on the span, and
/// [`step`] advances by up to days: the edge of exactness is exercised.
pub fn fixed_config(w: u32) -> impl Strategy<Value = Config> {
    config(w).prop_map(|mut c| {
        c.clamp_lookbacks(portcullis_core::FIXED_MAX_SPAN);
        c
    })
}

/// The random part of a block's jitter: none, the most, or any.
pub fn jitter() -> impl Strategy<Value = u16> {
    prop_oneof![Just(0u16), Just(u16::MAX), any::<u16>()]
}

/// Cases per proptest: the given default, or `PORTCULLIS_PROPTEST_CASES`.
pub fn cases(default: u32) -> u32 {
    std::env::var("PORTCULLIS_PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
