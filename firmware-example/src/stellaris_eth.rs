//! `embassy-net-driver` for the Ethernet controller of the TI (Luminary
//! Micro) Stellaris LM3S6965, as QEMU's `lm3s6965evb` models it
//! (`-nic user,model=stellaris`).
//!
//! # The hardware
//!
//! The MAC sits at `0x4004_8000` on IRQ 42 and moves frames through two
//! FIFOs, one 32-bit `MACDATA` register for both directions (datasheet
//! "Ethernet Controller"; QEMU `hw/net/stellaris_enet.c`):
//!
//! * **Receive.** `MACNP` counts whole frames waiting. The first word read
//!   from `MACDATA` holds the frame length in its low 16 bits — the length
//!   *including* these 2 bytes and the 4-byte FCS — and the frame's first
//!   two bytes in its high 16 bits; the rest follows in little-endian words.
//!   Reading the last word of a frame moves to the next one.
//! * **Transmit.** The first word written holds the length of the payload
//!   after the 14-byte Ethernet header in its low 16 bits and the first two
//!   frame bytes in its high 16; the rest follows, and writing `NEWTX` to
//!   `MACTR` sends the frame (padding and FCS are added by the MAC with
//!   `PADEN | CRC`). `NEWTX` reads back 1 until the FIFO is free again.
//! * **Interrupts.** `MACRIS` (read) / `MACIACK` (write 1 to clear) and the
//!   mask `MACIM`. We use `RXINT` (frame received) and `TXEMP` (TX FIFO
//!   empty); both wake the network task through [`AtomicWaker`]s.
//!
//! # Design
//!
//! Interrupt-driven, one frame at a time. [`Driver::receive`] and
//! [`Driver::transmit`] register the task's waker *before* looking at the
//! hardware, so an interrupt between the check and the return cannot be
//! lost; the interrupt handler acknowledges the cause and wakes. Frames are
//! copied between the FIFO and one 1536-byte buffer per direction, because
//! smoltcp wants a contiguous `&mut [u8]`.
//!
//! Link state: the PHY's MII registers are not modelled by QEMU (reads
//! return 0), so the link is reported up once the MAC is enabled. On real
//! hardware read PHY register 1 (`MR1`, bit 2 link status) through
//! `MACMCTL`/`MACMRXD` instead.

use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{AtomicU32, Ordering};
use core::task::Context;

use embassy_net_driver::{
    Capabilities, Driver, HardwareAddress, LinkState, RxToken as RxTokenT, TxToken as TxTokenT,
};
use embassy_sync::waitqueue::AtomicWaker;
use static_cell::ConstStaticCell;

use crate::board;

const BASE: usize = 0x4004_8000;
const MACRIS: usize = BASE + 0x00; // read: raw interrupt status; write: MACIACK
const MACIM: usize = BASE + 0x04;
const MACRCTL: usize = BASE + 0x08;
const MACTCTL: usize = BASE + 0x0C;
const MACDATA: usize = BASE + 0x10;
const MACIA0: usize = BASE + 0x14;
const MACIA1: usize = BASE + 0x18;
const MACTHR: usize = BASE + 0x1C;
const MACNP: usize = BASE + 0x34;
const MACTR: usize = BASE + 0x38;

const INT_RX: u32 = 1 << 0;
const INT_TXER: u32 = 1 << 1;
const INT_TXEMP: u32 = 1 << 2;
const INT_FOV: u32 = 1 << 3;
const INT_RXER: u32 = 1 << 4;

const RCTL_RXEN: u32 = 1 << 0;
const RCTL_AMUL: u32 = 1 << 1;
const RCTL_BADCRC: u32 = 1 << 3;
const RCTL_RSTFIFO: u32 = 1 << 4;

const TCTL_TXEN: u32 = 1 << 0;
const TCTL_PADEN: u32 = 1 << 1;
const TCTL_CRC: u32 = 1 << 2;
const TCTL_DUPLEX: u32 = 1 << 3;

const TR_NEWTX: u32 = 1 << 0;

/// Largest frame without FCS (1500-byte MTU + 14-byte header).
pub const MTU: usize = 1514;
const BUF: usize = 1536;
const ETH_HEADER: usize = 14;

