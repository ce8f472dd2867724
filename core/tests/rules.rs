//! One test per rule at the defaults of `docs/rules.md`, run against both stores.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::panic
)]

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use portcullis_core::internals::Store;
use portcullis_core::*;
use portcullis_core::{Duration, Instant};

const SEED: Seed = Seed::new([0x5a; 16]);

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}
fn ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
}
fn t(secs: u64) -> Instant {
    Instant::from_secs(1_000_000 + secs)
}
fn s(secs: u64) -> Duration {
    Duration::from_secs(secs)
}
fn release<S: Store<50>>(l: &mut Limiter<S, 50>, p: Penalty) -> Duration {
    if let Some(tok) = p.slot {
        l.release_slot(tok);
    }
    p.delay
}

macro_rules! rules_for {
    ($modname:ident, $span_secs:expr, $make:expr) => {
        mod $modname {
            use super::*;

            /// The longest lookback the table answers exactly, in seconds.
            const SPAN_SECS: u64 = $span_secs;

            fn limiter_with(c: Config) -> impl LimiterExt {
                ($make)(c)
            }
            fn limiter() -> impl LimiterExt {
                limiter_with(Config::default())
            }

            #[test]
            fn window_allows_50_per_60s_and_slides() {
                let mut l = limiter();
                let a = ip(1);
                for i in 0..50 {
                    match l.lim().check_request(a, t(i)) {
                        Decision::Allow { remaining, reset_after } => {
                            assert_eq!(remaining, 49 - i as u32);
                            assert_eq!(reset_after, s(60 - i));
                        }
                        d => panic!("request {i} denied: {d:?}"),
                    }
                }
                // 51st at t=50: the oldest (t=0) leaves at t=60.
                assert_eq!(
                    l.lim().check_request(a, t(50)),
                    Decision::Deny { reason: Reason::RateLimited, retry_after: s(10) }
                );
                // Sliding, not fixed: at t=60 exactly one slot came back (t=0 left).
                assert!(l.lim().check_request(a, t(60)).is_allowed());
                assert!(!l.lim().check_request(a, t(60)).is_allowed());
                // Another address is independent.
                assert!(l.lim().check_request(ip(2), t(60)).is_allowed());
            }

            #[test]
            fn denied_requests_are_not_logged() {
                let mut l = limiter();
                for _ in 0..50 {
                    l.lim().check_request(ip(1), t(0));
                }
                for _ in 0..1000 {
                    assert!(!l.lim().check_request(ip(1), t(30)).is_allowed());
                }
                // Had denials been logged, t=60 would still be full.
                assert!(l.lim().check_request(ip(1), t(60)).is_allowed());
            }

            /// Fill the window at `at` and deny once: one violation window.
            fn violate(l: &mut impl LimiterExt, a: IpAddr, at: u64) -> Decision {
                let mut last = Decision::Allow { remaining: 0, reset_after: s(0) };
                for _ in 0..51 {
                    last = l.lim().check_request(a, t(at));
                }
                last
            }

            #[test]
            fn three_violation_windows_block_15_min_then_doubling() {
                let mut l = limiter();
                let a = ip(3);
                // Many denials in one window are one violation.
                assert_eq!(violate(&mut l, a, 0).reason(), Some(Reason::RateLimited));
                for _ in 0..100 {
                    assert_eq!(l.lim().check_request(a, t(1)).reason(), Some(Reason::RateLimited));
                }
                assert_eq!(violate(&mut l, a, 100).reason(), Some(Reason::RateLimited));
                assert_eq!(
                    violate(&mut l, a, 200),
                    Decision::Deny { reason: Reason::Blocked, retry_after: s(15 * 60) }
                );
                assert_eq!(
                    l.lim().check_request(a, t(200 + 899)),
                    Decision::Deny { reason: Reason::Blocked, retry_after: s(1) }
                );
                assert!(l.lim().check_request(a, t(200 + 900)).is_allowed());
                // Three more violation windows: the second block lasts 30 min.
                let b = 2000;
                violate(&mut l, a, b);
                violate(&mut l, a, b + 100);
                assert_eq!(
                    violate(&mut l, a, b + 200),
                    Decision::Deny { reason: Reason::Blocked, retry_after: s(30 * 60) }
                );
            }

            #[test]
            fn ten_violations_in_a_day_ban_until_lifted() {
                // Ten violations over 20 h; over 50 min with 1-minute
                // blocks where the table's lookbacks are shorter than a
                // day (a fixed table at 1 MHz ticks).
                let mut c = Config::default();
                let gap = if SPAN_SECS >= 24 * 3600 {
                    2 * 3600
                } else {
                    c.blocks.block_for = s(60);
                    c.blocks.max_block = s(60);
                    300
                };
                let mut l = limiter_with(c);
                let a = ip(4);
                let mut at = 0;
                let mut banned = false;
                for _ in 0..10 {
                    // Skip past any block, then violate.
                    at += gap;
                    banned = violate(&mut l, a, at).reason() == Some(Reason::Banned);
                }
                assert!(banned, "tenth violation bans");
                let d = l.lim().check_request(a, t(at + 10 * 24 * 3600));
                assert_eq!(d, Decision::Deny { reason: Reason::Banned, retry_after: Duration::MAX });
                let mut bans = 0;
                l.lim().for_each_ban(t(at), |addr, left| {
                    assert_eq!(addr.ip(), a);
                    assert_eq!(left, None);
                    bans += 1;
                });
                assert_eq!(bans, 1);
                assert!(l.lim().unban(a));
                assert!(l.lim().check_request(a, t(at + 10 * 24 * 3600)).is_allowed());
            }

            #[test]
            fn ten_login_failures_lock_pair_and_ip_for_5_min() {
                let mut l = limiter();
                let a = ip(5);
                for i in 0..10 {
                    assert!(l.lim().check_login("alice", a, t(i)).is_allowed(), "attempt {i}");
                    let p = l.lim().login_failed("alice", a, t(i));
                    release(l.lim(), p);
                }
                assert_eq!(
                    l.lim().check_login("alice", a, t(9)),
                    Decision::Deny { reason: Reason::PairLocked, retry_after: s(300) }
                );
                // The ip is locked too, for every username.
                assert_eq!(
                    l.lim().check_login("bob", a, t(10)),
                    Decision::Deny { reason: Reason::IpLocked, retry_after: s(299) }
                );
                // Another ip can still log in as alice.
                assert!(l.lim().check_login("alice", ip(6), t(10)).is_allowed());
                assert!(l.lim().check_login("alice", a, t(9 + 300)).is_allowed());
            }

            #[test]
            fn ip_locks_after_10_failures_across_usernames() {
                let mut l = limiter();
                let a = ip(7);
                for i in 0..10u64 {
                    let p = l.lim().login_failed(&format!("user{i}"), a, t(i));
                    release(l.lim(), p);
                }
                assert_eq!(l.lim().check_login("fresh", a, t(10)).reason(), Some(Reason::IpLocked));
            }

            /// Fifty guesses in flight at once (all reserved before any
            /// password is checked): exactly `max_failures` get through;
            /// settling them as failures locks the pair and the ip.
            #[test]
            fn reserved_attempts_bound_parallel_guesses() {
                let mut l = limiter();
                let a = ip(30);
                let mut flight = Vec::new();
                let mut refused = 0;
                for _ in 0..50 {
                    match l.lim().begin_login("mallory", a, t(0)) {
                        Ok(att) => flight.push(att),
                        Err(d) => {
                            assert_eq!(d.reason(), Some(Reason::PairLocked));
                            assert_eq!(d, Decision::Deny { reason: Reason::PairLocked, retry_after: s(300) });
                            refused += 1;
                        }
                    }
                }
                assert_eq!((flight.len(), refused), (10, 40));
                // Another user from the same address: the ip has 10 in flight too.
                assert_eq!(l.lim().begin_login("other", a, t(0)).err().and_then(|d| d.reason()), Some(Reason::IpLocked));
                let mut locked = false;
                for att in flight {
                    locked |= l.lim().login_attempt_failed("mallory", a, att.id, t(1));
                    release(l.lim(), att.penalty);
                }
                assert!(locked);
                assert_eq!(
                    l.lim().check_login("mallory", a, t(1)),
                    Decision::Deny { reason: Reason::PairLocked, retry_after: s(300) }
                );
                assert_eq!(l.lim().check_login("other", a, t(1)).reason(), Some(Reason::IpLocked));
            }

            /// A reserved attempt with the right password is a success:
            /// the pair is cleared and the ip and account keep only the
            /// real failures, so a user who typed it right never locks
            /// their address by logging in.
            #[test]
            fn right_password_takes_the_reservation_back() {
                let mut l = limiter();
                let a = ip(31);
                for i in 0..30 {
                    let att = l.lim().begin_login("walt", a, t(i)).unwrap();
                    assert_eq!(att.penalty.delay, s(1), "no failure counted before");
                    assert!(l.lim().login_attempt_succeeded("walt", a, att.id, t(i)));
                    release(l.lim(), att.penalty);
                }
                assert!(matches!(l.lim().check_login("walt", a, t(30)), Decision::Allow { remaining: 10, .. }));
                // Nine wrong, then right: allowed, and the ip is not locked.
                for i in 0..9 {
                    let att = l.lim().begin_login("walt", a, t(40 + i)).unwrap();
                    l.lim().login_attempt_failed("walt", a, att.id, t(40 + i));
                    release(l.lim(), att.penalty);
                }
                let att = l.lim().begin_login("walt", a, t(50)).unwrap();
                assert_eq!(att.penalty.delay, s(30), "9 earlier failures: capped back-off");
                l.lim().login_attempt_succeeded("walt", a, att.id, t(50));
                release(l.lim(), att.penalty);
                assert!(matches!(l.lim().check_login("zoe", a, t(50)), Decision::Allow { remaining: 1, .. }));
            }

            #[test]
            fn success_clears_pair_and_keeps_ip() {
                let mut l = limiter();
                let a = ip(8);
                for i in 0..9 {
                    let p = l.lim().login_failed("carol", a, t(i));
                    release(l.lim(), p);
                }
                assert!(matches!(l.lim().check_login("carol", a, t(9)), Decision::Allow { remaining: 1, .. }));
                assert!(l.lim().login_succeeded("carol", a, t(9)));
                // The ip still carries 9 failures: one more (any user) locks it.
                assert!(matches!(l.lim().check_login("carol", a, t(9)), Decision::Allow { remaining: 1, .. }));
                let p = l.lim().login_failed("dave", a, t(10));
                release(l.lim(), p);
                assert_eq!(l.lim().check_login("carol", a, t(10)).reason(), Some(Reason::IpLocked));
                // And the pair's penalty restarted at base: a new pair.
                let mut l = limiter();
                for i in 0..4 {
                    let p = l.lim().login_failed("erin", a, t(i));
                    release(l.lim(), p);
                }
                l.lim().login_succeeded("erin", a, t(4));
                let p = l.lim().login_failed("erin", a, t(5));
                assert_eq!(release(l.lim(), p), s(1));
            }

            #[test]
            fn penalties_are_1_2_4_8_16_30_30() {
                let mut c = Config::default();
                c.login.max_failures = 20;
                c.login.ip_max_failures = Some(20);
                let mut l = limiter_with(c);
                let got: Vec<u64> = (0..7)
                    .map(|i| {
                        let p = l.lim().login_failed("frank", ip(9), t(i));
                        release(l.lim(), p).as_secs()
                    })
                    .collect();
                assert_eq!(got, [1, 2, 4, 8, 16, 30, 30]);
            }

            #[test]
            fn three_slots_then_capped_or_refused() {
                let mut l = limiter();
                let a = ip(10);
                let held: Vec<_> = (0..3).map(|_| l.lim().acquire_slot(a, t(0)).unwrap()).collect();
                assert!(l.lim().acquire_slot(a, t(0)).is_none());
                assert_eq!(l.lim().slots_in_use(a, t(0)), 3);
                // Failures without a slot are capped to base, even late in the sequence.
                for i in 0..5 {
                    let p = l.lim().login_failed("gina", a, t(i));
                    assert!(p.slot.is_none());
                    assert_eq!(p.delay, s(1));
                }
                for tok in held {
                    assert!(l.lim().release_slot(tok));
                }
                let p = l.lim().login_failed("gina", a, t(5));
                assert!(p.slot.is_some());
                assert_eq!(release(l.lim(), p), s(30));

                let mut c = Config::default();
                c.slots.when_full = NoSlot::Refuse;
                let mut l = limiter_with(c);
                let _held: Vec<_> = (0..3).map(|_| l.lim().acquire_slot(a, t(0)).unwrap()).collect();
                let p = l.lim().login_failed("gina", a, t(0));
                assert!(p.refused);
            }

            #[test]
            fn a_hidden_lock_costs_what_the_next_failure_would() {
                let mut c = Config::default();
                c.login.max_failures = 3;
                c.login.ip_max_failures = Some(3);
                let mut l = limiter_with(c.clone());
                let a = ip(11);
                let got: Vec<u64> = (0..3)
                    .map(|i| {
                        let p = l.lim().login_failed("hana", a, t(i));
                        release(l.lim(), p).as_secs()
                    })
                    .collect();
                assert_eq!(got, [1, 2, 4]);
                assert_eq!(l.lim().check_login("hana", a, t(3)).reason(), Some(Reason::PairLocked));
                // What a fourth wrong password would cost (k = 3): 8 s, in
                // a slot; nothing is counted.
                let before = l.lim().peek_login("hana", a, t(3));
                let p = l.lim().hidden_lock_penalty(a, t(3));
                assert_eq!((p.delay, p.refused, p.locked), (s(8), false, false));
                assert!(p.slot.is_some());
                assert_eq!(l.lim().peek_login("hana", a, t(3)), before);
                // Out of slots it is capped or refused like a failure.
                let held: Vec<_> = (0..2).map(|_| l.lim().acquire_slot(a, t(3)).unwrap()).collect();
                let q = l.lim().hidden_lock_penalty(a, t(3));
                assert!(q.slot.is_none());
                assert_eq!(q.delay, s(1));
                for tok in held {
                    l.lim().release_slot(tok);
                }
                release(l.lim(), p);
                c.slots.when_full = NoSlot::Refuse;
                let mut l = limiter_with(c);
                let _held: Vec<_> = (0..3).map(|_| l.lim().acquire_slot(a, t(0)).unwrap()).collect();
                assert!(l.lim().hidden_lock_penalty(a, t(0)).refused);
            }

            #[test]
            fn lost_slots_are_reclaimed_after_ttl() {
                let mut l = limiter();
                let a = ip(11);
                let lost: Vec<_> = (0..3).map(|_| l.lim().acquire_slot(a, t(0)).unwrap()).collect();
                assert!(l.lim().acquire_slot(a, t(59)).is_none());
                let fresh = l.lim().acquire_slot(a, t(60)).expect("reclaimed after 60 s");
                // Releasing a reclaimed token is harmless and reported.
                for tok in lost {
                    assert!(!l.lim().release_slot(tok));
                }
                assert!(l.lim().release_slot(fresh));
            }

            #[test]
            fn allowlist_never_limits_denylist_always_refuses_loopback_not_exempt() {
                let mut c = Config::default();
                c.lists.allow.push("192.168.0.0/16".parse().unwrap()).unwrap();
                c.lists.deny.push("198.51.100.0/24".parse().unwrap()).unwrap();
                c.lists.allow.push("198.51.100.7".parse().unwrap()).unwrap();
                let mut l = limiter_with(c);
                for _ in 0..500 {
                    assert!(l.lim().check_request(v4(192, 168, 3, 4), t(0)).is_allowed());
                }
                let d = l.lim().check_request(v4(198, 51, 100, 7), t(0));
                assert_eq!(d, Decision::Deny { reason: Reason::Denylisted, retry_after: Duration::MAX });
                assert_eq!(l.lim().check_login("x", v4(198, 51, 100, 1), t(0)).reason(), Some(Reason::Denylisted));
                let lo = v4(127, 0, 0, 1);
                for _ in 0..50 {
                    assert!(l.lim().check_request(lo, t(0)).is_allowed());
                }
                assert_eq!(l.lim().check_request(lo, t(0)).reason(), Some(Reason::RateLimited));
            }

            #[test]
            fn account_throttle_across_addresses() {
                let mut l = limiter();
                // A botnet: 50 addresses, one failure each, on one username.
                for i in 0..50 {
                    let p = l.lim().login_failed("victim", ip(1000 + i), t(u64::from(i)));
                    assert!(!p.throttled);
                    assert_eq!(release(l.lim(), p), s(1));
                }
                // Every further failure on that username, from anywhere, costs the maximum.
                let p = l.lim().login_failed("VICTIM", ip(5000), t(60));
                assert!(p.throttled);
                assert_eq!(release(l.lim(), p), s(30));
                // The real user is never locked out by it.
                assert!(l.lim().check_login("victim", ip(6000), t(61)).is_allowed());
                // Other usernames are unaffected; after an hour it is off.
                let p = l.lim().login_failed("other", ip(5000), t(62));
                assert!(!p.throttled);
                release(l.lim(), p);
                let p = l.lim().login_failed("victim", ip(7000), t(61 + 3600));
                assert!(!p.throttled);
            }

            #[test]
            fn flood_of_fresh_addresses_never_launders_a_ban() {
                let mut l = limiter();
                let cap = l.lim().capacity();
                let banned: Vec<IpAddr> = (0..10).map(|i| v4(172, 16, 0, i)).collect();
                for &b in &banned {
                    assert!(l.lim().ban(b, t(0)));
                }
                for i in 0..(100 * cap) as u32 {
                    l.lim().check_request(IpAddr::V4(Ipv4Addr::from(0x6400_0000 + i)), t(1));
                }
                assert!(l.lim().stats().evictions > 0);
                for &b in &banned {
                    assert_eq!(l.lim().check_request(b, t(2)).reason(), Some(Reason::Banned));
                }
            }

            #[test]
            fn full_of_pinned_entries_answers_on_full_and_counts() {
                let mut l = limiter();
                let cap = l.lim().capacity();
                for i in 0..cap as u32 {
                    assert!(l.lim().ban(ip(i), t(0)));
                }
                assert_eq!(l.lim().check_request(ip(999_999), t(1)).reason(), Some(Reason::TableFull));
                assert_eq!(l.lim().stats().table_full, 1);
                let mut c = Config::default();
                c.on_full = OnFull::Allow;
                let mut l = limiter_with(c);
                for i in 0..cap as u32 {
                    l.lim().ban(ip(i), t(0));
                }
                assert!(l.lim().check_request(ip(999_999), t(1)).is_allowed());
            }

            #[test]
            fn time_extremes_do_not_panic() {
                let mut l = limiter();
                let end = Instant::MAX;
                for _ in 0..60 {
                    l.lim().check_request(ip(1), end);
                    let p = l.lim().login_failed("x", ip(1), end);
                    release(l.lim(), p);
                }
                assert_eq!(l.lim().check_request(ip(1), end).reason(), Some(Reason::RateLimited));
                assert_eq!(l.lim().check_login("x", ip(1), end).reason(), Some(Reason::PairLocked));
                // Time standing still at zero.
                let mut l = limiter();
                for _ in 0..50 {
                    assert!(l.lim().check_request(ip(2), Instant::from_ticks(0)).is_allowed());
                }
                assert_eq!(l.lim().check_request(ip(2), Instant::from_ticks(0)).reason(), Some(Reason::RateLimited));
                // Time going backwards is clamped to the latest seen.
                assert_eq!(l.lim().check_request(ip(3), t(5)).is_allowed(), true);
                assert!(l.lim().check_request(ip(2), Instant::from_ticks(0)).is_allowed());
                // A 24-hour window (or the longest the table allows).
                let day = (24 * 3600).min(SPAN_SECS);
                let mut c = Config::default();
                c.requests.window = s(day);
                let mut l = limiter_with(c);
                for i in 0..50 {
                    assert!(l.lim().check_request(ip(4), t(i * (day / 100))).is_allowed());
                }
                assert!(!l.lim().check_request(ip(4), t(day - 1)).is_allowed());
                assert!(l.lim().check_request(ip(4), t(day)).is_allowed());
            }

            #[test]
            fn ipv6_aggregates_to_64_and_mapped_v4_is_v4() {
                let mut l = limiter();
                let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
                let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
                let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
                for i in 0..50 {
                    let x = if i % 2 == 0 { a } else { b };
                    assert!(l.lim().check_request(x, t(0)).is_allowed());
                }
                assert!(!l.lim().check_request(b, t(0)).is_allowed());
                assert!(l.lim().check_request(c, t(0)).is_allowed());
                let mapped = IpAddr::V6(Ipv4Addr::new(10, 9, 9, 9).to_ipv6_mapped());
                for _ in 0..50 {
                    l.lim().check_request(v4(10, 9, 9, 9), t(0));
                }
                assert!(!l.lim().check_request(mapped, t(0)).is_allowed());
                let _ = Ipv6Addr::LOCALHOST;
            }

            #[test]
            fn usernames_normalise_and_are_stored_hashed() {
                let l = limiter();
                let h = l.lim_ref().user_hash("Alice");
                assert_eq!(h, l.lim_ref().user_hash("  alice\t"));
                assert_ne!(h, l.lim_ref().user_hash("alicia"));
                let other = FixedLimiter::<8, 50>::new(fixed_config(Config::default()), Seed::new([1; 16])).unwrap();
                assert_ne!(h, other.user_hash("alice"), "hash is keyed by the seed");
            }

            #[test]
            fn peek_consumes_nothing() {
                let mut l = limiter();
                let a = ip(12);
                for _ in 0..10 {
                    l.lim().check_request(a, t(0));
                }
                for _ in 0..100 {
                    assert_eq!(
                        l.lim().peek_request(a, t(5)),
                        Decision::Allow { remaining: 40, reset_after: s(55) }
                    );
                }
                let p = l.lim().login_failed("h", a, t(5));
                release(l.lim(), p);
                for _ in 0..20 {
                    assert!(matches!(l.lim().peek_login("h", a, t(6)), Decision::Allow { remaining: 9, .. }));
                }
            }

            #[test]
            fn purge_drops_idle_keeps_bans_and_blocks() {
                let mut l = limiter();
                l.lim().ban(ip(1), t(0));
                violate(&mut l, ip(2), 0);
                violate(&mut l, ip(2), 100);
                violate(&mut l, ip(2), 200);
                for i in 10..20 {
                    l.lim().check_request(ip(i), t(0));
                }
                let before = l.lim().len();
                assert_eq!(l.lim().purge(t(100)), 0, "nothing idle yet");
                let removed = l.lim().purge(t(500));
                assert_eq!(removed, 10);
                assert_eq!(l.lim().len(), before - 10);
                assert_eq!(l.lim().check_request(ip(1), t(600)).reason(), Some(Reason::Banned));
                assert_eq!(l.lim().check_request(ip(2), t(600)).reason(), Some(Reason::Blocked));
            }

            #[test]
            fn export_import_restores_remaining_block_time() {
                let mut l = limiter();
                violate(&mut l, ip(2), 0);
                violate(&mut l, ip(2), 100);
                violate(&mut l, ip(2), 200); // blocked until 200 + 900
                l.lim().ban(ip(1), t(0));
                for i in 0..3 {
                    let p = l.lim().login_failed("ivan", ip(3), t(300 + i));
                    release(l.lim(), p);
                }
                let clock = WallClock { now: t(400), unix_ms: 1_700_000_000_000 };
                let mut recs = Vec::new();
                l.lim().export(clock, |r| recs.push(r.clone()));
                assert_eq!(recs.len(), l.lim().len());
                // Restart: uptime is now tiny, wall clock 100 s later.
                let mut m = limiter();
                let later = WallClock { now: Instant::from_secs(5), unix_ms: 1_700_000_100_000 };
                assert_eq!(m.lim().import(later, &recs), Ok(recs.len()));
                let d = m.lim().check_request(ip(2), Instant::from_secs(5));
                assert_eq!(d, Decision::Deny { reason: Reason::Blocked, retry_after: s(1100 - 500) });
                assert_eq!(m.lim().check_request(ip(1), Instant::from_secs(5)).reason(), Some(Reason::Banned));
                assert!(matches!(m.lim().check_login("ivan", ip(3), Instant::from_secs(5)), Decision::Allow { remaining: 7, .. }));

                // A malformed record refuses the whole import and changes nothing.
                let mut bad = recs.clone();
                let last = bad.len() - 1;
                bad[last].block_until = Some(1);
                bad[last].last_block_start = None;
                let before = m.lim().len();
                assert!(matches!(m.lim().import(later, &bad), Err(ImportError::Malformed { index, .. }) if index == last));
                assert_eq!(m.lim().len(), before);
                assert_eq!(m.lim().check_request(ip(1), Instant::from_secs(6)).reason(), Some(Reason::Banned));
                // No key kind holds violations, a block or a ban together
                // with a lock (the table keeps one or the other): a record
                // holding both is refused, whatever its key.
                for field in 0..3 {
                    let mut both = recs.clone();
                    let k = both.iter().position(|r| r.lock_until.is_none() && r.log.len() > 0).unwrap();
                    both[k].lock_until = Some(later.unix_ms + 60_000);
                    match field {
                        0 => both[k].banned = true,
                        1 => both[k].violations.push(later.unix_ms - 1).unwrap(),
                        _ => both[k].block_level = 1,
                    }
                    assert!(
                        matches!(m.lim().import(later, &both), Err(ImportError::Malformed { index, reason }) if index == k && reason.contains("lock")),
                        "field {field}"
                    );
                    assert_eq!(m.lim().len(), before);
                }
                let mut unsorted = recs.clone();
                let k = unsorted.iter().position(|r| r.log.len() >= 2).unwrap();
                unsorted[k].log.swap(0, 1);
                if unsorted[k].log[0] != unsorted[k].log[1] {
                    assert!(m.lim().import(later, &unsorted).is_err());
                }
                let mut dup = recs.clone();
                dup.push(recs[0].clone());
                assert_eq!(m.lim().import(later, &dup), Err(ImportError::Duplicate { index: recs.len() }));
            }

            #[test]
            fn config_errors_name_the_key() {
                let mut c = Config::default();
                c.requests.max_requests = 0;
                let e = c.validate(50).unwrap_err();
                assert_eq!(e.to_string(), "requests.max_requests: must be greater than zero");
                let mut c = Config::default();
                c.requests.max_requests = 51;
                assert_eq!(
                    c.validate(50).unwrap_err().to_string(),
                    "requests.max_requests: must be at most 50 (table log capacity)"
                );
                let mut c = Config::default();
                c.penalty.max = s(0);
                assert!(c.validate(50).unwrap_err().to_string().starts_with("penalty.max"));
            }
        }
    };
}

