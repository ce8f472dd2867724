//! [`Limiter`]: the rules over a [`Store`]. Requests (rules 1–4), lists
//! (rule 9), bans, slots (rule 7) and purge live here; logins (rules 5, 6
//! and 8) in [`lockout`](crate::lockout); export/import in
//! [`record`](crate::record).

use crate::{Duration, Instant};
use core::net::IpAddr;

use crate::block::{is_new_violation, on_denial, Escalation};
use crate::config::{Config, ConfigError, Jitter, OnFull};
use crate::decision::{Decision, Reason, StandingDenial, Stats};
use crate::entry::{Cold, EntryMut, EntryRef};
use crate::fixed_vec::FixedVec;
use crate::key::{Addr, Key, KeyKind, Seed, UserHasher};
use crate::lists::Listed;
use crate::slots::SlotToken;
use crate::store::{Class, HotRules, Store, Upsert, Victim};
use crate::table::FixedStore;
use crate::time::{left_in_window, running, tick, until, Tick};
use crate::window::{Events, EventsMut};

/// The decision engine: one configuration, one store, one keyed hash.
pub struct Limiter<S: Store<W>, const W: usize> {
    /// What a request reads first, together (see [`Head`]).
    pub(crate) head: Head<S, S::Rules>,
    pub(crate) config: Config,
    pub(crate) users: UserHasher,
    pub(crate) next_slot: u32,
    pub(crate) stats: Stats,
    /// Keys whose ban, block or lock changed since the last
    /// [`take_changed`](Self::take_changed).
    pub(crate) changed: Changed,
    /// Keys evicted since the last [`take_evicted`](Self::take_evicted).
    pub(crate) evicted: Evicted,
}

/// The fields of a [`Limiter`] a request reads first, in this order
/// (`repr(C)`): the clock, the values a request reads besides the store
/// (copied here where the store asks for it, [`Store::Rules`]), then the
/// store (whose own header, for the growable table, starts with what a
/// lookup reads). So a decision reads one or two lines of the limiter,
/// next to the lock a host puts around it. For the fixed tables the copy
/// is zero-sized and the fields are the ones they had (their size is
/// unchanged on every target, `core/tests/sizes.rs`); the growable
/// table's copy adds 16 bytes.
#[repr(C)]
pub(crate) struct Head<S, R> {
    /// The latest `now` seen: the clock never runs backwards inside.
    pub(crate) latest: Tick,
    /// Request rules, IPv6 prefix, lists set, changed flag (see
    /// [`HotRules`]).
    pub(crate) rules: R,
    pub(crate) store: S,
}

/// Keys an [`Evicted`] list holds; later evictions are only counted.
pub const EVICTED_KEYS: usize = 4;

/// The keys evicted to make room since the last
/// [`Limiter::take_evicted`], oldest first, with what they were (at most
/// [`EVICTED_KEYS`]; [`Stats`] counts them all). One call evicts at most
/// three (a login touches the pair, the address and the account).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Evicted {
    keys: FixedVec<(Key, Victim), EVICTED_KEYS>,
    more: bool,
}

impl Evicted {
    /// The evicted keys, oldest first.
    pub fn keys(&self) -> &[(Key, Victim)] {
        &self.keys
    }

    /// Whether more were evicted than listed.
    pub fn overflowed(&self) -> bool {
        self.more
    }

    fn note(&mut self, key: Key, victim: Victim) {
        if self.keys.push((key, victim)).is_err() {
            self.more = true;
        }
    }
}

/// What the eviction sweep needs to classify an entry: the windows and
/// memories of [`Limiter::purge`].
#[derive(Clone, Copy)]
pub(crate) struct Sweep {
    req: u64,
    fail: u64,
    acct: u64,
    memory: u64,
    ttl: u64,
    now: Tick,
}

impl Sweep {
    pub(crate) fn new(c: &Config, now: Tick) -> Sweep {
        Sweep {
            req: c.requests.window.as_ticks(),
            fail: c.login.failure_window.as_ticks(),
            acct: c.login.account_window.as_ticks(),
            memory: c
                .blocks
                .violation_memory
                .max(c.blocks.ban_lookback)
                .as_ticks(),
            ttl: c.slots.slot_ttl.as_ticks(),
            now,
        }
    }

    /// Whether `e` (of `k`) can no longer affect a decision.
    pub(crate) fn idle(&self, k: &Key, e: &impl EntryRef) -> bool {
        let window = match k.kind() {
            KeyKind::Request => self.req,
            KeyKind::LoginIp | KeyKind::LoginUser => self.fail,
            KeyKind::Account => self.acct,
        };
        e.idle(self.now, window, self.memory, self.ttl)
    }

    /// Pinned, dead or live (see [`store`](crate::store)).
    pub(crate) fn class(&self, k: &Key, e: &impl EntryRef) -> Class {
        if e.pinned(self.now, self.ttl) {
            Class::Pinned
        } else if self.idle(k, e) {
            Class::Dead
        } else {
            Class::Live
        }
    }
}

/// Keys a [`Changed`] set holds before it spills.
pub const CHANGED_KEYS: usize = 4;

