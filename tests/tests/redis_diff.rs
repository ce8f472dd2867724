//! Differential test: portcullis-core and the Redis Lua port
//! (`host/src/fleet/rules.lua` behind `portcullis::fleet::RedisLimiter`)
//! must agree decision for decision on random configurations, operation
//! sequences over a few addresses (IPv4, IPv6 sharing a /64, IPv4-mapped,
//! denylisted, allowlisted) and users (" ALICE " is "alice"), and time steps
//! from zero to days, starting at a realistic Unix time in microseconds.
//!
//! The core is a growable `MapLimiter` large enough never to evict (Redis
//! has TTLs instead of eviction); failed logins go through
//! `record_account_failure` + `login_failed_pair`, the two calls Redis makes.
//! Time never runs backwards here (the clamp differs by design: global in
//! the core, per key in Redis). `purge` runs on the core side only: it
//! removes nothing that can affect a decision.
//!
//! One redis-server per run, FLUSHDB and a fresh key namespace per case.
//! Cases: 32 by default; `PORTCULLIS_PROPTEST_CASES=500` for more. The
//! same test runs against a real three-master Redis Cluster (a quarter of
//! the cases, at least 8; FLUSHALL on every node per case).
//! Without redis-server: SKIP, or a failure under `CI=true`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration as StdDuration;

use portcullis::fleet::{Endpoint, FleetSlot, RedisLimiter};
use portcullis::AttemptId as FleetAttemptId;
use portcullis_core::Instant;
use portcullis_core::{AttemptId, Config, Jitter, MapLimiter, Reason, Seed, SlotToken};
use portcullis_tests::gen::{self, cases as cases_or, config, ips, step, USERS};
use portcullis_tests::redis_server::{RedisCluster, RedisServer};
use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, TestCaseError, TestRunner};

const W: u32 = 8;
const SEED: Seed = Seed::new([9; 16]);

#[derive(Clone, Debug)]
enum Op {
    /// A request, and the random part of the jitter of a block it starts.
    Request(usize, u16),
    PeekRequest(usize),
    CheckLogin(usize, usize),
    LoginFailed(usize, usize),
    LoginSucceeded(usize, usize),
    /// Reserve a login attempt before the password check.
    Begin(usize, usize),
    /// Settle the k-th reserved attempt: right (true) or wrong password.
    Settle(usize, bool),
    Acquire(usize),
    Release(usize),
    Ban(usize),
    Lift(usize),
    Bans,
    Purge,
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let n = ips().len();
    let ip = 0..n;
    let user = 0..USERS.len();
    prop_oneof![
        12 => (ip.clone(), gen::jitter()).prop_map(|(i, j)| Op::Request(i, j)),
        2 => ip.clone().prop_map(Op::PeekRequest),
        3 => (user.clone(), ip.clone()).prop_map(|(u, i)| Op::CheckLogin(u, i)),
        6 => (user.clone(), ip.clone()).prop_map(|(u, i)| Op::LoginFailed(u, i)),
        2 => (user.clone(), ip.clone()).prop_map(|(u, i)| Op::LoginSucceeded(u, i)),
        5 => (user, ip.clone()).prop_map(|(u, i)| Op::Begin(u, i)),
        4 => (0usize..8, any::<bool>()).prop_map(|(k, ok)| Op::Settle(k, ok)),
        2 => ip.clone().prop_map(Op::Acquire),
        2 => (0usize..8).prop_map(Op::Release),
        1 => ip.clone().prop_map(Op::Ban),
        1 => ip.prop_map(Op::Lift),
        1 => Just(Op::Bans),
        1 => Just(Op::Purge),
        7 => step().prop_map(Op::Advance),
    ]
}

/// A realistic Unix time in µs (2023–2024).
fn start() -> impl Strategy<Value = u64> {
    1_700_000_000_000_000u64..1_730_000_000_000_000u64
}

static CASE: AtomicU64 = AtomicU64::new(0);