/// Lets one test body drive either backend.
trait LimiterExt {
    type S: Store<50>;
    fn lim(&mut self) -> &mut Limiter<Self::S, 50>;
    fn lim_ref(&self) -> &Limiter<Self::S, 50>;
}

impl<S: Store<50>> LimiterExt for Limiter<S, 50> {
    type S = S;
    fn lim(&mut self) -> &mut Limiter<S, 50> {
        self
    }
    fn lim_ref(&self) -> &Limiter<S, 50> {
        self
    }
}

/// A fixed table at std's 1 MHz ticks keeps every lookback within 2^32
/// ticks (71.6 min): the day-long defaults are clamped, which the rules
/// below do not depend on beyond an hour.
fn fixed_config(mut c: Config) -> Config {
    c.clamp_lookbacks(FIXED_MAX_SPAN);
    c
}

rules_for!(fixed, FIXED_MAX_SPAN / portcullis_core::TICK_HZ, |c| {
    FixedLimiter::<128, 50>::new(fixed_config(c), SEED).unwrap()
});
#[cfg(feature = "alloc")]
rules_for!(growable, u64::MAX, |c| MapLimiter::<50>::new_growable(
    c, SEED, 112
)
.unwrap());

/// `ip_max_failures = None` and `lock_ip_on_account_lock = false`: a
/// pair-only lockout. One user's guesses lock that user from that
/// address (`pair_locked`), never the address for the others behind it.
#[test]
fn a_pair_only_lockout_never_locks_the_address() {
    let mut c = Config::default();
    c.login.ip_max_failures = None;
    c.login.lock_ip_on_account_lock = false;
    c.login.account_max_failures = None;
    let mut l = FixedLimiter::<128, 50>::new(fixed_config(c), SEED).unwrap();
    let a = ip(1);
    for i in 0..10 {
        let p = l.login_failed("alice", a, t(i));
        release(&mut l, p);
    }
    assert_eq!(
        l.check_login("alice", a, t(10)),
        Decision::Deny {
            reason: Reason::PairLocked,
            retry_after: s(299)
        }
    );
    assert_eq!(Reason::PairLocked.as_str(), "pair_locked");
    // Thirty more users, nine failures each, from the same address: the
    // address never locks and only the pair count limits.
    for u in 0..30 {
        let user = format!("user{u}");
        for i in 0..9 {
            let p = l.login_failed(&user, a, t(20 + i));
            release(&mut l, p);
        }
    }
    assert_eq!(
        l.check_login("bob", a, t(40)),
        Decision::Allow {
            remaining: 10,
            reset_after: s(0)
        }
    );
    assert!(matches!(
        l.check_login("user0", a, t(40)),
        Decision::Allow { remaining: 1, .. }
    ));
}

