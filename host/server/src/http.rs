//! The HTTP service: `GET /`, `POST /login`, `GET /metrics` and the admin
//! API, all behind the rate-limit layer.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use portcullis_core::Decision;
use serde::Deserialize;
use serde_json::json;

use super::config::ServerConfig;
use super::passwords::Users;
use portcullis::client_ip::TrustedProxies;
use portcullis::engine::{Engine, Status};
use portcullis::layer::ceil_secs;
use portcullis::layer::{ClientIp, RateLimitLayer, Shadow};
use portcullis::metrics::Metrics;
use portcullis::BoxFuture;
use portcullis::{Guard, Limiter, LimiterOptions};

/// Requests per minute per address on `/admin` and `/metrics` (each its own state).
pub const ADMIN_QUOTA: u32 = 60;

/// Shards of each `/admin` and `/metrics` table.
pub const ADMIN_SHARDS: usize = 4;

#[derive(Clone)]
struct App {
    engine: Arc<dyn Engine>,
    users: Users,
    admin: Option<Arc<super::ui::AdminAuth>>,
    started: Instant,
    kind: &'static str,
    max_entries: usize,
    admin_max_entries: usize,
    server_metrics: Arc<super::exporter::ServerMetrics>,
    /// The service policy's shadow switch.
    shadow: Shadow,
    /// The `[[policies]]` (their tables are listed and lifted too).
    policies: super::policies::Registry,
    /// `login.reveal_lock`, and the delay a hidden lock waits.
    reveal_lock: (bool, embassy_time::Duration),
}

/// The whole service.
pub fn router(
    cfg: &ServerConfig,
    engine: Arc<dyn Engine>,
    users: Users,
    kind: &'static str,
    metrics_source: Arc<portcullis::metrics::Metrics>,
    server_metrics: Arc<super::exporter::ServerMetrics>,
) -> Router {
    let shadow = Shadow::new(cfg.shadow);
    router_with(
        cfg,
        engine,
        users,
        kind,
        metrics_source,
        server_metrics,
        &Live {
            shadow,
            policies: super::policies::Registry::default(),
        },
    )
}

/// What a reload changes in a running router: the service policy's shadow
/// switch and the `[[policies]]` (their rules and switches).
#[derive(Clone, Default)]
pub struct Live {
    /// The service (`requests`) policy's shadow switch.
    pub shadow: Shadow,
    /// The `[[policies]]`, registered as the router builds them.
    pub policies: super::policies::Registry,
}

