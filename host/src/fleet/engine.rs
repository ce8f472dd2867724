//! The fleet [`Engine`]: every decision in Redis ([`RedisLimiter`]), and
//! when Redis is away (down, hung past the timeout, answering garbage) the
//! local in-process limiter decides instead — or, with `fail_closed`, the
//! request is refused with `503` ([`Reason::Unavailable`]). Never fail open
//! silently: each outage is logged once when it starts and once when it
//! ends, and every degraded decision is counted
//! through the `metrics` facade (`portcullis_fallbacks_total`,
//! `portcullis_fail_closed_total`, `portcullis_fallback_active`).
//!
//! On a Redis Cluster an outage is a master's, not the cluster's: a call
//! that fails marks the master of its slot down (logged and counted once
//! per node by [`crate::fleet`]), the keys of that master's slots fall
//! back (or fail closed) while every other slot keeps deciding in Redis,
//! and `portcullis_fallback_active` is 1 while any master is down. Masters
//! marked down are probed each second ([`RedisLimiter::probe_nodes`]).
//!
//! The fleet's seed (username hashes must agree across servers) lives in
//! Redis itself (`<ns>:seed`, set once with `SET NX`). If Redis is
//! unreachable at start-up the server starts degraded and keeps trying to
//! connect in the background.
//!
//! Every login call folds the username first ([`crate::username::fold`]),
//! before Redis, the denial cache or the local fallback sees it.
//!
//! No ban is lost in an outage: what the fallback imposes is queued for
//! Redis ([`crate::fleet::reconcile`]) and, with a journal
//! ([`connect_with_journal`], [`crate::fleet::journal`]), written to disk
//! before the response leaves; at start-up the journal's holds are imposed
//! again by the fallback and queued again. The standing denials this
//! server had from Redis ([`crate::fleet::denials`]) keep refusing their
//! clients through an outage, until they end.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use crate::BoxFuture;
use parking_lot::RwLock;
use portcullis_core::Duration;
use portcullis_core::{Addr, Decision, Key, Reason, Seed, UserHasher};

use crate::clock::{read, Now};
use crate::engine::{AttemptId, SlotGuard};
use crate::engine::{Checked, Engine, FleetStatus, Status};
use crate::fleet::denials::{self, DenialCache};
use crate::fleet::journal::{self, Restored};
use crate::fleet::reconcile::{self, Pending, Recorder};
use crate::fleet::{Endpoint, FleetError, RedisLimiter};
use crate::guard::Guard;
use crate::manual::{ManualBan, ManualError};
use crate::username::fold;
use portcullis_core::Cidr;
use portcullis_core::{Attempt, Hold, Penalty};

/// Key namespace of the bundled server's fleet.
pub const NAMESPACE: &str = "portcullis";

/// How to reach the fleet's Redis and what to do without it.
#[derive(Clone, Debug)]
pub struct FleetOptions {
    /// `redis://…` URL (one node; unused when `redis_cluster` is set).
    pub redis_url: String,
    /// The URLs of some nodes of a Redis Cluster (empty: one node at
    /// `redis_url`).
    pub redis_cluster: Vec<String>,
    /// Longest wait for one Redis call before it counts as an outage.
    pub redis_timeout: StdDuration,
    /// Redis unavailable: `true` answers 503, `false` decides locally.
    pub fail_closed: bool,
    /// The rules (the same as the local limiter's).
    pub rules: portcullis_core::Config,
    /// Keys the local cache of standing denials holds at most (0: off;
    /// [`crate::fleet::denials`], default
    /// [`DEFAULT_CAPACITY`](crate::fleet::denials::DEFAULT_CAPACITY)).
    pub denial_cache: usize,
}

/// Redis with a local fallback.
pub struct FleetEngine {
    redis: RwLock<Option<RedisLimiter>>,
    /// The rules a reconnect connects with (a reload swaps them).
    rules: RwLock<portcullis_core::Config>,
    local: Guard,
    fail_closed: bool,
    down: AtomicBool,
    /// What the fallback imposed, for Redis when it is back.
    pending: Arc<Pending>,
    /// Wakes the reconciliation task (Redis is back).
    drain_now: Arc<tokio::sync::Notify>,
    /// Standing denials got from Redis.
    denials: DenialCache,
    /// The local limiter's username hashes (its seed, not the fleet's).
    local_users: UserHasher,
    /// Addresses are aggregated with this IPv6 prefix (fixed while running).
    v6_prefix: u8,
    /// Where the local guard's own store is, for the status page.
    store_location: Option<String>,
    /// A cluster's per-node health (set once connected to a cluster): an
    /// outage there is a node's, logged per node by [`crate::fleet`].
    cluster: std::sync::OnceLock<RedisLimiter>,
}

