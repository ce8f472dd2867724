//! Memory is known at compile time: print it for the documented
#![allow(
    clippy::arithmetic_side_effects,
    clippy::panic,
    clippy::unwrap_used,
    clippy::indexing_slicing
)]
//! configurations and hold the crate docs to it.
use core::mem::size_of;
use portcullis_core::internals::{CompactCold, CompactLog, FixedEntry, FixedStore};
use portcullis_core::FixedLimiter;

fn row<const N: usize, const W: usize>(name: &str) -> (usize, usize) {
    let total = size_of::<FixedLimiter<N, W>>();
    let store = size_of::<FixedStore<N, W>>();
    // Store overhead outside the slot array is a few words: rounded away.
    let per_slot = store / N;
    println!(
        "{name:<28} total {total:>9} B  slot {per_slot:>4} B  entry {:>4} B  keys {}",
        size_of::<FixedEntry<W>>(),
        FixedStore::<N, W>::MAX_ENTRIES
    );
    (per_slot, total)
}

#[test]
fn sizes_of_documented_configurations() {
    let docs = include_str!("../src/lib.rs");
    for (name, (per_slot, total)) in [
        (
            "FixedLimiter<32, 16>",
            row::<32, 16>("FixedLimiter<32, 16>"),
        ),
        (
            "FixedLimiter<64, 16>",
            row::<64, 16>("FixedLimiter<64, 16>"),
        ),
        (
            "FixedLimiter<70, 16>",
            row::<70, 16>("FixedLimiter<70, 16>"),
        ),
        (
            "FixedLimiter<256, 16>",
            row::<256, 16>("FixedLimiter<256, 16>"),
        ),
        (
            "FixedLimiter<1024, 50>",
            row::<1024, 50>("FixedLimiter<1024, 50>"),
        ),
    ] {
        let line = docs
            .lines()
            .find(|l| l.contains(&format!("`{name}`")))
            .unwrap_or_else(|| panic!("crate docs list {name}"));
        let fmt = |n: usize| {
            let s = n.to_string();
            let mut out = String::new();
            for (i, c) in s.chars().enumerate() {
                if i > 0 && (s.len() - i) % 3 == 0 {
                    out.push(' ');
                }
                out.push(c);
            }
            out
        };
        if cfg!(target_pointer_width = "64") {
            assert!(
                line.contains(&format!("| {} |", per_slot)),
                "{name}: docs say {line:?}, measured {per_slot} B/slot"
            );
            assert!(
                line.contains(&fmt(total)),
                "{name}: docs say {line:?}, measured {total} B"
            );
        }
    }
}

/// Issue 18's firmware target: the bytes the firmware table took before
/// it (`FixedLimiter<32, 16>`, 28 keys: 16 224 B on x86-64, 15 680 B on
/// thumbv7m) hold at least twice the keys. Compact logs alone gave 1.75×
/// (`FixedLimiter<55, 16>`, 49 keys); sharing one cold part between the
/// request keys' violations/block/ban and the login keys' lock/slots
/// (no key kind uses both) takes a slot from 256 to 200 B, so
/// `FixedLimiter<64, 16>` (56 keys, 2×) fits and the firmware's
/// `FixedLimiter<70, 16>` (62 keys, 2.2×) is the largest that fits on both
/// targets (on thumbv7m `TABLES` is 15 608 B: see firmware-example/README.md).
#[test]
fn the_firmware_table_bytes_hold_twice_the_keys() {
    const BEFORE_X86_64: usize = 16_224;
    const BEFORE_THUMB: usize = 15_680;
    const BEFORE_KEYS: usize = 28;
    let before = if cfg!(target_pointer_width = "64") {
        BEFORE_X86_64
    } else {
        BEFORE_THUMB
    };
    let two_x = size_of::<FixedLimiter<64, 16>>();
    assert!(
        two_x <= before,
        "FixedLimiter<64, 16> is {two_x} B > {before} B"
    );
    assert_eq!(FixedStore::<64, 16>::MAX_ENTRIES, 2 * BEFORE_KEYS);
    let firmware = size_of::<FixedLimiter<70, 16>>();
    assert!(
        firmware <= before,
        "FixedLimiter<70, 16> is {firmware} B > {before} B"
    );
    assert_eq!(FixedStore::<70, 16>::MAX_ENTRIES, 62);
    if cfg!(target_pointer_width = "64") {
        // 73 slots no longer fit here (71 already not on thumbv7m, where
        // a slot is also 200 B and the rest 1 600 B).
        assert!(size_of::<FixedLimiter<73, 16>>() > before);
        // The cold part: the request half (76 B violation log, two 8 B
        // deadlines, level, ban flag) with the variant tag, where both
        // halves side by side were 152 B.
        assert_eq!(size_of::<CompactCold>(), 96);
        assert_eq!(size_of::<FixedEntry<16>>(), 172);
    }
    // A log of 16 timestamps: a 64-bit base and 16 32-bit offsets, 76 B
    // (a heapless deque of 16 u64 was 152 B).
    assert_eq!(size_of::<CompactLog<16>>(), 76);
}
