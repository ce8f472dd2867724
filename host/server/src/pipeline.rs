//! The one request pipeline. Every request, in every mode and on every
//! path (the service, `[[policies]]` routes, login routes, portcullis's own
//! routes under the admin prefix, `/metrics`, the forward-auth endpoint's
//! original request, the login-result API), goes through these steps, in
//! this order, written once (`docs/pipeline.md`):
//!
//! 1. **client address**: the peer, or the client a trusted proxy names;
//! 2. **canonical target** ([`crate::target`]): what the request is for;
//!    it picks the surface (own routes, forward-auth, login route, service);
//! 3. **global decisions**: manual bans and ranges, then the deny- and
//!    allowlist, before any policy and never shadowed;
//! 4. **policy selection** on the canonical target;
//! 5. **the policy's rules** (shadow mode applies here only);
//! 6. **login settlement** for a login route;
//! 7. **answer or forward**.
//!
//! The listener hands every request to [`Pipeline::serve`] (an embedding
//! behind an axum router: [`Pipeline::handle`]); there is no
//! other route in.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use portcullis::client_ip;
use portcullis::clock::Now;
use portcullis::Engine;
use portcullis::Guard;
use portcullis::{set_ratelimit_fields, ClientIp, REASON_HEADER};
use portcullis::{Decision, Listed, Reason};
use tower::ServiceExt;

use crate::config::proxy::LoginRoute;
use crate::login::Replays;
use crate::proxy::text;
use crate::running::{Live, Running};
use crate::target::Target;

/// The tables portcullis keeps for its own routes and the login-result
/// API, apart from the service's.
pub struct OwnTables {
    /// `/admin` (and the dashboard): its own quota, so an operator whose
    /// address the service's quota blocked can still lift the block.
    pub admin: Arc<dyn Engine>,
    /// `/metrics`: monitoring keeps working while the service's address is
    /// blocked or a fleet store is down.
    pub metrics: Arc<dyn Engine>,
    /// Wrong report tokens, per caller, under the login rules.
    pub guesses: Arc<dyn Engine>,
}

/// Requests per minute per address on `/admin` and `/metrics` (each its
/// own table).
pub const ADMIN_QUOTA: u32 = 60;

pub use crate::config::ADMIN_SHARDS;

/// The rules of `/admin` and `/metrics`: the service's, with their own
/// quota of [`ADMIN_QUOTA`] a minute.
pub fn own_rules(rules: &portcullis::Config) -> portcullis::Config {
    let mut r = rules.clone();
    r.requests.max_requests = ADMIN_QUOTA;
    r.requests.window = portcullis::Duration::from_secs(60);
    r
}

impl OwnTables {
    /// The tables for `cfg`, each of `server.admin_max_entries` keys,
    /// counted in process only (`/metrics` shows the service's decisions,
    /// and its sums do not count scrapes).
    pub fn new(cfg: &crate::config::ServerConfig) -> Result<OwnTables, portcullis::LimiterError> {
        let table = |rules: portcullis::Config| {
            let opts = portcullis::LimiterOptions {
                max_entries: cfg.admin_max_entries,
                shards: ADMIN_SHARDS,
                seed: None,
            };
            let l = portcullis::Limiter::new(rules, opts)?;
            let g = Guard::new(Arc::new(l), None)
                .with_metrics(portcullis::metrics::Metrics::unexported());
            Ok::<_, portcullis::LimiterError>(Arc::new(g) as Arc<dyn Engine>)
        };
        Ok(OwnTables {
            admin: table(own_rules(&cfg.rules))?,
            metrics: table(own_rules(&cfg.rules))?,
            guesses: table(cfg.rules.clone())?,
        })
    }
}

/// The pipeline and what it dispatches to.
pub struct Pipeline {
    /// The running configuration.
    pub live: Arc<Live>,
    /// The service's backend (the default policy, `requests`).
    pub engine: Arc<dyn Engine>,
    /// The local guard, whose manual decisions are the server's (a fleet
    /// backend keeps them in sync).
    pub local: Guard,
    /// Portcullis's own tables.
    pub own: OwnTables,
    /// The admin API, `/metrics` and the dashboard.
    pub own_routes: Router,
    /// Demo mode's service.
    pub demo_routes: Router,
    /// Proxy login routes' last failure answers.
    pub replays: Arc<Replays>,
    /// A forward-auth caller outside `trusted_proxies` was warned about.
    warned: AtomicBool,
}

