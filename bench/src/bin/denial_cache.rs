//! Decisions per second for one client hammering while it is blocked,
//! through the fleet engine (`portcullis::fleet::FleetEngine`, as
//! the server runs it) with and without the local cache of standing
//! denials (issue 19). Run by `bench/denial_cache.sh`.
//!
//! ```sh
//! cargo run --release -p portcullis-bench --features redis --bin denial_cache -- \
//!     redis://127.0.0.1:PORT/0 SECONDS 1 8
//! ```
//! The client is blocked for an hour in Redis first; every decision after
//! that is a `Blocked` refusal, answered by Redis (`denial_cache = 0`, one
//! `EVALSHA` each) or by the server's cache (no round trip).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis::fleet::{connect_fleet, FleetOptions};
use portcullis::Engine;
use portcullis::{Guard, Limiter, LimiterOptions};
use portcullis_core::{Config, Decision, Reason};

fn rules() -> Config {
    let mut c = portcullis_bench::bench_config();
    c.requests.max_requests = 5;
    c.blocks.block_after = 1;
    c.blocks.block_for = portcullis_core::Duration::from_secs(3600);
    c.blocks.ban_after = None;
    c
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(url), Some(secs)) = (args.first(), args.get(1)) else {
        eprintln!("usage: denial_cache URL SECONDS CLIENTS...");
        std::process::exit(2);
    };
    let secs: u64 = secs.parse().unwrap_or(5);
    let ip: IpAddr = IpAddr::from([203, 0, 113, 9]);
    for c in &args[2..] {
        let clients: usize = c.parse().unwrap_or(1);
        for cache in [0usize, 10_000] {
            let limiter = match Limiter::new(rules(), LimiterOptions::default()) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("limiter: {e}");
                    std::process::exit(1);
                }
            };
            let opts = FleetOptions {
                redis_url: url.clone(),
                redis_cluster: Vec::new(),
                redis_timeout: Duration::from_secs(2),
                fail_closed: true,
                rules: rules(),
                denial_cache: cache,
            };
            let engine = match connect_fleet(&opts, Guard::new(Arc::new(limiter), None)).await {
                Ok(e) => e,
                Err(e) => {
                    eprintln!("connect: {e}");
                    std::process::exit(1);
                }
            };
            // Blocked in Redis, and the lift counter read (cache live).
            for _ in 0..7 {
                let _ = engine.check_request(ip).await;
            }
            tokio::time::sleep(Duration::from_millis(400)).await;
            let done = Arc::new(AtomicU64::new(0));
            let other = Arc::new(AtomicU64::new(0));
            let start = Instant::now();
            let end = start + Duration::from_secs(secs);
            let tasks: Vec<_> = (0..clients)
                .map(|_| {
                    let (engine, done, other) = (engine.clone(), done.clone(), other.clone());
                    tokio::spawn(async move {
                        while Instant::now() < end {
                            match engine.check_request(ip).await {
                                Decision::Deny {
                                    reason: Reason::Blocked,
                                    ..
                                } => done.fetch_add(1, Ordering::Relaxed),
                                _ => other.fetch_add(1, Ordering::Relaxed),
                            };
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
                "blocked client  clients {clients:>3}  denial_cache {cache:>5}  {:>10.0} decisions/s  ({n} blocked, {} other, {} keys cached)",
                n as f64 / el,
                other.load(Ordering::Relaxed),
                engine.cached_denials()
            );
            // A fresh block for the next row (the lift also empties caches).
            let _ = engine.lift(ip).await;
        }
    }
}
