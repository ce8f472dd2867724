//! Forward-auth mode: a decision endpoint for reverse proxies (nginx
//! `auth_request`, Caddy `forward_auth`, Traefik `ForwardAuth`) and the
//! login-result API for applications that check passwords themselves.
//!
//! `ANY <forward_auth.path>` (default `/check`; `forward_auth.enabled =
//! false` switches it off) judges the *original* request through the same
//! pipeline as any other (`docs/pipeline.md`) and answers `204` when it may
//! pass, `429` (rate limited, blocked, locked; with `Retry-After`), `403`
//! (banned, denylisted) or `503` (fleet store down, fail-closed)
//! otherwise, with the RateLimit fields either way and the status repeated
//! in `X-Portcullis-Status` (nginx turns any auth status but 2xx/401/403
//! into 500; its `auth_request_set` reads that header back, see
//! `docs/forward-auth/nginx.conf`). The client is the caller, or, when the
//! caller is a trusted proxy, the client the configured forwarding header
//! names. The original method and URI are read from the one header pair of
//! the proxy `forward_auth.proxy` names (nginx: `X-Original-Method` /
//! `X-Original-URI`; Caddy and Traefik: `X-Forwarded-Method` /
//! `X-Forwarded-Uri`; or an explicit pair), only from a trusted proxy, and
//! parsed leniently ([`crate::target`]).
//!
//! `POST /v1/login-result` (answered only when `forward_auth.report_token`
//! is set) with `Authorization: Bearer <report_token>` and
//! `{"ip": "...", "username": "...", "ok": true|false}` runs the core's login
//! rules through the [`Engine`]: the attempt is reserved and settled in one
//! go (`begin_login`, then `finish_login`). The answer says whether the
//! attempt was recorded, whether the pair or the address is now locked (a
//! refused reservation means it already was: the app must refuse the login
//! even with the right password), and the penalty delay the app should
//! apply before it answers a failure. Wrong tokens count as failed logins of
//! the caller on a table of their own, so token guessing locks the guesser
//! out by the same rules; the app's legitimate reports are never limited.

use std::net::IpAddr;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use portcullis::Decision;
use portcullis::Engine;
use portcullis::{bare_deny_response, ceil_secs};
use serde::Deserialize;
use serde_json::json;

use crate::admin_auth::AdminAuth;
use crate::config::FrontProxy;
use crate::target::{method_from, Target};

/// The login-result API's path.
pub const LOGIN_RESULT_PATH: &str = "/v1/login-result";

/// The header carrying the decision's real status for nginx.
pub const STATUS_HEADER: &str = "x-portcullis-status";

/// [`STATUS_HEADER`]'s name, parsed once.
const STATUS_NAME: HeaderName = HeaderName::from_static(STATUS_HEADER);

/// The username under which wrong report tokens are counted (per caller).
const TOKEN_GUESS_USER: &str = "\u{0}report-token";

/// The original request `front` names in `headers`: its method (`GET`
/// when only the URI is given) and canonical target; `None` when the URI
/// header is missing (the pipeline then applies the strictest policy).
pub fn original(headers: &HeaderMap, front: &FrontProxy) -> Option<Target> {
    let (m, u) = front.headers();
    let uri = headers.get(&u)?;
    let method = headers
        .get(&m)
        .and_then(|v| method_from(v.as_bytes()))
        .unwrap_or(http::Method::GET);
    Some(Target::new(&method, uri.as_bytes()))
}

