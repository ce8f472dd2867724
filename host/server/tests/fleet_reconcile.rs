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

use common::{admin_json, hit, metric, Server, TOKEN};
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

// Issue 26 item 5: no ban lost in a fleet outage.

/// A fleet server whose store file (its journal) is `db`.
fn start_at(db: &std::path::Path, url: &str, extra: &[(&str, &str)]) -> Server {
    let mut env = vec![
        ("PORTCULLIS_STORE__KIND", "redis"),
        ("PORTCULLIS_STORE__REDIS_URL", url),
        ("PORTCULLIS_SERVER__TRUSTED_PROXIES", "[\"127.0.0.0/8\"]"),
    ];
    env.extend_from_slice(extra);
    Server::start(db, &env)
}

/// Rows in the journal table of a store file no server holds.
fn journal_rows(db: &std::path::Path) -> i64 {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row("SELECT count(*) FROM journal", [], |r| r.get(0))
        .unwrap()
}

/// The Redis key of an IPv4 address's request state.
fn request_key(ip: &str) -> String {
    let addr = portcullis::Addr::from_ip(ip.parse().unwrap(), 64);
    let hex: String = addr.octets().iter().map(|b| format!("{b:02x}")).collect();
    format!("portcullis:{{a:{hex}}}:req")
}

/// Item 5 (a): a ban the fallback imposed during an outage survives
/// `kill -9` (the journal), holds after a restart while Redis is still
/// down, and reaches Redis, and so a second server, once Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_made_in_an_outage_survives_kill_9_and_reaches_the_fleet() {
    let Some(mut redis) = RedisServer::start_or_skip("ban_survives_kill_9") else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let (db_a, db_b) = (d.path().join("a.db"), d.path().join("b.db"));
    // Banned on the first violation (10 requests a minute).
    let rules = [
        ("PORTCULLIS_REQUESTS__MAX_REQUESTS", "10"),
        ("PORTCULLIS_REQUESTS__WINDOW", "60s"),
        ("PORTCULLIS_REQUESTS__BLOCK_AFTER", "1"),
        ("PORTCULLIS_REQUESTS__BAN_AFTER", "1"),
    ];
    let x = "203.0.113.99";
    let a = start_at(&db_a, &redis.url(), &rules);
    assert_eq!(hit(&a, "192.0.2.10").await, 200);
    redis.stop();
    let mut last = 0;
    for _ in 0..12 {
        last = hit(&a, x).await;
    }
    assert_eq!(last, 403, "A's fallback banned x");
    assert_eq!(metric(&a, "portcullis_journal_entries").await, 1);
    a.kill9();
    assert_eq!(journal_rows(&db_a), 1, "the ban is in A's journal");

    // Restarted with Redis still down: the journal's ban holds at once.
    let a = start_at(&db_a, &redis.url(), &rules);
    assert_eq!(hit(&a, x).await, 403, "the ban, from the journal");
    assert_eq!(hit(&a, "192.0.2.11").await, 200, "others are let in");
    let status = admin_json(&a, "/admin/status").await;
    assert_eq!(status["fallback_active"], true, "{status}");
    assert_eq!(status["journal"]["entries"], 1, "{status}");
    assert_eq!(
        status["journal"]["path"],
        db_a.display().to_string(),
        "{status}"
    );

    // Redis back (empty): A writes the ban there and drains its journal.
    let mut a_log = Vec::new();
    redis.restart().expect("restart redis on the same port");
    assert!(
        logged(&a, &mut a_log, "redis reconciled", 10).await,
        "A reconciled its journal's ban:\n{}",
        a_log.join("\n")
    );
    let key = request_key(x);
    assert_eq!(
        redis.inline(&format!("EXISTS {key}")).as_deref(),
        Some(":1\r\n"),
        "redis holds x's state"
    );
    assert_eq!(
        redis.inline(&format!("PTTL {key}")).as_deref(),
        Some(":-1\r\n"),
        "a ban: no expiry"
    );
    assert_eq!(metric(&a, "portcullis_journal_entries").await, 0);
    let b = start_at(&db_b, &redis.url(), &rules);
    assert_eq!(hit(&b, x).await, 403, "B refuses the ban A made offline");
    assert_eq!(hit(&b, "192.0.2.12").await, 200);
    let bans = admin_json(&b, "/admin/bans").await;
    assert!(
        bans.as_array()
            .unwrap()
            .iter()
            .any(|r| r["ip"] == x && r["reason"] == "banned"),
        "{bans}"
    );
    assert!(a.stop().success());
    assert_eq!(journal_rows(&db_a), 0, "drained once redis had it");
}

async fn login_as(s: &Server, who: &str, user: &str, password: &str) -> u16 {
    reqwest::Client::new()
        .post(s.url("/login"))
        .header("x-forwarded-for", who)
        .json(&serde_json::json!({"username": user, "password": password}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Item 5 (b): a lock set in Redis through A holds on A and on B while
/// Redis is down (their caches of standing denials), where the local
/// fallback alone would let the right password in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_from_redis_holds_on_every_server_while_redis_is_down() {
    let Some(mut redis) = RedisServer::start_or_skip("lock_holds_in_outage") else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let rules = [
        ("PORTCULLIS_LOGIN__MAX_FAILURES", "3"),
        ("PORTCULLIS_LOGIN__LOCK_FOR", "2m"),
        ("PORTCULLIS_PENALTY__BASE", "10ms"),
        ("PORTCULLIS_PENALTY__MAX", "20ms"),
        ("PORTCULLIS_LOGIN__ARGON2_MEMORY_KIB", "64"),
    ];
    let a = start_at(&d.path().join("a.db"), &redis.url(), &rules);
    let b = start_at(&d.path().join("b.db"), &redis.url(), &rules);
    // The caches take denials once the lift counter has been read.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (x, y) = ("203.0.113.40", "198.51.100.40");
    for _ in 0..3 {
        assert_eq!(login_as(&a, x, "demo", "wrong").await, 401);
    }
    assert_eq!(
        login_as(&a, x, "demo", "demo-password").await,
        429,
        "locked"
    );
    assert_eq!(login_as(&b, x, "demo", "demo-password").await, 429, "B too");
    let hex: String = portcullis::Addr::from_ip(x.parse().unwrap(), 64)
        .octets()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let keys = redis
        .inline(&format!("KEYS portcullis:{{a:{hex}}}:lu:*"))
        .unwrap_or_default();
    assert!(
        keys.starts_with("*1\r\n"),
        "redis holds the pair's lock: {keys:?}"
    );
    let bans = admin_json(&b, "/admin/bans").await;
    assert!(
        bans.as_array().unwrap().iter().any(|r| r["ip"] == x),
        "{bans}"
    );

    redis.stop();
    // y is decided by the fallback (Redis is away) ...
    assert_eq!(login_as(&b, y, "demo", "demo-password").await, 200);
    assert_eq!(login_as(&a, y, "demo", "demo-password").await, 200);
    assert_eq!(metric(&a, "portcullis_fallback_active").await, 1);
    assert_eq!(metric(&b, "portcullis_fallback_active").await, 1);
    // ... x stays locked on both, right password or not.
    for s in [&a, &b] {
        assert_eq!(login_as(s, x, "demo", "demo-password").await, 429);
        assert_eq!(login_as(s, x, "demo", "wrong").await, 429);
    }
    assert!(metric(&b, "portcullis_denial_cache_hits_total").await >= 2);
}
