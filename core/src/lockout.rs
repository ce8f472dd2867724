//! Rules 5, 6 and 8: login lockout, penalty back-off and the account
//! throttle across addresses.
//!
//! Failures are counted per (username, ip) and per ip; `max_failures`
//! within `failure_window` lock that key for `lock_for` (a lock starts a
//! fresh count), and a (username, ip) lock also locks the ip. Both must be
//! unlocked for a login to proceed. Success clears the (username, ip)
//! record and keeps the ip's. Failures per username across all addresses
//! switch on the full penalty (`penalty.max`) once `account_max_failures`
//! lie within `account_window`: a soft throttle that cannot lock the real
//! user out.
//!
//! ```
//! use core::net::{IpAddr, Ipv4Addr};
//! use embassy_time::Instant;
//! use portcullis_core::{Config, Decision, FixedLimiter, Reason, Seed};
//!
//! let mut lim: FixedLimiter<64, 50> = FixedLimiter::new(Config::default(), Seed::new([7; 16])).unwrap();
//! let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
//! let now = Instant::from_secs(1000);
//! for _ in 0..10 {
//!     assert!(lim.check_login("Alice", ip, now).is_allowed());
//!     let penalty = lim.login_failed("Alice", ip, now);
//!     if let Some(slot) = penalty.slot { lim.release_slot(slot); }
//! }
//! // "alice " is the same account after normalisation, and it is locked.
//! assert_eq!(lim.check_login("alice ", ip, now).reason(), Some(Reason::AccountLocked));
//! ```

use core::net::IpAddr;
use embassy_time::{Duration, Instant};

use crate::config::NoSlot;
use crate::decision::{Decision, Penalty, Reason};
use crate::entry::ColdPart;
use crate::key::Key;
use crate::limiter::Limiter;
use crate::lists::Listed;
use crate::penalty::delay;
use crate::store::{EntryOf, Store};
use crate::time::{left_in_window, running, until, Tick};
use crate::window::TimeLog;

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
        match self.config.lists.lookup(ip) {
            Listed::Deny => {
                return Decision::Deny {
                    reason: Reason::Denylisted,
                    retry_after: Duration::MAX,
                }
            }
            Listed::Allow => {
                return Decision::Allow {
                    remaining: max,
                    reset_after: Duration::from_ticks(0),
                }
            }
            Listed::Neither => {}
        }
        let addr = self.addr(ip);
        let user = self
            .store
            .get(&Key::login_user(self.users.hash(username), addr));
        let ipe = self.store.get(&Key::login_ip(addr));
        let lock_left = |e: Option<&EntryOf<S, W>>| match e.and_then(|e| e.cold().lock_until) {
            Some(u) if running(u, now) => Some(until(now, u)),
            _ => None,
        };
        match (lock_left(user), lock_left(ipe)) {
            (Some(u), i) => {
                return Decision::Deny {
                    reason: Reason::AccountLocked,
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
        let count = |e: Option<&EntryOf<S, W>>| e.map_or(0, |e| e.log.count(now, window));
        let (fu, fi) = (count(user), count(ipe));
        let limiting = if fu >= fi { user } else { ipe };
        let reset_after = limiting
            .and_then(|e| e.log.oldest_in(now, window))
            .map_or(Duration::from_ticks(0), |t| left_in_window(now, t, window));
        Decision::Allow {
            remaining: max.saturating_sub(fu.max(fi)),
            reset_after,
        }
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
        if let Some(e) = self.upsert(Key::account(user), now) {
            e.log.prune(now, acct);
            throttled = e.log.count(now, acct) >= m;
            e.log.push(now);
            e.log
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
        if let Some(e) = self.upsert(Key::login_user(user, addr), now) {
            e.log.prune(now, window);
            k = e.log.count(now, window);
            e.log.push(now);
            if k.saturating_add(1) >= login.max_failures {
                e.cold.make().lock_until = Some(lock_until);
                e.log.clear();
                user_locked = true;
            }
        }
        let ip_key = Key::login_ip(addr);
        let mut locked = user_locked;
        if let Some(e) = self.upsert(ip_key, now) {
            e.log.prune(now, window);
            let before = e.log.count(now, window);
            e.log.push(now);
            if before.saturating_add(1) >= login.max_failures
                || (user_locked && login.lock_ip_on_account_lock)
            {
                e.cold.make().lock_until = Some(lock_until);
                e.log.clear();
                locked = true;
            }
        }
        if locked {
            self.pinned_changed();
        }
        let throttled = match account {
            Some(t) => t,
            None => self.account_failure(user, now),
        };
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
            locked,
        }
    }

    /// Record a successful login: the (username, ip) record is cleared, the
    /// ip's record and the account's are kept.
    pub fn login_succeeded(&mut self, username: &str, ip: IpAddr, now: Instant) -> bool {
        self.clock(now);
        let key = Key::login_user(self.users.hash(username), self.addr(ip));
        match self.store.remove(&key) {
            Some(e) => {
                if e.cold().lock_until.is_some() {
                    self.pinned_changed();
                }
                true
            }
            None => false,
        }
    }
}
