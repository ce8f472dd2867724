//! Two `portcullis serve` processes on one real `redis-server` share their
//! limits; Redis going away degrades as configured (local fallback, or 503
//! with `fail_closed`), counted and logged once, and comes back.

use std::time::{Duration, Instant};

mod common;
#[allow(dead_code)]
#[path = "../../../tests/src/redis_server.rs"]
mod redis_server;

use common::{admin_json, hit, metric, Server, TOKEN};
use redis_server::RedisServer;

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

fn fleet_env(url: &str, extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, String)> {
    let mut v: Vec<(&'static str, String)> = vec![
        ("PORTCULLIS_STORE__KIND", "redis".into()),
        ("PORTCULLIS_STORE__REDIS_URL", url.into()),
        (
            "PORTCULLIS_SERVER__TRUSTED_PROXIES",
            "[\"127.0.0.0/8\"]".into(),
        ),
        ("PORTCULLIS_REQUESTS__MAX_REQUESTS", "5".into()),
        ("PORTCULLIS_REQUESTS__WINDOW", "2s".into()),
        ("PORTCULLIS_REQUESTS__BLOCK_AFTER", "16".into()),
        ("PORTCULLIS_REQUESTS__BAN_AFTER", "2".into()),
    ];
    v.extend(extra.iter().map(|(k, x)| (*k, x.to_string())));
    v
}

