//! Reconciliation after an outage: every ban, block and lock the local
//! fallback imposed while Redis was away is written to Redis when it comes
//! back, so the rest of the fleet enforces it too.
//!
//! The fallback guard of a [`FleetEngine`](crate::fleet::FleetEngine)
//! writes through a [`Recorder`] (a [`Persist`] wrapping the guard's own
//! store, if any): each record it is handed that holds a ban, or a block
//! or lock still running, goes into a bounded [`Pending`] queue (one entry
//! per key, the latest record wins; a lifted key leaves the queue). The
//! engine drains the queue with [`RedisLimiter::merge`] — the script's
//! `merge` op, which raises a key's state and never lowers it (the longer
//! of the two wins) — on the first successful Redis call after an outage,
//! before the first Redis decision for an address that has entries, and
//! from a background task every second while it is not empty. An entry
//! whose write fails stays queued. Each key written is counted
//! (`portcullis_reconciled_total`) and each drain logged.
//!
//! Usernames: the local limiter hashes usernames with its own seed, the
//! fleet with the fleet's, so a (username, address) record cannot be
//! mapped to its Redis key by its hash. The engine names the usernames of
//! the fallback calls in flight ([`Pending::naming`]); a record of a pair
//! is queued with its username, and a pair whose name is not known is
//! dropped (logged).
//!
//! The queue can be kept on disk too ([`Pending::with_journal`],
//! [`super::journal`]): every change is written to the journal before the
//! fallback's response leaves, and a key written to Redis leaves it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use parking_lot::Mutex;
use portcullis_core::{Addr, Key, KeyKind};

use super::{journal, FleetError, RedisLimiter, MAX_US};
use crate::limiter::Record;
use crate::persist::{Journal, JournalChange, Persist, PersistError};
use crate::BoxFuture;

/// Keys the queue holds at most; beyond it new keys are dropped (counted,
/// logged): a fallback under a very wide attack keeps deciding locally,
/// it only stops queueing.
pub const PENDING_CAP: usize = 65_536;

/// Counter: keys written to Redis by reconciliation.
pub const RECONCILED: &str = "portcullis_reconciled_total";

/// Gauge: keys queued for Redis.
pub const QUEUED: &str = "portcullis_reconcile_queued";

use crate::persist::Imposed;

/// One queued key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingEntry {
    /// The local key (its user hash is the local limiter's).
    pub key: Key,
    /// The username of a (username, address) key.
    pub username: Option<String>,
    /// Its state.
    pub imposed: Imposed,
}

/// A journal write handed over: await it to know it is durable.
pub type Written = Option<BoxFuture<'static, Result<(), PersistError>>>;

/// The queue of what the fallback imposed and Redis does not know yet.
#[derive(Default)]
pub struct Pending {
    map: Mutex<HashMap<Key, PendingEntry>>,
    /// Where every change to `map` is written, in `map`'s order.
    journal: Option<Arc<dyn Journal>>,
    /// Local user hash -> (username, calls in flight naming it).
    names: Mutex<HashMap<u64, (String, usize)>>,
    len: AtomicUsize,
    dropped: AtomicU64,
}

/// Names a username while a fallback call runs (dropping it forgets the
/// name once no other call names it).
pub struct Naming<'a> {
    pending: &'a Pending,
    hash: u64,
}

impl Drop for Naming<'_> {
    fn drop(&mut self) {
        let mut names = self.pending.names.lock();
        if let Some((_, n)) = names.get_mut(&self.hash) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                names.remove(&self.hash);
            }
        }
    }
}

impl Pending {
    /// A queue kept in `journal` too.
    pub fn with_journal(journal: Arc<dyn Journal>) -> Pending {
        Pending {
            journal: Some(journal),
            ..Pending::default()
        }
    }

    /// Whether the queue is kept in a journal.
    pub fn journaled(&self) -> bool {
        self.journal.is_some()
    }

    /// Queue `entries` read back from the journal at start-up (not
    /// written again: the journal holds them).
    pub fn restore(&self, entries: Vec<PendingEntry>) {
        let mut map = self.map.lock();
        for e in entries {
            map.insert(e.key, e);
        }
        self.len.store(map.len(), Relaxed);
    }

    /// Where the queue is journaled, if it is.
    pub fn journal_location(&self) -> Option<String> {
        self.journal.as_ref().map(|j| j.location())
    }

