//! Rules 5, 6 and 8: login lockout, penalty back-off and the account
//! throttle across addresses.
//!
//! Failures are counted per (username, ip) and per ip; `max_failures`
//! within `failure_window` lock the pair for `lock_for`, and
//! `ip_max_failures` the ip (a lock starts a fresh count); a pair lock
//! also locks the ip while `lock_ip_on_account_lock` holds. With
//! `ip_max_failures = None` and `lock_ip_on_account_lock = false` the
//! lockout is pair-only: one user's guesses never lock the address for
//! the others behind it. Both must be unlocked for a login to proceed
//! (denied as [`Reason::PairLocked`] or [`Reason::IpLocked`]). Success clears the (username, ip)
//! record and keeps the ip's. Failures per username across all addresses
//! switch on the full penalty (`penalty.max`) once `account_max_failures`
//! lie within `account_window`: a soft throttle that cannot lock the real
//! user out.
//!
//! ```
//! use core::net::{IpAddr, Ipv4Addr};
//! use portcullis_core::Instant;
//! use portcullis_core::{Config, Decision, FixedLimiter, Reason, Seed, FIXED_MAX_SPAN};
//!
//! let mut config = Config::default();
//! config.clamp_lookbacks(FIXED_MAX_SPAN); // 1 MHz host ticks: see `FIXED_MAX_SPAN`
//! let mut lim: FixedLimiter<64, 50> = FixedLimiter::new(config, Seed::new([7; 16])).unwrap();
//! let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
//! let now = Instant::from_secs(1000);
//! for _ in 0..10 {
//!     assert!(lim.check_login("Alice", ip, now).is_allowed());
//!     let penalty = lim.login_failed("Alice", ip, now);
//!     if let Some(slot) = penalty.slot { lim.release_slot(slot); }
//! }
//! // "alice " is the same account after normalisation, and it is locked.
//! assert_eq!(lim.check_login("alice ", ip, now).reason(), Some(Reason::PairLocked));
//! ```

use crate::{Duration, Instant};
use core::net::IpAddr;

use crate::config::NoSlot;
use crate::decision::{Decision, Penalty, Reason};
use crate::entry::{EntryMut, EntryRef};
use crate::key::Key;
use crate::limiter::Limiter;
use crate::lists::Listed;
use crate::penalty::delay;
use crate::store::Store;
use crate::time::{left_in_window, running, until, OptTick, Tick};
use crate::window::{Events, EventsMut};

/// A login attempt reserved by [`Limiter::begin_login`]: already counted as
/// a failure; settle it once the password is checked.
///
/// The one attempt type of every layer: `I` names the reservation to the
/// limiter that made it (the core's [`AttemptId`] by default; a host that
/// spreads a login over several tables or a fleet store has its own) and
/// `S` is the penalty's slot (see [`Penalty`]).
#[derive(Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Attempt<I = AttemptId, S = crate::SlotToken> {
    /// Names the reservation when it is settled.
    pub id: I,
    /// What a wrong password costs: the delay to hold the response, in a
    /// slot taken now (release it whatever the outcome).
    pub penalty: Penalty<S>,
}

/// Which reserved attempt to settle: the instant its failure was counted
/// at (opaque; only meaningful to the limiter that made it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct AttemptId {
    at: Tick,
    counted: bool,
}

impl AttemptId {
    /// An attempt nothing was counted for (allowlisted address).
    pub const NOT_COUNTED: AttemptId = AttemptId {
        at: 0,
        counted: false,
    };

    /// The tick its failure was counted at (`None`: not counted), for a
    /// host that carries the id in a form of its own.
    pub const fn ticks(self) -> Option<u64> {
        if self.counted {
            Some(self.at)
        } else {
            None
        }
    }

    /// The id [`ticks`](Self::ticks) came from.
    pub const fn from_ticks(ticks: Option<u64>) -> AttemptId {
        match ticks {
            Some(at) => AttemptId { at, counted: true },
            None => AttemptId::NOT_COUNTED,
        }
    }
}