fn start(url: &str, extra: &[(&'static str, &'static str)]) -> Server {
    let d = tempfile::tempdir().unwrap();
    let env = fleet_env(url, extra);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let s = Server::start(&d.path().join("unused.db"), &env);
    std::mem::forget(d);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_limits_bans_and_unbans() {
    let Some(redis) = RedisServer::start_or_skip("two_servers_share_limits") else {
        return;
    };
    let a = start(&redis.url(), &[]);
    let b = start(&redis.url(), &[]);
    // One address spread over both servers: exactly max_requests succeed.
    let mut ok = 0;
    for i in 0..20 {
        let s = if i % 2 == 0 { &a } else { &b };
        if hit(s, "203.0.113.1").await == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, 5, "one limit across the fleet");
    // A ban made through A (two violation windows) is enforced by B.
    for _ in 0..6 {
        hit(&a, "203.0.113.2").await;
    }
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut last = 0;
    for _ in 0..6 {
        last = hit(&a, "203.0.113.2").await;
    }
    assert_eq!(last, 403, "banned after the second violation window");
    assert_eq!(hit(&b, "203.0.113.2").await, 403, "B enforces A's ban");
    let bans: serde_json::Value = admin_json(&b, "/admin/bans").await;
    assert!(
        bans.as_array()
            .unwrap()
            .iter()
            .any(|r| r["ip"] == "203.0.113.2" && r["reason"] == "banned"),
        "{bans}"
    );
    // Unban through B lifts it everywhere.
    let r = client()
        .delete(b.url("/admin/bans/203.0.113.2"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Lifted on A too, within a second (A may hold the ban in its cache
    // of standing denials until it sees the fleet's lift counter move).
    let t = Instant::now();
    while hit(&a, "203.0.113.2").await != 200 {
        assert!(t.elapsed() < Duration::from_secs(1), "lifted on A too");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let st: serde_json::Value = admin_json(&a, "/admin/status").await;
    assert_eq!(st["backend"], "redis");
    assert_eq!(st["fallback_active"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_falls_back_or_fails_closed_and_recovers() {
    let Some(mut redis) = RedisServer::start_or_skip("redis_outage") else {
        return;
    };
    let rules = [
        ("PORTCULLIS_REQUESTS__MAX_REQUESTS", "50"),
        ("PORTCULLIS_REQUESTS__WINDOW", "60s"),
    ];
    let open = start(&redis.url(), &rules);
    let closed = start(
        &redis.url(),
        &[
            rules[0],
            rules[1],
            ("PORTCULLIS_STORE__FAIL_CLOSED", "true"),
        ],
    );
    assert_eq!(hit(&open, "198.51.100.1").await, 200);
    assert_eq!(hit(&closed, "198.51.100.1").await, 200);
    assert_eq!(metric(&open, "portcullis_fallback_active").await, 0);

    redis.stop();
    // Fallback: the local limiter decides, quickly, and it is counted.
    let t = Instant::now();
    for _ in 0..5 {
        assert_eq!(hit(&open, "198.51.100.1").await, 200);
    }
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "bounded by the per-decision timeout: {:?}",
        t.elapsed()
    );
    assert!(metric(&open, "portcullis_fallbacks_total").await >= 5);
    assert_eq!(metric(&open, "portcullis_fallback_active").await, 1);
    // The local limiter really limits while Redis is away.
    let mut codes = Vec::new();
    for _ in 0..60 {
        codes.push(hit(&open, "198.51.100.9").await);
    }
    assert_eq!(
        codes.iter().filter(|&&c| c == 200).count(),
        50,
        "local fallback enforces the same rules"
    );
    // Fail closed: 503, never fail open.
    let r = client()
        .get(closed.url("/"))
        .header("x-forwarded-for", "198.51.100.1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert!(metric(&closed, "portcullis_fail_closed_total").await >= 1);
    // Logged once per outage, not per request.
    let logs = open.logs();
    assert_eq!(
        logs.iter()
            .filter(|l| l.contains("redis unavailable"))
            .count(),
        1,
        "{logs:#?}"
    );

    redis.restart().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        hit(&open, "198.51.100.2").await;
        if metric(&open, "portcullis_fallback_active").await == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "did not return to redis");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The flag flips before the log line crosses the stderr pipe: wait for it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !open.logs().iter().any(|l| l.contains("redis is back")) {
        assert!(Instant::now() < deadline, "no \"redis is back\" log line");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while hit(&closed, "198.51.100.3").await != 200 {
        assert!(
            Instant::now() < deadline,
            "fail-closed server did not recover"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_server_started_without_redis_is_degraded_then_connects() {
    let Some(mut redis) = RedisServer::start_or_skip("late_redis") else {
        return;
    };
    redis.stop();
    let s = start(&redis.url(), &[]);
    assert_eq!(
        hit(&s, "192.0.2.1").await,
        200,
        "local fallback from the start"
    );
    assert_eq!(metric(&s, "portcullis_fallback_active").await, 1);
    redis.restart().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        hit(&s, "192.0.2.1").await;
        if metric(&s, "portcullis_fallback_active").await == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "never connected");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn post_ban(s: &Server, body: serde_json::Value) -> (u16, serde_json::Value) {
    let r = client()
        .post(s.url("/admin/bans"))
        .header("x-forwarded-for", "198.18.0.1")
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or_default())
}

/// Poll `who` on `s` until it gets `want` (the fleet's manual bans reach
/// each server within about a second); the last status seen.
async fn wait_for(s: &Server, who: &str, want: u16) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = hit(s, who).await;
        if got == want || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Issue 17, item 3: a manual range ban made on one server holds on every
/// server of the fleet (and on a server that joins later), and lifting it
/// on another server lifts it everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_range_bans_hold_across_the_fleet() {
    let Some(redis) = RedisServer::start_or_skip("manual_range_bans_hold_across_the_fleet") else {
        return;
    };
    let a = start(&redis.url(), &[]);
    let b = start(&redis.url(), &[]);
    assert_eq!(hit(&b, "203.0.113.9").await, 200);
    let (st, v) = post_ban(
        &a,
        serde_json::json!({"ip": "203.0.113.0/24", "reason": "fleet scanner"}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let (st, v) = post_ban(&a, serde_json::json!({"ip": "2001:db8::/48", "for": "1h"})).await;
    assert_eq!(st, 201, "{v}");
    // On the server that took it: at once.
    assert_eq!(hit(&a, "203.0.113.9").await, 403);
    // On the other: within the sync interval.
    assert_eq!(wait_for(&b, "203.0.113.200", 403).await, 403);
    assert_eq!(wait_for(&b, "2001:db8:0:1::7", 429).await, 429);
    assert_eq!(hit(&b, "203.0.114.1").await, 200);
    let listed = admin_json(&b, "/admin/bans").await;
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["kind"] == "manual"
                && r["ip"] == "203.0.113.0/24"
                && r["note"] == "fleet scanner"),
        "{listed}"
    );
    // A server that starts later loads them.
    let c = start(&redis.url(), &[]);
    assert_eq!(wait_for(&c, "203.0.113.1", 403).await, 403);
    // Lifted on b: lifted on a and c too.
    let r = client()
        .delete(b.url("/admin/bans/203.0.113.0%2F24"))
        .header("x-forwarded-for", "198.18.0.1")
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["lifted"], 1, "{v}");
    assert_eq!(wait_for(&a, "203.0.113.9", 200).await, 200);
    assert_eq!(wait_for(&c, "203.0.113.9", 200).await, 200);
    assert_eq!(hit(&c, "2001:db8::9").await, 429, "the other range stays");

    // Redis away: the ban holds on the server that took it, and the
    // operator is told that the fleet does not have it.
    redis.freeze().unwrap();
    let (st, v) = post_ban(&a, serde_json::json!({"ip": "192.0.2.0/24"})).await;
    redis.thaw().unwrap();
    assert_eq!(st, 503, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("this server only"),
        "{v}"
    );
    assert_eq!(hit(&a, "192.0.2.1").await, 403);
}