/// How often each interesting outcome was compared (printed at the end, so
/// a run shows that blocks, bans, locks and throttles were exercised).
static SEEN: [AtomicU64; 10] = [const { AtomicU64::new(0) }; 10];
const SEEN_NAMES: [&str; 10] = [
    "allow",
    "rate_limited",
    "blocked",
    "banned",
    "pair_locked",
    "ip_locked",
    "denylisted",
    "penalty_throttled",
    "penalty_locked",
    "penalty_no_slot",
];

fn seen(i: usize) {
    SEEN[i].fetch_add(1, Ordering::Relaxed);
}

fn seen_decision(d: &portcullis_core::Decision) {
    seen(match d.reason() {
        None => 0,
        Some(Reason::RateLimited) => 1,
        Some(Reason::Blocked) => 2,
        Some(Reason::Banned) => 3,
        Some(Reason::PairLocked) => 4,
        Some(Reason::IpLocked) => 5,
        Some(_) => 6,
    });
}

type BanRow = portcullis_core::Hold;

fn core_bans(lim: &MapLimiter<64>, at: Instant) -> Vec<BanRow> {
    let mut v = Vec::new();
    lim.for_each_hold(at, |h| v.push(h));
    v
}

fn sorted(mut v: Vec<BanRow>) -> Vec<String> {
    let mut s: Vec<String> = v.drain(..).map(|r| format!("{r:?}")).collect();
    s.sort();
    s
}

