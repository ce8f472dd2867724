//! The local cache of standing denials: a server that got a block, ban or
//! lock from Redis remembers it until it ends and answers that client
//! without a round trip (envoyproxy/ratelimit's over-limit cache).
//!
//! Only standing denials are cached — a request key blocked or banned, a
//! login-ip key or a (username, address) pair locked — never a rate-limit
//! refusal (each one may count a violation in Redis, which escalates) nor
//! a login refused by a count alone (reservations settle and take it
//! back). A blocked or banned key's state does not change while it is
//! refused (the script answers from it without writing), so answering it
//! here decides exactly as Redis would, until something lifts it.
//!
//! ## Lifting
//!
//! Every lift or manual unban through any server increments the fleet's
//! `<ns>:{denials}:v` (one key, one hash tag: Redis Cluster compatible);
//! each server reads it every [`POLL`] and empties its cache when it moved,
//! so an unban reaches every server within about [`POLL`] plus a round
//! trip. A denial that was in flight while the cache was emptied is not
//! stored (an epoch counter). A rules reload empties it too.
//!
//! ## Through an outage
//!
//! When that read fails (Redis away, or partitioned from this server) the
//! cache takes no new denials, but the ones it holds keep refusing their
//! clients until they end: an outage must not hand an attacker who was
//! blocked, banned or locked fresh guesses from the local fallback. An
//! unban made through another server meanwhile cannot reach this one (nor
//! its fallback) anyway; an unban made through this one forgets that
//! address here at once. When the read succeeds again, the counter is
//! compared with the last one read before the outage: if it moved (a lift
//! meanwhile, or a Redis that came back empty after lifts had been
//! counted), the cache is emptied.
//!
//! ## Memory
//!
//! At most `capacity` keys (config `[store] denial_cache`, default
//! [`DEFAULT_CAPACITY`]; 0 turns the cache off). The same rules as the
//! tables: when full, dead entries (ended) are reclaimed first; then the
//! entries with the least time left go (bans, which never end, last), an
//! eighth at a time so that a full cache costs one scan per eighth of its
//! size.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration as StdDuration;

use parking_lot::RwLock;
use portcullis_core::Duration;
use portcullis_core::{Addr, Decision, Key, KeyKind, Reason};

use super::{FleetError, RedisLimiter};

/// Default capacity (keys).
pub const DEFAULT_CAPACITY: usize = 10_000;

/// How often each server reads the fleet's lift counter.
pub const POLL: StdDuration = StdDuration::from_millis(250);

/// Counter: decisions answered from the cache.
pub const HITS: &str = "portcullis_denial_cache_hits_total";

/// Gauge: keys held.
pub const ENTRIES: &str = "portcullis_denial_cache_entries";

/// "Never ends" (a ban).
const FOREVER: u64 = u64::MAX;

#[derive(Clone, Copy, Debug)]
struct Cached {
    /// Unix µs; [`FOREVER`] for a ban.
    until_us: u64,
    reason: Reason,
}

/// Standing denials got from Redis, by key (the fleet's user hashes).
#[derive(Debug)]
pub struct DenialCache {
    cap: usize,
    map: RwLock<HashMap<Key, Cached>>,
    epoch: AtomicU64,
    live: AtomicBool,
}

impl DenialCache {
    /// A cache of at most `capacity` keys (0: off). It is not used until
    /// [`set_live`](Self::set_live)`(true)`.
    pub fn new(capacity: usize) -> Self {
        DenialCache {
            cap: capacity,
            map: RwLock::new(HashMap::new()),
            epoch: AtomicU64::new(0),
            live: AtomicBool::new(false),
        }
    }

    /// Whether the cache is on at all.
    pub fn enabled(&self) -> bool {
        self.cap > 0
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.map.read().len()
    }

