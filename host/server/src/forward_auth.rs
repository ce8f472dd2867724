//! Forward-auth mode: a decision endpoint for reverse proxies (nginx
//! `auth_request`, Caddy `forward_auth`, Traefik `ForwardAuth`) and the
//! login-result API for applications that check passwords themselves.
//!
//! `ANY <forward_auth.path>` (default `/check`; `forward_auth.enabled =
//! false` switches it off) answers `204` when the
//! original request may pass, `429` (rate limited, blocked, locked; with
//! `Retry-After`), `403` (banned, denylisted) or `503` (fleet store down,
//! fail-closed) otherwise, with the RateLimit fields either way and the
//! status repeated in `X-Portcullis-Status` (nginx turns any auth status but
//! 2xx/401/403 into 500; its `auth_request_set` reads that header back, see
//! `docs/forward-auth/nginx.conf`). The client is the caller, or, when the caller is
//! a trusted proxy, the client the configured forwarding header names (the
//! library's walk, [`portcullis::client_ip`]). The original method and URI
//! come from `X-Original-Method`/`X-Original-URI` (nginx) or
//! `X-Forwarded-Method`/`X-Forwarded-Uri` (Traefik, Caddy), again only from
//! a trusted proxy; they select the policy ([`Policies::select`]).
//!
//! `POST /v1/login-result` (routed only when `forward_auth.report_token` is
//! set) with `Authorization: Bearer <report_token>` and
//! `{"ip": "...", "username": "...", "ok": true|false}` runs the core's login
//! rules through the [`Engine`]: the attempt is reserved and settled in one
//! go (`begin_login`, then `finish_login`). The answer says whether the
//! attempt was recorded, whether the pair or the address is now locked (a
//! refused reservation means it already was: the app must refuse the login
//! even with the right password), and the penalty delay the app should
//! apply before it answers a failure. Wrong tokens count as failed logins of
//! the caller on a table of their own, so token guessing locks the guesser
//! out by the same rules; the app's legitimate reports are never limited.
//!
//! Both routes sit in front of the service's rate-limit layer: a decision
//! request is not itself counted against the client it asks about, and the
//! application reporting logins is not limited as a client.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::{Json, Router};
use portcullis::client_ip::{client_ip, TrustedProxies};
use portcullis::engine::Engine;
use portcullis::layer::{ceil_secs, deny_response, header_values};
use portcullis::metrics::Metrics;
use portcullis::{Guard, Limiter, LimiterOptions};
use portcullis_core::Decision;
use serde::Deserialize;
use serde_json::json;

use super::config::ServerConfig;
use super::ui::AdminAuth;

/// The login-result API's path.
pub const LOGIN_RESULT_PATH: &str = "/v1/login-result";

/// The default decision endpoint's path.
pub const DEFAULT_CHECK_PATH: &str = "/check";

/// The header carrying the decision's real status for nginx.
pub const STATUS_HEADER: &str = "x-portcullis-status";

/// The username under which wrong report tokens are counted (per caller).
const TOKEN_GUESS_USER: &str = "\u{0}report-token";

/// A named policy the decision endpoint can apply.
#[derive(Clone)]
pub struct RoutePolicy {
    /// Name in the RateLimit fields.
    pub name: String,
    /// The backend enforcing it.
    pub engine: Arc<dyn Engine>,
}

/// The policies a decision can pick from by the original request: the
/// service's default and the `[[policies]]`, chosen by the layer's rule
/// ([`portcullis::layer::select`]).
#[derive(Clone)]
pub struct Policies {
    all: Vec<portcullis::layer::Policy>,
    default: RoutePolicy,
}

impl Policies {
    /// The service's `default` policy and the per-route ones (`[[policies]]`).
    pub fn new(default: RoutePolicy, all: Vec<portcullis::layer::Policy>) -> Self {
        Policies { all, default }
    }

    /// THE one place the decision endpoint chooses a policy from the
    /// original method and path (`None`: unknown, the caller is not a
    /// trusted proxy or did not say: the service's default policy).
    pub fn select(&self, method: Option<&Method>, path: Option<&str>) -> RoutePolicy {
        let (Some(path), any) = (path, Method::GET) else {
            return self.default.clone();
        };
        let method = method.unwrap_or(&any);
        match portcullis::layer::select(&self.all, method, path) {
            Some(p) => RoutePolicy {
                name: p.name.clone(),
                engine: p.engine.clone(),
            },
            None => self.default.clone(),
        }
    }
}

