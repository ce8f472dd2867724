//! The line protocol and its guard.
//!
//! One command per line (`\n`, optional `\r`), at most [`MAX_LINE`] bytes,
//! ASCII keywords in any case:
//!
//! | request | replies |
//! | --- | --- |
//! | `PING` | `PONG` |
//! | `LOGIN <user> <password>` | `OK` · `FAIL retry_in_ms=<penalty served>` · `LOCKED retry_in_ms=<n>` · `BUSY retry_in_ms=<n>` |
//! | `QUIT` | `BYE`, then the connection closes |
//! | anything else | `ERR <what>`; the connection stays usable |
//!
//! Before any of that, every non-empty line is one request for the peer
//! address (`check_request`): over the window it gets
//! `LIMITED retry_in_ms=<n>`, during an escalated block
//! `BLOCKED retry_in_ms=<n>`, when banned `BANNED`.
//!
//! A failed `LOGIN` holds its reply for the penalty delay (250 ms doubling
//! per earlier failure, at most 4 s) inside one of the address's two
//! concurrency slots; with both slots busy the failure is answered `BUSY`
//! at once instead (the core's `NoSlot::Refuse`), so no address ties up
//! more than two sockets in penalty waits. The failure that reaches
//! `max_failures` is answered `LOCKED` (after its delay).
//!
//! Demo account: `admin` / `portcullis` (hard-coded; a real device would
//! keep a salted hash in flash).

use core::fmt::Write as _;
use core::net::IpAddr;

use embassy_time::Timer;
use portcullis_core::{Duration, Instant};
use portcullis_core::{Decision, Reason};

use crate::SharedLimiter;

/// Longest accepted line, without the newline.
pub const MAX_LINE: usize = 96;

const DEMO_USER: &str = "admin";
const DEMO_PASSWORD: &[u8] = b"portcullis";

/// A parsed line. Borrowed from the [`LineBuf`].
pub enum Line<'a> {
    /// Blank line: ignored.
    Empty,
    /// `PING`.
    Ping,
    /// `QUIT`.
    Quit,
    /// `LOGIN user password`.
    Login {
        /// User name as sent.
        user: &'a str,
        /// Password as sent (never logged).
        password: &'a str,
    },
    /// Anything that is not a command; the reason for `ERR`.
    Bad(&'static str),
}

impl defmt::Format for Line<'_> {
    fn format(&self, f: defmt::Formatter) {
        match self {
            Line::Empty => defmt::write!(f, "(empty)"),
            Line::Ping => defmt::write!(f, "PING"),
            Line::Quit => defmt::write!(f, "QUIT"),
            Line::Login { user, .. } => defmt::write!(f, "LOGIN {=str} ***", user),
            Line::Bad(why) => defmt::write!(f, "bad line ({=str})", why),
        }
    }
}

/// Accumulates bytes into lines; an overlong line is discarded up to its
/// newline and reported once as [`Line::Bad`].
pub struct LineBuf {
    buf: heapless::Vec<u8, MAX_LINE>,
    overflow: bool,
    complete: bool,
}

impl LineBuf {
    /// Empty.
    pub const fn new() -> Self {
        LineBuf {
            buf: heapless::Vec::new(),
            overflow: false,
            complete: false,
        }
    }

    /// Feed one byte; a parsed line when it was a `\n`.
    pub fn push(&mut self, b: u8) -> Option<Line<'_>> {
        if self.complete {
            self.buf.clear();
            self.overflow = false;
            self.complete = false;
        }
        if b != b'\n' {
            if self.buf.push(b).is_err() {
                self.overflow = true;
            }
            return None;
        }
        self.complete = true;
        if self.overflow {
            return Some(Line::Bad("line too long"));
        }
        let raw = match self.buf.as_slice() {
            [rest @ .., b'\r'] => rest,
            all => all,
        };
        Some(parse(raw))
    }
}

fn parse(raw: &[u8]) -> Line<'_> {
    let Ok(text) = core::str::from_utf8(raw) else {
        return Line::Bad("not utf-8");
    };
    let mut words = text.split_ascii_whitespace();
    let Some(cmd) = words.next() else {
        return Line::Empty;
    };
    let rest = (words.next(), words.next(), words.next());
    if cmd.eq_ignore_ascii_case("PING") {
        match rest {
            (None, _, _) => Line::Ping,
            _ => Line::Bad("usage: PING"),
        }
    } else if cmd.eq_ignore_ascii_case("QUIT") {
        Line::Quit
    } else if cmd.eq_ignore_ascii_case("LOGIN") {
        match rest {
            (Some(user), Some(password), None) => Line::Login { user, password },
            _ => Line::Bad("usage: LOGIN <user> <password>"),
        }
    } else {
        Line::Bad("unknown command")
    }
}

