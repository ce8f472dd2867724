//! How the firewall learns of holds without scanning the store: the
//! service's engine is wrapped ([`Mirrored`]), and every answer that is a
//! mirrored hold (a ban, a block, an address lock), every lift and every
//! manual decision is noted in the [`Tap`] and its task woken. The request
//! path pays one `match` on an allowed request; a denial takes a short
//! lock to note the address (the task applies it, the kernel then drops
//! that address's packets before they reach portcullis).
//!
//! Anything the tap misses (a hold imposed by another fleet server while
//! Redis pub/sub was away, a block that ended early) the periodic full
//! reconcile finds (`super::sync`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use portcullis::clock::read;
use portcullis::Duration;
use portcullis::Hold;
use portcullis::{Attempt, AttemptId, Penalty, SlotGuard};
use portcullis::{BoxFuture, Guard};
use portcullis::{Checked, Engine, Status};
use portcullis::{Cidr, Decision, Reason};
use portcullis::{ManualBan, ManualError};
use tokio::sync::Notify;

use super::desired::{longer, mirrored, Element, Until};

/// The username of the lock probe after a failure that locked (no account
/// is named so; the probe only reads).
const PROBE_USER: &str = "\u{0}firewall";

/// Changes heard from other fleet servers (`super::fleet`).
#[derive(Debug, Default)]
pub struct Heard {
    /// Holds, with their ends.
    pub holds: HashMap<Element, Until>,
    /// Addresses lifted.
    pub lifted: Vec<IpAddr>,
}

/// Changes noted since the task last looked.
#[derive(Debug, Default)]
pub struct Noted {
    /// Holds seen in answers, with their ends.
    pub holds: HashMap<Element, Until>,
    /// Addresses lifted.
    pub lifted: Vec<IpAddr>,
    /// A manual decision changed.
    pub manual: bool,
    /// Rebuild everything from the store (a reload).
    pub rebuild: bool,
    /// What other fleet servers told (not told on again).
    pub heard: Heard,
}

/// Where the wrapped engine notes changes for the firewall task.
#[derive(Debug)]
pub struct Tap {
    noted: Mutex<Noted>,
    wake: Notify,
    locks: bool,
    v6_prefix: u8,
    /// `requests.shadow`: the rules' holds are not enforced, so not
    /// mirrored (manual decisions still are).
    shadow: AtomicBool,
}

impl Tap {
    /// A tap mirroring address locks too if `locks`; IPv6 holds cut to
    /// `v6_prefix`.
    pub fn new(locks: bool, v6_prefix: u8) -> Tap {
        Tap {
            noted: Mutex::new(Noted::default()),
            wake: Notify::new(),
            locks,
            v6_prefix,
            shadow: AtomicBool::new(false),
        }
    }

    /// Follow `requests.shadow` (at start and on each reload).
    pub fn set_shadow(&self, shadow: bool) {
        self.shadow.store(shadow, Ordering::Relaxed);
    }

    /// Whether the rules' holds are shadowed (not mirrored).
    pub fn shadow(&self) -> bool {
        self.shadow.load(Ordering::Relaxed)
    }

    /// The IPv6 aggregation length.
    pub fn v6_prefix(&self) -> u8 {
        self.v6_prefix
    }

    /// Whether address locks are mirrored.
    pub fn locks(&self) -> bool {
        self.locks
    }

    /// Whether `d` is a denial the kernel takes over (and not in shadow
    /// mode): the one test an unmirrored decision pays.
    #[inline]
    pub fn mirrors(&self, d: &Decision) -> bool {
        matches!(d, Decision::Deny { reason, .. } if mirrored(*reason, self.locks) && !self.shadow())
    }

    /// Note `d`, the answer for `ip`, if it is a mirrored hold.
    #[inline]
    pub fn decision(&self, ip: IpAddr, d: &Decision) {
        if let Decision::Deny {
            reason,
            retry_after,
        } = d
        {
            if mirrored(*reason, self.locks) && !self.shadow() {
                self.hold(ip, *reason, *retry_after);
            }
        }
    }

    #[cold]
    fn hold(&self, ip: IpAddr, reason: Reason, left: Duration) {
        let until = (reason != Reason::Banned && left != Duration::MAX)
            .then(|| read().unix_ms().saturating_add(left.as_millis()));
        self.note_hold(Element::hold(ip, self.v6_prefix), until);
    }

    /// Note a hold on `e` ending at `until` (also: one heard from the fleet).
    pub fn note_hold(&self, e: Element, until: Until) {
        {
            let mut n = self.noted.lock();
            let merged = match n.holds.get(&e) {
                Some(old) => longer(*old, until),
                None => until,
            };
            n.holds.insert(e, merged);
        }
        self.wake.notify_one();
    }

    /// Note a hold another fleet server imposed.
    pub fn heard_hold(&self, e: Element, until: Until) {
        {
            let mut n = self.noted.lock();
            let merged = match n.heard.holds.get(&e) {
                Some(old) => longer(*old, until),
                None => until,
            };
            n.heard.holds.insert(e, merged);
        }
        self.wake.notify_one();
    }

    /// Note a lift on another fleet server.
    pub fn heard_lift(&self, ip: IpAddr) {
        self.noted.lock().heard.lifted.push(ip);
        self.wake.notify_one();
    }

    /// Note that `ip`'s holds were lifted.
    pub fn lifted(&self, ip: IpAddr) {
        self.noted.lock().lifted.push(ip);
        self.wake.notify_one();
    }

    /// Note that the manual decisions changed.
    pub fn manual_changed(&self) {
        self.noted.lock().manual = true;
        self.wake.notify_one();
    }