#[derive(Clone)]
struct ForwardAuth {
    policies: Policies,
    proxies: TrustedProxies,
    /// The service engine (login results).
    engine: Arc<dyn Engine>,
    /// The report token's check (`None`: API off).
    report: Option<Arc<AdminAuth>>,
    /// Wrong report tokens, per caller, under the login rules.
    guesses: Option<Arc<dyn Engine>>,
    /// A caller outside `trusted_proxies` was warned about.
    warned: Arc<AtomicBool>,
}

/// The decision endpoint and the login-result API, with `fallback` (the
/// rest of the service, behind its rate-limit layer) for every other path.
pub fn routes(
    cfg: &ServerConfig,
    engine: Arc<dyn Engine>,
    policies: Policies,
    fallback: Router,
) -> Router {
    let report = cfg.forward_auth.report_token.as_deref().and_then(|t| {
        AdminAuth::new(t)
            .map_err(|e| tracing::error!(error = %e, "no randomness for the report token; login-result API off"))
            .ok()
            .map(Arc::new)
    });
    let guesses = report.as_ref().and_then(|_| {
        let opts = LimiterOptions {
            max_entries: cfg.admin_max_entries,
            shards: super::http::ADMIN_SHARDS,
            seed: None,
        };
        match Limiter::new(cfg.rules.clone(), opts) {
            Ok(l) => {
                let g = Guard::new(Arc::new(l), None).with_metrics(Metrics::unexported());
                Some(Arc::new(g) as Arc<dyn Engine>)
            }
            Err(e) => {
                tracing::error!(error = %e, "report-token guessing table unavailable; login-result API off");
                None
            }
        }
    });
    let fa = ForwardAuth {
        policies,
        proxies: TrustedProxies::new(cfg.trusted_proxies.clone())
            .header(cfg.client_ip_header.clone()),
        engine,
        report: guesses.as_ref().and(report),
        guesses,
        warned: Arc::new(AtomicBool::new(false)),
    };
    // Only what is switched on is routed: anything else (an application's
    // own `/check` behind the proxy mode, say) falls through.
    let mut r = Router::new();
    if cfg.forward_auth.enabled {
        r = r.route(&cfg.forward_auth.path, any(check));
    }
    if fa.report.is_some() {
        r = r.route(LOGIN_RESULT_PATH, post(login_result));
    }
    r.with_state(fa).fallback_service(fallback)
}

/// The first of `names` present as a visible-ASCII string.
fn first<'a>(headers: &'a HeaderMap, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|n| headers.get(*n))
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// The original method and path a trusted proxy names.
fn original(headers: &HeaderMap) -> (Option<Method>, Option<String>) {
    let method = first(headers, &["x-original-method", "x-forwarded-method"])
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok());
    let path = first(headers, &["x-original-uri", "x-forwarded-uri"])
        .and_then(|u| u.parse::<Uri>().ok())
        .map(|u| u.path().to_string());
    (method, path)
}

async fn check(
    State(fa): State<ForwardAuth>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let ip = client_ip(peer.ip(), &headers, &fa.proxies);
    let (method, path) = if fa.proxies.contains(peer.ip()) {
        original(&headers)
    } else {
        if !fa.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                %peer,
                "forward-auth call from outside server.trusted_proxies: the caller is judged as itself, its forwarding headers ignored (add the proxy's address to trusted_proxies)"
            );
        }
        (None, None)
    };
    let policy = fa.policies.select(method.as_ref(), path.as_deref());
    let d = policy.engine.check_request(ip).await;
    if d.is_allowed() {
        let (p, s) = header_values(&policy.name, policy.engine.as_ref(), &d);
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        for (k, v) in [("ratelimit-policy", p), ("ratelimit", s)] {
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.insert(k, v);
            }
        }
        h.insert(STATUS_HEADER, HeaderValue::from_static("204"));
        return r;
    }
    tracing::info!(%ip, policy = %policy.name, method = ?method, path = ?path, decision = ?d, "forward-auth denied");
    let mut r: Response<Body> = deny_response(&policy.name, policy.engine.as_ref(), &d);
    let status = r.status();
    if let Ok(v) = HeaderValue::from_str(status.as_str()) {
        r.headers_mut().insert(STATUS_HEADER, v);
    }
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    let text = match &d {
        Decision::Deny { reason, .. } if reason.is_forbidden() => format!("{}\n", reason.as_str()),
        Decision::Deny {
            reason,
            retry_after,
        } => format!(
            "{}; retry after {} s\n",
            reason.as_str(),
            ceil_secs(*retry_after)
        ),
        Decision::Allow { .. } => String::new(),
    };
    *r.body_mut() = Body::from(text);
    r
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginResult {
    ip: String,
    username: String,
    ok: bool,
}

fn error(status: StatusCode, msg: &str) -> Response {
    (status, Json(json!({ "error": msg }))).into_response()
}

