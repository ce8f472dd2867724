//! The core's own [`Instant`] and [`Duration`]: a `u64` count of ticks at
//! [`TICK_HZ`] ticks per second.
//!
//! The core has no clock: every call takes `now` from the caller. It used
//! to take `embassy_time`'s types, which a std server had to compile with
//! all of embassy-time's dependencies (embedded-hal 0.2 and 1.0, `nb`,
//! `void`) for two `u64` wrappers. These are the same two wrappers, with
//! the same constructors and accessors, and no dependency.
//!
//! ## The tick rate
//!
//! * Without the `embassy` feature, a tick is a microsecond: [`TICK_HZ`]
//!   is 1 000 000, embassy-time's own default rate, so a std host (whose
//!   clock reads microseconds) keeps its resolution.
//! * With the `embassy` feature, [`TICK_HZ`] is `embassy_time::TICK_HZ`,
//!   whatever `tick-hz-*` feature the firmware gives embassy-time, and
//!   [`Instant`] and [`Duration`] convert to and from
//!   `embassy_time::{Instant, Duration}` with `From`/`Into` tick for tick:
//!   exact, free, and a firmware's spans (`FIXED_MAX_SPAN` ticks of a
//!   fixed table's 32-bit log offsets: 49.7 days at 1 kHz) and table sizes
//!   stay what they are with embassy's types.
//!
//! One rate per build, like embassy-time's: a rate of the core's own (a
//! `tick-hz-*` feature set) could disagree with embassy-time's, and every
//! conversion would then round.
//!
//! ## Arithmetic saturates
//!
//! The core never panics, so the operators saturate where embassy-time's
//! panic: `Instant::MAX + d` is `Instant::MAX`, `a - b` for `b` later than
//! `a` is [`Duration::MIN`] (zero). The `checked_*` methods say when a
//! result would not fit.

use core::fmt;
use core::ops::{Add, AddAssign, Div, Mul, Sub, SubAssign};

/// Ticks per second of [`Instant`] and [`Duration`].
///
/// * Without the `embassy` feature: 1 000 000, a tick is a microsecond
///   (embassy-time's default rate; a std host's clock reads microseconds).
/// * With the `embassy` feature: `embassy_time::TICK_HZ`, whatever
///   `tick-hz-*` feature the firmware gives embassy-time, and the core's
///   times convert to and from embassy-time's with `From`/`Into`, tick
///   for tick, so a firmware's spans ([`FIXED_MAX_SPAN`](crate::FIXED_MAX_SPAN)
///   ticks: 49.7 days at 1 kHz) and table sizes are those of embassy's
///   types.
///
/// One rate per build, as with embassy-time: a rate of the core's own
/// (its own `tick-hz-*` features) could disagree with embassy-time's and
/// make every conversion round.
#[cfg(not(feature = "embassy"))]
pub const TICK_HZ: u64 = 1_000_000;

/// Ticks per second of [`Instant`] and [`Duration`].
///
/// * Without the `embassy` feature: 1 000 000, a tick is a microsecond
///   (embassy-time's default rate; a std host's clock reads microseconds).
/// * With the `embassy` feature: `embassy_time::TICK_HZ`, whatever
///   `tick-hz-*` feature the firmware gives embassy-time, and the core's
///   times convert to and from embassy-time's with `From`/`Into`, tick
///   for tick, so a firmware's spans ([`FIXED_MAX_SPAN`](crate::FIXED_MAX_SPAN)
///   ticks: 49.7 days at 1 kHz) and table sizes are those of embassy's
///   types.
///
/// One rate per build, as with embassy-time: a rate of the core's own
/// (its own `tick-hz-*` features) could disagree with embassy-time's and
/// make every conversion round.
#[cfg(feature = "embassy")]
pub const TICK_HZ: u64 = embassy_time::TICK_HZ;

const _: () = assert!(TICK_HZ > 0, "a tick rate of zero");

/// `v × num / den`, rounded down, saturating at `u64::MAX` (`den = 0`
/// saturates too).
const fn scale_floor(v: u64, num: u64, den: u64) -> u64 {
    let q = match (v as u128)
        .saturating_mul(num as u128)
        .checked_div(den as u128)
    {
        Some(q) => q,
        None => u128::MAX,
    };
    if q > u64::MAX as u128 {
        u64::MAX
    } else {
        // Fits: checked just above.
        #[allow(clippy::cast_possible_truncation)]
        {
            q as u64
        }
    }
}

/// `v × num / den`, rounded up, saturating at `u64::MAX` (`den = 0`
/// saturates too).
const fn scale_ceil(v: u64, num: u64, den: u64) -> u64 {
    let p = (v as u128).saturating_mul(num as u128);
    let q = match (p.checked_div(den as u128), p.checked_rem(den as u128)) {
        (Some(q), Some(0)) => q,
        (Some(q), Some(_)) => q.saturating_add(1),
        _ => u128::MAX,
    };
    if q > u64::MAX as u128 {
        u64::MAX
    } else {
        // Fits: checked just above.
        #[allow(clippy::cast_possible_truncation)]
        {
            q as u64
        }
    }
}

