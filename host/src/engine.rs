//! [`Engine`]: what the tower layer and the server ask of a backend, so the
//! local sharded limiter ([`Guard`]) and the Redis fleet backend are
//! interchangeable. It speaks types, and owns the ones that are its own:
//! the core's [`Decision`], [`Penalty`], [`Attempt`] and [`Hold`] (one
//! type each in every layer), with a backend's slot held by a
//! [`SlotGuard`] and a reservation named by an [`AttemptId`]; a
//! [`Status`]. JSON and Prometheus text are the application's to render
//! (the server does both), and counters go through the `metrics` facade
//! ([`crate::metrics`]).

use std::net::IpAddr;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::clock::Now;
use crate::BoxFuture;
use portcullis_core::Duration;
use portcullis_core::{Attempt, Cidr, Decision, Hold, Penalty};

use crate::guard::Guard;
use crate::manual::{ManualBan, ManualError};

/// A held concurrency slot, released when dropped (and reclaimed by its
/// TTL if it is leaked): the slot of every backend's [`Penalty`].
pub struct SlotGuard {
    release: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl SlotGuard {
    /// Wrap a token taken from `limiter`.
    pub fn new(limiter: std::sync::Arc<crate::Limiter>, token: portcullis_core::SlotToken) -> Self {
        SlotGuard::from_fn(move || {
            limiter.release_slot(token);
        })
    }

    /// A slot released by calling `release` (for other backends).
    pub fn from_fn(release: impl FnOnce() + Send + Sync + 'static) -> Self {
        SlotGuard {
            release: Some(Box::new(release)),
        }
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if let Some(f) = self.release.take() {
            f();
        }
    }
}

impl std::fmt::Debug for SlotGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotGuard")
            .field("held", &self.release.is_some())
            .finish()
    }
}

/// Serving a [`Penalty`]: sleep for its delay while holding its slot.
pub trait Serve {
    /// Sleep for the delay while holding the slot, then release it.
    fn serve(self) -> impl std::future::Future<Output = ()> + Send;
}

impl Serve for Penalty<SlotGuard> {
    async fn serve(self) {
        let d = std::time::Duration::from_micros(self.delay.as_micros());
        tokio::time::sleep(d).await;
        drop(self.slot);
    }
}

/// Names a login attempt an [`Engine`] reserved, to settle it with
/// ([`Engine::finish_login`]): whether this process's limiter reserved it
/// (a fleet engine's local fallback, or a [`Guard`]) or a shared store
/// did, and when its failure was counted on the (username, address) and
/// address keys and on the account key (`None`: not counted). Opaque, and
/// meaningful only to the backend that made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttemptId {
    local: bool,
    pair: Option<u64>,
    account: Option<u64>,
}

impl AttemptId {
    /// The local limiter's id: a core id from each shard.
    pub(crate) const fn local(
        pair: portcullis_core::AttemptId,
        account: portcullis_core::AttemptId,
    ) -> AttemptId {
        AttemptId {
            local: true,
            pair: pair.ticks(),
            account: account.ticks(),
        }
    }

    /// A shared store's id: the store's times of the two counts.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) const fn remote(pair: Option<u64>, account: Option<u64>) -> AttemptId {
        AttemptId {
            local: false,
            pair,
            account,
        }
    }

    /// Whether this process's limiter reserved it.
    pub(crate) const fn is_local(self) -> bool {
        self.local
    }

    /// When the (username, address) and address failure was counted.
    pub(crate) const fn pair(self) -> Option<u64> {
        self.pair
    }

    /// When the account failure was counted.
    pub(crate) const fn account(self) -> Option<u64> {
        self.account
    }
}

/// A request's decision from [`Engine::check_request_at`]: made already
/// (nothing to wait for, nothing allocated), or still to come.
pub enum Checked<'a> {
    /// Decided without waiting (a local table with nothing to write
    /// through).
    Ready(Decision),
    /// To wait for (a store's write-through, a fleet round trip).
    Pending(BoxFuture<'a, Decision>),
}

impl Future for Checked<'_> {
    type Output = Decision;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Decision> {
        match self.get_mut() {
            Checked::Ready(d) => Poll::Ready(*d),
            Checked::Pending(f) => f.as_mut().poll(cx),
        }
    }
}

