//! Memory is known at compile time: print it for the documented
#![allow(
    clippy::arithmetic_side_effects,
    clippy::panic,
    clippy::unwrap_used,
    clippy::indexing_slicing
)]
//! configurations and hold the crate docs to it.
use core::mem::size_of;
use portcullis_core::{FixedEntry, FixedLimiter, FixedStore};

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
            "FixedLimiter<55, 16>",
            row::<55, 16>("FixedLimiter<55, 16>"),
        ),
        (
            "FixedLimiter<64, 16>",
            row::<64, 16>("FixedLimiter<64, 16>"),
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

/// Issue 18's firmware target, with compact logs: the bytes the firmware
/// table took before them (`FixedLimiter<32, 16>`, 28 keys: 16 224 B on
/// x86-64, 15 680 B on thumbv7m) now hold 49 keys (`FixedLimiter<55, 16>`:
/// 15 712 B on x86-64, 15 680 B for the firmware's `TABLES` on thumbv7m,
/// 1.75×). The full 2× (`FixedLimiter<64, 16>`, 56 keys) needs about 28
/// more bytes off each slot: see `BENCHMARKS.md`.
#[test]
fn compact_logs_hold_more_keys_in_the_firmware_table_bytes() {
    const BEFORE_X86_64: usize = 16_224;
    const BEFORE_THUMB: usize = 15_680;
    const BEFORE_KEYS: usize = 28;
    let before = if cfg!(target_pointer_width = "64") {
        BEFORE_X86_64
    } else {
        BEFORE_THUMB
    };
    let now = size_of::<FixedLimiter<55, 16>>();
    assert!(
        now <= before,
        "FixedLimiter<55, 16> is {now} B > {before} B"
    );
    let keys = FixedStore::<55, 16>::MAX_ENTRIES;
    assert_eq!(keys, 49);
    assert!(keys * 4 >= BEFORE_KEYS * 7, "{keys} keys: less than 1.75x");
    // A log of 16 timestamps: a 64-bit base and 16 32-bit offsets, 76 B
    // (a heapless deque of 16 u64 was 152 B).
    assert_eq!(size_of::<portcullis_core::CompactLog<16>>(), 76);
    // Not yet 2x (documents the gap; flip when a slot is <= 228 B).
    assert!(size_of::<FixedLimiter<64, 16>>() > before);
}