/// `ip_max_failures` apart from `max_failures`: the address locks at its
/// own count, across usernames, before any pair does.
#[test]
fn the_address_locks_at_its_own_count() {
    let mut c = Config::default();
    c.login.ip_max_failures = Some(3);
    let mut l = FixedLimiter::<128, 50>::new(fixed_config(c), SEED).unwrap();
    let a = ip(2);
    let p = l.login_failed("u1", a, t(0));
    release(&mut l, p);
    assert!(matches!(
        l.check_login("u1", a, t(0)),
        Decision::Allow { remaining: 2, .. }
    ));
    let p = l.login_failed("u2", a, t(1));
    release(&mut l, p);
    let p = l.login_failed("u3", a, t(2));
    release(&mut l, p);
    assert_eq!(
        l.check_login("fresh", a, t(3)),
        Decision::Deny {
            reason: Reason::IpLocked,
            retry_after: s(299)
        }
    );
    // A zero count is refused like any other.
    c = Config::default();
    c.login.ip_max_failures = Some(0);
    assert!(c
        .validate(50)
        .unwrap_err()
        .to_string()
        .starts_with("login.ip_max_failures"));
}

#[test]
fn lift_clears_bans_blocks_and_locks_of_one_address() {
    let mut l = FixedLimiter::<128, 50>::new(fixed_config(Config::default()), SEED).unwrap();
    let a = ip(1);
    l.ban(a, t(0));
    l.ban(ip(2), t(0));
    for i in 0..10 {
        if let Some(tok) = l.login_failed("zoe", a, t(i)).slot {
            l.release_slot(tok);
        }
    }
    assert_eq!(
        l.check_login("zoe", a, t(10)).reason(),
        Some(Reason::PairLocked)
    );
    assert_eq!(l.lift(a), 3);
    assert!(l.check_request(a, t(11)).is_allowed());
    assert!(l.check_login("zoe", a, t(11)).is_allowed());
    assert_eq!(l.check_request(ip(2), t(11)).reason(), Some(Reason::Banned));
}