impl FleetOptions {
    /// Where the fleet's Redis is.
    pub fn endpoint(&self) -> Endpoint {
        if self.redis_cluster.is_empty() {
            Endpoint::Single(self.redis_url.clone())
        } else {
            Endpoint::Cluster(self.redis_cluster.clone())
        }
    }
}

/// The seed shared by the fleet, created by the first server.
async fn fleet_seed(endpoint: &Endpoint, timeout: StdDuration) -> Result<Seed, FleetError> {
    let bound = timeout.max(StdDuration::from_millis(500));
    let mut con = crate::fleet::open(endpoint, bound).await?;
    let mut fresh = [0u8; 16];
    getrandom::getrandom(&mut fresh).map_err(FleetError::Rng)?;
    let work = async {
        let key = format!("{NAMESPACE}:seed");
        let _: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(fresh.as_slice())
            .arg("NX")
            .query_async(&mut con)
            .await?;
        let got: Vec<u8> = redis::cmd("GET").arg(&key).query_async(&mut con).await?;
        Ok::<_, redis::RedisError>(got)
    };
    let bytes = tokio::time::timeout(bound, work)
        .await
        .map_err(|_| FleetError::Timeout(bound))??;
    let arr: [u8; 16] = bytes
        .try_into()
        .map_err(|_| FleetError::Unexpected(format!("{NAMESPACE}:seed is not 16 bytes")))?;
    Ok(Seed::new(arr))
}

async fn try_connect(cfg: &FleetOptions) -> Result<RedisLimiter, FleetError> {
    let endpoint = cfg.endpoint();
    let seed = fleet_seed(&endpoint, cfg.redis_timeout).await?;
    RedisLimiter::connect_to(
        &endpoint,
        cfg.rules.clone(),
        seed,
        NAMESPACE,
        cfg.redis_timeout,
    )
    .await
}

/// Connect per `cfg` (or start degraded and keep trying), falling back to
/// `local`; the reconciliation queue is kept in memory only.
pub async fn connect(cfg: &FleetOptions, local: Guard) -> Result<Arc<dyn Engine>, FleetError> {
    Ok(connect_fleet(cfg, local).await?)
}

/// [`connect`] with the reconciliation queue kept in a journal: the holds
/// `restored` read back are imposed again by `local` and queued for Redis.
pub async fn connect_with_journal(
    cfg: &FleetOptions,
    local: Guard,
    restored: Restored,
) -> Result<Arc<dyn Engine>, FleetError> {
    Ok(connect_fleet_journaled(cfg, local, Some(restored)).await?)
}

/// [`connect`], as the fleet engine itself (for its reconciliation queue
/// and denial cache figures).
pub async fn connect_fleet(
    cfg: &FleetOptions,
    local: Guard,
) -> Result<Arc<FleetEngine>, FleetError> {
    connect_fleet_journaled(cfg, local, None).await
}

/// [`connect_with_journal`] (or, with `None`, [`connect`]), as the fleet
/// engine itself.
pub async fn connect_fleet_journaled(
    cfg: &FleetOptions,
    local: Guard,
    restored: Option<Restored>,
) -> Result<Arc<FleetEngine>, FleetError> {
    let (pending, rows) = match restored {
        Some(r) => (Arc::new(Pending::with_journal(r.journal)), r.rows),
        None => (Arc::new(Pending::default()), Vec::new()),
    };
    let store_location = local.store().map(|s| s.location());
    let recorder = Recorder {
        pending: pending.clone(),
        inner: local.store().cloned(),
    };
    let engine = Arc::new(FleetEngine {
        redis: RwLock::new(None),
        rules: RwLock::new(cfg.rules.clone()),
        local_users: UserHasher::new(local.limiter().seed()),
        local: local.with_store(Some(Arc::new(recorder))),
        fail_closed: cfg.fail_closed,
        down: AtomicBool::new(false),
        pending,
        drain_now: Arc::new(tokio::sync::Notify::new()),
        denials: DenialCache::new(cfg.denial_cache),
        v6_prefix: cfg.rules.ipv6_prefix,
        store_location,
        cluster: std::sync::OnceLock::new(),
    });
    describe_metrics();
    engine.restore(rows).await;
    engine.local.metrics().set_fallback_active(false);
    match try_connect(cfg).await {
        Ok(r) => {
            tracing::info!(url = %cfg.endpoint().redacted(), fail_closed = cfg.fail_closed, "fleet store: redis connected");
            engine.connected(r);
        }
        Err(e) => {
            engine.outage(&e);
            let (weak, cfg) = (Arc::downgrade(&engine), cfg.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(StdDuration::from_secs(1)).await;
                    let Some(engine) = weak.upgrade() else { return };
                    let cfg = FleetOptions {
                        rules: engine.rules.read().clone(),
                        ..cfg.clone()
                    };
                    if let Ok(r) = try_connect(&cfg).await {
                        engine.connected(r);
                        engine.recovered();
                        return;
                    }
                }
            });
        }
    }
    start_manual_sync(&engine);
    start_reconcile(&engine);
    start_denial_poll(&engine);
    start_node_probe(&engine);
    Ok(engine)
}

