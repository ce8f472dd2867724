//! A reference model of the rules in `docs/rules.md`, written for clarity: `HashMap`s,
//! `Vec`s, full timestamp lists, no fixed capacities except the table's,
//! no cleverness. The model-based test drives it and the core with the same
//! operations and demands the same answers.
//!
//! Eviction (`docs/design.md`, "Tables"): when the table is full
//! and a new key comes, a pinned entry (ban, running block or lock, live
//! slot) is never evicted; a dead entry (one `purge` would remove: its
//! state can no longer affect any decision) goes before any live one; a
//! live one goes only when no dead one is left, and which live one is the
//! store's choice (CLOCK, approximately least recently touched); with
//! nothing evictable the new key is refused. Which dead or live entry the
//! core chose is handed to the model ([`Model::follow`]) so the two keep
//! the same keys and go on comparing decisions; the model checks that the
//! choice obeys the rule and records any breach in
//! [`Model::rule_breaches`]. Without a choice handed in, the model picks
//! the least recently touched of the allowed kind.
//!
//! Times are `u64` ticks; arithmetic saturates like the core's.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use portcullis_core::Duration;
use portcullis_core::{Config, Decision, Growth, NoSlot, OnFull, Reason};

/// Which rule a model key belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MKey {
    Request(u128),
    LoginIp(u128),
    LoginUser(String, u128),
    Account(String),
}

#[derive(Clone, Debug, Default)]
struct MEntry {
    last_touch: u64,
    log: Vec<u64>,
    violations: Vec<u64>,
    block_until: Option<u64>,
    block_level: u32,
    last_block_start: Option<u64>,
    banned: bool,
    lock_until: Option<u64>,
    slots: Vec<(u32, u64)>,
}

/// A model slot token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MToken {
    pub key: MKey,
    pub id: u32,
}

/// The model's answer to a failed login.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MPenalty {
    pub delay: Duration,
    pub slot: Option<MToken>,
    pub refused: bool,
    pub throttled: bool,
    pub locked: bool,
}

/// A reserved login attempt in the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MAttempt {
    pub at: u64,
    pub counted: bool,
    pub penalty: MPenalty,
}

/// The reference model.
pub struct Model {
    cfg: Config,
    capacity: usize,
    latest: u64,
    touches: u64,
    next_slot: u32,
    entries: HashMap<MKey, MEntry>,
    pub table_full: u64,
    pub evictions: u64,
    pub evicted_dead: u64,
    pub evicted_live: u64,
    /// The core's evictions to follow, oldest first: (key, was it live).
    victims: VecDeque<(MKey, bool)>,
    /// Evictions that broke the rule (or that the model did not expect).
    pub rule_breaches: Vec<String>,
}

fn in_window(now: u64, t: u64, window: u64) -> bool {
    now.saturating_sub(t) < window
}

fn count(list: &[u64], now: u64, window: u64) -> u32 {
    list.iter().filter(|&&t| in_window(now, t, window)).count() as u32
}

fn oldest(list: &[u64], now: u64, window: u64) -> Option<u64> {
    list.iter()
        .copied()
        .filter(|&t| in_window(now, t, window))
        .min()
}

fn left(now: u64, t: u64, window: u64) -> Duration {
    Duration::from_ticks(window.saturating_sub(now.saturating_sub(t)))
}

fn running(deadline: Option<u64>, now: u64) -> bool {
    match deadline {
        Some(d) => d > now || d == u64::MAX,
        None => false,
    }
}

/// A ban or a running block refuses every request.
fn standing_denial(e: &MEntry, now: u64) -> Option<Decision> {
    if e.banned {
        return Some(Decision::Deny {
            reason: Reason::Banned,
            retry_after: Duration::MAX,
        });
    }
    let until = e.block_until.filter(|_| running(e.block_until, now))?;
    Some(Decision::Deny {
        reason: Reason::Blocked,
        retry_after: Duration::from_ticks(until.saturating_sub(now)),
    })
}

