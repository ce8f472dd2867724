//! Restarts keep time (issue 14, finding 7): saving the limiter's state as
//! wall-clock records and restoring it in a process whose monotonic clock
//! started later changes no decision.
//!
//! Limiter A runs a random history uninterrupted. Limiter B runs the same
//! operations, but at random points it is "restarted": exported with a
//! [`WallClock`] and imported into a fresh limiter whose clock reads
//! `shift` less than A's (the new process started later; `shift` grows with
//! every restart: by a few milliseconds, by days, or all the way, so that
//! the new clock is at zero while the history behind it spans hours, days
//! or years of A's uptime). Every decision B makes must equal A's, for the
//! fixed table and the growable one. Times are whole milliseconds, the
//! records' resolution.
//!
//! Cases: 64 by default (CI); `PORTCULLIS_PROPTEST_CASES=5000` for more.

use portcullis_core::internals::Store;
use portcullis_core::Instant;
use portcullis_core::{Config, FixedLimiter, Limiter, MapLimiter, Record, Seed, WallClock};
use portcullis_tests::gen::{self, ips, step, USERS};
use proptest::prelude::*;

const W: usize = 8;
const N: usize = 16; // 14 live keys: small enough that eviction happens

/// Microseconds per millisecond (the tick rate here is 1 MHz).
const MS: u64 = 1_000;

/// Unix milliseconds at A's clock zero.
const UNIX_AT_ZERO: u64 = 1_760_000_000_000;

/// How much later than the last one a restarted process's clock started.
#[derive(Clone, Debug)]
enum Gap {
    /// The new clock reads zero at the restart.
    ToZero,
    /// A few milliseconds.
    Small(u64),
    /// Hours to days: more than every window.
    Long(u64),
}

#[derive(Clone, Debug)]
enum Op {
    Request(usize),
    PeekRequest(usize),
    IfUnchanged(usize),
    CheckLogin(usize, usize),
    PeekLogin(usize, usize),
    LoginFailed(usize, usize),
    LoginSucceeded(usize, usize),
    Ban(usize),
    Unban(usize),
    Lift(usize),
    Purge,
    Advance(u64),
    Back(u64),
    Restart(Gap),
}

fn gap() -> impl Strategy<Value = Gap> {
    prop_oneof![
        2 => Just(Gap::ToZero),
        2 => (0u64..5_000).prop_map(|x| Gap::Small(x * MS)),
        1 => (1u64..72).prop_map(|h| Gap::Long(h * 3_600_000 * MS)),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let ip = 0..ips().len();
    let user = 0..USERS.len();
    prop_oneof![
        12 => ip.clone().prop_map(Op::Request),
        2 => ip.clone().prop_map(Op::PeekRequest),
        1 => ip.clone().prop_map(Op::IfUnchanged),
        3 => (user.clone(), ip.clone()).prop_map(|(u, i)| Op::CheckLogin(u, i)),
        1 => (user.clone(), ip.clone()).prop_map(|(u, i)| Op::PeekLogin(u, i)),
        6 => (user.clone(), ip.clone()).prop_map(|(u, i)| Op::LoginFailed(u, i)),
        2 => (user, ip.clone()).prop_map(|(u, i)| Op::LoginSucceeded(u, i)),
        1 => ip.clone().prop_map(Op::Ban),
        1 => ip.clone().prop_map(Op::Unban),
        1 => ip.prop_map(Op::Lift),
        1 => Just(Op::Purge),
        7 => step().prop_map(|d| Op::Advance(d / MS * MS)),
        1 => (1u64..5_000).prop_map(|d| Op::Back(d * MS)),
        2 => gap().prop_map(Op::Restart),
    ]
}

fn start() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        (0u64..1_000_000).prop_map(|x| x * MS),
        Just(3 * 365 * 86_400 * 1_000 * MS), // three years of uptime
    ]
}

/// Export `b` at its clock's `b_now`, when A's reads `a_now`, and import
/// into `fresh`, whose clock reads `b_new` at that moment.
fn restart<S: Store<W>>(
    b: &Limiter<S, W>,
    mut fresh: Limiter<S, W>,
    a_now: u64,
    b_now: u64,
    b_new: u64,
) -> Result<Limiter<S, W>, TestCaseError> {
    let unix_ms = UNIX_AT_ZERO + a_now / MS;
    let mut records: Vec<Record<W>> = Vec::new();
    let old = WallClock {
        now: Instant::from_ticks(b_now),
        unix_ms,
    };
    b.export(old, |r| records.push(r.clone()));
    prop_assert_eq!(records.len(), b.len());
    let new = WallClock {
        now: Instant::from_ticks(b_new),
        unix_ms,
    };
    prop_assert_eq!(fresh.import(new, &records), Ok(records.len()));
    // What was saved is what is restored (export order is the store's).
    let mut again: Vec<Record<W>> = Vec::new();
    fresh.export(new, |r| again.push(r.clone()));
    again.sort_unstable_by_key(|r| r.key);
    records.sort_unstable_by_key(|r| r.key);
    prop_assert_eq!(again, records);
    Ok(fresh)
}

