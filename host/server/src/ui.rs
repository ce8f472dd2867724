//! The operator dashboard at `/admin/ui` (its authentication is
//! [`crate::admin_auth`]'s).
//!
//! | route | what |
//! | --- | --- |
//! | `GET /admin/ui` | the dashboard with a valid session cookie, else only the sign-in form |
//! | `POST /admin/ui/login` | form `token=…`: right token starts a session: its random id goes in the `portcullis_admin` cookie (`HttpOnly; SameSite=Strict; Path=/admin`), then a redirect to `/admin/ui` |
//! | `POST /admin/ui/logout` | ends the session and clears the cookie (needs `X-Requested-With: portcullis`) |
//! | `GET /admin/ui/data` | everything the page shows, as one JSON document (cookie or bearer token) |
//! | `GET /admin/ui/app.js`, `/admin/ui/app.css` | the page's script and style, embedded in the binary |
//!
//! The page polls `/admin/ui/data` every 2 s: one request per refresh, well
//! within the `/admin` quota. Unban calls `DELETE /admin/bans/<ip>` with
//! `X-Requested-With: portcullis`, which a cross-site page cannot send
//! (see [`csrf_ok`]); the pages forbid framing and inline script.
//!
//! Authentication is decided per request by [`crate::admin_auth`].

use std::sync::Arc;

use crate::admin_auth::{authorize, csrf_ok, off, COOKIE, SESSION_SECS};
use crate::running::Running;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use portcullis::metrics::{series_names, Metrics, HISTORY_SECS, SERIES};
use portcullis::Engine;

/// The running configuration of the request, as the pipeline put it: the
/// admin credentials and sessions (none: dashboard off), the prefix the
/// routes are served under, the shadow switches and `[[policies]]`.
type Run = Extension<Arc<Running>>;

/// What the dashboard reads (the parts a reload does not change).
#[derive(Clone)]
pub struct UiContext {
    /// The decision backend (bans, lift, status).
    pub engine: Arc<dyn Engine>,
    /// The counters of the main guard.
    pub metrics: Arc<Metrics>,
    /// Store kind label.
    pub kind: &'static str,
}

/// How many offenders the page lists.
pub const TOP_OFFENDERS: usize = 10;

const SIGNIN_HTML: &str = include_str!("ui/signin.html");
const DASHBOARD_HTML: &str = include_str!("ui/dashboard.html");
const APP_JS: &str = include_str!("ui/app.js");
const APP_CSS: &str = include_str!("ui/app.css");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Dashboard routes, all under `/admin/ui` (so behind the `/admin` quota).
pub fn routes<S: Clone + Send + Sync + 'static>(ctx: UiContext) -> Router<S> {
    Router::new()
        .route("/admin/ui", get(page))
        .route("/admin/ui/login", post(sign_in))
        .route("/admin/ui/logout", post(sign_out))
        .route("/admin/ui/data", get(data_handler))
        .route(
            "/admin/ui/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/admin/ui/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .with_state(ctx)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "private, max-age=300"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// An HTML page with the headers every dashboard page carries.
fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

fn fill(base: &str, template: &str, message: &str) -> String {
    template
        .replace("{{base}}", base)
        .replace("{{version}}", env!("CARGO_PKG_VERSION"))
        .replace("{{message}}", message)
}

/// The session cookie (`value` empty and `max_age` 0 clears it). `Secure`
/// when the request came over HTTPS (as a proxy in front reports it).
fn session_cookie(
    base: &str,
    headers: &HeaderMap,
    value: &str,
    max_age: u64,
) -> Option<HeaderValue> {
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"));
    let secure = if https { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path={base}/admin; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    ))
    .ok()
}

/// `GET /admin/ui`: the dashboard when signed in, else only the sign-in form.
async fn page(Extension(run): Run, headers: HeaderMap) -> Response {
    let Some(admin) = &run.admin else {
        return off();
    };
    if admin.session_ok(&headers) {
        html(StatusCode::OK, fill(&run.base_written, DASHBOARD_HTML, ""))
    } else {
        html(StatusCode::OK, fill(&run.base_written, SIGNIN_HTML, ""))
    }
}

#[derive(Deserialize)]
struct SignIn {
    token: String,
}

/// `POST /admin/ui/login`: check the token, set the cookie, back to the page.
async fn sign_in(
    Extension(run): Run,
    headers: HeaderMap,
    form: Result<Form<SignIn>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Some(admin) = &run.admin else {
        return off();
    };
    let given = form.map(|Form(f)| f.token).unwrap_or_default();
    if !admin.token_ok(&given) {
        tracing::warn!("dashboard sign-in with a wrong token");
        return html(
            StatusCode::UNAUTHORIZED,
            fill(&run.base_written, SIGNIN_HTML, "Wrong token."),
        );
    }
    let id = match admin.start_session() {
        Ok(id) => id,
        Err(e) => {
            tracing::error!(error = %e, "no randomness for a session id");
            return html(
                StatusCode::INTERNAL_SERVER_ERROR,
                fill(&run.base_written, SIGNIN_HTML, "Cannot start a session."),
            );
        }
    };
    let Some(cookie) = session_cookie(&run.base_written, &headers, &id, SESSION_SECS) else {
        return html(
            StatusCode::INTERNAL_SERVER_ERROR,
            fill(
                &run.base_written,
                SIGNIN_HTML,
                "Cannot set the session cookie.",
            ),
        );
    };
    tracing::info!("dashboard sign-in");
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, cookie),
            (
                header::LOCATION,
                HeaderValue::from_str(&format!("{}/admin/ui", run.base_written))
                    .unwrap_or(HeaderValue::from_static("/admin/ui")),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
    )
        .into_response()
}