/// A span of time in ticks ([`TICK_HZ`] per second).
///
/// Constructors from seconds, milliseconds and microseconds round up (a
/// delay is never shorter than asked) and saturate at [`Duration::MAX`];
/// the `as_*` accessors round down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Duration {
    ticks: u64,
}

impl Duration {
    /// Zero.
    pub const MIN: Duration = Duration { ticks: 0 };
    /// The longest span, `u64::MAX` ticks: "forever" where a decision
    /// says so (a ban's `retry_after`).
    pub const MAX: Duration = Duration { ticks: u64::MAX };

    /// `ticks` ticks.
    pub const fn from_ticks(ticks: u64) -> Duration {
        Duration { ticks }
    }

    /// `secs` seconds (saturating).
    pub const fn from_secs(secs: u64) -> Duration {
        Duration {
            ticks: secs.saturating_mul(TICK_HZ),
        }
    }

    /// `millis` milliseconds, rounded up to a tick (saturating).
    pub const fn from_millis(millis: u64) -> Duration {
        Duration {
            ticks: scale_ceil(millis, TICK_HZ, 1_000),
        }
    }

    /// `micros` microseconds, rounded up to a tick (saturating).
    pub const fn from_micros(micros: u64) -> Duration {
        Duration {
            ticks: scale_ceil(micros, TICK_HZ, 1_000_000),
        }
    }

    /// The tick count.
    pub const fn as_ticks(&self) -> u64 {
        self.ticks
    }

    /// Whole seconds (rounded down).
    pub const fn as_secs(&self) -> u64 {
        self.ticks / TICK_HZ
    }

    /// Whole milliseconds (rounded down).
    pub const fn as_millis(&self) -> u64 {
        scale_floor(self.ticks, 1_000, TICK_HZ)
    }

    /// Whole microseconds (rounded down, saturating).
    pub const fn as_micros(&self) -> u64 {
        scale_floor(self.ticks, 1_000_000, TICK_HZ)
    }

    /// `self + rhs`, or `None` if it would not fit.
    pub const fn checked_add(self, rhs: Duration) -> Option<Duration> {
        match self.ticks.checked_add(rhs.ticks) {
            Some(ticks) => Some(Duration { ticks }),
            None => None,
        }
    }

    /// `self - rhs`, or `None` if `rhs` is longer.
    pub const fn checked_sub(self, rhs: Duration) -> Option<Duration> {
        match self.ticks.checked_sub(rhs.ticks) {
            Some(ticks) => Some(Duration { ticks }),
            None => None,
        }
    }

    /// `self × rhs`, or `None` if it would not fit.
    pub const fn checked_mul(self, rhs: u32) -> Option<Duration> {
        match self.ticks.checked_mul(rhs as u64) {
            Some(ticks) => Some(Duration { ticks }),
            None => None,
        }
    }

    /// `self / rhs` (rounded down), or `None` for `rhs == 0`.
    pub const fn checked_div(self, rhs: u32) -> Option<Duration> {
        match self.ticks.checked_div(rhs as u64) {
            Some(ticks) => Some(Duration { ticks }),
            None => None,
        }
    }

    /// `self + rhs`, saturating at [`Duration::MAX`].
    pub const fn saturating_add(self, rhs: Duration) -> Duration {
        Duration {
            ticks: self.ticks.saturating_add(rhs.ticks),
        }
    }

    /// `self - rhs`, saturating at zero.
    pub const fn saturating_sub(self, rhs: Duration) -> Duration {
        Duration {
            ticks: self.ticks.saturating_sub(rhs.ticks),
        }
    }
}

/// A point in time: ticks since the caller's clock zero (boot, process
/// start). The core never reads a clock; the caller passes `now`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Instant {
    ticks: u64,
}

impl Instant {
    /// Tick zero.
    pub const MIN: Instant = Instant { ticks: 0 };
    /// The end of time: `u64::MAX` ticks.
    pub const MAX: Instant = Instant { ticks: u64::MAX };

    /// `ticks` ticks after zero.
    pub const fn from_ticks(ticks: u64) -> Instant {
        Instant { ticks }
    }

    /// `secs` seconds after zero (saturating).
    pub const fn from_secs(secs: u64) -> Instant {
        Instant {
            ticks: secs.saturating_mul(TICK_HZ),
        }
    }

    /// `millis` milliseconds after zero, rounded down to a tick (saturating).
    pub const fn from_millis(millis: u64) -> Instant {
        Instant {
            ticks: scale_floor(millis, TICK_HZ, 1_000),
        }
    }