/// What the service answers.
#[derive(defmt::Format)]
pub enum Reply {
    /// Nothing (blank line).
    Nothing,
    /// `PONG`.
    Pong,
    /// `BYE`.
    Bye,
    /// `OK`.
    Ok,
    /// `FAIL retry_in_ms=<penalty served>`.
    Fail(u64),
    /// `LOCKED retry_in_ms=<n>`.
    Locked(u64),
    /// `LIMITED retry_in_ms=<n>`.
    Limited(u64),
    /// `BLOCKED retry_in_ms=<n>`.
    Blocked(u64),
    /// `BANNED`.
    Banned,
    /// `BUSY retry_in_ms=<n>`: no slot or no table room.
    Busy(u64),
    /// `ERR <what>`.
    Err(&'static str),
}

/// The core's now: embassy-time's clock, converted tick for tick (the
/// core's `embassy` feature).
fn now() -> Instant {
    embassy_time::Instant::now().into()
}

fn ms(d: Duration) -> u64 {
    d.as_millis()
}

impl Reply {
    /// The reply for a denial from the core.
    pub fn denied(d: &Decision) -> Reply {
        let Decision::Deny {
            reason,
            retry_after,
        } = *d
        else {
            return Reply::Err("internal: not a denial");
        };
        let retry = ms(retry_after);
        match reason {
            Reason::RateLimited => Reply::Limited(retry),
            Reason::Blocked => Reply::Blocked(retry),
            Reason::Banned | Reason::Denylisted => Reply::Banned,
            Reason::PairLocked | Reason::IpLocked => Reply::Locked(retry),
            _ => Reply::Busy(retry),
        }
    }

    /// The wire form, newline included (empty for [`Reply::Nothing`]).
    pub fn render(&self, out: &mut heapless::String<64>) {
        out.clear();
        let _ = match self {
            Reply::Nothing => Ok(()),
            Reply::Pong => out.write_str("PONG\n"),
            Reply::Bye => out.write_str("BYE\n"),
            Reply::Ok => out.write_str("OK\n"),
            Reply::Fail(n) => write!(out, "FAIL retry_in_ms={n}\n"),
            Reply::Locked(n) => write!(out, "LOCKED retry_in_ms={n}\n"),
            Reply::Limited(n) => write!(out, "LIMITED retry_in_ms={n}\n"),
            Reply::Blocked(n) => write!(out, "BLOCKED retry_in_ms={n}\n"),
            Reply::Banned => out.write_str("BANNED\n"),
            Reply::Busy(n) => write!(out, "BUSY retry_in_ms={n}\n"),
            Reply::Err(what) => write!(out, "ERR {what}\n"),
        };
    }
}

/// Compare without an early exit on the first differing byte.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for (i, x) in a.iter().enumerate() {
        diff |= x ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

/// Answer one line from `peer`, consulting and updating the limiter.
pub async fn handle(line: Line<'_>, peer: IpAddr, limiter: &SharedLimiter) -> Reply {
    if let Line::Empty = line {
        return Reply::Nothing;
    }
    // Every line is one request for the address.
    let Ok(d) = limiter.with(|l| l.check_request(peer, now())) else {
        return Reply::Busy(0);
    };
    if !d.is_allowed() {
        return Reply::denied(&d);
    }
    match line {
        Line::Empty => Reply::Nothing,
        Line::Ping => Reply::Pong,
        Line::Quit => Reply::Bye,
        Line::Bad(why) => Reply::Err(why),
        Line::Login { user, password } => login(user, password, peer, limiter).await,
    }
}

async fn login(user: &str, password: &str, peer: IpAddr, limiter: &SharedLimiter) -> Reply {
    // The attempt is reserved (counted as a failure) before the password is
    // compared, and settled after: the same rule as the host's.
    let Ok(begun) = limiter.with(|l| l.begin_login(user, peer, now())) else {
        return Reply::Busy(0);
    };
    let attempt = match begun {
        Ok(a) => a,
        Err(d) => return Reply::denied(&d),
    };
    let good =
        user.trim().eq_ignore_ascii_case(DEMO_USER) & ct_eq(password.as_bytes(), DEMO_PASSWORD);
    let (id, mut penalty) = (attempt.id, attempt.penalty);
    if good {
        let _ = limiter.with(|l| {
            l.login_attempt_succeeded(user, peer, id, now());
            if let Some(slot) = penalty.slot.take() {
                l.release_slot(slot);
            }
        });
        return Reply::Ok;
    }
    penalty.locked = limiter
        .with(|l| l.login_attempt_failed(user, peer, id, now()))
        .unwrap_or(false);
    let base = limiter
        .with(|l| l.config().penalty.base)
        .unwrap_or(Duration::from_secs(1));
    if penalty.refused {
        defmt::info!("login failure refused: no free slot");
        return Reply::Busy(ms(base));
    }
    // Hold the reply for the penalty, inside the slot.
    Timer::after(penalty.delay.into()).await;
    if let Some(slot) = penalty.slot {
        let _ = limiter.with(|l| l.release_slot(slot));
    }
    if penalty.locked {
        let now = now();
        if let Ok(d @ Decision::Deny { .. }) = limiter.with(|l| l.check_login(user, peer, now)) {
            return Reply::denied(&d);
        }
    }
    Reply::Fail(ms(penalty.delay))
}
