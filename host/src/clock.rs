//! Time for the host: the monotonic clock fed to the core, tied to
//! wall-clock time for persistence.
//!
//! The clock starts near zero at process start, so a snapshot's history
//! lies before it; the core places such times at their wall-clock age
//! anyway (its ticks run `portcullis_core::MAX_LOOKBACK` ahead of ours:
//! see `portcullis_core::Record`), which is why [`wall`] is all an import
//! or export needs.
//!
//! `now` reads `std::time::Instant` (the OS monotonic clock, a vDSO call
//! on Linux: no lock, no syscall) into the core's [`Instant`], a
//! microsecond per tick. The core has no clock of its own, and the library
//! no embassy-time (whose std driver takes a process-wide mutex on every
//! read, which two threads deciding at once would fight over).

//! ## One reading per request
//!
//! A request's time is read once, at the edge, with [`read`]: a [`Now`]
//! holds the monotonic instant the rules run on and the Unix time read
//! with it. Everything below takes that `Now`: the limiter decides at
//! `now.mono()`, the records it persists carry times through
//! [`Now::wall`], and the Redis fleet decides at [`Now::unix_us`]. A
//! library user may still pass a bare [`Instant`] (it converts into a
//! `Now` whose Unix time is derived only if something is persisted).
//!
use portcullis_core::Instant;
use portcullis_core::WallClock;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// The clock's zero, set on first use.
#[cfg(not(all(
    feature = "coarse-clock",
    any(target_os = "linux", target_os = "android", target_os = "freebsd")
)))]
fn zero() -> std::time::Instant {
    static ZERO: OnceLock<std::time::Instant> = OnceLock::new();
    *ZERO.get_or_init(std::time::Instant::now)
}

/// The monotonic now: microseconds since the first read.
#[cfg(not(all(
    feature = "coarse-clock",
    any(target_os = "linux", target_os = "android", target_os = "freebsd")
)))]
pub fn now() -> Instant {
    let us = zero().elapsed().as_micros();
    Instant::from_micros(u64::try_from(us).unwrap_or(u64::MAX))
}

/// The monotonic now: microseconds since the first read (`CLOCK_MONOTONIC`,
/// the clock `std::time::Instant` reads, here read directly so that
/// [`now_coarse`] shares its zero).
#[cfg(all(
    feature = "coarse-clock",
    any(target_os = "linux", target_os = "android", target_os = "freebsd")
))]
pub fn now() -> Instant {
    coarse::since_zero(rustix::time::ClockId::Monotonic)
}

/// The monotonic now from the kernel's coarse clock
/// (`CLOCK_MONOTONIC_COARSE`), on the same zero as [`now`]: the time of the
/// last timer tick, so it lags the precise clock by up to one tick (1–4
/// ms, the kernel's `HZ`), read without the time-stamp counter at about a
/// third of the cost (BENCHMARKS.md, "Host hot key"). nginx decides on a
/// millisecond clock cached once per event-loop turn; this is the same
/// trade. Feature `coarse-clock`, on Linux and FreeBSD (elsewhere it is
/// [`now`]).
#[cfg(feature = "coarse-clock")]
pub fn now_coarse() -> Instant {
    #[cfg(all(
        feature = "coarse-clock",
        any(target_os = "linux", target_os = "android", target_os = "freebsd")
    ))]
    return coarse::since_zero(rustix::time::ClockId::MonotonicCoarse);
    #[cfg(not(all(
        feature = "coarse-clock",
        any(target_os = "linux", target_os = "android", target_os = "freebsd")
    )))]
    return now();
}

/// [`read`] on the coarse clocks: [`now_coarse`] and the Unix time of
/// `CLOCK_REALTIME_COARSE`. One per request, at the edge, where a tick's
/// resolution will do (a rate limit's window, a block's length).
#[cfg(feature = "coarse-clock")]
pub fn read_coarse() -> Now {
    #[cfg(all(
        feature = "coarse-clock",
        any(target_os = "linux", target_os = "android", target_os = "freebsd")
    ))]
    return Now::new(
        now_coarse(),
        coarse::micros(rustix::time::ClockId::RealtimeCoarse),
    );
    #[cfg(not(all(
        feature = "coarse-clock",
        any(target_os = "linux", target_os = "android", target_os = "freebsd")
    )))]
    return read();
}

/// The clocks read through `rustix` (vDSO calls on Linux).
#[cfg(all(
    feature = "coarse-clock",
    any(target_os = "linux", target_os = "android", target_os = "freebsd")
))]
mod coarse {
    use super::*;
    use rustix::time::{clock_gettime, ClockId};

    /// Microseconds of `id` (0 before its zero).
    pub(super) fn micros(id: ClockId) -> u64 {
        let t = clock_gettime(id);
        let (s, ns) = (u64::try_from(t.tv_sec), u64::try_from(t.tv_nsec));
        match (s, ns) {
            (Ok(s), Ok(ns)) => s.saturating_mul(1_000_000).saturating_add(ns / 1000),
            _ => 0,
        }
    }

