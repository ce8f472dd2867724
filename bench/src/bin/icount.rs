//! A tiny driver for instruction counts under callgrind: runs one kind of
//! `check_request` N times. Run it with N and 2N; the difference of the two
//! totals divided by N is the cost of one call, setup cancelled out.
//!
//! ```sh
//! cargo build --release -p portcullis-bench --bin icount [--features governor]
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/icount core-hot 10000   # and 20000
//! ```
//! `bench/icount.sh` does all modes and prints the table.
//!
//! Modes (every call advances `now` by 1 µs unless said otherwise):
//! * `core-hot`: one key, `FixedLimiter<64, 64>`; after 50 calls every call
//!   is a rate-limited denial (the steady state of a hot key).
//! * `core-hot-allow`: one key, `now` advances 2 s per call, so every call
//!   is allowed (30 timestamps in the window, one pruned per call).
//! * `core-cold`: a new key per call into a `FixedLimiter<32768, 64>` with
//!   room (insert path, no eviction).
//! * `core-evict`: a new key per call into a full `FixedLimiter<1024, 64>`
//!   (CLOCK eviction: a dead entry reclaimed, then the insert).
//! * `host-hot`, `host-cold`: the same through the host `portcullis::Limiter`
//!   (64 shards over `MapLimiter<64>`), hot key and new keys.
//! * `host-uniform`: 1 000 000 keys seen once, then requests on random
//!   ones of them (for cache profiles with `--cache-sim=yes`; not in
//!   `icount.sh`); `host-uniform-eK`: the same with every key seen K
//!   times first (its log holds K events, so a request adds the K+1-th:
//!   `-e5` puts every log past four inline events); `governor-uniform`
//!   the same as `host-uniform` for governor.
//! * `host-steady-K`: criterion's group 5 (`5_uniform_1M_events/K`):
//!   every key holds K events and each decision ages one out and records
//!   one (the sliding log's steady-state update).
//! * `governor-hot`, `governor-cold` (feature `governor`): governor's keyed
//!   limiter (DashMap, default quanta clock), hot key and new keys.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use portcullis_bench::{at, core_bench_config, distinct_ipv4, host_limiter, KEYS, SEED};
use portcullis_core::FixedLimiter;

/// Keys generated for the cold modes, whatever N (so setup is the same for N and 2N).
const COLD_KEYS: usize = 40_000;

fn hot() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7))
}

/// The measured loop: callgrind collects only inside it
/// (`--toggle-collect='*icount::measured*'`), so setup (table allocation,
/// key generation, governor's clock calibration) is left out entirely.
#[inline(never)]
fn measured(n: u64, mut f: impl FnMut(u64) -> bool) -> u64 {
    let mut allowed = 0u64;
    for i in 0..n {
        allowed += u64::from(black_box(f(i)));
    }
    allowed
}

/// The first `n` new keys of the cold modes.
fn cold_keys(cold: &[IpAddr], n: u64) -> Result<&[IpAddr], String> {
    cold.get(..n as usize)
        .filter(|_| n as usize <= COLD_KEYS / 2)
        .ok_or_else(|| format!("N too large: at most {}", COLD_KEYS / 2))
}