/// What the canonical target is for.
enum Surface<'a> {
    /// Portcullis's own routes; `metrics`: `/metrics`, else `/admin`.
    Own { metrics: bool },
    /// The forward-auth decision endpoint.
    Check,
    /// The login-result API.
    LoginResult,
    /// A proxy login route.
    Login(&'a LoginRoute),
    /// The service (demo routes or the upstream).
    Service,
}

/// The policy a request is judged under.
struct Policy<'a> {
    name: &'a str,
    /// `None`: exempt from request quotas (the login-result API).
    engine: Option<&'a Arc<dyn Engine>>,
    shadow: bool,
}

/// The outcome of steps 3 to 5.
struct Judged<'a> {
    policy: Policy<'a>,
    decision: Decision,
    refuse: bool,
}

/// The surface of `t` under `run` (step 2's second half).
fn surface<'a>(run: &'a Running, t: &Target) -> Surface<'a> {
    if run.base.is_empty() {
        if t.under("/admin") {
            return Surface::Own { metrics: false };
        }
        if t.key() == "/metrics" {
            return Surface::Own { metrics: true };
        }
    } else if t.under(&run.base) {
        let rest = t.key().get(run.base.len()..).unwrap_or_default();
        return Surface::Own {
            metrics: rest == "/metrics",
        };
    }
    if run.check.as_deref() == Some(t.key()) {
        return Surface::Check;
    }
    if run.report.is_some() && t.key() == crate::forward_auth::LOGIN_RESULT_PATH {
        return Surface::LoginResult;
    }
    if run.proxy.is_some() {
        if let Some(r) = run
            .cfg
            .login_routes
            .iter()
            .find(|r| r.matches(&t.method, t.key()))
        {
            return Surface::Login(r);
        }
    }
    Surface::Service
}

fn peer_of(req: &Request) -> Option<IpAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// `quota / window` of `a` is below `b`'s: `a` is stricter.
fn stricter(a: &dyn Engine, b: &dyn Engine) -> bool {
    let ((qa, wa), (qb, wb)) = (a.quota(), b.quota());
    u128::from(qa) * u128::from(wb.as_ticks()) < u128::from(qb) * u128::from(wa.as_ticks())
}

impl Judged<'_> {
    /// The `RateLimit-Policy` and `RateLimit` fields on `resp`.
    fn fields(&self, resp: &mut Response) {
        if let Some(e) = self.policy.engine {
            set_ratelimit_fields(
                resp.headers_mut(),
                self.policy.name,
                e.as_ref(),
                &self.decision,
            );
        }
    }

    /// The refusal: problem details (or a short page for a browser),
    /// `X-Portcullis-Reason` and the RateLimit fields.
    fn refusal(&self, headers: &HeaderMap) -> Response {
        let mut r =
            portcullis::problem::deny_response(&self.decision, &[self.policy.name], headers)
                .map(Body::from);
        if let Some(reason) = self.decision.reason() {
            r.headers_mut()
                .insert(REASON_HEADER, HeaderValue::from_static(reason.as_str()));
        }
        self.fields(&mut r);
        r
    }
}

impl Pipeline {
    /// A pipeline over `live` (see the fields).
    pub fn new(
        live: Arc<Live>,
        engine: Arc<dyn Engine>,
        local: Guard,
        own: OwnTables,
        own_routes: Router,
        demo_routes: Router,
    ) -> Pipeline {
        Pipeline {
            live,
            engine,
            local,
            own,
            own_routes,
            demo_routes,
            replays: Arc::new(Replays::default()),
            warned: AtomicBool::new(false),
        }
    }

    /// A request served behind an axum router (the peer address read
    /// from its `ConnectInfo`): the same as [`Self::serve`].
    pub async fn handle(self: Arc<Self>, req: Request) -> Response {
        let Some(peer) = peer_of(&req) else {
            tracing::error!("no peer address: serve with connect info");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        };
        self.serve(peer, req).await
    }