/// A cluster's masters marked down are probed each second (and the slot
/// map read again every ten), so a node that is back is seen as back even
/// before a request for one of its keys comes in.
fn start_node_probe(engine: &Arc<FleetEngine>) {
    let weak = Arc::downgrade(engine);
    tokio::spawn(async move {
        let mut tick = 0u32;
        loop {
            tokio::time::sleep(StdDuration::from_secs(1)).await;
            let Some(engine) = weak.upgrade() else { return };
            let Some(r) = engine.cluster.get() else {
                continue;
            };
            tick = tick.wrapping_add(1);
            if tick % 10 == 0 || !r.tracks_nodes() {
                if let Err(e) = r.refresh_nodes().await {
                    tracing::debug!(error = %e, "redis cluster slot map not refreshed");
                }
            }
            r.probe_nodes().await;
            engine
                .local
                .metrics()
                .set_fallback_active(engine.degraded());
        }
    });
}

/// How often each server looks for changes to the fleet's manual bans.
pub const MANUAL_SYNC: StdDuration = StdDuration::from_secs(1);

/// Keep the local copy of the fleet's manual bans current: every
/// [`MANUAL_SYNC`], reload it when the fleet's change counter moved.
fn start_manual_sync(engine: &Arc<FleetEngine>) {
    let weak = Arc::downgrade(engine);
    tokio::spawn(async move {
        let mut seen: Option<u64> = None;
        loop {
            {
                let Some(engine) = weak.upgrade() else { return };
                if let Some(r) = engine.redis() {
                    match engine.sync_manual(&r, seen).await {
                        Ok(v) => seen = Some(v),
                        Err(e) => tracing::debug!(error = %e, "manual ban sync failed"),
                    }
                }
            }
            tokio::time::sleep(MANUAL_SYNC).await;
        }
    });
}

impl FleetEngine {
    fn redis(&self) -> Option<RedisLimiter> {
        self.redis.read().clone()
    }

    /// Reload the fleet's manual bans if their counter is not `seen`; the
    /// counter now.
    async fn sync_manual(&self, r: &RedisLimiter, seen: Option<u64>) -> Result<u64, FleetError> {
        let v = r.manual_version().await?;
        if seen == Some(v) {
            return Ok(v);
        }
        let (v, mut all) = r.manual_all().await?;
        // Blocks that ended leave the fleet's hash (any server may do it).
        let now_ms = read().unix_ms();
        for b in all.iter().filter(|b| !b.live(now_ms)) {
            r.manual_delete(&b.range).await?;
        }
        all.retain(|b| b.live(now_ms));
        let n = all.len();
        let refused = self.local.limiter().manual().replace(all);
        if refused > 0 {
            tracing::warn!(refused, "fleet manual bans refused (too wide or too many)");
        }
        tracing::debug!(version = v, bans = n, "fleet manual bans loaded");
        Ok(v)
    }

    fn connected(&self, r: RedisLimiter) {
        if r.is_cluster() {
            let _ = self.cluster.set(r.clone());
        }
        *self.redis.write() = Some(r);
    }

    /// Some decisions are not made in Redis: not connected, or (cluster)
    /// a master is down.
    fn degraded(&self) -> bool {
        self.down.load(Relaxed) || self.cluster.get().is_some_and(RedisLimiter::any_node_down)
    }

    fn outage(&self, e: &dyn std::fmt::Display) {
        self.local.metrics().store_error();
        if self.redis.read().is_some() && self.cluster.get().is_some_and(RedisLimiter::tracks_nodes)
        {
            // A cluster node's outage: logged once per node (crate::fleet).
            self.local.metrics().set_fallback_active(self.degraded());
            return;
        }
        if !self.down.swap(true, Relaxed) {
            self.local.metrics().set_fallback_active(true);
            if self.fail_closed {
                tracing::error!(error = %e, "redis unavailable: failing closed (503) until it is back");
            } else {
                tracing::warn!(error = %e, "redis unavailable: deciding with the local limiter until it is back");
            }
        }
    }

    fn recovered(&self) {
        if self.down.swap(false, Relaxed) {
            self.local.metrics().set_fallback_active(self.degraded());
            tracing::info!("redis is back: decisions return to the fleet store");
            self.drain_now.notify_one();
        }
    }

