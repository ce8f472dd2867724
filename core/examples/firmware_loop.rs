//! A [`FixedLimiter`] driven the way firmware drives it: one table, built
//! once, no allocator, a main loop that reads a clock and hands every call
//! its `now`. Here the clock is simulated (100 ms per turn of the loop), so
//! the example runs on the host in an instant; on a board `now` is
//! `embassy_time::Instant::now().into()` with the core's `embassy` feature
//! (see `firmware-example/`).
//!
//! Three peers talk to the device: a flooder sending three lines per turn
//! (rate limited, then blocked, rule 1–2), a guesser trying passwords as
//! fast as its penalty delays let it (rules 5–7: delay, slot, lock), and
//! the owner logging in once with the right password. Everything the loop
//! touches is `core` only; `std` is used for `main` and `println!`.
//!
//! ```sh
//! cargo run -p portcullis-core --example firmware_loop
//! ```

use core::net::{IpAddr, Ipv4Addr};

use portcullis_core::{Config, ConfigError, Decision, FixedLimiter, Reason, Seed, SlotToken};
use portcullis_core::{Duration, Instant};

/// 32 table slots (28 live keys), 16 timestamps per key: about 16 KB.
type Limiter = FixedLimiter<32, 16>;

const FLOODER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 2, 7));
const GUESSER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 2, 8));
const OWNER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 2, 9));
const PASSWORD: &str = "correct horse";

/// Small numbers, so the scenario plays out in two simulated minutes.
fn config() -> Config {
    let mut c = Config::default();
    c.requests.max_requests = 10;
    c.requests.window = Duration::from_secs(5);
    c.blocks.block_for = Duration::from_secs(30);
    c.login.max_failures = 5;
    c.login.ip_max_failures = Some(5);
    c.login.account_max_failures = Some(16); // every log fits W = 16
    c.penalty.base = Duration::from_millis(250);
    c.penalty.max = Duration::from_secs(2);
    // On a host (1 MHz ticks) a fixed table's lookbacks stop at 71.6 min;
    // at a firmware's 1 kHz the defaults fit as they are.
    c.clamp_lookbacks(portcullis_core::FIXED_MAX_SPAN);
    c
}

/// The clock the loop advances itself.
struct SimClock(Instant);

impl SimClock {
    fn now(&self) -> Instant {
        self.0
    }
    fn tick(&mut self, d: Duration) {
        self.0 = self.0.checked_add(d).unwrap_or(Instant::MAX);
    }
}

/// What the device answered, counted (no allocation: plain fields).
#[derive(Default, Debug)]
struct Tally {
    allowed: u32,
    rate_limited: u32,
    blocked: u32,
    wrong_password: u32,
    locked_out: u32,
    owner_in: bool,
}

/// Counters saturate: the core's lints forbid overflowing arithmetic here
/// too, as on firmware.
fn bump(n: &mut u32) {
    *n = n.saturating_add(1);
}

/// A penalty being served: the reply is held until `until`, in `slot`.
struct Held {
    until: Instant,
    slot: Option<SlotToken>,
}

/// One login: reserve the attempt, compare, settle (rule 5's race-free
/// order). A wrong password holds the reply for the penalty delay.
fn login(
    l: &mut Limiter,
    user: &str,
    pw: &str,
    ip: IpAddr,
    now: Instant,
    t: &mut Tally,
) -> Option<Held> {
    let attempt = match l.begin_login(user, ip, now) {
        Ok(a) => a,
        Err(Decision::Deny {
            reason: Reason::PairLocked | Reason::IpLocked,
            ..
        }) => {
            bump(&mut t.locked_out);
            return None;
        }
        Err(_) => return None,
    };
    if pw == PASSWORD {
        l.login_attempt_succeeded(user, ip, attempt.id, now);
        if let Some(slot) = attempt.penalty.slot {
            l.release_slot(slot);
        }
        t.owner_in = true;
        return None;
    }
    l.login_attempt_failed(user, ip, attempt.id, now);
    bump(&mut t.wrong_password);
    Some(Held {
        until: now
            .checked_add(attempt.penalty.delay)
            .unwrap_or(Instant::MAX),
        slot: attempt.penalty.slot,
    })
}

fn run(limiter: &mut Limiter, clock: &mut SimClock, turns: u32) -> Tally {
    let mut t = Tally::default();
    let mut guesser: Option<Held> = None;
    for turn in 0..turns {
        let now = clock.now();
        // Serve penalties: the reply goes out and the slot comes back.
        if guesser.as_ref().is_some_and(|h| h.until <= now) {
            if let Some(slot) = guesser.take().and_then(|h| h.slot) {
                limiter.release_slot(slot);
            }
        }
        // The flooder: three lines a turn, each one request (rules 1–4).
        for _ in 0..3 {
            match limiter.check_request(FLOODER, now) {
                Decision::Allow { .. } => bump(&mut t.allowed),
                Decision::Deny {
                    reason: Reason::RateLimited,
                    ..
                } => bump(&mut t.rate_limited),
                Decision::Deny {
                    reason: Reason::Blocked,
                    ..
                } => bump(&mut t.blocked),
                Decision::Deny { .. } => {}
            }
        }
        // The guesser: a new guess as soon as the last reply came back.
        if guesser.is_none() {
            guesser = login(limiter, "owner", "hunter2", GUESSER, now, &mut t);
        }
        // The owner, from their own address, after a minute.
        if turn == 600 {
            let held = login(limiter, "owner", PASSWORD, OWNER, now, &mut t);
            assert!(held.is_none());
        }
        // Housekeeping every 30 s: drop entries that no longer matter.
        if turn % 300 == 0 {
            limiter.purge(now);
        }
        clock.tick(Duration::from_millis(100));
    }
    t
}

fn main() -> Result<(), ConfigError> {
    // Firmware keeps this in a `static` (`StaticCell`); the seed comes from
    // the board's RNG so usernames hash unpredictably.
    let mut limiter: Limiter = FixedLimiter::new(config(), Seed::new([7; 16]))?;
    let mut clock = SimClock(Instant::from_secs(1));
    let t = run(&mut limiter, &mut clock, 1200);
    println!("{t:?}");
    println!("{:?}", limiter.stats());
    // The flooder got its quota, was limited, then blocked.
    assert!(t.allowed >= 10 && t.rate_limited > 0 && t.blocked > 0);
    // The guesser got five wrong guesses, then the pair and its ip were
    // locked for the rest of the run (five minutes).
    assert_eq!(t.wrong_password, 5);
    assert!(t.locked_out > 0);
    // The owner, elsewhere, was not locked out by the guesser.
    assert!(t.owner_in);
    Ok(())
}
