//! The operator dashboard at `/admin/ui`, and the admin authentication
//! helpers it shares with the admin API.
//!
//! | route | what |
//! | --- | --- |
//! | `GET /admin/ui` | the dashboard with a valid session cookie, else only the sign-in form |
//! | `POST /admin/ui/login` | form `token=…`: right token sets the `portcullis_admin` cookie (`HttpOnly; SameSite=Strict; Path=/admin`) and redirects to `/admin/ui` |
//! | `POST /admin/ui/logout` | clears the cookie (needs `X-Requested-With: portcullis`) |
//! | `GET /admin/ui/data` | everything the page shows, as one JSON document (cookie or bearer token) |
//! | `GET /admin/ui/app.js`, `/admin/ui/app.css` | the page's script and style, embedded in the binary |
//!
//! The page polls `/admin/ui/data` every 2 s: one request per refresh, well
//! within the `/admin` quota. Unban calls `DELETE /admin/bans/<ip>` with
//! `X-Requested-With: portcullis`, which a cross-site page cannot send
//! (see [`csrf_ok`]); the pages forbid framing and inline script.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::engine::Engine;
use crate::layer::ceil_secs;
use crate::metrics::{series_names, Metrics, HISTORY_SECS, SERIES};

/// Name of the admin session cookie (`HttpOnly; SameSite=Strict`).
pub const COOKIE: &str = "portcullis_admin";

/// Constant-time byte comparison.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether the request carries the admin cookie with the right token.
pub fn cookie_ok(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .any(|(k, v)| k == COOKIE && same(v.as_bytes(), expected.as_bytes()))
}

/// State-changing admin calls authenticated by cookie must also carry
/// `X-Requested-With: portcullis`: a cross-site page cannot add that header
/// without a CORS preflight, which this server never grants. Bearer-token
/// calls are not sent by browsers on their own and pass.
#[allow(clippy::result_large_err)]
pub fn csrf_ok(headers: &HeaderMap) -> Result<(), Response> {
    if headers.contains_key("authorization") {
        return Ok(());
    }
    match headers
        .get("x-requested-with")
        .and_then(|v| v.to_str().ok())
    {
        Some("portcullis") => Ok(()),
        _ => Err((
            StatusCode::FORBIDDEN,
            "missing X-Requested-With: portcullis (CSRF guard)",
        )
            .into_response()),
    }
}

/// What the dashboard reads.
#[derive(Clone)]
pub struct UiContext {
    /// The decision backend (bans, lift, status).
    pub engine: Arc<dyn Engine>,
    /// The admin token (none: dashboard off).
    pub admin_token: Option<Arc<String>>,
    /// The counters of the main guard.
    pub metrics: Arc<Metrics>,
    /// Store kind label.
    pub kind: &'static str,
}

/// How many offenders the page lists.
pub const TOP_OFFENDERS: usize = 10;

/// How long a sign-in lasts.
const SESSION_SECS: u64 = 12 * 3600;

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

fn fill(template: &str, message: &str) -> String {
    template
        .replace("{{version}}", env!("CARGO_PKG_VERSION"))
        .replace("{{message}}", message)
}

fn off() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "error": "admin API is off (no server.admin_token)" })),
    )
        .into_response()
}

/// Bearer token or session cookie.
fn authorized(headers: &HeaderMap, expected: &str) -> bool {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    bearer.is_some_and(|t| same(t.as_bytes(), expected.as_bytes())) || cookie_ok(headers, expected)
}

/// Whether `token` can be a cookie value as it is (RFC 6265 cookie-octets).
fn cookie_safe(token: &str) -> bool {
    !token.is_empty()
        && token
            .bytes()
            .all(|b| matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E))
}

/// The session cookie (`value` empty and `max_age` 0 clears it). `Secure`
/// when the request came over HTTPS (as a proxy in front reports it).
fn session_cookie(headers: &HeaderMap, value: &str, max_age: u64) -> Option<HeaderValue> {
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"));
    let secure = if https { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/admin; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    ))
    .ok()
}

/// `GET /admin/ui`: the dashboard when signed in, else only the sign-in form.
async fn page(State(ctx): State<UiContext>, headers: HeaderMap) -> Response {
    let Some(token) = &ctx.admin_token else {
        return off();
    };
    if cookie_ok(&headers, token) {
        html(StatusCode::OK, fill(DASHBOARD_HTML, ""))
    } else {
        html(StatusCode::OK, fill(SIGNIN_HTML, ""))
    }
}

#[derive(Deserialize)]
struct SignIn {
    token: String,
}

/// `POST /admin/ui/login`: check the token, set the cookie, back to the page.
async fn sign_in(
    State(ctx): State<UiContext>,
    headers: HeaderMap,
    form: Result<Form<SignIn>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Some(expected) = &ctx.admin_token else {
        return off();
    };
    let given = form.map(|Form(f)| f.token).unwrap_or_default();
    if !same(given.as_bytes(), expected.as_bytes()) {
        tracing::warn!("dashboard sign-in with a wrong token");
        return html(StatusCode::UNAUTHORIZED, fill(SIGNIN_HTML, "Wrong token."));
    }
    if !cookie_safe(expected) {
        return html(
            StatusCode::BAD_REQUEST,
            fill(
                SIGNIN_HTML,
                "This admin token contains characters a cookie cannot hold; choose a token of letters, digits and punctuation without spaces, commas, semicolons, quotes or backslashes.",
            ),
        );
    }
    let Some(cookie) = session_cookie(&headers, expected, SESSION_SECS) else {
        return html(
            StatusCode::INTERNAL_SERVER_ERROR,
            fill(SIGNIN_HTML, "Cannot set the session cookie."),
        );
    };
    tracing::info!("dashboard sign-in");
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, cookie),
            (header::LOCATION, HeaderValue::from_static("/admin/ui")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
    )
        .into_response()
}

