//! [`Limiter`]: the core's rules over sharded tables, for many threads and
//! tasks at once.
//!
//! Each shard is a core [`MapLimiter`] behind a read-write lock; an address's keys
//! (request, login-ip, every (username, address) pair) live in the shard
//! its keyed hash picks, and a username's account key in the shard its
//! hash picks, so every rule runs entirely under one lock and limits are
//! exact under contention. Requests whose answer changes nothing (a client
//! already denied, hammering) are answered from the shard's
//! [`HeldDenial`] or under the shared lock
//! ([`MapLimiter::standing_denial`]); everything else takes the exclusive
//! one, which clears the held denial first. No rule is restated here: every
//! decision is a core call.
//!
//! ```
//! use std::net::IpAddr;
//! use portcullis::{Limiter, LimiterOptions};
//! use portcullis::Config;
//!
//! let mut config = Config::default();
//! config.requests.max_requests = 2;
//! let limiter = Limiter::new(config, LimiterOptions::default()).unwrap();
//! let ip: IpAddr = "203.0.113.5".parse().unwrap();
//! let now = portcullis::clock::now();
//! assert!(limiter.check_request_at(ip, now).decision.is_allowed());
//! assert!(limiter.check_request_at(ip, now).decision.is_allowed());
//! assert!(!limiter.check_request_at(ip, now).decision.is_allowed());
//! ```
//!
//! ## Time
//!
//! Every call takes `now` as anything that converts into a
//! [`clock::Now`](crate::clock::Now): a reading from
//! [`clock::read`](crate::clock::read) (what [`Guard`](crate::Guard) passes,
//! one per request) or a bare [`Instant`](portcullis_core::Instant) from
//! [`clock::now`](crate::clock::now). The rules run on its monotonic part;
//! the records of what changed carry wall-clock times from the same
//! reading ([`Now::wall`](crate::clock::Now::wall)).
//!
//! ## What is written through
//!
//! After each call the core reports the keys whose ban, block or lock
//! changed ([`MapLimiter::take_changed`](portcullis_core::Limiter::take_changed));
//! their records, and only theirs, make up the call's [`Outcome::changes`].

use std::collections::BTreeMap;
use std::net::IpAddr;

use portcullis_core::Duration;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::clock::Now;
use crate::engine::AttemptId;
use crate::held::HeldDenial;
use portcullis_core::{
    Addr, Attempt, Changed, Config, ConfigError, Decision, Hold, Key, KeyKind, MapLimiter, Penalty,
    Seed, SlotToken, Spill, Stats, WallClock,
};
use std::sync::atomic::{AtomicU64, Ordering};

/// Timestamps per key log on the host: `requests.max_requests`,
/// `login.max_failures` and `login.account_max_failures` must not exceed it.
pub const LOG_CAPACITY: usize = 64;
const W: usize = LOG_CAPACITY;

/// One shard.
pub(crate) type Shard = MapLimiter<W>;

/// One key's state with wall-clock times, as the host exports, persists
/// and imports it: the core's [`Record`](portcullis_core::Record) with
/// [`LOG_CAPACITY`] timestamps.
pub type Record = portcullis_core::Record<W>;

/// Sizing.
#[derive(Clone, Copy, Debug)]
pub struct LimiterOptions {
    /// Keys held across all shards [1 000 000] (each shard gets 10 % headroom).
    pub max_entries: usize,
    /// Shard count \[64\]; more shards, less contention.
    pub shards: usize,
    /// The secret seed; `None` draws one from the OS RNG.
    pub seed: Option<Seed>,
}

impl Default for LimiterOptions {
    fn default() -> Self {
        LimiterOptions {
            max_entries: 1_000_000,
            shards: 64,
            seed: None,
        }
    }
}

/// Why a limiter could not be built.
#[derive(Debug)]
pub enum LimiterError {
    /// The rules do not hold together.
    Config(ConfigError),
    /// The OS RNG failed.
    Rng(getrandom::Error),
    /// Zero shards or zero entries.
    Sizing(&'static str),
}

impl std::fmt::Display for LimiterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LimiterError::Config(e) => write!(f, "{e}"),
            LimiterError::Rng(e) => write!(f, "no random seed: {e}"),
            LimiterError::Sizing(e) => write!(f, "limiter sizing: {e}"),
        }
    }
}