/// What a [`Changed`] set could not hold by key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Spill {
    /// Nothing: every changed key is listed.
    #[default]
    None,
    /// More keys of this one address changed than the set holds (a
    /// [`Limiter::lift`] of an address with many locked pairs): treat
    /// every key of the address as changed.
    Addr(Addr),
    /// Keys of more than one address overflowed: treat every key as
    /// changed.
    All,
}

/// The keys whose ban, block or lock the limiter set, lifted or removed:
/// what must outlive the process. A host that persists state (write
/// through) drains it with [`Limiter::take_changed`] after each call and
/// writes the records of exactly these keys, instead of guessing which
/// keys a call may touch. Fixed capacity ([`CHANGED_KEYS`]); beyond it the
/// set [spills](Spill), never losing a change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Changed {
    keys: FixedVec<Key, CHANGED_KEYS>,
    spill: Spill,
}

impl Changed {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.spill == Spill::None
    }

    /// The changed keys, each once, in the order they first changed.
    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    /// What changed beyond [`keys`](Self::keys).
    pub fn spill(&self) -> Spill {
        self.spill
    }

    /// Whether `key` is covered: listed, or within the spill.
    pub fn contains(&self, key: &Key) -> bool {
        self.keys.contains(key)
            || match self.spill {
                Spill::None => false,
                Spill::Addr(a) => key.kind() != KeyKind::Account && key.addr() == a,
                Spill::All => true,
            }
    }

    /// Add `key`.
    pub(crate) fn note(&mut self, key: Key) {
        if self.contains(&key) {
            return;
        }
        if self.keys.push(key).is_err() {
            self.spill = match self.spill {
                Spill::None if key.kind() != KeyKind::Account => Spill::Addr(key.addr()),
                Spill::Addr(a) if a == key.addr() && key.kind() != KeyKind::Account => {
                    Spill::Addr(a)
                }
                _ => Spill::All,
            };
        }
    }
}

/// A ban, block or lock in force on one key: what an operator's listing
/// shows. The core makes it from an entry ([`Limiter::for_each_hold`]), a
/// record ([`Record::hold`](crate::Record::hold)) and, through
/// [`Hold::of`], from any other form of a key's state (the Redis fleet's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Hold {
    /// Which key holds it: [`Request`](KeyKind::Request) for a ban or
    /// block, [`LoginIp`](KeyKind::LoginIp) or
    /// [`LoginUser`](KeyKind::LoginUser) for a lock.
    pub kind: KeyKind,
    /// The (aggregated) address.
    pub addr: Addr,
    /// [`Banned`](Reason::Banned), [`Blocked`](Reason::Blocked),
    /// [`IpLocked`](Reason::IpLocked) or
    /// [`PairLocked`](Reason::PairLocked) (a (username, address)
    /// pair).
    pub reason: Reason,
    /// Time left; `None` for a ban (until lifted).
    pub left: Option<Duration>,
}

impl Hold {
    /// What holds `key`, given whether it is banned and the time left on a
    /// running block and lock (`None`: none running): the one mapping from
    /// a key's state to a listing row. A request key is banned or blocked,
    /// a login-ip key ip-locked, a pair key account-locked; an account key
    /// (rule 8 only throttles) never holds anything.
    pub fn of(
        key: &Key,
        banned: bool,
        block_left: Option<Duration>,
        lock_left: Option<Duration>,
    ) -> Option<Hold> {
        let (reason, left) = match key.kind() {
            KeyKind::Request if banned => (Reason::Banned, None),
            KeyKind::Request => (Reason::Blocked, Some(block_left?)),
            KeyKind::LoginIp => (Reason::IpLocked, Some(lock_left?)),
            KeyKind::LoginUser => (Reason::PairLocked, Some(lock_left?)),
            KeyKind::Account => return None,
        };
        Some(Hold {
            kind: key.kind(),
            addr: key.addr(),
            reason,
            left,
        })
    }
}

/// A limiter over the fixed-capacity table: `N` slots, `W` timestamps per log.
pub type FixedLimiter<const N: usize, const W: usize> = Limiter<FixedStore<N, W>, W>;

impl<const N: usize, const W: usize> Limiter<FixedStore<N, W>, W> {
    /// The most keys a [`FixedLimiter<N, W>`] holds at once (`N - N/8`:
    /// short probe chains).
    pub const MAX_KEYS: usize = FixedStore::<N, W>::MAX_ENTRIES;
}

/// A limiter over the growable table (feature `alloc`).
#[cfg(feature = "alloc")]
pub type MapLimiter<const W: usize> = Limiter<crate::map::MapStore<W>, W>;

impl<const N: usize, const W: usize> Limiter<FixedStore<N, W>, W> {
    /// A limiter over an empty fixed table, hashes keyed by `seed`.
    pub fn new(config: Config, seed: Seed) -> Result<Self, ConfigError> {
        Limiter::with_store(config, seed, FixedStore::new(seed))
    }
}