/// Frame buffers, in `.bss` (not on the stack while the driver is built).
static RX_BUF: ConstStaticCell<[u8; BUF]> = ConstStaticCell::new([0; BUF]);
static TX_BUF: ConstStaticCell<[u8; BUF]> = ConstStaticCell::new([0; BUF]);

static RX_WAKER: AtomicWaker = AtomicWaker::new();
static TX_WAKER: AtomicWaker = AtomicWaker::new();

fn rd(reg: usize) -> u32 {
    // SAFETY: `reg` is a register of the Ethernet controller above.
    unsafe { read_volatile(reg as *const u32) }
}

fn wr(reg: usize, v: u32) {
    // SAFETY: as in `rd`.
    unsafe { write_volatile(reg as *mut u32, v) }
}

/// Frame counters, for the log.
#[derive(Default, Clone, Copy, defmt::Format)]
pub struct Counters {
    /// Frames received.
    pub rx: u32,
    /// Frames sent.
    pub tx: u32,
    /// Frames dropped: too long for the buffer or malformed.
    pub dropped: u32,
}

/// Receive side: the buffer a frame is copied into.
struct RxSide {
    buf: &'static mut [u8; BUF],
}

/// Transmit side: the buffer smoltcp fills.
struct TxSide {
    buf: &'static mut [u8; BUF],
}

/// The Stellaris Ethernet MAC as an `embassy-net` device. Create it once
/// with [`StellarisEth::new`].
pub struct StellarisEth {
    mac: [u8; 6],
    rx: RxSide,
    tx: TxSide,
}

impl StellarisEth {
    /// Enable the MAC clock, program the station address `mac`, reset the
    /// receive FIFO, enable RX and TX with automatic padding and FCS, and
    /// unmask the controller's interrupt in the NVIC.
    ///
    /// Call once: a second driver would share the same FIFOs (a second
    /// call panics when taking the frame buffers).
    pub fn new(mac: [u8; 6]) -> Self {
        board::enable_rcgc2(board::RCGC2_EMAC0 | board::RCGC2_EPHY0);
        wr(MACIM, 0);
        wr(MACRCTL, 0);
        wr(MACTCTL, 0);
        wr(MACIA0, u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]));
        wr(MACIA1, u32::from(mac[4]) | (u32::from(mac[5]) << 8));
        // Transmit only on NEWTX (threshold off).
        wr(MACTHR, 0x3F);
        wr(MACRCTL, RCTL_RSTFIFO);
        wr(MACRCTL, RCTL_RXEN | RCTL_AMUL | RCTL_BADCRC);
        wr(MACTCTL, TCTL_TXEN | TCTL_PADEN | TCTL_CRC | TCTL_DUPLEX);
        wr(MACRIS, 0x7F); // acknowledge anything stale
        wr(MACIM, INT_RX | INT_TXEMP | INT_TXER | INT_FOV | INT_RXER);
        // SAFETY: the handler only touches the wakers and MACRIS.
        unsafe { cortex_m::peripheral::NVIC::unmask(board::Irq::Ethernet) };
        StellarisEth {
            mac,
            rx: RxSide { buf: RX_BUF.take() },
            tx: TxSide { buf: TX_BUF.take() },
        }
    }

    fn tx_free() -> bool {
        rd(MACTR) & TR_NEWTX == 0
    }
}

static RX_FRAMES: AtomicU32 = AtomicU32::new(0);
static TX_FRAMES: AtomicU32 = AtomicU32::new(0);
static DROPPED: AtomicU32 = AtomicU32::new(0);

/// Frame counters so far.
pub fn counters() -> Counters {
    Counters {
        rx: RX_FRAMES.load(Ordering::Relaxed),
        tx: TX_FRAMES.load(Ordering::Relaxed),
        dropped: DROPPED.load(Ordering::Relaxed),
    }
}

