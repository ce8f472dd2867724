//! Issue 26 item 5 at the library level, against a real redis-server: no
//! ban lost in a fleet outage. The fallback's holds and the
//! reconciliation queue are kept in a SQLite journal (written through,
//! drained once Redis has them, read back at start-up), and a standing
//! denial a server had from Redis keeps refusing through the outage.
//! Without redis-server: SKIP, or a failure under `CI=true`.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use portcullis::fleet::journal::Restored;
use portcullis::fleet::RedisLimiter;
use portcullis::fleet::{
    connect_fleet, connect_fleet_journaled, FleetEngine, FleetOptions, NAMESPACE,
};
use portcullis::sqlite::SqliteStore;
use portcullis::Duration;
use portcullis::Engine;
use portcullis::{Guard, Limiter, LimiterOptions};
use portcullis_core::{Config, Decision, KeyKind, Reason, Seed};
use portcullis_tests::redis_server::RedisServer;
use redis::AsyncCommands;

fn ip(s: &str) -> IpAddr {
    match s.parse() {
        Ok(ip) => ip,
        Err(e) => panic!("{s}: {e}"),
    }
}

/// Bans on the first violation (2 requests per 5 s); logins lock after 3
/// failures for 120 s.
fn rules() -> Config {
    let mut c = Config::default();
    c.requests.max_requests = 2;
    c.requests.window = Duration::from_secs(5);
    c.blocks.block_after = 1;
    c.blocks.block_for = Duration::from_secs(120);
    c.blocks.ban_after = Some(1);
    c.login.max_failures = 3;
    c.login.ip_max_failures = Some(3);
    c.login.lock_for = Duration::from_secs(120);
    c.login.account_max_failures = None;
    c
}

fn options(server: &RedisServer, denial_cache: usize) -> FleetOptions {
    FleetOptions {
        redis_url: server.url(),
        redis_cluster: Vec::new(),
        redis_timeout: StdDuration::from_millis(100),
        fail_closed: false,
        rules: rules(),
        denial_cache,
    }
}

fn guard() -> Guard {
    let limiter = Limiter::new(rules(), LimiterOptions::default()).expect("limiter");
    Guard::new(Arc::new(limiter), None)
}

/// An engine journaling into the store file `db`, with what it held.
async fn journaled(server: &RedisServer, db: &Path) -> (Arc<FleetEngine>, Arc<SqliteStore>) {
    let (store, loaded) = SqliteStore::open(db).expect("journal");
    let store = Arc::new(store);
    let restored = Restored::new(store.clone(), loaded.journal);
    let e = connect_fleet_journaled(&options(server, 0), guard(), Some(restored))
        .await
        .expect("connect");
    (e, store)
}

fn reason(d: &Decision) -> Option<Reason> {
    match d {
        Decision::Deny { reason, .. } => Some(*reason),
        Decision::Allow { .. } => None,
    }
}

async fn fleet_seed(server: &RedisServer) -> Seed {
    let client = redis::Client::open(server.url()).expect("client");
    let mut con = client
        .get_multiplexed_tokio_connection()
        .await
        .expect("raw connection");
    let bytes: Vec<u8> = con
        .get(format!("{NAMESPACE}:seed"))
        .await
        .expect("GET seed");
    Seed::new(bytes.try_into().expect("16 bytes"))
}

async fn until_drained(e: &FleetEngine) {
    let deadline = Instant::now() + StdDuration::from_secs(10);
    while e.pending_reconciliation() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} keys still queued",
            e.pending_reconciliation()
        );
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
}

/// The journal's rows, read from the file by a store of its own.
fn rows(db: &Path) -> Vec<portcullis::JournalRow> {
    let (store, loaded) = SqliteStore::open(db).expect("reopen");
    store.close().expect("close");
    loaded.journal
}