#[cfg(feature = "alloc")]
impl<const W: usize> Limiter<crate::map::MapStore<W>, W> {
    /// A limiter over a growable table capped at `max_entries` keys.
    pub fn new_growable(
        config: Config,
        seed: Seed,
        max_entries: usize,
    ) -> Result<Self, ConfigError> {
        Limiter::with_store(config, seed, crate::map::MapStore::new(seed, max_entries))
    }
}

impl<S: Store<W>, const W: usize> Limiter<S, W> {
    /// A limiter over `store` (which should be empty), after checking
    /// `config` against the log capacity `W`.
    pub fn with_store(config: Config, seed: Seed, store: S) -> Result<Self, ConfigError> {
        config.validate(W)?;
        config.validate_span(S::MAX_SPAN)?;
        Ok(Limiter {
            head: Head {
                latest: 0,
                rules: S::Rules::of(&config),
                store,
            },
            next_slot: 1,
            config,
            users: UserHasher::new(seed),
            stats: Stats::default(),
            changed: Changed::default(),
            evicted: Evicted::default(),
        })
    }

    /// The rules in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Swap the rules in force for `config` (a reload), keeping every
    /// entry: logs, violations, blocks, bans, locks and slots stay, and the
    /// next decision runs on the new rules. `config` is checked as
    /// [`with_store`](Self::with_store) checks it; on an error the running
    /// rules stay. The IPv6 aggregation prefix cannot change in place (the
    /// held keys are aggregated by it): a different `ipv6_prefix` is
    /// refused.
    pub fn set_config(&mut self, config: Config) -> Result<(), ConfigError> {
        config.validate(W)?;
        config.validate_span(S::MAX_SPAN)?;
        if config.ipv6_prefix != self.config.ipv6_prefix {
            return Err(ConfigError::OutOfRange {
                key: "ipv6_prefix",
                expected: "unchanged by a reload (held keys are aggregated by it)",
            });
        }
        let dirty = self.has_changes();
        self.head.rules = S::Rules::of(&config);
        self.head.rules.set_dirty(dirty);
        self.config = config;
        Ok(())
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.head.store.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.head.store.is_empty()
    }

    /// Most keys held at once.
    pub fn capacity(&self) -> usize {
        self.head.store.capacity()
    }

    /// The keyed hash of a username (after trim + ASCII lowercase).
    pub fn user_hash(&self, username: &str) -> u64 {
        self.users.hash(username)
    }

    /// The aggregated address key part for `ip`.
    pub fn addr(&self, ip: IpAddr) -> Addr {
        Addr::from_ip(ip, self.head.rules.ipv6_prefix(&self.config))
    }

    /// The store (read-only; for inspection, accounting and tests).
    pub fn store(&self) -> &S {
        &self.head.store
    }