    /// `micros` microseconds after zero, rounded down to a tick (saturating).
    pub const fn from_micros(micros: u64) -> Instant {
        Instant {
            ticks: scale_floor(micros, TICK_HZ, 1_000_000),
        }
    }

    /// Ticks since zero.
    pub const fn as_ticks(&self) -> u64 {
        self.ticks
    }

    /// Whole seconds since zero.
    pub const fn as_secs(&self) -> u64 {
        self.ticks / TICK_HZ
    }

    /// Whole milliseconds since zero.
    pub const fn as_millis(&self) -> u64 {
        scale_floor(self.ticks, 1_000, TICK_HZ)
    }

    /// Whole microseconds since zero (saturating).
    pub const fn as_micros(&self) -> u64 {
        scale_floor(self.ticks, 1_000_000, TICK_HZ)
    }

    /// Time from `earlier` to `self`; zero if `earlier` is later.
    pub const fn duration_since(&self, earlier: Instant) -> Duration {
        self.saturating_duration_since(earlier)
    }

    /// Time from `earlier` to `self`, or `None` if `earlier` is later.
    pub const fn checked_duration_since(&self, earlier: Instant) -> Option<Duration> {
        match self.ticks.checked_sub(earlier.ticks) {
            Some(ticks) => Some(Duration { ticks }),
            None => None,
        }
    }

    /// Time from `earlier` to `self`; zero if `earlier` is later.
    pub const fn saturating_duration_since(&self, earlier: Instant) -> Duration {
        Duration {
            ticks: self.ticks.saturating_sub(earlier.ticks),
        }
    }

    /// `self + d`, or `None` past the end of time.
    pub const fn checked_add(&self, d: Duration) -> Option<Instant> {
        match self.ticks.checked_add(d.ticks) {
            Some(ticks) => Some(Instant { ticks }),
            None => None,
        }
    }

    /// `self - d`, or `None` before zero.
    pub const fn checked_sub(&self, d: Duration) -> Option<Instant> {
        match self.ticks.checked_sub(d.ticks) {
            Some(ticks) => Some(Instant { ticks }),
            None => None,
        }
    }

    /// `self + d`, saturating at [`Instant::MAX`].
    pub const fn saturating_add(self, d: Duration) -> Instant {
        Instant {
            ticks: self.ticks.saturating_add(d.ticks),
        }
    }

    /// `self - d`, saturating at zero.
    pub const fn saturating_sub(self, d: Duration) -> Instant {
        Instant {
            ticks: self.ticks.saturating_sub(d.ticks),
        }
    }
}

impl Add for Duration {
    type Output = Duration;
    /// Saturating.
    fn add(self, rhs: Duration) -> Duration {
        self.saturating_add(rhs)
    }
}

impl AddAssign for Duration {
    fn add_assign(&mut self, rhs: Duration) {
        *self = self.saturating_add(rhs);
    }
}

impl Sub for Duration {
    type Output = Duration;
    /// Saturating at zero.
    fn sub(self, rhs: Duration) -> Duration {
        self.saturating_sub(rhs)
    }
}

impl SubAssign for Duration {
    fn sub_assign(&mut self, rhs: Duration) {
        *self = self.saturating_sub(rhs);
    }
}

impl Mul<u32> for Duration {
    type Output = Duration;
    /// Saturating.
    fn mul(self, rhs: u32) -> Duration {
        Duration {
            ticks: self.ticks.saturating_mul(u64::from(rhs)),
        }
    }
}

impl Mul<Duration> for u32 {
    type Output = Duration;
    /// Saturating.
    fn mul(self, rhs: Duration) -> Duration {
        Duration {
            ticks: rhs.ticks.saturating_mul(u64::from(self)),
        }
    }
}

impl Div<u32> for Duration {
    type Output = Duration;
    /// Rounded down; dividing by zero gives [`Duration::MAX`] (no panic).
    fn div(self, rhs: u32) -> Duration {
        self.checked_div(rhs).unwrap_or(Duration::MAX)
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    /// Saturating at [`Instant::MAX`].
    fn add(self, d: Duration) -> Instant {
        self.saturating_add(d)
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, d: Duration) {
        *self = self.saturating_add(d);
    }
}

impl Sub<Duration> for Instant {
    type Output = Instant;
    /// Saturating at zero.
    fn sub(self, d: Duration) -> Instant {
        self.saturating_sub(d)
    }
}

impl SubAssign<Duration> for Instant {
    fn sub_assign(&mut self, d: Duration) {
        *self = self.saturating_sub(d);
    }
}

impl Sub for Instant {
    type Output = Duration;
    /// Saturating at zero.
    fn sub(self, earlier: Instant) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ticks", self.ticks)
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ticks", self.ticks)
    }
}