fn run<S: Store<W>>(
    mut a: Limiter<S, W>,
    make: impl Fn() -> Limiter<S, W>,
    t0: u64,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    let ips = ips();
    let mut b = make();
    let mut now = t0;
    // The latest time seen (on A's clock), how far B's clock is behind
    // A's, and when B last restarted: no caller of the new process can
    // hold a time from before its start.
    let mut high = t0;
    let mut shift = 0u64;
    let mut floor = 0u64;
    let mut restarts = 0usize;
    // Which entry gives way in a full table is the store's CLOCK choice,
    // from state a restore does not carry (reference bits, the hand, slot
    // positions). Once A and B have evicted different keys their tables
    // legitimately differ: from there on nothing is compared. (The model
    // test checks every such choice against the eviction rule.)
    macro_rules! same {
        ($x:expr, $y:expr, $($fmt:tt)*) => {{
            let (x, y) = ($x, $y);
            if a.evicted() != b.evicted() {
                return Ok(());
            }
            prop_assert_eq!(x, y, $($fmt)*);
        }};
    }
    for (i, op) in ops.iter().enumerate() {
        high = high.max(now);
        let at = Instant::from_ticks(now);
        let bt = Instant::from_ticks(now.saturating_sub(shift));
        let (here, behind, restarted) = (now, shift, restarts);
        let ctx = || format!("op {i}: {op:?} at {here} (B {behind} behind, {restarted} restarts)");
        match op {
            Op::Request(ip) => {
                let ip = ips[*ip];
                same!(
                    a.check_request(ip, at),
                    b.check_request(ip, bt),
                    "{}",
                    ctx()
                );
            }
            Op::PeekRequest(ip) => {
                let ip = ips[*ip];
                same!(a.peek_request(ip, at), b.peek_request(ip, bt), "{}", ctx());
            }
            Op::IfUnchanged(ip) => {
                // The shortcut may decline (`None`: "call check_request")
                // where the other answers: it needs the key to be marked
                // touched, and a restore starts every key unmarked. An
                // answer is the decision.
                let ip = ips[*ip];
                match (
                    a.check_request_if_unchanged(ip, at),
                    b.check_request_if_unchanged(ip, bt),
                ) {
                    (Some(x), Some(y)) => same!(x, y, "{}", ctx()),
                    (Some(x), None) => same!(x, b.peek_request(ip, bt), "{}", ctx()),
                    (None, Some(y)) => same!(a.peek_request(ip, at), y, "{}", ctx()),
                    (None, None) => {}
                }
            }
            Op::CheckLogin(u, ip) => {
                let (u, ip) = (USERS[*u], ips[*ip]);
                same!(
                    a.check_login(u, ip, at),
                    b.check_login(u, ip, bt),
                    "{}",
                    ctx()
                );
            }
            Op::PeekLogin(u, ip) => {
                let (u, ip) = (USERS[*u], ips[*ip]);
                same!(
                    a.peek_login(u, ip, at),
                    b.peek_login(u, ip, bt),
                    "{}",
                    ctx()
                );
            }
            Op::LoginFailed(u, ip) => {
                let (u, ip) = (USERS[*u], ips[*ip]);
                let (pa, pb) = (a.login_failed(u, ip, at), b.login_failed(u, ip, bt));
                same!(pa.delay, pb.delay, "{}", ctx());
                same!(pa.refused, pb.refused, "{}", ctx());
                same!(pa.throttled, pb.throttled, "{}", ctx());
                same!(pa.locked, pb.locked, "{}", ctx());
                same!(pa.slot.is_some(), pb.slot.is_some(), "{}", ctx());
                // Slots are in-flight work, not exported: hand them back
                // at once, as a host does after the delay.
                if let (Some(sa), Some(sb)) = (pa.slot, pb.slot) {
                    same!(a.release_slot(sa), b.release_slot(sb), "{}", ctx());
                }
            }
            Op::LoginSucceeded(u, ip) => {
                let (u, ip) = (USERS[*u], ips[*ip]);
                same!(
                    a.login_succeeded(u, ip, at),
                    b.login_succeeded(u, ip, bt),
                    "{}",
                    ctx()
                );
            }
            Op::Ban(ip) => {
                let ip = ips[*ip];
                same!(a.ban(ip, at), b.ban(ip, bt), "{}", ctx());
            }
            Op::Unban(ip) => {
                let ip = ips[*ip];
                same!(a.unban(ip), b.unban(ip), "{}", ctx());
            }
            Op::Lift(ip) => {
                let ip = ips[*ip];
                same!(a.lift(ip), b.lift(ip), "{}", ctx());
            }
            Op::Purge => {
                same!(a.purge(at), b.purge(bt), "{}", ctx());
            }
            Op::Advance(d) => now = now.saturating_add(*d),
            Op::Back(d) => now = now.saturating_sub(*d).max(floor),
            Op::Restart(g) => {
                // Saved at the present: the latest time seen (a host
                // saves at its real now, never behind its limiter's clock).
                now = high;
                floor = high;
                let b_now = high - shift;
                shift = match *g {
                    Gap::ToZero => high,
                    Gap::Small(d) | Gap::Long(d) => shift.saturating_add(d).min(high),
                };
                b = restart(&b, make(), high, b_now, high - shift)?;
                restarts += 1;
            }
        }
        prop_assert_eq!(a.len(), b.len(), "{}", ctx());
        let _ = (a.take_evicted(), b.take_evicted());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: gen::cases(64), max_shrink_iters: 4096, ..ProptestConfig::default() })]

    #[test]
    fn fixed_store_restored_decides_as_uninterrupted(cfg in gen::fixed_config(W as u32), t0 in start(), ops in proptest::collection::vec(op(), 1..300), seed in any::<[u8; 16]>()) {
        let make = || FixedLimiter::<N, W>::new(cfg.clone(), Seed::new(seed)).unwrap();
        run(make(), make, t0, &ops)?;
    }

    #[test]
    fn map_store_restored_decides_as_uninterrupted(cfg in gen::config(W as u32), t0 in start(), ops in proptest::collection::vec(op(), 1..300), seed in any::<[u8; 16]>()) {
        let make = || MapLimiter::<W>::new_growable(cfg.clone(), Seed::new(seed), 14).unwrap();
        run(make(), make, t0, &ops)?;
    }
}