    /// The entry for `key`, if any (read-only; for inspection and tests).
    pub fn entry(&self, key: &Key) -> Option<S::Ref<'_>> {
        self.head.store.get(key)
    }

    /// Advance the internal clock to `now` (never backwards) and return it.
    pub(crate) fn clock(&mut self, now: Instant) -> Tick {
        self.head.latest = self.head.latest.max(tick(now));
        self.head.latest
    }

    /// `now` as the clock would see it, without advancing it.
    pub(crate) fn peek_clock(&self, now: Instant) -> Tick {
        self.head.latest.max(tick(now))
    }

    /// The entry for `key`, created (evicting if needed) and touched;
    /// `None` when the table is full of entries that may not be evicted.
    pub(crate) fn upsert(&mut self, key: Key, now: Tick) -> Option<S::Mut<'_>> {
        upsert_in(
            &mut self.head.store,
            &mut self.stats,
            &mut self.evicted,
            key,
            &self.config,
            now,
        )
    }

    /// The keys evicted since the last [`take_evicted`](Self::take_evicted).
    pub fn evicted(&self) -> &Evicted {
        &self.evicted
    }

    /// The keys evicted since the last call, and an empty list in their
    /// place (for hosts that log them, and for tests that follow them).
    pub fn take_evicted(&mut self) -> Evicted {
        core::mem::take(&mut self.evicted)
    }

    fn listed(&self, ip: &IpAddr) -> Option<Decision> {
        if !self.head.rules.lists(&self.config) {
            return None;
        }
        self.config
            .lists
            .lookup(*ip)
            .decision(self.config.requests.max_requests)
    }

    /// Rules 1–4 and 9 for one request from `ip` at `now`: counts it if
    /// allowed. A block it starts gets no jitter (see
    /// [`check_request_with`](Self::check_request_with)).
    pub fn check_request(&mut self, ip: IpAddr, now: Instant) -> Decision {
        self.check_request_with(ip, now, Jitter::NONE)
    }

    /// [`check_request`](Self::check_request) with the random part of a
    /// block's jitter chosen by the caller (`blocks.block_jitter`): a block
    /// this request starts lasts `jitter.extra(block_jitter)` longer.
    // Inlined into its callers (the host's request path, `check_request`)
    // with the store's upsert: one frame per decision instead of four
    // (issue 24: about 60 instructions of calls, spills and copies).
    #[inline(always)]
    pub fn check_request_with(&mut self, ip: IpAddr, now: Instant, jitter: Jitter) -> Decision {
        let now = self.clock(now);
        if let Some(d) = self.listed(&ip) {
            return d;
        }
        let key = Key::request(Addr::from_ip_split(
            ip,
            self.head.rules.ipv6_prefix(&self.config),
        ));
        let Limiter {
            config,
            head: Head { store, rules, .. },
            stats,
            evicted,
            ..
        } = self;
        let (max, window) = rules.requests(config);
        let Some(mut e) = upsert_in(store, stats, evicted, key, config, now) else {
            return full_decision(config);
        };
        if let Some(d) = standing_denial(&e, now) {
            return d;
        }
        // After the prune every stored time lies in the window: O(1).
        let mut log = e.log_mut();
        log.prune(now, window);
        let used = u32::try_from(log.len()).unwrap_or(u32::MAX);
        if used < max {
            log.push(now);
            if used.saturating_add(1) >= max {
                // At its limit: the log holds this many events for a
                // while; give back the spare room a growing log took.
                log.fit();
            }
            let oldest = log.oldest().unwrap_or(now);
            return Decision::Allow {
                remaining: max.saturating_sub(used).saturating_sub(1),
                reset_after: left_in_window(now, oldest, window),
            };
        }
        let oldest = log.oldest().unwrap_or(now);
        drop(log);
        let escalation = on_denial(&mut e, &config.blocks, window, now, jitter);
        // The view may hold the store (its drop ends the borrow).
        drop(e);
        if escalation != Escalation::None {
            self.pinned_changed(key);
        }
        match escalation {
            Escalation::Banned => Decision::Deny {
                reason: Reason::Banned,
                retry_after: Duration::MAX,
            },
            Escalation::Blocked(u) => Decision::Deny {
                reason: Reason::Blocked,
                retry_after: until(now, u),
            },
            Escalation::None => Decision::Deny {
                reason: Reason::RateLimited,
                retry_after: left_in_window(now, oldest, window),
            },
        }
    }

    /// [`check_request`](Self::check_request)'s answer when that answer
    /// changes nothing but the clock: a listed address, or a denial (ban,
    /// block, or a full window that records no new violation) of a key
    /// already marked touched (so touching it again changes nothing). `None`: call `check_request`.
    ///
    /// For hosts that keep the limiter under a read-write lock: a client
    /// hammering one key is denied under the shared lock, so its
    /// connections do not queue for the exclusive one. The answer is the
    /// one `check_request` gives at `now`; the clock is not advanced, which
    /// only lets a later call with an earlier `now` be decided at its own
    /// time, as if it had come first (it could change nothing this answer
    /// depends on: its window holds no fewer events and its last violation
    /// is no older).
    pub fn check_request_if_unchanged(&self, ip: IpAddr, now: Instant) -> Option<Decision> {
        if let Some(d @ Decision::Allow { .. }) = self.listed(&ip) {
            return Some(d);
        }
        self.standing_denial(ip, now)?.decision_at(now)
    }

    /// The denial [`check_request`](Self::check_request) would give `ip`
    /// at `now` while changing nothing but the clock (as
    /// [`check_request_if_unchanged`](Self::check_request_if_unchanged)),
    /// with how long it holds: until its block ends, its oldest counted
    /// request leaves the window, or its next violation would count, and
    /// only while nothing else changes the limiter.
    pub fn standing_denial(&self, ip: IpAddr, now: Instant) -> Option<StandingDenial> {
        let now = self.peek_clock(now);
        let denial = |reason, deadline, holds_until| {
            Some(StandingDenial {
                reason,
                deadline,
                holds_until,
                clock: now,
            })
        };
        match self.config.lists.lookup(ip) {
            Listed::Deny => return denial(Reason::Denylisted, None, Tick::MAX),
            Listed::Allow => return None,
            Listed::Neither => {}
        }
        let e = self
            .head
            .store
            .get_if_touched(&Key::request(self.addr(ip)))?;
        if let Some((reason, deadline)) = standing(&e, now) {
            return denial(reason, deadline, deadline.unwrap_or(Tick::MAX));
        }
        let window = self.config.requests.window.as_ticks();
        let log = e.log();
        let oldest = log.oldest_in(now, window)?;
        let expired = log.iter().take_while(|&t| t < oldest).count();
        let used = log.len().saturating_sub(expired);
        if used < usize::try_from(self.config.requests.max_requests).unwrap_or(usize::MAX) {
            return None;
        }
        if is_new_violation(e.cold(), window, now) {
            return None;
        }
        // Not new: so there is a last violation, and it counts as new
        // from `last + window` on.
        let last = e.cold().newest_violation()?;
        let reset = oldest.saturating_add(window);
        denial(
            Reason::RateLimited,
            Some(reset),
            reset.min(last.saturating_add(window)),
        )
    }

    /// What [`check_request`](Self::check_request) would answer, consuming
    /// nothing: `remaining` is the quota left *before* a request.
    pub fn peek_request(&self, ip: IpAddr, now: Instant) -> Decision {
        if let Some(d) = self.listed(&ip) {
            return d;
        }
        let now = self.peek_clock(now);
        let max = self.config.requests.max_requests;
        let window = self.config.requests.window.as_ticks();
        let Some(e) = self.head.store.get(&Key::request(self.addr(ip))) else {
            return Decision::Allow {
                remaining: max,
                reset_after: Duration::from_ticks(0),
            };
        };
        if let Some(d) = standing_denial(&e, now) {
            return d;
        }
        let log = e.log();
        let used = log.count(now, window);
        let reset_after = match log.oldest_in(now, window) {
            Some(t) => left_in_window(now, t, window),
            None => Duration::from_ticks(0),
        };
        if used < max {
            Decision::Allow {
                remaining: max.saturating_sub(used),
                reset_after,
            }
        } else {
            Decision::Deny {
                reason: Reason::RateLimited,
                retry_after: reset_after,
            }
        }
    }

    /// Ban `ip` by hand. False if the table had no room for it.
    pub fn ban(&mut self, ip: IpAddr, now: Instant) -> bool {
        let now = self.clock(now);
        let key = Key::request(self.addr(ip));
        let done = match self.upsert(key, now) {
            Some(mut e) => {
                e.cold_make().request_mut().banned = true;
                true
            }
            None => false,
        };
        if done {
            self.pinned_changed(key);
        }
        done
    }

    /// Note that `key`'s ban, block or lock was set, lifted or removed.
    pub(crate) fn pinned_changed(&mut self, key: Key) {
        self.stats.pin_changes = self.stats.pin_changes.wrapping_add(1);
        self.changed.note(key);
        self.head.rules.set_dirty(true);
    }

    /// The keys whose ban, block or lock changed since the last call, and
    /// an empty set in their place: drain it after each call whose
    /// changes are to be persisted (see [`Changed`]).
    pub fn take_changed(&mut self) -> Changed {
        self.head.rules.set_dirty(false);
        core::mem::take(&mut self.changed)
    }

    /// Whether [`take_changed`](Self::take_changed) would return anything
    /// (for the growable table a flag beside the clock, so a host that
    /// drains only when something changed reads nothing more on most
    /// calls).
    pub fn has_changes(&self) -> bool {
        self.head
            .rules
            .dirty()
            .unwrap_or_else(|| !self.changed.is_empty())
    }

    /// Lift a ban and any block on `ip` (an operator's decision; violation
    /// history is forgotten too). True if there was one.
    pub fn unban(&mut self, ip: IpAddr) -> bool {
        let key = Key::request(self.addr(ip));
        let had = match self.head.store.get_mut(&key) {
            Some(mut e) => e.clear_block_and_ban(),
            None => false,
        };
        if had {
            self.pinned_changed(key);
        }
        had
    }

    /// Lift every block, ban and login lock on `ip` (the operator's
    /// "unban"): its request key, its login-ip key and every
    /// (username, `ip`) key, and forget their counts so the address is
    /// allowed at once. Returns how many keys held a ban, block or lock.
    /// O(capacity).
    pub fn lift(&mut self, ip: IpAddr) -> usize {
        let addr = self.addr(ip);
        let mut lifted = 0usize;
        let Limiter {
            head: Head { store, rules, .. },
            stats,
            changed,
            ..
        } = self;
        store.for_each_mut(&mut |k, mut e| {
            // A fresh start: the address works again at once.
            if k.addr() == addr && k.kind() != KeyKind::Account && e.lift() {
                lifted = lifted.saturating_add(1);
                stats.pin_changes = stats.pin_changes.wrapping_add(1);
                changed.note(*k);
                rules.set_dirty(true);
            }
        });
        lifted
    }

    /// Visit every ban, block and lock in force at `now` ([`Hold`]: which
    /// key, why, time left): the one listing every host shows.
    pub fn for_each_hold(&self, now: Instant, mut f: impl FnMut(Hold)) {
        let now = self.peek_clock(now);
        self.head.store.for_each(&mut |k, e| {
            if let Some(h) = e.hold(k, now) {
                f(h);
            }
        });
    }

    /// Visit every banned or currently blocked address with what holds it:
    /// `None` for a ban, `Some(time left)` for a block (the request-key
    /// part of [`for_each_hold`](Self::for_each_hold)).
    pub fn for_each_ban(&self, now: Instant, mut f: impl FnMut(Addr, Option<Duration>)) {
        self.for_each_hold(now, |h| {
            if h.kind == KeyKind::Request {
                f(h.addr, h.left);
            }
        });
    }

    /// Visit every key under a login lock at `now` with the time left (the
    /// lock part of [`for_each_hold`](Self::for_each_hold)).
    pub fn for_each_lock(&self, now: Instant, mut f: impl FnMut(Key, Duration)) {
        let now = self.peek_clock(now);
        self.head.store.for_each(&mut |k, e| {
            if let Some(h) = e.hold(k, now).filter(|h| h.kind != KeyKind::Request) {
                if let Some(left) = h.left {
                    f(*k, left);
                }
            }
        });
    }

    /// Take one of `ip`'s concurrency slots for guarded work (rule 7).
    pub fn acquire_slot(&mut self, ip: IpAddr, now: Instant) -> Option<SlotToken> {
        let now = self.clock(now);
        let key = Key::login_ip(self.addr(ip));
        self.acquire_slot_at(key, now)
    }

    pub(crate) fn acquire_slot_at(&mut self, key: Key, now: Tick) -> Option<SlotToken> {
        let id = self.next_slot;
        let ttl = self.config.slots.slot_ttl.as_ticks();
        let limit = self.config.slots.slots;
        let got = match self.upsert(key, now) {
            Some(mut e) => e.cold_make().login_mut().slots.acquire(id, now, ttl, limit),
            None => false,
        };
        if !got {
            return None;
        }
        self.next_slot = id.wrapping_add(1).max(1);
        Some(SlotToken { key, id })
    }

    /// Slots of `ip` held and not expired.
    pub fn slots_in_use(&self, ip: IpAddr, now: Instant) -> u32 {
        let now = self.peek_clock(now);
        let ttl = self.config.slots.slot_ttl.as_ticks();
        self.head
            .store
            .get(&Key::login_ip(self.addr(ip)))
            .map_or(0, |e| e.cold().live_slots(now, ttl))
    }

    /// Hand a slot back. False if it had already been reclaimed by its TTL.
    pub fn release_slot(&mut self, token: SlotToken) -> bool {
        self.head.store.get_mut(&token.key).is_some_and(|mut e| {
            let released = e
                .cold_held_mut()
                .and_then(Cold::login_if_held)
                .is_some_and(|l| l.slots.release(token.id));
            e.cold_shrink();
            released
        })
    }

    /// Remove every entry whose state can no longer affect a decision.
    /// O(capacity); run it on a timer, not per request.
    pub fn purge(&mut self, now: Instant) -> usize {
        let now = self.clock(now);
        let sweep = Sweep::new(&self.config, now);
        let removed = self.head.store.retain(&mut |k, e| !sweep.idle(k, &e));
        self.stats.purged = self.stats.purged.saturating_add(removed as u64);
        removed
    }

    /// Forget every key (counters stay).
    pub fn clear(&mut self) {
        self.head.store.clear();
    }
}

