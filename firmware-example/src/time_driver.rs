//! `embassy-time` driver on the Cortex-M SysTick timer.
//!
//! SysTick runs from the core clock (50 MHz after [`crate::board::init_clocks`])
//! and fires every millisecond: the tick rate is `embassy-time`'s
//! `tick-hz-1_000`. Its handler advances a 64-bit tick counter and, when the
//! earliest deadline in the timer queue has come, dequeues the expired
//! timers and wakes their tasks. Nothing busy-waits: between interrupts the
//! executor sleeps in `WFE`.
//!
//! A periodic tick rather than a one-shot alarm: SysTick is a 24-bit counter
//! (at most ~335 ms at 50 MHz), and QEMU's Stellaris general-purpose timers
//! cannot be read back (`GPTMTAR` reads 0), so a free-running counter plus
//! a compare is not available on this board model. 1000 short interrupts a
//! second cost little and keep the driver small; a real LM3S6965 could use
//! a GPTM in 32-bit one-shot mode for tickless operation.
//!
//! **Lost ticks under QEMU.** QEMU raises SysTick from its own timer
//! thread; when the emulated core is stalled (translating code, host
//! busy) several periods can elapse before it takes the exception, and the
//! single NVIC pending bit merges them: ticks are lost and guest time runs
//! slow (we measured 2–11 %). The count is therefore floored, in every
//! tick, at the seconds counted by general-purpose timer 0 in RTC mode,
//! whose count QEMU derives from its virtual clock without loss. Guest
//! time then lags wall time by less than one second's worth of lost ticks
//! and catches up each second. (On silicon interrupts are not merged
//! like this; there the RTC mode also needs a 32.768 kHz input, so a real
//! board would keep a GPTM as a free-running 32-bit counter instead.)
//!
//! The timer queue is the integrated queue of `embassy-time-queue-utils`
//! (storage inside each task, so no fixed capacity to size).

use core::cell::{Cell, RefCell};
use core::task::Waker;

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::SYST;
use cortex_m_rt::exception;
use critical_section::{CriticalSection, Mutex};
use embassy_time_driver::Driver;
use embassy_time_queue_utils::Queue;

/// Core clock in Hz (set by `board::init_clocks`).
pub const CORE_HZ: u32 = 50_000_000;

const TICK_HZ: u32 = embassy_time_driver::TICK_HZ as u32;
const _: () = assert!(embassy_time_driver::TICK_HZ == 1_000);

struct SysTickDriver {
    /// Milliseconds since [`init`].
    ticks: Mutex<Cell<u64>>,
    /// Earliest deadline in `queue` (`u64::MAX`: none).
    alarm: Mutex<Cell<u64>>,
    queue: Mutex<RefCell<Queue>>,
}

embassy_time_driver::time_driver_impl!(static DRIVER: SysTickDriver = SysTickDriver {
    ticks: Mutex::new(Cell::new(0)),
    alarm: Mutex::new(Cell::new(u64::MAX)),
    queue: Mutex::new(RefCell::new(Queue::new())),
});

impl SysTickDriver {
    /// Wake every expired timer and re-arm for the next one.
    fn dispatch(&self, cs: CriticalSection<'_>, now: u64) {
        let mut queue = self.queue.borrow_ref_mut(cs);
        let next = queue.next_expiration(now);
        self.alarm.borrow(cs).set(next);
    }
}

impl Driver for SysTickDriver {
    fn now(&self) -> u64 {
        critical_section::with(|cs| self.ticks.borrow(cs).get())
    }

    fn schedule_wake(&self, at: u64, waker: &Waker) {
        critical_section::with(|cs| {
            let changed = self.queue.borrow_ref_mut(cs).schedule_wake(at, waker);
            if changed {
                // Recompute the earliest deadline; an `at` already past is
                // woken right here rather than a tick later.
                let now = self.ticks.borrow(cs).get();
                self.dispatch(cs, now);
            }
        });
    }
}

const GPTM0: usize = 0x4003_0000;
const GPTM_CFG: usize = GPTM0;
const GPTM_CTL: usize = GPTM0 + 0x0C;
const GPTM_IMR: usize = GPTM0 + 0x18;
const GPTM_TAMATCHR: usize = GPTM0 + 0x30;
const GPTM_TAR: usize = GPTM0 + 0x48;
const GPTM_CFG_RTC: u32 = 1;
const GPTM_CTL_TAEN: u32 = 1;

fn gptm_write(reg: usize, v: u32) {
    // SAFETY: a GPTM0 register.
    unsafe { core::ptr::write_volatile(reg as *mut u32, v) }
}

/// Seconds since [`init`], counted by GPTM0 in RTC mode.
fn rtc_seconds() -> u32 {
    // SAFETY: a GPTM0 register.
    unsafe { core::ptr::read_volatile(GPTM_TAR as *const u32) }
}

/// Start GPTM0 as a 1 Hz RTC counter (no interrupt; read by SysTick).
fn init_rtc() {
    crate::board::enable_rcgc1(crate::board::RCGC1_TIMER0);
    gptm_write(GPTM_CTL, 0);
    gptm_write(GPTM_CFG, GPTM_CFG_RTC);
    gptm_write(GPTM_TAMATCHR, u32::MAX); // never wrap to 0
    gptm_write(GPTM_IMR, 0);
    gptm_write(GPTM_CTL, GPTM_CTL_TAEN);
}

/// Start SysTick at [`TICK_HZ`] from the core clock, with its interrupt,
/// and the RTC counter that corrects it.
pub fn init(mut syst: SYST) {
    init_rtc();
    syst.disable_counter();
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(CORE_HZ / TICK_HZ - 1);
    syst.clear_current();
    syst.enable_interrupt();
    syst.enable_counter();
}

/// Sub-tick jitter: the SysTick down-counter (for seeding, not for time).
pub fn counter_noise() -> u32 {
    SYST::get_current()
}

#[exception]
fn SysTick() {
    critical_section::with(|cs| {
        let ticks = DRIVER.ticks.borrow(cs);
        // One more tick, but never behind the lossless RTC second count.
        let floor = u64::from(rtc_seconds()) * u64::from(TICK_HZ);
        let now = ticks.get().wrapping_add(1).max(floor);
        ticks.set(now);
        if now >= DRIVER.alarm.borrow(cs).get() {
            DRIVER.dispatch(cs, now);
        }
    });
}
