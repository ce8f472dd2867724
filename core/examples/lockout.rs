//! The README's core quick start: a fixed table, no allocator, no clock
//! (every call takes `now`), a login lockout and a request window.
//! `firmware_loop.rs` drives the same table the way firmware does.
//!
//! ```sh
//! cargo run -p portcullis-core --example lockout
//! ```

use core::net::{IpAddr, Ipv4Addr};
use portcullis_core::{Config, ConfigError, Decision, FixedLimiter, Reason, Seed, FIXED_MAX_SPAN};
use portcullis_core::{Duration, Instant};

fn main() -> Result<(), ConfigError> {
    // A fixed table keeps 32-bit tick offsets: lookbacks up to 2^32 - 1 ticks
    // (49.7 days at a firmware's 1 kHz; at the default 1 MHz, 71.6 min, so the
    // day-long violation memory and ban lookback are shortened here).
    let mut config = Config::default();
    config.clamp_lookbacks(FIXED_MAX_SPAN);
    // 64 table slots, 50 timestamps per key (fits the default 50 requests / 60 s).
    let mut limiter: FixedLimiter<64, 50> = FixedLimiter::new(config, Seed::new([9; 16]))?;
    let ip = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 4));
    let now = Instant::from_secs(10);

    // Ten bad passwords lock the (user, ip) pair and the ip for five minutes…
    for _ in 0..10 {
        let penalty = limiter.login_failed("alice", ip, now); // 1, 2, 4, 8, 16, 30… s
        if let Some(slot) = penalty.slot {
            limiter.release_slot(slot);
        }
    }
    assert_eq!(
        limiter.check_login("Alice", ip, now),
        Decision::Deny {
            reason: Reason::PairLocked,
            retry_after: Duration::from_secs(300)
        }
    );
    // …while plain requests have their own sliding window.
    assert!(matches!(
        limiter.check_request(ip, now),
        Decision::Allow { remaining: 49, .. }
    ));
    Ok(())
}