/// `POST /admin/ui/logout`: end the session, clear the cookie.
async fn sign_out(Extension(run): Run, headers: HeaderMap) -> Response {
    let Some(admin) = &run.admin else {
        return off();
    };
    if let Err(r) = csrf_ok(&headers) {
        return r;
    }
    let ended = admin.end_sessions(&headers);
    tracing::info!(ended, "dashboard sign-out");
    let mut r = StatusCode::NO_CONTENT.into_response();
    if let Some(c) = session_cookie(&run.base_written, &headers, "", 0) {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    r
}

/// `GET /admin/ui/data`.
async fn data_handler(
    State(ctx): State<UiContext>,
    Extension(run): Run,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorize(run.admin.as_deref(), &headers, false) {
        return r;
    }
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(data(&ctx, &run).await),
    )
        .into_response()
}

/// A JSON object.
type Obj = serde_json::Map<String, Value>;

/// The per-second series of the last complete [`HISTORY_SECS`] seconds:
/// the names, the non-zero series, and every series' total.
fn history(m: &Metrics) -> (Vec<&'static str>, Obj, Obj) {
    // The current second is still filling: end with the last complete one.
    let now = m.history.now();
    let window = m.history.window(now.saturating_sub(1));
    let names = series_names();
    let mut series = serde_json::Map::new();
    let mut totals = serde_json::Map::new();
    for (i, name) in names.iter().enumerate().take(SERIES) {
        let col: Vec<u64> = window.iter().map(|s| s[i]).collect();
        let total: u64 = col.iter().sum();
        totals.insert((*name).into(), json!(total));
        if total > 0 {
            series.insert((*name).into(), json!(col));
        }
    }

    (names.to_vec(), series, totals)
}

/// The top offenders as JSON rows.
fn offenders(m: &Metrics) -> Vec<Value> {
    m.top_offenders(TOP_OFFENDERS)
        .iter()
        .map(|o| {
            json!({
                "ip": o.ip.to_string(),
                "denials": o.denials,
                "reason": o.last_reason.as_str(),
                "last_seen_s": o.last_seen_secs_ago,
            })
        })
        .collect()
}

