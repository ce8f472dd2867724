//! Benchmark support for portcullis (see BENCHMARKS.md at the repo root).
//!
//! Shared by the criterion benchmark `benches/vs_governor.rs` and the
//! binaries `icount` (instruction counts under callgrind) and `memory`
//! (bytes per key under a counting allocator): one configuration, one
//! deterministic key generator, so every number is about the same work.

use std::net::{IpAddr, Ipv4Addr};

use portcullis::{Limiter, LimiterOptions};
use portcullis_core::{Config, Seed};
use portcullis_core::{Duration, Instant};

/// The steady rate both libraries are configured to: 50 per 60 s, burst 50.
pub const PER_MINUTE: u32 = 50;

/// Distinct keys of the cache-miss-bound workloads.
pub const KEYS: usize = 1_000_000;

/// Fixed seed of every portcullis table (benchmarks must be repeatable).
pub const SEED: Seed = Seed::new([7; 16]);

/// The portcullis configuration used by every benchmark: the rules'
/// defaults (50 requests / 60 s sliding window) with escalation pushed out
/// of reach (blocks after 16 violations, no bans), so that portcullis, like
/// governor, keeps answering from the request window alone: a blocked key
/// would take a cheaper early-return path and flatter portcullis.
pub fn bench_config() -> Config {
    let mut c = Config::default();
    c.requests.max_requests = PER_MINUTE;
    c.requests.window = Duration::from_secs(60);
    c.blocks.block_after = portcullis_core::VIOLATION_LOG as u32;
    c.blocks.ban_after = None;
    c
}

/// [`bench_config`] for a core `FixedLimiter` at std's 1 MHz ticks: its
/// logs keep 32-bit offsets, so lookbacks stop at 71.6 min (the violation
/// memory; blocks are out of reach anyway).
pub fn core_bench_config() -> Config {
    let mut c = bench_config();
    c.clamp_lookbacks(portcullis_core::FIXED_MAX_SPAN);
    c
}

/// The host limiter as a server builds it (64 shards), sized for `max_entries`.
pub fn host_limiter(max_entries: usize) -> Limiter {
    host_limiter_with(bench_config(), max_entries)
}

/// [`host_limiter`] with another configuration.
pub fn host_limiter_with(config: Config, max_entries: usize) -> Limiter {
    Limiter::new(
        config,
        LimiterOptions {
            max_entries,
            shards: 64,
            seed: Some(SEED),
        },
    )
    .unwrap_or_else(|e| panic!("bench limiter: {e}"))
}

/// A base instant far from zero (an hour of uptime), as a server would see.
pub fn base() -> Instant {
    Instant::from_secs(3600)
}

/// `base() + i µs`: the clock advances one microsecond per operation.
#[inline(always)]
pub fn at(i: u64) -> Instant {
    Instant::from_ticks(base().as_ticks() + i)
}

/// SplitMix64: a tiny deterministic generator for the binaries (the
/// criterion bench uses `rand`).
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `n` distinct pseudo-random IPv4 addresses (a bijection of `0..n` on
/// `u32`, so no duplicates), deterministic for a given `seed`.
pub fn distinct_ipv4(n: usize, seed: u64) -> Vec<IpAddr> {
    let mut s = seed;
    let mul = (splitmix64(&mut s) as u32) | 1; // odd: invertible mod 2^32
    let add = splitmix64(&mut s) as u32;
    (0..n as u32)
        .map(|i| {
            let mut x = i.wrapping_mul(mul).wrapping_add(add);
            x ^= x >> 16; // xorshift is a bijection too
            x = x.wrapping_mul(0x7feb_352d);
            IpAddr::V4(Ipv4Addr::from(x))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_distinct() {
        let mut k = distinct_ipv4(100_000, 1);
        k.sort();
        k.dedup();
        assert_eq!(k.len(), 100_000);
    }

    #[test]
    fn config_is_valid() {
        let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let l = host_limiter(1000);
        for i in 0..u64::from(PER_MINUTE) {
            assert!(l.check_request_at(ip, at(i)).decision.is_allowed());
        }
        assert!(!l.check_request_at(ip, at(99)).decision.is_allowed());
    }
}
