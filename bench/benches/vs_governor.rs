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
    at, core_bench_config, distinct_ipv4, host_limiter, KEYS, PER_MINUTE, SEED,
};
use portcullis_core::FixedLimiter;
use rand::rngs::StdRng;
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

/// Prints the share of allowed decisions a benchmark saw (so readers can
/// tell which path dominated: allow or deny).
fn report(name: &str, allowed: &Cell<u64>, total: &Cell<u64>) {
    let t = total.get().max(1);
    eprintln!(
        "    {name}: {:.1} % allowed of {} decisions",
        100.0 * allowed.get() as f64 / t as f64,
        total.get()
    );
    allowed.set(0);
    total.set(0);
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
    let (allowed, total) = (Cell::new(0u64), Cell::new(0u64));
    let count = |ok: bool| {
        allowed.set(allowed.get() + u64::from(ok));
        total.set(total.get() + 1);
    };
    let mut g = c.benchmark_group("1_hot_key");
    tune(&mut g);

    let mut core: FixedLimiter<64, 64> =
        FixedLimiter::new(core_bench_config(), SEED).unwrap_or_else(|e| panic!("{e:?}"));
    let mut i = 0u64;
    g.bench_function("portcullis_core_FixedLimiter", |b| {
        b.iter(|| {
            i += 1;
            let d = core.check_request(black_box(ip), at(i));
            count(d.is_allowed());
            d
        })
    });
    report("portcullis_core_FixedLimiter", &allowed, &total);

    let host = host_limiter(KEYS);
    let mut i = 0u64;
    g.bench_function("portcullis_host_Limiter", |b| {
        b.iter(|| {
            i += 1;
            let o = host.check_request_at(black_box(ip), at(i));
            count(o.decision.is_allowed());
            o
        })
    });
    report("portcullis_host_Limiter", &allowed, &total);

    let host = host_limiter(KEYS);
    g.bench_function("portcullis_host_Limiter_real_clock", |b| {
        b.iter(|| {
            let o = host.check_request_at(black_box(ip), portcullis::clock::now());
            count(o.decision.is_allowed());
            o
        })
    });
    report("portcullis_host_Limiter_real_clock", &allowed, &total);

    let host = host_limiter(KEYS);
    g.bench_function("portcullis_host_Limiter_coarse_clock", |b| {
        b.iter(|| {
            let o = host.check_request_at(black_box(ip), portcullis::clock::now_coarse());
            count(o.decision.is_allowed());
            o
        })
    });
    report("portcullis_host_Limiter_coarse_clock", &allowed, &total);

    let gov = governor_keyed();
    g.bench_function("governor_keyed", |b| {
        b.iter(|| {
            let r = gov.check_key(black_box(&ip));
            count(r.is_ok());
            r
        })
    });
    report("governor_keyed", &allowed, &total);

    let clock = StepClock::default();
    let gov: StepGovernor = RateLimiter::dashmap_with_clock(quota(), clock.clone());
    let mut i = 0u64;
    g.bench_function("governor_keyed_step_clock", |b| {
        b.iter(|| {
            i += 1;
            clock.set(i);
            let r = gov.check_key(black_box(&ip));
            count(r.is_ok());
            r
        })
    });
    report("governor_keyed_step_clock", &allowed, &total);
    g.finish();
}

/// Workloads 2 and 3: one thread over a stream of many keys. Both limiters
/// first see every one of the 1 000 000 keys once, so the measurement is
/// of lookups in full tables, not of growth.
fn many_keys(c: &mut Criterion, group: &str, keys: &[IpAddr], stream: &[IpAddr]) {
    let (allowed, total) = (Cell::new(0u64), Cell::new(0u64));
    let count = |ok: bool| {
        allowed.set(allowed.get() + u64::from(ok));
        total.set(total.get() + 1);
    };
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
                count(o.decision.is_allowed());
                o
            })
        });
        report("portcullis_host_Limiter", &allowed, &total);
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
                count(r.is_ok());
                r
            })
        });
        report("governor_keyed", &allowed, &total);
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

criterion_group!(benches, hot_key, uniform_and_zipf);
criterion_main!(benches);