    /// Ask for a rebuild from the store (after a reload).
    pub fn rebuild(&self) {
        self.noted.lock().rebuild = true;
        self.wake.notify_one();
    }

    /// Take what was noted.
    pub fn take(&self) -> Noted {
        std::mem::take(&mut *self.noted.lock())
    }

    /// Wait until something is noted.
    pub async fn woken(&self) {
        self.wake.notified().await
    }
}

/// The service's engine with its holds noted in a [`Tap`].
pub struct Mirrored {
    inner: Arc<dyn Engine>,
    tap: Arc<Tap>,
    local: Guard,
    /// The engine is a fleet's (its locks live in Redis, not in `local`).
    fleet: bool,
}

impl Mirrored {
    /// Wrap `inner` (whose manual decisions are `local`'s; `fleet`: its
    /// holds live in Redis).
    pub fn new(inner: Arc<dyn Engine>, tap: Arc<Tap>, local: Guard, fleet: bool) -> Mirrored {
        Mirrored {
            inner,
            tap,
            local,
            fleet,
        }
    }

    /// Note `d` for `ip` unless a manual decision made it (those are
    /// mirrored as ranges).
    fn note(&self, ip: IpAddr, d: &Decision) {
        if !self.tap.mirrors(d) {
            return; // allowed, or a denial the kernel does not take
        }
        if self.local.limiter().manual_denial(ip, read()).is_some() {
            return;
        }
        self.tap.decision(ip, d);
    }

    /// A failure locked something: find out whether the address itself is
    /// locked, and for how long. Locally the limiter is asked directly (no
    /// decision is counted); a fleet's lock is in Redis, asked off the
    /// request path (that check is counted like any other).
    fn probe_lock(&self, ip: IpAddr) {
        if !self.fleet {
            let d = self.local.limiter().check_login_at(PROBE_USER, ip, read());
            self.tap.decision(ip, &d);
            return;
        }
        let (inner, tap) = (self.inner.clone(), self.tap.clone());
        tokio::spawn(async move {
            let d = inner.check_login(PROBE_USER, ip).await;
            tap.decision(ip, &d);
        });
    }
}

impl Engine for Mirrored {
    fn check_request(&self, ip: IpAddr) -> BoxFuture<'_, Decision> {
        Box::pin(self.check_request_at(ip, read()))
    }
    fn check_request_at(&self, ip: IpAddr, now: portcullis::clock::Now) -> Checked<'_> {
        match self.inner.check_request_at(ip, now) {
            Checked::Ready(d) => {
                self.note(ip, &d);
                Checked::Ready(d)
            }
            Checked::Pending(f) => Checked::Pending(Box::pin(async move {
                let d = f.await;
                self.note(ip, &d);
                d
            })),
        }
    }
    fn quota(&self) -> (u32, Duration) {
        self.inner.quota()
    }
    fn check_login<'a>(&'a self, user: &'a str, ip: IpAddr) -> BoxFuture<'a, Decision> {
        Box::pin(async move {
            let d = self.inner.check_login(user, ip).await;
            self.note(ip, &d);
            d
        })
    }
    fn begin_login<'a>(
        &'a self,
        user: &'a str,
        ip: IpAddr,
    ) -> BoxFuture<'a, Result<Attempt<AttemptId, SlotGuard>, Decision>> {
        Box::pin(async move {
            let r = self.inner.begin_login(user, ip).await;
            if let Err(d) = &r {
                self.note(ip, d);
            }
            r
        })
    }
    fn finish_login<'a>(
        &'a self,
        user: &'a str,
        ip: IpAddr,
        id: AttemptId,
        ok: bool,
    ) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let locked = self.inner.finish_login(user, ip, id, ok).await;
            if locked && self.tap.locks() {
                self.probe_lock(ip);
            }
            locked
        })
    }
    fn login_failed<'a>(&'a self, user: &'a str, ip: IpAddr) -> BoxFuture<'a, Penalty<SlotGuard>> {
        Box::pin(async move {
            let p = self.inner.login_failed(user, ip).await;
            if p.locked && self.tap.locks() {
                self.probe_lock(ip);
            }
            p
        })
    }
    fn login_succeeded<'a>(&'a self, user: &'a str, ip: IpAddr) -> BoxFuture<'a, ()> {
        self.inner.login_succeeded(user, ip)
    }
    fn lift(&self, ip: IpAddr) -> BoxFuture<'_, usize> {
        Box::pin(async move {
            let n = self.inner.lift(ip).await;
            self.tap.lifted(ip);
            self.tap.manual_changed();
            n
        })
    }
    fn bans(&self) -> BoxFuture<'_, Vec<Hold>> {
        self.inner.bans()
    }
    fn ban_range(&self, ban: ManualBan) -> BoxFuture<'_, Result<Option<ManualBan>, ManualError>> {
        Box::pin(async move {
            let r = self.inner.ban_range(ban).await;
            self.tap.manual_changed();
            r
        })
    }
    fn unban_range(&self, range: Cidr) -> BoxFuture<'_, Option<ManualBan>> {
        Box::pin(async move {
            let r = self.inner.unban_range(range).await;
            self.tap.manual_changed();
            r
        })
    }
    fn manual_bans(&self) -> BoxFuture<'_, Vec<ManualBan>> {
        self.inner.manual_bans()
    }
    fn hidden_lock_penalty(&self, ip: IpAddr) -> BoxFuture<'_, Option<Penalty<SlotGuard>>> {
        self.inner.hidden_lock_penalty(ip)
    }
    fn status(&self) -> BoxFuture<'_, Status> {
        self.inner.status()
    }
    fn set_rules(&self, config: portcullis::Config) -> Result<(), portcullis::ConfigError> {
        self.inner.set_rules(config)?;
        self.tap.rebuild();
        Ok(())
    }
}
