//! Integration tests of the Redis fleet backend against a real
//! redis-server: key layout, TTLs, `NOSCRIPT` reload, timeouts and errors
//! when Redis is stopped or hung, and corrupt state answered with an error
//! rather than a panic. Without redis-server: SKIP, or a failure under
//! `CI=true`.

use std::net::IpAddr;
use std::time::Duration as StdDuration;

use portcullis::fleet::{FleetError, RedisLimiter};
use portcullis_core::Duration;
use portcullis_core::{Config, Decision, Reason, Seed};
use portcullis_tests::redis_server::RedisServer;
use redis::AsyncCommands;

const SEED: Seed = Seed::new([3; 16]);
/// A realistic Unix time in µs.
const T0: u64 = 1_714_000_000_000_000;
const SEC: u64 = 1_000_000;

fn ip(s: &str) -> IpAddr {
    match s.parse() {
        Ok(ip) => ip,
        Err(e) => panic!("{s}: {e}"),
    }
}

async fn limiter(server: &RedisServer, config: Config, ns: &str) -> RedisLimiter {
    match RedisLimiter::connect(
        &server.url(),
        config,
        SEED,
        ns,
        StdDuration::from_millis(500),
    )
    .await
    {
        Ok(l) => l,
        Err(e) => panic!("connect: {e}"),
    }
}

async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(server.url()).expect("client");
    client
        .get_multiplexed_tokio_connection()
        .await
        .expect("raw connection")
}

async fn pttl(con: &mut redis::aio::MultiplexedConnection, key: &str) -> i64 {
    con.pttl(key).await.expect("PTTL")
}

fn assert_ttl_secs(ttl_ms: i64, secs: i64, what: &str) {
    assert!(
        ttl_ms <= secs * 1000 && ttl_ms > secs * 1000 - 5_000,
        "{what}: PTTL {ttl_ms} ms, expected about {secs} s"
    );
}

#[test]
fn limiter_is_clone_send_sync() {
    fn limiter<T: Clone + Send + Sync + 'static>() {}
    fn error<T: std::error::Error + Send + Sync + 'static>() {}
    limiter::<RedisLimiter>();
    error::<FleetError>();
}

#[tokio::test]
async fn bad_url_is_reported_without_password() {
    let r = RedisLimiter::connect(
        "redis://:hunter2@host:notaport/",
        Config::default(),
        SEED,
        "t",
        StdDuration::from_millis(50),
    )
    .await;
    match r {
        Err(e @ FleetError::BadUrl { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("bad redis_url"), "{msg}");
            assert!(!msg.contains("hunter2"), "password leaked: {msg}");
        }
        other => panic!("expected BadUrl, got {other:?}"),
    }
    let r = RedisLimiter::connect(
        "this is not a url",
        Config::default(),
        SEED,
        "t",
        StdDuration::from_millis(50),
    )
    .await;
    assert!(matches!(r, Err(FleetError::BadUrl { .. })), "{r:?}");
}

#[tokio::test]
async fn invalid_config_is_refused() {
    let mut c = Config::default();
    c.requests.max_requests = 0;
    let r = RedisLimiter::connect(
        "redis://127.0.0.1:1/",
        c,
        SEED,
        "t",
        StdDuration::from_millis(50),
    )
    .await;
    assert!(matches!(r, Err(FleetError::Config(_))), "{r:?}");
}

#[tokio::test]
async fn key_layout_is_cluster_safe() {
    let Some(server) = RedisServer::start_or_skip("key_layout_is_cluster_safe") else {
        return;
    };
    let lim = limiter(&server, Config::default(), "pc").await;
    let a = ip("10.0.0.1");
    assert_eq!(
        lim.request_key(a),
        "pc:{a:00000000000000000000ffff0a000001}:req"
    );
    assert_eq!(lim.request_key(ip("::ffff:10.0.0.1")), lim.request_key(a));
    assert_eq!(
        lim.login_ip_key(ip("2001:db8:0:1::5")),
        "pc:{a:20010db8000000010000000000000000}:lip"
    );
    let h = lim.user_hash("alice");
    assert_eq!(lim.user_hash(" ALICE "), h);
    assert_eq!(
        lim.login_user_key("Alice", a),
        format!("pc:{{a:00000000000000000000ffff0a000001}}:lu:{h:016x}")
    );
    assert_eq!(lim.account_key("alice"), format!("pc:{{u:{h:016x}}}:acct"));
    // The denial cache's lift counter: one key, one hash tag.
    assert_eq!(lim.denials_version_key(), "pc:{denials}:v");

    assert!(lim.check_request(a, T0).await.expect("req").is_allowed());
    let p = lim.login_failed("alice", a, T0).await.expect("fail");
    if let Some(s) = p.slot {
        assert!(lim.release_slot(s).await.expect("release"));
    }
    let mut con = raw(&server).await;
    let mut keys: Vec<String> = con.keys("pc:*").await.expect("KEYS");
    keys.sort();
    let mut want = vec![
        lim.request_key(a),
        lim.login_ip_key(a),
        lim.login_user_key("alice", a),
        lim.account_key("alice"),
    ];
    want.sort();
    assert_eq!(keys, want);
}

