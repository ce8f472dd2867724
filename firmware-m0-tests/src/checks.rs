//! The checks: each resets the one [`Limiter`] (its rules set, every key
//! forgotten) and returns the first expectation that did not hold. They
//! follow `core/tests/rules.rs` with numbers sized for a
//! `FixedLimiter<16, 16>`: 10 requests per minute, login locks after 8
//! failures, the account throttle at 16.
//!
//! One table serves every check, as a firmware's one table would: built
//! once, it never passes through the stack again (a table returned by
//! value passes through it two or three times, which a 16 KiB part cannot
//! spare per check). The limiter's clock never runs back, so each check
//! runs in its own epoch, a million seconds after the previous one's.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr};

use portcullis_core::{
    Addr, Config, Decision, Duration, Instant, Key, Penalty, Reason, Record, Seed, WallClock,
    FIXED_MAX_SPAN,
};

use crate::Limiter;

/// A check's name and body.
pub type Check = (&'static str, fn(&mut Limiter, Epoch) -> Result<(), Failure>);

/// Where a check's clock starts: its `t(0)`, in seconds.
#[derive(Clone, Copy)]
pub struct Epoch(pub u64);

impl Epoch {
    /// The epoch of the `i`-th check.
    pub fn of(i: usize) -> Epoch {
        Epoch((i as u64).saturating_add(1).saturating_mul(1_000_000))
    }

    /// `secs` after the epoch.
    fn t(self, secs: u64) -> Instant {
        Instant::from_secs(self.0.saturating_add(secs))
    }
}

/// Every check, in the order they run.
pub const ALL: [Check; 7] = [
    ("request_window_slides", request_window_slides),
    (
        "three_violations_block_15_min",
        three_violations_block_15_min,
    ),
    (
        "ten_violations_ban_until_lifted",
        ten_violations_ban_until_lifted,
    ),
    ("login_lockout_pair_and_ip", login_lockout_pair_and_ip),
    (
        "penalty_backoff_doubles_to_cap",
        penalty_backoff_doubles_to_cap,
    ),
    ("allow_and_deny_lists", allow_and_deny_lists),
    ("export_import_round_trip", export_import_round_trip),
];

/// The expectation that failed: its line in this file and what it said.
pub struct Failure {
    line: u32,
    what: &'static str,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.what)
    }
}

/// `Err(Failure)` unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $what:expr) => {
        if !$cond {
            return Err(Failure {
                line: line!(),
                what: $what,
            });
        }
    };
}

const SEED: Seed = Seed::new([0x5a; 16]);
const RECORDS: usize = 6;