/// The finding itself, in the core: three requests (a 2 s window, a limit
/// of three, a block on the first violation), 2.6 s, a restart whose clock
/// starts at zero: the next request is allowed.
#[test]
fn requests_older_than_the_window_are_forgotten_across_a_restart() {
    let mut cfg = Config::default();
    cfg.requests.max_requests = 3;
    cfg.requests.window = portcullis_core::Duration::from_secs(2);
    cfg.blocks.block_after = 1;
    cfg.clamp_lookbacks(portcullis_core::FIXED_MAX_SPAN);
    let seed = Seed::new([7; 16]);
    let ip = ips()[0];
    let mut a = FixedLimiter::<N, 64>::new(cfg.clone(), seed).unwrap();
    for _ in 0..3 {
        assert!(a.check_request(ip, Instant::from_millis(500)).is_allowed());
    }
    let mut records: Vec<Record<64>> = Vec::new();
    a.export(
        WallClock {
            now: Instant::from_millis(3_100),
            unix_ms: UNIX_AT_ZERO + 3_100,
        },
        |r| records.push(r.clone()),
    );
    let mut b = FixedLimiter::<N, 64>::new(cfg, seed).unwrap();
    let clock = WallClock {
        now: Instant::from_millis(0),
        unix_ms: UNIX_AT_ZERO + 3_100,
    };
    assert_eq!(b.import(clock, &records), Ok(1));
    let d = b.check_request(ip, Instant::from_millis(0));
    assert!(d.is_allowed(), "{d:?}");
}

/// A configured lookback longer than the limiter can place history is refused.
#[test]
fn lookbacks_beyond_max_lookback_are_refused() {
    let mut cfg = Config::default();
    cfg.blocks.ban_lookback = portcullis_core::MAX_LOOKBACK;
    let seed = Seed::new([1; 16]);
    assert!(MapLimiter::<64>::new_growable(cfg.clone(), seed, 8).is_ok());
    cfg.blocks.ban_lookback =
        portcullis_core::MAX_LOOKBACK + portcullis_core::Duration::from_ticks(1);
    let err = MapLimiter::<64>::new_growable(cfg, seed, 8)
        .err()
        .expect("refused");
    assert_eq!(
        err.to_string(),
        "blocks.ban_lookback: must be at most 3650 days"
    );
}