/// A decision backend.
pub trait Engine: Send + Sync + 'static {
    /// Rules 1–4 and 9 for one request.
    fn check_request(&self, ip: IpAddr) -> BoxFuture<'_, Decision>;
    /// [`check_request`](Self::check_request) at `now`, read once by the
    /// caller for the whole request (a server reads it at the edge). The
    /// default ignores `now` and waits for `check_request`.
    fn check_request_at(&self, ip: IpAddr, now: Now) -> Checked<'_> {
        let _ = now;
        Checked::Pending(self.check_request(ip))
    }
    /// `(max_requests, window)` for the RateLimit-Policy field.
    fn quota(&self) -> (u32, Duration);
    /// Whether a login may proceed.
    fn check_login<'a>(&'a self, user: &'a str, ip: IpAddr) -> BoxFuture<'a, Decision>;
    /// Reserve a login attempt before the password is checked (counted as
    /// a failure now); `Err` is the denial.
    fn begin_login<'a>(
        &'a self,
        user: &'a str,
        ip: IpAddr,
    ) -> BoxFuture<'a, Result<Attempt<AttemptId, SlotGuard>, Decision>>;
    /// Settle a reserved attempt (`ok`: right password); true if a wrong
    /// one locked the pair or the ip.
    fn finish_login<'a>(
        &'a self,
        user: &'a str,
        ip: IpAddr,
        id: AttemptId,
        ok: bool,
    ) -> BoxFuture<'a, bool>;
    /// Record a failed login.
    fn login_failed<'a>(&'a self, user: &'a str, ip: IpAddr) -> BoxFuture<'a, Penalty<SlotGuard>>;
    /// Record a successful login.
    fn login_succeeded<'a>(&'a self, user: &'a str, ip: IpAddr) -> BoxFuture<'a, ()>;
    /// Lift every block, ban and lock on `ip`.
    fn lift(&self, ip: IpAddr) -> BoxFuture<'_, usize>;
    /// Everything blocked, banned or locked.
    fn bans(&self) -> BoxFuture<'_, Vec<Hold>>;
    /// Block or ban an address or range by hand ([`ManualBan`](crate::ManualBan)); the
    /// decision it replaced. The default refuses.
    fn ban_range(&self, ban: ManualBan) -> BoxFuture<'_, Result<Option<ManualBan>, ManualError>> {
        let _ = ban;
        Box::pin(async { Err(ManualError::Unsupported) })
    }
    /// Lift the manual decision on exactly `range`; what it was.
    fn unban_range(&self, range: Cidr) -> BoxFuture<'_, Option<ManualBan>> {
        let _ = range;
        Box::pin(async { None })
    }
    /// The manual decisions in force.
    fn manual_bans(&self) -> BoxFuture<'_, Vec<ManualBan>> {
        Box::pin(async { Vec::new() })
    }
    /// What a lock answered like a wrong password costs: the delay the
    /// next wrong password would get, in a slot like a failure's (core
    /// `hidden_lock_penalty`). `None` (the default): the backend cannot
    /// say, and the caller works it out from the rules without a slot.
    fn hidden_lock_penalty(&self, ip: IpAddr) -> BoxFuture<'_, Option<Penalty<SlotGuard>>> {
        let _ = ip;
        Box::pin(async { None })
    }
    /// What the backend holds and how it fares, for status pages. It also
    /// publishes the table gauges to the metrics recorder (see
    /// [`crate::metrics`]), so a `/metrics` handler calls it first.
    fn status(&self) -> BoxFuture<'_, Status>;
    /// Swap the rules for the next decision, keeping every key's state (a
    /// reload). An invalid `config` changes nothing.
    fn set_rules(
        &self,
        config: portcullis_core::Config,
    ) -> Result<(), portcullis_core::ConfigError>;
}

/// A backend's state: the local table and, for a fleet backend, the
/// shared store's.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// `"local"` or `"redis"`.
    pub backend: &'static str,
    /// Where records are persisted ([`Persist::location`](crate::persist::Persist::location)), if anywhere.
    pub store: Option<String>,
    /// Keys held by the local table.
    pub entries: usize,
    /// Keys the local table holds at most.
    pub capacity: usize,
    /// Entries evicted to make room.
    pub evictions: u64,
    /// New keys refused for lack of room.
    pub table_full: u64,
    /// Entries removed by purges.
    pub purged: u64,
    /// Store reads/writes that failed.
    pub store_errors: u64,
    /// The fleet store's state (`None`: not a fleet backend).
    pub fleet: Option<FleetStatus>,
}

