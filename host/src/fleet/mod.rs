//! Redis fleet backend: one limit across many servers.
//!
//! Every decision runs atomically inside Redis as one call of a Lua script
//! ([`RULES`], `rules.lua`), which is portcullis-core's rules translated
//! once; the differential proptest `tests/tests/redis_diff.rs` runs the same
//! operation sequences through the core and through Redis and requires the
//! same decisions, reasons and times. Calls go out as `EVALSHA`; after a
//! `SCRIPT FLUSH` or a Redis restart a `NOSCRIPT` answer is followed by
//! `EVAL` of the script itself on the same node, which loads it there.
//!
//! One Redis node or a Redis Cluster ([`Endpoint`], [`RedisLimiter::connect_to`]):
//! `cluster.rs` holds the connection, which node serves which slot and how
//! each master fares ([`RedisLimiter::nodes`]).
//!
//! ## What stays in Rust
//!
//! Configuration is not state: the allow/deny lists are applied here before
//! Redis is asked, with the core's own [`Lists::lookup`] and
//! [`Listed::decision`] (deny wins), addresses are aggregated with
//! [`Addr::from_ip`] and usernames hashed with the core's keyed
//! [`UserHasher`], so every server of a fleet must share the [`Config`] and
//! the [`Seed`].
//!
//! ## Keys (Redis Cluster compatible)
//!
//! One Redis string per core key, a cmsgpack map of that key's state:
//!
//! | core key | Redis key |
//! | --- | --- |
//! | request | `<ns>:{a:<32 hex addr>}:req` |
//! | login ip | `<ns>:{a:<32 hex addr>}:lip` |
//! | (user, ip) | `<ns>:{a:<32 hex addr>}:lu:<16 hex user hash>` |
//! | account | `<ns>:{u:<16 hex user hash>}:acct` |
//! | manual bans (all) | `<ns>:manual`, a hash (see `manual.rs`) |
//! | lift counter of the denial caches | `<ns>:{denials}:v` (see [`denials`]) |
//! | the fleet's seed | `<ns>:seed` (set once, `SET NX`) |
//!
//! After an outage, what the local fallback imposed is written back one
//! key per call with the script's `merge` op ([`reconcile`]).
//!
//! Keys one call touches share a hash tag, so each call stays in one slot
//! (the manual-bans hash and the seed are one key each; `lift` scans the
//! node of the address's slot, `bans` every master).
//! The account key lives in another slot than the address keys, so
//! [`RedisLimiter::login_failed`] is two calls: the account count first
//! (core [`Limiter::record_account_failure`](portcullis_core::Limiter::record_account_failure)),
//! then the pair and ip (core `login_failed_pair`) with its `throttled`
//! answer. Each call is atomic; nothing is read, changed in Rust and
//! written back.
//!
//! Every write sets `PEXPIRE` to how long the key's state can still affect
//! a decision (log window, violation memory and ban lookback, block and lock
//! end, slot TTL) plus a slack ([`RedisLimiter::with_ttl_slack`], default
//! 1 s), so idle keys vanish by themselves; a banned key has no TTL.
//! Redis has no table to fill, so eviction and `TableFull` never happen.
//!
//! ## Time and clock skew
//!
//! Every method takes `now_us`, Unix time in microseconds, passed into the
//! script (tests are deterministic; production passes the Unix time of the
//! request's one reading, [`Now::unix_us`](crate::clock::Now::unix_us)). Servers of a fleet must keep their clocks NTP-synced:
//! a server whose clock is off by `s` shifts every window, block and lock
//! it decides by `s`. The core never lets its clock run backwards (it
//! clamps `now` to the latest it has seen); here each key remembers the
//! latest `now` it has seen and clamps to that instead, so a lagging server
//! cannot reorder a key's log, but its `now` may differ from the core's
//! global clamp when calls for *other* keys came with later times.
//!
//! Times and durations are integers below 2^53 µs (about 285 years) inside
//! Lua; longer durations are clamped to that.
//!
//! ## Differences from the core that the differential test avoids
//!
//! * the clock clamp is per key (above);
//! * state expires by TTL, so counts that the core keeps for stale state
//!   (e.g. [`RedisLimiter::lift`] counting an expired block, or
//!   [`RedisLimiter::login_succeeded`] finding a long-idle pair record)
//!   can differ once a key has expired; decisions cannot.
//! * [`RedisLimiter::lift`] finds the address's keys with `SCAN` and then
//!   lifts them in one call; a key created in between is not lifted.