    /// Every request enters here: `req` from the TCP peer `peer`.
    pub async fn serve(&self, peer: IpAddr, req: Request) -> Response {
        let run = self.live.load();
        // The time, read once for every decision of this request (the
        // coarse clock unless a window is too short for it).
        let now = run.now();
        // 1. Client address.
        let ip = client_ip(peer, req.headers(), &run.proxies);
        // 2. Canonical target, and what it is for.
        let target = Target::new(req.method(), req.uri().path().as_bytes());
        let surface = surface(&run, &target);
        if let Surface::Check = surface {
            return self.check(&run, peer, ip, req.headers(), now).await;
        }
        // 3 to 5. An operator proving the admin token on the admin routes
        // passes a manual ban (theirs to lift), never the denylist.
        let operator = matches!(surface, Surface::Own { metrics: false })
            && run
                .admin
                .as_ref()
                .is_some_and(|a| a.authenticate(req.headers()).is_some());
        let policy = self.select(&run, &target, &surface);
        let judged = self.judge(&run, ip, policy, operator, now).await;
        if judged.refuse {
            return judged.refusal(req.headers());
        }
        // 6 and 7. Portcullis's own handlers and the demo's routes read
        // the client, the configuration this request was judged under and
        // the canonical method; the proxied paths and the demo's `GET /`
        // are answered here, without a router.
        let routed = |mut req: Request| {
            *req.method_mut() = target.method.clone();
            req.extensions_mut().insert(ClientIp(ip));
            req.extensions_mut().insert(run.clone());
            req
        };
        let mut resp = match surface {
            Surface::Own { .. } => Box::pin(self.own(&run, &target, routed(req))).await,
            Surface::LoginResult => Box::pin(self.login_result(&run, ip, req)).await,
            Surface::Login(route) => {
                let trusted = run.proxies.contains(peer);
                Box::pin(self.login_route(&run, route, ip, trusted, req)).await
            }
            Surface::Service | Surface::Check => match &run.proxy {
                Some(p) => p.forward(ip, run.proxies.contains(peer), req).await,
                None if is_demo_root(&req) => demo_root(),
                None => Box::pin(dispatch(&self.demo_routes, routed(req))).await,
            },
        };
        judged.fields(&mut resp);
        resp
    }

