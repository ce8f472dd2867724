//! [`Guard`]: the async face of a [`Limiter`]: decisions with their
//! write-through awaited, penalties served with `tokio::time::sleep` while
//! holding an RAII [`SlotGuard`], counters through the `metrics` facade
//! ([`crate::metrics`]).
//!
//! Each call reads the time once ([`clock::read`](crate::clock::read)) and
//! decides and persists at that one reading; the `_at` forms take a
//! [`Now`] read by the caller (the fleet engine passes the one it also
//! sends to Redis).
//!
//! Every login call folds the username first ([`crate::username::fold`]):
//! `ａlicé`, `Alice` and `alice` are one account.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use portcullis::{Guard, Limiter, LimiterOptions};
//! use portcullis::Config;
//! use std::sync::Arc;
//!
//! let limiter = Arc::new(Limiter::new(Config::default(), LimiterOptions::default()).unwrap());
//! let guard = Guard::new(limiter, None);
//! let ip = "198.51.100.20".parse().unwrap();
//! assert!(guard.check_login("alice", ip).await.is_allowed());
//! let penalty = guard.login_failed("alice", ip).await;
//! assert_eq!(penalty.delay.as_secs(), 1);
//! drop(penalty); // releases the slot without sleeping (tests); servers call `penalty.serve().await`
//! # }
//! ```

use std::net::IpAddr;
use std::sync::Arc;

use portcullis_core::Duration;
use portcullis_core::{Attempt, Decision, Hold, Penalty, SlotToken};

use crate::clock::{read, Now};
use crate::engine::{AttemptId, SlotGuard};
use crate::limiter::{Limiter, Outcome, Record};
use crate::manual::{ManualBan, ManualChange, ManualError};
use crate::metrics::Metrics;
use crate::persist::{Persist, PersistError};
use crate::username::fold;

/// Limiter + optional write-through ([`Persist`], e.g. SQLite) + counters.
#[derive(Clone)]
pub struct Guard {
    limiter: Arc<Limiter>,
    store: Option<Arc<dyn Persist>>,
    metrics: Arc<Metrics>,
}

impl Guard {
    /// A guard over `limiter`, writing through to `store` if given.
    pub fn new(limiter: Arc<Limiter>, store: Option<Arc<dyn Persist>>) -> Self {
        Guard {
            limiter,
            store,
            metrics: Arc::new(Metrics::default()),
        }
    }

    /// The limiter.
    pub fn limiter(&self) -> &Arc<Limiter> {
        &self.limiter
    }

    /// The store, if any.
    pub fn store(&self) -> Option<&Arc<dyn Persist>> {
        self.store.as_ref()
    }

    /// The same limiter and counters, writing through to `store` instead
    /// (the fleet engine's fallback records what it imposes this way).
    pub fn with_store(&self, store: Option<Arc<dyn Persist>>) -> Guard {
        Guard {
            limiter: self.limiter.clone(),
            store,
            metrics: self.metrics.clone(),
        }
    }