mod cluster;
pub mod denials;
mod engine;
pub mod journal;
mod manual;
pub mod reconcile;

pub(crate) use cluster::open;
pub use cluster::{Endpoint, NodeHealth, NODE_OUTAGES, NODE_UP};
pub use engine::{
    connect, connect_fleet, connect_fleet_journaled, connect_with_journal, FleetEngine,
    FleetOptions, MANUAL_SYNC, NAMESPACE,
};

use std::net::IpAddr;
use std::time::Duration as StdDuration;

use crate::engine::AttemptId;
use cluster::{Con, Nodes};
use portcullis_core::Duration;
#[cfg(doc)]
use portcullis_core::Lists;
use portcullis_core::{
    Addr, Attempt, Config, ConfigError, Decision, Hold, Jitter, Key, Listed, NoSlot, Penalty,
    Reason, Seed, UserHasher,
};
use redis::{AsyncCommands, Script};
use std::sync::Arc;

/// The Lua source of the rules, as sent to Redis.
pub const RULES: &str = include_str!("rules.lua");

/// Default bound on one decision's round trip.
pub const DEFAULT_TIMEOUT: StdDuration = StdDuration::from_millis(50);

/// Default extra lifetime of every key beyond what its state needs.
pub const DEFAULT_TTL_SLACK: StdDuration = StdDuration::from_secs(1);

/// Largest time or duration the script handles exactly (2^53 - 1 µs).
const MAX_US: u64 = (1 << 53) - 1;

/// What can go wrong talking to Redis. Hosts fall back (or fail closed) on
/// any of them; none is a panic.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// The Redis URL does not parse (the URL is shown without its password).
    #[error("bad redis_url {url:?}: {source}")]
    BadUrl {
        /// The URL, userinfo redacted.
        url: String,
        /// Why it was refused.
        source: redis::RedisError,
    },
    /// The first connection could not be made.
    #[error("cannot connect to redis at {url:?}: {source}")]
    Connect {
        /// The URL, userinfo redacted.
        url: String,
        /// Why.
        source: redis::RedisError,
    },
    /// Redis did not answer within the per-call timeout.
    #[error("redis did not answer within {0:?}")]
    Timeout(StdDuration),
    /// An I/O or server error (including script errors such as corrupt
    /// state in a key).
    #[error("redis error: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis answered with a reply of an unexpected shape.
    #[error("unexpected reply from redis: {0}")]
    Unexpected(String),
    /// The configuration cannot work.
    #[error("invalid configuration: {0}")]
    Config(ConfigError),
    /// The OS RNG failed (drawing the fleet's seed).
    #[error("no random seed: {0}")]
    Rng(getrandom::Error),
}

/// A concurrency slot held in Redis (rule 7). Hand it back with
/// [`RedisLimiter::release_slot`]; it is not `Clone`, so it is released at
/// most once. A slot not released within `slot_ttl` is reclaimed.
#[derive(Debug, PartialEq, Eq)]
pub struct FleetSlot {
    key: String,
    id: u64,
}

impl FleetSlot {
    /// The Redis key holding the slot (the address's `:lip` key).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The slot id, unique per key.
    pub fn id(&self) -> u64 {
        self.id
    }
}

fn flag(v: i64, what: &str) -> Result<bool, FleetError> {
    match v {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(FleetError::Unexpected(format!("{what} flag {v}"))),
    }
}

