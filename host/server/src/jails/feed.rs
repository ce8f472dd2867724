//! A jail's lines into the login rules: each failure line is one attempt
//! reserved and settled as a failure through the engine (exactly what the
//! HTTP login settlement does, `crate::login`), so the (username, ip) and
//! ip lockout and the account throttle apply unchanged; a success line
//! settles as a success. A line from the future, a line seen a moment ago
//! (a re-read after a rotation) and a line without a valid address are
//! skipped; every line is counted by outcome in
//! `portcullis_jail_lines_total{jail, outcome}`.

use std::collections::{HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use portcullis::Engine;

use super::matcher::{classify, Event, Skip};
use crate::config::jails::JailConfig;
use crate::jail_series::{LINES, LOCKS};

/// How far ahead of the clock a line's stamp may be (clock skew).
pub const FUTURE_SLACK_MS: u64 = 60_000;

/// Stamped lines remembered to spot duplicates.
const RECENT: usize = 4096;

/// What became of a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A failed attempt, counted.
    Failure,
    /// A failure from an address or pair already locked: refused, as the
    /// HTTP path refuses it; nothing more is counted.
    Refused,
    /// A successful login, settled.
    Success,
    /// No pattern matched.
    Unmatched,
    /// An ignore pattern matched.
    Ignored,
    /// A matched line without a valid address.
    NoAddress,
    /// Stamped later than now (plus [`FUTURE_SLACK_MS`]).
    Future,
    /// The same stamped line was seen among the last few thousand.
    Duplicate,
}

impl Outcome {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Failure => "failure",
            Outcome::Refused => "refused",
            Outcome::Success => "success",
            Outcome::Unmatched => "unmatched",
            Outcome::Ignored => "ignored",
            Outcome::NoAddress => "no_address",
            Outcome::Future => "future",
            Outcome::Duplicate => "duplicate",
        }
    }
}

/// Feeds one jail's lines to the engine.
pub struct Feeder {
    jail: Arc<JailConfig>,
    engine: Arc<dyn Engine>,
    lock_for_ms: u64,
    recent: VecDeque<u64>,
    seen: HashSet<u64>,
}

fn hash_of(line: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    line.hash(&mut h);
    h.finish()
}

impl Feeder {
    /// A feeder of `jail`'s lines into `engine`, whose locks last
    /// `lock_for_ms` (for [`super::origins`]).
    pub fn new(jail: Arc<JailConfig>, engine: Arc<dyn Engine>, lock_for_ms: u64) -> Feeder {
        for o in [Outcome::Failure, Outcome::Refused, Outcome::Success] {
            metrics::counter!(LINES, "jail" => jail.name.clone(), "outcome" => o.as_str())
                .increment(0);
        }
        metrics::counter!(LOCKS, "jail" => jail.name.clone()).increment(0);
        Feeder {
            jail,
            engine,
            lock_for_ms,
            recent: VecDeque::with_capacity(RECENT),
            seen: HashSet::with_capacity(RECENT),
        }
    }

    /// Whether a stamped line was seen lately (and remember it).
    fn duplicate(&mut self, line: &str) -> bool {
        let h = hash_of(line);
        if !self.seen.insert(h) {
            return true;
        }
        if self.recent.len() >= RECENT {
            if let Some(old) = self.recent.pop_front() {
                self.seen.remove(&old);
            }
        }
        self.recent.push_back(h);
        false
    }

    /// Handle one line: `stamp` is its time (Unix ms) when it carries one
    /// (a journal entry always does), `now_ms` the clock.
    pub async fn line(&mut self, line: &str, stamp: Option<u64>, now_ms: u64) -> Outcome {
        let outcome = self.outcome(line, stamp, now_ms).await;
        metrics::counter!(LINES, "jail" => self.jail.name.clone(), "outcome" => outcome.as_str())
            .increment(1);
        outcome
    }

    async fn outcome(&mut self, line: &str, stamp: Option<u64>, now_ms: u64) -> Outcome {
        if stamp.is_some_and(|t| t > now_ms.saturating_add(FUTURE_SLACK_MS)) {
            return Outcome::Future;
        }
        let event = match classify(&self.jail, line) {
            Ok(e) => e,
            Err(Skip::Unmatched) => return Outcome::Unmatched,
            Err(Skip::Ignored) => return Outcome::Ignored,
            Err(Skip::NoAddress) => return Outcome::NoAddress,
        };
        if stamp.is_some() && self.duplicate(line) {
            return Outcome::Duplicate;
        }
        match event {
            Event::Failure { user, ip } => self.failure(&user, ip).await,
            Event::Success { user, ip } => {
                self.engine.login_succeeded(&user, ip).await;
                Outcome::Success
            }
        }
    }

    async fn failure(&self, user: &str, ip: std::net::IpAddr) -> Outcome {
        let attempt = match self.engine.begin_login(user, ip).await {
            Ok(a) => a,
            Err(d) => {
                tracing::debug!(jail = %self.jail.name, %ip, decision = ?d, "jail: failure from a locked address");
                return Outcome::Refused;
            }
        };
        // The attempt already happened: no penalty to serve, its slot goes.
        let locked = self.engine.finish_login(user, ip, attempt.id, false).await;
        drop(attempt.penalty);
        if locked {
            let until = portcullis::clock::unix_ms().saturating_add(self.lock_for_ms);
            super::origins::note(ip, &self.jail.name, until);
            metrics::counter!(LOCKS, "jail" => self.jail.name.clone()).increment(1);
            tracing::info!(jail = %self.jail.name, %ip, user, "jail: login failures locked the address");
        }
        Outcome::Failure
    }
}