impl std::error::Error for LimiterError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LimiterError::Config(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ConfigError> for LimiterError {
    fn from(e: ConfigError) -> Self {
        LimiterError::Config(e)
    }
}

/// A decision and the persistent changes it made.
#[derive(Debug)]
pub struct Outcome<T> {
    /// The answer.
    pub decision: T,
    /// The records of the keys whose ban, block or lock changed (the
    /// core's [`Changed`] set, as records): write these through before
    /// answering the caller.
    pub changes: Vec<Record>,
}

/// Purge totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Entries removed.
    pub removed: usize,
    /// Entries kept.
    pub kept: usize,
}

/// One shard with its denial hint and held denial, on cache lines of its
/// own so two threads on neighbouring shards do not share a line (128: the
/// pair of lines adjacent-line prefetchers fetch together).
///
/// `repr(C)`, in the order a decision reads it: the denial hint, the lock
/// word, then the shard, whose first fields are what a request reads of
/// it (the core limiter's hot rule values, clock and store header), so a
/// decision on a new or cold key reads the one or two lines at the start
/// of its slot. The held denial, written without the lock, comes after
/// the shard on lines of its own (`HeldDenial` is 64-byte aligned).
#[repr(C, align(128))]
pub(crate) struct ShardSlot {
    /// A mark of the address this shard denied last (0: none).
    denied: AtomicU64,
    lock: RwLock<Shard>,
    /// The standing denial of the address this shard denied last, for
    /// answers without the lock.
    held: HeldDenial,
}

impl ShardSlot {
    /// The shard, shared.
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Shard> {
        // The core never panics, so a poisoned lock still holds a
        // consistent shard.
        self.lock.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The shard, exclusively: the held denial is cleared first, since
    /// whatever the caller does may change it.
    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, Shard> {
        let guard = self.lock.write().unwrap_or_else(PoisonError::into_inner);
        self.held.clear();
        guard
    }
}

/// The concurrent limiter.
pub struct Limiter {
    shards: Box<[ShardSlot]>,
    seed: Seed,
    route: (u64, u64),
    /// The rules in force: swapped whole by [`Limiter::set_config`].
    config: RwLock<std::sync::Arc<Config>>,
    /// The IPv6 aggregation prefix (fixed for the limiter's life).
    ipv6_prefix: u8,
    /// Manual decisions (addresses and ranges), checked before the rules.
    manual: crate::manual::ManualBans,
    /// What every request reads of the rules, kept beside them so the hot
    /// path never takes the config lock or touches the `Arc`'s count.
    hot: HotRules,
}

/// The few rule values read on every request (the `RateLimit-Policy`
/// quota, whether a block jitter is drawn), mirrored from the config in
/// force by [`Limiter::new`] and [`Limiter::set_config`].
#[derive(Debug, Default)]
struct HotRules {
    max_requests: std::sync::atomic::AtomicU32,
    window_ticks: AtomicU64,
    jitter: std::sync::atomic::AtomicBool,
}

impl HotRules {
    fn store(&self, c: &Config) {
        self.max_requests
            .store(c.requests.max_requests, Ordering::Relaxed);
        self.window_ticks
            .store(c.requests.window.as_ticks(), Ordering::Relaxed);
        self.jitter
            .store(c.blocks.block_jitter.as_ticks() > 0, Ordering::Relaxed);
    }
}

fn random_seed() -> Result<Seed, LimiterError> {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).map_err(LimiterError::Rng)?;
    Ok(Seed::new(b))
}