impl<S: Store<W>, const W: usize> Limiter<S, W> {
    /// Whether a login for `username` from `ip` may proceed (rules 5 and 9).
    /// Records nothing; call [`login_failed`](Self::login_failed) or
    /// [`login_succeeded`](Self::login_succeeded) with the outcome.
    /// `remaining` is the failures left before a lock.
    pub fn check_login(&mut self, username: &str, ip: IpAddr, now: Instant) -> Decision {
        let now = self.clock(now);
        self.login_state(username, ip, now)
    }

    /// [`check_login`](Self::check_login) without advancing the clock.
    pub fn peek_login(&self, username: &str, ip: IpAddr, now: Instant) -> Decision {
        self.login_state(username, ip, self.peek_clock(now))
    }

    fn login_state(&self, username: &str, ip: IpAddr, now: Tick) -> Decision {
        let max = self.config.login.max_failures;
        if let Some(d) = self.config.lists.lookup(ip).decision(max) {
            return d;
        }
        let addr = self.addr(ip);
        let user = self
            .head
            .store
            .get(&Key::login_user(self.users.hash(username), addr));
        let ipe = self.head.store.get(&Key::login_ip(addr));
        let lock_left = |e: Option<S::Ref<'_>>| match e.and_then(|e| e.cold().lock_until().get()) {
            Some(u) if running(u, now) => Some(until(now, u)),
            _ => None,
        };
        match (lock_left(user), lock_left(ipe)) {
            (Some(u), i) => {
                return Decision::Deny {
                    reason: Reason::PairLocked,
                    retry_after: u.max(i.unwrap_or(Duration::from_ticks(0))),
                }
            }
            (None, Some(i)) => {
                return Decision::Deny {
                    reason: Reason::IpLocked,
                    retry_after: i,
                }
            }
            (None, None) => {}
        }
        let window = self.config.login.failure_window.as_ticks();
        let count = |e: Option<S::Ref<'_>>| e.map_or(0, |e| e.log().count(now, window));
        let (fu, fi) = (count(user), count(ipe));
        // Attempts reserved by `begin_login` and not yet settled count as
        // failures: with `max_failures` of them in flight the next one waits
        // (a lock clears the log, so settled failures never reach this).
        let ip_max = self.config.login.ip_max_failures.unwrap_or(u32::MAX);
        let full = |e: Option<S::Ref<'_>>, n: u32, max: u32| {
            (n >= max).then(|| {
                e.and_then(|e| e.log().oldest_in(now, window))
                    .map_or(Duration::from_ticks(0), |t| left_in_window(now, t, window))
            })
        };
        if let Some(retry_after) = full(user, fu, max) {
            return Decision::Deny {
                reason: Reason::PairLocked,
                retry_after,
            };
        }
        if let Some(retry_after) = full(ipe, fi, ip_max) {
            return Decision::Deny {
                reason: Reason::IpLocked,
                retry_after,
            };
        }
        // The key nearer its lock limits (the pair on a tie; never an ip
        // that does not lock).
        let (ru, ri) = (max.saturating_sub(fu), ip_max.saturating_sub(fi));
        let limiting = if ru <= ri { user } else { ipe };
        let reset_after = limiting
            .and_then(|e| e.log().oldest_in(now, window))
            .map_or(Duration::from_ticks(0), |t| left_in_window(now, t, window));
        Decision::Allow {
            remaining: ru.min(ri),
            reset_after,
        }
    }

    /// Rules 6 and 7 for a login refused by a lock that the caller answers
    /// exactly like a wrong password (a hidden lock, `reveal_lock = false`):
    /// the delay a failure of a pair that has just reached `max_failures`
    /// gets, `min(base × multiplier^max_failures, max)`, run in a slot of
    /// `ip`'s login key like any failure's (no slot: capped to `base` or
    /// refused, as `slots.when_full` says). Records no failure.
    pub fn hidden_lock_penalty(&mut self, ip: IpAddr, now: Instant) -> Penalty {
        let now = self.clock(now);
        let ip_key = Key::login_ip(self.addr(ip));
        let k = self.config.login.max_failures;
        self.penalty(k, false, ip_key, now)
    }

    /// Record a failed login and return the penalty to serve (rules 5–8).
    pub fn login_failed(&mut self, username: &str, ip: IpAddr, now: Instant) -> Penalty {
        self.failure(username, ip, now, None)
    }

    /// Rule 8 alone: count a failure against `username` from any address
    /// and say whether its throttle is on. For hosts that keep account keys
    /// apart from address keys (sharded tables, Redis slots); pair it with
    /// [`login_failed_pair`](Self::login_failed_pair).
    /// Nothing is counted for an allow- or denylisted `ip`, as in
    /// [`login_failed`](Self::login_failed).
    pub fn record_account_failure(&mut self, username: &str, ip: IpAddr, now: Instant) -> bool {
        let now = self.clock(now);
        if self.config.lists.lookup(ip) != Listed::Neither {
            return false;
        }
        let user = self.users.hash(username);
        self.account_failure(user, now)
    }

    /// Rules 5–7 for a failure whose account part (rule 8) was counted
    /// elsewhere by [`record_account_failure`](Self::record_account_failure),
    /// which answered `throttled`.
    pub fn login_failed_pair(
        &mut self,
        username: &str,
        ip: IpAddr,
        now: Instant,
        throttled: bool,
    ) -> Penalty {
        self.failure(username, ip, now, Some(throttled))
    }

    fn account_failure(&mut self, user: u64, now: Tick) -> bool {
        let login = &self.config.login;
        let Some(m) = login.account_max_failures else {
            return false;
        };
        let acct = login.account_window.as_ticks();
        let mut throttled = false;
        if let Some(mut e) = self.upsert(Key::account(user), now) {
            e.log_mut().prune(now, acct);
            throttled = e.log_mut().count(now, acct) >= m;
            e.log_mut().push(now);
            e.log_mut()
                .truncate_front(usize::try_from(m).unwrap_or(usize::MAX));
        }
        throttled
    }

    fn failure(
        &mut self,
        username: &str,
        ip: IpAddr,
        now: Instant,
        account: Option<bool>,
    ) -> Penalty {
        let now = self.clock(now);
        if self.config.lists.lookup(ip) != Listed::Neither {
            return Penalty::NONE;
        }
        let login = self.config.login.clone();
        let window = login.failure_window.as_ticks();
        let lock_until = now.saturating_add(login.lock_for.as_ticks());
        let user = self.users.hash(username);
        let addr = self.addr(ip);

        let mut k = 0;
        let mut user_locked = false;
        let user_key = Key::login_user(user, addr);
        if let Some(mut e) = self.upsert(user_key, now) {
            e.log_mut().prune(now, window);
            k = e.log_mut().count(now, window);
            e.log_mut().push(now);
            if k.saturating_add(1) >= login.max_failures {
                e.cold_make().login_mut().lock_until = OptTick::some(lock_until);
                e.log_mut().clear();
                user_locked = true;
            }
        }
        let ip_key = Key::login_ip(addr);
        let mut ip_locked = false;
        if let Some(mut e) = self.upsert(ip_key, now) {
            e.log_mut().prune(now, window);
            let before = e.log_mut().count(now, window);
            e.log_mut().push(now);
            if login
                .ip_max_failures
                .is_some_and(|m| before.saturating_add(1) >= m)
                || (user_locked && login.lock_ip_on_account_lock)
            {
                e.cold_make().login_mut().lock_until = OptTick::some(lock_until);
                e.log_mut().clear();
                ip_locked = true;
            }
        }
        let locked = self.locks_changed(user_key, user_locked, ip_key, ip_locked);
        let throttled = match account {
            Some(t) => t,
            None => self.account_failure(user, now),
        };
        Penalty {
            locked,
            ..self.penalty(k, throttled, ip_key, now)
        }
    }

    /// Reserve a login attempt before its password is checked (rule 5, the
    /// race-free way): the attempt is counted as a failure of the
    /// (username, ip) pair, the ip and the account at once, so `N` parallel
    /// guesses get at most `max_failures` password checks. `Err` is the
    /// denial (locked, listed, or `max_failures` attempts already in
    /// flight); nothing is recorded then. Settle an `Ok` attempt with
    /// [`login_attempt_failed`](Self::login_attempt_failed) or
    /// [`login_attempt_succeeded`](Self::login_attempt_succeeded); one never
    /// settled stays a failure (fail-closed). Release the penalty's slot
    /// either way.
    pub fn begin_login(
        &mut self,
        username: &str,
        ip: IpAddr,
        now: Instant,
    ) -> Result<Attempt, Decision> {
        self.begin(username, ip, now, None)
    }

    /// [`begin_login`](Self::begin_login) for hosts that keep account keys
    /// apart (sharded tables, Redis): the account part was reserved by
    /// [`reserve_account`](Self::reserve_account), which answered
    /// `throttled`. If this refuses, hand that reservation back with
    /// [`cancel_account`](Self::cancel_account).
    pub fn begin_login_pair(
        &mut self,
        username: &str,
        ip: IpAddr,
        now: Instant,
        throttled: bool,
    ) -> Result<Attempt, Decision> {
        self.begin(username, ip, now, Some(throttled))
    }

    /// Rule 8 for a reserved attempt: count it against `username` from any
    /// address and say whether the throttle is on; the id undoes it with
    /// [`cancel_account`](Self::cancel_account) if the attempt is refused
    /// or succeeds.
    pub fn reserve_account(
        &mut self,
        username: &str,
        ip: IpAddr,
        now: Instant,
    ) -> (bool, AttemptId) {
        let now = self.clock(now);
        if self.config.lists.lookup(ip) != Listed::Neither {
            return (false, AttemptId::NOT_COUNTED);
        }
        let user = self.users.hash(username);
        let counted = self.config.login.account_max_failures.is_some();
        (
            self.account_failure(user, now),
            AttemptId { at: now, counted },
        )
    }

    /// Take back the account failure [`reserve_account`](Self::reserve_account)
    /// counted.
    pub fn cancel_account(&mut self, username: &str, id: AttemptId) -> bool {
        if !id.counted {
            return false;
        }
        let key = Key::account(self.users.hash(username));
        self.head
            .store
            .get_mut(&key)
            .is_some_and(|mut e| e.log_mut().remove_one(id.at))
    }

    fn begin(
        &mut self,
        username: &str,
        ip: IpAddr,
        now: Instant,
        account: Option<bool>,
    ) -> Result<Attempt, Decision> {
        let now = self.clock(now);
        let d = self.login_state(username, ip, now);
        if !d.is_allowed() {
            return Err(d);
        }
        if self.config.lists.lookup(ip) != Listed::Neither {
            return Ok(Attempt {
                id: AttemptId::NOT_COUNTED,
                penalty: Penalty::NONE,
            });
        }
        let window = self.config.login.failure_window.as_ticks();
        let user = self.users.hash(username);
        let addr = self.addr(ip);
        let mut k = 0;
        if let Some(mut e) = self.upsert(Key::login_user(user, addr), now) {
            e.log_mut().prune(now, window);
            k = e.log_mut().count(now, window);
            e.log_mut().push(now);
        }
        let ip_key = Key::login_ip(addr);
        if let Some(mut e) = self.upsert(ip_key, now) {
            e.log_mut().prune(now, window);
            e.log_mut().push(now);
        }
        let throttled = match account {
            Some(t) => t,
            None => self.account_failure(user, now),
        };
        let penalty = self.penalty(k, throttled, ip_key, now);
        Ok(Attempt {
            id: AttemptId {
                at: now,
                counted: true,
            },
            penalty,
        })
    }

    /// The reserved attempt `id` had a wrong password: lock the pair if
    /// its count (this attempt included) reached `max_failures`, the ip if
    /// its count reached `ip_max_failures` or the pair lock locks it. True
    /// if that locked anything.
    pub fn login_attempt_failed(
        &mut self,
        username: &str,
        ip: IpAddr,
        id: AttemptId,
        now: Instant,
    ) -> bool {
        let now = self.clock(now);
        if !id.counted || self.config.lists.lookup(ip) != Listed::Neither {
            return false;
        }
        let login = self.config.login.clone();
        let window = login.failure_window.as_ticks();
        let lock_until = now.saturating_add(login.lock_for.as_ticks());
        let addr = self.addr(ip);
        let key = Key::login_user(self.users.hash(username), addr);
        let mut user_locked = false;
        if let Some(mut e) = self.head.store.get_mut(&key) {
            if e.log_mut().count(now, window) >= login.max_failures {
                e.cold_make().login_mut().lock_until = OptTick::some(lock_until);
                e.log_mut().clear();
                user_locked = true;
            }
        }
        let ip_key = Key::login_ip(addr);
        let mut ip_locked = false;
        if let Some(mut e) = self.head.store.get_mut(&ip_key) {
            if login
                .ip_max_failures
                .is_some_and(|m| e.log_mut().count(now, window) >= m)
                || (user_locked && login.lock_ip_on_account_lock)
            {
                e.cold_make().login_mut().lock_until = OptTick::some(lock_until);
                e.log_mut().clear();
                ip_locked = true;
            }
        }
        self.locks_changed(key, user_locked, ip_key, ip_locked)
    }

    /// Note the pair and ip locks just set; true if either was.
    fn locks_changed(&mut self, pair: Key, pair_locked: bool, ip: Key, ip_locked: bool) -> bool {
        if pair_locked {
            self.pinned_changed(pair);
        }
        if ip_locked {
            self.pinned_changed(ip);
        }
        pair_locked || ip_locked
    }

    /// The reserved attempt `id` had the right password: the (username, ip)
    /// record is cleared (as [`login_succeeded`](Self::login_succeeded)),
    /// and the failure reserved on the ip and the account is taken back.
    /// True if a pair record was cleared.
    pub fn login_attempt_succeeded(
        &mut self,
        username: &str,
        ip: IpAddr,
        id: AttemptId,
        now: Instant,
    ) -> bool {
        let cleared = self.login_attempt_succeeded_pair(username, ip, id, now);
        self.cancel_account(username, id);
        cleared
    }

    /// [`login_attempt_succeeded`](Self::login_attempt_succeeded) without
    /// the account part (take that back with
    /// [`cancel_account`](Self::cancel_account) where the account lives).
    pub fn login_attempt_succeeded_pair(
        &mut self,
        username: &str,
        ip: IpAddr,
        id: AttemptId,
        now: Instant,
    ) -> bool {
        let cleared = self.login_succeeded(username, ip, now);
        if id.counted {
            let key = Key::login_ip(self.addr(ip));
            if let Some(mut e) = self.head.store.get_mut(&key) {
                e.log_mut().remove_one(id.at);
            }
        }
        cleared
    }

    /// Rules 6 and 7: the delay for a failure with `k` earlier ones of its
    /// pair in the window, run in a slot of `ip_key`.
    fn penalty(&mut self, k: u32, throttled: bool, ip_key: Key, now: Tick) -> Penalty {
        let rules = &self.config.penalty;
        let mut d = if throttled {
            rules.max
        } else {
            delay(rules, k)
        };
        let (base, policy) = (rules.base, self.config.slots.when_full);
        let slot = self.acquire_slot_at(ip_key, now);
        let mut refused = false;
        if slot.is_none() {
            match policy {
                NoSlot::CapToBase => d = d.min(base),
                NoSlot::Refuse => {
                    refused = true;
                    d = Duration::from_ticks(0);
                }
            }
        }
        Penalty {
            delay: d,
            slot,
            refused,
            throttled,
            locked: false,
        }
    }

    /// Record a successful login: the (username, ip) record is cleared, the
    /// ip's record and the account's are kept.
    pub fn login_succeeded(&mut self, username: &str, ip: IpAddr, now: Instant) -> bool {
        self.clock(now);
        let key = Key::login_user(self.users.hash(username), self.addr(ip));
        match self.head.store.remove(&key) {
            Some(e) => {
                if e.cold().lock_until().is_some() {
                    self.pinned_changed(key);
                }
                true
            }
            None => false,
        }
    }
}
