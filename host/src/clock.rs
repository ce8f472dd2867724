//! Time for the host: the monotonic clock the core reads (embassy-time's
//! std driver) tied to wall-clock time for persistence.

use embassy_time::Instant;
use portcullis_core::WallClock;
use std::time::{SystemTime, UNIX_EPOCH};

/// The monotonic now.
pub fn now() -> Instant {
    Instant::now()
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