/// A ban and a (username, address) lock imposed by the fallback in an
/// outage are in the journal before the decision returns; the engine is
/// gone (as after `kill -9`: nothing runs at exit), a new one on the same
/// file imposes them again with Redis still away, and writes them to
/// Redis once it is back, which empties the journal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_carries_bans_and_locks_across_a_restart_into_redis() {
    let Some(mut server) = RedisServer::start_or_skip("journal_across_restart") else {
        return;
    };
    let d = tempfile::tempdir().expect("tempdir");
    let db = d.path().join("journal.db");
    let (x, z) = (ip("198.51.100.21"), ip("2001:db8:21::1"));
    let (e, store) = journaled(&server, &db).await;
    assert!(e.check_request(x).await.is_allowed(), "redis decides");
    server.stop();
    let mut last = None;
    for _ in 0..3 {
        last = Some(e.check_request(x).await);
    }
    assert_eq!(last.as_ref().and_then(reason), Some(Reason::Banned));
    for _ in 0..3 {
        let _ = e.login_failed("Alice", z).await;
    }
    assert_eq!(
        e.pending_reconciliation(),
        3,
        "the ban, the pair, the address"
    );
    drop(e);
    store.close().expect("close");
    drop(store);
    let saved = rows(&db);
    assert_eq!(saved.len(), 3, "{saved:?}");
    let pair = saved
        .iter()
        .find(|r| r.key.kind == KeyKind::LoginUser)
        .expect("the pair's row");
    assert_eq!(pair.key.username, "alice", "folded, by name");
    assert!(pair.imposed.lock_until_ms.is_some());
    assert!(saved
        .iter()
        .any(|r| r.key.kind == KeyKind::Request && r.imposed.banned));

    // Started again while Redis is still away: the holds are imposed again.
    let (e, store) = journaled(&server, &db).await;
    assert_eq!(e.pending_reconciliation(), 3);
    assert_eq!(reason(&e.check_request(x).await), Some(Reason::Banned));
    assert_eq!(
        reason(&e.check_login("alice", z).await),
        Some(Reason::PairLocked)
    );
    assert!(e.check_request(ip("198.51.100.22")).await.is_allowed());

    server.restart().expect("restart");
    until_drained(&e).await;
    let look = RedisLimiter::connect(
        &server.url(),
        rules(),
        fleet_seed(&server).await,
        NAMESPACE,
        StdDuration::from_millis(500),
    )
    .await
    .expect("inspector");
    let now = portcullis::clock::unix_us();
    let d = look.peek_request(x, now).await.expect("peek");
    assert_eq!(reason(&d), Some(Reason::Banned), "{d:?}");
    let d = look.check_login("alice", z, now).await.expect("login");
    assert_eq!(reason(&d), Some(Reason::PairLocked), "{d:?}");
    // Another engine on that Redis (no journal) refuses x.
    let other = connect_fleet(&options(&server, 0), guard())
        .await
        .expect("connect");
    assert_eq!(reason(&other.check_request(x).await), Some(Reason::Banned));
    drop(e);
    store.close().expect("close");
    drop(store);
    assert!(rows(&db).is_empty(), "drained once redis had them");
}

/// A lift through the engine during the outage takes the key out of the
/// journal too: nothing is re-imposed after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lift_in_an_outage_leaves_the_journal() {
    let Some(mut server) = RedisServer::start_or_skip("journal_lift") else {
        return;
    };
    let d = tempfile::tempdir().expect("tempdir");
    let db = d.path().join("journal.db");
    let x = ip("198.51.100.31");
    let (e, store) = journaled(&server, &db).await;
    server.stop();
    for _ in 0..3 {
        let _ = e.check_request(x).await;
    }
    assert_eq!(e.pending_reconciliation(), 1);
    assert!(e.lift(x).await >= 1);
    assert_eq!(e.pending_reconciliation(), 0);
    drop(e);
    store.close().expect("close");
    drop(store);
    assert!(rows(&db).is_empty());
}

/// A block this engine had from Redis (its cache of standing denials)
/// keeps refusing while Redis is down; a client it had not seen is
/// decided by the fallback; when Redis comes back empty, the cache is
/// emptied (the fleet's lift counter moved).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_denials_hold_through_an_outage_and_go_when_redis_forgot_them() {
    let Some(mut server) = RedisServer::start_or_skip("cache_through_outage") else {
        return;
    };
    let mut c = rules();
    c.blocks.ban_after = None;
    let opts = FleetOptions {
        rules: c.clone(),
        ..options(&server, 1000)
    };
    let limiter = Limiter::new(c, LimiterOptions::default()).expect("limiter");
    let e = connect_fleet(&opts, Guard::new(Arc::new(limiter), None))
        .await
        .expect("connect");
    let x = ip("198.51.100.41");
    // Cached once the lift counter was read.
    tokio::time::sleep(StdDuration::from_millis(400)).await;
    // A lift elsewhere bumps the counter above Redis's restart value (0).
    let lifted = connect_fleet(&opts, guard()).await.expect("connect");
    let _ = lifted.lift(ip("198.51.100.49")).await;
    tokio::time::sleep(StdDuration::from_millis(400)).await;
    let mut last = None;
    for _ in 0..4 {
        last = Some(e.check_request(x).await);
    }
    assert_eq!(last.as_ref().and_then(reason), Some(Reason::Blocked));
    assert_eq!(e.cached_denials(), 1);

    server.stop();
    // The poll notices (250 ms); the block still refuses x.
    tokio::time::sleep(StdDuration::from_millis(600)).await;
    let d = e.check_request(x).await;
    assert_eq!(reason(&d), Some(Reason::Blocked), "{d:?}");
    // Someone it had not seen: the fallback decides (and sees the outage).
    assert!(e.check_request(ip("198.51.100.43")).await.is_allowed());
    assert!(e.status().await.fleet.expect("fleet").fallback_active);
    assert_eq!(reason(&e.check_request(x).await), Some(Reason::Blocked));

    // Redis back, empty: its counter is not the one seen before.
    server.restart().expect("restart");
    let deadline = Instant::now() + StdDuration::from_secs(10);
    while e.cached_denials() > 0 {
        assert!(Instant::now() < deadline, "cache never emptied");
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
}
