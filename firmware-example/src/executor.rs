//! A thread-mode Embassy executor that sleeps with `WFI`.
//!
//! `embassy-executor`'s own Cortex-M thread executor sleeps with `WFE`,
//! which QEMU's TCG treats as a mere yield: the emulated core then spins at
//! ~100 % host CPU and SysTick interrupts arrive late, so the 1 kHz tick
//! count fell ~20 % behind wall time. `WFI` halts the emulated core until
//! an interrupt is pending (on silicon both sleep the same way).
//!
//! The pender (called when a task is woken, from a task or an interrupt)
//! sets a flag; the loop polls, then checks the flag with interrupts
//! masked and only then executes `WFI`. An interrupt that arrives after
//! the check stays pending and makes `WFI` return at once, so no wake-up
//! is lost.

use core::marker::PhantomData;
use core::sync::atomic::{AtomicBool, Ordering};

use embassy_executor::{raw, Spawner};

/// Set when some task was woken and the run queue needs a poll.
static WORK: AtomicBool = AtomicBool::new(true);

#[export_name = "__pender"]
fn pender(_context: *mut ()) {
    WORK.store(true, Ordering::Release);
}

/// The executor; one per program, in a `static`.
pub struct Executor {
    inner: raw::Executor,
    not_send: PhantomData<*mut ()>,
}

impl Executor {
    /// A new executor.
    pub fn new() -> Self {
        Executor {
            inner: raw::Executor::new(core::ptr::null_mut()),
            not_send: PhantomData,
        }
    }

    /// Spawn the initial tasks with `init`, then poll forever, sleeping in
    /// `WFI` whenever no task is ready.
    pub fn run(&'static mut self, init: impl FnOnce(Spawner)) -> ! {
        init(self.inner.spawner());
        loop {
            WORK.store(false, Ordering::Release);
            // SAFETY: `poll` is not called re-entrantly: only from here.
            unsafe { self.inner.poll() };
            cortex_m::interrupt::free(|_| {
                if !WORK.load(Ordering::Acquire) {
                    cortex_m::asm::wfi();
                }
            });
        }
    }
}
