//! Issue 19 items 2 and 3 end to end: two real `portcullis serve`
//! processes on one real `redis-server`. A ban server A's fallback made
//! during an outage is written to Redis when it returns, so server B
//! refuses the address too (counted and logged on A); a block B got from
//! Redis is answered from B's cache, and an unban through A reaches B
//! within a second; `[store] denial_cache = 0` turns the cache off.

use std::time::{Duration, Instant};

mod common;
#[allow(dead_code)]
#[path = "../../../tests/src/redis_server.rs"]
mod redis_server;

use common::{hit, metric, Server, TOKEN};
use redis_server::RedisServer;

fn start(url: &str, extra: &[(&str, &str)]) -> Server {
    let d = tempfile::tempdir().unwrap();
    let mut env = vec![
        ("PORTCULLIS_STORE__KIND", "redis"),
        ("PORTCULLIS_STORE__REDIS_URL", url),
        ("PORTCULLIS_SERVER__TRUSTED_PROXIES", "[\"127.0.0.0/8\"]"),
        ("PORTCULLIS_REQUESTS__MAX_REQUESTS", "5"),
        ("PORTCULLIS_REQUESTS__WINDOW", "60s"),
    ];
    env.extend_from_slice(extra);
    let s = Server::start(&d.path().join("unused.db"), &env);
    std::mem::forget(d);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_made_during_an_outage_reaches_the_fleet() {
    let Some(mut redis) = RedisServer::start_or_skip("ban_during_outage_reaches_fleet") else {
        return;
    };
    // Banned on the first violation.
    let rules = [
        ("PORTCULLIS_REQUESTS__BLOCK_AFTER", "1"),
        ("PORTCULLIS_REQUESTS__BAN_AFTER", "1"),
    ];
    let a = start(&redis.url(), &rules);
    let b = start(&redis.url(), &rules);
    assert_eq!(hit(&a, "192.0.2.10").await, 200);
    assert_eq!(hit(&b, "192.0.2.10").await, 200);
    assert_eq!(metric(&a, "portcullis_reconciled_total").await, 0);

    redis.stop();
    let mut last = 0;
    for _ in 0..7 {
        last = hit(&a, "203.0.113.66").await;
    }
    assert_eq!(last, 403, "A's fallback banned it");
    assert_eq!(metric(&a, "portcullis_fallback_active").await, 1);
    assert_eq!(
        metric(&a, "portcullis_reconcile_queued").await,
        1,
        "the ban, queued"
    );

    redis.restart().expect("restart redis on the same port");
    // Waited for in the logs (each /metrics scrape is a request, limited
    // like any other).
    let mut a_log = Vec::new();
    assert!(
        logged(&a, &mut a_log, "redis reconciled", 10).await,
        "A wrote its fallback's ban to redis:\n{}",
        a_log.join("\n")
    );
    assert!(metric(&a, "portcullis_reconciled_total").await >= 1);
    assert_eq!(metric(&a, "portcullis_reconcile_queued").await, 0);
    // B back on Redis (probed with other addresses), then one request:
    // fewer than max_requests, so only the reconciled ban can refuse it.
    let mut b_log: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    for i in 1u8.. {
        assert_eq!(hit(&b, &format!("192.0.2.{i}")).await, 200);
        // Its log lines reach the test through a pipe and a thread.
        tokio::time::sleep(Duration::from_millis(50)).await;
        b_log.extend(b.logs());
        // B is on Redis unless its last outage/recovery line is an outage.
        let down = b_log
            .iter()
            .rev()
            .find(|l| l.contains("redis unavailable") || l.contains("redis is back"))
            .is_some_and(|l| l.contains("redis unavailable"));
        if !down {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B never got back to redis:\n{}",
            b_log.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(metric(&b, "portcullis_fallback_active").await, 0);
    assert_eq!(hit(&b, "203.0.113.66").await, 403, "B refuses A's ban");
}

/// Wait (at most `secs`) for a log line of `s` containing `needle`; the
/// lines read so far are kept in `seen`.
async fn logged(s: &Server, seen: &mut Vec<String>, needle: &str, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        seen.extend(s.logs());
        if seen.iter().any(|l| l.contains(needle)) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_blocks_are_answered_locally_and_an_unban_elsewhere_reaches_them() {
    let Some(redis) = RedisServer::start_or_skip("denial_cache_e2e") else {
        return;
    };
    // Blocked for a minute on the first violation, never banned.
    let rules = [
        ("PORTCULLIS_REQUESTS__BLOCK_AFTER", "1"),
        ("PORTCULLIS_REQUESTS__BLOCK_FOR", "60s"),
        ("PORTCULLIS_REQUESTS__BAN_AFTER", "0"),
    ];
    let a = start(&redis.url(), &rules);
    let b = start(&redis.url(), &rules);
    let off = start(
        &redis.url(),
        &[
            rules[0],
            rules[1],
            rules[2],
            ("PORTCULLIS_STORE__DENIAL_CACHE", "0"),
        ],
    );
    // The cache is used once the lift counter has been read (250 ms).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let x = "203.0.113.77";
    let mut last = 0;
    for _ in 0..6 {
        last = hit(&a, x).await;
    }
    assert_eq!(last, 429, "A's traffic blocked x");
    assert_eq!(hit(&b, x).await, 429, "B: the block, from redis");
    let before = metric(&b, "portcullis_denial_cache_hits_total").await;
    for _ in 0..5 {
        assert_eq!(hit(&b, x).await, 429);
    }
    let hits = metric(&b, "portcullis_denial_cache_hits_total").await - before;
    assert!(hits >= 5, "B answered from its cache: {hits} hits");
    assert_eq!(metric(&b, "portcullis_denial_cache_entries").await, 1);
    for _ in 0..3 {
        assert_eq!(hit(&off, x).await, 429);
    }
    assert_eq!(
        metric(&off, "portcullis_denial_cache_hits_total").await,
        0,
        "denial_cache = 0: no cache"
    );

    // Unban through A: B lets x in within a second.
    let r = reqwest::Client::new()
        .delete(a.url(&format!("/admin/bans/{x}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let t = Instant::now();
    loop {
        let got = hit(&b, x).await;
        if got == 200 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "B still answers {got} {:?} after the unban",
            t.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