/// Everything the dashboard shows, as one JSON document:
///
/// * `bans`: `[{ip, kind, reason, seconds_left, ms_left, shadow}]` (`null` times for a ban;
///   `shadow`: recorded by a shadow policy, not enforced); manual decisions last, kind
///   `manual`, with the operator's reason as `note`;
/// * `history`: `{names, step_s, len, series: {name: [count per second, oldest first]}, totals}`
///   over the last complete [`HISTORY_SECS`] seconds; series that are all zero are left out;
/// * `offenders`: `[{ip, denials, reason, last_seen_s}]`, the top [`TOP_OFFENDERS`];
/// * `table`: `{entries, capacity, evictions, table_full}` (the local table's);
/// * `store`: `{kind, fallback_active (null: not applicable), errors, fallbacks, path,
///   nodes}`; `nodes`: a Redis Cluster's masters `[{node, slots, up, outages}]`
///   (empty otherwise).
pub async fn data(ctx: &UiContext, run: &Running) -> Value {
    let bans = ctx.engine.bans().await;
    let status = ctx.engine.status().await;
    let m = &ctx.metrics;

    // A row of `/admin/bans` plus its countdown in ms, whether its policy
    // shadows, and (for a `[[policies]]` table) the policy's name.
    let row = |b: &portcullis::Hold, shadow: bool, policy: Option<&str>| {
        let mut r = crate::views::ban_row(b);
        if let Some(o) = r.as_object_mut() {
            o.insert("ms_left".into(), json!(b.left.map(|d| d.as_millis())));
            o.insert("shadow".into(), json!(shadow));
            if let Some(p) = policy {
                o.insert("policy".into(), json!(p));
            }
        }
        r
    };
    let shadow = run.cfg.shadow;
    let mut bans: Vec<Value> = bans.iter().map(|b| row(b, shadow, None)).collect();
    for p in &run.policies {
        let more = p.engine.bans().await;
        bans.extend(more.iter().map(|b| row(b, p.cfg.shadow, Some(&p.cfg.name))));
    }
    let manual = ctx.engine.manual_bans().await;
    bans.extend(crate::manual_api::rows(
        &manual,
        portcullis::clock::unix_ms(),
    ));

    let (names, series, totals) = history(m);
    let offenders = offenders(m);
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "bans": bans,
        "history": {
            "names": names,
            "step_s": 1,
            "len": HISTORY_SECS,
            "series": series,
            "totals": totals,
        },
        "offenders": offenders,
        "table": {
            "entries": status.entries,
            "capacity": status.capacity,
            "evictions": status.evictions,
            "table_full": status.table_full,
        },
        "store": {
            "kind": ctx.kind,
            "backend": status.backend,
            "path": status.store,
            "fallback_active": status.fleet.as_ref().map(|f| f.fallback_active),
            "nodes": status.fleet.as_ref().map_or(serde_json::Value::Array(Vec::new()), |f| crate::views::nodes_json(&f.nodes)),
            "errors": status.store_errors,
            "fallbacks": m.fallbacks(),
        },
        "totals": {
            "allowed": m.allowed(),
            "denied": portcullis::Reason::ALL.iter().map(|r| m.denied(*r)).sum::<u64>(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin_auth::*;
    use std::time::Duration;

    #[test]
    fn tokens_sessions_and_csrf() {
        let a = AdminAuth::new("tok").unwrap();
        assert!(a.token_ok("tok"));
        for bad in [
            "",
            "to",
            "tok ",
            "tok2",
            "TOK",
            "a much longer token than tok",
        ] {
            assert!(!a.token_ok(bad), "{bad:?}");
        }
        let hm = |pairs: &[(&'static str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(*k, HeaderValue::from_str(v).unwrap());
            }
            h
        };
        // The scheme in any case.
        for v in ["Bearer tok", "bearer tok", "BEARER tok", "Bearer  tok"] {
            let h = hm(&[("authorization", v)]);
            assert_eq!(a.authenticate(&h), Some(Auth::Bearer), "{v}");
            assert!(authorize(Some(&a), &h, true).is_ok());
        }
        for v in ["Basic tok", "Bearer", "Bearertok", "Bearer tok2", "tok"] {
            assert_eq!(a.authenticate(&hm(&[("authorization", v)])), None, "{v}");
        }
        // The token is no cookie; a session id is.
        assert_eq!(
            a.authenticate(&hm(&[("cookie", "portcullis_admin=tok")])),
            None
        );
        let id = a.start_session().unwrap();
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(id, a.start_session().unwrap());
        let cookie = format!("a=b; portcullis_admin={id}");
        let h = hm(&[("cookie", &cookie)]);
        assert_eq!(a.authenticate(&h), Some(Auth::Session));
        assert!(authorize(Some(&a), &h, false).is_ok());
        assert!(
            authorize(Some(&a), &h, true).is_err(),
            "cookie alone cannot change state"
        );
        // Another Authorization header does not lift the guard.
        let h2 = hm(&[("cookie", &cookie), ("authorization", "Basic Zm9vOmJhcg==")]);
        assert_eq!(a.authenticate(&h2), Some(Auth::Session));
        assert!(authorize(Some(&a), &h2, true).is_err());
        let h3 = hm(&[("cookie", &cookie), ("x-requested-with", "portcullis")]);
        assert!(authorize(Some(&a), &h3, true).is_ok());
        // Sign-out ends it.
        assert_eq!(a.end_sessions(&h), 1);
        assert_eq!(a.authenticate(&h), None);
        assert!(authorize(None, &h, false).is_err());
    }

    #[test]
    fn sessions_expire_and_are_bounded() {
        let mut a = AdminAuth::new("tok").unwrap();
        a.lifetime = Duration::from_millis(30);
        let id = a.start_session().unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            "cookie",
            HeaderValue::from_str(&format!("portcullis_admin={id}")).unwrap(),
        );
        assert!(a.session_ok(&h));
        std::thread::sleep(Duration::from_millis(60));
        assert!(!a.session_ok(&h), "expired");
        a.lifetime = Duration::from_secs(60);
        let first = a.start_session().unwrap();
        assert_eq!(a.sessions(), 1, "the expired one is gone");
        for _ in 0..MAX_SESSIONS + 5 {
            a.start_session().unwrap();
        }
        assert_eq!(a.sessions(), MAX_SESSIONS);
        h.insert(
            "cookie",
            HeaderValue::from_str(&format!("portcullis_admin={first}")).unwrap(),
        );
        assert!(!a.session_ok(&h), "the oldest made room");
    }

    #[test]
    fn cookie_attributes() {
        let h = HeaderMap::new();
        let c = session_cookie("", &h, "tok", 60).unwrap();
        let c = c.to_str().unwrap();
        assert!(c.starts_with("portcullis_admin=tok;"));
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/admin", "Max-Age=60"] {
            assert!(c.contains(attr), "{c}");
        }
        assert!(!c.contains("Secure"));
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(session_cookie("", &h, "tok", 60)
            .unwrap()
            .to_str()
            .unwrap()
            .ends_with("; Secure"));
    }

    #[test]
    fn pages_are_embedded() {
        assert!(SIGNIN_HTML.contains("id=\"signin\""));
        assert!(!SIGNIN_HTML.contains("id=\"dashboard\""));
        assert!(DASHBOARD_HTML.contains("id=\"dashboard\""));
        assert!(!APP_JS.is_empty() && !APP_CSS.is_empty());
    }
}