/// [`router`] with the switches a reload flips given.
pub fn router_with(
    cfg: &ServerConfig,
    engine: Arc<dyn Engine>,
    users: Users,
    kind: &'static str,
    metrics_source: Arc<portcullis::metrics::Metrics>,
    server_metrics: Arc<super::exporter::ServerMetrics>,
    live: &Live,
) -> Router {
    let (shadow, registry) = (live.shadow.clone(), &live.policies);
    let app = App {
        shadow: shadow.clone(),
        policies: registry.clone(),
        engine: engine.clone(),
        users,
        admin: cfg.admin_token.as_deref().and_then(|t| {
            super::ui::AdminAuth::new(t)
                .map_err(
                    |e| tracing::error!(error = %e, "no randomness for admin auth; admin API off"),
                )
                .ok()
                .map(Arc::new)
        }),
        started: Instant::now(),
        kind,
        max_entries: cfg.max_entries,
        admin_max_entries: cfg.admin_max_entries,
        server_metrics,
        reveal_lock: (
            cfg.reveal_lock,
            super::lock_reveal::hidden_lock_delay(&cfg.rules),
        ),
    };
    // The admin API has its own quota and state: an operator whose address
    // is blocked on the service can still lift the block, and token guessing
    // is limited (and escalates) on its own.
    let admin_opts = LimiterOptions {
        max_entries: cfg.admin_max_entries,
        shards: ADMIN_SHARDS,
        seed: None,
    };
    let mut layer = RateLimitLayer::with_engine("requests", engine)
        .trusted_proxies(
            TrustedProxies::new(cfg.trusted_proxies.clone()).header(cfg.client_ip_header.clone()),
        )
        .shadow_policy("requests", shadow);
    // Proxy mode serves portcullis's own routes under a prefix, so they
    // never shadow the application's.
    let own = cfg
        .upstream
        .as_ref()
        .map(|u| u.admin_prefix.clone())
        .unwrap_or_default();
    let mut admin_rules = cfg.rules.clone();
    admin_rules.requests.max_requests = ADMIN_QUOTA;
    admin_rules.requests.window = embassy_time::Duration::from_secs(60);
    // `/metrics` too: monitoring must keep working while the service's
    // address is blocked or a fleet store is down (fail-closed).
    for (prefix, name) in [("/admin", "admin"), ("/metrics", "metrics")] {
        let prefix = &format!("{own}{prefix}");
        match Limiter::new(admin_rules.clone(), admin_opts) {
            // Not exported: `/metrics` shows the service's decisions only,
            // as it always has (and its sums do not count scrapes).
            Ok(l) => {
                let guard = Guard::new(Arc::new(l), None).with_metrics(Metrics::unexported());
                layer = layer.route(prefix, name, guard)
            }
            Err(e) => {
                tracing::error!(error = %e, "{name} policy unavailable; {prefix} shares the requests quota")
            }
        }
    }
    let route_policies = match super::policies::build(&cfg.policies, registry) {
        Ok(ps) => ps,
        Err(e) => {
            tracing::error!(error = %e, "[[policies]] unavailable; their paths share the requests quota");
            Vec::new()
        }
    };
    for p in route_policies.iter().cloned() {
        layer = layer.policy(p);
    }
    for h in registry.handles() {
        layer = layer.shadow_policy(&h.name, h.shadow.clone());
    }
    // The forward-auth endpoints sit in front of the layer (their own
    // accounting) and pick among the same policies by the original request;
    // every other path falls through to the service.
    let policies = super::forward_auth::Policies::new(
        super::forward_auth::RoutePolicy {
            name: "requests".into(),
            engine: app.engine.clone(),
        },
        route_policies,
    );
    let fa_engine = app.engine.clone();
    let demo = Router::new()
        .route("/", get(|| async { "ok" }))
        .route("/login", post(login));
    let routes = Router::new()
        .route("/metrics", get(metrics))
        .route("/admin/bans", get(admin_bans).post(admin_ban))
        .route("/admin/bans/{ip}", delete(admin_unban))
        .route("/admin/status", get(admin_status))
        .route("/admin/reload", post(admin_reload))
        .merge(super::ui::routes(super::ui::UiContext {
            engine: app.engine.clone(),
            admin: app.admin.clone(),
            metrics: metrics_source.clone(),
            kind,
            shadow: app.shadow.clone(),
            base: own.clone(),
            policies: app.policies.clone(),
        }));
    let Some(upstream) = cfg.upstream.clone() else {
        let service = demo.merge(routes).with_state(app).layer(layer);
        return super::forward_auth::routes(cfg, fa_engine, policies, service);
    };
    let proxy = Arc::new(super::proxy::Proxy::new(
        upstream,
        cfg.login_routes.clone(),
        app.engine.clone(),
        TrustedProxies::new(cfg.trusted_proxies.clone()),
    ));
    let routes = routes.with_state(app);
    let routes = if own.is_empty() {
        routes
    } else {
        Router::new().nest(&own, routes)
    };
    let service = routes
        .fallback(
            move |Extension(ClientIp(ip)): Extension<ClientIp>, req: axum::extract::Request| {
                let peer = req
                    .extensions()
                    .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                    .map(|c| c.0.ip());
                proxy.clone().handle(ip, peer, req)
            },
        )
        .layer(layer);
    super::forward_auth::routes(cfg, fa_engine, policies, service)
}

/// JSON error with a status.
fn error(status: StatusCode, msg: &str) -> Response {
    (status, Json(json!({ "error": msg }))).into_response()
}

/// 429 (or 403, 503) for a login refused before the password is looked
/// at: problem details naming the `login` policy (or a short HTML page
/// for a browser), `Retry-After` when the refusal ends.
fn refused(d: &Decision, headers: &HeaderMap) -> Response {
    portcullis::problem::deny_response(d, &["login"], headers)
        .map(axum::body::Body::from)
        .into_response()
}

