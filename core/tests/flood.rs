//! Flood (issue 18): 10 M distinct addresses through a table sized for
//! 1 M (a `MapLimiter`, the host's store, driven directly through the
//! core; the workspace's `[profile.test.package.portcullis-core]`
//! compiles this test optimised so it takes seconds, not minutes):
//!
//! * every ban and block survives the flood;
//! * while the table holds more than a window of arrivals, every eviction
//!   reclaims a dead entry (no live key is evicted);
//! * with the clock held still, live keys are evicted once the table is
//!   full of them: the arrivals beyond the dead entries left, each counted
//!   as live (and, the hand's window missing a last scattered dead entry,
//!   at most 1 in 10 000 before the dead ones are gone);
//! * memory is flat once the table is full: the store's table bytes do not
//!   move, nor does resident memory (`/proc/self/statm`) beyond a margin.
//!
//! Run: `cargo test -p portcullis-core --features alloc --test flood`.
#![cfg(feature = "alloc")]
#![allow(
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::expect_used,
    clippy::panic
)]

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use portcullis_core::{Config, MapLimiter, Reason, Seed};
use portcullis_core::{Duration, Instant};

const CAP: usize = 1_000_000;
const FLOOD: u64 = 10_000_000;
/// Arrivals per request window in the flood: a tenth of the table.
const PER_WINDOW: u64 = 100_000;

/// Flood address `n`: distinct IPv6 /64s.
fn flood_ip(n: u64) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(
        (0x2001_0db8_u128 << 96) | (u128::from(n) << 64),
    ))
}

fn resident_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[test]
fn ten_million_addresses_through_a_million_key_table() {
    let mut c = Config::default();
    c.requests.max_requests = 2;
    c.requests.window = Duration::from_secs(60);
    c.blocks.block_after = 1;
    c.blocks.block_for = Duration::from_secs(86_400);
    c.blocks.max_block = Duration::from_secs(86_400);
    let window = c.requests.window.as_ticks();
    let mut l = MapLimiter::<64>::new_growable(c, Seed::new([5; 16]), CAP).unwrap();
    let t0 = Instant::from_secs(10);

    // 500 bans and 500 blocks before the flood.
    let banned: Vec<IpAddr> = (0..500u32)
        .map(|i| IpAddr::V4(Ipv4Addr::from(0xC000_0200 + i)))
        .collect();
    let blocked: Vec<IpAddr> = (0..500u32)
        .map(|i| IpAddr::V4(Ipv4Addr::from(0xC633_6400 + i)))
        .collect();
    for &ip in &banned {
        assert!(l.ban(ip, t0));
    }
    for &ip in &blocked {
        for _ in 0..2 {
            assert!(l.check_request(ip, t0).is_allowed());
        }
        assert_eq!(l.check_request(ip, t0).reason(), Some(Reason::Blocked));
    }
    let pinned = banned.len() + blocked.len();

    // Phase 1: the flood. One request per address, the clock moving a
    // window per PER_WINDOW arrivals: at most ~PER_WINDOW entries are live
    // at once, the rest of a full table is dead.
    let step = window / PER_WINDOW;
    let mut now = t0;
    let mut full_at = None;
    for n in 0..FLOOD {
        now = t0 + Duration::from_ticks(n * step);
        assert!(
            l.check_request(flood_ip(n), now).is_allowed(),
            "arrival {n}"
        );
        if full_at.is_none() && l.len() == CAP {
            full_at = Some((n, l.store().table_bytes(), resident_bytes()));
        }
    }
    let s = l.stats();
    let (n_full, bytes_full, rss_full) = full_at.expect("the table filled");
    println!(
        "flood: full after {n_full} arrivals, {bytes_full} table bytes ({} B/key), \
         rss {rss_full:?} -> {:?}; {s:?}",
        bytes_full / CAP,
        resident_bytes()
    );
    assert_eq!(l.len(), CAP);
    assert_eq!(s.table_full, 0);
    assert_eq!(
        s.evicted_live, 0,
        "a live key was evicted while dead ones were left"
    );
    assert_eq!(s.evicted_dead, FLOOD + pinned as u64 - CAP as u64);
    assert_eq!(s.evictions, s.evicted_dead + s.evicted_live);
    // Flat: the table's own bytes did not move after it filled, nor
    // (beyond allocator noise) did the process's resident memory.
    assert_eq!(l.store().table_bytes(), bytes_full);
    if let (Some(a), Some(b)) = (rss_full, resident_bytes()) {
        assert!(
            b <= a + a / 20,
            "resident memory grew from {a} to {b} bytes"
        );
    }

    // Phase 2: the clock held still. The arrivals of the last window are
    // live, the rest dead: the next `dead` arrivals reclaim them, after
    // which every arrival evicts a live key (the table is full of them).
    let live_now = (0..FLOOD)
        .rev()
        .take_while(|&n| now.as_ticks() - (t0.as_ticks() + n * step) < window)
        .count();
    let dead = CAP - pinned - live_now;
    let extra = dead as u64 + 50_000;
    for n in FLOOD..FLOOD + extra {
        assert!(l.check_request(flood_ip(n), now).is_allowed());
    }
    let s2 = l.stats();
    // The table places a new key at its hash position, not behind the
    // hand, so the last few dead entries lie scattered: the hand's SCAN
    // window (the rule: a dead entry within SCAN of the hand first) can
    // miss one of them. That may cost a live key before the last dead
    // ones go, a handful among ~900 000 (issue 24: 24 with this seed);
    // bounded at 1 in 10 000.
    let reclaimed = s2.evicted_dead - s.evicted_dead;
    let early = dead as u64 - reclaimed;
    println!(
        "phase 2: {reclaimed} of {dead} dead reclaimed, {} live",
        s2.evicted_live
    );
    assert!(
        early <= dead as u64 / 10_000,
        "{early} dead left unreclaimed"
    );
    assert_eq!(s2.evicted_live, 50_000 + early);
    assert_eq!(s2.table_full, 0);

    // Every ban and block survived, and still decides.
    let later = now + Duration::from_secs(1);
    for &ip in &banned {
        assert_eq!(l.check_request(ip, later).reason(), Some(Reason::Banned));
    }
    for &ip in &blocked {
        assert_eq!(l.check_request(ip, later).reason(), Some(Reason::Blocked));
    }
}