impl Limiter {
    /// A limiter with `config` and sizing `opts`.
    pub fn new(config: Config, opts: LimiterOptions) -> Result<Limiter, LimiterError> {
        if opts.shards == 0 {
            return Err(LimiterError::Sizing("shards must be at least 1"));
        }
        if opts.max_entries == 0 {
            return Err(LimiterError::Sizing("max_entries must be at least 1"));
        }
        let seed = match opts.seed {
            Some(s) => s,
            None => random_seed()?,
        };
        let hot = HotRules::default();
        hot.store(&config);
        // Keyed hashing spreads keys evenly but not exactly: give each shard
        // 10 % (and at least 64 keys) of headroom so `max_entries` keys fit
        // without evictions. The total may exceed `max_entries` by that much.
        let even = opts.max_entries.div_ceil(opts.shards);
        let per = even + (even / 10).max(64);
        let shards = (0..opts.shards)
            .map(|_| {
                Shard::new_growable(config.clone(), seed, per).map(|s| ShardSlot {
                    held: HeldDenial::default(),
                    denied: AtomicU64::new(0),
                    lock: RwLock::new(s),
                })
            })
            .collect::<Result<Vec<_>, _>>()?
            .into_boxed_slice();
        // Shard routing keys, derived from the seed so shard choice is as
        // unpredictable to an attacker as the table hashes.
        let kh = portcullis_core::KeyHasher::new(seed);
        let route = (
            kh.hash(&Key::account(0x5348_4152_4431)),
            kh.hash(&Key::account(0x5348_4152_4432)),
        );
        let ipv6_prefix = config.ipv6_prefix;
        Ok(Limiter {
            shards,
            seed,
            route,
            config: RwLock::new(std::sync::Arc::new(config)),
            ipv6_prefix,
            manual: crate::manual::ManualBans::new(),
            hot,
        })
    }

    /// The rules in force (a snapshot: a reload swaps them).
    pub fn config(&self) -> std::sync::Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Swap the rules for `config` on every shard without losing any
    /// key's state (a reload; see the core's
    /// [`set_config`](portcullis_core::Limiter::set_config)). `config` is
    /// checked first, against a scratch shard, so an invalid one changes
    /// nothing; the shards then switch one after another, each under its
    /// exclusive lock (which also drops its held denial, decided under the
    /// old rules). A decision racing the reload runs wholly on the old or
    /// wholly on the new rules of its shard.
    pub fn set_config(&self, config: Config) -> Result<(), ConfigError> {
        // The same check every shard will make, before any shard changes.
        Shard::new_growable(self.config().as_ref().clone(), self.seed, 1)?
            .set_config(config.clone())?;
        let mut current = self.config.write().unwrap_or_else(PoisonError::into_inner);
        for slot in self.shards.iter() {
            slot.write().set_config(config.clone())?;
        }
        self.hot.store(&config);
        *current = std::sync::Arc::new(config);
        Ok(())
    }

    /// `(max_requests, window)` of the rules in force, without the config
    /// lock (read for every response's `RateLimit-Policy`; a response racing
    /// a reload may show one old and one new value, a decision never does).
    pub fn quota(&self) -> (u32, Duration) {
        (
            self.hot.max_requests.load(Ordering::Relaxed),
            Duration::from_ticks(self.hot.window_ticks.load(Ordering::Relaxed)),
        )
    }

    /// The manual decisions (addresses and ranges) this limiter enforces
    /// before its rules; [`Guard`](crate::Guard) persists changes to them.
    pub fn manual(&self) -> &crate::manual::ManualBans {
        &self.manual
    }

    /// The seed (persist it with the records: username hashes depend on it).
    pub fn seed(&self) -> Seed {
        self.seed
    }

    /// Shard of a 128-bit value given as two words: a seeded
    /// multiplicative mix, not a keyed hash. The tables inside each shard
    /// are keyed (HashDoS-safe); a skew of keys over shards only costs
    /// contention, so the cheap mix will do.
    #[inline]
    fn mix(&self, hi: u64, lo: u64) -> usize {
        let folded = (lo ^ self.route.1) ^ (hi ^ self.route.0).rotate_left(29);
        let h = folded.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        // Top 32 bits, scaled to the shard count (uniform for any count).
        (((h >> 32) * self.shards.len() as u64) >> 32) as usize
    }