/// A penalty from the script's reply fields: delay (µs), throttled,
/// refused and locked flags, slot id (0: none) on `ip_key`.
fn penalty_of(
    d: i64,
    throttled: i64,
    refused: i64,
    locked: i64,
    slot: i64,
    ip_key: String,
) -> Result<Penalty<FleetSlot>, FleetError> {
    let slot = nat(slot, "slot id")?;
    Ok(Penalty {
        delay: micros(d, "delay")?,
        throttled: flag(throttled, "throttled")?,
        slot: (slot != 0).then_some(FleetSlot {
            key: ip_key,
            id: slot,
        }),
        refused: flag(refused, "refused")?,
        locked: flag(locked, "locked")?,
    })
}

/// The fleet limiter: the core's rules, state in Redis.
///
/// Cheap to clone (one node's connection manager, or a cluster's
/// connection, multiplexes); `Send + Sync`.
#[derive(Clone)]
pub struct RedisLimiter {
    con: Con,
    /// A cluster's masters and their health (`None`: one node).
    nodes: Option<Arc<Nodes>>,
    script: Script,
    config: Config,
    users: UserHasher,
    ns: String,
    timeout: StdDuration,
    slack_ms: u64,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("namespace", &self.ns)
            .field("timeout", &self.timeout)
            .field("ttl_slack_ms", &self.slack_ms)
            .finish_non_exhaustive()
    }
}

/// The wall clock as Unix microseconds (0 before 1970): [`crate::clock::unix_us`].
/// A request's time is read once, with [`crate::clock::read`]; pass its
/// [`Now::unix_us`](crate::clock::Now::unix_us) rather than reading this again.
pub fn unix_now_us() -> u64 {
    crate::clock::unix_us()
}

/// `url` with any password hidden.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}"),
        None => url.to_string(),
    }
}