#[tokio::test]
async fn ttls_follow_the_state() {
    let Some(server) = RedisServer::start_or_skip("ttls_follow_the_state") else {
        return;
    };
    let mut c = Config::default();
    c.requests.max_requests = 1;
    c.blocks.block_after = 1;
    c.login.max_failures = 2;
    c.login.ip_max_failures = Some(2);
    c.login.lock_for = portcullis_core::Duration::from_secs(1200);
    let lim = limiter(&server, c, "ttl")
        .await
        .with_ttl_slack(StdDuration::ZERO);
    let mut con = raw(&server).await;
    let a = ip("10.0.0.1");

    // A request: remembered for one window (60 s).
    assert!(lim.check_request(a, T0).await.expect("req").is_allowed());
    assert_ttl_secs(pttl(&mut con, &lim.request_key(a)).await, 60, "request log");

    // A violation that blocks: remembered for the violation memory (24 h).
    let d = lim.check_request(a, T0 + SEC).await.expect("req");
    assert_eq!(d.reason(), Some(Reason::Blocked));
    assert_ttl_secs(
        pttl(&mut con, &lim.request_key(a)).await,
        86_400,
        "violation",
    );

    // A ban: no TTL at all.
    let b = ip("10.0.0.2");
    assert!(lim.ban(b, T0).await.expect("ban"));
    assert_eq!(pttl(&mut con, &lim.request_key(b)).await, -1);
    assert_eq!(
        lim.check_request(b, T0).await.expect("req"),
        Decision::Deny {
            reason: Reason::Banned,
            retry_after: Duration::MAX
        }
    );

    // A login failure: failure window (300 s) for the pair and the ip, the
    // account window (3600 s) for the account.
    let p = lim.login_failed("alice", a, T0).await.expect("fail");
    assert!(!p.locked);
    assert_ttl_secs(
        pttl(&mut con, &lim.login_user_key("alice", a)).await,
        300,
        "pair",
    );
    assert_ttl_secs(pttl(&mut con, &lim.login_ip_key(a)).await, 300, "ip");
    assert_ttl_secs(
        pttl(&mut con, &lim.account_key("alice")).await,
        3600,
        "account",
    );
    if let Some(s) = p.slot {
        assert!(lim.release_slot(s).await.expect("release"));
    }
    // Releasing keeps the TTL.
    assert_ttl_secs(
        pttl(&mut con, &lim.login_ip_key(a)).await,
        300,
        "ip after release",
    );

    // A lock: held for lock_for (1200 s).
    let p = lim.login_failed("alice", a, T0).await.expect("fail");
    assert!(p.locked);
    assert_ttl_secs(
        pttl(&mut con, &lim.login_user_key("alice", a)).await,
        1200,
        "locked pair",
    );
    assert_ttl_secs(
        pttl(&mut con, &lim.login_ip_key(a)).await,
        1200,
        "locked ip",
    );

    // A slack adds to every TTL.
    let slack = lim.clone().with_ttl_slack(StdDuration::from_secs(100));
    let c2 = ip("10.0.0.3");
    assert!(slack.check_request(c2, T0).await.expect("req").is_allowed());
    assert_ttl_secs(pttl(&mut con, &slack.request_key(c2)).await, 160, "slack");

    // Lift: everything cleared, bans gone.
    let rows = lim.bans(T0 + SEC).await.expect("bans");
    assert!(
        rows.iter()
            .any(|r| r.addr.ip() == b && r.reason == Reason::Banned && r.left.is_none()),
        "{rows:?}"
    );
    assert!(rows
        .iter()
        .any(|r| r.addr.ip() == a && r.reason == Reason::Blocked));
    assert!(rows
        .iter()
        .any(|r| r.addr.ip() == a && r.reason == Reason::IpLocked));
    assert!(rows
        .iter()
        .any(|r| r.addr.ip() == a && r.reason == Reason::PairLocked));
    assert_eq!(lim.lift(a, T0 + SEC).await.expect("lift"), 3);
    assert_eq!(lim.lift(b, T0 + SEC).await.expect("lift"), 1);
    assert_eq!(lim.bans(T0 + SEC).await.expect("bans"), vec![]);
    assert!(lim
        .check_request(b, T0 + SEC)
        .await
        .expect("req")
        .is_allowed());
    assert!(lim
        .check_login("alice", a, T0 + SEC)
        .await
        .expect("login")
        .is_allowed());
}