fn run(mode: &str, n: u64) -> Result<u64, String> {
    // Keys 0..COLD_KEYS are the new keys of the cold modes; the 1024 after
    // them fill the table of `core-evict` (one generator: no overlap).
    let cold = distinct_ipv4(COLD_KEYS + 1024, 1);
    let allowed = match mode {
        "core-hot" | "core-hot-allow" => {
            let step = if mode == "core-hot" { 1 } else { 2_000_000 };
            let mut l: FixedLimiter<64, 64> =
                FixedLimiter::new(core_bench_config(), SEED).map_err(|e| format!("{e:?}"))?;
            measured(n, |i| {
                l.check_request(black_box(hot()), at(i * step)).is_allowed()
            })
        }
        "core-cold" => {
            let mut l: Box<FixedLimiter<32768, 64>> = Box::new(
                FixedLimiter::new(core_bench_config(), SEED).map_err(|e| format!("{e:?}"))?,
            );
            let keys = cold_keys(&cold, n)?;
            measured(n, |i| {
                l.check_request(black_box(keys[i as usize]), at(i))
                    .is_allowed()
            })
        }
        "core-evict" => {
            let mut l: FixedLimiter<1024, 64> =
                FixedLimiter::new(core_bench_config(), SEED).map_err(|e| format!("{e:?}"))?;
            // Fill the table with keys the run will not use again.
            let mut t = 0u64;
            while l.len() < l.capacity() {
                l.check_request(cold[COLD_KEYS + t as usize], at(t));
                t += 1;
            }
            let keys = cold_keys(&cold, n)?;
            measured(n, |j| {
                l.check_request(black_box(keys[j as usize]), at(t + j))
                    .is_allowed()
            })
        }
        "host-hot" => {
            let l = host_limiter(KEYS);
            measured(n, |i| {
                l.check_request_at(black_box(hot()), at(i))
                    .decision
                    .is_allowed()
            })
        }
        "host-cold" => {
            let l = host_limiter(KEYS);
            let keys = cold_keys(&cold, n)?;
            measured(n, |i| {
                l.check_request_at(black_box(keys[i as usize]), at(i))
                    .decision
                    .is_allowed()
            })
        }
        m if m == "host-uniform" || m.starts_with("host-uniform-e") => {
            // 1 000 000 keys seen once (`-eK`: K times), then N requests
            // on random ones of them (the criterion workload 2, for cache
            // profiles: `--cache-sim=yes`).
            let times: u64 = match m.strip_prefix("host-uniform-e") {
                Some(k) => k.parse().map_err(|_| format!("bad mode {m:?}"))?,
                None => 1,
            };
            let l = host_limiter(KEYS);
            let keys = distinct_ipv4(KEYS, 1);
            let mut t = 0u64;
            for _ in 0..times {
                for k in &keys {
                    l.check_request_at(*k, at(t));
                    t += 1;
                }
            }
            let mut x = 0x9E37_79B9_7F4A_7C15u64;
            let base = t;
            measured(n, |i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let k = keys[(x % KEYS as u64) as usize];
                l.check_request_at(black_box(k), at(base + i))
                    .decision
                    .is_allowed()
            })
        }
        #[cfg(feature = "governor")]
        "governor-hot" | "governor-cold" => {
            let g: governor::DefaultKeyedRateLimiter<IpAddr> =
                governor::RateLimiter::keyed(governor::Quota::per_minute(
                    std::num::NonZeroU32::new(portcullis_bench::PER_MINUTE)
                        .unwrap_or(std::num::NonZeroU32::MIN),
                ));
            // First use (clock calibration) outside the measured loop, on
            // a key the run does not use.
            let _ = g.check_key(&cold[COLD_KEYS]);
            let keys = cold_keys(&cold, n)?;
            let hot_mode = mode == "governor-hot";
            measured(n, |i| {
                let k = if hot_mode { hot() } else { keys[i as usize] };
                g.check_key(black_box(&k)).is_ok()
            })
        }
        m if m.starts_with("host-steady-") => {
            // Criterion's group 5 (`5_uniform_1M_events/K`): 1 000 000 keys
            // in one order, a window of K passes, K passes first; then every
            // decision ages one event out of a log of K and records one.
            let k: u64 = m["host-steady-".len()..]
                .parse()
                .map_err(|_| format!("bad mode {m:?}"))?;
            let mut config = portcullis_bench::bench_config();
            config.requests.window =
                portcullis_core::Duration::from_micros(k.saturating_mul(KEYS as u64));
            let l = portcullis_bench::host_limiter_with(config, KEYS);
            let keys = distinct_ipv4(KEYS, 1);
            let warm = k.saturating_mul(KEYS as u64);
            for t in 0..warm {
                l.check_request_at(keys[(t % KEYS as u64) as usize], at(t));
            }
            measured(n, |i| {
                let t = warm + i;
                l.check_request_at(black_box(keys[(t % KEYS as u64) as usize]), at(t))
                    .decision
                    .is_allowed()
            })
        }
        #[cfg(feature = "governor")]
        "governor-uniform" => {
            // `host-uniform` for governor: the same keys, seen once, then
            // the same random requests (cache profiles beside it).
            let g: governor::DefaultKeyedRateLimiter<IpAddr> =
                governor::RateLimiter::keyed(governor::Quota::per_minute(
                    std::num::NonZeroU32::new(portcullis_bench::PER_MINUTE)
                        .unwrap_or(std::num::NonZeroU32::MIN),
                ));
            let keys = distinct_ipv4(KEYS, 1);
            for k in &keys {
                let _ = g.check_key(k);
            }
            let mut x = 0x9E37_79B9_7F4A_7C15u64;
            measured(n, |_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let k = keys[(x % KEYS as u64) as usize];
                g.check_key(black_box(&k)).is_ok()
            })
        }
        _ => return Err(format!("unknown mode {mode:?}")),
    };
    Ok(allowed)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(mode), Some(n)) = (args.next(), args.next()) else {
        eprintln!("usage: icount MODE N   (see the source for modes)");
        std::process::exit(2);
    };
    let Ok(n) = n.parse::<u64>() else {
        eprintln!("N must be a number");
        std::process::exit(2);
    };
    // `FixedLimiter<32768, 64>` (28 MB) is built on the stack before it is
    // boxed: give the run a big stack (the same for every N).
    let runner = std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(move || run(&mode, n).map(|a| (mode, a)));
    let result = match runner.map(|h| h.join()) {
        Ok(Ok(r)) => r,
        _ => Err("run thread failed".to_string()),
    };
    match result {
        Ok((mode, allowed)) => println!("{mode} {n}: {allowed} allowed"),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    }
}
