//! The operator dashboard at `/admin/ui`, and the admin authentication
//! helpers it shares with the admin API.
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
//! Authentication ([`AdminAuth`]) is decided per request: a valid
//! `Authorization: Bearer <token>` (scheme in any case) is enough for every
//! call; otherwise a live session cookie is, and then state-changing calls
//! also need `X-Requested-With: portcullis`, whatever other headers are
//! present. The cookie holds a random 128-bit session id, never the token;
//! sessions live server-side for 12 h, at most [`MAX_SESSIONS`] at once, and
//! sign-out ends them. Tokens and session ids are compared as keyed
//! SipHash-2-4 128-bit digests (random key per process) in constant time,
//! so the time taken says nothing about the token, its length included.

use std::collections::HashMap;
use std::hash::Hasher;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use portcullis::engine::Engine;
use portcullis::metrics::{series_names, Metrics, HISTORY_SECS, SERIES};

/// Name of the admin session cookie (`HttpOnly; SameSite=Strict`).
pub const COOKIE: &str = "portcullis_admin";

/// Sessions held at once; signing in beyond it ends the oldest.
pub const MAX_SESSIONS: usize = 1024;

/// A fixed-size keyed digest.
type Digest = [u8; 16];

/// Constant-time comparison of two digests.
fn same(a: &Digest, b: &Digest) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// How a request proved it may use the admin API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    /// A valid `Authorization: Bearer` token.
    Bearer,
    /// A live dashboard session cookie (CSRF guard applies).
    Session,
}

/// The admin token (as a digest only) and the dashboard sessions.
pub struct AdminAuth {
    key: (u64, u64),
    token: Digest,
    sessions: parking_lot::Mutex<HashMap<Digest, Instant>>,
    lifetime: Duration,
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAuth").finish_non_exhaustive()
    }
}

impl AdminAuth {
    /// For `token`, with a fresh random digest key.
    pub fn new(token: &str) -> Result<AdminAuth, getrandom::Error> {
        let mut k = [0u8; 16];
        getrandom::getrandom(&mut k)?;
        let (a, b) = k.split_at(8);
        let mut w = [0u8; 8];
        w.copy_from_slice(a);
        let k0 = u64::from_le_bytes(w);
        w.copy_from_slice(b);
        let k1 = u64::from_le_bytes(w);
        let mut auth = AdminAuth {
            key: (k0, k1),
            token: [0; 16],
            sessions: parking_lot::Mutex::new(HashMap::new()),
            lifetime: Duration::from_secs(SESSION_SECS),
        };
        auth.token = auth.digest(token.as_bytes());
        Ok(auth)
    }

    fn digest(&self, bytes: &[u8]) -> Digest {
        use siphasher::sip128::Hasher128;
        let mut h = siphasher::sip128::SipHasher24::new_with_keys(self.key.0, self.key.1);
        h.write(bytes);
        h.finish128().as_bytes()
    }

    /// Whether `given` is the admin token (constant time in the token).
    pub fn token_ok(&self, given: &str) -> bool {
        same(&self.digest(given.as_bytes()), &self.token)
    }

