//! portcullis vs governor's keyed limiter, side by side on identical
//! pre-generated key streams (see BENCHMARKS.md for results and caveats).
//!
//! ```sh
//! cargo bench -p portcullis-bench --bench vs_governor
//! ```
//!
//! Both are configured to the same steady rate: 50 per 60 s with a burst
//! of 50 (portcullis: sliding log of 50 requests in 60 s; governor: GCRA,
//! `Quota::per_minute(50)`). portcullis receives `now` from the caller and
//! the benchmark advances it one microsecond per operation from a fixed
//! base; governor reads its own clock (quanta, its default), and for the
//! hot key also a "step" clock the benchmark advances the same way, to
//! separate the cost of the clock from the cost of the decision. The hot
//! key's `_real_clock` row reads `portcullis::clock::now()` per decision
//! (`CLOCK_MONOTONIC`), `_coarse_clock` reads `clock::now_coarse()`
//! (`CLOCK_MONOTONIC_COARSE`, feature `coarse-clock`).

use std::cell::Cell;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::DashMapStateStore;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use portcullis_bench::{
    at, bench_config, core_bench_config, distinct_ipv4, host_limiter, host_limiter_with, KEYS,
    PER_MINUTE, SEED,
};
use portcullis_core::{Decision, FixedLimiter};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};

/// Operations in a pre-generated stream (a power of two; the stream repeats).
const STREAM: usize = 1 << 21;
/// Zipf exponent of workload 3.
const ZIPF_S: f64 = 1.0;

/// A governor clock the benchmark sets, one µs per operation like portcullis's `now`.
#[derive(Clone, Default)]
struct StepClock(Arc<AtomicU64>);

impl Clock for StepClock {
    type Instant = Nanos;
    fn now(&self) -> Nanos {
        Nanos::from(self.0.load(Ordering::Relaxed))
    }
}

impl StepClock {
    #[inline(always)]
    fn set(&self, i: u64) {
        self.0.store(at(i).as_micros() * 1000, Ordering::Relaxed);
    }
}

type StepGovernor =
    RateLimiter<IpAddr, DashMapStateStore<IpAddr>, StepClock, NoOpMiddleware<Nanos>>;

fn quota() -> Quota {
    Quota::per_minute(NonZeroU32::new(PER_MINUTE).unwrap_or(NonZeroU32::MIN))
}

fn governor_keyed() -> DefaultKeyedRateLimiter<IpAddr> {
    RateLimiter::keyed(quota())
}

/// The key streams, generated once with fixed seeds.
struct Streams {
    keys: Vec<IpAddr>,
    uniform: Vec<IpAddr>,
    zipf: Vec<IpAddr>,
}

fn streams() -> Streams {
    let keys = distinct_ipv4(KEYS, 0x706f_7274);
    let mut rng = StdRng::seed_from_u64(42);
    let uniform = (0..STREAM).map(|_| keys[rng.gen_range(0..KEYS)]).collect();
    let zipf_d = Zipf::new(KEYS as u64, ZIPF_S).unwrap_or_else(|e| panic!("zipf: {e}"));
    let mut rng = StdRng::seed_from_u64(43);
    let zipf = (0..STREAM)
        .map(|_| {
            let rank = zipf_d.sample(&mut rng) as usize; // 1..=KEYS
            keys[rank.clamp(1, KEYS) - 1]
        })
        .collect();
    Streams {
        keys,
        uniform,
        zipf,
    }
}

/// The decisions a benchmark saw, to print the share allowed (so readers
/// can tell which path dominated: allow or deny).
#[derive(Default)]
struct Tally {
    allowed: Cell<u64>,
    total: Cell<u64>,
}

impl Tally {
    fn count(&self, ok: bool) {
        self.allowed.set(self.allowed.get() + u64::from(ok));
        self.total.set(self.total.get() + 1);
    }

    /// Print the share under `name` and start over.
    fn report(&self, name: &str) {
        let t = self.total.get().max(1);
        eprintln!(
            "    {name}: {:.1} % allowed of {} decisions",
            100.0 * self.allowed.get() as f64 / t as f64,
            self.total.get()
        );
        self.allowed.set(0);
        self.total.set(0);
    }
}

fn tune(g: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    g.sample_size(30)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(1));
}

