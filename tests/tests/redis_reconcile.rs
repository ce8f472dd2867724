//! Issue 19 items 2 and 3 at the library level, against a real
//! redis-server: what the local fallback imposes during an outage reaches
//! Redis when it returns (the longer state wins, nothing is shortened),
//! and the local cache of standing denials answers without a round trip
//! and lets go of a lift made through another engine within a second.
//! Without redis-server: SKIP, or a failure under `CI=true`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use portcullis::fleet::RedisLimiter;
use portcullis::fleet::{connect_fleet, FleetEngine, FleetOptions, NAMESPACE};
use portcullis::Engine;
use portcullis::Imposed;
use portcullis::{Guard, Limiter, LimiterOptions};
use portcullis_core::Duration;
use portcullis_core::{Config, Decision, Growth, KeyKind, Reason, Seed};
use portcullis_tests::redis_server::RedisServer;
use redis::AsyncCommands;

const SEC: u64 = 1_000_000;
const T0: u64 = 1_714_000_000_000_000;

fn ip(s: &str) -> IpAddr {
    match s.parse() {
        Ok(ip) => ip,
        Err(e) => panic!("{s}: {e}"),
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

async fn engine(server: &RedisServer, rules: Config, denial_cache: usize) -> Arc<FleetEngine> {
    let limiter = Limiter::new(rules.clone(), LimiterOptions::default()).expect("limiter");
    let guard = Guard::new(Arc::new(limiter), None);
    let opts = FleetOptions {
        redis_url: server.url(),
        redis_cluster: Vec::new(),
        redis_timeout: StdDuration::from_millis(100),
        fail_closed: false,
        rules,
        denial_cache,
    };
    connect_fleet(&opts, guard).await.expect("connect")
}

async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(server.url()).expect("client");
    client
        .get_multiplexed_tokio_connection()
        .await
        .expect("raw connection")
}

async fn fleet_seed(server: &RedisServer) -> Seed {
    let mut con = raw(server).await;
    let bytes: Vec<u8> = con
        .get(format!("{NAMESPACE}:seed"))
        .await
        .expect("GET seed");
    Seed::new(bytes.try_into().expect("16 bytes"))
}

/// A limiter on the fleet's keys, to look at what Redis holds.
async fn inspector(server: &RedisServer, rules: Config, seed: Seed) -> RedisLimiter {
    RedisLimiter::connect(
        &server.url(),
        rules,
        seed,
        NAMESPACE,
        StdDuration::from_millis(500),
    )
    .await
    .expect("inspector")
}

fn now_us() -> u64 {
    portcullis::clock::unix_us()
}

/// Blocks after the first violation (2 requests per 5 s), 120 s; logins
/// lock after 3 failures for 120 s.
fn block_rules() -> Config {
    let mut c = Config::default();
    c.requests.max_requests = 2;
    c.requests.window = secs(5);
    c.blocks.block_after = 1;
    c.blocks.block_for = secs(120);
    c.blocks.ban_after = None;
    c.login.max_failures = 3;
    c.login.ip_max_failures = Some(3);
    c.login.lock_for = secs(120);
    c.login.account_max_failures = None;
    c
}

/// Bans on the first violation.
fn ban_rules() -> Config {
    let mut c = block_rules();
    c.blocks.ban_after = Some(1);
    c
}

fn reason(d: &Decision) -> Option<Reason> {
    match d {
        Decision::Deny { reason, .. } => Some(*reason),
        Decision::Allow { .. } => None,
    }
}

fn retry(d: &Decision) -> Duration {
    match d {
        Decision::Deny { retry_after, .. } => *retry_after,
        Decision::Allow { .. } => Duration::from_ticks(0),
    }
}

async fn until_drained(e: &FleetEngine, what: &str) {
    let deadline = Instant::now() + StdDuration::from_secs(10);
    while e.pending_reconciliation() > 0 {
        assert!(
            Instant::now() < deadline,
            "{what}: {} keys still queued",
            e.pending_reconciliation()
        );
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
}

/// Item 2: Redis stopped, a block, a ban and a login lock imposed by the
/// fallback, Redis restarted empty on the same port: all three are in
/// Redis once it is back, decided there for anyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_bans_blocks_and_locks_reach_redis_when_it_returns() {
    let Some(mut server) = RedisServer::start_or_skip("reconcile_after_restart") else {
        return;
    };
    let blocks = engine(&server, block_rules(), 0).await;
    let bans = engine(&server, ban_rules(), 0).await;
    let seed = fleet_seed(&server).await;
    let (x, y, z) = (ip("198.51.100.7"), ip("198.51.100.8"), ip("2001:db8:7::1"));
    assert!(blocks.check_request(x).await.is_allowed(), "redis decides");
    assert_eq!(
        blocks.pending_reconciliation(),
        0,
        "nothing imposed locally"
    );

    server.stop();
    let mut last = None;
    for _ in 0..3 {
        last = Some(blocks.check_request(x).await);
    }
    assert_eq!(last.as_ref().and_then(reason), Some(Reason::Blocked));
    for _ in 0..3 {
        last = Some(bans.check_request(y).await);
    }
    assert_eq!(last.as_ref().and_then(reason), Some(Reason::Banned));
    let mut locked = false;
    for _ in 0..3 {
        locked = blocks.login_failed("alice", z).await.locked;
    }
    assert!(locked, "the fallback locked alice@z");
    // The block, the locked pair and the locked address; the ban.
    assert_eq!(blocks.pending_reconciliation(), 3);
    assert_eq!(bans.pending_reconciliation(), 1);
    assert!(blocks.status().await.fleet.expect("fleet").fallback_active);

    server.restart().expect("restart");
    // No window in which Redis's clean record lets x in: the first
    // decision for x writes x's queued block to Redis before asking it.
    let d = blocks.check_request(x).await;
    assert_eq!(
        reason(&d),
        Some(Reason::Blocked),
        "first decision back: {d:?}"
    );
    until_drained(&blocks, "blocks").await;
    until_drained(&bans, "bans").await;

    let look = inspector(&server, block_rules(), seed).await;
    let d = look.peek_request(x, now_us()).await.expect("peek x");
    assert_eq!(reason(&d), Some(Reason::Blocked), "{d:?}");
    assert!(retry(&d) > secs(100), "the block's end kept: {d:?}");
    let d = look.peek_request(y, now_us()).await.expect("peek y");
    assert_eq!(reason(&d), Some(Reason::Banned), "{d:?}");
    let d = look.check_login("alice", z, now_us()).await.expect("login");
    assert_eq!(reason(&d), Some(Reason::PairLocked), "{d:?}");
    assert!(retry(&d) > secs(100), "{d:?}");
    let d = look.check_login("bob", z, now_us()).await.expect("login");
    assert_eq!(
        reason(&d),
        Some(Reason::IpLocked),
        "the address lock: {d:?}"
    );
    // And the engines decide in Redis again.
    let _ = blocks.check_request(ip("198.51.100.99")).await;
    assert!(!blocks.status().await.fleet.expect("fleet").fallback_active);
}

/// Item 2: Redis frozen (state kept), a longer block already in Redis: the
/// fallback's shorter block of the same address does not shorten it, and
/// a key Redis does not know gets the fallback's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_never_shortens_what_redis_holds() {
    let Some(server) = RedisServer::start_or_skip("reconcile_not_shortened") else {
        return;
    };
    let e = engine(&server, block_rules(), 0).await;
    let seed = fleet_seed(&server).await;
    let (w, v) = (ip("203.0.113.70"), ip("203.0.113.71"));
    // W blocked for an hour in Redis by a server with longer blocks.
    let mut long = block_rules();
    long.blocks.block_for = secs(3600);
    long.blocks.max_block = secs(3600);
    let other = inspector(&server, long, seed).await;
    let mut d = Decision::Allow {
        remaining: 0,
        reset_after: Duration::from_ticks(0),
    };
    for _ in 0..3 {
        d = other.check_request(w, now_us()).await.expect("req");
    }
    assert_eq!(reason(&d), Some(Reason::Blocked));

    server.freeze().expect("SIGSTOP");
    for _ in 0..3 {
        d = e.check_request(w).await;
        let _ = e.check_request(v).await;
    }
    assert_eq!(reason(&d), Some(Reason::Blocked), "blocked locally too");
    assert!(retry(&d) <= secs(120));
    assert_eq!(e.pending_reconciliation(), 2);
    server.thaw().expect("SIGCONT");
    until_drained(&e, "after thaw").await;

    let look = inspector(&server, block_rules(), seed).await;
    let d = look.peek_request(w, now_us()).await.expect("peek w");
    assert_eq!(reason(&d), Some(Reason::Blocked));
    assert!(retry(&d) > secs(3000), "Redis's hour stands: {d:?}");
    let d = look.peek_request(v, now_us()).await.expect("peek v");
    assert_eq!(reason(&d), Some(Reason::Blocked));
    assert!(
        retry(&d) > secs(100) && retry(&d) <= secs(120),
        "the fallback's block: {d:?}"
    );
}

