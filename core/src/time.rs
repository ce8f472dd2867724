//! Saturating tick arithmetic.
//!
//! Internally every time is a `u64` count of [`embassy_time`] ticks and every
//! operation saturates, so `Instant::MAX`, time standing still and uptimes of
//! years never wrap or panic.
//!
//! **The internal clock runs [`EPOCH`] ticks ahead of the caller's.** A
//! tick is the caller's `Instant` plus [`MAX_LOOKBACK`] (3650 days),
//! saturating. The caller's clock starts near zero at process start or
//! boot, but history restored from records (see [`record`](crate::record))
//! is older than that: the offset makes every time up to `MAX_LOOKBACK`
//! before the caller's zero representable, and config validation keeps
//! every lookback (`requests.window`, `blocks.violation_memory`,
//! `blocks.ban_lookback`, `login.failure_window`, `login.account_window`)
//! at most `MAX_LOOKBACK`. So a time older than the internal zero, which
//! saturates to tick 0, is at least `EPOCH` old at any internal `now`:
//! older than every lookback, it counts for nothing, exactly as its true
//! time would. The cost is at the far end: caller instants within
//! `MAX_LOOKBACK` of `Instant::MAX` all read as the end of time (at 1 MHz
//! that is after 584 000 years of uptime).

use embassy_time::{Duration, Instant, TICK_HZ};

/// A point in time in ticks.
pub(crate) type Tick = u64;

/// The longest lookback a configuration may set, and how far before the
/// caller's clock zero the limiter can place restored history: 3650 days.
pub const MAX_LOOKBACK: Duration = Duration::from_ticks(EPOCH);

/// [`MAX_LOOKBACK`] in ticks: internal tick = caller's ticks + `EPOCH`.
pub(crate) const EPOCH: Tick = 315_360_000u64.saturating_mul(TICK_HZ); // 3650 × 86 400 s

// Room for the epoch at every tick rate embassy-time offers (up to 5.2 GHz).
const _: () = assert!(
    EPOCH < u64::MAX / 8,
    "MAX_LOOKBACK must leave room for uptime"
);

/// The internal tick of a caller's instant.
pub(crate) fn tick(i: Instant) -> Tick {
    i.as_ticks().saturating_add(EPOCH)
}

/// The caller's instant of an internal tick: the end of time stays the
/// end of time, a tick before the caller's zero reads as zero.
pub(crate) fn instant(t: Tick) -> Instant {
    if t == Tick::MAX {
        Instant::MAX
    } else {
        Instant::from_ticks(t.saturating_sub(EPOCH))
    }
}

/// Age of `t` at `now` (zero if `t` lies in the future).
pub(crate) fn age(now: Tick, t: Tick) -> u64 {
    now.saturating_sub(t)
}

/// Whether `t` lies in the window `(now - window, now]`.
pub(crate) fn within(now: Tick, t: Tick, window: u64) -> bool {
    age(now, t) < window
}

/// Time left until `t` leaves a window of `window` ticks.
pub(crate) fn left_in_window(now: Tick, t: Tick, window: u64) -> Duration {
    Duration::from_ticks(window.saturating_sub(age(now, t)))
}

/// Time from `now` until `deadline` (zero if passed).
pub(crate) fn until(now: Tick, deadline: Tick) -> Duration {
    Duration::from_ticks(deadline.saturating_sub(now))
}

/// Milliseconds to ticks, saturating (the library's own conversions
/// overflow for huge values).
pub(crate) fn ms_to_ticks(ms: u64) -> u64 {
    let t = u128::from(ms)
        .saturating_mul(u128::from(embassy_time::TICK_HZ))
        .checked_div(1000)
        .unwrap_or(0);
    u64::try_from(t).unwrap_or(u64::MAX)
}

/// Ticks to milliseconds (truncating, saturating).
pub(crate) fn ticks_to_ms(ticks: u64) -> u64 {
    let ms = u128::from(ticks)
        .saturating_mul(1000)
        .checked_div(u128::from(embassy_time::TICK_HZ))
        .unwrap_or(0);
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// Whether a deadline is still ahead of `now`. A deadline saturated at the
/// end of time never passes (at `Instant::MAX` a block must still hold).
pub(crate) fn running(deadline: Tick, now: Tick) -> bool {
    deadline > now || deadline == Tick::MAX
}

/// `min(first × growth^n, max)`, saturating, in at most 64 steps (the
/// escalation of blocks and of penalty delays).
pub(crate) fn grown(first: u64, growth: u32, n: u32, max: u64) -> u64 {
    let mut d = first.min(max);
    for _ in 0..n.min(64) {
        if d >= max {
            break;
        }
        d = d.saturating_mul(u64::from(growth)).min(max);
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_ticks_run_max_lookback_ahead_and_back() {
        assert_eq!(tick(Instant::from_ticks(0)), EPOCH);
        assert_eq!(MAX_LOOKBACK, Duration::from_secs(3650 * 86_400));
        for t in [0, 1, 12_345, u64::MAX / 2] {
            assert_eq!(
                instant(tick(Instant::from_ticks(t))),
                Instant::from_ticks(t)
            );
        }
        // The end of time stays there; before the caller's zero reads as zero.
        assert_eq!(tick(Instant::MAX), Tick::MAX);
        assert_eq!(instant(Tick::MAX), Instant::MAX);
        assert_eq!(instant(0), Instant::from_ticks(0));
        // Tick 0 is older than any allowed lookback at any now.
        assert!(!within(
            tick(Instant::from_ticks(0)),
            0,
            MAX_LOOKBACK.as_ticks()
        ));
    }
}