    /// Run `op` on Redis; `None` when there is no Redis or it failed.
    async fn on_redis<T, F>(&self, op: impl FnOnce(RedisLimiter) -> F) -> Option<T>
    where
        F: std::future::Future<Output = Result<T, FleetError>>,
    {
        let Some(r) = self.redis() else {
            self.outage(&"not connected");
            return None;
        };
        match op(r).await {
            Ok(v) => {
                self.recovered();
                Some(v)
            }
            Err(e) => {
                self.outage(&e);
                None
            }
        }
    }

    /// A Redis slot as an RAII guard: dropping it releases the slot in Redis
    /// (in a task, so a drop outside async code still does it).
    /// A Redis penalty with its slot in a [`SlotGuard`] that releases it
    /// there.
    fn host_penalty(&self, p: Penalty<crate::fleet::FleetSlot>) -> Penalty<SlotGuard> {
        Penalty {
            delay: p.delay,
            slot: self.slot_guard(p.slot),
            refused: p.refused,
            throttled: p.throttled,
            locked: p.locked,
        }
    }

    fn slot_guard(&self, slot: Option<crate::fleet::FleetSlot>) -> Option<SlotGuard> {
        let (s, r) = (slot?, self.redis()?);
        Some(SlotGuard::from_fn(move || {
            if let Ok(h) = tokio::runtime::Handle::try_current() {
                h.spawn(async move {
                    let _ = r.release_slot(s).await;
                });
            }
        }))
    }

    fn closed(&self) -> Decision {
        self.local.metrics().fail_closed();
        Decision::Deny {
            reason: Reason::Unavailable,
            retry_after: Duration::from_secs(1),
        }
    }

    fn fallback(&self) {
        self.local.metrics().fallback();
    }
}

