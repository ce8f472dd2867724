//! Quick steady-state timing of workload 2 (uniform over 1 000 000 keys),
//! pass by pass, to watch the cost per call as each key's log grows:
//! a development aid between criterion runs, not a result.
//!
//! ```sh
//! cargo run --release -p portcullis-bench --features governor --bin steady [PASSES]
//! ```
//! Each pass is 1 000 000 calls on random keys (so about one more event
//! per key per pass); both limiters see the same keys in the same order.

use std::hint::black_box;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Instant;

use portcullis_bench::{at, distinct_ipv4, host_limiter, splitmix64, KEYS, PER_MINUTE};

fn main() {
    let passes: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(8);
    let keys = distinct_ipv4(KEYS, 1);
    let mut s = 42u64;
    let stream: Vec<IpAddr> = (0..KEYS)
        .map(|_| keys[(splitmix64(&mut s) % KEYS as u64) as usize])
        .collect();

    let l = host_limiter(KEYS);
    let g: governor::DefaultKeyedRateLimiter<IpAddr> = governor::RateLimiter::keyed(
        governor::Quota::per_minute(NonZeroU32::new(PER_MINUTE).unwrap_or(NonZeroU32::MIN)),
    );
    let mut t = 0u64;
    for k in &keys {
        l.check_request_at(*k, at(t));
        let _ = g.check_key(k);
        t += 1;
    }
    println!("pass  portcullis ns/op  governor ns/op  ratio");
    for p in 0..passes {
        // Alternate in blocks of 50 000 calls so drift of the machine
        // falls on both alike.
        let (mut ours, mut theirs, mut ok) = (0u128, 0u128, 0u64);
        for block in stream.chunks(50_000) {
            let start = Instant::now();
            for k in block {
                ok += u64::from(
                    l.check_request_at(black_box(*k), at(t))
                        .decision
                        .is_allowed(),
                );
                t += 1;
            }
            ours += start.elapsed().as_nanos();
            let start = Instant::now();
            for k in block {
                ok += u64::from(g.check_key(black_box(k)).is_ok());
            }
            theirs += start.elapsed().as_nanos();
        }
        let (ours, theirs) = (ours as f64 / KEYS as f64, theirs as f64 / KEYS as f64);
        println!(
            "{p:4}  {ours:16.1}  {theirs:14.1}  {:5.2}   ({ok} allowed)",
            ours / theirs
        );
    }
}