#[derive(Deserialize)]
struct LoginBody {
    username: String,
    password: String,
}

async fn login(
    State(app): State<App>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(LoginBody { username, password }) = serde_json::from_slice::<LoginBody>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected JSON {\"username\": \"...\", \"password\": \"...\"}",
        );
    };
    if username.trim().is_empty() {
        return error(StatusCode::BAD_REQUEST, "username is empty");
    }
    // A place among the password checks first: a busy server answers 503
    // without counting the attempt against anybody.
    let admitted = match app.users.admit() {
        Ok(a) => a,
        Err(busy) => {
            tracing::warn!(%ip, "login refused: password checks busy");
            return busy.into_response();
        }
    };
    // The password and the check's place are taken by whichever runs: the
    // check, or (a hidden lock, `login.reveal_lock = false`) the answer
    // that looks like a wrong password.
    let held = Arc::new(std::sync::Mutex::new(Some((admitted, password))));
    let take = |h: &Arc<std::sync::Mutex<Option<(super::passwords::Admitted, String)>>>| {
        h.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    };
    let hidden: Option<Hidden> = (!app.reveal_lock.0).then(|| {
        let (engine, held, user, delay) = (
            app.engine.clone(),
            held.clone(),
            username.clone(),
            app.reveal_lock.1,
        );
        Box::new(move |_d: Decision| -> BoxFuture<'static, Response> {
            Box::pin(async move {
                match take(&held) {
                    Some((admitted, password)) => {
                        super::lock_reveal::answer(
                            engine.as_ref(),
                            ip,
                            admitted,
                            user,
                            password,
                            delay,
                        )
                        .await
                    }
                    None => super::lock_reveal::wrong_password(),
                }
            })
        }) as Hidden
    });
    let user = username.clone();
    guarded_login(app.engine.clone(), user, ip, &headers, hidden, async move {
        let Some((admitted, password)) = take(&held) else {
            return (false, super::lock_reveal::wrong_password());
        };
        if admitted.check(&username, &password).await {
            let ok = Json(json!({ "ok": true, "user": username.trim().to_ascii_lowercase() }));
            (true, (StatusCode::OK, ok).into_response())
        } else {
            (false, super::lock_reveal::wrong_password())
        }
    })
    .await
}

/// What answers a lock that `login.reveal_lock = false` hides (demo
/// `POST /login`; the proxy's login routes always reveal a lock, since a
/// wrong password's answer there is the upstream's).
pub(crate) type Hidden = Box<dyn FnOnce(Decision) -> BoxFuture<'static, Response> + Send>;

/// The login flow `POST /login` and the proxy's login routes share:
/// reserve the attempt (`Engine::begin_login`: it counts as a failure from
/// now on, so N parallel guesses get at most `max_failures` checks, DESIGN
/// rule 5), refuse with 429/403 if the rules say so (or, for a lock that
/// `hidden` hides, answer as it does), else run `check`
/// (the password check, or the upstream's answer) to its `(ok, response)`,
/// settle the attempt with `ok`, and on a failure serve the penalty delay
/// before the response goes out.
pub(crate) async fn guarded_login<F>(
    engine: Arc<dyn Engine>,
    username: String,
    ip: IpAddr,
    headers: &HeaderMap,
    hidden: Option<Hidden>,
    check: F,
) -> Response
where
    F: std::future::Future<Output = (bool, Response)> + Send + 'static,
{
    let attempt = match engine.begin_login(&username, ip).await {
        Ok(a) => a,
        Err(d) => match hidden {
            Some(answer) if super::lock_reveal::hides(false, &d) => {
                tracing::info!(%ip, decision = ?d, "login refused: locked, answered as a wrong password");
                return answer(d).await;
            }
            _ => {
                tracing::info!(%ip, decision = ?d, "login refused before password check");
                return refused(&d, headers);
            }
        },
    };
    if attempt.penalty.refused {
        // No slot for the penalty and the policy refuses: the password is
        // not checked; the reservation stays a failure.
        engine
            .finish_login(&username, ip, attempt.ticket, false)
            .await;
        return super::lock_reveal::too_many_in_flight();
    }
    // The check, the settlement and the penalty run in a task of their own:
    // a client that hangs up cannot cut the penalty short, free its slot
    // early or leave the attempt unsettled.
    let task = tokio::spawn(async move {
        let (ok, response) = check.await;
        let locked = engine.finish_login(&username, ip, attempt.ticket, ok).await;
        if ok {
            drop(attempt.penalty);
            return response;
        }
        let penalty = attempt.penalty;
        tracing::info!(%ip, delay_ms = penalty.delay.as_millis(), throttled = penalty.throttled, locked, "login failed");
        penalty.serve().await;
        response
    });
    task.await
        .unwrap_or_else(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "login check failed"))
}

