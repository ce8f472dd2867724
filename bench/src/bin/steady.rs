//! Quick steady-state timing of workload 2 (uniform over 1 000 000 keys),
//! pass by pass, to watch the cost per call as each key's log grows:
//! a development aid between criterion runs, not a result.
//!
//! ```sh
//! cargo run --release -p portcullis-bench --features governor --bin steady [PASSES [THREADS]]
//! ```
//! Each pass is 1 000 000 calls on random keys (so about one more event
//! per key per pass); both limiters see the same keys in the same order.
//! With THREADS > 1 each block of the stream is split between that many
//! threads (wall time per block, so ns/op falls as threads help);
//! `SPLIT=1` gives each of two threads the keys of its own half of the
//! shards (a diagnostic of what sharing shard state between cores costs);
//! `PEEK=1` times `peek_request_at` (the same lookups, shared lock, nothing
//! written) in place of `check_request_at`, to split a decision's cost
//! into finding the key and changing it.

use std::hint::black_box;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Instant;

use portcullis_bench::{at, distinct_ipv4, host_limiter, splitmix64, KEYS, PER_MINUTE};
use portcullis_core::{Addr, Key};

fn main() {
    let passes: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(8);
    let threads: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1)
        .max(1);
    let keys = distinct_ipv4(KEYS, 1);
    let mut s = 42u64;
    let stream: Vec<IpAddr> = (0..KEYS)
        .map(|_| keys[(splitmix64(&mut s) % KEYS as u64) as usize])
        .collect();

    let l = host_limiter(KEYS);
    // SPLIT=1 (with THREADS = 2): the first thread gets only keys of one
    // half of the shards, the second only keys of the other half, so no
    // shard's state is shared between cores (a diagnostic: a server cannot
    // choose which thread sees which client).
    let split = std::env::var_os("SPLIT").is_some();
    let peek = std::env::var_os("PEEK").is_some();
    let shard = |k: &IpAddr| l.shard_of(&Key::request(Addr::from_ip(*k, 64)));
    let mut shards: Vec<usize> = keys.iter().map(shard).collect();
    shards.sort_unstable();
    shards.dedup();
    let mid = shards[shards.len() / 2];
    let low = |k: &IpAddr| shard(k) < mid;
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
            let mut sorted: Vec<IpAddr>;
            let block: &[IpAddr] = if split {
                sorted = block.iter().filter(|k| low(k)).copied().collect();
                let n = sorted.len();
                sorted.extend(block.iter().filter(|k| !low(k)).copied());
                // Equal halves: both cut to the smaller one.
                let m = n.min(sorted.len() - n);
                let hi: Vec<IpAddr> = sorted[n..n + m].to_vec();
                sorted.truncate(m);
                sorted.extend(hi);
                &sorted
            } else {
                block
            };
            let per = block.len().div_ceil(threads);
            let t0 = t;
            let start = Instant::now();
            ok += std::thread::scope(|sc| {
                let hs: Vec<_> = block
                    .chunks(per)
                    .enumerate()
                    .map(|(j, part)| {
                        let l = &l;
                        sc.spawn(move || {
                            let mut ok = 0u64;
                            for (n, k) in part.iter().enumerate() {
                                let now = at(t0 + (j * per + n) as u64);
                                ok += u64::from(if peek {
                                    l.peek_request_at(black_box(*k), now).is_allowed()
                                } else {
                                    l.check_request_at(black_box(*k), now).decision.is_allowed()
                                });
                            }
                            ok
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap_or(0)).sum::<u64>()
            });
            ours += start.elapsed().as_nanos();
            t += block.len() as u64;
            let start = Instant::now();
            ok += std::thread::scope(|sc| {
                let hs: Vec<_> = block
                    .chunks(per)
                    .map(|part| {
                        let g = &g;
                        sc.spawn(move || {
                            part.iter()
                                .filter(|k| g.check_key(black_box(k)).is_ok())
                                .count() as u64
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap_or(0)).sum::<u64>()
            });
            theirs += start.elapsed().as_nanos();
        }
        let (ours, theirs) = (ours as f64 / KEYS as f64, theirs as f64 / KEYS as f64);
        println!(
            "{p:4}  {ours:16.1}  {theirs:14.1}  {:5.2}   ({ok} allowed)",
            ours / theirs
        );
    }
}