impl Engine for FleetEngine {
    fn set_rules(
        &self,
        config: portcullis_core::Config,
    ) -> Result<(), portcullis_core::ConfigError> {
        let mut redis = self.redis.write();
        let swapped = match redis.as_ref() {
            Some(r) => Some(r.with_config(config.clone())?),
            None => None,
        };
        self.local.limiter().set_config(config.clone())?;
        if swapped.is_some() {
            *redis = swapped;
        }
        *self.rules.write() = config;
        // Cached denials were decided by the old rules.
        self.denials.clear();
        Ok(())
    }
    fn check_request(&self, ip: IpAddr) -> BoxFuture<'_, Decision> {
        Box::pin(self.check_request_at(ip, read()))
    }

    fn check_request_at(&self, ip: IpAddr, now: Now) -> Checked<'_> {
        Checked::Pending(Box::pin(async move {
            if let Some(d) = self.local.limiter().manual_denial(ip, now) {
                self.local.metrics().count_from(ip, &d);
                return d;
            }
            let key = Key::request(self.addr(ip));
            if let Some(d) = self.denials.get(&key, now.unix_us()) {
                self.local.metrics().count_from(ip, &d);
                return d;
            }
            let reachable = self.reconcile_first(ip, now).await;
            let epoch = self.denials.epoch();
            if let Some(d) = self
                .on_redis_if(reachable, |r| async move {
                    let jitter = crate::jitter::draw(r.config());
                    r.check_request_with(ip, now.unix_us(), jitter).await
                })
                .await
            {
                self.denials.insert(key, &d, now.unix_us(), epoch);
                self.local.metrics().count_from(ip, &d);
                return d;
            }
            if self.fail_closed {
                let d = self.closed();
                self.local.metrics().count_from(ip, &d);
                return d;
            }
            self.fallback();
            self.local.check_request_at(ip, now).await
        }))
    }

    fn quota(&self) -> (u32, Duration) {
        self.local.limiter().quota()
    }

    fn check_login<'a>(&'a self, user: &'a str, ip: IpAddr) -> BoxFuture<'a, Decision> {
        Box::pin(async move {
            // One account for every spelling (`crate::username`).
            let folded = fold(user);
            let user: &str = &folded;
            let now = read();
            if let Some(d) = self.local.limiter().manual_denial(ip, now) {
                return d;
            }
            if let Some(d) = self.cached_login(user, ip, now) {
                self.local.metrics().count_from(ip, &d);
                return d;
            }
            let reachable = self.reconcile_first(ip, now).await;
            let epoch = self.denials.epoch();
            if let Some(d) = self
                .on_redis_if(reachable, |r| async move {
                    r.check_login(user, ip, now.unix_us()).await
                })
                .await
            {
                self.remember_login(user, ip, &d, now, epoch).await;
                self.local.metrics().count_from(ip, &d);
                return d;
            }
            if self.fail_closed {
                return self.closed();
            }
            self.fallback();
            self.local.check_login_at(user, ip, now).await
        })
    }

    fn login_failed<'a>(&'a self, user: &'a str, ip: IpAddr) -> BoxFuture<'a, Penalty<SlotGuard>> {
        Box::pin(async move {
            // One account for every spelling (`crate::username`).
            let folded = fold(user);
            let user: &str = &folded;
            self.local.metrics().login_failure();
            let now = read();
            if let Some(p) = self
                .on_redis(|r| async move { r.login_failed(user, ip, now.unix_us()).await })
                .await
            {
                if p.locked {
                    self.remember_locks(user, ip, now).await;
                }
                return self.host_penalty(p);
            }
            // Fallback (or fail-closed: the attempt was refused before the
            // password was checked, so this is not reached for it).
            self.fallback();
            let _named = self.pending.naming(self.local_users.hash(user), user);
            self.local.login_failed_at(user, ip, now).await
        })
    }

    fn begin_login<'a>(
        &'a self,
        user: &'a str,
        ip: IpAddr,
    ) -> BoxFuture<'a, Result<Attempt<AttemptId, SlotGuard>, Decision>> {
        Box::pin(async move {
            // One account for every spelling (`crate::username`).
            let folded = fold(user);
            let user: &str = &folded;
            let now = read();
            if let Some(d) = self.local.limiter().manual_denial(ip, now) {
                return Err(d);
            }
            if let Some(d) = self.cached_login(user, ip, now) {
                self.local.metrics().count_from(ip, &d);
                return Err(d);
            }
            let reachable = self.reconcile_first(ip, now).await;
            let epoch = self.denials.epoch();
            if let Some(r) = self
                .on_redis_if(reachable, |r| async move {
                    r.begin_login(user, ip, now.unix_us()).await
                })
                .await
            {
                return match r {
                    Ok(a) => Ok(Attempt {
                        id: a.id,
                        penalty: Penalty {
                            locked: false,
                            ..self.host_penalty(a.penalty)
                        },
                    }),
                    Err(d) => {
                        self.remember_login(user, ip, &d, now, epoch).await;
                        self.local.metrics().count_from(ip, &d);
                        Err(d)
                    }
                };
            }
            if self.fail_closed {
                return Err(self.closed());
            }
            self.fallback();
            let _named = self.pending.naming(self.local_users.hash(user), user);
            self.local.begin_login_at(user, ip, now).await
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
            // One account for every spelling (`crate::username`).
            let folded = fold(user);
            let user: &str = &folded;
            let now = read();
            if id.is_local() {
                // Reserved by the local fallback: settled there.
                let _named = self.pending.naming(self.local_users.hash(user), user);
                return self.local.finish_login_at(user, ip, id, ok, now).await;
            }
            if ok {
                self.local.metrics().login_success();
            } else {
                self.local.metrics().login_failure();
            }
            let settled = self
                .on_redis(|r| async move {
                    if ok {
                        r.login_attempt_succeeded(user, ip, id, now.unix_us()).await
                    } else {
                        r.login_attempt_failed(user, ip, id, now.unix_us()).await
                    }
                })
                .await;
            // Redis gone since the reservation: a wrong attempt stays counted
            // there as a failure (it was reserved as one); a right one is
            // logged and its reservation ages out of the window.
            if settled.is_none() {
                tracing::warn!(%ip, ok, "could not settle a login attempt in redis");
            }
            let locked = !ok && settled.unwrap_or(false);
            if locked {
                self.remember_locks(user, ip, now).await;
            }
            if ok {
                let _ = self.local.limiter().login_succeeded_at(user, ip, now);
            }
            locked
        })
    }

    fn login_succeeded<'a>(&'a self, user: &'a str, ip: IpAddr) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            // One account for every spelling (`crate::username`).
            let folded = fold(user);
            let user: &str = &folded;
            self.local.metrics().login_success();
            let now = read();
            if self
                .on_redis(|r| async move { r.login_succeeded(user, ip, now.unix_us()).await })
                .await
                .is_none()
            {
                self.fallback();
            }
            // Clear any state the fallback gathered too.
            let _ = self.local.limiter().login_succeeded_at(user, ip, now);
            let fleet_user = self.redis.read().as_ref().map(|r| r.user_hash(user));
            if let Some(u) = fleet_user {
                self.denials.forget(&Key::login_user(u, self.addr(ip)));
            }
        })
    }

    fn lift(&self, ip: IpAddr) -> BoxFuture<'_, usize> {
        Box::pin(async move {
            let now = read();
            let remote = self
                .on_redis(|r| async move { r.lift(ip, now.unix_us()).await })
                .await
                .unwrap_or(0);
            // A manual ban of exactly this address, fleet-wide (the local
            // lift below takes this server's copy).
            if let Ok(host) = Cidr::new(ip, if ip.is_ipv4() { 32 } else { 128 }) {
                let _ = self
                    .on_redis(|r| async move { r.manual_delete(&host).await })
                    .await;
            }
            self.denials.forget_addr(self.addr(ip));
            self.tell_fleet_lifted().await;
            remote + self.local.lift_at(ip, now).await
        })
    }

    fn ban_range(&self, ban: ManualBan) -> BoxFuture<'_, Result<Option<ManualBan>, ManualError>> {
        Box::pin(async move {
            // Here at once (even with Redis away), then for the fleet.
            let old = self.local.ban_range(ban.clone()).await?;
            let shared = self
                .on_redis(|r| async move { r.manual_put(&ban).await })
                .await;
            match shared {
                Some(()) => Ok(old),
                None => Err(ManualError::NotShared("redis unavailable".into())),
            }
        })
    }

    fn unban_range(&self, range: Cidr) -> BoxFuture<'_, Option<ManualBan>> {
        Box::pin(async move {
            let local = self.local.unban_range(&range).await;
            let remote = self
                .on_redis(|r| async move { r.manual_delete(&range).await })
                .await
                .unwrap_or(false);
            self.denials.clear();
            self.tell_fleet_lifted().await;
            match local {
                Some(b) => Some(b),
                // Known to the fleet but not yet here: lifted all the same.
                None if remote => Some(ManualBan {
                    range,
                    until_ms: None,
                    reason: String::new(),
                    created_ms: 0,
                }),
                None => None,
            }
        })
    }

    fn manual_bans(&self) -> BoxFuture<'_, Vec<ManualBan>> {
        Box::pin(async move { self.local.manual_bans() })
    }

    /// The delay from the shared rules, in a slot of this server's table
    /// (a fleet's failures hold their slots in Redis: a hidden lock's
    /// slot is per server).
    fn hidden_lock_penalty(&self, ip: IpAddr) -> BoxFuture<'_, Option<Penalty<SlotGuard>>> {
        Box::pin(async move { Some(self.local.hidden_lock_penalty(ip)) })
    }

    fn bans(&self) -> BoxFuture<'_, Vec<Hold>> {
        Box::pin(async move {
            let now = read();
            match self
                .on_redis(|r| async move { r.bans(now.unix_us()).await })
                .await
            {
                Some(rows) => {
                    let mut out = rows;
                    // A cluster master down: its addresses' holds are the
                    // ones this server's fallback imposed.
                    if let Some(r) = self.cluster.get().filter(|r| r.any_node_down()) {
                        let local = self.local.limiter().bans_at(now);
                        out.extend(local.into_iter().filter(|b| r.on_down_node(b.addr.ip())));
                    }
                    out
                }
                None => self.local.limiter().bans_at(now),
            }
        })
    }

    fn status(&self) -> BoxFuture<'_, Status> {
        Box::pin(async move {
            let down = self.degraded();
            self.local.metrics().set_fallback_active(down);
            self.record_gauges();
            let nodes = self
                .cluster
                .get()
                .map(RedisLimiter::nodes)
                .unwrap_or_default();
            Status {
                backend: "redis",
                fleet: Some(FleetStatus {
                    fallback_active: down,
                    fail_closed: self.fail_closed,
                    namespace: NAMESPACE,
                    nodes,
                    journal: self.pending.journal_location(),
                    queued: self.pending.len(),
                }),
                store: self.store_location.clone(),
                ..crate::engine::local_status(&self.local)
            }
        })
    }
}