async fn run_case(
    endpoint: &Endpoint,
    flush: &dyn Fn() -> bool,
    cfg: Config,
    t0: u64,
    ops: &[Op],
    with_purge: bool,
) -> Result<(), TestCaseError> {
    let ips = ips();
    let ns = format!("diff{}", CASE.fetch_add(1, Ordering::Relaxed));
    // Earlier cases' keys would only slow down SCAN (`bans`, `lift`).
    if !flush() {
        return Err(TestCaseError::fail("FLUSHDB failed"));
    }
    let fleet =
        RedisLimiter::connect_to(endpoint, cfg.clone(), SEED, &ns, StdDuration::from_secs(5))
            .await
            .map_err(|e| TestCaseError::fail(format!("connect: {e}")))?
            // Simulated time runs far ahead of real time: keep keys for the
            // whole run so that only the script's rules decide.
            .with_ttl_slack(StdDuration::from_secs(3600));
    let mut core = MapLimiter::<64>::new_growable(cfg, SEED, 100_000)
        .map_err(|e| TestCaseError::fail(format!("config: {e}")))?;
    let mut now = t0;
    let mut tokens: Vec<(SlotToken, FleetSlot)> = Vec::new();
    let mut flight: Vec<(usize, usize, AttemptId, AttemptId, FleetAttemptId)> = Vec::new();
    // Purge drops stale records that cannot change a decision, so after it
    // "was there a record" answers (login_succeeded, lift counts, releases
    // of expired slots) may differ.
    let mut purged = false;
    macro_rules! r {
        ($e:expr) => {
            $e.await
                .map_err(|e| TestCaseError::fail(format!("redis: {e}")))?
        };
    }
    for (i, op) in ops.iter().enumerate() {
        let at = Instant::from_ticks(now);
        let ctx = format!("op {i}: {op:?} at {now} (t0 + {} µs)", now - t0);
        match *op {
            Op::Request(ip, j) => {
                let c = core.check_request_with(ips[ip], at, Jitter(j));
                let f = r!(fleet.check_request_with(ips[ip], now, Jitter(j)));
                seen_decision(&c);
                prop_assert_eq!(c, f, "{}", ctx);
            }
            Op::PeekRequest(ip) => {
                let c = core.peek_request(ips[ip], at);
                let f = r!(fleet.peek_request(ips[ip], now));
                prop_assert_eq!(c, f, "{}", ctx);
            }
            Op::CheckLogin(u, ip) => {
                let c = core.check_login(USERS[u], ips[ip], at);
                let f = r!(fleet.check_login(USERS[u], ips[ip], now));
                seen_decision(&c);
                prop_assert_eq!(c, f, "{}", ctx);
            }
            Op::LoginFailed(u, ip) => {
                let t = core.record_account_failure(USERS[u], ips[ip], at);
                let c = core.login_failed_pair(USERS[u], ips[ip], at, t);
                let f = r!(fleet.login_failed(USERS[u], ips[ip], now));
                prop_assert_eq!(c.delay, f.delay, "delay, {}", ctx);
                prop_assert_eq!(c.throttled, f.throttled, "throttled, {}", ctx);
                prop_assert_eq!(c.refused, f.refused, "refused, {}", ctx);
                prop_assert_eq!(c.locked, f.locked, "locked, {}", ctx);
                prop_assert_eq!(c.slot.is_some(), f.slot.is_some(), "slot, {}", ctx);
                if c.throttled {
                    seen(7);
                }
                if c.locked {
                    seen(8);
                }
                if c.slot.is_none() {
                    seen(9);
                }
                if let (Some(a), Some(b)) = (c.slot, f.slot) {
                    tokens.push((a, b));
                }
            }
            Op::LoginSucceeded(u, ip) => {
                let c = core.login_succeeded(USERS[u], ips[ip], at);
                let f = r!(fleet.login_succeeded(USERS[u], ips[ip], now));
                if !purged {
                    prop_assert_eq!(c, f, "{}", ctx);
                }
            }
            Op::Begin(u, ip) => {
                // The two calls Redis makes: the account, then the pair.
                let (t, acct) = core.reserve_account(USERS[u], ips[ip], at);
                let c = core.begin_login_pair(USERS[u], ips[ip], at, t);
                if c.is_err() {
                    core.cancel_account(USERS[u], acct);
                }
                let f = r!(fleet.begin_login(USERS[u], ips[ip], now));
                match (c, f) {
                    (Ok(c), Ok(f)) => {
                        let (cp, fp) = (&c.penalty, &f.penalty);
                        prop_assert_eq!(cp.delay, fp.delay, "delay, {}", ctx);
                        prop_assert_eq!(cp.throttled, fp.throttled, "throttled, {}", ctx);
                        prop_assert_eq!(cp.refused, fp.refused, "refused, {}", ctx);
                        prop_assert_eq!(cp.slot.is_some(), fp.slot.is_some(), "slot, {}", ctx);
                        if let (Some(a), Some(b)) = (c.penalty.slot, f.penalty.slot) {
                            tokens.push((a, b));
                        }
                        flight.push((u, ip, c.id, acct, f.id));
                    }
                    (Err(c), Err(f)) => {
                        seen_decision(&c);
                        prop_assert_eq!(c, f, "{}", ctx);
                    }
                    (c, f) => prop_assert!(false, "{}: core {:?} fleet {:?}", ctx, c, f),
                }
            }
            Op::Settle(k, ok) => {
                if !flight.is_empty() {
                    let (u, ip, pair, acct, fid) = flight.remove(k % flight.len());
                    if ok {
                        let c = core.login_attempt_succeeded_pair(USERS[u], ips[ip], pair, at);
                        core.cancel_account(USERS[u], acct);
                        let f = r!(fleet.login_attempt_succeeded(USERS[u], ips[ip], fid, now));
                        if !purged {
                            prop_assert_eq!(c, f, "{}", ctx);
                        }
                    } else {
                        let c = core.login_attempt_failed(USERS[u], ips[ip], pair, at);
                        let f = r!(fleet.login_attempt_failed(USERS[u], ips[ip], fid, now));
                        if c {
                            seen(8);
                        }
                        prop_assert_eq!(c, f, "{}", ctx);
                    }
                }
            }
            Op::Acquire(ip) => {
                let c = core.acquire_slot(ips[ip], at);
                let f = r!(fleet.acquire_slot(ips[ip], now));
                prop_assert_eq!(c.is_some(), f.is_some(), "{}", ctx);
                if let (Some(a), Some(b)) = (c, f) {
                    tokens.push((a, b));
                }
            }
            Op::Release(k) => {
                if !tokens.is_empty() {
                    let (a, b) = tokens.remove(k % tokens.len());
                    let c = core.release_slot(a);
                    let f = r!(fleet.release_slot(b));
                    if !purged {
                        prop_assert_eq!(c, f, "{}", ctx);
                    }
                }
            }
            Op::Ban(ip) => {
                let c = core.ban(ips[ip], at);
                let f = r!(fleet.ban(ips[ip], now));
                prop_assert_eq!(c, f, "{}", ctx);
            }
            Op::Lift(ip) => {
                let c = core.lift(ips[ip]);
                let f = r!(fleet.lift(ips[ip], now));
                if !purged {
                    prop_assert_eq!(c, f, "{}", ctx);
                }
            }
            Op::Bans => {
                let c = sorted(core_bans(&core, at));
                let f = sorted(r!(fleet.bans(now)));
                prop_assert_eq!(c, f, "{}", ctx);
            }
            Op::Purge => {
                if with_purge {
                    core.purge(at);
                    purged = true;
                }
            }
            Op::Advance(d) => now = now.saturating_add(d),
        }
    }
    Ok(())
}