#[tokio::test]
async fn script_is_reloaded_after_script_flush() {
    let Some(server) = RedisServer::start_or_skip("script_is_reloaded_after_script_flush") else {
        return;
    };
    let mut c = Config::default();
    c.requests.max_requests = 2;
    let lim = limiter(&server, c, "flush").await;
    let a = ip("192.0.2.200");
    assert!(lim.check_request(a, T0).await.expect("first").is_allowed());
    let mut con = raw(&server).await;
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut con)
        .await
        .expect("SCRIPT FLUSH");
    // NOSCRIPT → SCRIPT LOAD → EVALSHA, and the state is still there.
    assert_eq!(
        lim.check_request(a, T0).await.expect("after flush"),
        Decision::Allow {
            remaining: 0,
            reset_after: Duration::from_secs(60)
        }
    );
    assert_eq!(
        lim.check_request(a, T0).await.expect("third").reason(),
        Some(Reason::RateLimited)
    );
}

#[tokio::test]
async fn stopped_redis_is_an_error_then_recovers() {
    let Some(mut server) = RedisServer::start_or_skip("stopped_redis_is_an_error_then_recovers")
    else {
        return;
    };
    let lim = match RedisLimiter::connect(
        &server.url(),
        Config::default(),
        SEED,
        "stop",
        StdDuration::from_millis(50),
    )
    .await
    {
        Ok(l) => l,
        Err(e) => panic!("connect: {e}"),
    };
    let a = ip("10.1.1.1");
    assert!(lim.check_request(a, T0).await.expect("up").is_allowed());

    server.stop();
    for i in 0..3 {
        let began = std::time::Instant::now();
        let r = lim.check_request(a, T0).await;
        assert!(
            matches!(r, Err(FleetError::Timeout(_) | FleetError::Redis(_))),
            "call {i} with redis stopped: {r:?}"
        );
        assert!(
            began.elapsed() < StdDuration::from_millis(1000),
            "call {i} took {:?}",
            began.elapsed()
        );
    }

    server.restart().expect("restart");
    // The connection manager reconnects; the empty server has no script
    // (NOSCRIPT → reload) and no state.
    let deadline = std::time::Instant::now() + StdDuration::from_secs(10);
    loop {
        match lim.check_request(a, T0).await {
            Ok(d) => {
                assert_eq!(
                    d,
                    Decision::Allow {
                        remaining: 49,
                        reset_after: Duration::from_secs(60)
                    }
                );
                break;
            }
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("not yet back: {e}");
                tokio::time::sleep(StdDuration::from_millis(50)).await;
            }
            Err(e) => panic!("redis did not come back: {e}"),
        }
    }
}