// Reconciliation after an outage and the cache of standing denials
// (crate::fleet::reconcile, crate::fleet::denials).

/// Help text for the reconciliation and cache counters, registered at 0 so
/// `/metrics` shows them before the first event.
fn describe_metrics() {
    metrics::describe_counter!(
        reconcile::RECONCILED,
        "Bans, blocks and locks the local fallback imposed during an outage, written to Redis when it came back."
    );
    metrics::describe_counter!(
        denials::HITS,
        "Decisions answered from the local cache of standing denials (no Redis round trip)."
    );
    metrics::describe_gauge!(
        reconcile::QUEUED,
        "Keys the local fallback banned, blocked or locked that Redis does not know yet."
    );
    metrics::describe_gauge!(
        denials::ENTRIES,
        "Keys in the local cache of standing denials."
    );
    metrics::describe_gauge!(
        journal::ENTRIES,
        "Keys in the reconciliation journal: what the local fallback imposed that Redis does not know yet, kept on disk."
    );
    metrics::describe_counter!(
        journal::ERRORS,
        "Writes to the reconciliation journal that failed (the decision was served; that key is not safe from a crash)."
    );
    metrics::counter!(reconcile::RECONCILED).increment(0);
    metrics::counter!(denials::HITS).increment(0);
    metrics::counter!(journal::ERRORS).increment(0);
}