/// Milliseconds, rounded up.
fn ceil_ms(d: embassy_time::Duration) -> u64 {
    d.as_micros().div_ceil(1_000)
}

async fn login_result(
    State(fa): State<ForwardAuth>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (Some(auth), Some(guesses)) = (fa.report.as_deref(), fa.guesses.as_ref()) else {
        // Not routed then; kept for safety.
        return error(StatusCode::NOT_FOUND, "login-result API is off");
    };
    let caller = client_ip(peer.ip(), &headers, &fa.proxies);
    // A caller locked out for guessing is refused before its token is
    // looked at, so further guesses learn nothing.
    let d = guesses.check_login(TOKEN_GUESS_USER, caller).await;
    if !d.is_allowed() {
        return deny_response("report-token", guesses.as_ref(), &d);
    }
    if !auth.bearer_ok(&headers) {
        let p = guesses.login_failed(TOKEN_GUESS_USER, caller).await;
        tracing::warn!(%caller, locked = p.locked, "login-result: bad report token");
        return error(StatusCode::UNAUTHORIZED, "bad or missing report token");
    }
    let Ok(LoginResult { ip, username, ok }) = serde_json::from_slice::<LoginResult>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected JSON {\"ip\": \"...\", \"username\": \"...\", \"ok\": true|false}",
        );
    };
    let Ok(ip) = ip.trim().parse::<IpAddr>() else {
        return error(StatusCode::BAD_REQUEST, "ip: not an IP address");
    };
    if username.trim().is_empty() {
        return error(StatusCode::BAD_REQUEST, "username is empty");
    }
    let attempt = match fa.engine.begin_login(&username, ip).await {
        Ok(a) => a,
        Err(d) => return refused(&d),
    };
    let locked = fa
        .engine
        .finish_login(&username, ip, attempt.ticket, ok)
        .await;
    let p = attempt.penalty;
    // The app applies the delay; the slot is not held for it here.
    let delay_ms = if ok { 0 } else { ceil_ms(p.delay) };
    tracing::info!(%ip, ok, locked, delay_ms, throttled = p.throttled, "login result reported");
    Json(json!({
        "recorded": true,
        "locked": locked,
        "delay_ms": delay_ms,
        "throttled": p.throttled && !ok,
        "refused": p.refused && !ok,
        "reason": null,
        "retry_after": null,
    }))
    .into_response()
}

/// The answer when the reservation is refused: the pair or the address is
/// locked (or listed, or the store is down); nothing was recorded.
fn refused(d: &Decision) -> Response {
    let Decision::Deny {
        reason,
        retry_after,
    } = d
    else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "not a denial");
    };
    let retry = (*retry_after != embassy_time::Duration::MAX).then(|| ceil_secs(*retry_after));
    Json(json!({
        "recorded": false,
        "locked": true,
        "delay_ms": 0,
        "throttled": false,
        "refused": false,
        "reason": reason.as_str(),
        "retry_after": retry,
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn original_request_from_nginx_traefik_and_caddy_headers() {
        // nginx: X-Original-*, the query dropped.
        let (m, p) = original(&headers(&[
            ("x-original-method", "POST"),
            ("x-original-uri", "/app/login?next=%2F"),
        ]));
        assert_eq!((m, p.as_deref()), (Some(Method::POST), Some("/app/login")));
        // Traefik and Caddy: X-Forwarded-Method / -Uri.
        let (m, p) = original(&headers(&[
            ("x-forwarded-method", "DELETE"),
            ("x-forwarded-uri", "/api/items/7"),
        ]));
        assert_eq!(
            (m, p.as_deref()),
            (Some(Method::DELETE), Some("/api/items/7"))
        );
        // An absolute URI gives its path; the nginx pair wins over the other.
        let (m, p) = original(&headers(&[
            ("x-forwarded-uri", "/other"),
            ("x-original-uri", "https://example.com/x/y?z"),
            ("x-original-method", "GET"),
            ("x-forwarded-method", "PUT"),
        ]));
        assert_eq!((m, p.as_deref()), (Some(Method::GET), Some("/x/y")));
        // Nothing, or nothing usable: unknown.
        assert_eq!(original(&HeaderMap::new()), (None, None));
        let (m, p) = original(&headers(&[
            ("x-original-method", "GE T"),
            ("x-original-uri", "not a uri at all"),
        ]));
        assert_eq!((m, p), (None, None));
    }

    #[test]
    fn milliseconds_round_up() {
        assert_eq!(ceil_ms(embassy_time::Duration::from_micros(1)), 1);
        assert_eq!(ceil_ms(embassy_time::Duration::from_millis(1500)), 1500);
        assert_eq!(
            ceil_ms(embassy_time::Duration::MAX),
            u64::MAX.div_ceil(1_000)
        );
    }
}