    /// Shard of an address's keys and its denial mark (a 64-bit fold of
    /// the address, never 0, the empty hint: only a hint, two addresses
    /// may share it), from the address's two 64-bit halves.
    #[inline]
    fn route_addr(&self, addr: Addr) -> (usize, u64) {
        let [hi, lo] = crate::held::words_of(addr);
        (self.mix(hi, lo), (lo ^ hi.rotate_left(32)) | 1)
    }

    fn index_for_key(&self, key: &Key) -> usize {
        match key.kind() {
            // All ones in the high word, which an address rarely has (and
            // sharing a shard with one costs only contention).
            KeyKind::Account => self.mix(u64::MAX, key.user()),
            _ => self.route_addr(key.addr()).0,
        }
    }

    #[inline]
    fn addr_of(&self, ip: IpAddr) -> Addr {
        Addr::from_ip(ip, self.ipv6_prefix)
    }

    fn shard_for_addr(&self, addr: Addr) -> &ShardSlot {
        &self.shards[self.index_for_key(&Key::request(addr))]
    }

    fn shard_for_user(&self, user: u64) -> &ShardSlot {
        &self.shards[self.index_for_key(&Key::account(user))]
    }

    /// Which shard holds `key`.
    pub(crate) fn shard_for_key(&self, key: &Key) -> &ShardSlot {
        &self.shards[self.index_for_key(key)]
    }

    /// The index of the shard that holds `key` (below `shards`): keys with
    /// the same index contend for one lock.
    pub fn shard_of(&self, key: &Key) -> usize {
        self.index_for_key(key)
    }

    /// Run `f` on `ip`'s shard and collect the records of the keys whose
    /// ban, block or lock it changed.
    fn on_addr<T>(&self, ip: IpAddr, now: Now, f: impl FnOnce(&mut Shard) -> T) -> Outcome<T> {
        let addr = self.addr_of(ip);
        Self::on(self.shard_for_addr(addr), now, f)
    }

    /// [`on_addr`](Self::on_addr) for the shard in `slot`.
    fn on<T>(slot: &ShardSlot, now: Now, f: impl FnOnce(&mut Shard) -> T) -> Outcome<T> {
        let mut shard = slot.write();
        // Whatever an earlier call left undrained is not this call's. The
        // set is read in place and drained only when it holds something:
        // most calls change no ban, block or lock, and copy nothing.
        if shard.has_changes() {
            let _ = shard.take_changed();
        }
        let decision = f(&mut shard);
        if !shard.has_changes() {
            return Outcome {
                decision,
                changes: Vec::new(),
            };
        }
        let changed = shard.take_changed();
        Outcome {
            decision,
            changes: changes_of(&shard, &changed, now.wall()),
        }
    }

    /// Rules 1–4 and 9 for a request from `ip` at `now`.
    ///
    /// A denial that changes nothing (a key already denied and most
    /// recently seen: a client hammering) is decided without the exclusive
    /// lock: from the shard's held denial while it holds (no lock at
    /// all), else under the shared lock, which then holds the new standing
    /// denial. That is tried only for the address the shard denied last (a
    /// hint, one relaxed load), so other requests pay nothing for it.
    ///
    /// The held-denial answer is inlined into the caller and keeps its
    /// values in registers (every step it calls is `#[inline]`): passed
    /// through memory between separate functions, each small struct
    /// (address, held denial, decision) was written field by field and read
    /// back whole, a store-forwarding stall per hand-over that cost more
    /// than the rest of the path.
    #[inline]
    pub fn check_request_at(&self, ip: IpAddr, now: impl Into<Now>) -> Outcome<Decision> {
        let at = now.into();
        let addr = self.addr_of(ip);
        let (i, mark) = self.route_addr(addr);
        // Indexed once: the slow path and the exclusive lock take the slot.
        let slot = &self.shards[i];
        if self.manual.is_empty() {
            if slot.denied.load(Ordering::Relaxed) != mark {
                // No manual decision and not the address this shard
                // denied last (most requests): straight to the exclusive
                // lock, with no test made twice.
                return self.check_request_exclusive(ip, at, slot, mark);
            }
            if let Some(decision) = Self::held_denial(slot, addr, at.mono()) {
                return Outcome {
                    decision,
                    changes: Vec::new(),
                };
            }
        }
        self.check_request_slow(ip, at, addr, slot, mark)
    }