/// Drain the reconciliation queue: at once when Redis comes back
/// ([`FleetEngine::recovered`]) and every second while it is not empty.
fn start_reconcile(engine: &Arc<FleetEngine>) {
    let (weak, notify) = (Arc::downgrade(engine), engine.drain_now.clone());
    tokio::spawn(async move {
        loop {
            let _ = tokio::time::timeout(StdDuration::from_secs(1), notify.notified()).await;
            let Some(engine) = weak.upgrade() else { return };
            engine.reconcile_all().await;
        }
    });
}

/// Read the fleet's lift counter every [`denials::POLL`]: the cache takes
/// new denials only while this succeeds, and is emptied whenever the
/// counter moved, including across an outage (the counter read when Redis
/// is back is compared with the last one read before).
fn start_denial_poll(engine: &Arc<FleetEngine>) {
    if !engine.denials.enabled() {
        return;
    }
    let weak = Arc::downgrade(engine);
    tokio::spawn(async move {
        let mut seen: Option<u64> = None;
        loop {
            {
                let Some(engine) = weak.upgrade() else { return };
                let read = match engine.redis() {
                    Some(r) => r.denials_version().await.ok(),
                    None => None,
                };
                match read {
                    Some(v) => {
                        if seen.is_some_and(|s| s != v) {
                            engine.denials.clear();
                            tracing::debug!(version = v, "fleet lift seen: denial cache emptied");
                        }
                        seen = Some(v);
                        engine.denials.set_live(true);
                    }
                    None => engine.denials.set_live(false),
                }
            }
            tokio::time::sleep(denials::POLL).await;
        }
    });
}

impl FleetEngine {
    /// The aggregated address of `ip` (the fleet's and the local
    /// limiter's: they share the rules).
    fn addr(&self, ip: IpAddr) -> Addr {
        Addr::from_ip(ip, self.v6_prefix)
    }

    /// What the fallback imposed that Redis does not know yet (keys queued).
    pub fn pending_reconciliation(&self) -> usize {
        self.pending.len()
    }

    /// Keys in the cache of standing denials.
    pub fn cached_denials(&self) -> usize {
        self.denials.len()
    }

    /// Publish the queue and cache sizes (a `/metrics` handler calls
    /// [`Engine::status`], which calls this).
    fn record_gauges(&self) {
        metrics::gauge!(reconcile::QUEUED).set(self.pending.len() as f64);
        if self.pending.journaled() {
            metrics::gauge!(journal::ENTRIES).set(self.pending.len() as f64);
        }
        metrics::gauge!(denials::ENTRIES).set(self.denials.len() as f64);
    }

    /// Impose again, in the local fallback, the holds the journal kept
    /// from before a restart, and queue them for Redis; rows whose hold
    /// ended (or that cannot be keyed) leave the journal.
    async fn restore(&self, rows: Vec<crate::persist::JournalRow>) {
        if rows.is_empty() {
            return;
        }
        let now = read();
        let (mut keep, mut gone) = (Vec::new(), Vec::new());
        for row in rows {
            match journal::entry_of(&row, &self.local_users) {
                Some(e) if journal::record_of(&e).is_pinned_at(now.unix_ms()) => keep.push(e),
                _ => gone.push(crate::persist::JournalChange::Delete(row.key)),
            }
        }
        let mut imposed = 0usize;
        for e in &keep {
            let record = journal::record_of(e);
            match self.local.limiter().import(now.wall(), &[record]) {
                Ok(_) => imposed = imposed.saturating_add(1),
                Err(err) => tracing::error!(
                    kind = e.key.kind().as_str(),
                    ip = %e.key.addr().ip(),
                    error = %err,
                    "a journaled hold was refused by the local limiter (still queued for redis)"
                ),
            }
        }
        let (queued, ended) = (keep.len(), gone.len());
        self.pending.restore(keep);
        if let Some(w) = self.pending.journal(gone) {
            let _ = w.await;
        }
        self.record_gauges();
        tracing::info!(
            journal = self.pending.journal_location().unwrap_or_default(),
            imposed,
            queued,
            ended,
            "journal loaded: the fallback's holds from before the restart are imposed again and queued for redis"
        );
    }

    /// Write everything queued to Redis (entries that fail stay queued).
    async fn reconcile_all(&self) {
        if self.pending.is_empty() {
            return;
        }
        let Some(r) = self.redis() else { return };
        let entries = self.pending.entries(None);
        let total = entries.len();
        match self.pending.drain(&r, entries, read().unix_us()).await {
            Ok(n) => tracing::info!(
                reconciled = n,
                queued = self.pending.len(),
                "redis reconciled: bans, blocks and locks the fallback imposed are now the fleet's"
            ),
            Err(e) => tracing::debug!(error = %e, total, "reconciliation deferred"),
        }
    }