/// Workload 1: one hot key, one thread.
fn hot_key(c: &mut Criterion) {
    let ip = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));
    let tally = Tally::default();
    let mut g = c.benchmark_group("1_hot_key");
    tune(&mut g);

    let mut core: FixedLimiter<64, 64> =
        FixedLimiter::new(core_bench_config(), SEED).unwrap_or_else(|e| panic!("{e:?}"));
    let mut i = 0u64;
    g.bench_function("portcullis_core_FixedLimiter", |b| {
        b.iter(|| {
            i += 1;
            let d = core.check_request(black_box(ip), at(i));
            tally.count(d.is_allowed());
            d
        })
    });
    tally.report("portcullis_core_FixedLimiter");

    let host = host_limiter(KEYS);
    let mut i = 0u64;
    g.bench_function("portcullis_host_Limiter", |b| {
        b.iter(|| {
            i += 1;
            let o = host.check_request_at(black_box(ip), at(i));
            tally.count(o.decision.is_allowed());
            o
        })
    });
    tally.report("portcullis_host_Limiter");

    let host = host_limiter(KEYS);
    g.bench_function("portcullis_host_Limiter_real_clock", |b| {
        b.iter(|| {
            let o = host.check_request_at(black_box(ip), portcullis::clock::now());
            tally.count(o.decision.is_allowed());
            o
        })
    });
    tally.report("portcullis_host_Limiter_real_clock");

    let host = host_limiter(KEYS);
    g.bench_function("portcullis_host_Limiter_coarse_clock", |b| {
        b.iter(|| {
            let o = host.check_request_at(black_box(ip), portcullis::clock::now_coarse());
            tally.count(o.decision.is_allowed());
            o
        })
    });
    tally.report("portcullis_host_Limiter_coarse_clock");

    let gov = governor_keyed();
    g.bench_function("governor_keyed", |b| {
        b.iter(|| {
            let r = gov.check_key(black_box(&ip));
            tally.count(r.is_ok());
            r
        })
    });
    tally.report("governor_keyed");

    let clock = StepClock::default();
    let gov: StepGovernor = RateLimiter::dashmap_with_clock(quota(), clock.clone());
    let mut i = 0u64;
    g.bench_function("governor_keyed_step_clock", |b| {
        b.iter(|| {
            i += 1;
            clock.set(i);
            let r = gov.check_key(black_box(&ip));
            tally.count(r.is_ok());
            r
        })
    });
    tally.report("governor_keyed_step_clock");
    g.finish();
}

/// Workloads 2 and 3: one thread over a stream of many keys. Both limiters
/// first see every one of the 1 000 000 keys once, so the measurement is
/// of lookups in full tables, not of growth.
fn many_keys(c: &mut Criterion, group: &str, keys: &[IpAddr], stream: &[IpAddr]) {
    let tally = Tally::default();
    let mask = stream.len() - 1;
    let mut g = c.benchmark_group(group);
    tune(&mut g);

    {
        let host = host_limiter(KEYS);
        let mut i = 0u64;
        for &k in keys {
            i += 1;
            host.check_request_at(k, at(i));
        }
        g.bench_function("portcullis_host_Limiter", |b| {
            b.iter(|| {
                i += 1;
                let ip = stream[i as usize & mask];
                let o = host.check_request_at(black_box(ip), at(i));
                tally.count(o.decision.is_allowed());
                o
            })
        });
        tally.report("portcullis_host_Limiter");
        eprintln!("    portcullis keys held: {}", host.len());
    }
    {
        let gov = governor_keyed();
        for k in keys {
            let _ = gov.check_key(k);
        }
        let mut i = 0usize;
        g.bench_function("governor_keyed", |b| {
            b.iter(|| {
                i += 1;
                let ip = &stream[i & mask];
                let r = gov.check_key(black_box(ip));
                tally.count(r.is_ok());
                r
            })
        });
        tally.report("governor_keyed");
        eprintln!("    governor keys held: {}", gov.len());
    }
    g.finish();
}

fn uniform_and_zipf(c: &mut Criterion) {
    let s = streams();
    many_keys(c, "2_uniform_1M_keys", &s.keys, &s.uniform);
    many_keys(c, "3_zipf_1M_keys", &s.keys, &s.zipf);
    contended(c, &s);
}

/// Runs `op(thread, i)` for `iters` iterations on each of two threads that
/// start together; returns the slower thread's time. One criterion
/// iteration is therefore two decisions, one per thread.
fn two_threads(iters: u64, op: &(dyn Fn(usize, u64) + Sync)) -> Duration {
    let barrier = Barrier::new(2);
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..2)
            .map(|t| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    let start = std::time::Instant::now();
                    for i in 0..iters {
                        op(t, i);
                    }
                    start.elapsed()
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_default())
            .max()
            .unwrap_or_default()
    })
}