#[test]
fn redis_agrees_with_core() {
    let Some(server) = RedisServer::start_or_skip("redis_agrees_with_core") else {
        return;
    };
    let endpoint = Endpoint::Single(server.url());
    let flush = || {
        server
            .inline("FLUSHDB")
            .is_some_and(|r| r.starts_with("+OK"))
    };
    differential("redis_diff", &endpoint, &flush, cases_or(32));
}

/// The same operation sequences through a real three-master Redis Cluster
/// (addresses and users spread over its slots; bounded: a quarter of the
/// single-node cases, at least 8).
#[test]
fn redis_cluster_agrees_with_core() {
    let Some(cluster) = RedisCluster::start_or_skip("redis_cluster_agrees_with_core") else {
        return;
    };
    let endpoint = Endpoint::Cluster(cluster.urls());
    // The cases' addresses and users live on every master.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let lim = rt
        .block_on(RedisLimiter::connect_to(
            &endpoint,
            Config::default(),
            SEED,
            "diff0",
            StdDuration::from_secs(5),
        ))
        .expect("connect");
    let mut nodes: Vec<usize> = ips()
        .iter()
        .map(|&ip| cluster.node_of(&lim.request_key(ip)))
        .chain(USERS.iter().map(|u| cluster.node_of(&lim.account_key(u))))
        .collect();
    nodes.sort_unstable();
    nodes.dedup();
    assert_eq!(nodes, [0, 1, 2], "keys on every node");
    let flush = || cluster.each("FLUSHALL");
    differential(
        "redis_diff (cluster)",
        &endpoint,
        &flush,
        (cases_or(32) / 4).max(8),
    );
}

fn differential(what: &str, endpoint: &Endpoint, flush: &dyn Fn() -> bool, n: u32) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("tokio runtime: {e}"),
    };
    let mut runner = TestRunner::new(PtConfig {
        cases: n,
        failure_persistence: None,
        ..PtConfig::default()
    });
    let strategy = (
        config(W),
        start(),
        proptest::collection::vec(op(), 1..150),
        any::<bool>(),
    );
    let began = std::time::Instant::now();
    let case0 = CASE.load(Ordering::Relaxed);
    let result = runner.run(&strategy, |(cfg, t0, ops, with_purge)| {
        rt.block_on(run_case(endpoint, flush, cfg, t0, &ops, with_purge))
    });
    eprintln!(
        "{what}: {n} cases in {:.2?} (namespaces used: {})",
        began.elapsed(),
        CASE.load(Ordering::Relaxed) - case0
    );
    let counts: Vec<String> = SEEN_NAMES
        .iter()
        .zip(SEEN.iter())
        .map(|(n, c)| format!("{n}={}", c.load(Ordering::Relaxed)))
        .collect();
    eprintln!(
        "{what}: compared outcomes (all tests of this binary so far): {}",
        counts.join(" ")
    );
    if let Err(e) = result {
        panic!("{what}: core and Redis disagree: {e}");
    }
}