    /// The denial the shard in `slot` holds for `addr` at `now`, if it
    /// holds then.
    #[inline]
    fn held_denial(
        slot: &ShardSlot,
        addr: Addr,
        now: portcullis_core::Instant,
    ) -> Option<Decision> {
        slot.held.get(addr)?.decision_at(now)
    }

    /// [`check_request_at`](Self::check_request_at) past the held denial:
    /// manual decisions, the shared-lock answer, then the exclusive lock.
    #[inline(never)]
    fn check_request_slow(
        &self,
        ip: IpAddr,
        at: Now,
        addr: Addr,
        slot: &ShardSlot,
        mark: u64,
    ) -> Outcome<Decision> {
        if let Some(decision) = self.manual_denial_by_ref(&ip, &at) {
            return Outcome {
                decision,
                changes: Vec::new(),
            };
        }
        let now = at.mono();
        if slot.denied.load(Ordering::Relaxed) == mark {
            let held = Self::held_denial(slot, addr, now);
            let decision = held.or_else(|| {
                let shard = slot.read();
                let standing = shard.standing_denial(ip, now)?;
                slot.held.set(addr, &standing);
                standing.decision_at(now)
            });
            if let Some(decision) = decision {
                return Outcome {
                    decision,
                    changes: Vec::new(),
                };
            }
        }
        self.check_request_exclusive(ip, at, slot, mark)
    }

    /// The request decided under the exclusive lock of the shard in
    /// `slot` (the core's `check_request_with`); a denial marks the
    /// address (`mark`) as the one the shard denied last.
    #[inline(never)]
    fn check_request_exclusive(
        &self,
        ip: IpAddr,
        at: Now,
        slot: &ShardSlot,
        mark: u64,
    ) -> Outcome<Decision> {
        let now = at.mono();
        // Drawn outside the shard's lock (an RNG call when a jitter is set).
        let jitter = if self.hot.jitter.load(Ordering::Relaxed) {
            crate::jitter::draw(&self.config())
        } else {
            portcullis_core::Jitter::NONE
        };
        let out = Self::on(slot, at, |s| s.check_request_with(ip, now, jitter));
        if !out.decision.is_allowed() && slot.denied.load(Ordering::Relaxed) != mark {
            slot.denied.store(mark, Ordering::Relaxed);
        }
        out
    }

    /// What `check_request_at` would say, consuming nothing.
    pub fn peek_request_at(&self, ip: IpAddr, now: impl Into<Now>) -> Decision {
        self.shard_for_addr(self.addr_of(ip))
            .read()
            .peek_request(ip, now.into().mono())
    }

    /// Whether a login may proceed (records nothing).
    pub fn check_login_at(&self, user: &str, ip: IpAddr, now: impl Into<Now>) -> Decision {
        let at = now.into();
        if let Some(d) = self.manual_denial(ip, at) {
            return d;
        }
        self.shard_for_addr(self.addr_of(ip))
            .write()
            .check_login(user, ip, at.mono())
    }

    /// A manual decision holding `ip` at `at`, if any (no lock while there
    /// are none). [`check_request_at`](Self::check_request_at) and the
    /// login checks ask it first; a fleet backend asks it before Redis.
    #[inline]
    pub fn manual_denial(&self, ip: IpAddr, at: Now) -> Option<Decision> {
        self.manual_denial_by_ref(&ip, &at)
    }

    /// [`manual_denial`](Self::manual_denial) for the request path: the
    /// check inline, the lookup out of line and by reference, so the
    /// caller's address is not copied for a lookup that an empty set of
    /// manual decisions never makes.
    #[inline]
    fn manual_denial_by_ref(&self, ip: &IpAddr, at: &Now) -> Option<Decision> {
        if self.manual.is_empty() {
            return None;
        }
        self.manual_lookup(ip, at)
    }

    #[cold]
    #[inline(never)]
    fn manual_lookup(&self, ip: &IpAddr, at: &Now) -> Option<Decision> {
        self.manual.check(*ip, at.unix_ms())
    }