/// `POST /admin/ui/logout`: clear the cookie.
async fn sign_out(State(ctx): State<UiContext>, headers: HeaderMap) -> Response {
    if ctx.admin_token.is_none() {
        return off();
    }
    if let Err(r) = csrf_ok(&headers) {
        return r;
    }
    let mut r = StatusCode::NO_CONTENT.into_response();
    if let Some(c) = session_cookie(&headers, "", 0) {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    r
}

/// `GET /admin/ui/data`.
async fn data_handler(State(ctx): State<UiContext>, headers: HeaderMap) -> Response {
    let Some(token) = &ctx.admin_token else {
        return off();
    };
    if !authorized(&headers, token) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "error": "bad or missing admin token" })),
        )
            .into_response();
    }
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(data(&ctx).await),
    )
        .into_response()
}

/// Everything the dashboard shows, as one JSON document:
///
/// * `bans`: `[{ip, kind, reason, seconds_left, ms_left}]` (`null` times for a ban);
/// * `history`: `{names, step_s, len, series: {name: [count per second, oldest first]}, totals}`
///   over the last complete [`HISTORY_SECS`] seconds; series that are all zero are left out;
/// * `offenders`: `[{ip, denials, reason, last_seen_s}]`, the top [`TOP_OFFENDERS`];
/// * `table`: `{entries, capacity, evictions, table_full}` (each `null` when the backend has no table);
/// * `store`: `{kind, fallback_active (null: not applicable), errors, fallbacks, path}`.
pub async fn data(ctx: &UiContext) -> Value {
    let bans = ctx.engine.bans().await;
    let status = ctx.engine.status().await;
    let m = &ctx.metrics;

    let bans: Vec<Value> = bans
        .iter()
        .map(|b| {
            json!({
                "ip": b.ip.to_string(),
                "kind": b.kind.as_str(),
                "reason": b.reason.as_str(),
                "seconds_left": b.left.map(ceil_secs),
                "ms_left": b.left.map(|d| d.as_millis()),
            })
        })
        .collect();

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

    let offenders: Vec<Value> = m
        .top_offenders(TOP_OFFENDERS)
        .iter()
        .map(|o| {
            json!({
                "ip": o.ip.to_string(),
                "denials": o.denials,
                "reason": o.last_reason.as_str(),
                "last_seen_s": o.last_seen_secs_ago,
            })
        })
        .collect();

    let field = |k: &str| status.get(k).filter(|v| !v.is_null()).cloned();
    let num = |k: &str| field(k).unwrap_or(Value::Null);
    let fallback_active = field("fallback_active")
        .and_then(|v| v.as_bool())
        .map_or(Value::Null, Value::Bool);
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
            "entries": num("entries"),
            "capacity": num("capacity"),
            "evictions": num("evictions"),
            "table_full": num("table_full"),
        },
        "store": {
            "kind": ctx.kind,
            "backend": num("backend"),
            "path": num("store"),
            "fallback_active": fallback_active,
            "errors": field("store_errors").unwrap_or_else(|| json!(m.store_errors.load(std::sync::atomic::Ordering::Relaxed))),
            "fallbacks": m.fallbacks.load(std::sync::atomic::Ordering::Relaxed),
        },
        "totals": {
            "allowed": m.allowed(),
            "denied": portcullis_core::Reason::ALL.iter().map(|r| m.denied(*r)).sum::<u64>(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_parsing_and_csrf() {
        let mut h = HeaderMap::new();
        assert!(!cookie_ok(&h, "tok"));
        h.insert(
            "cookie",
            HeaderValue::from_static("a=b; portcullis_admin=tok"),
        );
        assert!(cookie_ok(&h, "tok"));
        assert!(!cookie_ok(&h, "tok2"));
        assert!(authorized(&h, "tok"));
        assert!(csrf_ok(&h).is_err(), "cookie alone cannot change state");
        h.insert("x-requested-with", HeaderValue::from_static("portcullis"));
        assert!(csrf_ok(&h).is_ok());
        let mut b = HeaderMap::new();
        b.insert("authorization", HeaderValue::from_static("Bearer tok"));
        assert!(authorized(&b, "tok"));
        assert!(!authorized(&b, "other"));
    }

    #[test]
    fn cookie_attributes_and_safe_tokens() {
        let h = HeaderMap::new();
        let c = session_cookie(&h, "tok", 60).unwrap();
        let c = c.to_str().unwrap();
        assert!(c.starts_with("portcullis_admin=tok;"));
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/admin", "Max-Age=60"] {
            assert!(c.contains(attr), "{c}");
        }
        assert!(!c.contains("Secure"));
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(session_cookie(&h, "tok", 60)
            .unwrap()
            .to_str()
            .unwrap()
            .ends_with("; Secure"));
        assert!(cookie_safe("s3cret-Token_with.punct!"));
        for bad in ["", "a b", "a;b", "a,b", "a\"b", "a\\b", "tök"] {
            assert!(!cookie_safe(bad), "{bad:?}");
        }
    }

    #[test]
    fn pages_are_embedded() {
        assert!(SIGNIN_HTML.contains("id=\"signin\""));
        assert!(!SIGNIN_HTML.contains("id=\"dashboard\""));
        assert!(DASHBOARD_HTML.contains("id=\"dashboard\""));
        assert!(!APP_JS.is_empty() && !APP_CSS.is_empty());
    }
}