impl From<Duration> for core::time::Duration {
    /// Through whole microseconds (rounded down).
    fn from(d: Duration) -> Self {
        core::time::Duration::from_micros(d.as_micros())
    }
}

impl From<core::time::Duration> for Duration {
    /// Through whole microseconds, rounded up to a tick, saturating.
    fn from(d: core::time::Duration) -> Self {
        Duration::from_micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }
}

impl core::iter::Sum for Duration {
    /// Saturating.
    fn sum<I: Iterator<Item = Duration>>(iter: I) -> Self {
        iter.fold(Duration::MIN, Duration::saturating_add)
    }
}

#[cfg(feature = "embassy")]
mod embassy {
    //! Tick-for-tick conversions to and from embassy-time (same [`TICK_HZ`]).

    use super::{Duration, Instant, TICK_HZ};

    const _: () = assert!(TICK_HZ == embassy_time::TICK_HZ);

    impl From<embassy_time::Instant> for Instant {
        fn from(i: embassy_time::Instant) -> Self {
            Instant::from_ticks(i.as_ticks())
        }
    }

    impl From<Instant> for embassy_time::Instant {
        fn from(i: Instant) -> Self {
            embassy_time::Instant::from_ticks(i.as_ticks())
        }
    }

    impl From<embassy_time::Duration> for Duration {
        fn from(d: embassy_time::Duration) -> Self {
            Duration::from_ticks(d.as_ticks())
        }
    }

    impl From<Duration> for embassy_time::Duration {
        fn from(d: Duration) -> Self {
            embassy_time::Duration::from_ticks(d.as_ticks())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_round_like_embassy_time_and_saturate() {
        // At 1 MHz: milliseconds are exact, seconds too.
        assert_eq!(Duration::from_secs(3).as_ticks(), 3 * TICK_HZ);
        assert_eq!(Duration::from_millis(1500).as_millis(), 1500);
        assert_eq!(Duration::from_micros(7).as_micros(), 7);
        assert_eq!(Duration::from_secs(u64::MAX), Duration::MAX);
        assert_eq!(Duration::from_millis(u64::MAX), Duration::MAX);
        assert_eq!(Instant::from_secs(u64::MAX), Instant::MAX);
        assert_eq!(Instant::from_millis(2).as_micros(), 2000);
        assert_eq!(Duration::MAX.as_secs(), u64::MAX / TICK_HZ);
        // Rounding: durations up, instants down.
        assert_eq!(scale_ceil(1, 1_000, 1_000_000), 1);
        assert_eq!(scale_floor(1, 1_000, 1_000_000), 0);
        assert_eq!(scale_ceil(2_000, 1_000, 1_000_000), 2);
    }

    #[test]
    fn operators_saturate_instead_of_panicking() {
        let t = Instant::from_secs(10);
        let d = Duration::from_secs(4);
        assert_eq!(t + d, Instant::from_secs(14));
        assert_eq!(t - d, Instant::from_secs(6));
        assert_eq!(Instant::MAX + d, Instant::MAX);
        assert_eq!(Instant::MIN - d, Instant::MIN);
        assert_eq!(t - Instant::from_secs(14), Duration::MIN);
        assert_eq!(Instant::from_secs(14) - t, d);
        assert_eq!(t.checked_duration_since(Instant::from_secs(11)), None);
        assert_eq!(Duration::MAX + d, Duration::MAX);
        assert_eq!(d - Duration::MAX, Duration::MIN);
        assert_eq!(d * 3, Duration::from_secs(12));
        assert_eq!(3 * d, Duration::from_secs(12));
        assert_eq!(Duration::MAX * 2, Duration::MAX);
        assert_eq!(d / 4, Duration::from_secs(1));
        assert_eq!(d / 0, Duration::MAX);
        assert_eq!(
            [d, d, Duration::MAX].into_iter().sum::<Duration>(),
            Duration::MAX
        );
        let mut m = t;
        m += d;
        m -= d;
        assert_eq!(m, t);
    }

    #[test]
    fn std_durations_round_trip_through_microseconds() {
        let d = core::time::Duration::from_millis(1234);
        assert_eq!(core::time::Duration::from(Duration::from(d)), d);
        assert_eq!(Duration::from(core::time::Duration::MAX), Duration::MAX);
    }

    #[cfg(feature = "embassy")]
    #[test]
    fn embassy_times_convert_tick_for_tick() {
        let e = embassy_time::Instant::from_ticks(123_456);
        assert_eq!(Instant::from(e).as_ticks(), 123_456);
        assert_eq!(embassy_time::Instant::from(Instant::from(e)), e);
        let d = embassy_time::Duration::from_millis(250);
        assert_eq!(Duration::from(d), Duration::from_millis(250));
        assert_eq!(embassy_time::Duration::from(Duration::from(d)), d);
    }
}
