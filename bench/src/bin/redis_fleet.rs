//! Decisions per second of the Redis fleet backend (`RedisLimiter`) over
//! loopback with C concurrent clients (tokio tasks sharing one multiplexed
//! connection, as a server does). Run by `bench/redis_vs_limits.sh`.
//!
//! ```sh
//! cargo run --release -p portcullis-bench --features redis --bin redis_fleet -- \
//!     redis://127.0.0.1:PORT/0 SECONDS 1 8 64
//! ```
//! A Redis Cluster as `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,…` (the
//! form Python `limits` takes): the cluster client over those nodes.
//! Keys: 100 000 distinct IPv4 addresses, uniform, the same generator as the
//! other benchmarks; 50 requests / 60 s (the bench configuration).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis::fleet::{unix_now_us, Endpoint, RedisLimiter};
use portcullis_bench::{bench_config, distinct_ipv4, SEED};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(url), Some(secs)) = (args.first(), args.get(1)) else {
        eprintln!("usage: redis_fleet URL SECONDS CLIENTS...");
        std::process::exit(2);
    };
    let secs: u64 = secs.parse().unwrap_or(5);
    let endpoint = match url.strip_prefix("redis+cluster://") {
        Some(nodes) => Endpoint::Cluster(
            nodes
                .trim_end_matches('/')
                .split(',')
                .map(|n| format!("redis://{n}/"))
                .collect(),
        ),
        None => Endpoint::Single(url.clone()),
    };
    let keys = Arc::new(distinct_ipv4(100_000, 0x7265_6469));
    for c in &args[2..] {
        let clients: usize = c.parse().unwrap_or(1);
        let ns = format!("bench{clients}");
        let lim = match RedisLimiter::connect_to(
            &endpoint,
            bench_config(),
            SEED,
            &ns,
            Duration::from_secs(2),
        )
        .await
        {
            Ok(l) => l,
            Err(e) => {
                eprintln!("connect: {e}");
                std::process::exit(1);
            }
        };
        let done = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let allowed = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let end = start + Duration::from_secs(secs);
        let tasks: Vec<_> = (0..clients)
            .map(|t| {
                let (lim, keys) = (lim.clone(), keys.clone());
                let (done, errors, allowed) = (done.clone(), errors.clone(), allowed.clone());
                tokio::spawn(async move {
                    let mut i = t.wrapping_mul(7919) % keys.len();
                    while Instant::now() < end {
                        i = (i + 48_271) % keys.len(); // a prime stride: visits every key
                        match lim.check_request(keys[i], unix_now_us()).await {
                            Ok(d) => {
                                allowed.fetch_add(u64::from(d.is_allowed()), Ordering::Relaxed);
                                done.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(_) => {
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
        let el = start.elapsed().as_secs_f64();
        let n = done.load(Ordering::Relaxed);
        println!(
            "portcullis RedisLimiter  clients {clients:>3}  {:>9.0} decisions/s  ({n} ok, {} errors, {:.1} % allowed)",
            n as f64 / el,
            errors.load(Ordering::Relaxed),
            100.0 * allowed.load(Ordering::Relaxed) as f64 / n.max(1) as f64
        );
    }
}
