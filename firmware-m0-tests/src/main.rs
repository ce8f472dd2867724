//! portcullis-core's rules, checked on a Cortex-M0.
//!
//! A bare-metal image for QEMU's `microbit` machine (Nordic nRF51822: a
//! Cortex-M0, ARMv6-M, no compare-and-swap; 16 KiB of RAM, 256 KiB of
//! flash). It runs a representative subset of the core's rule tests
//! (`core/tests/rules.rs`) against a [`FixedLimiter`] sized for that RAM,
//! prints one line per check over semihosting (`PASS name` or
//! `FAIL name: line N: what`), then `DONE` and exits QEMU with status 0
//! when every check passed, 1 otherwise. `tests/tests/firmware_m0.rs`
//! builds it, runs it and asserts every check passed by name.
//!
//! The core runs without its `embassy` feature here: its own 1 MHz ticks,
//! the same arithmetic as on a std host, on a 32-bit core with no 64-bit
//! multiply or divide instruction.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

mod checks;

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};
use portcullis_core::FixedLimiter;

/// The table every check uses: 16 slots (14 keys), 16 timestamps per key.
pub type Limiter = FixedLimiter<16, 16>;

#[entry]
fn main() -> ! {
    hprintln!(
        "portcullis-m0-tests: FixedLimiter<16, 16> is {} B, {} keys",
        core::mem::size_of::<Limiter>(),
        Limiter::MAX_KEYS
    );
    let mut table = checks::new_table();
    let Some(l) = table.as_mut() else {
        hprintln!("FAIL setup: the configuration is refused");
        debug::exit(debug::EXIT_FAILURE);
        #[allow(clippy::empty_loop)]
        loop {}
    };
    let mut failed = 0u32;
    for (i, (name, check)) in checks::ALL.iter().enumerate() {
        match check(l, checks::Epoch::of(i)) {
            Ok(()) => hprintln!("PASS {}", name),
            Err(why) => {
                failed = failed.saturating_add(1);
                hprintln!("FAIL {}: {}", name, why);
            }
        }
    }
    hprintln!("DONE {} checks, {} failed", checks::ALL.len(), failed);
    debug::exit(if failed == 0 {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    #[allow(clippy::empty_loop)]
    loop {}
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    hprintln!("PANIC {}", info);
    debug::exit(debug::EXIT_FAILURE);
    #[allow(clippy::empty_loop)]
    loop {}
}