    /// Whether `Authorization` carries the token with the `Bearer` scheme
    /// (any case).
    pub fn bearer_ok(&self, headers: &HeaderMap) -> bool {
        headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.trim().split_once(' '))
            .any(|(scheme, t)| scheme.eq_ignore_ascii_case("bearer") && self.token_ok(t.trim()))
    }

    /// Session ids (as digests) in the request's `portcullis_admin` cookies.
    fn cookie_digests<'a>(&'a self, headers: &'a HeaderMap) -> impl Iterator<Item = Digest> + 'a {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .filter(|(k, _)| *k == COOKIE)
            .map(|(_, v)| self.digest(v.as_bytes()))
    }

    /// Whether the request carries the cookie of a live session.
    pub fn session_ok(&self, headers: &HeaderMap) -> bool {
        let now = Instant::now();
        let sessions = self.sessions.lock();
        let mut ok = false;
        for d in self.cookie_digests(headers) {
            // Every candidate is looked up: no early exit.
            ok |= sessions
                .iter()
                .fold(false, |acc, (k, exp)| acc | (same(k, &d) && *exp > now));
        }
        ok
    }

    /// A new session: its id for the cookie (32 hex digits, 128 random bits).
    pub fn start_session(&self) -> Result<String, getrandom::Error> {
        let mut id = [0u8; 16];
        getrandom::getrandom(&mut id)?;
        let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let now = Instant::now();
        let mut sessions = self.sessions.lock();
        sessions.retain(|_, exp| *exp > now);
        while sessions.len() >= MAX_SESSIONS {
            let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, exp)| **exp)
                .map(|(k, _)| *k)
            else {
                break;
            };
            sessions.remove(&oldest);
        }
        sessions.insert(self.digest(id.as_bytes()), now + self.lifetime);
        Ok(id)
    }

    /// End the sessions whose cookies the request carries.
    pub fn end_sessions(&self, headers: &HeaderMap) -> usize {
        let ds: Vec<Digest> = self.cookie_digests(headers).collect();
        let mut sessions = self.sessions.lock();
        ds.iter().filter(|d| sessions.remove(*d).is_some()).count()
    }

    /// Sessions held now (expired ones included until the next sign-in).
    pub fn sessions(&self) -> usize {
        self.sessions.lock().len()
    }

    /// Who the request is: bearer first, else a session, else nobody.
    pub fn authenticate(&self, headers: &HeaderMap) -> Option<Auth> {
        if self.bearer_ok(headers) {
            Some(Auth::Bearer)
        } else if self.session_ok(headers) {
            Some(Auth::Session)
        } else {
            None
        }
    }
}

/// The admin API's gate: 404 when it is off, 401 without a valid token or
/// session, and for `changes_state` calls on a session, 403 without
/// `X-Requested-With: portcullis` ([`csrf_ok`]).
#[allow(clippy::result_large_err)]
pub fn authorize(
    admin: Option<&AdminAuth>,
    headers: &HeaderMap,
    changes_state: bool,
) -> Result<Auth, Response> {
    let Some(admin) = admin else {
        return Err(off());
    };
    match admin.authenticate(headers) {
        None => Err((
            StatusCode::UNAUTHORIZED,
            Json(json!({ "error": "bad or missing admin token" })),
        )
            .into_response()),
        Some(Auth::Session) if changes_state => csrf_ok(headers).map(|()| Auth::Session),
        Some(a) => Ok(a),
    }
}