/// `check_request_if_unchanged` answers only when `check_request` would
/// change nothing, and then answers the same, on both stores; the
/// `standing_denial` it rests on, kept while the key is only denied,
/// answers later calls as `check_request` does until it says it no longer
/// holds.
#[test]
fn unchanged_denials_answer_as_check_request() {
    fn run<S: Store<50>>(mut l: Limiter<S, 50>) -> (u32, u32) {
        let (mut answered, mut denials, mut held_answers) = (0, 0, 0);
        let mut held_reasons = Vec::new();
        let mut held: Option<(IpAddr, StandingDenial)> = None;
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut now = 0u64;
        for i in 0..3000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Mostly one hot address, sometimes two others; steps of
            // 0–2 s, now and then a step back in time (clamped).
            let addr = ip(if x % 10 < 8 { 0 } else { (x % 3) as u32 });
            now = (now + x % 2000).saturating_sub(if x % 97 == 0 { 5000 } else { 0 });
            let at = Instant::from_millis(1_000_000_000 + now);
            let from_held = held
                .filter(|(a, _)| *a == addr)
                .and_then(|(_, h)| h.decision_at(at));
            let standing = l.standing_denial(addr, at);
            let ro = l.check_request_if_unchanged(addr, at);
            assert_eq!(ro, standing.and_then(|h| h.decision_at(at)), "call {i}");
            if let Some(h) = standing {
                assert_eq!(StandingDenial::from_words(h.to_words()), Some(h));
            }
            let stats = l.stats();
            let full = l.check_request(addr, at);
            if let Some(d) = ro {
                assert_eq!(d, full, "call {i}");
                assert_eq!(
                    l.stats(),
                    stats,
                    "call {i}: a read-only answer changed counters"
                );
                answered += 1;
            }
            if let Some(d) = from_held {
                assert_eq!(d, full, "call {i}: a held denial answered wrong");
                held_answers += 1;
                if let Decision::Deny { reason, .. } = d {
                    if !held_reasons.contains(&reason) {
                        held_reasons.push(reason);
                    }
                }
            }
            // Kept only while calls change nothing but the clock.
            held = if ro.is_some() {
                standing.map(|h| (addr, h))
            } else {
                None
            };
            denials += u32::from(!full.is_allowed());
        }
        assert!(held_answers > 300, "{held_answers} held answers");
        assert!(
            held_reasons.contains(&Reason::RateLimited) && held_reasons.contains(&Reason::Blocked),
            "{held_reasons:?}"
        );
        (answered, denials)
    }
    let mut c = Config::default();
    c.requests.max_requests = 10;
    c.blocks.block_after = 3;
    c.blocks.block_for = s(30);
    #[cfg_attr(not(feature = "alloc"), allow(unused_mut))]
    let mut runs = vec![run(FixedLimiter::<64, 50>::new(
        fixed_config(c.clone()),
        SEED,
    )
    .unwrap())];
    #[cfg(feature = "alloc")]
    runs.push(run(
        MapLimiter::<50>::new_growable(c.clone(), SEED, 100).unwrap()
    ));
    for (answered, denials) in runs {
        assert!(
            denials > 500 && answered > denials / 2,
            "{answered} of {denials}"
        );
    }
}