/// The decision endpoint's answer: `204` with the RateLimit fields, or the
/// refusal with its status repeated in [`STATUS_HEADER`] and a one-line
/// text body.
pub fn answer(name: &str, engine: &dyn Engine, d: &Decision, refuse: bool) -> Response {
    if !refuse {
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        portcullis::set_ratelimit_fields(h, name, engine, d);
        h.insert(STATUS_NAME, HeaderValue::from_static("204"));
        return r;
    }
    let mut r: Response<Body> = bare_deny_response(name, engine, d);
    let status = r.status();
    if let Ok(v) = HeaderValue::from_str(status.as_str()) {
        r.headers_mut().insert(STATUS_NAME, v);
    }
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    let text = match d {
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
fn ceil_ms(d: portcullis::Duration) -> u64 {
    d.as_micros().div_ceil(1_000)
}

/// `POST /v1/login-result` from `caller` (see the module doc); `engine`
/// is the service's backend, `guesses` the table of wrong report tokens.
pub async fn login_result(
    auth: &AdminAuth,
    guesses: &dyn Engine,
    engine: &dyn Engine,
    caller: IpAddr,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    // A caller locked out for guessing is refused before its token is
    // looked at, so further guesses learn nothing.
    let d = guesses.check_login(TOKEN_GUESS_USER, caller).await;
    if !d.is_allowed() {
        return bare_deny_response("report-token", guesses, &d);
    }
    if !auth.bearer_ok(headers) {
        let p = guesses.login_failed(TOKEN_GUESS_USER, caller).await;
        tracing::warn!(%caller, locked = p.locked, "login-result: bad report token");
        return error(StatusCode::UNAUTHORIZED, "bad or missing report token");
    }
    let Ok(LoginResult { ip, username, ok }) = serde_json::from_slice::<LoginResult>(body) else {
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
    let attempt = match engine.begin_login(&username, ip).await {
        Ok(a) => a,
        Err(d) => return refused(&d),
    };
    let locked = engine.finish_login(&username, ip, attempt.id, ok).await;
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
    let retry = (*retry_after != portcullis::Duration::MAX).then(|| ceil_secs(*retry_after));
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
    use http::Method;

    fn headers(pairs: &[(&'static str, &'static [u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    fn of(t: Option<Target>) -> Option<(Method, String)> {
        t.map(|t| (t.method.clone(), t.into_key()))
    }

    #[test]
    fn only_the_named_proxy_headers_are_read() {
        let both = headers(&[
            ("x-original-method", b"GET"),
            ("x-original-uri", b"/"),
            ("x-forwarded-method", b"post"),
            ("x-forwarded-uri", b"/Login?next=%2F"),
        ]);
        assert_eq!(
            of(original(&both, &FrontProxy::Nginx)),
            Some((Method::GET, "/".into()))
        );
        for front in [FrontProxy::Caddy, FrontProxy::Traefik] {
            assert_eq!(
                of(original(&both, &front)),
                Some((Method::POST, "/login".into())),
                "a client's X-Original-* is ignored behind {front:?}"
            );
        }
        let pair = FrontProxy::Headers {
            method: http::HeaderName::from_static("x-m"),
            uri: http::HeaderName::from_static("x-u"),
        };
        let h = headers(&[("x-m", b"DELETE"), ("x-u", b"/api/items/7")]);
        assert_eq!(
            of(original(&h, &pair)),
            Some((Method::DELETE, "/api/items/7".into()))
        );
        assert_eq!(original(&HeaderMap::new(), &FrontProxy::Nginx), None);
    }

    #[test]
    fn raw_uris_from_nginx_are_parsed_leniently() {
        let h = headers(&[
            ("x-original-method", b"POST"),
            ("x-original-uri", b"//LOGIN/?q=<\"\xff"),
        ]);
        assert_eq!(
            of(original(&h, &FrontProxy::Nginx)),
            Some((Method::POST, "/login".into()))
        );
        let h = headers(&[("x-original-uri", b"https://example.com/x/y?z")]);
        assert_eq!(
            of(original(&h, &FrontProxy::Nginx)),
            Some((Method::GET, "/x/y".into()))
        );
    }

    #[test]
    fn milliseconds_round_up() {
        assert_eq!(ceil_ms(portcullis::Duration::from_micros(1)), 1);
        assert_eq!(ceil_ms(portcullis::Duration::from_millis(1500)), 1500);
        assert_eq!(ceil_ms(portcullis::Duration::MAX), u64::MAX.div_ceil(1_000));
    }
}