async fn metrics(State(app): State<App>) -> Response {
    // The status read publishes the table gauges.
    let _ = app.engine.status().await;
    let body = super::exporter::render(&app.server_metrics);
    ([("content-type", "text/plain; version=0.0.4")], body).into_response()
}

/// The bearer token or a dashboard session; a state-changing call on a
/// session also needs `X-Requested-With` (see [`super::ui::authorize`]).
#[allow(clippy::result_large_err)]
fn token_ok(app: &App, headers: &HeaderMap, changes_state: bool) -> Result<(), Response> {
    super::ui::authorize(app.admin.as_deref(), headers, changes_state).map(|_| ())
}

/// A backend's status as the JSON `/admin/status` starts from; the fleet
/// fields only for a fleet backend.
pub(crate) fn status_json(s: &Status) -> serde_json::Value {
    let mut v = json!({
        "backend": s.backend,
        "store": s.store,
        "entries": s.entries,
        "capacity": s.capacity,
        "evictions": s.evictions,
        "table_full": s.table_full,
        "purged": s.purged,
        "store_errors": s.store_errors,
    });
    if let (Some(f), Some(o)) = (&s.fleet, v.as_object_mut()) {
        o.insert("fallback_active".into(), json!(f.fallback_active));
        o.insert("fail_closed".into(), json!(f.fail_closed));
        o.insert("namespace".into(), json!(f.namespace));
        o.insert("nodes".into(), nodes_json(&f.nodes));
        // Where the reconciliation queue is kept on disk (null: nowhere).
        let journal = f
            .journal
            .as_ref()
            .map(|p| json!({"path": p, "entries": f.queued}));
        o.insert("journal".into(), json!(journal));
    }
    v
}

/// A Redis Cluster's masters as JSON: `[{node, slots: "0-5460", up,
/// outages}]` (empty for one Redis).
pub(crate) fn nodes_json(nodes: &[portcullis::fleet::NodeHealth]) -> serde_json::Value {
    nodes
        .iter()
        .map(|n| {
            json!({
                "node": n.addr,
                "slots": n.slot_list(),
                "up": n.up,
                "outages": n.outages,
            })
        })
        .collect()
}

/// The ban list as JSON values; manual decisions last (kind `manual`,
/// with the operator's reason as `note`).
pub(crate) async fn bans_json(engine: &dyn Engine) -> serde_json::Value {
    let bans = engine.bans().await;
    let mut rows: Vec<serde_json::Value> = bans.iter().map(ban_row).collect();
    let manual = engine.manual_bans().await;
    let now_ms = portcullis::clock::unix_ms();
    rows.extend(
        super::manual_api::rows(&manual, now_ms)
            .into_iter()
            .map(|mut r| {
                if let Some(o) = r.as_object_mut() {
                    o.remove("ms_left");
                }
                r
            }),
    );
    json!(rows)
}

/// One blocked, banned or locked key as a JSON row (`/admin/bans`; the
/// dashboard adds `ms_left`, `shadow` and `policy` to it).
pub(crate) fn ban_row(b: &portcullis::limiter::BanInfo) -> serde_json::Value {
    json!({
        "ip": b.ip.to_string(),
        "kind": b.kind.as_str(),
        "reason": b.reason.as_str(),
        "seconds_left": b.left.map(ceil_secs),
    })
}

async fn admin_ban(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = token_ok(&app, &headers, true) {
        return r;
    }
    super::manual_api::post(app.engine.as_ref(), &body).await
}