/// The entry for `key` in `store`, created (making room by the store's
/// eviction rule if full: a dead entry first, never a pinned one) and
/// touched; counts evictions by kind and refusals in `stats`.
// Inlined (with the store's `upsert`) into `check_request_with`.
#[inline(always)]
fn upsert_in<'a, S: Store<W>, const W: usize>(
    store: &'a mut S,
    stats: &mut Stats,
    evicted: &mut Evicted,
    key: Key,
    config: &Config,
    now: Tick,
) -> Option<S::Mut<'a>> {
    // The windows are read only if the store has to evict: a lookup that
    // finds its key or room touches no more of the configuration.
    let mut sweep = None;
    // Its state moved in: built with three stores, not three pointers.
    let classify = &mut move |k: &Key, e: S::Ref<'_>| {
        sweep
            .get_or_insert_with(|| Sweep::new(config, now))
            .class(k, &e)
    };
    match store.upsert(key, classify) {
        Upsert::Found {
            entry,
            evicted: gone,
        } => {
            if let Some((k, victim)) = gone {
                stats.evictions = stats.evictions.saturating_add(1);
                match victim {
                    Victim::Dead => stats.evicted_dead = stats.evicted_dead.saturating_add(1),
                    Victim::Live => stats.evicted_live = stats.evicted_live.saturating_add(1),
                }
                evicted.note(k, victim);
            }
            Some(entry)
        }
        Upsert::Full => {
            stats.table_full = stats.table_full.saturating_add(1);
            None
        }
    }
}

