//! Saturating tick arithmetic.
//!
//! Internally every time is a `u64` count of ticks ([`TICK_HZ`] per
//! second, the rate of the caller's [`Instant`]) and every
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

use crate::instant::{Duration, Instant, TICK_HZ};

use crate::config::Growth;

/// A point in time in ticks.
pub(crate) type Tick = u64;

/// An optional tick in two 32-bit words, tick 0 meaning none: half the
/// size of an `Option<Tick>` and alignment 4, so a fixed table's cold
/// part (deadlines beside [`CompactLog`](crate::internals::CompactLog)s) has no
/// padding. Tick 0 is never a real event or deadline: internal ticks of
/// the caller's instants are at least [`EPOCH`], and a restored time that
/// saturates to 0 lies before every lookback (and a deadline there has
/// passed), so reading it as "none" changes no decision.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub(crate) struct OptTick([u32; 2]);

impl OptTick {
    /// No tick.
    pub(crate) const NONE: OptTick = OptTick([0; 2]);

    /// `t`, or none for tick 0.
    pub(crate) const fn some(t: Tick) -> OptTick {
        // Truncations intended: the two halves of `t`.
        #[allow(clippy::cast_possible_truncation)]
        OptTick([t as u32, (t >> 32) as u32])
    }

    /// The tick, if any.
    pub(crate) const fn get(self) -> Option<Tick> {
        let [lo, hi] = self.0;
        let t = ((hi as u64) << 32) | lo as u64;
        if t == 0 {
            None
        } else {
            Some(t)
        }
    }

    /// Whether a tick is held.
    pub(crate) const fn is_some(self) -> bool {
        self.get().is_some()
    }

    /// The tick, leaving none.
    pub(crate) fn take(&mut self) -> Option<Tick> {
        let t = self.get();
        *self = OptTick::NONE;
        t
    }
}

impl From<Option<Tick>> for OptTick {
    fn from(t: Option<Tick>) -> Self {
        t.map_or(OptTick::NONE, OptTick::some)
    }
}

/// The longest lookback a configuration may set, and how far before the
/// caller's clock zero the limiter can place restored history: 3650 days.
pub const MAX_LOOKBACK: Duration = Duration::from_ticks(EPOCH);

/// [`MAX_LOOKBACK`] in ticks: internal tick = caller's ticks + `EPOCH`.
pub(crate) const EPOCH: Tick = 315_360_000u64.saturating_mul(TICK_HZ); // 3650 × 86 400 s

// Room for the epoch at every tick rate embassy-time offers (up to 5.2 GHz,
// the core's `TICK_HZ` with the `embassy` feature).
const _: () = assert!(
    EPOCH < u64::MAX / 8,
    "MAX_LOOKBACK must leave room for uptime"
);

/// The internal tick of a caller's instant.
#[inline]
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
#[inline]
pub(crate) fn until(now: Tick, deadline: Tick) -> Duration {
    Duration::from_ticks(deadline.saturating_sub(now))
}

/// Milliseconds to ticks, saturating (the library's own conversions
/// overflow for huge values).
pub(crate) fn ms_to_ticks(ms: u64) -> u64 {
    let t = u128::from(ms)
        .saturating_mul(u128::from(TICK_HZ))
        .checked_div(1000)
        .unwrap_or(0);
    u64::try_from(t).unwrap_or(u64::MAX)
}

