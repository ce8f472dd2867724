//! Exact limits under contention: 8 threads × 10 000 attempts on one key.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use portcullis::Instant;
use portcullis::{Config, Reason};
use portcullis::{Limiter, LimiterOptions};

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
        Some(Reason::PairLocked)
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

/// Issue 14, finding 1: 50 guesses racing from one address against one
/// user get exactly `max_failures` reservations (password checks); the
/// rest are refused before anything is checked, and settling the checked
/// ones as wrong locks the pair.
#[test]
fn parallel_guesses_get_exactly_max_failures_checks() {
    let lim = limiter(Config::default());
    let ip: IpAddr = "203.0.113.7".parse().unwrap();
    let now = Instant::from_secs(1_000);
    let barrier = Arc::new(std::sync::Barrier::new(50));
    let handles: Vec<_> = (0..50)
        .map(|_| {
            let (lim, barrier) = (lim.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                lim.begin_login_at("victim", ip, now).decision.ok()
            })
        })
        .collect();
    let reserved: Vec<_> = handles
        .into_iter()
        .filter_map(|h| h.join().unwrap())
        .collect();
    assert_eq!(reserved.len(), 10, "max_failures password checks, no more");
    for a in reserved {
        lim.finish_login_at("victim", ip, a.id, false, now);
        if let Some(t) = a.penalty.slot {
            lim.release_slot(t);
        }
    }
    let d = lim.check_login_at("victim", ip, now);
    assert_eq!(d.reason(), Some(Reason::PairLocked), "{d:?}");
}

/// The account throttle across addresses holds under a race too: 40
/// addresses guess one account at once; exactly `account_max_failures`
/// attempts escape the throttle (full penalty for every other one).
#[test]
fn parallel_guesses_across_addresses_respect_the_account_throttle() {
    let mut c = Config::default();
    c.login.account_max_failures = Some(5);
    let lim = limiter(c);
    let now = Instant::from_secs(1_000);
    let barrier = Arc::new(std::sync::Barrier::new(40));
    let handles: Vec<_> = (0..40u8)
        .map(|i| {
            let (lim, barrier) = (lim.clone(), barrier.clone());
            std::thread::spawn(move || {
                let ip = IpAddr::from([198, 51, 100, i]);
                barrier.wait();
                let a = lim.begin_login_at("ceo", ip, now).decision.unwrap();
                a.penalty.throttled
            })
        })
        .collect();
    let throttled = handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|&t| t)
        .count();
    assert_eq!(throttled, 35);
}

/// A right password takes its reservation back: a user who logs in
/// successfully over and over never locks their address.
#[test]
fn successes_do_not_accumulate_as_failures() {
    let lim = limiter(Config::default());
    let ip: IpAddr = "203.0.113.8".parse().unwrap();
    for i in 0..100 {
        let now = Instant::from_secs(1_000 + i);
        let a = lim.begin_login_at("alice", ip, now).decision.unwrap();
        lim.finish_login_at("alice", ip, a.id, true, now);
        if let Some(t) = a.penalty.slot {
            lim.release_slot(t);
        }
    }
    let d = lim.check_login_at("bob", ip, Instant::from_secs(1_100));
    assert!(
        matches!(d, portcullis::Decision::Allow { remaining: 10, .. }),
        "{d:?}"
    );
}

/// A reload while 8 threads hammer many keys: every shard takes the new
/// quota, no key's state is lost (the used-up key stays used up, the ban
/// stays), an invalid config changes nothing.
#[test]
fn set_config_under_contention_keeps_state_and_swaps_every_shard() {
    let mut c = Config::default();
    c.requests.max_requests = 3;
    let lim = limiter(c.clone());
    let now = Instant::from_secs(1_000);
    let used: IpAddr = "203.0.113.50".parse().unwrap();
    for _ in 0..3 {
        assert!(lim.check_request_at(used, now).decision.is_allowed());
    }
    let banned: IpAddr = "203.0.113.51".parse().unwrap();
    lim.ban_at(banned, now);
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let lim = lim.clone();
            std::thread::spawn(move || {
                for i in 0..2_000u32 {
                    let ip = IpAddr::from([198, 51, (t % 256) as u8, (i % 200) as u8]);
                    let _ = lim.check_request_at(ip, now);
                }
            })
        })
        .collect();
    let mut bigger = c.clone();
    bigger.requests.max_requests = 5;
    lim.set_config(bigger.clone()).unwrap();
    let mut bad = bigger.clone();
    bad.requests.max_requests = 0;
    assert!(lim.set_config(bad).is_err());
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(lim.config().requests.max_requests, 5);
    // The 3 logged requests still count: exactly 2 more.
    assert!(lim.check_request_at(used, now).decision.is_allowed());
    assert!(lim.check_request_at(used, now).decision.is_allowed());
    assert_eq!(
        lim.check_request_at(used, now).decision.reason(),
        Some(Reason::RateLimited)
    );
    assert_eq!(
        lim.check_request_at(banned, now).decision.reason(),
        Some(Reason::Banned)
    );
    // Every shard decides on the new quota: 200 fresh addresses get 5 each.
    for k in 0..200u8 {
        let ip = IpAddr::from([192, 0, 2, k]);
        let n = (0..7)
            .filter(|_| lim.check_request_at(ip, now).decision.is_allowed())
            .count();
        assert_eq!(n, 5, "{ip}");
    }
}
