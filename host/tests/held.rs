//! Denials answered without the exclusive lock (held standing denials and
//! the shared-lock path) are the core's answers: the host limiter, step by
//! step, against one core `MapLimiter` fed the same calls, with bans,
//! lifts and purges in between; and an unban is seen by every thread that
//! asks after it returns.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use portcullis::{Duration, Instant};
use portcullis::{Limiter, LimiterOptions};
use portcullis_core::{Config, Decision, MapLimiter, Reason, Seed};

const SEED: Seed = Seed::new([0x33; 16]);

fn config() -> Config {
    let mut c = Config::default();
    c.requests.max_requests = 5;
    c.requests.window = Duration::from_secs(10);
    c.blocks.block_after = 3;
    c.blocks.block_for = Duration::from_secs(20);
    c
}

fn host() -> Limiter {
    Limiter::new(
        config(),
        LimiterOptions {
            max_entries: 1000,
            shards: 4,
            seed: Some(SEED),
        },
    )
    .unwrap()
}

fn ip(n: u32) -> IpAddr {
    IpAddr::from([198, 51, 100, n as u8])
}

#[test]
fn host_answers_as_the_core_with_held_denials() {
    let host = host();
    let mut core = MapLimiter::<64>::new_growable(config(), SEED, 1000).unwrap();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut now_ms = 1_000_000u64;
    let (mut denied, mut reasons) = (0u32, Vec::new());
    for i in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Time only moves forward here: the host clamps its clock per
        // shard, the single core limiter over all of them.
        now_ms += x % 300;
        let at = Instant::from_millis(now_ms);
        // Mostly one hammering address, some others.
        let a = ip(if x % 8 < 6 { 1 } else { (x % 5) as u32 });
        match (x >> 20) % 500 {
            0 => assert_eq!(host.ban_at(a, at).decision, core.ban(a, at), "ban {i}"),
            1..=2 => assert_eq!(host.lift(a).decision, core.lift(a), "lift {i}"),
            3 => {
                host.purge_at(at);
                core.purge(at);
            }
            _ => {
                let got = host.check_request_at(a, at).decision;
                let want = core.check_request(a, at);
                assert_eq!(got, want, "call {i} for {a}");
                if let Decision::Deny { reason, .. } = got {
                    denied += 1;
                    if !reasons.contains(&reason) {
                        reasons.push(reason);
                    }
                }
            }
        }
    }
    assert!(denied > 5000, "{denied} denials");
    for r in [Reason::RateLimited, Reason::Blocked, Reason::Banned] {
        assert!(reasons.contains(&r), "{r:?} never seen: {reasons:?}");
    }
}

#[test]
fn an_unban_is_seen_by_every_thread_after_it_returns() {
    let host = host();
    let a = ip(7);
    let t = Instant::from_secs(1000);
    for _ in 0..50 {
        assert!(host.ban_at(a, t).decision);
        let (lifting, done) = (AtomicBool::new(false), AtomicBool::new(false));
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    // Hammer while banned (held denials fill and serve):
                    // nothing is let through before the lift begins...
                    while !done.load(Ordering::Acquire) {
                        let d = host.check_request_at(a, t).decision;
                        assert!(!d.is_allowed() || lifting.load(Ordering::Acquire));
                    }
                    // ...and once the unban has returned, no ban is left.
                    let d = host.check_request_at(a, t).decision;
                    assert!(
                        !matches!(
                            d,
                            Decision::Deny {
                                reason: Reason::Banned,
                                ..
                            }
                        ),
                        "still banned after the unban: {d:?}"
                    );
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
            lifting.store(true, Ordering::Release);
            assert!(host.lift(a).decision > 0);
            done.store(true, Ordering::Release);
        });
    }
}

/// Two /64 prefixes whose 64-bit folds agree (the shard's denial hint)
/// in one shard: the held ban of one is never the other's answer.
#[test]
fn a_held_ban_is_for_its_own_address_only() {
    let host = Limiter::new(
        config(),
        LimiterOptions {
            max_entries: 100,
            shards: 1,
            seed: Some(SEED),
        },
    )
    .unwrap();
    let (a, b): (IpAddr, IpAddr) = (
        "2001:db8::1".parse().unwrap(),
        "2001:db8:100::1".parse().unwrap(),
    );
    let t = Instant::from_secs(1000);
    assert!(host.ban_at(a, t).decision);
    for _ in 0..3 {
        // Denied through the write path, then from the held denial.
        let d = host.check_request_at(a, t).decision;
        assert!(matches!(
            d,
            Decision::Deny {
                reason: Reason::Banned,
                ..
            }
        ));
    }
    assert!(host.check_request_at(b, t).decision.is_allowed());
    let d = host.check_request_at(a, t).decision;
    assert!(matches!(
        d,
        Decision::Deny {
            reason: Reason::Banned,
            ..
        }
    ));
}