    /// Before the first Redis decision for `ip` after an outage: write what
    /// the fallback imposed on it first. False if that found Redis away
    /// (an outage: the decision goes straight to the fallback rather than
    /// waiting for a second timeout).
    async fn reconcile_first(&self, ip: IpAddr, now: crate::clock::Now) -> bool {
        if self.pending.is_empty() {
            return true;
        }
        let entries = self.pending.entries(Some(self.addr(ip)));
        if entries.is_empty() {
            return true;
        }
        let Some(r) = self.redis() else { return true };
        match self.pending.drain(&r, entries, now.unix_us()).await {
            Ok(n) => {
                tracing::info!(%ip, reconciled = n, "redis reconciled before deciding");
                true
            }
            Err(e) => {
                self.outage(&e);
                false
            }
        }
    }

    /// [`on_redis`](Self::on_redis) when `reachable`, else `None` (Redis
    /// was just found away).
    async fn on_redis_if<T, F>(
        &self,
        reachable: bool,
        op: impl FnOnce(RedisLimiter) -> F,
    ) -> Option<T>
    where
        F: std::future::Future<Output = Result<T, FleetError>>,
    {
        if reachable {
            self.on_redis(op).await
        } else {
            None
        }
    }

    /// A cached lock of the (user, ip) pair or of the ip, as Redis's
    /// `login` op would answer it (the pair first, retry the longer).
    fn cached_login(&self, user: &str, ip: IpAddr, now: crate::clock::Now) -> Option<Decision> {
        if !self.denials.enabled() {
            return None;
        }
        let fleet_user = self.redis.read().as_ref().map(|r| r.user_hash(user))?;
        let addr = self.addr(ip);
        let now_us = now.unix_us();
        let pair = self.denials.get(&Key::login_user(fleet_user, addr), now_us);
        let ip_lock = self.denials.get(&Key::login_ip(addr), now_us);
        match (pair, ip_lock) {
            (
                Some(Decision::Deny { retry_after: a, .. }),
                Some(Decision::Deny { retry_after: b, .. }),
            ) => Some(Decision::Deny {
                reason: Reason::PairLocked,
                retry_after: a.max(b),
            }),
            (Some(d), _) | (None, Some(d)) => Some(d),
            (None, None) => None,
        }
    }

    /// Redis refused a login: if a lock is behind it, remember the lock
    /// until it ends (one `inspect` call, on the first refusal only).
    async fn remember_login(
        &self,
        user: &str,
        ip: IpAddr,
        d: &Decision,
        now: crate::clock::Now,
        epoch: u64,
    ) {
        let Decision::Deny { reason, .. } = *d else {
            return;
        };
        if !self.denials.enabled() || !matches!(reason, Reason::PairLocked | Reason::IpLocked) {
            return;
        }
        let Some(r) = self.redis() else { return };
        let addr = self.addr(ip);
        let (key, redis_key) = if reason == Reason::PairLocked {
            (
                Key::login_user(r.user_hash(user), addr),
                r.login_user_key(user, ip),
            )
        } else {
            (Key::login_ip(addr), r.login_ip_key(ip))
        };
        if let Ok(Some(left)) = r.lock_left(redis_key, now.unix_us()).await {
            let lock = Decision::Deny {
                reason,
                retry_after: left,
            };
            self.denials.insert(key, &lock, now.unix_us(), epoch);
        }
    }

    /// This server's failure locked the (user, ip) pair or the address in
    /// Redis: cache the locks now (one `inspect` each), so they hold here
    /// through an outage even if the client does not come back first.
    async fn remember_locks(&self, user: &str, ip: IpAddr, now: crate::clock::Now) {
        if !self.denials.enabled() {
            return;
        }
        let Some(r) = self.redis() else { return };
        let epoch = self.denials.epoch();
        let addr = self.addr(ip);
        let locks = [
            (
                Key::login_user(r.user_hash(user), addr),
                r.login_user_key(user, ip),
                Reason::PairLocked,
            ),
            (Key::login_ip(addr), r.login_ip_key(ip), Reason::IpLocked),
        ];
        for (key, redis_key, reason) in locks {
            if let Ok(Some(left)) = r.lock_left(redis_key, now.unix_us()).await {
                let lock = Decision::Deny {
                    reason,
                    retry_after: left,
                };
                self.denials.insert(key, &lock, now.unix_us(), epoch);
            }
        }
    }

    /// Something was lifted here: every server's cache empties within
    /// [`denials::POLL`].
    async fn tell_fleet_lifted(&self) {
        if self
            .on_redis(|r| async move { r.denials_lifted().await })
            .await
            .is_none()
        {
            tracing::warn!("could not tell the fleet about a lift: other servers may answer cached denials until they end");
        }
    }
}
