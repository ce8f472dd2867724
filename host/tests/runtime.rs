//! Slots as RAII guards, penalties served with tokio, the cleanup task, and
//! memory that stays flat over a million keys.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use portcullis::Cleanup;
use portcullis::Config;
use portcullis::{Duration, Instant};
use portcullis::{Guard, Limiter, LimiterOptions, Serve};

fn guard(c: Config, max_entries: usize) -> Guard {
    let opts = LimiterOptions {
        max_entries,
        shards: 64,
        seed: None,
    };
    Guard::new(Arc::new(Limiter::new(c, opts).unwrap()), None)
}

#[tokio::test]
async fn slot_guard_releases_on_drop_and_leaks_are_reclaimed_by_ttl() {
    let g = guard(Config::default(), 1000);
    let ip: IpAddr = "192.0.2.10".parse().unwrap();
    let mut held = Vec::new();
    for _ in 0..3 {
        let p = g.login_failed("u", ip).await;
        assert!(p.slot.is_some());
        held.push(p);
    }
    assert!(g
        .limiter()
        .acquire_slot_at(ip, portcullis::clock::now())
        .is_none());
    // Dropping one penalty hands its slot back.
    drop(held.pop());
    let p = g.login_failed("u", ip).await;
    assert!(p.slot.is_some(), "slot came back on drop");
    // Leak every slot: the TTL (60 s) reclaims them.
    for p in held.drain(..).chain([p]) {
        std::mem::forget(p);
    }
    let l = g.limiter();
    let t = portcullis::clock::now();
    assert!(l.acquire_slot_at(ip, t).is_none());
    assert!(l.acquire_slot_at(ip, t + Duration::from_secs(61)).is_some());
}

#[tokio::test(start_paused = true)]
async fn penalty_is_served_with_tokio_sleep_holding_the_slot() {
    let mut c = Config::default();
    c.slots.slots = 1;
    let g = guard(c, 1000);
    let ip: IpAddr = "192.0.2.11".parse().unwrap();
    let p = g.login_failed("v", ip).await;
    assert_eq!(p.delay, Duration::from_secs(1));
    let start = tokio::time::Instant::now();
    let served = tokio::spawn(p.serve());
    tokio::task::yield_now().await;
    // While it sleeps, its slot is taken: the next failure has none and is capped to base.
    let q = g.login_failed("v", ip).await;
    assert!(q.slot.is_none());
    served.await.unwrap();
    assert!(start.elapsed() >= StdDuration::from_secs(1));
    let r = g.login_failed("v", ip).await;
    assert!(r.slot.is_some(), "slot released after the delay");
}

#[tokio::test]
async fn cleanup_task_starts_runs_and_stops_gracefully() {
    let mut c = Config::default();
    c.requests.window = Duration::from_millis(50);
    c.blocks.violation_memory = Duration::from_millis(100);
    c.blocks.ban_lookback = Duration::from_millis(100);
    let g = guard(c, 1000);
    for i in 0..100u32 {
        g.check_request(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)))
            .await;
    }
    assert_eq!(g.limiter().len(), 100);
    let task = Cleanup::start(g.clone(), StdDuration::from_millis(200));
    tokio::time::sleep(StdDuration::from_millis(700)).await;
    assert_eq!(g.limiter().len(), 0, "the task purged the idle keys");
    task.shutdown()
        .await
        .expect("no store: the final snapshot is a no-op");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_keys_leave_an_empty_table_after_purge() {
    let mut c = Config::default();
    c.requests.window = Duration::from_secs(1);
    c.blocks.violation_memory = Duration::from_secs(1);
    c.blocks.ban_lookback = Duration::from_secs(1);
    let g = guard(c, 1_000_000);
    let l = g.limiter().clone();
    let t0 = Instant::from_secs(10);
    let n = tokio::task::spawn_blocking(move || {
        let mut allowed = 0u32;
        for i in 0..1_000_000u32 {
            if l.check_request_at(IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + i)), t0)
                .decision
                .is_allowed()
            {
                allowed += 1;
            }
        }
        (allowed, l.len())
    })
    .await
    .unwrap();
    assert_eq!(n, (1_000_000, 1_000_000));
    assert_eq!(g.limiter().stats().evictions, 0);
    let l = g.limiter().clone();
    let report = tokio::task::spawn_blocking(move || l.purge_at(t0 + Duration::from_secs(2)))
        .await
        .unwrap();
    assert_eq!(report.removed, 1_000_000);
    assert_eq!(report.kept, 0);
    assert!(g.limiter().is_empty());
    // run_once on an empty table is a no-op that still reports.
    assert_eq!(Cleanup::run_once(&g).await.removed, 0);
}