/// The answer to a request when the table is full of entries that may
/// not be evicted (`on_full`).
fn full_decision(config: &Config) -> Decision {
    match config.on_full {
        OnFull::Deny => Decision::Deny {
            reason: Reason::TableFull,
            retry_after: config.requests.window,
        },
        OnFull::Allow => Decision::Allow {
            remaining: 0,
            reset_after: Duration::from_ticks(0),
        },
    }
}

/// A ban or block that refuses any request outright: its reason and the
/// end of the block (`None`: a ban, forever).
#[inline(always)]
fn standing(e: &impl EntryRef, now: Tick) -> Option<(Reason, Option<Tick>)> {
    let e = e.cold_held()?;
    if e.banned() {
        return Some((Reason::Banned, None));
    }
    match e.block_until().get() {
        Some(u) if running(u, now) => Some((Reason::Blocked, Some(u))),
        _ => None,
    }
}

/// [`standing`] as the decision it gives at `now`.
#[inline]
fn standing_denial(e: &impl EntryRef, now: Tick) -> Option<Decision> {
    standing(e, now).map(|(reason, deadline)| Decision::Deny {
        reason,
        retry_after: deadline.map_or(Duration::MAX, |u| until(now, u)),
    })
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]
mod tests {
    use super::*;
    use crate::record::WallClock;
    use core::net::Ipv4Addr;

    type L = FixedLimiter<64, 16>;