    /// Record a failed login: the account throttle in the username's shard,
    /// then the pair and ip in the address's shard.
    pub fn login_failed_at(&self, user: &str, ip: IpAddr, now: impl Into<Now>) -> Outcome<Penalty> {
        let at = now.into();
        let now = at.mono();
        let uh = self.shard_for_addr(self.addr_of(ip)).read().user_hash(user);
        let throttled = self
            .shard_for_user(uh)
            .write()
            .record_account_failure(user, ip, now);
        self.on_addr(ip, at, |s| s.login_failed_pair(user, ip, now, throttled))
    }

    /// Reserve a login attempt before its password is checked (core
    /// `begin_login`, split like [`login_failed_at`](Self::login_failed_at)):
    /// the account failure in the username's shard, then the pair and ip
    /// in the address's shard, atomically there; a refusal hands the
    /// account failure back. `Err` is the denial.
    pub fn begin_login_at(
        &self,
        user: &str,
        ip: IpAddr,
        now: impl Into<Now>,
    ) -> Outcome<Result<Attempt<AttemptId, SlotToken>, Decision>> {
        let at = now.into();
        if let Some(d) = self.manual_denial(ip, at) {
            return Outcome {
                decision: Err(d),
                changes: Vec::new(),
            };
        }
        let now = at.mono();
        let uh = self.shard_for_addr(self.addr_of(ip)).read().user_hash(user);
        let account = self.shard_for_user(uh);
        let (throttled, acct) = account.write().reserve_account(user, ip, now);
        let out = self.on_addr(ip, at, |s| s.begin_login_pair(user, ip, now, throttled));
        let decision = match out.decision {
            Ok(a) => Ok(Attempt {
                id: AttemptId::local(a.id, acct),
                penalty: a.penalty,
            }),
            Err(d) => {
                account.write().cancel_account(user, acct);
                Err(d)
            }
        };
        Outcome {
            decision,
            changes: out.changes,
        }
    }

    /// Settle a reserved attempt: `ok` (right password) clears the pair and
    /// takes the failure back from the ip and the account; a wrong one
    /// locks what reached `max_failures`. True if the pair was cleared
    /// (`ok`) or something was locked (wrong).
    pub fn finish_login_at(
        &self,
        user: &str,
        ip: IpAddr,
        id: AttemptId,
        ok: bool,
        now: impl Into<Now>,
    ) -> Outcome<bool> {
        let pair = portcullis_core::AttemptId::from_ticks(id.pair());
        let account = portcullis_core::AttemptId::from_ticks(id.account());
        let at = now.into();
        let now = at.mono();
        if !ok {
            return self.on_addr(ip, at, |s| s.login_attempt_failed(user, ip, pair, now));
        }
        let uh = self.shard_for_addr(self.addr_of(ip)).read().user_hash(user);
        let out = self.on_addr(ip, at, |s| {
            s.login_attempt_succeeded_pair(user, ip, pair, now)
        });
        self.shard_for_user(uh)
            .write()
            .cancel_account(user, account);
        out
    }

    /// Record a successful login (clears the pair).
    pub fn login_succeeded_at(&self, user: &str, ip: IpAddr, now: impl Into<Now>) -> Outcome<bool> {
        let at = now.into();
        // A lock the pair held is persisted; its removal is written through
        // (an empty record deletes the row) so it cannot come back.
        self.on_addr(ip, at, |s| s.login_succeeded(user, ip, at.mono()))
    }

    /// The penalty of a hidden lock (core `hidden_lock_penalty`): what the
    /// next wrong password would cost, in a slot of `ip`; counts nothing.
    pub fn hidden_lock_penalty_at(&self, ip: IpAddr, now: impl Into<Now>) -> Penalty {
        self.shard_for_addr(self.addr_of(ip))
            .write()
            .hidden_lock_penalty(ip, now.into().mono())
    }

    /// Take a concurrency slot of `ip`.
    pub fn acquire_slot_at(&self, ip: IpAddr, now: impl Into<Now>) -> Option<SlotToken> {
        self.shard_for_addr(self.addr_of(ip))
            .write()
            .acquire_slot(ip, now.into().mono())
    }

