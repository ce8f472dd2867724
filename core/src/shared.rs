//! Feature `critical-section`: share one limiter between interrupt handlers
//! and tasks through `critical_section::Mutex<RefCell<_>>`.

use core::cell::RefCell;

/// A value behind a critical-section mutex.
pub struct Shared<T> {
    inner: critical_section::Mutex<RefCell<T>>,
}

/// [`Shared::with`] was called again from inside its own closure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Reentered;

impl core::fmt::Display for Reentered {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("shared limiter used re-entrantly")
    }
}

impl<T> Shared<T> {
    /// Wrap `value` (usable in a `static`).
    pub const fn new(value: T) -> Self {
        Shared {
            inner: critical_section::Mutex::new(RefCell::new(value)),
        }
    }

    /// Run `f` on the value inside a critical section. Never panics: a
    /// re-entrant call gets [`Reentered`].
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> Result<R, Reentered> {
        critical_section::with(|cs| match self.inner.borrow(cs).try_borrow_mut() {
            Ok(mut v) => Ok(f(&mut v)),
            Err(_) => Err(Reentered),
        })
    }
}

impl core::error::Error for Reentered {}