    fn limiter() -> L {
        let mut c = Config::default();
        c.requests.max_requests = 3;
        c.login.max_failures = 3;
        c.login.ip_max_failures = Some(3);
        c.login.account_max_failures = Some(16);
        c.clamp_lookbacks(crate::FIXED_MAX_SPAN);
        L::new(c, Seed::new([3; 16])).unwrap()
    }

    fn ip(n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, n))
    }

    fn t(s: u64) -> Instant {
        Instant::from_secs(1000 + s)
    }

    #[test]
    fn set_config_keeps_every_entry_and_applies_to_the_next_decision() {
        let mut l = limiter();
        let (a, b, c) = (ip(1), ip(2), ip(3));
        // a: 3 allowed, then denied (quota 3).
        for _ in 0..3 {
            assert!(l.check_request(a, t(0)).is_allowed());
        }
        assert!(!l.check_request(a, t(0)).is_allowed());
        // b: banned; c: a locked pair.
        assert!(l.ban(b, t(0)));
        fail(&mut l, "carol", c, 3);
        assert!(!l.check_login("carol", c, t(0)).is_allowed());
        let held = l.len();

        // Quota 5: a's 3 logged requests still count, so 2 more pass.
        let mut bigger = l.config().clone();
        bigger.requests.max_requests = 5;
        l.set_config(bigger.clone()).unwrap();
        assert_eq!(l.config(), &bigger);
        assert!(l.len() >= held);
        assert!(l.check_request(a, t(1)).is_allowed());
        assert!(l.check_request(a, t(1)).is_allowed());
        assert!(!l.check_request(a, t(1)).is_allowed());
        assert_eq!(l.check_request(b, t(1)).reason(), Some(Reason::Banned));
        assert!(!l.check_login("carol", c, t(1)).is_allowed());

        // Quota 1: a fresh address gets exactly one.
        let mut smaller = bigger.clone();
        smaller.requests.max_requests = 1;
        l.set_config(smaller).unwrap();
        assert!(l.check_request(ip(9), t(2)).is_allowed());
        assert!(!l.check_request(ip(9), t(2)).is_allowed());
    }

    #[test]
    fn set_config_refuses_an_invalid_config_and_keeps_the_running_one() {
        let mut l = limiter();
        let before = l.config().clone();
        let mut bad = before.clone();
        bad.requests.max_requests = 0;
        assert_eq!(
            l.set_config(bad),
            Err(ConfigError::Zero {
                key: "requests.max_requests"
            })
        );
        let mut too_big = before.clone();
        too_big.requests.max_requests = 17; // W = 16
        assert!(l.set_config(too_big).is_err());
        let mut prefix = before.clone();
        prefix.ipv6_prefix = 48;
        assert!(matches!(
            l.set_config(prefix),
            Err(ConfigError::OutOfRange {
                key: "ipv6_prefix",
                ..
            })
        ));
        assert_eq!(l.config(), &before);
    }

    /// `n` failures of `user` from `a`, slots handed back.
    fn fail(l: &mut L, user: &str, a: IpAddr, n: u32) {
        for _ in 0..n {
            if let Some(s) = l.login_failed(user, a, t(0)).slot {
                l.release_slot(s);
            }
        }
    }

    #[test]
    fn changed_names_exactly_the_keys_whose_ban_block_or_lock_moved() {
        let mut l = limiter();
        let a = ip(1);
        let addr = l.addr(a);
        let req = Key::request(addr);
        let lip = Key::login_ip(addr);
        let pair = |l: &L, u: &str| Key::login_user(l.user_hash(u), addr);

        // Counting alone changes nothing that must outlive the process.
        for _ in 0..3 {
            assert!(l.check_request(a, t(0)).is_allowed());
        }
        fail(&mut l, "alice", a, 2);
        assert!(!l.has_changes());
        assert!(l.take_changed().is_empty());

        // The third failure locks the pair and (lock_ip_on_account_lock)
        // the ip: those two keys, nothing else.
        fail(&mut l, "alice", a, 1);
        assert!(l.has_changes());
        let c = l.take_changed();
        assert!(!l.has_changes());
        assert_eq!(c.keys(), &[pair(&l, "alice"), lip]);
        assert_eq!(c.spill(), Spill::None);
        assert!(l.take_changed().is_empty(), "drained");

        // A ban: the request key.
        assert!(l.ban(a, t(1)));
        assert_eq!(l.take_changed().keys(), &[req]);

        // A success removes the locked pair: that key.
        assert!(l.login_succeeded("alice", a, t(2)));
        assert_eq!(l.take_changed().keys(), &[pair(&l, "alice")]);

        // A lift: the ban and the ip lock, not the account key.
        assert_eq!(l.lift(a), 2);
        let c = l.take_changed();
        assert_eq!(c.keys().len(), 2);
        assert!(c.contains(&req) && c.contains(&lip));
        assert!(!c.contains(&Key::account(l.user_hash("alice"))));
        assert!(l.check_request(a, t(3)).is_allowed(), "lifted at once");
    }

    #[test]
    fn a_rate_limit_that_blocks_names_the_request_key() {
        let mut l = limiter();
        let a = ip(2);
        let mut blocked = false;
        for i in 0..200 {
            let d = l.check_request(a, t(i));
            let c = l.take_changed();
            if d.reason() == Some(Reason::Blocked) && !blocked {
                blocked = true;
                assert_eq!(c.keys(), &[Key::request(l.addr(a))], "the block, at {i}");
            } else {
                assert!(c.is_empty(), "nothing else changes, at {i}: {d:?}");
            }
        }
        assert!(blocked, "repeated violations block");
    }

    #[test]
    fn more_changed_keys_than_the_set_holds_spill_to_their_address() {
        let mut c = Changed::default();
        let a = Addr::from_ip(ip(1), 64);
        for u in 0..CHANGED_KEYS as u64 + 2 {
            c.note(Key::login_user(u, a));
        }
        c.note(Key::login_user(0, a)); // once only
        assert_eq!(c.keys().len(), CHANGED_KEYS);
        assert_eq!(c.spill(), Spill::Addr(a));
        assert!(c.contains(&Key::login_user(99, a)) && c.contains(&Key::request(a)));
        assert!(!c.contains(&Key::request(Addr::from_ip(ip(9), 64))));
        c.note(Key::request(Addr::from_ip(ip(9), 64)));
        assert_eq!(c.spill(), Spill::All);

        // A lift of an address with many locked pairs spills that way.
        let mut l = limiter();
        l.config.login.max_failures = 1; // every failure locks its pair
        l.config.login.ip_max_failures = Some(1);
        let users = ["u0", "u1", "u2", "u3", "u4", "u5"];
        for u in users {
            fail(&mut l, u, ip(3), 1);
        }
        let _ = l.take_changed();
        assert_eq!(l.lift(ip(3)), users.len() + 1, "the pairs and the ip");
        assert_eq!(l.take_changed().spill(), Spill::Addr(l.addr(ip(3))));
    }

    #[test]
    fn holds_are_listed_alike_from_entries_and_records() {
        let mut l = limiter();
        let (a, b) = (ip(4), ip(5));
        assert!(l.ban(a, t(0)));
        fail(&mut l, "bob", b, 3);
        let mut from_entries = crate::FixedVec::<Hold, 8>::new();
        l.for_each_hold(t(10), |h| from_entries.push(h).unwrap());
        from_entries.sort_unstable_by_key(|h| (h.addr, h.kind));
        let lock = Config::default().login.lock_for - Duration::from_secs(10);
        let want = [
            (l.addr(a), KeyKind::Request, Reason::Banned, None),
            (l.addr(b), KeyKind::LoginIp, Reason::IpLocked, Some(lock)),
            (
                l.addr(b),
                KeyKind::LoginUser,
                Reason::PairLocked,
                Some(lock),
            ),
        ];
        let got: crate::FixedVec<_, 8> = from_entries
            .iter()
            .map(|h| (h.addr, h.kind, h.reason, h.left))
            .collect();
        assert_eq!(got.as_slice(), &want[..]);

        // The same from records, at the same moment.
        let clock = WallClock {
            now: t(10),
            unix_ms: 1_700_000_000_000,
        };
        let mut from_records = crate::FixedVec::<Hold, 8>::new();
        l.export(clock, |r| {
            if let Some(h) = r.hold(clock.unix_ms) {
                from_records.push(h).unwrap();
            }
        });
        from_records.sort_unstable_by_key(|h| (h.addr, h.kind));
        assert_eq!(from_records, from_entries);

        // A record lifted is what the limiter's lift leaves.
        let mut recs: [Option<crate::Record<16>>; 8] = core::array::from_fn(|_| None);
        let mut n = 0;
        l.export(clock, |r| {
            recs[n] = Some(r.clone());
            n += 1;
        });
        for r in recs
            .iter_mut()
            .flatten()
            .filter(|r| r.key.addr() == l.addr(b))
        {
            let held = r.key.kind() != KeyKind::Account && r.lock_until.is_some();
            assert_eq!(r.lift(), held);
        }
        assert_eq!(l.lift(b), 2);
        for r in recs.iter().flatten().filter(|r| r.key.addr() == l.addr(b)) {
            assert_eq!(Some(r), l.record(&r.key, clock).as_ref(), "{:?}", r.key);
        }
    }

    #[test]
    fn lists_lookup_is_public_and_decides_like_the_limiter() {
        let mut l = limiter();
        let mut c = l.config().clone();
        c.lists.deny.push("192.0.2.0/28".parse().unwrap()).unwrap();
        c.lists.allow.push("192.0.2.0/24".parse().unwrap()).unwrap();
        l.set_config(c).unwrap();
        assert_eq!(l.config().lists.lookup(ip(1)), Listed::Deny, "deny wins");
        assert_eq!(l.config().lists.lookup(ip(200)), Listed::Allow);
        assert_eq!(Listed::Neither.decision(3), None);
        assert_eq!(Some(l.check_request(ip(1), t(0))), Listed::Deny.decision(0));
        assert_eq!(
            Some(l.check_request(ip(200), t(0))),
            Listed::Allow.decision(3)
        );
    }
}