    /// Hand `changes` to the journal, after every change handed over so
    /// far (the queue's own changes are handed over under its lock).
    pub fn journal(&self, changes: Vec<JournalChange>) -> Written {
        match &self.journal {
            Some(j) if !changes.is_empty() => Some(journal::submit(j, changes)),
            _ => None,
        }
    }

    /// Nothing queued.
    pub fn is_empty(&self) -> bool {
        self.len.load(Relaxed) == 0
    }

    /// Keys queued.
    pub fn len(&self) -> usize {
        self.len.load(Relaxed)
    }

    /// Keys not queued because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }

    /// `username` (hashing to `local_hash` in the local limiter) is used
    /// by a fallback call until the returned value is dropped.
    pub fn naming(&self, local_hash: u64, username: &str) -> Naming<'_> {
        let mut names = self.names.lock();
        let e = names
            .entry(local_hash)
            .or_insert_with(|| (username.to_string(), 0));
        e.1 = e.1.saturating_add(1);
        Naming {
            pending: self,
            hash: local_hash,
        }
    }

    /// Queue the records that hold something at `now_ms`; unqueue the
    /// others (a lift, or a state that ended). The journal write, if any,
    /// is handed over before this returns: await it before answering.
    pub fn record(&self, records: &[Record], now_ms: u64) -> Written {
        let mut map = self.map.lock();
        let mut changes = Vec::new();
        for r in records {
            if !r.is_pinned_at(now_ms) {
                if let Some(old) = map.remove(&r.key) {
                    changes.push(JournalChange::Delete(journal::key_of(&old)));
                }
                continue;
            }
            let username = match r.key.kind() {
                KeyKind::LoginUser | KeyKind::Account => {
                    match self.names.lock().get(&r.key.user()).map(|(n, _)| n.clone()) {
                        Some(n) => Some(n),
                        None => {
                            tracing::warn!(
                                kind = r.key.kind().as_str(),
                                "fallback lock of an unnamed user not queued for redis"
                            );
                            continue;
                        }
                    }
                }
                KeyKind::Request | KeyKind::LoginIp => None,
            };
            if map.len() >= PENDING_CAP && !map.contains_key(&r.key) {
                if self.dropped.fetch_add(1, Relaxed) == 0 {
                    tracing::warn!(
                        cap = PENDING_CAP,
                        "reconciliation queue full: further fallback bans stay local"
                    );
                }
                continue;
            }
            let e = PendingEntry {
                key: r.key,
                username,
                imposed: Imposed::of(r),
            };
            if self.journal.is_some() {
                changes.push(JournalChange::Put(journal::row_of(&e)));
            }
            map.insert(r.key, e);
        }
        self.len.store(map.len(), Relaxed);
        self.journal(changes)
    }

    /// A copy of every queued entry (for `addr` only, if given).
    pub fn entries(&self, addr: Option<Addr>) -> Vec<PendingEntry> {
        let map = self.map.lock();
        map.values()
            .filter(|e| addr.is_none_or(|a| e.key.kind() != KeyKind::Account && e.key.addr() == a))
            .cloned()
            .collect()
    }

    /// `e` was written to Redis: unqueue it (and hand its deletion to the
    /// journal) unless it changed meanwhile.
    pub fn done(&self, e: &PendingEntry) -> Written {
        let mut map = self.map.lock();
        let mut changes = Vec::new();
        if map.get(&e.key) == Some(e) {
            map.remove(&e.key);
            changes.push(JournalChange::Delete(journal::key_of(e)));
        }
        self.len.store(map.len(), Relaxed);
        self.journal(changes)
    }

    /// Write `entries` to Redis with `r`, unqueueing each one written;
    /// stops at the first failure (the rest stay queued). How many were
    /// written.
    pub async fn drain(
        &self,
        r: &RedisLimiter,
        entries: Vec<PendingEntry>,
        now_us: u64,
    ) -> Result<usize, FleetError> {
        let mut n = 0usize;
        for e in entries {
            let changed = r
                .merge(
                    e.key.kind(),
                    e.key.addr(),
                    e.username.as_deref(),
                    &e.imposed,
                    now_us,
                )
                .await?;
            tracing::debug!(kind = e.key.kind().as_str(), ip = %e.key.addr().ip(), changed, "reconciled into redis");
            // Counted as soon as Redis has it, before the entry leaves the
            // queue: a `/metrics` scrape never sees the queue empty
            // without the count (the journal's write below can take a
            // while).
            metrics::counter!(RECONCILED).increment(1);
            if let Some(w) = self.done(&e) {
                // A failure is counted and logged; the row is written to
                // Redis again after a restart (merge only raises).
                let _ = w.await;
            }
            n = n.saturating_add(1);
        }
        Ok(n)
    }
}

