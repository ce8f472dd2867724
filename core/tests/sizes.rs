//! Memory is known at compile time: print it for the documented
#![allow(
    clippy::arithmetic_side_effects,
    clippy::panic,
    clippy::unwrap_used,
    clippy::indexing_slicing
)]
//! configurations and hold the crate docs to it.
use core::mem::size_of;
use portcullis_core::{Entry, FixedLimiter, FixedStore};

fn row<const N: usize, const W: usize>(name: &str) -> (usize, usize) {
    let total = size_of::<FixedLimiter<N, W>>();
    let store = size_of::<FixedStore<N, W>>();
    // Store overhead outside the slot array is a few words: rounded away.
    let per_slot = store / N;
    println!(
        "{name:<28} total {total:>9} B  slot {per_slot:>4} B  entry {:>4} B  keys {}",
        size_of::<Entry<W>>(),
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