/// Ticks to milliseconds (truncating, saturating).
pub(crate) fn ticks_to_ms(ticks: u64) -> u64 {
    let ms = u128::from(ticks)
        .saturating_mul(1000)
        .checked_div(u128::from(TICK_HZ))
        .unwrap_or(0);
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// Whether a deadline is still ahead of `now`. A deadline saturated at the
/// end of time never passes (at `Instant::MAX` a block must still hold).
pub(crate) fn running(deadline: Tick, now: Tick) -> bool {
    deadline > now || deadline == Tick::MAX
}

/// `min(first × growth^n, max)`, saturating, rounded down at every step
/// (the escalation of blocks and of penalty delays): `d₀ = min(first,
/// max)`, `dᵢ₊₁ = min(⌊dᵢ × growth⌋, max)` as [`Growth`] defines it. The
/// loop stops early once `d` reaches `max` or stops changing (a factor of 1,
/// or a fractional factor too small to add a tick), so it runs at most
/// `min(n, log(max / first) / log(growth))` times; for an integral factor
/// of 2 or more that is at most 64 steps.
pub(crate) fn grown(first: u64, growth: Growth, n: u32, max: u64) -> u64 {
    let mut d = first.min(max);
    for _ in 0..n {
        let next = growth.grow(d).min(max);
        if next == d {
            break;
        }
        d = next;
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

    #[test]
    fn growth_is_fixed_point_and_rounds_down() {
        let g = Growth::from_thousandths;
        // Integral factors are exact and saturate.
        assert_eq!(Growth::times(2).grow(u64::MAX / 2), u64::MAX - 1);
        assert_eq!(Growth::times(2).grow(u64::MAX), u64::MAX);
        assert_eq!(Growth::times(u32::MAX), g(u32::MAX));
        assert_eq!(Growth::ONE.grow(12_345), 12_345);
        // Fractional ones round down to the tick, without a wider integer.
        assert_eq!(g(1500).grow(3), 4);
        assert_eq!(g(1500).grow(1_000_001), 1_500_001);
        assert_eq!(g(1001).grow(999), 999);
        assert_eq!(g(2001).grow(u64::MAX / 2), u64::MAX);
        for (d, t) in [(7u64, 1234u32), (999_999_999_999, 4_294_967_295), (1, 1)] {
            let exact = u128::from(d) * u128::from(t) / 1000;
            assert_eq!(u128::from(g(t).grow(d)), exact);
        }
        // Display (no allocator here: a small buffer).
        struct Buf([u8; 16], usize);
        impl core::fmt::Write for Buf {
            fn write_str(&mut self, s: &str) -> core::fmt::Result {
                let end = self.1 + s.len();
                let dst = self.0.get_mut(self.1..end).ok_or(core::fmt::Error)?;
                dst.copy_from_slice(s.as_bytes());
                self.1 = end;
                Ok(())
            }
        }
        for (t, shown) in [(1500, "1.5"), (1125, "1.125"), (1050, "1.05"), (3000, "3")] {
            let mut b = Buf([0; 16], 0);
            assert!(core::fmt::Write::write_fmt(&mut b, format_args!("{}", g(t))).is_ok());
            assert_eq!(b.0.get(..b.1), Some(shown.as_bytes()));
        }
    }

    #[test]
    fn grown_steps_round_down_and_stop_at_max_or_a_fixed_point() {
        let g = Growth::from_thousandths;
        // 15 min × 1.5^n up to a day, in whole ticks.
        let m = 60_000_000u64;
        let seq: [u64; 6] = core::array::from_fn(|n| grown(15 * m, g(1500), n as u32, 1440 * m));
        assert_eq!(
            seq,
            [
                15 * m,
                22 * m + 30_000_000,
                2_025_000_000,
                3_037_500_000,
                4_556_250_000,
                6_834_375_000
            ]
        );
        // Rounded down per step: 3 → 4 → 6 → 9 → 13.
        assert_eq!(grown(3, g(1500), 4, 100), 13);
        // A factor that adds nothing stops at once, however large n.
        assert_eq!(grown(999, g(1001), u32::MAX, u64::MAX), 999);
        assert_eq!(grown(5, Growth::ONE, u32::MAX, 10), 5);
        // Integral factors: the old behaviour, saturating at max.
        assert_eq!(grown(1, Growth::times(2), u32::MAX, u64::MAX), u64::MAX);
        assert_eq!(grown(7, Growth::times(3), 2, 50), 50);
        assert_eq!(grown(70, Growth::times(3), 0, 50), 50);
    }
}