fn imposed() -> Imposed {
    Imposed {
        banned: false,
        block_until_ms: None,
        block_level: 0,
        last_block_start_ms: None,
        lock_until_ms: None,
        violations_ms: Vec::new(),
    }
}

/// The `merge` op itself, at fixed times: ends only move later, a ban
/// stays, and the escalation kept is the one in force (core block rules:
/// the next block after a merged level 3 is `block_for * growth^3`).
#[tokio::test]
async fn merge_raises_and_never_lowers() {
    let Some(server) = RedisServer::start_or_skip("merge_raises_and_never_lowers") else {
        return;
    };
    let mut c = Config::default();
    c.requests.max_requests = 1;
    c.requests.window = secs(1);
    c.blocks.block_after = 1;
    c.blocks.block_for = secs(10);
    c.blocks.block_growth = Growth::times(2);
    c.blocks.max_block = secs(3600);
    c.blocks.violation_memory = secs(3600);
    c.blocks.ban_after = None;
    let lim = RedisLimiter::connect(
        &server.url(),
        c,
        Seed::new([5; 16]),
        "m",
        StdDuration::from_millis(500),
    )
    .await
    .expect("connect")
    .with_ttl_slack(StdDuration::from_secs(3600));
    let a = ip("192.0.2.1");
    let addr = lim.addr(a);
    let ms = |us: u64| us / 1000;

    // A block until T0 + 100 s.
    let mut i = imposed();
    i.block_until_ms = Some(ms(T0 + 100 * SEC));
    i.block_level = 1;
    i.last_block_start_ms = Some(ms(T0));
    assert!(lim
        .merge(KeyKind::Request, addr, None, &i, T0)
        .await
        .expect("merge"));
    let d = lim.peek_request(a, T0 + 50 * SEC).await.expect("peek");
    assert_eq!(
        d,
        Decision::Deny {
            reason: Reason::Blocked,
            retry_after: secs(50)
        }
    );
    // A shorter one changes nothing.
    let mut shorter = i.clone();
    shorter.block_until_ms = Some(ms(T0 + 20 * SEC));
    assert!(!lim
        .merge(KeyKind::Request, addr, None, &shorter, T0 + SEC)
        .await
        .expect("merge"));
    let d = lim.peek_request(a, T0 + 50 * SEC).await.expect("peek");
    assert_eq!(retry(&d), secs(50));
    // A longer one wins.
    let mut longer = i.clone();
    longer.block_until_ms = Some(ms(T0 + 200 * SEC));
    assert!(lim
        .merge(KeyKind::Request, addr, None, &longer, T0 + 2 * SEC)
        .await
        .expect("merge"));
    assert_eq!(
        retry(&lim.peek_request(a, T0 + 50 * SEC).await.expect("peek")),
        secs(150)
    );

    // Escalation: level 3 merged at T0; once the block ends the next
    // violation blocks for 10 s * 2^3 = 80 s.
    let b = ip("192.0.2.2");
    let mut lvl = imposed();
    lvl.block_until_ms = Some(ms(T0 + SEC));
    lvl.block_level = 3;
    lvl.last_block_start_ms = Some(ms(T0));
    lim.merge(KeyKind::Request, lim.addr(b), None, &lvl, T0)
        .await
        .expect("merge");
    let t = T0 + 5 * SEC;
    assert!(lim.check_request(b, t).await.expect("req").is_allowed());
    let d = lim.check_request(b, t).await.expect("req");
    assert_eq!(
        d,
        Decision::Deny {
            reason: Reason::Blocked,
            retry_after: secs(80)
        }
    );
    // A lower level merged later does not lower it: the next block is 160 s.
    let mut low = imposed();
    low.block_until_ms = Some(ms(t + SEC));
    low.block_level = 1;
    low.last_block_start_ms = Some(ms(t - SEC));
    lim.merge(KeyKind::Request, lim.addr(b), None, &low, t)
        .await
        .expect("merge");
    let t2 = t + 90 * SEC;
    assert!(lim.check_request(b, t2).await.expect("req").is_allowed());
    let d = lim.check_request(b, t2).await.expect("req");
    assert_eq!(
        d,
        Decision::Deny {
            reason: Reason::Blocked,
            retry_after: secs(160)
        }
    );

    // A ban stays a ban; merging no ban does not lift it.
    let mut ban = imposed();
    ban.banned = true;
    assert!(lim
        .merge(KeyKind::Request, addr, None, &ban, T0 + 3 * SEC)
        .await
        .expect("merge"));
    assert!(!lim
        .merge(KeyKind::Request, addr, None, &imposed(), T0 + 4 * SEC)
        .await
        .expect("merge"));
    assert_eq!(
        reason(&lim.peek_request(a, T0 + 10_000 * SEC).await.expect("peek")),
        Some(Reason::Banned)
    );

    // Locks: a pair by username, an address; never shortened.
    let mut lock = imposed();
    lock.lock_until_ms = Some(ms(T0 + 100 * SEC));
    lim.merge(KeyKind::LoginUser, addr, Some("Alice"), &lock, T0)
        .await
        .expect("merge");
    let d = lim
        .check_login("alice", a, T0 + 10 * SEC)
        .await
        .expect("login");
    assert_eq!(
        d,
        Decision::Deny {
            reason: Reason::PairLocked,
            retry_after: secs(90)
        }
    );
    let mut short = imposed();
    short.lock_until_ms = Some(ms(T0 + 20 * SEC));
    assert!(!lim
        .merge(KeyKind::LoginUser, addr, Some("alice"), &short, T0 + SEC)
        .await
        .expect("merge"));
    let d = lim
        .check_login("alice", a, T0 + 10 * SEC)
        .await
        .expect("login");
    assert_eq!(retry(&d), secs(90));
    lim.merge(KeyKind::LoginIp, addr, None, &lock, T0)
        .await
        .expect("merge");
    let d = lim
        .check_login("bob", a, T0 + 10 * SEC)
        .await
        .expect("login");
    assert_eq!(
        d,
        Decision::Deny {
            reason: Reason::IpLocked,
            retry_after: secs(90)
        }
    );
    // A pair without its username cannot be placed.
    assert!(lim
        .merge(KeyKind::LoginUser, addr, None, &lock, T0)
        .await
        .is_err());
}