/// The fallback guard's store: queues what it imposes, then writes
/// through to the guard's own store (if any).
pub struct Recorder {
    /// The queue.
    pub pending: Arc<Pending>,
    /// The store the guard had.
    pub inner: Option<Arc<dyn Persist>>,
}

impl Persist for Recorder {
    fn write(&self, records: Vec<Record>) -> BoxFuture<'_, Result<(), PersistError>> {
        let journaled = self.pending.record(&records, crate::clock::unix_ms());
        Box::pin(async move {
            // The journal first: it is what survives a crash in an outage.
            let j = match journaled {
                Some(w) => w.await,
                None => Ok(()),
            };
            let inner = match &self.inner {
                Some(s) => s.write(records).await,
                None => Ok(()),
            };
            j.and(inner)
        })
    }
    fn snapshot(&self, records: Vec<Record>) -> BoxFuture<'_, Result<(), PersistError>> {
        match &self.inner {
            Some(s) => s.snapshot(records),
            None => Box::pin(async { Ok(()) }),
        }
    }
    fn location(&self) -> String {
        match (&self.inner, &self.pending.journal) {
            (Some(s), _) => s.location(),
            (None, Some(j)) => format!("{} (journal)", j.location()),
            (None, None) => "redis reconciliation queue".into(),
        }
    }
    fn write_manual(
        &self,
        change: crate::manual::ManualChange,
    ) -> BoxFuture<'_, Result<(), PersistError>> {
        match &self.inner {
            Some(s) => s.write_manual(change),
            None => Box::pin(async { Ok(()) }),
        }
    }
}

fn ms_to_us(ms: Option<u64>) -> u64 {
    ms.map_or(0, |m| m.saturating_mul(1000).clamp(1, MAX_US))
}

