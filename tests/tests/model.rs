//! Model-based test: the core (both stores) and the plain reference model
//! in `portcullis_tests::model` must agree decision for decision on random
//! operation sequences, keys, configurations and time steps (including
//! jumps of hours and days, and clocks that start years into uptime or
//! just short of `Instant::MAX`). The model is fed the core's internal
//! ticks: the caller's plus `MAX_LOOKBACK`.
//!
//! Eviction: the tables hold 14 keys (fewer than the stores' `SCAN`), so
//! the core must reclaim a dead key before any live one, exactly. Which
//! dead or live key it chose is the store's (CLOCK) business: the test
//! hands each choice to the model, which checks it against the rule (never
//! pinned, dead first, nothing evicted while there is room, refused only
//! when all are pinned) and follows it, so decisions keep being compared
//! after the table is full.
//!
//! Cases: 64 by default (CI); `PORTCULLIS_PROPTEST_CASES=5000` for more.

use portcullis_core::internals::{Store, Victim};
use portcullis_core::Instant;
use portcullis_core::{
    AttemptId, Config, ConfigError, FixedLimiter, Jitter, Key, KeyKind, Limiter, MapLimiter,
    OnFull, Seed, SlotToken, FIXED_MAX_SPAN, MAX_LOOKBACK,
};
use portcullis_tests::gen::{self, ips, step, USERS};
use portcullis_tests::model::{normalise, MAttempt, MKey, MToken, Model};
use proptest::prelude::*;

const W: usize = 8;
const N: usize = 16; // 14 live keys: small enough that eviction happens