    /// Step 4: the policy for `t` on `surface`.
    fn select<'a>(&'a self, run: &'a Running, t: &Target, surface: &Surface<'_>) -> Policy<'a> {
        match surface {
            Surface::Own { metrics: true } => Policy {
                name: "metrics",
                engine: Some(&self.own.metrics),
                shadow: false,
            },
            Surface::Own { metrics: false } => Policy {
                name: "admin",
                engine: Some(&self.own.admin),
                shadow: false,
            },
            Surface::LoginResult | Surface::Check => Policy {
                name: "login-result",
                engine: None,
                shadow: false,
            },
            Surface::Login(_) | Surface::Service => self.policy_for(run, t),
        }
    }

    /// The `[[policies]]` entry covering `t` (the longest prefix, then
    /// one naming the method), else the service's default `requests`.
    fn policy_for<'a>(&'a self, run: &'a Running, t: &Target) -> Policy<'a> {
        run.policies
            .iter()
            .filter(|p| p.cfg.covers(&t.method, t.key()))
            .max_by_key(|p| p.cfg.rank())
            .map_or_else(
                || self.default_policy(run),
                |p| Policy {
                    name: &p.cfg.name,
                    engine: Some(&p.engine),
                    shadow: p.cfg.shadow,
                },
            )
    }

    fn default_policy<'a>(&'a self, run: &Running) -> Policy<'a> {
        Policy {
            name: "requests",
            engine: Some(&self.engine),
            shadow: run.cfg.shadow,
        }
    }

    /// The strictest policy a request could fall under (its target is not
    /// known): the lowest quota per time among the default and every
    /// `[[policies]]` entry.
    fn strictest<'a>(&'a self, run: &'a Running) -> Policy<'a> {
        let mut best = self.default_policy(run);
        for p in &run.policies {
            if best
                .engine
                .is_none_or(|b| stricter(p.engine.as_ref(), b.as_ref()))
            {
                best = Policy {
                    name: &p.cfg.name,
                    engine: Some(&p.engine),
                    shadow: p.cfg.shadow,
                };
            }
        }
        best
    }

    /// Step 3: a manual decision (not for an `operator`: a request to the
    /// admin routes with the valid admin token), or the denylist. (The allowlist is the
    /// rules' own: every table has the service's lists, swapped in by a
    /// reload, and lets a listed address through uncounted.)
    fn global(&self, run: &Running, ip: IpAddr, operator: bool, now: Now) -> Option<Decision> {
        if !operator {
            if let Some(d) = self.local.limiter().manual_denial(ip, now) {
                return Some(d);
            }
        }
        (run.cfg.rules.lists.lookup(ip) == Listed::Deny).then_some(Decision::Deny {
            reason: Reason::Denylisted,
            retry_after: portcullis::Duration::MAX,
        })
    }

    /// Steps 3 and 5 for `ip` under `policy` (`operator`: see [`Self::global`]).
    async fn judge<'a>(
        &self,
        run: &Running,
        ip: IpAddr,
        policy: Policy<'a>,
        operator: bool,
        now: Now,
    ) -> Judged<'a> {
        if let Some(decision) = self.global(run, ip, operator, now) {
            // Counted with the service's decisions, whatever the surface.
            self.local.metrics().count_from(ip, &decision);
            tracing::debug!(%ip, decision = ?decision, "denied before any policy");
            return Judged {
                policy,
                decision,
                refuse: true,
            };
        }
        let Some(engine) = policy.engine else {
            return Judged {
                policy,
                decision: Decision::Allow {
                    remaining: 0,
                    reset_after: portcullis::Duration::from_ticks(0),
                },
                refuse: false,
            };
        };
        let decision = engine.check_request_at(ip, now).await;
        let mut refuse = false;
        if let Some(reason) = decision.reason() {
            if policy.shadow {
                metrics::counter!(portcullis::metrics::SHADOW_DENIALS, "reason" => reason.as_str())
                    .increment(1);
                tracing::info!(%ip, policy = %policy.name, reason = reason.as_str(), "shadow: would deny; let through");
            } else {
                tracing::debug!(%ip, decision = ?decision, "denied");
                refuse = true;
            }
        }
        Judged {
            policy,
            decision,
            refuse,
        }
    }

    /// The forward-auth endpoint: steps 1 to 5 for the original request.
    async fn check(
        &self,
        run: &Running,
        peer: IpAddr,
        ip: IpAddr,
        headers: &HeaderMap,
        now: Now,
    ) -> Response {
        let trusted = run.proxies.contains(peer);
        let original = if trusted {
            crate::forward_auth::original(headers, &run.cfg.forward_auth.proxy)
        } else {
            if !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    %peer,
                    "forward-auth call from outside server.trusted_proxies: the caller is judged as itself, its forwarding headers ignored (add the proxy's address to trusted_proxies)"
                );
            }
            None
        };
        let policy = match &original {
            Some(t) => self.policy_for(run, t),
            None if trusted => self.strictest(run),
            None => self.default_policy(run),
        };
        let mut j = self.judge(run, ip, policy, false, now).await;
        if !j.refuse {
            if let Some(d) = self.locked_login(run, original.as_ref(), ip).await {
                j = Judged {
                    policy: Policy {
                        name: "login",
                        engine: Some(&self.engine),
                        shadow: false,
                    },
                    decision: d,
                    refuse: true,
                };
            }
        }
        if j.refuse {
            let (method, path) = original.as_ref().map(|t| (&t.method, &t.path)).unzip();
            tracing::info!(%ip, policy = %j.policy.name, method = ?method, path = ?path, decision = ?j.decision, "forward-auth denied");
        }
        let engine = j.policy.engine.unwrap_or(&self.engine);
        crate::forward_auth::answer(j.policy.name, engine.as_ref(), &j.decision, j.refuse)
    }

    /// Forward-auth's login settlement: the application settles logins
    /// through the login-result API, but an original request to a
    /// `[[login_routes]]` entry from an address the login rules lock is
    /// refused here, before the application checks a password (unless
    /// `reveal_lock = false`: then the application answers it as a miss).
    async fn locked_login(
        &self,
        run: &Running,
        original: Option<&Target>,
        ip: IpAddr,
    ) -> Option<Decision> {
        let t = original?;
        if !run.cfg.reveal_lock
            || !run
                .cfg
                .login_routes
                .iter()
                .any(|r| r.matches(&t.method, t.key()))
        {
            return None;
        }
        // No username reaches the endpoint: the address's own lock only.
        let d = self.engine.check_login("\u{0}forward-auth", ip).await;
        (!d.is_allowed()).then_some(d)
    }

    /// Portcullis's own routes: the request's path below the admin prefix.
    async fn own(&self, run: &Running, t: &Target, mut req: Request) -> Response {
        let raw = req.uri().path();
        let below = if run.base.is_empty() {
            raw.to_string()
        } else if let Some(rest) = raw.strip_prefix(run.base_written.as_str()) {
            rest.to_string()
        } else {
            t.path.get(run.base.len()..).unwrap_or_default().to_string()
        };
        let below = if below.is_empty() {
            "/".to_string()
        } else {
            below
        };
        let pq = match req.uri().query() {
            Some(q) => format!("{below}?{q}"),
            None => below,
        };
        match pq.parse::<Uri>() {
            Ok(u) => *req.uri_mut() = u,
            Err(_) => return text(StatusCode::NOT_FOUND, "not found\n"),
        }
        dispatch(&self.own_routes, req).await
    }

    /// The login-result API.
    async fn login_result(&self, run: &Running, caller: IpAddr, req: Request) -> Response {
        let Some(auth) = run.report.as_deref() else {
            return text(StatusCode::NOT_FOUND, "not found\n");
        };
        let (parts, body) = req.into_parts();
        let Ok(body) = axum::body::to_bytes(body, 64 * 1024).await else {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "portcullis: body too large\n",
            );
        };
        crate::forward_auth::login_result(
            auth,
            self.own.guesses.as_ref(),
            self.engine.as_ref(),
            caller,
            &parts.headers,
            &body,
        )
        .await
    }

    /// Step 6 for a proxy login route: the body read (up to `max_body`)
    /// for the username, the attempt reserved, forwarded, settled from the
    /// upstream's status.
    async fn login_route(
        &self,
        run: &Running,
        route: &LoginRoute,
        ip: IpAddr,
        trusted: bool,
        req: Request,
    ) -> Response {
        let Some(proxy) = run.proxy.clone() else {
            return text(StatusCode::NOT_FOUND, "not found\n");
        };
        let too_large = || {
            text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "portcullis: login body too large\n",
            )
        };
        let (parts, body) = req.into_parts();
        let declared = parts
            .headers
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > route.max_body as u64) {
            return too_large();
        }
        let Ok(bytes) = axum::body::to_bytes(body, route.max_body).await else {
            return too_large();
        };
        // Every username the application could read is reserved; a body
        // without one is counted against the address only: a name of its
        // own per address, which no real username can be.
        let mut users =
            crate::usernames::usernames(&parts.headers, parts.uri.query(), &bytes, &route.username);
        if users.is_empty() {
            users.push(format!("\u{0}no-username:{ip}"));
        }
        let headers = parts.headers.clone();
        let req = Request::from_parts(parts, Body::from(bytes));
        let slot = format!("{} {}", route.method, route.key);
        let hidden = (!run.cfg.reveal_lock).then(|| {
            crate::login::hidden_replay(
                self.engine.clone(),
                self.replays.clone(),
                slot.clone(),
                ip,
                crate::lock_reveal::hidden_lock_delay(&run.cfg.rules),
            )
        });
        let (replays, route) = (self.replays.clone(), route.clone());
        crate::login::guarded(self.engine.clone(), users, ip, &headers, hidden, async move {
            let resp = proxy.forward(ip, trusted, req).await;
            match route.classify(resp.status()) {
                Some(true) => (true, resp),
                Some(false) => (false, replays.keep(&slot, resp).await),
                None => {
                    tracing::warn!(status = resp.status().as_u16(), path = %route.path,
                        "login route: upstream status is neither success nor failure; counted as a failure");
                    (false, resp)
                }
            }
        })
        .await
    }
}

/// The demo's `GET /` exactly (the router's other spellings of it, and
/// `HEAD`, go to the router).
fn is_demo_root(req: &Request) -> bool {
    req.method() == axum::http::Method::GET && req.uri().path() == "/"
}

/// The demo's `/` answer (plain text `ok`), written once: the pipeline
/// gives it for `GET /` without a router, the demo router's `/` route
/// for the other spellings and `HEAD`.
pub(crate) fn demo_root() -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        "ok",
    )
        .into_response()
}

/// Hand `req` to `router` (its routes or its 404).
async fn dispatch(router: &Router, req: Request) -> Response {
    match router.clone().oneshot(req).await {
        Ok(r) => r,
        Err(e) => match e {},
    }
}
