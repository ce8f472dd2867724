//! [`Engine`]: what the tower layer and the server ask of a backend, so the
//! local sharded limiter ([`Guard`]) and the Redis fleet backend are
//! interchangeable.

use std::net::IpAddr;

use embassy_time::Duration;
use futures_util::future::BoxFuture;
use portcullis_core::Decision;

use crate::guard::{Guard, HostPenalty, LoginAttempt, Ticket};
use crate::limiter::BanInfo;

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
    /// JSON status for `/admin/status`.
    fn status(&self) -> BoxFuture<'_, serde_json::Value>;
    /// Prometheus text for `/metrics`.
    fn metrics(&self) -> BoxFuture<'_, String>;
}

impl Engine for Guard {
    fn check_request(&self, ip: IpAddr) -> BoxFuture<'_, Decision> {
        Box::pin(Guard::check_request(self, ip))
    }
    fn quota(&self) -> (u32, Duration) {
        let c = self.limiter().config();
        (c.requests.max_requests, c.requests.window)
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
    fn status(&self) -> BoxFuture<'_, serde_json::Value> {
        Box::pin(async move {
            let l = self.limiter();
            let s = l.stats();
            serde_json::json!({
                "backend": "local",
                "store": self.store().map(|s| s.location()),
                "entries": l.len(),
                "capacity": l.capacity(),
                "evictions": s.evictions,
                "table_full": s.table_full,
                "purged": s.purged,
                "store_errors": self.metrics().store_errors.load(std::sync::atomic::Ordering::Relaxed),
            })
        })
    }
    fn metrics(&self) -> BoxFuture<'_, String> {
        Box::pin(async move {
            let l = self.limiter();
            let s = l.stats();
            self.metrics()
                .render(l.len(), l.capacity(), s.evictions, s.table_full, &[])
        })
    }
}