    /// The same guard counting into `metrics`, e.g.
    /// [`Metrics::for_policy`] for a second limiter in the process.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Arc::new(metrics);
        self
    }

    /// The counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Publish the table gauges (entries, capacity, evictions, table full)
    /// to the metrics recorder: call before rendering metrics (the cleanup
    /// task does on each run).
    pub fn record_table_metrics(&self) {
        let l = &self.limiter;
        let s = l.stats();
        self.metrics
            .record_table(l.len(), l.capacity(), s.table_full);
        self.metrics
            .record_evictions(s.evicted_dead, s.evicted_live);
    }

    /// Write `changes` (the records of what a call changed) through and
    /// wait for the commit.
    pub async fn persist(&self, changes: Vec<Record>) {
        if changes.is_empty() {
            return;
        }
        if let Some(store) = &self.store {
            if let Err(e) = store.write(changes).await {
                self.metrics.store_error();
                tracing::error!(error = %e, "write-through failed");
            }
        }
    }

    /// A request from `ip`.
    pub async fn check_request(&self, ip: IpAddr) -> Decision {
        self.check_request_at(ip, read()).await
    }

    /// [`check_request`](Self::check_request) at `now`, read once by the caller.
    pub async fn check_request_at(&self, ip: IpAddr, now: Now) -> Decision {
        self.settle_request(ip, self.limiter.check_request_at(ip, now))
            .await
    }

    /// A request's outcome written through, then counted.
    async fn settle_request(&self, ip: IpAddr, o: Outcome<Decision>) -> Decision {
        self.persist(o.changes).await;
        self.metrics.count_from(ip, &o.decision);
        o.decision
    }

    /// [`check_request_at`](Self::check_request_at) without a future when
    /// there is nothing to write through (the usual case): the decision
    /// is made and counted before it returns.
    pub(crate) fn decide_request(&self, ip: IpAddr, now: Now) -> crate::Checked<'_> {
        let o = self.limiter.check_request_at(ip, now);
        if o.changes.is_empty() {
            self.metrics.count_from(ip, &o.decision);
            return crate::Checked::Ready(o.decision);
        }
        crate::Checked::Pending(Box::pin(self.settle_request(ip, o)))
    }

    /// Whether a login may proceed.
    pub async fn check_login(&self, user: &str, ip: IpAddr) -> Decision {
        self.check_login_at(user, ip, read()).await
    }

    /// [`check_login`](Self::check_login) at `now`, read once by the caller.
    pub async fn check_login_at(&self, user: &str, ip: IpAddr, now: Now) -> Decision {
        let d = self.limiter.check_login_at(&fold(user), ip, now);
        self.metrics.count_from(ip, &d);
        d
    }

    /// Record a failed login; the returned penalty holds its slot.
    pub async fn login_failed(&self, user: &str, ip: IpAddr) -> Penalty<SlotGuard> {
        self.login_failed_at(user, ip, read()).await
    }

    /// [`login_failed`](Self::login_failed) at `now`, read once by the caller.
    pub async fn login_failed_at(&self, user: &str, ip: IpAddr, now: Now) -> Penalty<SlotGuard> {
        let o = self.limiter.login_failed_at(&fold(user), ip, now);
        self.persist(o.changes).await;
        self.metrics.login_failure();
        self.host_penalty(o.decision)
    }

    /// A core penalty with its slot wrapped in an RAII [`SlotGuard`].
    fn host_penalty(&self, p: Penalty<SlotToken>) -> Penalty<SlotGuard> {
        p.map_slot(|t| SlotGuard::new(self.limiter.clone(), t))
    }

    /// A lock answered like a wrong password (`reveal_lock = false`): the
    /// delay the next wrong password would get, in a slot of `ip` like a
    /// failure's (core `hidden_lock_penalty`); nothing is counted.
    pub fn hidden_lock_penalty(&self, ip: IpAddr) -> Penalty<SlotGuard> {
        self.host_penalty(self.limiter.hidden_lock_penalty_at(ip, read()))
    }

    /// Reserve a login attempt before the password is checked: counted as
    /// a failure now, so parallel guesses get at most `max_failures`
    /// checks. `Err` is the denial (answer it without checking anything).
    /// Settle the attempt with [`finish_login`](Self::finish_login).
    pub async fn begin_login(
        &self,
        user: &str,
        ip: IpAddr,
    ) -> Result<Attempt<AttemptId, SlotGuard>, Decision> {
        self.begin_login_at(user, ip, read()).await
    }

    /// [`begin_login`](Self::begin_login) at `now`, read once by the caller.
    pub async fn begin_login_at(
        &self,
        user: &str,
        ip: IpAddr,
        now: Now,
    ) -> Result<Attempt<AttemptId, SlotGuard>, Decision> {
        let o = self.limiter.begin_login_at(&fold(user), ip, now);
        self.persist(o.changes).await;
        match o.decision {
            Ok(a) => {
                self.metrics.count_from(
                    ip,
                    &Decision::Allow {
                        remaining: 0,
                        reset_after: Duration::from_ticks(0),
                    },
                );
                Ok(Attempt {
                    id: a.id,
                    penalty: self.host_penalty(a.penalty),
                })
            }
            Err(d) => {
                self.metrics.count_from(ip, &d);
                Err(d)
            }
        }
    }

    /// Settle an attempt [`begin_login`](Self::begin_login) reserved:
    /// `ok` when the password was right. A wrong one may lock (true).
    pub async fn finish_login(&self, user: &str, ip: IpAddr, id: AttemptId, ok: bool) -> bool {
        self.finish_login_at(user, ip, id, ok, read()).await
    }

    /// [`finish_login`](Self::finish_login) at `now`, read once by the caller.
    pub async fn finish_login_at(
        &self,
        user: &str,
        ip: IpAddr,
        id: AttemptId,
        ok: bool,
        now: Now,
    ) -> bool {
        if !id.is_local() {
            return false; // reserved by another backend: not ours to settle
        }
        let o = self.limiter.finish_login_at(&fold(user), ip, id, ok, now);
        self.persist(o.changes).await;
        if ok {
            self.metrics.login_success();
        } else {
            self.metrics.login_failure();
        }
        !ok && o.decision
    }

    /// Record a successful login.
    pub async fn login_succeeded(&self, user: &str, ip: IpAddr) {
        self.login_succeeded_at(user, ip, read()).await
    }

    /// [`login_succeeded`](Self::login_succeeded) at `now`, read once by the caller.
    pub async fn login_succeeded_at(&self, user: &str, ip: IpAddr, now: Now) {
        let o = self.limiter.login_succeeded_at(&fold(user), ip, now);
        self.persist(o.changes).await;
        self.metrics.login_success();
    }

    /// Ban by hand.
    pub async fn ban(&self, ip: IpAddr) -> bool {
        self.ban_at(ip, read()).await
    }

    /// [`ban`](Self::ban) at `now`, read once by the caller.
    pub async fn ban_at(&self, ip: IpAddr, now: Now) -> bool {
        let o = self.limiter.ban_at(ip, now);
        self.persist(o.changes).await;
        o.decision
    }

    /// Lift every block, ban and lock on `ip`, in memory and in the store.
    pub async fn lift(&self, ip: IpAddr) -> usize {
        self.lift_at(ip, read()).await
    }

    /// [`lift`](Self::lift) at `now`, read once by the caller. A manual
    /// ban of exactly this address (`/32`, `/128`) is lifted too.
    pub async fn lift_at(&self, ip: IpAddr, now: Now) -> usize {
        let o = self.limiter.lift_at(ip, now);
        self.persist(o.changes).await;
        let host = portcullis_core::Cidr::new(ip, if ip.is_ipv4() { 32 } else { 128 });
        let manual = match host {
            Ok(c) => usize::from(self.unban_range(&c).await.is_some()),
            Err(_) => 0,
        };
        o.decision.saturating_add(manual)
    }

    /// Block (`until_ms`) or ban an address or range by hand, replacing
    /// any manual decision on exactly that range, and write it through
    /// (a store failure is logged and counted; the decision holds in
    /// memory). The decision it replaced, if any.
    pub async fn ban_range(&self, ban: ManualBan) -> Result<Option<ManualBan>, ManualError> {
        let old = self.limiter.manual().add(ban.clone())?;
        tracing::info!(range = %ban.range, until_ms = ?ban.until_ms, reason = %ban.reason, "manual ban");
        self.persist_manual(ManualChange::Put(ban)).await;
        Ok(old)
    }

    /// Lift the manual decision on exactly `range`; what it was.
    pub async fn unban_range(&self, range: &portcullis_core::Cidr) -> Option<ManualBan> {
        let old = self.limiter.manual().remove(range)?;
        tracing::info!(range = %range, "manual ban lifted");
        self.persist_manual(ManualChange::Delete(*range)).await;
        Some(old)
    }

    /// The manual decisions in force.
    pub fn manual_bans(&self) -> Vec<ManualBan> {
        self.limiter.manual().list(read().unix_ms())
    }

    /// Forget manual decisions that ended, in memory and in the store.
    pub async fn purge_manual(&self) -> usize {
        let gone = self.limiter.manual().purge(read().unix_ms());
        for c in &gone {
            self.persist_manual(ManualChange::Delete(*c)).await;
        }
        gone.len()
    }

    async fn persist_manual(&self, change: ManualChange) {
        if let Some(store) = &self.store {
            if let Err(e) = store.write_manual(change).await {
                self.metrics.store_error();
                tracing::error!(error = %e, "manual ban write-through failed");
            }
        }
    }

    /// Everything blocked, banned or locked.
    pub fn bans(&self) -> Vec<Hold> {
        self.limiter.bans_at(read())
    }

    /// Snapshot everything to the store; a failure is logged and counted.
    pub async fn snapshot(&self) {
        let _ = self.try_snapshot().await;
    }

    /// Snapshot everything to the store; a failure is logged, counted and
    /// returned (the final snapshot at shutdown must not fail silently).
    pub async fn try_snapshot(&self) -> Result<(), PersistError> {
        if let Some(store) = &self.store {
            let recs = self.limiter.export(read().wall());
            if let Err(e) = store.snapshot(recs).await {
                self.metrics.store_error();
                tracing::error!(error = %e, "snapshot failed");
                return Err(e);
            }
        }
        Ok(())
    }
}
