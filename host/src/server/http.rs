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
use crate::client_ip::TrustedProxies;
use crate::engine::Engine;
use crate::layer::ceil_secs;
use crate::layer::{ClientIp, RateLimitLayer};
use crate::{Guard, Limiter, LimiterOptions};

/// Requests per minute per address on `/admin` and `/metrics` (each its own state).
pub const ADMIN_QUOTA: u32 = 60;

#[derive(Clone)]
struct App {
    engine: Arc<dyn Engine>,
    users: Users,
    admin_token: Option<Arc<String>>,
    started: Instant,
    kind: &'static str,
}

/// The whole service.
pub fn router(
    cfg: &ServerConfig,
    engine: Arc<dyn Engine>,
    users: Users,
    kind: &'static str,
    metrics_source: Arc<crate::metrics::Metrics>,
) -> Router {
    let app = App {
        engine: engine.clone(),
        users,
        admin_token: cfg.admin_token.clone().map(Arc::new),
        started: Instant::now(),
        kind,
    };
    // The admin API has its own quota and state: an operator whose address
    // is blocked on the service can still lift the block, and token guessing
    // is limited (and escalates) on its own.
    let admin_opts = LimiterOptions {
        max_entries: 10_000,
        shards: 4,
        seed: None,
    };
    let mut layer = RateLimitLayer::with_engine("requests", engine)
        .trusted_proxies(TrustedProxies::new(cfg.trusted_proxies.clone()));
    let mut admin_rules = cfg.rules.clone();
    admin_rules.requests.max_requests = ADMIN_QUOTA;
    admin_rules.requests.window = embassy_time::Duration::from_secs(60);
    // `/metrics` too: monitoring must keep working while the service's
    // address is blocked or a fleet store is down (fail-closed).
    for (prefix, name) in [("/admin", "admin"), ("/metrics", "metrics")] {
        match Limiter::new(admin_rules.clone(), admin_opts) {
            Ok(l) => layer = layer.route(prefix, name, Guard::new(Arc::new(l), None)),
            Err(e) => {
                tracing::error!(error = %e, "{name} policy unavailable; {prefix} shares the requests quota")
            }
        }
    }
    Router::new()
        .route("/", get(|| async { "ok" }))
        .route("/login", post(login))
        .route("/metrics", get(metrics))
        .route("/admin/bans", get(admin_bans))
        .route("/admin/bans/{ip}", delete(admin_unban))
        .route("/admin/status", get(admin_status))
        .merge(super::ui::routes(super::ui::UiContext {
            engine: app.engine.clone(),
            admin_token: app.admin_token.clone(),
            metrics: metrics_source.clone(),
            kind,
        }))
        .with_state(app)
        .layer(layer)
}

/// JSON error with a status.
fn error(status: StatusCode, msg: &str) -> Response {
    (status, Json(json!({ "error": msg }))).into_response()
}

/// 429 (or 403) for a login refused before the password is looked at.
fn refused(d: &Decision) -> Response {
    let Decision::Deny {
        reason,
        retry_after,
    } = d
    else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "not a denial");
    };
    if reason.is_forbidden() {
        return error(StatusCode::FORBIDDEN, reason.as_str());
    }
    let secs = ceil_secs(*retry_after);
    let status = if *reason == portcullis_core::Reason::Unavailable {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::TOO_MANY_REQUESTS
    };
    let mut r = (
        status,
        Json(json!({ "error": reason.as_str(), "retry_after": secs })),
    )
        .into_response();
    if let Ok(v) = secs.to_string().parse() {
        r.headers_mut().insert("retry-after", v);
    }
    r
}

#[derive(Deserialize)]
struct LoginBody {
    username: String,
    password: String,
}

async fn login(
    State(app): State<App>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
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
    let d = app.engine.check_login(&username, ip).await;
    if !d.is_allowed() {
        tracing::info!(%ip, decision = ?d, "login refused before password check");
        return refused(&d);
    }
    let ok = match app.users.check_bounded(&username, &password).await {
        Ok(ok) => ok,
        Err(busy) => {
            tracing::warn!(%ip, "login refused: password checks busy");
            return busy.into_response();
        }
    };
    if ok {
        app.engine.login_succeeded(&username, ip).await;
        return (
            StatusCode::OK,
            Json(json!({ "ok": true, "user": username.trim().to_ascii_lowercase() })),
        )
            .into_response();
    }
    let penalty = app.engine.login_failed(&username, ip).await;
    tracing::info!(%ip, delay_ms = penalty.delay.as_millis(), throttled = penalty.throttled, locked = penalty.locked, "login failed");
    if penalty.refused {
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many penalised attempts in flight",
        );
    }
    penalty.serve().await;
    error(StatusCode::UNAUTHORIZED, "invalid credentials")
}

async fn metrics(State(app): State<App>) -> Response {
    let body = app.engine.metrics().await;
    ([("content-type", "text/plain; version=0.0.4")], body).into_response()
}

/// Constant-time comparison of the bearer token.
#[allow(clippy::result_large_err)]
fn token_ok(app: &App, headers: &HeaderMap) -> Result<(), Response> {
    let Some(expected) = &app.admin_token else {
        return Err(error(
            StatusCode::NOT_FOUND,
            "admin API is off (no server.admin_token)",
        ));
    };
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if crate::server::ui::same(given.as_bytes(), expected.as_bytes())
        || crate::server::ui::cookie_ok(headers, expected)
    {
        Ok(())
    } else {
        Err(error(
            StatusCode::UNAUTHORIZED,
            "bad or missing admin token",
        ))
    }
}

/// The ban list as JSON values.
pub(crate) async fn bans_json(engine: &dyn Engine) -> serde_json::Value {
    let bans = engine.bans().await;
    json!(bans
        .iter()
        .map(|b| json!({
            "ip": b.ip.to_string(),
            "kind": b.kind.as_str(),
            "reason": b.reason.as_str(),
            "seconds_left": b.left.map(ceil_secs),
        }))
        .collect::<Vec<_>>())
}

async fn admin_bans(State(app): State<App>, headers: HeaderMap) -> Response {
    if let Err(r) = token_ok(&app, &headers) {
        return r;
    }
    Json(bans_json(app.engine.as_ref()).await).into_response()
}

async fn admin_unban(
    State(app): State<App>,
    headers: HeaderMap,
    Path(ip): Path<String>,
) -> Response {
    if let Err(r) = token_ok(&app, &headers) {
        return r;
    }
    if let Err(r) = crate::server::ui::csrf_ok(&headers) {
        return r;
    }
    let Ok(ip) = ip.parse::<IpAddr>() else {
        return error(StatusCode::BAD_REQUEST, "not an IP address");
    };
    let n = app.engine.lift(ip).await;
    tracing::info!(%ip, lifted = n, "admin unban");
    Json(json!({ "ip": ip.to_string(), "lifted": n })).into_response()
}

async fn admin_status(State(app): State<App>, headers: HeaderMap) -> Response {
    if let Err(r) = token_ok(&app, &headers) {
        return r;
    }
    let mut s = app.engine.status().await;
    if let Some(o) = s.as_object_mut() {
        o.insert("version".into(), json!(env!("CARGO_PKG_VERSION")));
        o.insert("uptime_s".into(), json!(app.started.elapsed().as_secs()));
        o.insert("store_kind".into(), json!(app.kind));
        o.insert("bans".into(), json!(app.engine.bans().await.len()));
    }
    Json(s).into_response()
}