#[derive(Clone, Debug)]
enum Op {
    /// A request, and the random part of the jitter of a block it starts.
    Request(usize, u16),
    PeekRequest(usize),
    CheckLogin(usize, usize),
    PeekLogin(usize, usize),
    LoginFailed(usize, usize),
    LoginSucceeded(usize, usize),
    /// Reserve an attempt (`begin_login`).
    Begin(usize, usize),
    /// Settle the k-th attempt in flight: wrong (false) or right (true) password.
    Settle(usize, bool),
    Acquire(usize),
    Release(usize),
    Ban(usize),
    Unban(usize),
    Lift(usize),
    Purge,
    Advance(u64),
    Back(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let ip = 0..ips().len();
    let user = 0..USERS.len();
    prop_oneof![
        12 => (ip.clone(), gen::jitter()).prop_map(|(i, j)| Op::Request(i, j)),
        2 => ip.clone().prop_map(Op::PeekRequest),
        3 => (user.clone(), ip.clone()).prop_map(|(u, i)| Op::CheckLogin(u, i)),
        1 => (user.clone(), ip.clone()).prop_map(|(u, i)| Op::PeekLogin(u, i)),
        6 => (user.clone(), ip.clone()).prop_map(|(u, i)| Op::LoginFailed(u, i)),
        2 => (user.clone(), ip.clone()).prop_map(|(u, i)| Op::LoginSucceeded(u, i)),
        6 => (user, ip.clone()).prop_map(|(u, i)| Op::Begin(u, i)),
        5 => (0usize..8, any::<bool>()).prop_map(|(k, ok)| Op::Settle(k, ok)),
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

/// The shared random configuration, plus what only a table has: `on_full`.
fn config() -> impl Strategy<Value = Config> {
    (gen::config(W as u32), any::<bool>()).prop_map(|(mut c, deny)| {
        c.on_full = if deny { OnFull::Deny } else { OnFull::Allow };
        c
    })
}

/// [`config`] with every lookback within the fixed table's span
/// (see [`gen::fixed_config`]).
fn fixed_config() -> impl Strategy<Value = Config> {
    config().prop_map(|mut c| {
        c.clamp_lookbacks(FIXED_MAX_SPAN);
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

/// The model key of a core key (usernames from [`USERS`]).
fn mkey<S: Store<W>>(lim: &Limiter<S, W>, k: &Key) -> MKey {
    let addr = u128::from_be_bytes(k.addr().octets());
    let user = || {
        let u = USERS
            .iter()
            .find(|u| lim.user_hash(u) == k.user())
            .expect("a known user");
        normalise(u)
    };
    match k.kind() {
        KeyKind::Request => MKey::Request(addr),
        KeyKind::LoginIp => MKey::LoginIp(addr),
        KeyKind::LoginUser => MKey::LoginUser(user(), addr),
        KeyKind::Account => MKey::Account(user()),
    }
}

/// Hand the core's evictions of the last call to the model, which checks
/// them against the rule and follows them.
fn follow<S: Store<W>>(lim: &mut Limiter<S, W>, model: &mut Model) {
    let ev = lim.take_evicted();
    assert!(!ev.overflowed());
    let victims: Vec<(MKey, bool)> = ev
        .keys()
        .iter()
        .map(|(k, v)| (mkey(lim, k), *v == Victim::Live))
        .collect();
    model.follow(victims);
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
    let mut flight: Vec<(usize, usize, AttemptId, MAttempt)> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let at = Instant::from_ticks(now);
        // The core's ticks run MAX_LOOKBACK ahead of its caller's (so that
        // restored history is representable): the model sees those ticks.
        let mt = now.saturating_add(MAX_LOOKBACK.as_ticks());
        let here = now;
        let ctx = || format!("op {i}: {op:?} at {here}");
        match *op {
            Op::Request(ip, j) => {
                let c = lim.check_request_with(ips[ip], at, Jitter(j));
                follow(&mut lim, &mut model);
                let m = model.check_request_with(ips[ip], mt, j);
                prop_assert_eq!(c, m, "{}", ctx());
            }
            Op::PeekRequest(ip) => {
                prop_assert_eq!(
                    lim.peek_request(ips[ip], at),
                    model.peek_request(ips[ip], mt),
                    "{}",
                    ctx()
                );
            }
            Op::CheckLogin(u, ip) => {
                let c = lim.check_login(USERS[u], ips[ip], at);
                follow(&mut lim, &mut model);
                prop_assert_eq!(c, model.check_login(USERS[u], ips[ip], mt), "{}", ctx());
            }
            Op::PeekLogin(u, ip) => {
                let c = lim.peek_login(USERS[u], ips[ip], at);
                prop_assert_eq!(c, model.peek_login(USERS[u], ips[ip], mt), "{}", ctx());
            }
            Op::LoginFailed(u, ip) => {
                let c = lim.login_failed(USERS[u], ips[ip], at);
                follow(&mut lim, &mut model);
                let m = model.login_failed(USERS[u], ips[ip], mt);
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
                follow(&mut lim, &mut model);
                prop_assert_eq!(c, model.login_succeeded(USERS[u], ips[ip], mt), "{}", ctx());
            }
            Op::Begin(u, ip) => {
                let c = lim.begin_login(USERS[u], ips[ip], at);
                follow(&mut lim, &mut model);
                let m = model.begin_login(USERS[u], ips[ip], mt);
                match (c, m) {
                    (Ok(c), Ok(m)) => {
                        let (cp, mp) = (&c.penalty, &m.penalty);
                        prop_assert_eq!(cp.delay, mp.delay, "{}", ctx());
                        prop_assert_eq!(cp.refused, mp.refused, "{}", ctx());
                        prop_assert_eq!(cp.throttled, mp.throttled, "{}", ctx());
                        prop_assert_eq!(cp.slot.is_some(), mp.slot.is_some(), "{}", ctx());
                        if let (Some(a), Some(b)) = (c.penalty.slot, m.penalty.slot.clone()) {
                            tokens.push((a, b));
                        }
                        flight.push((u, ip, c.id, m));
                    }
                    (Err(c), Err(m)) => prop_assert_eq!(c, m, "{}", ctx()),
                    (c, m) => prop_assert!(false, "{}: core {:?} model {:?}", ctx(), c, m),
                }
            }
            Op::Settle(k, ok) => {
                if !flight.is_empty() {
                    let (u, ip, id, m) = flight.remove(k % flight.len());
                    if ok {
                        let c = lim.login_attempt_succeeded(USERS[u], ips[ip], id, at);
                        follow(&mut lim, &mut model);
                        let mm = model.login_attempt_succeeded(USERS[u], ips[ip], &m, mt);
                        prop_assert_eq!(c, mm, "{}", ctx());
                    } else {
                        let c = lim.login_attempt_failed(USERS[u], ips[ip], id, at);
                        follow(&mut lim, &mut model);
                        let mm = model.login_attempt_failed(USERS[u], ips[ip], &m, mt);
                        prop_assert_eq!(c, mm, "{}", ctx());
                    }
                }
            }
            Op::Acquire(ip) => {
                let c = lim.acquire_slot(ips[ip], at);
                follow(&mut lim, &mut model);
                let m = model.acquire_slot(ips[ip], mt);
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
                let c = lim.ban(ips[ip], at);
                follow(&mut lim, &mut model);
                prop_assert_eq!(c, model.ban(ips[ip], mt), "{}", ctx());
            }
            Op::Unban(ip) => {
                prop_assert_eq!(lim.unban(ips[ip]), model.unban(ips[ip]), "{}", ctx());
            }
            Op::Lift(ip) => {
                prop_assert_eq!(lim.lift(ips[ip]), model.lift(ips[ip]), "{}", ctx());
            }
            Op::Purge => {
                prop_assert_eq!(lim.purge(at), model.purge(mt), "{}", ctx());
            }
            Op::Advance(d) => now = now.saturating_add(d),
            Op::Back(d) => now = now.saturating_sub(d),
        }
        follow(&mut lim, &mut model);
        let unused = model.unused_victims();
        prop_assert!(
            unused.is_empty(),
            "{}: core evicted {:?} with room left",
            ctx(),
            unused
        );
        prop_assert!(
            model.rule_breaches.is_empty(),
            "{}: {:?}",
            ctx(),
            model.rule_breaches
        );
        prop_assert_eq!(lim.len(), model.len(), "{}", ctx());
        let st = lim.stats();
        prop_assert_eq!(st.table_full, model.table_full, "{}", ctx());
        prop_assert_eq!(st.evictions, model.evictions, "{}", ctx());
        prop_assert_eq!(st.evicted_dead, model.evicted_dead, "{}", ctx());
        prop_assert_eq!(st.evicted_live, model.evicted_live, "{}", ctx());
        prop_assert_eq!(st.evictions, st.evicted_dead + st.evicted_live, "{}", ctx());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: gen::cases(64), max_shrink_iters: 4096, ..ProptestConfig::default() })]

    #[test]
    fn fixed_store_matches_model(cfg in fixed_config(), t0 in start(), ops in proptest::collection::vec(op(), 1..400), seed in any::<[u8; 16]>()) {
        let lim = FixedLimiter::<N, W>::new(cfg.clone(), Seed::new(seed)).unwrap();
        run(lim, cfg, t0, &ops)?;
    }

    /// Unclamped, a generated configuration is refused by the fixed table
    /// exactly when a lookback its logs read exceeds the span (naming that
    /// lookback), and taken by the growable one.
    #[test]
    fn fixed_store_refuses_exactly_the_lookbacks_beyond_its_span(cfg in config(), seed in any::<[u8; 16]>()) {
        let over = |d: portcullis_core::Duration| d.as_ticks() > FIXED_MAX_SPAN;
        let long = [
            ("requests.window", over(cfg.requests.window)),
            ("blocks.violation_memory", over(cfg.blocks.violation_memory)),
            ("blocks.ban_lookback", cfg.blocks.ban_after.is_some() && over(cfg.blocks.ban_lookback)),
            ("login.failure_window", over(cfg.login.failure_window)),
            ("login.account_window", cfg.login.account_max_failures.is_some() && over(cfg.login.account_window)),
        ]
        .into_iter()
        .find(|&(_, o)| o)
        .map(|(k, _)| k);
        let got = FixedLimiter::<N, W>::new(cfg.clone(), Seed::new(seed)).err();
        match long {
            Some(key) => prop_assert_eq!(got, Some(ConfigError::Span { key, max_ticks: FIXED_MAX_SPAN, tick_hz: portcullis_core::TICK_HZ })),
            None => prop_assert!(got.is_none(), "{:?}", got),
        }
        prop_assert!(MapLimiter::<W>::new_growable(cfg, Seed::new(seed), 14).is_ok());
    }

    #[test]
    fn map_store_matches_model(cfg in config(), t0 in start(), ops in proptest::collection::vec(op(), 1..400), seed in any::<[u8; 16]>()) {
        let lim = MapLimiter::<W>::new_growable(cfg.clone(), Seed::new(seed), 14).unwrap();
        run(lim, cfg, t0, &ops)?;
    }
}