#[tokio::test]
async fn hung_redis_times_out() {
    let Some(server) = RedisServer::start_or_skip("hung_redis_times_out") else {
        return;
    };
    let lim = match RedisLimiter::connect(
        &server.url(),
        Config::default(),
        SEED,
        "hung",
        StdDuration::from_millis(50),
    )
    .await
    {
        Ok(l) => l,
        Err(e) => panic!("connect: {e}"),
    };
    let a = ip("10.2.2.2");
    assert!(lim.check_request(a, T0).await.expect("up").is_allowed());
    server.freeze().expect("SIGSTOP");
    let began = std::time::Instant::now();
    let r = lim.check_request(a, T0).await;
    let took = began.elapsed();
    server.thaw().expect("SIGCONT");
    match r {
        Err(e @ FleetError::Timeout(_)) => {
            assert!(e.to_string().contains("did not answer"), "{e}");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(
        took >= StdDuration::from_millis(40) && took < StdDuration::from_millis(500),
        "timeout took {took:?}"
    );
    // Answers again once Redis does.
    let deadline = std::time::Instant::now() + StdDuration::from_secs(10);
    loop {
        match lim.peek_request(a, T0).await {
            Ok(_) => break,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("not yet back: {e}");
                tokio::time::sleep(StdDuration::from_millis(50)).await;
            }
            Err(e) => panic!("redis did not come back: {e}"),
        }
    }
}

#[tokio::test]
async fn garbage_state_is_an_error_not_a_panic() {
    let Some(server) = RedisServer::start_or_skip("garbage_state_is_an_error_not_a_panic") else {
        return;
    };
    let lim = limiter(&server, Config::default(), "junk").await;
    let mut con = raw(&server).await;
    let a = ip("10.3.3.3");

    // Not msgpack of a map.
    let _: () = con.set(lim.request_key(a), "garbage").await.expect("SET");
    let r = lim.check_request(a, T0).await;
    match r {
        Err(FleetError::Redis(e)) => assert!(e.to_string().contains("PORTCULLIS"), "{e}"),
        other => panic!("expected a script error, got {other:?}"),
    }
    assert!(lim.peek_request(a, T0).await.is_err());
    assert!(lim.bans(T0).await.is_err());
    assert!(lim.ban(a, T0).await.is_err());

    // A msgpack map with fields of the wrong type.
    let _: () = redis::cmd("EVAL")
        .arg("redis.call('SET', KEYS[1], cmsgpack.pack({l = 'x', c = -1}))")
        .arg(1)
        .arg(lim.login_ip_key(a))
        .query_async(&mut con)
        .await
        .expect("EVAL");
    assert!(matches!(
        lim.acquire_slot(a, T0).await,
        Err(FleetError::Redis(_))
    ));
    assert!(lim.check_login("bob", a, T0).await.is_err());

    // Another type altogether.
    let b = ip("10.3.3.4");
    let _: () = con.hset(lim.request_key(b), "f", "v").await.expect("HSET");
    assert!(matches!(
        lim.check_request(b, T0).await,
        Err(FleetError::Redis(_))
    ));

    // Other keys are unaffected, and overwriting fixes the key.
    let c = ip("10.3.3.5");
    assert!(lim
        .check_request(c, T0)
        .await
        .expect("clean key")
        .is_allowed());
    assert!(lim.lift(c, T0).await.is_ok());
    let _: () = con.del(lim.request_key(a)).await.expect("DEL");
    assert!(lim.check_request(a, T0).await.expect("fixed").is_allowed());
}

#[tokio::test]
async fn slots_are_capped_released_and_reclaimed() {
    let Some(server) = RedisServer::start_or_skip("slots_are_capped_released_and_reclaimed") else {
        return;
    };
    let mut c = Config::default();
    c.slots.slots = 2;
    let lim = limiter(&server, c, "slots").await;
    let a = ip("10.4.4.4");
    let s1 = lim.acquire_slot(a, T0).await.expect("acq").expect("slot 1");
    let s2 = lim.acquire_slot(a, T0).await.expect("acq").expect("slot 2");
    assert_ne!(s1.id(), s2.id());
    assert!(lim.acquire_slot(a, T0).await.expect("acq").is_none());
    assert!(lim.release_slot(s1).await.expect("release"));
    let s3 = lim.acquire_slot(a, T0).await.expect("acq").expect("slot 3");
    // After slot_ttl (60 s) the lost slots are reclaimed.
    let later = T0 + 60 * SEC;
    let s4 = lim
        .acquire_slot(a, later)
        .await
        .expect("acq")
        .expect("slot 4");
    let _s5 = lim
        .acquire_slot(a, later)
        .await
        .expect("acq")
        .expect("slot 5");
    assert!(lim.acquire_slot(a, later).await.expect("acq").is_none());
    assert!(!lim.release_slot(s2).await.expect("release reclaimed"));
    assert!(!lim.release_slot(s3).await.expect("release reclaimed"));
    assert!(lim.release_slot(s4).await.expect("release"));
}
