//! Bytes per tracked key at 1 000 000 keys, measured with a counting global
//! allocator, for the portcullis host `Limiter` and governor's keyed
//! limiter (DashMap store); `size_of` for the core's fixed tables.
//!
//! ```sh
//! cargo run --release -p portcullis-bench --features governor --bin memory
//! ```
//! Needs about 1.5 GB of RAM. Feature-gated so `cargo test` never builds it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::mem::size_of;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use portcullis_bench::{at, distinct_ipv4, host_limiter, KEYS, PER_MINUTE};
use portcullis_core::internals::{BoxedCold, Entry, FixedStore, GrowLog};
use portcullis_core::FixedLimiter;

/// Counts live heap bytes and allocation calls.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static CALLS: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let now = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
    CALLS.fetch_add(1, Ordering::Relaxed);
}

// SAFETY: every call forwards to `System` with the caller's layout; the
// counters are plain atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = System.alloc(l);
        if !p.is_null() {
            grew(l.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(l);
        if !p.is_null() {
            grew(l.size());
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l);
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = System.realloc(p, l, new);
        if !q.is_null() {
            LIVE.fetch_sub(l.size(), Ordering::Relaxed);
            grew(new);
        }
        q
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

struct Mark {
    live: usize,
    calls: usize,
}

fn mark() -> Mark {
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
    Mark {
        live: LIVE.load(Ordering::Relaxed),
        calls: CALLS.load(Ordering::Relaxed),
    }
}

fn show(name: &str, m: &Mark, keys: usize) {
    let live = LIVE.load(Ordering::Relaxed) - m.live;
    let peak = PEAK.load(Ordering::Relaxed) - m.live;
    let calls = CALLS.load(Ordering::Relaxed) - m.calls;
    println!(
        "{name:<34} keys {keys:>9}  live {:>7.1} MiB  {:>6.1} B/key  (peak {:>6.1} B/key, {:.2} allocs/key)",
        live as f64 / (1 << 20) as f64,
        live as f64 / keys as f64,
        peak as f64 / keys as f64,
        calls as f64 / keys as f64,
    );
}

fn fixed<const N: usize, const W: usize>() {
    let total = size_of::<FixedLimiter<N, W>>();
    let keys = FixedStore::<N, W>::MAX_ENTRIES;
    println!(
        "FixedLimiter<{N}, {W}>{:<pad$} size_of {total:>10} B  {:>6} B/slot  {:>6} B/usable key (max {keys} keys)",
        "",
        total / N,
        total / keys,
        pad = 14usize.saturating_sub(format!("{N}{W}").len()),
    );
}

fn main() {
    let keys = distinct_ipv4(KEYS, 0x706f_7274);
    println!(
        "size_of: core Entry<64> (fixed tables) {} B, host entry (boxed cold part, growing log) {} B, IpAddr {} B",
        size_of::<Entry<64>>(),
        size_of::<Entry<64, BoxedCold, GrowLog<64>>>(),
        size_of::<std::net::IpAddr>()
    );
    // 1 request per key (the headline figure), then 8 (the criterion
    // workloads' steady state) and 50 (every key at its limit): the log's
    // own bytes grow with its events, governor's state does not.
    for per_key in [1u64, 8, 50] {
        println!("# bytes per tracked key, {KEYS} distinct IPv4 keys, {per_key} request(s) each");
        {
            let m = mark();
            let host = host_limiter(KEYS);
            for r in 0..per_key {
                for (i, &k) in keys.iter().enumerate() {
                    host.check_request_at(k, at(r * KEYS as u64 + i as u64));
                }
            }
            assert_eq!(host.len(), KEYS);
            show("portcullis host Limiter (W=64)", &m, KEYS);
        }
        {
            let m = mark();
            let gov: DefaultKeyedRateLimiter<std::net::IpAddr> = RateLimiter::keyed(
                Quota::per_minute(NonZeroU32::new(PER_MINUTE).unwrap_or(NonZeroU32::MIN)),
            );
            for _ in 0..per_key {
                for k in &keys {
                    let _ = gov.check_key(k);
                }
            }
            assert_eq!(gov.len(), KEYS);
            show("governor keyed (DashMap, IpAddr)", &m, KEYS);
        }
    }

    println!("# fixed tables (no heap): size_of");
    fixed::<32, 16>();
    fixed::<1024, 50>();
    fixed::<1024, 64>();
    fixed::<32768, 50>();
}