fn ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000u32.wrapping_add(n)))
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn s(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

/// The defaults with lookbacks clamped to a fixed table's span (71.6
/// minutes at 1 MHz) and counts that fit 16 timestamps per key.
fn config() -> Config {
    let mut c = Config::default();
    c.clamp_lookbacks(FIXED_MAX_SPAN);
    c.requests.max_requests = 10;
    c.login.max_failures = 8;
    c.login.ip_max_failures = Some(8);
    c.login.account_max_failures = Some(16);
    c
}

/// The table, built once (in the caller's frame: see the module doc).
#[inline(never)]
pub fn new_table() -> Option<Limiter> {
    Limiter::new(config(), SEED).ok()
}

/// The table with rules `c` and no keys.
fn reset(l: &mut Limiter, c: Config) -> Result<(), Failure> {
    l.clear();
    l.set_config(c).map_err(|_| Failure {
        line: line!(),
        what: "the configuration is refused",
    })
}

/// A failure, its slot released; the penalty's delay.
fn fail(l: &mut Limiter, user: &str, a: IpAddr, at: Instant) -> Duration {
    let p: Penalty = l.login_failed(user, a, at);
    if let Some(tok) = p.slot {
        l.release_slot(tok);
    }
    p.delay
}

/// Fill the window at `at` and go one over: one violation window.
fn violate(l: &mut Limiter, a: IpAddr, at: Instant) -> Decision {
    let mut last = Decision::Allow {
        remaining: 0,
        reset_after: s(0),
    };
    for _ in 0..11 {
        last = l.check_request(a, at);
    }
    last
}

#[inline(never)]
fn request_window_slides(l: &mut Limiter, e: Epoch) -> Result<(), Failure> {
    let t = |secs| e.t(secs);
    reset(l, config())?;
    let a = ip(1);
    for i in 0..10u32 {
        let d = l.check_request(a, t(u64::from(i)));
        ensure!(
            d == Decision::Allow {
                remaining: 9 - i,
                reset_after: s(60 - u64::from(i)),
            },
            "the first 10 requests are allowed, counting down"
        );
    }
    ensure!(
        l.check_request(a, t(10))
            == Decision::Deny {
                reason: Reason::RateLimited,
                retry_after: s(50),
            },
        "the 11th is rate limited until the oldest leaves"
    );
    ensure!(
        l.check_request(a, t(60)).is_allowed(),
        "at t=60 the oldest left: one more"
    );
    ensure!(!l.check_request(a, t(60)).is_allowed(), "and only one");
    ensure!(
        l.check_request(ip(2), t(60)).is_allowed(),
        "another address is independent"
    );
    Ok(())
}

#[inline(never)]
fn three_violations_block_15_min(l: &mut Limiter, e: Epoch) -> Result<(), Failure> {
    let t = |secs| e.t(secs);
    reset(l, config())?;
    let a = ip(3);
    ensure!(
        violate(l, a, t(0)).reason() == Some(Reason::RateLimited),
        "a first violation only limits"
    );
    ensure!(
        violate(l, a, t(100)).reason() == Some(Reason::RateLimited),
        "a second violation only limits"
    );
    ensure!(
        violate(l, a, t(200))
            == Decision::Deny {
                reason: Reason::Blocked,
                retry_after: s(15 * 60),
            },
        "the third violation window blocks for 15 min"
    );
    ensure!(
        l.check_request(a, t(200 + 900)).is_allowed(),
        "the block ends after 15 min"
    );
    Ok(())
}

/// Ten violations inside the (clamped) ban lookback ban until lifted:
/// one-minute blocks, a violation every 5 minutes.
#[inline(never)]
fn ten_violations_ban_until_lifted(l: &mut Limiter, e: Epoch) -> Result<(), Failure> {
    let t = |secs| e.t(secs);
    let mut c = config();
    c.blocks.block_for = s(60);
    c.blocks.max_block = s(60);
    reset(l, c)?;
    let b = ip(4);
    let mut last = None;
    for k in 1..=10u64 {
        last = violate(l, b, t(k * 300)).reason();
    }
    ensure!(last == Some(Reason::Banned), "the tenth violation bans");
    ensure!(
        l.check_request(b, t(3000 + 10 * 24 * 3600))
            == Decision::Deny {
                reason: Reason::Banned,
                retry_after: Duration::MAX,
            },
        "a ban has no end"
    );
    ensure!(l.unban(b), "unban finds the ban");
    ensure!(
        l.check_request(b, t(3000 + 10 * 24 * 3600)).is_allowed(),
        "unbanned, allowed"
    );
    Ok(())
}

#[inline(never)]
fn login_lockout_pair_and_ip(l: &mut Limiter, e: Epoch) -> Result<(), Failure> {
    let t = |secs| e.t(secs);
    reset(l, config())?;
    let a = ip(5);
    for i in 0..8 {
        ensure!(
            l.check_login("alice", a, t(i)).is_allowed(),
            "attempts before the 8th failure are allowed"
        );
        fail(l, "alice", a, t(i));
    }
    ensure!(
        l.check_login("alice", a, t(7))
            == Decision::Deny {
                reason: Reason::PairLocked,
                retry_after: s(300),
            },
        "8 failures lock the (alice, address) pair for 5 min"
    );
    ensure!(
        l.check_login("bob", a, t(8))
            == Decision::Deny {
                reason: Reason::IpLocked,
                retry_after: s(299),
            },
        "and the address, for every username"
    );
    ensure!(
        l.check_login("alice", ip(6), t(8)).is_allowed(),
        "alice from another address is not locked"
    );
    ensure!(
        l.check_login("alice", a, t(7 + 300)).is_allowed(),
        "the lock ends after 5 min"
    );
    Ok(())
}

#[inline(never)]
fn penalty_backoff_doubles_to_cap(l: &mut Limiter, e: Epoch) -> Result<(), Failure> {
    let t = |secs| e.t(secs);
    reset(l, config())?;
    let mut got = [0u64; 7];
    for (i, d) in (0u64..).zip(got.iter_mut()) {
        *d = fail(l, "frank", ip(9), t(i)).as_secs();
    }
    ensure!(
        got == [1, 2, 4, 8, 16, 30, 30],
        "delays 1, 2, 4, 8, 16 s, then the 30 s cap"
    );
    Ok(())
}

#[inline(never)]
fn allow_and_deny_lists(l: &mut Limiter, e: Epoch) -> Result<(), Failure> {
    let t = |secs| e.t(secs);
    let mut c = config();
    let cidr = |s: &str| s.parse().map_err(|_| ());
    let listed = cidr("192.168.0.0/16")
        .and_then(|x| c.lists.allow.push(x).map_err(|_| ()))
        .and_then(|()| cidr("198.51.100.0/24"))
        .and_then(|x| c.lists.deny.push(x).map_err(|_| ()))
        .and_then(|()| cidr("198.51.100.7"))
        .and_then(|x| c.lists.allow.push(x).map_err(|_| ()));
    ensure!(listed.is_ok(), "the lists take the ranges");
    reset(l, c)?;
    for _ in 0..100 {
        ensure!(
            l.check_request(v4(192, 168, 3, 4), t(0)).is_allowed(),
            "the allowlist is never limited"
        );
    }
    ensure!(
        l.check_request(v4(198, 51, 100, 7), t(0))
            == Decision::Deny {
                reason: Reason::Denylisted,
                retry_after: Duration::MAX,
            },
        "the denylist wins over the allowlist"
    );
    ensure!(
        l.check_login("x", v4(198, 51, 100, 1), t(0)).reason() == Some(Reason::Denylisted),
        "logins from the denylist are refused"
    );
    let lo = v4(127, 0, 0, 1);
    for _ in 0..10 {
        ensure!(l.check_request(lo, t(0)).is_allowed(), "loopback counts");
    }
    ensure!(
        l.check_request(lo, t(0)).reason() == Some(Reason::RateLimited),
        "loopback is not exempt"
    );
    Ok(())
}

/// Blocks, a ban and login failures exported at `t(400)`; the table
/// cleared and the records imported 100 s later by the wall clock: every
/// hold keeps its remaining time.
#[inline(never)]
fn export_import_round_trip(l: &mut Limiter, e: Epoch) -> Result<(), Failure> {
    let t = |secs| e.t(secs);
    reset(l, config())?;
    violate(l, ip(2), t(0));
    violate(l, ip(2), t(100));
    violate(l, ip(2), t(200)); // blocked until 200 + 900
    l.ban(ip(1), t(0));
    for i in 0..3 {
        fail(l, "ivan", ip(3), t(300 + i));
    }
    let clock = WallClock {
        now: t(400),
        unix_ms: 1_700_000_000_000,
    };
    let mut recs: [Record<16>; RECORDS] =
        core::array::from_fn(|_| Record::empty(Key::request(Addr::NONE)));
    let mut n = 0usize;
    let mut overflow = false;
    l.export(clock, |r| match recs.get_mut(n) {
        Some(place) => {
            *place = r.clone();
            n = n.saturating_add(1);
        }
        None => overflow = true,
    });
    ensure!(!overflow && n == l.len(), "one record per live key");
    let recs = recs.get(..n).unwrap_or(&[]);
    // A restart: nothing held, then the records, 100 s later.
    l.clear();
    let later = WallClock {
        now: t(500),
        unix_ms: 1_700_000_100_000,
    };
    ensure!(l.import(later, recs) == Ok(n), "every record imports");
    ensure!(
        l.check_request(ip(2), later.now)
            == Decision::Deny {
                reason: Reason::Blocked,
                retry_after: s(1100 - 500),
            },
        "the block keeps its remaining time by the wall clock"
    );
    ensure!(
        l.check_request(ip(1), later.now).reason() == Some(Reason::Banned),
        "the ban survives"
    );
    ensure!(
        matches!(
            l.check_login("ivan", ip(3), later.now),
            Decision::Allow { remaining: 5, .. }
        ),
        "the three failures still count"
    );
    Ok(())
}