impl RxSide {
    /// Read the next frame out of the FIFO into `buf`; its length, or
    /// `None` when it was dropped (too long or too short).
    fn pull_frame(&mut self) -> Option<usize> {
        let first = rd(MACDATA);
        // Bytes in the FIFO for this frame: 2 (length) + frame + 4 (FCS).
        let total = (first & 0xFFFF) as usize;
        let words = total.div_ceil(4);
        let len = total.saturating_sub(6);
        let fits = len <= BUF && len >= ETH_HEADER;
        if fits {
            let b = first.to_le_bytes();
            self.buf[0] = b[2];
            self.buf[1] = b[3];
        }
        // Always drain the whole frame so the FIFO stays in step.
        for i in 1..words {
            let w = rd(MACDATA).to_le_bytes();
            if fits {
                for (j, byte) in w.iter().enumerate() {
                    let at = 4 * i + j - 2;
                    if at < len {
                        self.buf[at] = *byte;
                    }
                }
            }
        }
        if fits {
            RX_FRAMES.fetch_add(1, Ordering::Relaxed);
            Some(len)
        } else {
            DROPPED.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

impl TxSide {
    /// Write `buf[..len]` to the TX FIFO and start transmission.
    fn push_frame(&mut self, len: usize) {
        let len = len.clamp(ETH_HEADER, MTU);
        let frame = &self.buf[..len];
        let data_len = (len - ETH_HEADER) as u32;
        wr(
            MACDATA,
            data_len | (u32::from(frame[0]) << 16) | (u32::from(frame[1]) << 24),
        );
        for chunk in frame[2..].chunks(4) {
            let mut w = [0u8; 4];
            w[..chunk.len()].copy_from_slice(chunk);
            wr(MACDATA, u32::from_le_bytes(w));
        }
        wr(MACTR, TR_NEWTX);
        TX_FRAMES.fetch_add(1, Ordering::Relaxed);
    }
}

/// A received frame, read from the FIFO when consumed.
pub struct RxToken<'a> {
    rx: &'a mut RxSide,
}

/// Room for one frame in the TX FIFO.
pub struct TxToken<'a> {
    tx: &'a mut TxSide,
}

impl RxTokenT for RxToken<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        // `receive` saw MACNP > 0. A frame that had to be dropped is handed
        // up as an empty slice, which smoltcp discards as malformed.
        match self.rx.pull_frame() {
            Some(len) => f(&mut self.rx.buf[..len]),
            None => f(&mut []),
        }
    }
}

impl TxTokenT for TxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let len = len.min(MTU);
        let r = f(&mut self.tx.buf[..len]);
        self.tx.push_frame(len);
        r
    }
}

impl Driver for StellarisEth {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, cx: &mut Context) -> Option<(RxToken<'_>, TxToken<'_>)> {
        RX_WAKER.register(cx.waker());
        if rd(MACNP) == 0 {
            return None;
        }
        // smoltcp may answer right away (ARP, ACK): it needs TX room too.
        TX_WAKER.register(cx.waker());
        if !Self::tx_free() {
            return None;
        }
        Some((RxToken { rx: &mut self.rx }, TxToken { tx: &mut self.tx }))
    }

    fn transmit(&mut self, cx: &mut Context) -> Option<TxToken<'_>> {
        TX_WAKER.register(cx.waker());
        if Self::tx_free() {
            Some(TxToken { tx: &mut self.tx })
        } else {
            None
        }
    }

    fn link_state(&mut self, _cx: &mut Context) -> LinkState {
        // See the module doc: no PHY model in QEMU, the MAC is enabled.
        LinkState::Up
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        caps.max_transmission_unit = MTU;
        caps.max_burst_size = Some(1);
        caps
    }

    fn hardware_address(&self) -> HardwareAddress {
        HardwareAddress::Ethernet(self.mac)
    }
}

/// IRQ 42: acknowledge what happened and wake the network task.
///
/// # Safety
///
/// Only the NVIC calls this (it is in the vector table).
#[no_mangle]
pub unsafe extern "C" fn ETHERNET() {
    let ris = rd(MACRIS);
    wr(MACRIS, ris); // MACIACK: clear exactly what we saw
    if ris & (INT_RX | INT_FOV | INT_RXER) != 0 {
        RX_WAKER.wake();
    }
    if ris & (INT_TXEMP | INT_TXER) != 0 {
        TX_WAKER.wake();
    }
}