/// State-changing admin calls authenticated by the session cookie must also
/// carry `X-Requested-With: portcullis`: a cross-site page cannot add that
/// header without a CORS preflight, which this server never grants. Other
/// headers (an `Authorization` that is not the right bearer token, say)
/// change nothing.
#[allow(clippy::result_large_err)]
pub fn csrf_ok(headers: &HeaderMap) -> Result<(), Response> {
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
    /// The admin credentials and sessions (none: dashboard off).
    pub admin: Option<Arc<AdminAuth>>,
    /// The counters of the main guard.
    pub metrics: Arc<Metrics>,
    /// Store kind label.
    pub kind: &'static str,
    /// The service policy's shadow switch: while on, its bans are listed
    /// as shadow (recorded, not enforced).
    pub shadow: portcullis::layer::Shadow,
    /// Path prefix the routes are served under (proxy mode's
    /// `[upstream] admin_prefix`; empty at the root).
    pub base: String,
    /// The `[[policies]]` (their tables' blocks are listed too).
    pub policies: super::policies::Registry,
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

fn fill(base: &str, template: &str, message: &str) -> String {
    template
        .replace("{{base}}", base)
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
async fn page(State(ctx): State<UiContext>, headers: HeaderMap) -> Response {
    let Some(admin) = &ctx.admin else {
        return off();
    };
    if admin.session_ok(&headers) {
        html(StatusCode::OK, fill(&ctx.base, DASHBOARD_HTML, ""))
    } else {
        html(StatusCode::OK, fill(&ctx.base, SIGNIN_HTML, ""))
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
    let Some(admin) = &ctx.admin else {
        return off();
    };
    let given = form.map(|Form(f)| f.token).unwrap_or_default();
    if !admin.token_ok(&given) {
        tracing::warn!("dashboard sign-in with a wrong token");
        return html(
            StatusCode::UNAUTHORIZED,
            fill(&ctx.base, SIGNIN_HTML, "Wrong token."),
        );
    }
    let id = match admin.start_session() {
        Ok(id) => id,
        Err(e) => {
            tracing::error!(error = %e, "no randomness for a session id");
            return html(
                StatusCode::INTERNAL_SERVER_ERROR,
                fill(&ctx.base, SIGNIN_HTML, "Cannot start a session."),
            );
        }
    };
    let Some(cookie) = session_cookie(&ctx.base, &headers, &id, SESSION_SECS) else {
        return html(
            StatusCode::INTERNAL_SERVER_ERROR,
            fill(&ctx.base, SIGNIN_HTML, "Cannot set the session cookie."),
        );
    };
    tracing::info!("dashboard sign-in");
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, cookie),
            (
                header::LOCATION,
                HeaderValue::from_str(&format!("{}/admin/ui", ctx.base))
                    .unwrap_or(HeaderValue::from_static("/admin/ui")),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
    )
        .into_response()
}

/// `POST /admin/ui/logout`: end the session, clear the cookie.
async fn sign_out(State(ctx): State<UiContext>, headers: HeaderMap) -> Response {
    let Some(admin) = &ctx.admin else {
        return off();
    };
    if let Err(r) = csrf_ok(&headers) {
        return r;
    }
    let ended = admin.end_sessions(&headers);
    tracing::info!(ended, "dashboard sign-out");
    let mut r = StatusCode::NO_CONTENT.into_response();
    if let Some(c) = session_cookie(&ctx.base, &headers, "", 0) {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    r
}

/// `GET /admin/ui/data`.
async fn data_handler(State(ctx): State<UiContext>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(ctx.admin.as_deref(), &headers, false) {
        return r;
    }
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(data(&ctx).await),
    )
        .into_response()
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
pub async fn data(ctx: &UiContext) -> Value {
    let bans = ctx.engine.bans().await;
    let status = ctx.engine.status().await;
    let m = &ctx.metrics;

    // A row of `/admin/bans` plus its countdown in ms, whether its policy
    // shadows, and (for a `[[policies]]` table) the policy's name.
    let row = |b: &portcullis::limiter::BanInfo, shadow: bool, policy: Option<&str>| {
        let mut r = super::http::ban_row(b);
        if let Some(o) = r.as_object_mut() {
            o.insert("ms_left".into(), json!(b.left.map(|d| d.as_millis())));
            o.insert("shadow".into(), json!(shadow));
            if let Some(p) = policy {
                o.insert("policy".into(), json!(p));
            }
        }
        r
    };
    let shadow = ctx.shadow.is_on();
    let mut bans: Vec<Value> = bans.iter().map(|b| row(b, shadow, None)).collect();
    for h in ctx.policies.handles() {
        let shadow = h.shadow.is_on();
        let more = h.engine.bans().await;
        bans.extend(more.iter().map(|b| row(b, shadow, Some(&h.name))));
    }
    let manual = ctx.engine.manual_bans().await;
    bans.extend(super::manual_api::rows(
        &manual,
        portcullis::clock::unix_ms(),
    ));

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
            "nodes": status.fleet.as_ref().map_or(serde_json::Value::Array(Vec::new()), |f| super::http::nodes_json(&f.nodes)),
            "errors": status.store_errors,
            "fallbacks": m.fallbacks(),
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