/// Workload 4: two threads on one shared limiter, (a) both on one hot key,
/// (b) both over the uniform stream (different halves of it).
fn contended(c: &mut Criterion, s: &Streams) {
    let mut g = c.benchmark_group("4_two_threads");
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(2));
    let hot = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));
    let mask = s.uniform.len() - 1;
    let half = s.uniform.len() / 2;

    {
        let host = host_limiter(KEYS);
        let clock = AtomicU64::new(0);
        g.bench_function("hot_key/portcullis_host_Limiter", |b| {
            b.iter_custom(|iters| {
                let t0 = clock.fetch_add(iters, Ordering::Relaxed);
                two_threads(iters, &|_, i| {
                    black_box(host.check_request_at(black_box(hot), at(t0 + i)));
                })
            })
        });
    }
    {
        let gov = governor_keyed();
        g.bench_function("hot_key/governor_keyed", |b| {
            b.iter_custom(|iters| {
                two_threads(iters, &|_, _| {
                    let _ = black_box(gov.check_key(black_box(&hot)));
                })
            })
        });
    }
    {
        let host = host_limiter(KEYS);
        for (i, &k) in s.keys.iter().enumerate() {
            host.check_request_at(k, at(i as u64));
        }
        let clock = AtomicU64::new(KEYS as u64);
        g.bench_function("uniform_1M/portcullis_host_Limiter", |b| {
            b.iter_custom(|iters| {
                let t0 = clock.fetch_add(iters, Ordering::Relaxed);
                two_threads(iters, &|t, i| {
                    let ip = s.uniform[(t * half + (t0 + i) as usize) & mask];
                    black_box(host.check_request_at(black_box(ip), at(t0 + i)));
                })
            })
        });
    }
    {
        let gov = governor_keyed();
        for k in &s.keys {
            let _ = gov.check_key(k);
        }
        let clock = AtomicU64::new(0);
        g.bench_function("uniform_1M/governor_keyed", |b| {
            b.iter_custom(|iters| {
                let t0 = clock.fetch_add(iters, Ordering::Relaxed);
                two_threads(iters, &|t, i| {
                    let ip = &s.uniform[(t * half + (t0 + i) as usize) & mask];
                    let _ = black_box(gov.check_key(black_box(ip)));
                })
            })
        });
    }
    g.finish();
}

/// Workload 5 (issue 24's rows at a known number of events a key): one
/// thread over the 1 000 000 keys in one fixed random order, the same
/// order every pass, so a key comes back exactly every 1 000 000
/// decisions (1 s at one µs a decision). The window is `k` passes (`k` s)
/// with the limit of the other workloads (50, above `k`): every decision
/// finds its key holding exactly `k` events in the window, itself
/// included (the one `k` passes back has just left it), and nothing is
/// denied. (A new random order each pass would leave a key between `k`
/// and `k + 1`.) governor gets the same rate (50 per `k` s, burst 50) on
/// a clock the benchmark steps with portcullis's `now`, so both see the
/// same times. Both limiters first run `k` passes.
fn events_per_key(c: &mut Criterion) {
    let keys = distinct_ipv4(KEYS, 0x706f_7274);
    let mut order = keys.clone();
    order.shuffle(&mut StdRng::seed_from_u64(44));
    let tally = Tally::default();
    let mut g = c.benchmark_group("5_uniform_1M_events");
    tune(&mut g);
    for k in [1u64, 2, 4, 8] {
        let pass = KEYS as u64;
        let window_us = k * pass;
        {
            let mut config = bench_config();
            config.requests.window = portcullis_core::Duration::from_micros(window_us);
            let host = host_limiter_with(config, KEYS);
            let mut i = 0u64;
            while i < k * pass {
                let o = host.check_request_at(order[(i % pass) as usize], at(i));
                // The last pass already sees k events a key.
                if i >= (k - 1) * pass {
                    match o.decision {
                        Decision::Allow { remaining, .. } => {
                            assert_eq!(u64::from(remaining), u64::from(PER_MINUTE) - k)
                        }
                        _ => panic!("denied while warming"),
                    }
                }
                i += 1;
            }
            g.bench_function(format!("{k}/portcullis_host_Limiter"), |b| {
                b.iter(|| {
                    let ip = order[(i % pass) as usize];
                    let o = host.check_request_at(black_box(ip), at(i));
                    i += 1;
                    tally.count(o.decision.is_allowed());
                    o
                })
            });
            tally.report(&format!("{k}/portcullis_host_Limiter"));
        }
        {
            let per = Duration::from_micros(window_us / u64::from(PER_MINUTE));
            let quota = Quota::with_period(per)
                .unwrap_or_else(|| panic!("quota"))
                .allow_burst(NonZeroU32::new(PER_MINUTE).unwrap_or(NonZeroU32::MIN));
            let clock = StepClock::default();
            let gov: StepGovernor = RateLimiter::dashmap_with_clock(quota, clock.clone());
            let mut i = 0u64;
            while i < k * pass {
                clock.set(i);
                let _ = gov.check_key(&order[(i % pass) as usize]);
                i += 1;
            }
            g.bench_function(format!("{k}/governor_keyed_step_clock"), |b| {
                b.iter(|| {
                    let ip = &order[(i % pass) as usize];
                    clock.set(i);
                    let r = gov.check_key(black_box(ip));
                    i += 1;
                    tally.count(r.is_ok());
                    r
                })
            });
            tally.report(&format!("{k}/governor_keyed_step_clock"));
        }
    }
    g.finish();
}

criterion_group!(benches, hot_key, uniform_and_zipf, events_per_key);
criterion_main!(benches);
