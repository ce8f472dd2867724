//! Model-based test: the core (both stores) and the plain reference model
//! in `portcullis_tests::model` must agree decision for decision on random
//! operation sequences, keys, configurations and time steps (including
//! jumps of hours and days, and clocks that start years into uptime or
//! just short of `Instant::MAX`).
//!
//! Cases: 64 by default (CI); `PORTCULLIS_PROPTEST_CASES=5000` for more.

use std::net::IpAddr;

use embassy_time::{Duration, Instant};
use portcullis_core::{
    Config, FixedLimiter, Limiter, MapLimiter, NoSlot, OnFull, Seed, SlotToken, Store,
};
use portcullis_tests::model::{MToken, Model};
use proptest::prelude::*;

const W: usize = 8;
const N: usize = 16; // 14 live keys: small enough that eviction happens

fn ips() -> Vec<IpAddr> {
    [
        "10.0.0.1",
        "10.0.0.2",
        "2001:db8:0:1::1",
        "2001:db8:0:1::ffff", // same /64 as the one above
        "2001:db8:0:2::1",
        "::ffff:10.0.0.1", // IPv4-mapped: the same key as 10.0.0.1
        "192.0.2.66",      // denylisted
        "198.51.100.7",    // allowlisted
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect()
}

const USERS: [&str; 4] = ["alice", " ALICE ", "bob", "carol"];

#[derive(Clone, Debug)]
enum Op {
    Request(usize),
    PeekRequest(usize),
    CheckLogin(usize, usize),
    PeekLogin(usize, usize),
    LoginFailed(usize, usize),
    LoginSucceeded(usize, usize),
    Acquire(usize),
    Release(usize),
    Ban(usize),
    Unban(usize),
    Lift(usize),
    Purge,
    Advance(u64),
    Back(u64),
}

fn step() -> impl Strategy<Value = u64> {
    let ms = 1_000u64; // ticks per ms at the default 1 MHz tick rate
    prop_oneof![
        4 => Just(0u64),
        4 => (1u64..2_000).prop_map(move |x| x * ms),
        3 => (1u64..120).prop_map(move |x| x * 1000 * ms),
        2 => (1u64..90).prop_map(move |x| x * 60_000 * ms),
        1 => (1u64..48).prop_map(move |x| x * 3_600_000 * ms),
        1 => (1u64..30).prop_map(move |x| x * 86_400_000 * ms),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let ip = 0..ips().len();
    let user = 0..USERS.len();
    prop_oneof![
        12 => ip.clone().prop_map(Op::Request),
        2 => ip.clone().prop_map(Op::PeekRequest),
        3 => (user.clone(), ip.clone()).prop_map(|(u, i)| Op::CheckLogin(u, i)),
        1 => (user.clone(), ip.clone()).prop_map(|(u, i)| Op::PeekLogin(u, i)),
        6 => (user.clone(), ip.clone()).prop_map(|(u, i)| Op::LoginFailed(u, i)),
        2 => (user, ip.clone()).prop_map(|(u, i)| Op::LoginSucceeded(u, i)),
        2 => ip.clone().prop_map(Op::Acquire),
        2 => (0usize..8).prop_map(Op::Release),
        1 => ip.clone().prop_map(Op::Ban),
        1 => ip.clone().prop_map(Op::Unban),
        1 => ip.prop_map(Op::Lift),
        1 => Just(Op::Purge),
        6 => step().prop_map(Op::Advance),
        1 => (1u64..5_000_000).prop_map(Op::Back),
    ]
}

fn secs(lo: u64, hi: u64) -> impl Strategy<Value = Duration> {
    (lo..=hi).prop_map(Duration::from_secs)
}

fn config() -> impl Strategy<Value = Config> {
    (
        (
            1u32..=W as u32,
            secs(1, 120),
            1u32..=4,
            secs(60, 7200),
            secs(1, 900),
            1u32..=3,
        ),
        (
            secs(60, 86_400),
            proptest::option::of(2u32..=8),
            secs(60, 86_400),
        ),
        (
            1u32..=W as u32,
            secs(1, 600),
            secs(1, 600),
            any::<bool>(),
            proptest::option::of(1u32..=W as u32),
            secs(60, 7200),
        ),
        (
            1u64..=5,
            1u32..=3,
            5u64..=60,
            1u32..=4,
            secs(1, 120),
            any::<bool>(),
            any::<bool>(),
        ),
    )
        .prop_map(|(r, b, l, p)| {
            let mut c = Config::default();
            c.requests.max_requests = r.0;
            c.requests.window = r.1;
            c.blocks.block_after = r.2;
            c.blocks.violation_memory = r.3;
            c.blocks.block_for = r.4;
            c.blocks.block_growth = r.5;
            c.blocks.max_block = b.0.max(r.4);
            c.blocks.ban_after = b.1;
            c.blocks.ban_lookback = b.2;
            c.login.max_failures = l.0;
            c.login.failure_window = l.1;
            c.login.lock_for = l.2;
            c.login.lock_ip_on_account_lock = l.3;
            c.login.account_max_failures = l.4;
            c.login.account_window = l.5;
            c.penalty.base = Duration::from_secs(p.0);
            c.penalty.multiplier = p.1;
            c.penalty.max = Duration::from_secs(p.2.max(p.0));
            c.slots.slots = p.3;
            c.slots.slot_ttl = p.4;
            c.slots.when_full = if p.5 {
                NoSlot::CapToBase
            } else {
                NoSlot::Refuse
            };
            c.on_full = if p.6 { OnFull::Deny } else { OnFull::Allow };
            c.lists.deny.push("192.0.2.0/24".parse().unwrap()).unwrap();
            c.lists
                .allow
                .push("198.51.100.7/32".parse().unwrap())
                .unwrap();
            c
        })
}

fn start() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        (0u64..1_000_000_000),
        Just(3 * 365 * 86_400 * 1_000_000u64), // three years of uptime
        Just(u64::MAX - 40 * 86_400 * 1_000_000), // near the end of time
    ]
}

