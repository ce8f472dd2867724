//! Exact limits under contention: 8 threads × 10 000 attempts on one key.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use embassy_time::Instant;
use portcullis::{Limiter, LimiterOptions};
use portcullis_core::{Config, Reason};

const THREADS: usize = 8;
const EACH: usize = 10_000;

fn limiter(c: Config) -> Arc<Limiter> {
    Arc::new(
        Limiter::new(
            c,
            LimiterOptions {
                max_entries: 10_000,
                shards: 16,
                seed: None,
            },
        )
        .unwrap(),
    )
}

#[test]
fn eight_threads_get_exactly_max_requests_per_window() {
    let lim = limiter(Config::default());
    let ip: IpAddr = "203.0.113.1".parse().unwrap();
    let now = Instant::from_secs(1_000);
    let allowed = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let (lim, allowed) = (lim.clone(), allowed.clone());
            std::thread::spawn(move || {
                for _ in 0..EACH {
                    if lim.check_request_at(ip, now).decision.is_allowed() {
                        allowed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(allowed.load(Ordering::Relaxed), 50);
    // The next window admits exactly another 50.
    let later = Instant::from_secs(1_060);
    let next: usize = (0..1000)
        .filter(|_| lim.check_request_at(ip, later).decision.is_allowed())
        .count();
    assert_eq!(next, 50);
}

#[test]
fn login_lock_engages_at_exactly_max_failures_under_contention() {
    let mut c = Config::default();
    c.login.account_max_failures = None;
    let lim = limiter(c);
    let ip: IpAddr = "203.0.113.2".parse().unwrap();
    let now = Instant::from_secs(2_000);
    let locks = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let (lim, locks) = (lim.clone(), locks.clone());
            std::thread::spawn(move || {
                for _ in 0..EACH {
                    let p = lim.login_failed_at("mallory", ip, now).decision;
                    if p.locked {
                        locks.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Some(t) = p.slot {
                        lim.release_slot(t);
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    // Every 10th failure (a lock starts a fresh count) engages the lock:
    // a lost or doubled update anywhere would change this number.
    assert_eq!(locks.load(Ordering::Relaxed), (THREADS * EACH / 10) as u64);
    assert_eq!(
        lim.check_login_at("mallory", ip, now).reason(),
        Some(Reason::AccountLocked)
    );
}

#[test]
fn first_lock_is_the_tenth_failure() {
    let lim = limiter(Config::default());
    let ip: IpAddr = "203.0.113.3".parse().unwrap();
    let now = Instant::from_secs(3_000);
    for i in 1..=10 {
        let p = lim.login_failed_at("trudy", ip, now).decision;
        assert_eq!(p.locked, i == 10, "failure {i}");
        if let Some(t) = p.slot {
            lim.release_slot(t);
        }
    }
}
