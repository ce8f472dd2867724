//! The admin API (`/admin/bans`, `/admin/status`, `/admin/reload`) and
//! `/metrics`: the handlers the pipeline dispatches to once it has let a
//! request to portcullis's own routes through (`docs/pipeline.md`). Each
//! reads the running configuration the pipeline read for the request.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use portcullis::Engine;
use serde_json::json;

use crate::admin_auth::authorize;
use crate::exporter::ServerMetrics;
use crate::passwords::Users;
use crate::reload::Reloader;
use crate::running::Running;
use crate::views::{bans_json, mark_shadow, status_json};

/// What the handlers share (the parts that a reload does not change).
#[derive(Clone)]
pub struct App {
    /// The service's backend.
    pub engine: Arc<dyn Engine>,
    /// The demo users.
    pub users: Users,
    /// When the server started.
    pub started: Instant,
    /// Store kind label.
    pub kind: &'static str,
    /// The listener's and password checker's counters.
    pub server_metrics: Arc<ServerMetrics>,
    /// The reload (none: not available).
    pub reloader: Option<Arc<Reloader>>,
}

/// The running configuration of the request, as the pipeline put it.
pub type Run = Extension<Arc<Running>>;

/// JSON error with a status.
pub fn error(status: StatusCode, msg: &str) -> Response {
    (status, Json(json!({ "error": msg }))).into_response()
}

/// The bearer token or a dashboard session; a state-changing call on a
/// session also needs `X-Requested-With` (see [`authorize`]).
#[allow(clippy::result_large_err)]
fn token_ok(run: &Running, headers: &HeaderMap, changes_state: bool) -> Result<(), Response> {
    authorize(run.admin.as_deref(), headers, changes_state).map(|_| ())
}

/// `GET /metrics`: open unless `server.metrics_token` is set (then its
/// bearer token or the admin token). With `login.reveal_lock = false` an
/// open or unauthenticated scrape shows no lock: see
/// [`crate::exporter::hide_locks`].
pub async fn metrics(State(app): State<App>, Extension(run): Run, headers: HeaderMap) -> Response {
    let bearer = |a: &Option<Arc<crate::admin_auth::AdminAuth>>| {
        a.as_ref().is_some_and(|a| a.bearer_ok(&headers))
    };
    let authed = bearer(&run.metrics) || bearer(&run.admin);
    if run.metrics.is_some() && !authed {
        return error(StatusCode::UNAUTHORIZED, "bad or missing metrics token");
    }
    // The status read publishes the table gauges.
    let _ = app.engine.status().await;
    let mut body = crate::exporter::render(&app.server_metrics);
    if !run.cfg.reveal_lock && !authed {
        body = crate::exporter::hide_locks(&body);
    }
    ([("content-type", "text/plain; version=0.0.4")], body).into_response()
}

/// `POST /admin/bans`.
pub async fn ban(
    State(app): State<App>,
    Extension(run): Run,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = token_ok(&run, &headers, true) {
        return r;
    }
    crate::manual_api::post(app.engine.as_ref(), &body).await
}

/// `GET /admin/bans`.
pub async fn bans(State(app): State<App>, Extension(run): Run, headers: HeaderMap) -> Response {
    if let Err(r) = token_ok(&run, &headers, false) {
        return r;
    }
    let mut rows = mark_shadow(bans_json(app.engine.as_ref()).await, run.cfg.shadow);
    // Each `[[policies]]` table's blocks and bans, marked with its name and
    // its own shadow switch.
    for p in &run.policies {
        let mut more = mark_shadow(bans_json(p.engine.as_ref()).await, p.cfg.shadow);
        if let (Some(all), Some(more)) = (rows.as_array_mut(), more.as_array_mut()) {
            for r in more.iter_mut().filter_map(|r| r.as_object_mut()) {
                r.insert("policy".into(), json!(p.cfg.name));
            }
            all.append(more);
        }
    }
    Json(rows).into_response()
}

/// `POST /admin/reload`: re-read the config file and environment
/// ([`crate::reload`]). `200` with what changed and what needs a restart,
/// or `422` with the key and reason of a refused config.
pub async fn reload(State(app): State<App>, Extension(run): Run, headers: HeaderMap) -> Response {
    if let Err(r) = token_ok(&run, &headers, true) {
        return r;
    }
    let Some(reloader) = app.reloader else {
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

/// `DELETE /admin/bans/{ip}`.
pub async fn unban(
    State(app): State<App>,
    Extension(run): Run,
    headers: HeaderMap,
    Path(ip): Path<String>,
) -> Response {
    if let Err(r) = token_ok(&run, &headers, true) {
        return r;
    }
    let Ok(ip) = ip.parse::<IpAddr>() else {
        // A range: lift exactly that manual decision.
        let Ok(range) = portcullis::parse_range(&ip) else {
            return error(StatusCode::BAD_REQUEST, "not an IP address or CIDR range");
        };
        let lifted = app.engine.unban_range(range).await.is_some();
        tracing::info!(%range, lifted, "admin unban of a range");
        return Json(json!({ "ip": range.to_string(), "lifted": usize::from(lifted) }))
            .into_response();
    };
    let mut n = app.engine.lift(ip).await;
    for p in &run.policies {
        n += p.engine.lift(ip).await;
    }
    tracing::info!(%ip, lifted = n, "admin unban");
    Json(json!({ "ip": ip.to_string(), "lifted": n })).into_response()
}

/// `GET /admin/status`.
pub async fn status(State(app): State<App>, Extension(run): Run, headers: HeaderMap) -> Response {
    if let Err(r) = token_ok(&run, &headers, false) {
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
        o.insert("max_entries".into(), json!(run.cfg.max_entries));
        o.insert("admin_max_entries".into(), json!(run.cfg.admin_max_entries));
    }
    Json(s).into_response()
}