    /// Nothing held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Read before asking Redis; pass to [`insert`](Self::insert).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Relaxed)
    }

    /// The lift counter was read (`true`): the cache takes new denials;
    /// or it could not be (`false`): it takes none until it can, and keeps
    /// answering those it holds until they end (see the module docs).
    pub fn set_live(&self, live: bool) {
        self.live.store(live, Relaxed);
    }

    /// Whether the last read of the lift counter succeeded.
    pub fn is_live(&self) -> bool {
        self.live.load(Relaxed)
    }

    /// The cached denial of `key` at `now_us`, if one is standing (live or
    /// not: an outage keeps what was cached).
    pub fn get(&self, key: &Key, now_us: u64) -> Option<Decision> {
        if !self.enabled() {
            return None;
        }
        let c = *self.map.read().get(key)?;
        if c.until_us != FOREVER && c.until_us <= now_us {
            return None;
        }
        metrics::counter!(HITS).increment(1);
        Some(denial(c, now_us))
    }

    /// Remember that Redis refused `key` with the standing denial `d` at
    /// `now_us`, unless the cache was emptied since `epoch` was read. Only
    /// `Blocked` and `Banned` on a request key and locks on login keys are
    /// kept.
    pub fn insert(&self, key: Key, d: &Decision, now_us: u64, epoch: u64) {
        if !self.enabled() || !self.live.load(Relaxed) {
            return;
        }
        let Decision::Deny {
            reason,
            retry_after,
        } = *d
        else {
            return;
        };
        let until_us = match (key.kind(), reason) {
            (KeyKind::Request, Reason::Banned) => FOREVER,
            (KeyKind::Request, Reason::Blocked)
            | (KeyKind::LoginIp, Reason::IpLocked)
            | (KeyKind::LoginUser, Reason::PairLocked) => {
                now_us.saturating_add(retry_after.as_micros())
            }
            _ => return,
        };
        let mut map = self.map.write();
        if self.epoch.load(Relaxed) != epoch {
            return;
        }
        if map.len() >= self.cap && !map.contains_key(&key) {
            make_room(&mut map, self.cap, now_us);
        }
        map.insert(key, Cached { until_us, reason });
    }

    /// Forget everything.
    pub fn clear(&self) {
        let mut map = self.map.write();
        self.epoch.fetch_add(1, Relaxed);
        map.clear();
    }

    /// Forget every key of `addr` (this server lifted it).
    pub fn forget_addr(&self, addr: Addr) {
        let mut map = self.map.write();
        self.epoch.fetch_add(1, Relaxed);
        map.retain(|k, _| k.kind() == KeyKind::Account || k.addr() != addr);
    }

    /// Forget one key (a pair that logged in here).
    pub fn forget(&self, key: &Key) {
        let mut map = self.map.write();
        self.epoch.fetch_add(1, Relaxed);
        map.remove(key);
    }
}

fn denial(c: Cached, now_us: u64) -> Decision {
    let retry_after = if c.until_us == FOREVER {
        Duration::MAX
    } else {
        Duration::from_micros(c.until_us.saturating_sub(now_us))
    };
    Decision::Deny {
        reason: c.reason,
        retry_after,
    }
}

/// Dead entries first; then the eighth with the least time left.
fn make_room(map: &mut HashMap<Key, Cached>, cap: usize, now_us: u64) {
    map.retain(|_, c| c.until_us == FOREVER || c.until_us > now_us);
    if map.len() < cap {
        return;
    }
    let mut ends: Vec<u64> = map.values().map(|c| c.until_us).collect();
    let n = (ends.len() / 8).max(1);
    let Some(nth) = n.checked_sub(1) else { return };
    let (_, cut, _) = ends.select_nth_unstable(nth);
    let cut = *cut;
    let mut removed = 0usize;
    map.retain(|_, c| {
        if removed < n && c.until_us <= cut {
            removed += 1;
            false
        } else {
            true
        }
    });
}

impl RedisLimiter {
    /// The fleet's lift counter key (its own hash tag).
    pub fn denials_version_key(&self) -> String {
        format!("{}:{{denials}}:v", self.ns)
    }