async fn admin_bans(State(app): State<App>, headers: HeaderMap) -> Response {
    if let Err(r) = token_ok(&app, &headers, false) {
        return r;
    }
    let mut rows = mark_shadow(bans_json(app.engine.as_ref()).await, app.shadow.is_on());
    // Each `[[policies]]` table's blocks and bans, marked with its name and
    // its own shadow switch.
    for h in app.policies.handles() {
        let mut more = mark_shadow(bans_json(h.engine.as_ref()).await, h.shadow.is_on());
        if let (Some(all), Some(more)) = (rows.as_array_mut(), more.as_array_mut()) {
            for r in more.iter_mut().filter_map(|r| r.as_object_mut()) {
                r.insert("policy".into(), json!(h.name));
            }
            all.append(more);
        }
    }
    Json(rows).into_response()
}

/// Mark every row `"shadow": shadow`: while the service policy shadows,
/// its blocks and bans are recorded but not enforced.
pub(crate) fn mark_shadow(mut rows: serde_json::Value, shadow: bool) -> serde_json::Value {
    if let Some(rows) = rows.as_array_mut() {
        for r in rows.iter_mut().filter_map(|r| r.as_object_mut()) {
            r.insert("shadow".into(), json!(shadow));
        }
    }
    rows
}

/// `POST /admin/reload`: re-read the config file and environment
/// ([`super::reload`]). `200` with what changed and what needs a restart,
/// or `422` with the key and reason of a refused config.
async fn admin_reload(
    State(app): State<App>,
    headers: HeaderMap,
    reloader: Option<Extension<Arc<super::reload::Reloader>>>,
) -> Response {
    if let Err(r) = token_ok(&app, &headers, true) {
        return r;
    }
    let Some(Extension(reloader)) = reloader else {
        return error(StatusCode::NOT_IMPLEMENTED, "reload not available");
    };
    match reloader.reload().await {
        Ok(r) => Json(json!({
            "reloaded": true,
            "rules_changed": r.rules_changed,
            "shadow": r.shadow,
            "needs_restart": r.needs_restart,
        }))
        .into_response(),
        Err(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "reloaded": false, "error": "config refused", "key": e.key, "reason": e.reason })),
        )
            .into_response(),
    }
}

async fn admin_unban(
    State(app): State<App>,
    headers: HeaderMap,
    Path(ip): Path<String>,
) -> Response {
    if let Err(r) = token_ok(&app, &headers, true) {
        return r;
    }
    let Ok(ip) = ip.parse::<IpAddr>() else {
        // A range: lift exactly that manual decision.
        let Ok(range) = portcullis::manual::parse_range(&ip) else {
            return error(StatusCode::BAD_REQUEST, "not an IP address or CIDR range");
        };
        let lifted = app.engine.unban_range(range).await.is_some();
        tracing::info!(%range, lifted, "admin unban of a range");
        return Json(json!({ "ip": range.to_string(), "lifted": usize::from(lifted) }))
            .into_response();
    };
    let mut n = app.engine.lift(ip).await;
    for h in app.policies.handles() {
        n += h.engine.lift(ip).await;
    }
    tracing::info!(%ip, lifted = n, "admin unban");
    Json(json!({ "ip": ip.to_string(), "lifted": n })).into_response()
}

async fn admin_status(State(app): State<App>, headers: HeaderMap) -> Response {
    if let Err(r) = token_ok(&app, &headers, false) {
        return r;
    }
    let mut s = status_json(&app.engine.status().await);
    if let Some(o) = s.as_object_mut() {
        o.insert("version".into(), json!(env!("CARGO_PKG_VERSION")));
        o.insert("uptime_s".into(), json!(app.started.elapsed().as_secs()));
        o.insert("store_kind".into(), json!(app.kind));
        o.insert("bans".into(), json!(app.engine.bans().await.len()));
        o.insert(
            "manual_bans".into(),
            json!(app.engine.manual_bans().await.len()),
        );
        o.insert("max_entries".into(), json!(app.max_entries));
        o.insert("admin_max_entries".into(), json!(app.admin_max_entries));
    }
    Json(s).into_response()
}