/// Redis's `EVALSHA` calls so far (every decision is one).
async fn evalsha_calls(server: &RedisServer) -> u64 {
    let mut con = raw(server).await;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut con)
        .await
        .expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The cache is used once the lift counter has been read (every 250 ms).
async fn until_cache_live() {
    tokio::time::sleep(StdDuration::from_millis(400)).await;
}

/// Item 3: B caches a block it got from Redis and answers it with no
/// Redis call; a lift through A reaches B within a second; a reload on B
/// empties its cache; a lock is cached like a block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_denials_skip_redis_and_a_lift_elsewhere_ends_them() {
    let Some(server) = RedisServer::start_or_skip("denial_cache") else {
        return;
    };
    let a = engine(&server, block_rules(), 1000).await;
    let b = engine(&server, block_rules(), 1000).await;
    until_cache_live().await;
    let x = ip("198.51.100.50");
    let mut d = a.check_request(x).await;
    for _ in 0..2 {
        d = a.check_request(x).await;
    }
    assert_eq!(reason(&d), Some(Reason::Blocked), "A blocked x in redis");
    let first = b.check_request(x).await;
    assert_eq!(reason(&first), Some(Reason::Blocked), "B: from redis");
    assert_eq!(b.cached_denials(), 1);
    let before = evalsha_calls(&server).await;
    for _ in 0..50 {
        let d = b.check_request(x).await;
        assert_eq!(reason(&d), Some(Reason::Blocked));
        assert!(retry(&d) <= retry(&first) && retry(&d) > secs(100), "{d:?}");
    }
    assert_eq!(
        evalsha_calls(&server).await,
        before,
        "50 answers, no script call"
    );

    // Lifted through A: B lets x in within a second.
    assert!(a.lift(x).await >= 1);
    let t = Instant::now();
    loop {
        if b.check_request(x).await.is_allowed() {
            break;
        }
        assert!(
            t.elapsed() < StdDuration::from_secs(1),
            "B still refuses x after {:?}",
            t.elapsed()
        );
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    }
    assert_eq!(b.cached_denials(), 0);

    // A lock: cached from the first refusal, then answered locally.
    let z = ip("198.51.100.51");
    for _ in 0..3 {
        drop(a.login_failed("carol", z).await);
    }
    let d = b.check_login("carol", z).await;
    assert_eq!(reason(&d), Some(Reason::PairLocked));
    let before = evalsha_calls(&server).await;
    for _ in 0..10 {
        assert_eq!(
            reason(&b.check_login("carol", z).await),
            Some(Reason::PairLocked)
        );
        let d = b.begin_login("dave", z).await.expect_err("ip locked");
        assert_eq!(reason(&d), Some(Reason::IpLocked));
    }
    // The first refusal of dave@z came from Redis (one login check plus its
    // inspect, after the account reservation); the rest from the cache.
    assert!(
        evalsha_calls(&server).await - before <= 4,
        "{} calls",
        evalsha_calls(&server).await - before
    );

    // A reload empties the cache.
    assert!(b.cached_denials() > 0);
    b.set_rules(block_rules()).expect("reload");
    assert_eq!(b.cached_denials(), 0);
}

