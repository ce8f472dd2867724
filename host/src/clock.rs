//! Time for the host: the monotonic clock fed to the core, tied to
//! wall-clock time for persistence.
//!
//! The clock starts near zero at process start, so a snapshot's history
//! lies before it; the core places such times at their wall-clock age
//! anyway (its ticks run `portcullis_core::MAX_LOOKBACK` ahead of ours:
//! see `portcullis_core::record`), which is why [`wall`] is all an import
//! or export needs.
//!
//! `now` reads the CPU's time-stamp counter through `quanta` (what
//! governor uses; calibrated against the OS clock, falls back to it where
//! the TSC is unusable): a few nanoseconds and no lock. embassy-time's std
//! driver takes a process-wide mutex on every read, which two threads
//! deciding at once would fight over.

use embassy_time::Instant;
use portcullis_core::WallClock;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// The clock and its zero, set on first use.
fn clock() -> &'static (quanta::Clock, quanta::Instant) {
    static CLOCK: OnceLock<(quanta::Clock, quanta::Instant)> = OnceLock::new();
    CLOCK.get_or_init(|| {
        let c = quanta::Clock::new();
        let zero = c.now();
        (c, zero)
    })
}

/// The monotonic now: microseconds since the first read.
pub fn now() -> Instant {
    let (c, zero) = clock();
    let us = c.now().saturating_duration_since(*zero).as_micros();
    Instant::from_micros(u64::try_from(us).unwrap_or(u64::MAX))
}

/// Unix time in milliseconds.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The monotonic now and the wall-clock now, read together.
pub fn wall() -> WallClock {
    WallClock {
        now: now(),
        unix_ms: unix_ms(),
    }
}