/// `min(first × growth^level, max)` without overflow, rounded down to the
/// tick at every step (`growth` in thousandths, see `portcullis_core::Growth`):
/// the plain formula in 128 bits, step by step.
fn grown(first: u64, growth: Growth, level: u32, max: u64) -> u64 {
    let g = growth.thousandths() as u128;
    let mut value = (first as u128).min(max as u128);
    for _ in 0..level {
        let next = (value * g / 1000).min(max as u128);
        if next == value {
            break; // a fixed point: every further step is the same
        }
        value = next;
    }
    value as u64
}

/// IPv4 as mapped IPv6; other IPv6 cut to `prefix` bits.
pub fn aggregate(ip: IpAddr, prefix: u8) -> u128 {
    let v6 = match ip {
        IpAddr::V4(v4) => return u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => v6,
    };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return u128::from(v4.to_ipv6_mapped());
    }
    let bits = u128::from(v6);
    if prefix == 0 {
        0
    } else {
        bits & (u128::MAX << (128 - u32::from(prefix.min(128))))
    }
}

/// Trim and ASCII-lowercase a username.
pub fn normalise(name: &str) -> String {
    name.trim().to_ascii_lowercase()
}

impl Model {
    pub fn new(cfg: Config, capacity: usize) -> Model {
        Model {
            cfg,
            capacity,
            latest: 0,
            touches: 0,
            next_slot: 1,
            entries: HashMap::new(),
            table_full: 0,
            evictions: 0,
            evicted_dead: 0,
            evicted_live: 0,
            victims: VecDeque::new(),
            rule_breaches: Vec::new(),
        }
    }

    /// The core's evictions during the next operation (key, and whether
    /// it called the entry live), for the model to check and follow.
    pub fn follow(&mut self, victims: impl IntoIterator<Item = (MKey, bool)>) {
        self.victims.extend(victims);
    }

    /// Evictions handed in by [`follow`](Self::follow) and not used: the
    /// core evicted where the model found room.
    pub fn unused_victims(&mut self) -> Vec<(MKey, bool)> {
        self.victims.drain(..).collect()
    }

    /// Whether `e` (of `k`) can no longer affect a decision: what `purge`
    /// removes and eviction takes first.
    fn dead(&self, k: &MKey, e: &MEntry, now: u64) -> bool {
        let c = &self.cfg;
        let memory = c
            .blocks
            .violation_memory
            .max(c.blocks.ban_lookback)
            .as_ticks();
        let window = match k {
            MKey::Request(_) => c.requests.window,
            MKey::LoginIp(_) | MKey::LoginUser(..) => c.login.failure_window,
            MKey::Account(_) => c.login.account_window,
        }
        .as_ticks();
        !self.pinned(e, now)
            && count(&e.log, now, window) == 0
            && count(&e.violations, now, memory) == 0
            && !e
                .last_block_start
                .is_some_and(|s| in_window(now, s, memory))
    }