/// `denial_cache = 0`: every decision goes to Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_capacity_cache_is_off() {
    let Some(server) = RedisServer::start_or_skip("denial_cache_off") else {
        return;
    };
    let e = engine(&server, block_rules(), 0).await;
    tokio::time::sleep(StdDuration::from_millis(400)).await;
    let x = ip("198.51.100.60");
    for _ in 0..3 {
        let _ = e.check_request(x).await;
    }
    let before = evalsha_calls(&server).await;
    for _ in 0..10 {
        assert_eq!(reason(&e.check_request(x).await), Some(Reason::Blocked));
    }
    assert_eq!(evalsha_calls(&server).await - before, 10);
    assert_eq!(e.cached_denials(), 0);
}

/// What a merged key decides agrees with the core: a record the fallback
/// wrote (block with its escalation, ban, violations; locks of the address
/// and of a pair) merged into a clean Redis key, and the same record
/// imported into a core limiter, answer the same requests and logins at the
/// same times, decision for decision, on random rules.
#[test]
fn a_merged_record_decides_as_the_core_with_that_record() {
    use portcullis_core::{Key, MapLimiter, Record, WallClock, VIOLATION_LOG};
    use proptest::prelude::*;
    use proptest::test_runner::{Config as PtConfig, TestCaseError, TestRunner};

    let Some(server) = RedisServer::start_or_skip("merged_record_agrees_with_core") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let url = server.url();
    const SEED: Seed = Seed::new([11; 16]);
    let ms = 1_000u64;
    // (banned, block: (started ms ago, lasts ms, level), violations: gaps in
    // ms going back, ip lock and pair lock: ms from t0, may be past)
    let rec = (
        proptest::bool::weighted(0.2),
        proptest::option::of((0u64..600_000, 1u64..900_000, 0u8..8)),
        proptest::collection::vec(1u64..120_000, 0..VIOLATION_LOG),
        proptest::option::of(-60_000i64..600_000),
        proptest::option::of(-60_000i64..600_000),
    );
    // Bursts (µs to 200 ms apart: windows fill, blocks escalate) and the
    // generator's steps up to days (blocks, locks and memories end).
    let dt = prop_oneof![
        3 => 0u64..200_000,
        1 => portcullis_tests::gen::step(),
    ];
    let ops = proptest::collection::vec((dt, 0u8..4), 1..80);
    let strategy = (portcullis_tests::gen::config(8), 0u64..1_000_000, rec, ops);
    let case = std::sync::atomic::AtomicU64::new(0);
    let mut runner = TestRunner::new(PtConfig {
        cases: portcullis_tests::gen::cases(64),
        failure_persistence: None,
        ..PtConfig::default()
    });
    let result = runner.run(
        &strategy,
        |(cfg, off_ms, (banned, block, gaps, ip_lock, pair_lock), ops)| {
            rt.block_on(async {
                let t0 = T0 + off_ms * ms; // whole milliseconds
                let t0_ms = t0 / ms;
                let a = ip("10.0.0.1");
                let mut core = MapLimiter::<64>::new_growable(cfg.clone(), SEED, 1000)
                    .map_err(|e| TestCaseError::fail(format!("config: {e}")))?;
                let addr = core.addr(a);
                let mut req = Record::empty(Key::request(addr));
                req.banned = banned;
                if let Some((ago, len, level)) = block {
                    let start = t0_ms - ago;
                    req.last_block_start = Some(start);
                    req.block_until = Some(start + len);
                    req.block_level = level;
                }
                let mut t = t0_ms;
                let mut vs: Vec<u64> = gaps
                    .iter()
                    .map(|g| {
                        t -= g;
                        t
                    })
                    .collect();
                vs.reverse();
                for v in vs {
                    let _ = req.violations.push(v);
                }
                let lock_at = |d: i64| t0_ms.saturating_add_signed(d);
                let mut lip = Record::empty(Key::login_ip(addr));
                lip.lock_until = ip_lock.map(lock_at);
                let mut pair = Record::empty(Key::login_user(core.user_hash("alice"), addr));
                pair.lock_until = pair_lock.map(lock_at);
                let records = [req, lip, pair];
                let clock = WallClock {
                    now: portcullis_core::Instant::from_ticks(t0),
                    unix_ms: t0_ms,
                };
                core.import(clock, &records)
                    .map_err(|e| TestCaseError::fail(format!("import: {e}")))?;

                let ns = format!(
                    "mrg{}",
                    case.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                );
                let fleet = RedisLimiter::connect(&url, cfg, SEED, &ns, StdDuration::from_secs(5))
                    .await
                    .map_err(|e| TestCaseError::fail(format!("connect: {e}")))?
                    .with_ttl_slack(StdDuration::from_secs(3600));
                for (r, user) in records.iter().zip([None, None, Some("alice")]) {
                    fleet
                        .merge(r.key.kind(), addr, user, &Imposed::of(r), t0)
                        .await
                        .map_err(|e| TestCaseError::fail(format!("merge: {e}")))?;
                }
                let mut now = t0;
                for (i, (dt, what)) in ops.iter().enumerate() {
                    now = now.saturating_add(*dt);
                    let at = portcullis_core::Instant::from_ticks(now);
                    let ctx = format!("op {i} at t0 + {} µs, {records:?}", now - t0);
                    let (c, f) = match what {
                        0..=2 => (core.check_request(a, at), fleet.check_request(a, now).await),
                        _ => (
                            core.check_login("alice", a, at),
                            fleet.check_login("alice", a, now).await,
                        ),
                    };
                    let f = f.map_err(|e| TestCaseError::fail(format!("redis: {e}")))?;
                    prop_assert_eq!(c, f, "{}", ctx);
                }
                Ok(())
            })
        },
    );
    if let Err(e) = result {
        panic!("a merged record and the core disagree: {e}");
    }
}
