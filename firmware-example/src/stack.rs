//! Stack high-water mark: the free stack is painted with a pattern at
//! boot, and the deepest overwritten word tells the peak use.
//!
//! The stack runs from the top of RAM (`_stack_start`) down to the end of
//! `.bss`/`.uninit` (`_stack_end`); RAM is capped at 64 KiB in `memory.x`.

use core::ptr::{addr_of, read_volatile, write_volatile};

const PAINT: u32 = 0xDEAD_BEEF;
/// Left unpainted below the current stack pointer when painting.
const MARGIN: usize = 256;

extern "C" {
    static _stack_start: u32;
    static _stack_end: u32;
}

fn bounds() -> (usize, usize) {
    // Linker symbols: only their addresses are used.
    (
        addr_of!(_stack_end) as usize,
        addr_of!(_stack_start) as usize,
    )
}

/// Bytes of RAM the stack may use.
pub fn size() -> usize {
    let (lo, hi) = bounds();
    hi - lo
}

/// Paint everything below the current stack pointer (minus a margin).
/// Call first thing in `main`.
pub fn paint() {
    let (lo, _) = bounds();
    let sp = cortex_m::register::msp::read() as usize;
    let mut p = (lo + 3) & !3;
    while p + MARGIN < sp {
        // SAFETY: between the end of static data and the live stack.
        unsafe { write_volatile(p as *mut u32, PAINT) };
        p += 4;
    }
}

/// Deepest stack use so far, in bytes.
pub fn high_water() -> usize {
    let (lo, hi) = bounds();
    let mut p = (lo + 3) & !3;
    // SAFETY: reads within the stack region.
    while p < hi && unsafe { read_volatile(p as *const u32) } == PAINT {
        p += 4;
    }
    hi - p
}
