//! [`Engine`]: what the tower layer and the server ask of a backend, so the
//! local sharded limiter ([`Guard`]) and the Redis fleet backend are
//! interchangeable. It speaks types (decisions, [`BanInfo`] rows, a
//! [`Status`]); JSON and Prometheus text are the application's to render
//! (the server does both), and counters go through the `metrics` facade
//! ([`crate::metrics`]).

use std::net::IpAddr;

use crate::BoxFuture;
use embassy_time::Duration;
use portcullis_core::Decision;

use crate::guard::{Guard, HostPenalty, LoginAttempt, Ticket};
use crate::limiter::BanInfo;
use crate::manual::{ManualBan, ManualError};
use portcullis_core::Cidr;

/// A decision backend.
pub trait Engine: Send + Sync + 'static {
    /// Rules 1–4 and 9 for one request.
    fn check_request(&self, ip: IpAddr) -> BoxFuture<'_, Decision>;
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
    ) -> BoxFuture<'a, Result<LoginAttempt, Decision>>;
    /// Settle a reserved attempt (`ok`: right password); true if a wrong
    /// one locked the pair or the ip.
    fn finish_login<'a>(
        &'a self,
        user: &'a str,
        ip: IpAddr,
        ticket: Ticket,
        ok: bool,
    ) -> BoxFuture<'a, bool>;
    /// Record a failed login.
    fn login_failed<'a>(&'a self, user: &'a str, ip: IpAddr) -> BoxFuture<'a, HostPenalty>;
    /// Record a successful login.
    fn login_succeeded<'a>(&'a self, user: &'a str, ip: IpAddr) -> BoxFuture<'a, ()>;
    /// Lift every block, ban and lock on `ip`.
    fn lift(&self, ip: IpAddr) -> BoxFuture<'_, usize>;
    /// Everything blocked, banned or locked.
    fn bans(&self) -> BoxFuture<'_, Vec<BanInfo>>;
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
    fn hidden_lock_penalty(&self, ip: IpAddr) -> BoxFuture<'_, Option<HostPenalty>> {
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
    ) -> BoxFuture<'a, Result<LoginAttempt, Decision>> {
        Box::pin(Guard::begin_login(self, user, ip))
    }
    fn finish_login<'a>(
        &'a self,
        user: &'a str,
        ip: IpAddr,
        ticket: Ticket,
        ok: bool,
    ) -> BoxFuture<'a, bool> {
        Box::pin(Guard::finish_login(self, user, ip, ticket, ok))
    }
    fn login_failed<'a>(&'a self, user: &'a str, ip: IpAddr) -> BoxFuture<'a, HostPenalty> {
        Box::pin(Guard::login_failed(self, user, ip))
    }
    fn login_succeeded<'a>(&'a self, user: &'a str, ip: IpAddr) -> BoxFuture<'a, ()> {
        Box::pin(Guard::login_succeeded(self, user, ip))
    }
    fn lift(&self, ip: IpAddr) -> BoxFuture<'_, usize> {
        Box::pin(Guard::lift(self, ip))
    }
    fn bans(&self) -> BoxFuture<'_, Vec<BanInfo>> {
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
    fn hidden_lock_penalty(&self, ip: IpAddr) -> BoxFuture<'_, Option<HostPenalty>> {
        Box::pin(async move { Some(Guard::hidden_lock_penalty(self, ip)) })
    }
    fn status(&self) -> BoxFuture<'_, Status> {
        Box::pin(async move { local_status(self) })
    }
}