fn run<S: Store<W>>(
    mut lim: Limiter<S, W>,
    cfg: Config,
    t0: u64,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    let ips = ips();
    let mut model = Model::new(cfg, lim.capacity());
    let mut now = t0;
    let mut tokens: Vec<(SlotToken, MToken)> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let at = Instant::from_ticks(now);
        let here = now;
        let ctx = || format!("op {i}: {op:?} at {here}");
        match *op {
            Op::Request(ip) => {
                let c = lim.check_request(ips[ip], at);
                let m = model.check_request(ips[ip], now);
                prop_assert_eq!(c, m, "{}", ctx());
            }
            Op::PeekRequest(ip) => {
                prop_assert_eq!(
                    lim.peek_request(ips[ip], at),
                    model.peek_request(ips[ip], now),
                    "{}",
                    ctx()
                );
            }
            Op::CheckLogin(u, ip) => {
                let c = lim.check_login(USERS[u], ips[ip], at);
                prop_assert_eq!(c, model.check_login(USERS[u], ips[ip], now), "{}", ctx());
            }
            Op::PeekLogin(u, ip) => {
                let c = lim.peek_login(USERS[u], ips[ip], at);
                prop_assert_eq!(c, model.peek_login(USERS[u], ips[ip], now), "{}", ctx());
            }
            Op::LoginFailed(u, ip) => {
                let c = lim.login_failed(USERS[u], ips[ip], at);
                let m = model.login_failed(USERS[u], ips[ip], now);
                prop_assert_eq!(c.delay, m.delay, "{}", ctx());
                prop_assert_eq!(c.refused, m.refused, "{}", ctx());
                prop_assert_eq!(c.throttled, m.throttled, "{}", ctx());
                prop_assert_eq!(c.locked, m.locked, "{}", ctx());
                prop_assert_eq!(c.slot.is_some(), m.slot.is_some(), "{}", ctx());
                if let (Some(a), Some(b)) = (c.slot, m.slot) {
                    tokens.push((a, b));
                }
            }
            Op::LoginSucceeded(u, ip) => {
                let c = lim.login_succeeded(USERS[u], ips[ip], at);
                prop_assert_eq!(
                    c,
                    model.login_succeeded(USERS[u], ips[ip], now),
                    "{}",
                    ctx()
                );
            }
            Op::Acquire(ip) => {
                let c = lim.acquire_slot(ips[ip], at);
                let m = model.acquire_slot(ips[ip], now);
                prop_assert_eq!(c.is_some(), m.is_some(), "{}", ctx());
                if let (Some(a), Some(b)) = (c, m) {
                    tokens.push((a, b));
                }
            }
            Op::Release(k) => {
                if !tokens.is_empty() {
                    let (a, b) = tokens.remove(k % tokens.len());
                    prop_assert_eq!(lim.release_slot(a), model.release_slot(b), "{}", ctx());
                }
            }
            Op::Ban(ip) => {
                prop_assert_eq!(lim.ban(ips[ip], at), model.ban(ips[ip], now), "{}", ctx());
            }
            Op::Unban(ip) => {
                prop_assert_eq!(lim.unban(ips[ip]), model.unban(ips[ip]), "{}", ctx());
            }
            Op::Lift(ip) => {
                prop_assert_eq!(lim.lift(ips[ip]), model.lift(ips[ip]), "{}", ctx());
            }
            Op::Purge => {
                prop_assert_eq!(lim.purge(at), model.purge(now), "{}", ctx());
            }
            Op::Advance(d) => now = now.saturating_add(d),
            Op::Back(d) => now = now.saturating_sub(d),
        }
        prop_assert_eq!(lim.len(), model.len(), "{}", ctx());
        prop_assert_eq!(lim.stats().table_full, model.table_full, "{}", ctx());
        prop_assert_eq!(lim.stats().evictions, model.evictions, "{}", ctx());
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PORTCULLIS_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 4096, ..ProptestConfig::default() })]

    #[test]
    fn fixed_store_matches_model(cfg in config(), t0 in start(), ops in proptest::collection::vec(op(), 1..400), seed in any::<[u8; 16]>()) {
        let lim = FixedLimiter::<N, W>::new(cfg.clone(), Seed::new(seed)).unwrap();
        run(lim, cfg, t0, &ops)?;
    }

    #[test]
    fn map_store_matches_model(cfg in config(), t0 in start(), ops in proptest::collection::vec(op(), 1..400), seed in any::<[u8; 16]>()) {
        let lim = MapLimiter::<W>::new_growable(cfg.clone(), Seed::new(seed), 14).unwrap();
        run(lim, cfg, t0, &ops)?;
    }
}