fn us(d: Duration) -> u64 {
    d.as_micros().min(MAX_US)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn unhex16(s: &str) -> Option<[u8; 16]> {
    if s.len() != 32 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Escape glob metacharacters for `SCAN MATCH`.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A non-negative integer from a script reply.
fn nat(v: i64, what: &str) -> Result<u64, FleetError> {
    u64::try_from(v).map_err(|_| FleetError::Unexpected(format!("negative {what}: {v}")))
}

fn micros(v: i64, what: &str) -> Result<Duration, FleetError> {
    Ok(Duration::from_micros(nat(v, what)?))
}

fn count(v: i64, what: &str) -> Result<u32, FleetError> {
    u32::try_from(v).map_err(|_| FleetError::Unexpected(format!("{what} out of range: {v}")))
}

/// A request or login decision reply.
fn decision(reply: &[i64]) -> Result<Decision, FleetError> {
    let deny = |reason, retry: i64| -> Result<Decision, FleetError> {
        Ok(Decision::Deny {
            reason,
            retry_after: micros(retry, "retry_after")?,
        })
    };
    match *reply {
        [0, remaining, reset] => Ok(Decision::Allow {
            remaining: count(remaining, "remaining")?,
            reset_after: micros(reset, "reset_after")?,
        }),
        [1, retry] => deny(Reason::RateLimited, retry),
        [2, retry] => deny(Reason::Blocked, retry),
        [3, _] => Ok(Decision::Deny {
            reason: Reason::Banned,
            retry_after: Duration::MAX,
        }),
        [4, retry] => deny(Reason::PairLocked, retry),
        [5, retry] => deny(Reason::IpLocked, retry),
        _ => Err(FleetError::Unexpected(format!("decision reply {reply:?}"))),
    }
}

impl RedisLimiter {
    /// Connect to `url` (e.g. `redis://127.0.0.1:6379/0`) and load nothing
    /// yet (the script is loaded on first use). `namespace` prefixes every
    /// key; `timeout` bounds every call (and the first connection);
    /// [`DEFAULT_TIMEOUT`] is 50 ms. Every server of a fleet must use the
    /// same `config`, `seed` and `namespace`.
    pub async fn connect(
        url: &str,
        config: Config,
        seed: Seed,
        namespace: &str,
        timeout: StdDuration,
    ) -> Result<Self, FleetError> {
        Self::connect_to(
            &Endpoint::Single(url.to_string()),
            config,
            seed,
            namespace,
            timeout,
        )
        .await
    }

    /// [`connect`](Self::connect) to one node or to a Redis Cluster
    /// ([`Endpoint::Cluster`]: some of its nodes' URLs; `MOVED`/`ASK` are
    /// followed by the cluster client, and the health of each master is
    /// tracked, see [`nodes`](Self::nodes)).
    pub async fn connect_to(
        endpoint: &Endpoint,
        config: Config,
        seed: Seed,
        namespace: &str,
        timeout: StdDuration,
    ) -> Result<Self, FleetError> {
        config.validate(usize::MAX).map_err(FleetError::Config)?;
        let con = cluster::open(endpoint, timeout).await?;
        let nodes = cluster::nodes_for(&con);
        tracing::debug!(namespace, ?timeout, "connected to redis fleet store");
        let limiter = RedisLimiter {
            con,
            nodes,
            script: Script::new(RULES),
            users: UserHasher::new(seed),
            config,
            ns: namespace.to_string(),
            timeout,
            slack_ms: u64::try_from(DEFAULT_TTL_SLACK.as_millis()).unwrap_or(u64::MAX),
        };
        // CLUSTER SLOTS goes to any node: a dead one fails it, another
        // answers (the fleet engine tries again each second).
        for attempt in 1..=3 {
            match limiter.refresh_nodes().await {
                Ok(()) => break,
                Err(e) if attempt == 3 => {
                    tracing::warn!(error = %e, "cannot read the redis cluster's slot map");
                }
                Err(_) => {}
            }
        }
        Ok(limiter)
    }

    /// Keep every key this much longer than its state needs (tolerance for
    /// clock skew between servers; tests use a large slack so that keys do
    /// not expire in real time while simulated time stands still).
    #[must_use]
    pub fn with_ttl_slack(mut self, slack: StdDuration) -> Self {
        self.slack_ms = u64::try_from(slack.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// The rules in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The same connection deciding by `config` from the next call on (a
    /// reload; the script takes the rules with every call, so nothing in
    /// Redis changes). Refused like the core's `set_config`: an invalid
    /// config, or another IPv6 prefix (the keys are built from it).
    pub fn with_config(&self, config: Config) -> Result<Self, portcullis_core::ConfigError> {
        config.validate(usize::MAX)?;
        if config.ipv6_prefix != self.config.ipv6_prefix {
            return Err(portcullis_core::ConfigError::OutOfRange {
                key: "ipv6_prefix",
                expected: "the running value (a restart changes it)",
            });
        }
        Ok(RedisLimiter {
            config,
            ..self.clone()
        })
    }

    /// The key namespace.
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// The per-call timeout.
    pub fn timeout(&self) -> StdDuration {
        self.timeout
    }

    /// The keyed hash of a username (trim + ASCII lowercase first).
    pub fn user_hash(&self, username: &str) -> u64 {
        self.users.hash(username)
    }

    /// The aggregated address for `ip`.
    pub fn addr(&self, ip: IpAddr) -> Addr {
        Addr::from_ip(ip, self.config.ipv6_prefix)
    }

    fn addr_tag(&self, ip: IpAddr) -> String {
        format!("{}:{{a:{}}}", self.ns, hex(&self.addr(ip).octets()))
    }

    /// The Redis key of `ip`'s request state.
    pub fn request_key(&self, ip: IpAddr) -> String {
        format!("{}:req", self.addr_tag(ip))
    }

    /// The Redis key of `ip`'s login failures and slots.
    pub fn login_ip_key(&self, ip: IpAddr) -> String {
        format!("{}:lip", self.addr_tag(ip))
    }

    /// The Redis key of the (username, `ip`) pair's login failures.
    pub fn login_user_key(&self, username: &str, ip: IpAddr) -> String {
        format!("{}:lu:{:016x}", self.addr_tag(ip), self.user_hash(username))
    }

    /// The Redis key of `username`'s failures from all addresses.
    pub fn account_key(&self, username: &str) -> String {
        format!("{}:{{u:{:016x}}}:acct", self.ns, self.user_hash(username))
    }

    /// What the lists say about `ip` (core [`Lists::lookup`]).
    fn listed(&self, ip: IpAddr) -> Listed {
        self.config.lists.lookup(ip)
    }

    /// The decision for a listed address, with `remaining` for allowlisted
    /// (core [`Listed::decision`]).
    fn listed_decision(&self, ip: IpAddr, remaining: u32) -> Option<Decision> {
        self.listed(ip).decision(remaining)
    }

    /// The common ARGV (see the layout at the top of `rules.lua`).
    fn args(&self, op: &str, now_us: u64) -> Vec<String> {
        let c = &self.config;
        let b = &c.blocks;
        let l = &c.login;
        let p = &c.penalty;
        let s = &c.slots;
        let n = [
            now_us.min(MAX_US),
            u64::from(c.requests.max_requests),
            us(c.requests.window),
            u64::from(b.block_after),
            us(b.violation_memory),
            us(b.block_for),
            u64::from(b.block_growth.thousandths()),
            us(b.max_block),
            u64::from(b.ban_after.unwrap_or(0)),
            us(b.ban_lookback),
            u64::from(l.max_failures),
            us(l.failure_window),
            us(l.lock_for),
            u64::from(l.lock_ip_on_account_lock),
            u64::from(l.account_max_failures.unwrap_or(0)),
            us(l.account_window),
            us(p.base),
            u64::from(p.multiplier.thousandths()),
            us(p.max),
            u64::from(s.slots),
            us(s.slot_ttl),
            u64::from(s.when_full == NoSlot::Refuse),
            portcullis_core::VIOLATION_LOG as u64,
            self.slack_ms.min(MAX_US / 1000),
            u64::from(l.ip_max_failures.unwrap_or(0)),
        ];
        let mut v = Vec::with_capacity(n.len() + 2);
        v.push(op.to_string());
        v.extend(n.iter().map(u64::to_string));
        v
    }

    /// One script call with a timeout.
    async fn call<T: redis::FromRedisValue>(
        &self,
        keys: &[String],
        args: Vec<String>,
    ) -> Result<T, FleetError> {
        let r = self.invoke(keys, &args).await;
        if let Some(k) = keys.first() {
            self.note(k, &r);
        }
        r
    }

    /// `EVALSHA`, and on `NOSCRIPT` the script itself with `EVAL`, which
    /// goes to the same node as the `EVALSHA` (the node of the first key)
    /// and caches the script there: after a restart or `SCRIPT FLUSH` of
    /// any node, each node is loaded by its own first call, whatever state
    /// the other nodes of a cluster are in.
    async fn invoke<T: redis::FromRedisValue>(
        &self,
        keys: &[String],
        args: &[String],
    ) -> Result<T, FleetError> {
        let mut con = self.con.clone();
        let work = async {
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(self.script.get_hash())
                .arg(keys.len())
                .arg(keys)
                .arg(args);
            match cmd.query_async(&mut con).await {
                Err(e) if e.kind() == redis::ErrorKind::NoScriptError => {
                    tracing::debug!("redis fleet script not loaded: sending it");
                    let mut eval = redis::cmd("EVAL");
                    eval.arg(RULES).arg(keys.len()).arg(keys).arg(args);
                    eval.query_async(&mut con).await
                }
                r => r,
            }
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "redis fleet call failed");
                Err(classify(e, self.timeout))
            }
            Err(_) => Err(FleetError::Timeout(self.timeout)),
        }
    }

    /// A plain command with a timeout.
    async fn timed<T, F>(&self, fut: F) -> Result<T, FleetError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(classify(e, self.timeout)),
            Err(_) => Err(FleetError::Timeout(self.timeout)),
        }
    }

    /// Rules 1–4 and 9 for one request from `ip` at `now_us`: counts it if
    /// allowed (core `check_request`).
    pub async fn check_request(&self, ip: IpAddr, now_us: u64) -> Result<Decision, FleetError> {
        self.check_request_with(ip, now_us, Jitter::NONE).await
    }

    /// [`check_request`](Self::check_request) with the random part of a
    /// block's jitter (core `check_request_with`): the script adds the same
    /// `jitter.extra(block_jitter)` to a block this request starts.
    pub async fn check_request_with(
        &self,
        ip: IpAddr,
        now_us: u64,
        jitter: Jitter,
    ) -> Result<Decision, FleetError> {
        if let Some(d) = self.listed_decision(ip, self.config.requests.max_requests) {
            return Ok(d);
        }
        let mut args = self.args("req", now_us);
        args.push(us(self.config.blocks.block_jitter).min(MAX_US).to_string());
        args.push(jitter.0.to_string());
        let reply: Vec<i64> = self.call(&[self.request_key(ip)], args).await?;
        decision(&reply)
    }

    /// What [`check_request`](Self::check_request) would answer, consuming
    /// nothing (core `peek_request`).
    pub async fn peek_request(&self, ip: IpAddr, now_us: u64) -> Result<Decision, FleetError> {
        if let Some(d) = self.listed_decision(ip, self.config.requests.max_requests) {
            return Ok(d);
        }
        let reply: Vec<i64> = self
            .call(&[self.request_key(ip)], self.args("peek", now_us))
            .await?;
        decision(&reply)
    }

    /// Whether a login for `username` from `ip` may proceed (core
    /// `check_login`); records nothing. `remaining` is the failures left
    /// before a lock.
    pub async fn check_login(
        &self,
        username: &str,
        ip: IpAddr,
        now_us: u64,
    ) -> Result<Decision, FleetError> {
        if let Some(d) = self.listed_decision(ip, self.config.login.max_failures) {
            return Ok(d);
        }
        let keys = [self.login_user_key(username, ip), self.login_ip_key(ip)];
        let reply: Vec<i64> = self.call(&keys, self.args("login", now_us)).await?;
        decision(&reply)
    }

    /// Record a failed login and return the penalty to serve (rules 5–8):
    /// the account count (one call), then the pair and ip (a second call).
    pub async fn login_failed(
        &self,
        username: &str,
        ip: IpAddr,
        now_us: u64,
    ) -> Result<Penalty<FleetSlot>, FleetError> {
        if self.listed(ip) != Listed::Neither {
            return Ok(Penalty::NONE);
        }
        let throttled = if self.config.login.account_max_failures.is_some() {
            let t: i64 = self
                .call(&[self.account_key(username)], self.args("acct", now_us))
                .await?;
            match t {
                0 => false,
                1 => true,
                _ => return Err(FleetError::Unexpected(format!("account reply {t}"))),
            }
        } else {
            false
        };
        let ip_key = self.login_ip_key(ip);
        let keys = [self.login_user_key(username, ip), ip_key.clone()];
        let mut args = self.args("fail", now_us);
        args.push(u8::from(throttled).to_string());
        let reply: Vec<i64> = self.call(&keys, args).await?;
        let [d, t, refused, locked, slot] = reply[..] else {
            return Err(FleetError::Unexpected(format!("failure reply {reply:?}")));
        };
        penalty_of(d, t, refused, locked, slot, ip_key)
    }

    /// Reserve a login attempt before its password is checked (core
    /// `reserve_account` + `begin_login_pair`, two calls): counted as a
    /// failure at once, so parallel guesses get at most `max_failures`
    /// checks fleet-wide. `Ok(Err(_))` is the denial (nothing stays counted).
    /// Settle with [`login_attempt_failed`](Self::login_attempt_failed) or
    /// [`login_attempt_succeeded`](Self::login_attempt_succeeded).
    pub async fn begin_login(
        &self,
        username: &str,
        ip: IpAddr,
        now_us: u64,
    ) -> Result<Result<Attempt<AttemptId, FleetSlot>, Decision>, FleetError> {
        match self.listed(ip) {
            l @ Listed::Deny => {
                if let Some(d) = l.decision(0) {
                    return Ok(Err(d));
                }
            }
            Listed::Allow => {
                return Ok(Ok(Attempt {
                    id: AttemptId::remote(None, None),
                    penalty: Penalty::NONE,
                }))
            }
            Listed::Neither => {}
        }
        let (throttled, acct_at) = if self.config.login.account_max_failures.is_some() {
            let r: Vec<i64> = self
                .call(&[self.account_key(username)], self.args("racct", now_us))
                .await?;
            let [t, at] = r[..] else {
                return Err(FleetError::Unexpected(format!("account reply {r:?}")));
            };
            (flag(t, "throttled")?, Some(nat(at, "account time")?))
        } else {
            (false, None)
        };
        let ip_key = self.login_ip_key(ip);
        let keys = [self.login_user_key(username, ip), ip_key.clone()];
        let mut args = self.args("begin", now_us);
        args.push(u8::from(throttled).to_string());
        let reply: Vec<i64> = self.call(&keys, args).await?;
        match reply[..] {
            [0, d, t, refused, slot, at] => Ok(Ok(Attempt {
                id: AttemptId::remote(Some(nat(at, "attempt time")?), acct_at),
                penalty: penalty_of(d, t, refused, 0, slot, ip_key)?,
            })),
            _ => {
                let d = decision(&reply)?;
                if let Some(at) = acct_at {
                    self.cancel_account(username, at, now_us).await?;
                }
                Ok(Err(d))
            }
        }
    }

    async fn cancel_account(
        &self,
        username: &str,
        at: u64,
        now_us: u64,
    ) -> Result<bool, FleetError> {
        let mut args = self.args("unacct", now_us);
        args.push(at.to_string());
        let r: i64 = self.call(&[self.account_key(username)], args).await?;
        Ok(r == 1)
    }

    async fn settle(
        &self,
        username: &str,
        ip: IpAddr,
        at: u64,
        ok: bool,
        now_us: u64,
    ) -> Result<bool, FleetError> {
        let keys = [self.login_user_key(username, ip), self.login_ip_key(ip)];
        let mut args = self.args("settle", now_us);
        args.push(u8::from(ok).to_string());
        args.push(at.to_string());
        let r: i64 = self.call(&keys, args).await?;
        Ok(r > 0)
    }

    /// The reserved attempt had a wrong password: lock what reached
    /// `max_failures`. True if that locked the pair or the ip.
    pub async fn login_attempt_failed(
        &self,
        username: &str,
        ip: IpAddr,
        id: AttemptId,
        now_us: u64,
    ) -> Result<bool, FleetError> {
        match id.pair() {
            Some(at) if self.listed(ip) == Listed::Neither => {
                self.settle(username, ip, at, false, now_us).await
            }
            _ => Ok(false),
        }
    }

    /// The reserved attempt had the right password: the pair is deleted and
    /// the failure reserved on the ip and the account taken back. True if
    /// a pair record existed.
    pub async fn login_attempt_succeeded(
        &self,
        username: &str,
        ip: IpAddr,
        id: AttemptId,
        now_us: u64,
    ) -> Result<bool, FleetError> {
        let cleared = match id.pair() {
            Some(at) => self.settle(username, ip, at, true, now_us).await?,
            None => self.login_succeeded(username, ip, now_us).await?,
        };
        if let Some(at) = id.account() {
            self.cancel_account(username, at, now_us).await?;
        }
        Ok(cleared)
    }

    /// Record a successful login: the (username, ip) record is deleted, the
    /// ip's and the account's are kept. True if there was one. (`now_us`
    /// is unused: a delete needs no clock; kept for a uniform API.)
    pub async fn login_succeeded(
        &self,
        username: &str,
        ip: IpAddr,
        _now_us: u64,
    ) -> Result<bool, FleetError> {
        let key = self.login_user_key(username, ip);
        let mut con = self.con.clone();
        let r = self.timed(con.del::<_, i64>(&key)).await;
        self.note(&key, &r);
        Ok(r? > 0)
    }

    /// Ban `ip` by hand (no TTL: until lifted). Always true (Redis has no
    /// table to fill), unless Redis fails.
    pub async fn ban(&self, ip: IpAddr, now_us: u64) -> Result<bool, FleetError> {
        let r: i64 = self
            .call(&[self.request_key(ip)], self.args("ban", now_us))
            .await?;
        Ok(r == 1)
    }

    /// Every key of the address's hash tag (request, login ip, pairs),
    /// from the node serving that tag's slot.
    async fn address_keys(&self, ip: IpAddr) -> Result<Vec<String>, FleetError> {
        let pattern = format!("{}:*", glob_escape(&self.addr_tag(ip)));
        self.scan_slot_of(&self.request_key(ip), &pattern).await
    }

    /// Lift every ban, block and login lock on `ip` and forget its counts
    /// (core `Limiter::lift`): its request key, login-ip key and every
    /// (username, ip) key. Returns how many held a ban, block or lock.
    pub async fn lift(&self, ip: IpAddr, now_us: u64) -> Result<usize, FleetError> {
        let keys = self.address_keys(ip).await?;
        if keys.is_empty() {
            return Ok(0);
        }
        let n: i64 = self.call(&keys, self.args("lift", now_us)).await?;
        let n = usize::try_from(n).map_err(|_| FleetError::Unexpected(format!("lift {n}")))?;
        tracing::info!(%ip, lifted = n, "lifted bans and locks in redis");
        Ok(n)
    }

    /// Every ban, block and login lock in force ([`Hold`]: request keys
    /// banned or blocked, login-ip keys as [`Reason::IpLocked`], pair keys
    /// as [`Reason::PairLocked`], one row per locked pair), made by the
    /// core's [`Hold::of`] from what the script reports. Walks the
    /// namespace with `SCAN`: an admin call, not for the request path. On a
    /// cluster, masters that are down are left out (see
    /// [`on_down_node`](Self::on_down_node)).
    pub async fn bans(&self, now_us: u64) -> Result<Vec<Hold>, FleetError> {
        let pattern = format!("{}:{{a:*", glob_escape(&self.ns));
        let prefix = format!("{}:{{a:", self.ns);
        let mut out = Vec::new();
        for name in self.scan_all(&pattern).await? {
            let Some(rest) = name.strip_prefix(&prefix) else {
                continue;
            };
            let Some((hexaddr, suffix)) = rest.split_once("}:") else {
                continue;
            };
            let Some(octets) = unhex16(hexaddr) else {
                continue;
            };
            let addr = Addr::from_octets(octets);
            let key = match suffix {
                "req" => Key::request(addr),
                "lip" => Key::login_ip(addr),
                _ => match suffix
                    .strip_prefix("lu:")
                    .and_then(|h| u64::from_str_radix(h, 16).ok())
                {
                    Some(user) => Key::login_user(user, addr),
                    None => continue,
                },
            };
            let reply: Vec<i64> = self
                .call(std::slice::from_ref(&name), self.args("inspect", now_us))
                .await?;
            let [exists, banned, block_left, lock_left] = reply[..] else {
                return Err(FleetError::Unexpected(format!("inspect reply {reply:?}")));
            };
            if exists == 0 {
                continue;
            }
            // A negative time left: nothing running.
            let left = |v: i64, what: &str| (v >= 0).then(|| micros(v, what)).transpose();
            let hold = Hold::of(
                &key,
                banned == 1,
                left(block_left, "block")?,
                left(lock_left, "lock")?,
            );
            out.extend(hold);
        }
        Ok(out)
    }

    /// Take one of `ip`'s concurrency slots (rule 7).
    pub async fn acquire_slot(
        &self,
        ip: IpAddr,
        now_us: u64,
    ) -> Result<Option<FleetSlot>, FleetError> {
        let key = self.login_ip_key(ip);
        let id: i64 = self
            .call(std::slice::from_ref(&key), self.args("acquire", now_us))
            .await?;
        let id = nat(id, "slot id")?;
        Ok((id != 0).then_some(FleetSlot { key, id }))
    }

    /// Hand a slot back. False if it had already been reclaimed.
    pub async fn release_slot(&self, slot: FleetSlot) -> Result<bool, FleetError> {
        let mut args = self.args("release", 0);
        args.push(slot.id.to_string());
        let r: i64 = self.call(std::slice::from_ref(&slot.key), args).await?;
        Ok(r == 1)
    }
}

/// Sort a Redis error into the fleet's errors: the client's own response
/// timeout counts as a timeout.
fn classify(e: redis::RedisError, timeout: StdDuration) -> FleetError {
    if e.is_timeout() {
        FleetError::Timeout(timeout)
    } else {
        FleetError::Redis(e)
    }
}
