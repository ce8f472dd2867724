//! Time for the host: the monotonic clock fed to the core, tied to
//! wall-clock time for persistence.
//!
//! The clock starts near zero at process start, so a snapshot's history
//! lies before it; the core places such times at their wall-clock age
//! anyway (its ticks run `portcullis_core::MAX_LOOKBACK` ahead of ours:
//! see `portcullis_core::record`), which is why [`wall`] is all an import
//! or export needs.
//!
//! `now` reads `std::time::Instant` (the OS monotonic clock, a vDSO call
//! on Linux: no lock, no syscall). embassy-time's std driver takes a
//! process-wide mutex on every read, which two threads deciding at once
//! would fight over, so the library never calls `embassy_time::Instant::now`
//! and does not enable that driver.

use embassy_time::Instant;
use portcullis_core::WallClock;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// The clock's zero, set on first use.
fn zero() -> std::time::Instant {
    static ZERO: OnceLock<std::time::Instant> = OnceLock::new();
    *ZERO.get_or_init(std::time::Instant::now)
}

/// The monotonic now: microseconds since the first read.
pub fn now() -> Instant {
    let us = zero().elapsed().as_micros();
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