    /// `id` (a monotonic clock) as microseconds since the first read of
    /// `CLOCK_MONOTONIC` here.
    pub(super) fn since_zero(id: ClockId) -> Instant {
        static ZERO: OnceLock<u64> = OnceLock::new();
        let zero = *ZERO.get_or_init(|| micros(ClockId::Monotonic));
        Instant::from_micros(micros(id).saturating_sub(zero))
    }
}

/// Unix time in microseconds (0 before 1970).
pub fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Unix time in milliseconds.
pub fn unix_ms() -> u64 {
    unix_us() / 1000
}

/// The monotonic now and the wall-clock now, read together (as
/// [`read`]`().wall()`).
pub fn wall() -> WallClock {
    read().wall()
}

/// One reading of time: the monotonic instant and the Unix time at it.
/// Read it once per request with [`read`] and pass it down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    mono: Instant,
    /// `None`: not read; derived from the clocks when first needed.
    unix_us: Option<u64>,
}

impl Now {
    /// A reading made elsewhere (a simulated clock, a test): `mono` on this
    /// module's monotonic clock, `unix_us` the Unix time at it.
    pub const fn new(mono: Instant, unix_us: u64) -> Now {
        Now {
            mono,
            unix_us: Some(unix_us),
        }
    }

    /// The monotonic instant the rules run on.
    pub const fn mono(self) -> Instant {
        self.mono
    }

    /// Unix time in microseconds at [`mono`](Self::mono) (what the Redis
    /// fleet decides on). For a `Now` made from a bare [`Instant`], the
    /// wall clock read now, moved by how far the instant lies from now
    /// (back for a past instant, ahead for a future one).
    pub fn unix_us(self) -> u64 {
        self.unix_us.unwrap_or_else(|| {
            let (at, mono, unix) = (self.mono.as_micros(), now().as_micros(), unix_us());
            if at <= mono {
                unix.saturating_sub(mono - at)
            } else {
                unix.saturating_add(at - mono)
            }
        })
    }

    /// Unix time in milliseconds at [`mono`](Self::mono).
    pub fn unix_ms(self) -> u64 {
        self.unix_us() / 1000
    }

    /// The tie between the two clocks that records are exported and
    /// imported with.
    pub fn wall(self) -> WallClock {
        WallClock {
            now: self.mono,
            unix_ms: self.unix_ms(),
        }
    }
}

impl From<Instant> for Now {
    /// A bare monotonic instant (from [`now`]); its Unix time is derived
    /// only if asked for.
    fn from(mono: Instant) -> Now {
        Now {
            mono,
            unix_us: None,
        }
    }
}

/// Read the time: once per request, at the edge.
pub fn read() -> Now {
    let mono = now();
    Now::new(mono, unix_us())
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_core::Duration;

    /// A reading holds both clocks; a bare instant gets the Unix time at
    /// that instant, before or after now, and the same wall tie.
    #[test]
    fn one_reading_and_instants_map_to_their_unix_time() {
        let r = read();
        assert_eq!(r.unix_ms(), r.unix_us() / 1000);
        assert_eq!(r.wall().now, r.mono());
        assert_eq!(r.wall().unix_ms, r.unix_ms());
        let fixed = Now::new(Instant::from_secs(5), 1_700_000_000_000_000);
        assert_eq!(fixed.wall().unix_ms, 1_700_000_000_000);

        let t = now();
        let ahead = Now::from(t + Duration::from_secs(100));
        let base = Now::from(t).unix_us();
        // Clocks move on between reads: allow a second of slack.
        let near = |a: u64, b: u64| a.abs_diff(b) < 1_000_000;
        assert!(near(ahead.unix_us(), base + 100_000_000));
        // An instant in the past (here: `t`, seen from a later now).
        std::thread::sleep(std::time::Duration::from_millis(300));
        let past = Now::from(t).unix_us();
        assert!(
            past.abs_diff(base) < 100_000,
            "{past} vs {base}: not moved by the age"
        );
        assert!(near(base, r.unix_us()));
    }

    /// The coarse clocks share the precise ones' zero and stay within a
    /// few ticks of them (no timing asserted: 1 s of slack).
    #[cfg(feature = "coarse-clock")]
    #[test]
    fn the_coarse_clocks_read_the_same_time() {
        let (precise, coarse) = (read(), read_coarse());
        let near = |a: u64, b: u64| a.abs_diff(b) < 1_000_000;
        assert!(near(precise.mono().as_micros(), coarse.mono().as_micros()));
        assert!(near(precise.unix_us(), coarse.unix_us()));
        let mut last = now_coarse();
        for _ in 0..1000 {
            let t = now_coarse();
            assert!(t >= last, "monotonic");
            last = t;
        }
    }
}