    /// The fleet's lift counter (0 before the first lift).
    pub async fn denials_version(&self) -> Result<u64, FleetError> {
        let mut con = self.con.clone();
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.denials_version_key());
        let v: Option<u64> = self.timed(cmd.query_async(&mut con)).await?;
        Ok(v.unwrap_or(0))
    }

    /// Tell every server that something was lifted (their caches empty
    /// within [`POLL`]).
    pub async fn denials_lifted(&self) -> Result<u64, FleetError> {
        let mut con = self.con.clone();
        let mut cmd = redis::cmd("INCR");
        cmd.arg(self.denials_version_key());
        self.timed(cmd.query_async(&mut con)).await
    }

    /// Time left on `key`'s lock in Redis (the script's `inspect` op), if
    /// one is running: a login refusal is cached only when it is a lock.
    pub async fn lock_left(
        &self,
        key: String,
        now_us: u64,
    ) -> Result<Option<Duration>, FleetError> {
        let reply: Vec<i64> = self.call(&[key], self.args("inspect", now_us)).await?;
        let [_, _, _, lock] = reply[..] else {
            return Err(FleetError::Unexpected(format!("inspect reply {reply:?}")));
        };
        Ok(u64::try_from(lock).ok().map(Duration::from_micros))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u8) -> Key {
        Key::request(Addr::from_octets([i; 16]))
    }
    fn blocked(secs: u64) -> Decision {
        Decision::Deny {
            reason: Reason::Blocked,
            retry_after: Duration::from_secs(secs),
        }
    }

    #[test]
    fn standing_denials_are_kept_until_they_end_and_only_while_live() {
        let c = DenialCache::new(4);
        c.insert(key(1), &blocked(10), 0, c.epoch());
        assert!(c.is_empty(), "not live yet: nothing kept");
        c.set_live(true);
        c.insert(key(1), &blocked(10), 0, c.epoch());
        let d = c.get(&key(1), 4_000_000).expect("cached");
        assert_eq!(d, blocked(6));
        assert_eq!(c.get(&key(1), 10_000_000), None, "ended");
        // Rate limiting is not a standing denial.
        let rl = Decision::Deny {
            reason: Reason::RateLimited,
            retry_after: Duration::from_secs(1),
        };
        c.insert(key(2), &rl, 0, c.epoch());
        assert_eq!(c.get(&key(2), 0), None);
        // A stale epoch (emptied meanwhile) is not stored.
        let e = c.epoch();
        c.clear();
        c.insert(key(3), &blocked(10), 0, e);
        assert_eq!(c.get(&key(3), 0), None);
        // Going dark keeps what it holds until it ends, and takes nothing
        // new.
        c.insert(key(3), &blocked(10), 0, c.epoch());
        c.set_live(false);
        assert_eq!(c.get(&key(3), 1_000_000), Some(blocked(9)));
        assert_eq!(c.get(&key(3), 10_000_000), None, "ended");
        c.insert(key(4), &blocked(10), 0, c.epoch());
        assert_eq!(c.get(&key(4), 0), None, "nothing new while dark");
        c.set_live(true);
        assert_eq!(c.get(&key(3), 1_000_000), Some(blocked(9)));
    }

    #[test]
    fn bounded_dead_first_then_least_time_left() {
        let c = DenialCache::new(4);
        c.set_live(true);
        let ban = Decision::Deny {
            reason: Reason::Banned,
            retry_after: Duration::MAX,
        };
        c.insert(key(1), &ban, 0, c.epoch());
        c.insert(key(2), &blocked(1), 0, c.epoch());
        c.insert(key(3), &blocked(100), 0, c.epoch());
        c.insert(key(4), &blocked(50), 0, c.epoch());
        // Full, at t = 2 s key 2 is dead: it goes first.
        c.insert(key(5), &blocked(10), 2_000_000, c.epoch());
        assert_eq!(c.len(), 4);
        assert!(c.get(&key(1), 2_000_000).is_some());
        assert!(c.get(&key(3), 2_000_000).is_some());
        // Full, nothing dead: the one ending soonest (key 5) goes.
        c.insert(key(6), &blocked(70), 3_000_000, c.epoch());
        assert_eq!(c.len(), 4);
        assert_eq!(c.get(&key(5), 3_000_000), None);
        for k in [1, 3, 4, 6] {
            assert!(c.get(&key(k), 3_000_000).is_some(), "key {k}");
        }
        c.forget_addr(Addr::from_octets([1; 16]));
        assert_eq!(c.get(&key(1), 3_000_000), None);
    }
}