impl RedisLimiter {
    /// Raise the Redis state of one key to at least `imposed` (the
    /// script's `merge` op: nothing is shortened or lowered). `username`
    /// names a (username, address) or account key. True if Redis changed.
    pub async fn merge(
        &self,
        kind: KeyKind,
        addr: Addr,
        username: Option<&str>,
        imposed: &Imposed,
        now_us: u64,
    ) -> Result<bool, FleetError> {
        let ip = addr.ip();
        let key = match (kind, username) {
            (KeyKind::Request, _) => self.request_key(ip),
            (KeyKind::LoginIp, _) => self.login_ip_key(ip),
            (KeyKind::LoginUser, Some(u)) => self.login_user_key(u, ip),
            (KeyKind::Account, Some(u)) => self.account_key(u),
            (k, None) => {
                return Err(FleetError::Unexpected(format!(
                    "{} key without a username",
                    k.as_str()
                )))
            }
        };
        let mut args = self.args("merge", now_us);
        args.push(u8::from(imposed.banned).to_string());
        args.push(ms_to_us(imposed.block_until_ms).to_string());
        args.push(imposed.block_level.to_string());
        args.push(ms_to_us(imposed.last_block_start_ms).to_string());
        args.push(ms_to_us(imposed.lock_until_ms).to_string());
        args.extend(
            imposed
                .violations_ms
                .iter()
                .map(|&v| ms_to_us(Some(v)).to_string()),
        );
        let r: i64 = self.call(&[key], args).await?;
        Ok(r == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: u32) -> Addr {
        let mut o = [0u8; 16];
        o[12..].copy_from_slice(&i.to_be_bytes());
        Addr::from_octets(o)
    }

    fn blocked(key: Key, until_ms: u64) -> Record {
        let mut r = Record::empty(key);
        r.block_until = Some(until_ms);
        r.last_block_start = Some(until_ms.saturating_sub(1000));
        r.block_level = 1;
        r
    }

    #[test]
    fn queues_what_holds_and_forgets_what_was_lifted() {
        let p = Pending::default();
        let k = Key::request(addr(1));
        p.record(&[blocked(k, 5_000)], 1_000);
        assert_eq!(p.len(), 1);
        // Ended by the time it is written: not queued (and unqueued).
        p.record(&[blocked(k, 5_000)], 6_000);
        assert!(p.is_empty());
        p.record(&[blocked(k, 5_000)], 1_000);
        // A lift writes an empty record.
        p.record(&[Record::empty(k)], 1_000);
        assert!(p.is_empty());
        // Written, but replaced meanwhile: stays queued.
        p.record(&[blocked(k, 5_000)], 1_000);
        let e = p.entries(None).pop().expect("queued");
        p.record(&[blocked(k, 9_000)], 1_000);
        p.done(&e);
        assert_eq!(p.len(), 1);
        let e = p.entries(Some(addr(1))).pop().expect("queued");
        assert_eq!(e.imposed.block_until_ms, Some(9_000));
        assert!(p.entries(Some(addr(2))).is_empty());
        p.done(&e);
        assert!(p.is_empty());
    }

    #[test]
    fn pairs_are_queued_with_their_username_only_while_named() {
        let p = Pending::default();
        let mut lock = Record::empty(Key::login_user(42, addr(1)));
        lock.lock_until = Some(9_000);
        p.record(std::slice::from_ref(&lock), 1_000);
        assert!(p.is_empty(), "no name: not queued");
        {
            let _a = p.naming(42, "alice");
            let _b = p.naming(42, "alice");
            p.record(std::slice::from_ref(&lock), 1_000);
        }
        let e = p.entries(None).pop().expect("queued");
        assert_eq!(e.username.as_deref(), Some("alice"));
        assert!(p.names.lock().is_empty(), "forgotten once no call names it");
    }

    /// A journal in memory: the changes in the order handed over; fails
    /// when `fail` is set.
    #[derive(Default)]
    struct Log {
        changes: Mutex<Vec<JournalChange>>,
        fail: std::sync::atomic::AtomicBool,
    }

    impl Journal for Log {
        fn submit(
            &self,
            changes: Vec<JournalChange>,
        ) -> BoxFuture<'static, Result<(), PersistError>> {
            let fail = self.fail.load(Relaxed);
            if !fail {
                self.changes.lock().extend(changes);
            }
            Box::pin(async move {
                if fail {
                    Err("disk full".into())
                } else {
                    Ok(())
                }
            })
        }
        fn location(&self) -> String {
            "memory".into()
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn the_journal_follows_the_queue_and_a_failed_write_is_an_error() {
        let log = Arc::new(Log::default());
        let p = Arc::new(Pending::with_journal(log.clone()));
        let rec = Recorder {
            pending: p.clone(),
            inner: None,
        };
        let k = Key::request(addr(1));
        let until = crate::clock::unix_ms() + 60_000;
        block_on(rec.write(vec![blocked(k, until)])).expect("journaled");
        let e = p.entries(None).pop().expect("queued");
        assert!(block_on(p.done(&e).expect("a delete")).is_ok());
        let got = log.changes.lock().clone();
        assert!(
            matches!(&got[..], [JournalChange::Put(r), JournalChange::Delete(d)]
            if r.key == journal::key_of(&e) && *d == r.key)
        );
        // Unchanged queue: nothing handed over.
        assert!(p.done(&e).is_none());
        // A write that fails is the guard's error; the key stays queued.
        log.fail.store(true, Relaxed);
        assert!(block_on(rec.write(vec![blocked(k, until)])).is_err());
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn the_queue_is_bounded() {
        let p = Pending::default();
        let records: Vec<Record> = (0..=u32::try_from(PENDING_CAP).unwrap())
            .map(|i| blocked(Key::request(addr(i)), 5_000))
            .collect();
        p.record(&records, 1_000);
        assert_eq!(p.len(), PENDING_CAP);
        assert_eq!(p.dropped(), 1);
        // A queued key is still updated when full.
        p.record(&[blocked(Key::request(addr(0)), 8_000)], 1_000);
        assert_eq!(p.dropped(), 1);
        let e = p.entries(Some(addr(0))).pop().expect("queued");
        assert_eq!(e.imposed.block_until_ms, Some(8_000));
    }
}
