//! LM3S6965 board support the rest of the firmware needs: the system clock,
//! the interrupt vector table, the factory MAC address and a seed.
//!
//! No PAC is used: the handful of System Control registers are written by
//! address (LM3S6965 datasheet, "System Control", base `0x400F_E000`).

use core::ptr::{read_volatile, write_volatile};

const SYSCTL: usize = 0x400F_E000;
const RIS: usize = SYSCTL + 0x050;
const RCC: usize = SYSCTL + 0x060;
const RCGC1: usize = SYSCTL + 0x104;
const RCGC2: usize = SYSCTL + 0x108;
const USER0: usize = SYSCTL + 0x1E0;
const USER1: usize = SYSCTL + 0x1E4;

const RCC_SYSDIV_SHIFT: u32 = 23;
const RCC_SYSDIV_MASK: u32 = 0xF << RCC_SYSDIV_SHIFT;
const RCC_USESYSDIV: u32 = 1 << 22;
const RCC_PWRDN: u32 = 1 << 13;
const RCC_BYPASS: u32 = 1 << 11;
const RCC_XTAL_MASK: u32 = 0xF << 6;
const RCC_XTAL_8MHZ: u32 = 0xE << 6;
const RCC_OSCSRC_MASK: u32 = 0x3 << 4;
const RIS_PLLLRIS: u32 = 1 << 6;

/// Ethernet MAC and PHY clock gates in RCGC2.
pub const RCGC2_EMAC0: u32 = 1 << 28;
pub const RCGC2_EPHY0: u32 = 1 << 30;

fn rd(addr: usize) -> u32 {
    // SAFETY: `addr` is one of the System Control registers above.
    unsafe { read_volatile(addr as *const u32) }
}

fn wr(addr: usize, v: u32) {
    // SAFETY: as in `rd`.
    unsafe { write_volatile(addr as *mut u32, v) }
}

/// Run the core at 50 MHz: 8 MHz crystal, PLL (200 MHz) / 4, as TI's
/// examples do. QEMU derives the core clock from `SYSDIV` alone; a real
/// chip needs the PLL lock wait, which QEMU signals at once.
pub fn init_clocks() {
    let mut rcc = rd(RCC);
    // Run from the oscillator directly while the PLL is reconfigured.
    rcc |= RCC_BYPASS;
    rcc &= !RCC_USESYSDIV;
    wr(RCC, rcc);
    rcc &= !(RCC_XTAL_MASK | RCC_OSCSRC_MASK | RCC_PWRDN | RCC_SYSDIV_MASK);
    rcc |= RCC_XTAL_8MHZ | (3 << RCC_SYSDIV_SHIFT) | RCC_USESYSDIV;
    wr(RCC, rcc);
    // Bounded wait for the PLL to lock (immediate under QEMU).
    for _ in 0..100_000 {
        if rd(RIS) & RIS_PLLLRIS != 0 {
            break;
        }
    }
    wr(RCC, rcc & !RCC_BYPASS);
}

/// General-purpose timer 0 clock gate in RCGC1.
pub const RCGC1_TIMER0: u32 = 1 << 16;

/// Open the clock gates of `mask` in RCGC1.
pub fn enable_rcgc1(mask: u32) {
    wr(RCGC1, rd(RCGC1) | mask);
    cortex_m::asm::delay(16);
}

/// Open the clock gates of `mask` in RCGC2.
pub fn enable_rcgc2(mask: u32) {
    wr(RCGC2, rd(RCGC2) | mask);
    // The datasheet asks for a few cycles before touching the peripheral.
    cortex_m::asm::delay(16);
}

/// The factory MAC address from the USER0/USER1 registers (TI stores it
/// there, three bytes each; QEMU fills them from `-nic ...,mac=`).
pub fn factory_mac() -> [u8; 6] {
    let (u0, u1) = (rd(USER0), rd(USER1));
    [
        u0 as u8,
        (u0 >> 8) as u8,
        (u0 >> 16) as u8,
        u1 as u8,
        (u1 >> 8) as u8,
        (u1 >> 16) as u8,
    ]
}

/// Build-time randomness: `PORTCULLIS_BUILD_SEED` (hex, 32 digits) if set
/// when building, else a fixed constant. See README "Seed".
const BUILD_SEED: [u8; 16] = build_seed();

const fn hex(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => 0,
    }
}

const fn build_seed() -> [u8; 16] {
    let mut out = *b"portcullis-demo!";
    if let Some(s) = option_env!("PORTCULLIS_BUILD_SEED") {
        let s = s.as_bytes();
        let mut i = 0;
        while i < 16 && 2 * i + 1 < s.len() {
            out[i] = (hex(s[2 * i]) << 4) | hex(s[2 * i + 1]);
            i += 1;
        }
    }
    out
}

/// The 16-byte seed for the limiter's keyed hashes (and, folded, for
/// embassy-net's TCP sequence numbers).
///
/// This demo mixes three things that are all *guessable*: the build-time
/// constant, the device-unique factory MAC and SysTick jitter at boot. That
/// keeps keys distinct across devices but is **not** secret. A production
/// board must take the seed from its TRNG (e.g. the TRNG of a TM4C129 or an
/// STM32's RNG peripheral; the LM3S6965 has none, so it would need an
/// external source or an entropy pool saved in flash).
pub fn seed(jitter: u32) -> [u8; 16] {
    let mac = factory_mac();
    let mut s = BUILD_SEED;
    for (i, b) in mac.iter().enumerate() {
        s[i] ^= *b;
    }
    for (i, b) in jitter.to_le_bytes().iter().enumerate() {
        s[8 + i] ^= *b;
    }
    // Spread every input byte over the whole seed (xorshift-multiply).
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for chunk in s.chunks_exact_mut(8) {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        x ^= u64::from_le_bytes(w);
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x ^= x >> 31;
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    s
}

// ---------------------------------------------------------------------------
// Interrupt vector table (cortex-m-rt's `device` feature expects us to
// provide `__INTERRUPTS`). Only the Ethernet controller (IRQ 42) is used;
// every other entry is cortex-m-rt's `DefaultHandler`.

/// NVIC interrupt numbers used here.
#[derive(Clone, Copy)]
pub enum Irq {
    /// Ethernet controller.
    Ethernet = 42,
}

// SAFETY: the numbers are valid LM3S6965 IRQ numbers.
unsafe impl cortex_m::interrupt::InterruptNumber for Irq {
    fn number(self) -> u16 {
        self as u16
    }
}

/// One vector: a handler address.
#[derive(Clone, Copy)]
#[repr(C)]
pub union Vector {
    handler: unsafe extern "C" fn(),
    reserved: usize,
}

extern "C" {
    fn DefaultHandler();
}

const IRQS: usize = 43;

#[link_section = ".vector_table.interrupts"]
#[no_mangle]
#[used]
static __INTERRUPTS: [Vector; IRQS] = {
    let mut v = [Vector {
        handler: DefaultHandler,
    }; IRQS];
    v[Irq::Ethernet as usize] = Vector {
        handler: crate::stellaris_eth::ETHERNET,
    };
    v
};