    /// Make room for one key by the eviction rule; false if every entry is
    /// pinned.
    fn evict(&mut self, now: u64) -> bool {
        let any_dead = self.entries.iter().any(|(k, e)| self.dead(k, e, now));
        let any_live = self
            .entries
            .iter()
            .any(|(k, e)| !self.pinned(e, now) && !self.dead(k, e, now));
        let victim = match self.victims.pop_front() {
            Some((k, live)) => {
                let why = match self.entries.get(&k) {
                    None => Some("an absent key"),
                    Some(e) if self.pinned(e, now) => Some("a pinned key"),
                    Some(e) if self.dead(&k, e, now) == live => Some("a key of the other kind"),
                    Some(_) if live && any_dead => Some("a live key while a dead one was left"),
                    Some(_) => None,
                };
                if let Some(why) = why {
                    self.rule_breaches
                        .push(format!("evicted {why}: {k:?} (live: {live})"));
                }
                Some((k, live))
            }
            None if any_dead || any_live => {
                let k = self
                    .entries
                    .iter()
                    .filter(|(k, e)| {
                        if any_dead {
                            self.dead(k, e, now)
                        } else {
                            !self.pinned(e, now)
                        }
                    })
                    .min_by_key(|(_, e)| e.last_touch)
                    .map(|(k, _)| k.clone());
                k.map(|k| (k, !any_dead))
            }
            None => None,
        };
        match victim {
            Some((k, live)) => {
                if !any_dead && !any_live {
                    self.rule_breaches
                        .push(format!("evicted {k:?} from a table of pinned keys"));
                }
                self.entries.remove(&k);
                self.evictions += 1;
                if live {
                    self.evicted_live += 1;
                } else {
                    self.evicted_dead += 1;
                }
                true
            }
            None => false,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn clock(&mut self, now: u64) -> u64 {
        self.latest = self.latest.max(now);
        self.latest
    }

    fn listed(&self, ip: IpAddr) -> Option<bool> {
        if self.cfg.lists.deny.iter().any(|c| c.contains(ip)) {
            Some(false)
        } else if self.cfg.lists.allow.iter().any(|c| c.contains(ip)) {
            Some(true)
        } else {
            None
        }
    }

    /// What the lists alone answer: denylisted, or allowlisted with the full quota.
    fn listed_decision(&self, ip: IpAddr, max: u32) -> Option<Decision> {
        match self.listed(ip)? {
            false => Some(Decision::Deny {
                reason: Reason::Denylisted,
                retry_after: Duration::MAX,
            }),
            true => Some(Decision::Allow {
                remaining: max,
                reset_after: Duration::from_ticks(0),
            }),
        }
    }

    fn addr(&self, ip: IpAddr) -> u128 {
        aggregate(ip, self.cfg.ipv6_prefix)
    }

    fn pinned(&self, e: &MEntry, now: u64) -> bool {
        let ttl = self.cfg.slots.slot_ttl.as_ticks();
        e.banned
            || running(e.block_until, now)
            || running(e.lock_until, now)
            || e.slots.iter().any(|&(_, at)| in_window(now, at, ttl))
    }

    /// Find or create `key`, marking it most recently touched. `None` when
    /// the table is full and every entry is pinned.
    fn upsert(&mut self, key: &MKey, now: u64) -> Option<&mut MEntry> {
        self.touches += 1;
        let touch = self.touches;
        if !self.entries.contains_key(key) {
            if self.entries.len() >= self.capacity && !self.evict(now) {
                self.table_full += 1;
                return None;
            }
            self.entries.insert(key.clone(), MEntry::default());
        }
        let e = self.entries.get_mut(key).unwrap();
        e.last_touch = touch;
        Some(e)
    }

    pub fn check_request(&mut self, ip: IpAddr, now: u64) -> Decision {
        self.check_request_with(ip, now, 0)
    }

    /// A request whose block, if it starts one, lasts `jitter / 65536` of
    /// `block_jitter` longer (rounded down to the tick).
    pub fn check_request_with(&mut self, ip: IpAddr, now: u64, jitter: u16) -> Decision {
        let now = self.clock(now);
        let max = self.cfg.requests.max_requests;
        if let Some(d) = self.listed_decision(ip, max) {
            return d;
        }
        let window = self.cfg.requests.window.as_ticks();
        let rules = self.cfg.blocks.clone();
        let on_full = self.cfg.on_full;
        let key = MKey::Request(self.addr(ip));
        let Some(e) = self.upsert(&key, now) else {
            return match on_full {
                OnFull::Deny => Decision::Deny {
                    reason: Reason::TableFull,
                    retry_after: Duration::from_ticks(window),
                },
                OnFull::Allow => Decision::Allow {
                    remaining: 0,
                    reset_after: Duration::from_ticks(0),
                },
            };
        };
        if let Some(d) = standing_denial(e, now) {
            return d;
        }
        let used = count(&e.log, now, window);
        if used < max {
            e.log.push(now);
            let first = oldest(&e.log, now, window).unwrap();
            return Decision::Allow {
                remaining: max - used - 1,
                reset_after: left(now, first, window),
            };
        }
        let first = oldest(&e.log, now, window).unwrap_or(now);
        let rate_limited = Decision::Deny {
            reason: Reason::RateLimited,
            retry_after: left(now, first, window),
        };
        // A violation is a window with at least one denial.
        let new_violation = match e.violations.last() {
            Some(&last) => now.saturating_sub(last) >= window,
            None => true,
        };
        if !new_violation {
            return rate_limited;
        }
        e.violations.push(now);
        if let Some(ban_after) = rules.ban_after {
            if count(&e.violations, now, rules.ban_lookback.as_ticks()) >= ban_after {
                e.banned = true;
                return Decision::Deny {
                    reason: Reason::Banned,
                    retry_after: Duration::MAX,
                };
            }
        }
        let memory = rules.violation_memory.as_ticks();
        let since_last_block = e
            .violations
            .iter()
            .filter(|&&t| in_window(now, t, memory))
            .filter(|&&t| e.last_block_start.is_none_or(|s| t > s))
            .count() as u32;
        if since_last_block < rules.block_after {
            return rate_limited;
        }
        let level = match e.last_block_start {
            Some(s) if in_window(now, s, memory) => e.block_level,
            _ => 0,
        };
        let length = grown(
            rules.block_for.as_ticks(),
            rules.block_growth,
            level,
            rules.max_block.as_ticks(),
        );
        let extra = ((u128::from(rules.block_jitter.as_ticks()) * u128::from(jitter)) >> 16) as u64;
        let until = now.saturating_add(length.saturating_add(extra));
        e.block_until = Some(until);
        e.block_level = (level + 1).min(255);
        e.last_block_start = Some(now);
        Decision::Deny {
            reason: Reason::Blocked,
            retry_after: Duration::from_ticks(until - now),
        }
    }

    pub fn peek_request(&self, ip: IpAddr, now: u64) -> Decision {
        let now = self.latest.max(now);
        let max = self.cfg.requests.max_requests;
        if let Some(d) = self.listed_decision(ip, max) {
            return d;
        }
        let window = self.cfg.requests.window.as_ticks();
        let Some(e) = self.entries.get(&MKey::Request(self.addr(ip))) else {
            return Decision::Allow {
                remaining: max,
                reset_after: Duration::from_ticks(0),
            };
        };
        if let Some(d) = standing_denial(e, now) {
            return d;
        }
        let used = count(&e.log, now, window);
        let reset =
            oldest(&e.log, now, window).map_or(Duration::from_ticks(0), |t| left(now, t, window));
        if used < max {
            Decision::Allow {
                remaining: max - used,
                reset_after: reset,
            }
        } else {
            Decision::Deny {
                reason: Reason::RateLimited,
                retry_after: reset,
            }
        }
    }

    pub fn check_login(&mut self, user: &str, ip: IpAddr, now: u64) -> Decision {
        let now = self.clock(now);
        self.login_state(user, ip, now)
    }

    pub fn peek_login(&self, user: &str, ip: IpAddr, now: u64) -> Decision {
        self.login_state(user, ip, self.latest.max(now))
    }

    fn login_state(&self, user: &str, ip: IpAddr, now: u64) -> Decision {
        let max = self.cfg.login.max_failures;
        if let Some(d) = self.listed_decision(ip, max) {
            return d;
        }
        let addr = self.addr(ip);
        let pair = self.entries.get(&MKey::LoginUser(normalise(user), addr));
        let from_ip = self.entries.get(&MKey::LoginIp(addr));
        let lock_left = |e: Option<&MEntry>| match e {
            Some(e) if running(e.lock_until, now) => {
                Some(e.lock_until.unwrap().saturating_sub(now))
            }
            _ => None,
        };
        if let Some(u) = lock_left(pair) {
            let i = lock_left(from_ip).unwrap_or(0);
            return Decision::Deny {
                reason: Reason::PairLocked,
                retry_after: Duration::from_ticks(u.max(i)),
            };
        }
        if let Some(i) = lock_left(from_ip) {
            return Decision::Deny {
                reason: Reason::IpLocked,
                retry_after: Duration::from_ticks(i),
            };
        }
        let window = self.cfg.login.failure_window.as_ticks();
        let fails = |e: Option<&MEntry>| e.map_or(0, |e| count(&e.log, now, window));
        let (fu, fi) = (fails(pair), fails(from_ip));
        // Reserved, unsettled attempts: `max` of them in flight refuse the next.
        let reset_of = |e: Option<&MEntry>| {
            e.and_then(|e| oldest(&e.log, now, window))
                .map_or(Duration::from_ticks(0), |t| left(now, t, window))
        };
        if fu >= max {
            return Decision::Deny {
                reason: Reason::PairLocked,
                retry_after: reset_of(pair),
            };
        }
        // The ip's own count locks it only with `ip_max_failures` set.
        let ip_max = self.cfg.login.ip_max_failures.unwrap_or(u32::MAX);
        if fi >= ip_max {
            return Decision::Deny {
                reason: Reason::IpLocked,
                retry_after: reset_of(from_ip),
            };
        }
        // The key with fewer failures left limits (the pair on a tie).
        let (ru, ri) = (max - fu, ip_max - fi);
        let limiting = if ru <= ri { pair } else { from_ip };
        let reset = limiting
            .and_then(|e| oldest(&e.log, now, window))
            .map_or(Duration::from_ticks(0), |t| left(now, t, window));
        Decision::Allow {
            remaining: ru.min(ri),
            reset_after: reset,
        }
    }

    pub fn login_failed(&mut self, user: &str, ip: IpAddr, now: u64) -> MPenalty {
        let now = self.clock(now);
        let none = MPenalty {
            delay: Duration::from_ticks(0),
            slot: None,
            refused: false,
            throttled: false,
            locked: false,
        };
        if self.listed(ip).is_some() {
            return none;
        }
        let login = self.cfg.login.clone();
        let window = login.failure_window.as_ticks();
        let lock_until = now.saturating_add(login.lock_for.as_ticks());
        let name = normalise(user);
        let addr = self.addr(ip);

        // (user, ip): k earlier failures in the window decide the penalty.
        let mut k = 0;
        let mut pair_locked = false;
        if let Some(e) = self.upsert(&MKey::LoginUser(name.clone(), addr), now) {
            k = count(&e.log, now, window);
            e.log.push(now);
            if k + 1 >= login.max_failures {
                e.lock_until = Some(lock_until);
                e.log.clear();
                pair_locked = true;
            }
        }
        // ip: its own count, and the pair's lock.
        let ip_key = MKey::LoginIp(addr);
        let mut locked = pair_locked;
        if let Some(e) = self.upsert(&ip_key, now) {
            let before = count(&e.log, now, window);
            e.log.push(now);
            let ip_full = login.ip_max_failures.is_some_and(|m| before + 1 >= m);
            if ip_full || (pair_locked && login.lock_ip_on_account_lock) {
                e.lock_until = Some(lock_until);
                e.log.clear();
                locked = true;
            }
        }
        // Username across addresses: the throttle.
        let throttled = self.account_failure(name, now);
        MPenalty {
            locked,
            ..self.penalty(k, throttled, ip_key, now)
        }
    }

    /// Rule 8: count a failure against the account; whether its throttle
    /// was on.
    fn account_failure(&mut self, name: String, now: u64) -> bool {
        let login = self.cfg.login.clone();
        let Some(m) = login.account_max_failures else {
            return false;
        };
        let acct = login.account_window.as_ticks();
        let Some(e) = self.upsert(&MKey::Account(name), now) else {
            return false;
        };
        let throttled = count(&e.log, now, acct) >= m;
        e.log.push(now);
        // Only the newest `m` matter to the rule; the core keeps no more.
        let extra = e.log.len().saturating_sub(m as usize);
        e.log.drain(..extra);
        throttled
    }

    /// Rules 6-7: the delay after `k` earlier failures, in a slot of `ip_key`.
    fn penalty(&mut self, k: u32, throttled: bool, ip_key: MKey, now: u64) -> MPenalty {
        let p = &self.cfg.penalty;
        let mut delay = if throttled {
            p.max
        } else {
            Duration::from_ticks(grown(p.base.as_ticks(), p.multiplier, k, p.max.as_ticks()))
        };
        let base = p.base;
        let slot = self.acquire_at(ip_key, now);
        let mut refused = false;
        if slot.is_none() {
            match self.cfg.slots.when_full {
                NoSlot::CapToBase => delay = delay.min(base),
                NoSlot::Refuse => {
                    refused = true;
                    delay = Duration::from_ticks(0);
                }
            }
        }
        MPenalty {
            delay,
            slot,
            refused,
            throttled,
            locked: false,
        }
    }

    /// Reserve an attempt: refused as `login_state` says, else counted as a
    /// failure of the pair, the ip and the account, with its penalty.
    pub fn begin_login(&mut self, user: &str, ip: IpAddr, now: u64) -> Result<MAttempt, Decision> {
        let now = self.clock(now);
        let d = self.login_state(user, ip, now);
        if !d.is_allowed() {
            return Err(d);
        }
        let none = MPenalty {
            delay: Duration::from_ticks(0),
            slot: None,
            refused: false,
            throttled: false,
            locked: false,
        };
        if self.listed(ip).is_some() {
            return Ok(MAttempt {
                at: 0,
                counted: false,
                penalty: none,
            });
        }
        let login = self.cfg.login.clone();
        let window = login.failure_window.as_ticks();
        let name = normalise(user);
        let addr = self.addr(ip);
        let mut k = 0;
        if let Some(e) = self.upsert(&MKey::LoginUser(name.clone(), addr), now) {
            k = count(&e.log, now, window);
            e.log.push(now);
        }
        let ip_key = MKey::LoginIp(addr);
        if let Some(e) = self.upsert(&ip_key, now) {
            e.log.push(now);
        }
        let throttled = self.account_failure(name, now);
        Ok(MAttempt {
            at: now,
            counted: true,
            penalty: self.penalty(k, throttled, ip_key, now),
        })
    }

    /// A reserved attempt was wrong: lock what reached `max_failures`.
    pub fn login_attempt_failed(&mut self, user: &str, ip: IpAddr, a: &MAttempt, now: u64) -> bool {
        let now = self.clock(now);
        if !a.counted || self.listed(ip).is_some() {
            return false;
        }
        let login = self.cfg.login.clone();
        let window = login.failure_window.as_ticks();
        let lock_until = now.saturating_add(login.lock_for.as_ticks());
        let addr = self.addr(ip);
        let mut pair_locked = false;
        if let Some(e) = self
            .entries
            .get_mut(&MKey::LoginUser(normalise(user), addr))
        {
            if count(&e.log, now, window) >= login.max_failures {
                e.lock_until = Some(lock_until);
                e.log.clear();
                pair_locked = true;
            }
        }
        let mut locked = pair_locked;
        if let Some(e) = self.entries.get_mut(&MKey::LoginIp(addr)) {
            if login
                .ip_max_failures
                .is_some_and(|m| count(&e.log, now, window) >= m)
                || (pair_locked && login.lock_ip_on_account_lock)
            {
                e.lock_until = Some(lock_until);
                e.log.clear();
                locked = true;
            }
        }
        locked
    }

    /// A reserved attempt was right: clear the pair, take the failure back
    /// from the ip and the account.
    pub fn login_attempt_succeeded(
        &mut self,
        user: &str,
        ip: IpAddr,
        a: &MAttempt,
        now: u64,
    ) -> bool {
        let cleared = self.login_succeeded(user, ip, now);
        if a.counted {
            let name = normalise(user);
            let addr = self.addr(ip);
            for key in [MKey::LoginIp(addr), MKey::Account(name)] {
                if let Some(e) = self.entries.get_mut(&key) {
                    if let Some(i) = e.log.iter().position(|&t| t == a.at) {
                        e.log.remove(i);
                    }
                }
            }
        }
        cleared
    }

    pub fn login_succeeded(&mut self, user: &str, ip: IpAddr, now: u64) -> bool {
        self.clock(now);
        let key = MKey::LoginUser(normalise(user), self.addr(ip));
        self.entries.remove(&key).is_some()
    }

    pub fn acquire_slot(&mut self, ip: IpAddr, now: u64) -> Option<MToken> {
        let now = self.clock(now);
        let key = MKey::LoginIp(self.addr(ip));
        self.acquire_at(key, now)
    }

    fn acquire_at(&mut self, key: MKey, now: u64) -> Option<MToken> {
        let ttl = self.cfg.slots.slot_ttl.as_ticks();
        let limit = self.cfg.slots.slots as usize;
        let id = self.next_slot;
        let e = self.upsert(&key, now)?;
        e.slots.retain(|&(_, at)| in_window(now, at, ttl));
        if e.slots.len() >= limit {
            return None;
        }
        e.slots.push((id, now));
        self.next_slot = id.wrapping_add(1).max(1);
        Some(MToken { key, id })
    }

    pub fn release_slot(&mut self, token: MToken) -> bool {
        match self.entries.get_mut(&token.key) {
            Some(e) => {
                let before = e.slots.len();
                e.slots.retain(|&(id, _)| id != token.id);
                e.slots.len() != before
            }
            None => false,
        }
    }

    pub fn ban(&mut self, ip: IpAddr, now: u64) -> bool {
        let now = self.clock(now);
        let key = MKey::Request(self.addr(ip));
        match self.upsert(&key, now) {
            Some(e) => {
                e.banned = true;
                true
            }
            None => false,
        }
    }

    pub fn unban(&mut self, ip: IpAddr) -> bool {
        let key = MKey::Request(self.addr(ip));
        match self.entries.get_mut(&key) {
            Some(e) => {
                let had = e.banned || e.block_until.is_some();
                e.banned = false;
                e.block_until = None;
                e.block_level = 0;
                e.last_block_start = None;
                e.violations.clear();
                had
            }
            None => false,
        }
    }

    /// The operator's unban: clear bans, blocks, locks and counts of every
    /// key of this address (not the account keys).
    pub fn lift(&mut self, ip: IpAddr) -> usize {
        let addr = self.addr(ip);
        let mut changed = 0;
        for (k, e) in self.entries.iter_mut() {
            let mine = match k {
                MKey::Request(a) | MKey::LoginIp(a) | MKey::LoginUser(_, a) => *a == addr,
                MKey::Account(_) => false,
            };
            if !mine {
                continue;
            }
            if e.banned || e.block_until.is_some() || e.lock_until.is_some() {
                changed += 1;
            }
            e.banned = false;
            e.block_until = None;
            e.block_level = 0;
            e.last_block_start = None;
            e.violations.clear();
            e.lock_until = None;
            e.log.clear();
        }
        changed
    }

    /// Drop entries that can no longer change any decision.
    pub fn purge(&mut self, now: u64) -> usize {
        let now = self.clock(now);
        let idle: Vec<MKey> = self
            .entries
            .iter()
            .filter(|(k, e)| self.dead(k, e, now))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &idle {
            self.entries.remove(k);
        }
        idle.len()
    }
}