/// A fleet backend's state.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FleetStatus {
    /// The fleet store is unavailable: decisions are local (or refused).
    pub fallback_active: bool,
    /// Without the fleet store, requests are refused (503).
    pub fail_closed: bool,
    /// The key namespace in the fleet store.
    pub namespace: &'static str,
    /// A Redis Cluster's masters, their slots and health (empty: one node).
    #[cfg(feature = "redis")]
    pub nodes: Vec<crate::fleet::NodeHealth>,
    /// Where the reconciliation queue is journaled (`None`: memory only).
    pub journal: Option<String>,
    /// Keys queued for the fleet store (each one a journal row when
    /// journaled).
    pub queued: usize,
}

/// A guard's [`Status`] (local backend).
pub(crate) fn local_status(guard: &Guard) -> Status {
    let l = guard.limiter();
    let s = l.stats();
    guard.record_table_metrics();
    Status {
        backend: "local",
        store: guard.store().map(|s| s.location()),
        entries: l.len(),
        capacity: l.capacity(),
        evictions: s.evictions,
        table_full: s.table_full,
        purged: s.purged,
        store_errors: guard.metrics().store_errors(),
        fleet: None,
    }
}

impl Engine for Guard {
    fn set_rules(
        &self,
        config: portcullis_core::Config,
    ) -> Result<(), portcullis_core::ConfigError> {
        self.limiter().set_config(config)
    }
    fn check_request(&self, ip: IpAddr) -> BoxFuture<'_, Decision> {
        Box::pin(Guard::check_request(self, ip))
    }
    fn check_request_at(&self, ip: IpAddr, now: Now) -> Checked<'_> {
        Guard::decide_request(self, ip, now)
    }
    fn quota(&self) -> (u32, Duration) {
        self.limiter().quota()
    }
    fn check_login<'a>(&'a self, user: &'a str, ip: IpAddr) -> BoxFuture<'a, Decision> {
        Box::pin(Guard::check_login(self, user, ip))
    }
    fn begin_login<'a>(
        &'a self,
        user: &'a str,
        ip: IpAddr,
    ) -> BoxFuture<'a, Result<Attempt<AttemptId, SlotGuard>, Decision>> {
        Box::pin(Guard::begin_login(self, user, ip))
    }
    fn finish_login<'a>(
        &'a self,
        user: &'a str,
        ip: IpAddr,
        id: AttemptId,
        ok: bool,
    ) -> BoxFuture<'a, bool> {
        Box::pin(Guard::finish_login(self, user, ip, id, ok))
    }
    fn login_failed<'a>(&'a self, user: &'a str, ip: IpAddr) -> BoxFuture<'a, Penalty<SlotGuard>> {
        Box::pin(Guard::login_failed(self, user, ip))
    }
    fn login_succeeded<'a>(&'a self, user: &'a str, ip: IpAddr) -> BoxFuture<'a, ()> {
        Box::pin(Guard::login_succeeded(self, user, ip))
    }
    fn lift(&self, ip: IpAddr) -> BoxFuture<'_, usize> {
        Box::pin(Guard::lift(self, ip))
    }
    fn bans(&self) -> BoxFuture<'_, Vec<Hold>> {
        Box::pin(async move { Guard::bans(self) })
    }
    fn ban_range(&self, ban: ManualBan) -> BoxFuture<'_, Result<Option<ManualBan>, ManualError>> {
        Box::pin(Guard::ban_range(self, ban))
    }
    fn unban_range(&self, range: Cidr) -> BoxFuture<'_, Option<ManualBan>> {
        Box::pin(async move { Guard::unban_range(self, &range).await })
    }
    fn manual_bans(&self) -> BoxFuture<'_, Vec<ManualBan>> {
        Box::pin(async move { Guard::manual_bans(self) })
    }
    fn hidden_lock_penalty(&self, ip: IpAddr) -> BoxFuture<'_, Option<Penalty<SlotGuard>>> {
        Box::pin(async move { Some(Guard::hidden_lock_penalty(self, ip)) })
    }
    fn status(&self) -> BoxFuture<'_, Status> {
        Box::pin(async move { local_status(self) })
    }
}