    /// Hand a slot back.
    pub fn release_slot(&self, token: SlotToken) -> bool {
        self.shard_for_key(&token.key()).write().release_slot(token)
    }

    /// Ban `ip` by hand.
    pub fn ban_at(&self, ip: IpAddr, now: impl Into<Now>) -> Outcome<bool> {
        let at = now.into();
        self.on_addr(ip, at, |s| s.ban(ip, at.mono()))
    }

    /// Lift every block, ban and lock on `ip` (core `lift`), the records
    /// written with the time read now.
    pub fn lift(&self, ip: IpAddr) -> Outcome<usize> {
        self.lift_at(ip, crate::clock::read())
    }

    /// [`lift`](Self::lift) with the records' times from `now`.
    pub fn lift_at(&self, ip: IpAddr, now: impl Into<Now>) -> Outcome<usize> {
        self.on_addr(ip, now.into(), |s| s.lift(ip))
    }

    /// Every banned, blocked or ip-locked address (core
    /// [`for_each_hold`](portcullis_core::Limiter::for_each_hold); locks of
    /// single (username, address) pairs are not listed).
    pub fn bans_at(&self, now: impl Into<Now>) -> Vec<Hold> {
        let now = now.into().mono();
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            shard.read().for_each_hold(now, |h| {
                if h.kind != KeyKind::LoginUser {
                    out.push(h);
                }
            });
        }
        out.sort_by(|a, b| a.addr.ip().cmp(&b.addr.ip()).then(a.kind.cmp(&b.kind)));
        out
    }

    /// Remove state that can no longer matter, shard by shard.
    pub fn purge_at(&self, now: impl Into<Now>) -> PurgeReport {
        let now = now.into().mono();
        let mut r = PurgeReport::default();
        for shard in self.shards.iter() {
            let mut s = shard.write();
            r.removed += s.purge(now);
            r.kept += s.len();
        }
        r
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counters summed over shards.
    pub fn stats(&self) -> Stats {
        let mut t = Stats::default();
        for s in self.shards.iter() {
            let s = s.read().stats();
            t.table_full += s.table_full;
            t.evictions += s.evictions;
            t.evicted_dead += s.evicted_dead;
            t.evicted_live += s.evicted_live;
            t.purged += s.purged;
        }
        t
    }

    /// Keys held at most.
    pub fn capacity(&self) -> usize {
        self.shards.iter().map(|s| s.read().capacity()).sum()
    }

    /// Every record, for snapshots.
    pub fn export(&self, clock: WallClock) -> Vec<Record> {
        let mut out = Vec::new();
        for s in self.shards.iter() {
            s.read().export(clock, |r| out.push(r.clone()));
        }
        out
    }

    /// Load records (from a snapshot) into their shards; all-or-nothing per
    /// call: records are checked by the core before anything is replaced.
    pub fn import(
        &self,
        clock: WallClock,
        records: &[Record],
    ) -> Result<usize, portcullis_core::ImportError> {
        let mut by_shard: BTreeMap<usize, Vec<Record>> = BTreeMap::new();
        for r in records {
            by_shard
                .entry(self.index_for_key(&r.key))
                .or_default()
                .push(r.clone());
        }
        let mut n = 0;
        for (i, recs) in by_shard {
            n += self.shards[i].write().import(clock, &recs)?;
        }
        Ok(n)
    }
}

/// The records of what `changed` names in `shard`, at `clock`: a key no
/// longer held is written as an empty record (which deletes its row).
fn changes_of(shard: &Shard, changed: &Changed, clock: WallClock) -> Vec<Record> {
    let mut upsert: Vec<Record> = changed
        .keys()
        .iter()
        .map(|k| shard.record(k, clock).unwrap_or_else(|| Record::empty(*k)))
        .collect();
    if changed.spill() != Spill::None {
        // More keys than the core's set holds (a lift of an address with
        // many locked pairs): every record it covers.
        shard.export(clock, |r| {
            if changed.contains(&r.key) && !changed.keys().contains(&r.key) {
                upsert.push(r.clone());
            }
        });
    }
    upsert
}