/// A fixed table's logs keep 32-bit tick offsets: a lookback longer than
/// `FIXED_MAX_SPAN` ticks is refused at construction and on reload,
/// naming the key, the limit and the tick rate; the growable table takes
/// it; a lookback of exactly the span is accepted.
#[test]
fn a_fixed_table_refuses_lookbacks_beyond_its_span() {
    let over = Duration::from_ticks(FIXED_MAX_SPAN + 1);
    let at = Duration::from_ticks(FIXED_MAX_SPAN);
    type Set = fn(&mut Config, Duration);
    let keys: [(&str, Set); 5] = [
        ("requests.window", |c, d| c.requests.window = d),
        ("blocks.violation_memory", |c, d| {
            c.blocks.violation_memory = d
        }),
        ("blocks.ban_lookback", |c, d| c.blocks.ban_lookback = d),
        ("login.failure_window", |c, d| c.login.failure_window = d),
        ("login.account_window", |c, d| c.login.account_window = d),
    ];
    for (key, set) in keys {
        let mut c = fixed_config(Config::default());
        c.login.account_max_failures = Some(16);
        let ok = c.clone();
        set(&mut c, over);
        let err = FixedLimiter::<16, 50>::new(c.clone(), SEED).err();
        assert_eq!(
            err,
            Some(ConfigError::Span {
                key,
                max_ticks: FIXED_MAX_SPAN,
                tick_hz: portcullis_core::TICK_HZ
            }),
            "{key}"
        );
        let shown = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            shown.starts_with(key)
                && shown.contains("4294967295 ticks")
                && shown.contains(&format!("{} ticks per second", portcullis_core::TICK_HZ)),
            "{shown}"
        );
        // A reload is refused alike and the running rules stay.
        let mut l = FixedLimiter::<16, 50>::new(ok.clone(), SEED).unwrap();
        assert!(l.set_config(c.clone()).is_err());
        assert_eq!(l.config(), &ok);
        #[cfg(feature = "alloc")]
        assert!(MapLimiter::<50>::new_growable(c.clone(), SEED, 8).is_ok());
        // Exactly the span is accepted.
        set(&mut c, at);
        assert!(
            FixedLimiter::<16, 50>::new(c, SEED).is_ok(),
            "{key} at the span"
        );
    }
    // Lookbacks nothing reads are not held to it: the ban lookback with
    // bans off, the account window with accounts not counted.
    let mut c = fixed_config(Config::default());
    c.blocks.ban_after = None;
    c.blocks.ban_lookback = over;
    c.login.account_max_failures = None;
    c.login.account_window = over;
    assert!(FixedLimiter::<16, 50>::new(c, SEED).is_ok());
}
