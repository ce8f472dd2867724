//! Proxy mode: `[upstream] url = "http://127.0.0.1:3000"` makes
//! `portcullis serve` forward every request the rules allow to the
//! upstream and stream its answer back.
//!
//! - Bodies are streamed both ways; only `[[login_routes]]` buffer the
//!   request body (up to `max_body`, `413` beyond) to find the username.
//! - Hop-by-hop headers (`Connection` and the ones it names, `Keep-Alive`,
//!   `Proxy-*`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`) are dropped
//!   both ways. `X-Forwarded-For` is set to the client address portcullis
//!   decided on (the peer, or the one a trusted proxy named);
//!   `X-Forwarded-Proto` and `-Host` are passed on from a trusted proxy and
//!   otherwise set to `http` and the request's `Host`. `Host` is kept.
//! - `Upgrade` requests (WebSocket) are refused with `501` and a body
//!   saying so: the proxy does not tunnel them.
//! - Upstream unreachable: `502`; no response head within
//!   `response_timeout`: `504`. Both have a short text body and are counted
//!   in `portcullis_upstream_errors_total{status}`.
//! - A login route runs the same flow as the demo `POST /login`
//!   (`http::guarded_login`): the attempt is reserved before the
//!   request is forwarded (a locked pair or ip gets `429`/`403` and the
//!   upstream never sees it), settled from the upstream's status, and a
//!   failure's penalty delay is served before its response goes out.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use metrics::{counter, describe_counter};
use portcullis::client_ip::TrustedProxies;
use portcullis::engine::Engine;
use serde::Deserialize;

use crate::config::{raw, BadConfig};

/// `[upstream]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table with url")]
pub struct RawUpstream {
    url: String,
    #[serde(default)]
    connect_timeout: Option<raw::Dur>,
    #[serde(default)]
    response_timeout: Option<raw::Dur>,
    #[serde(default)]
    admin_prefix: Option<String>,
}

/// One `[[login_routes]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table with path")]
pub struct RawLoginRoute {
    #[serde(default)]
    method: Option<String>,
    path: String,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    failure_statuses: Option<Vec<u16>>,
    #[serde(default)]
    success_statuses: Option<Vec<u16>>,
    #[serde(default)]
    max_body: Option<raw::Uint>,
}

/// The checked `[upstream]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    /// `http://host:port` (scheme and authority only).
    pub url: Uri,
    /// Connecting gives up after this \[5s\] (`502`).
    pub connect_timeout: StdDuration,
    /// The response head must arrive within this \[30s\] (`504`).
    pub response_timeout: StdDuration,
    /// Where `/admin`, `/metrics` and the dashboard are served in proxy
    /// mode \[/.portcullis\]; empty: at the root.
    pub admin_prefix: String,
}

/// Default `[upstream] admin_prefix`.
pub const DEFAULT_ADMIN_PREFIX: &str = "/.portcullis";

/// Default `[[login_routes]] max_body`: 64 KiB.
pub const DEFAULT_MAX_BODY: usize = 64 * 1024;

/// A checked `[[login_routes]]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginRoute {
    /// Method \[POST\].
    pub method: Method,
    /// Exact path (the query is not compared).
    pub path: String,
    /// Form field or top-level JSON key, or (starting with `/`) a JSON
    /// pointer \[username\].
    pub username: String,
    /// Upstream statuses meaning a wrong password \[401, 403\].
    pub failure: Vec<u16>,
    /// Upstream statuses meaning success (empty: any 2xx or 3xx).
    pub success: Vec<u16>,
    /// Largest body buffered \[65536\]; more gets `413`.
    pub max_body: usize,
}

impl LoginRoute {
    /// `Some(true)` success, `Some(false)` failure, `None` neither.
    fn classify(&self, status: StatusCode) -> Option<bool> {
        let s = status.as_u16();
        if self.failure.contains(&s) {
            Some(false)
        } else if (self.success.is_empty() && (200..400).contains(&s)) || self.success.contains(&s)
        {
            Some(true)
        } else {
            None
        }
    }
}

fn bad(key: String, reason: impl Into<String>) -> BadConfig {
    BadConfig {
        key,
        reason: reason.into(),
    }
}

/// Check `[upstream]` and `[[login_routes]]`.
pub(crate) fn check(
    up: Option<RawUpstream>,
    routes: Vec<RawLoginRoute>,
) -> Result<(Option<Upstream>, Vec<LoginRoute>), BadConfig> {
    let upstream = match up {
        None => None,
        Some(u) => {
            let url: Uri = u
                .url
                .parse()
                .map_err(|e| bad("upstream.url".into(), format!("{:?}: {e}", u.url)))?;
            if url.scheme_str() != Some("http") || url.authority().is_none() {
                return Err(bad(
                    "upstream.url".into(),
                    format!("{:?}: expected http://host:port", u.url),
                ));
            }
            if !matches!(url.path(), "" | "/") || url.query().is_some() {
                return Err(bad(
                    "upstream.url".into(),
                    format!("{:?}: no path or query (requests keep theirs)", u.url),
                ));
            }
            let dur = |k: &str, v: Option<raw::Dur>, d: u64| match v {
                Some(d) if d.std().is_zero() => {
                    Err(bad(format!("upstream.{k}"), "must be greater than zero"))
                }
                Some(d) => Ok(d.std()),
                None => Ok(StdDuration::from_secs(d)),
            };
            let prefix = u
                .admin_prefix
                .unwrap_or_else(|| DEFAULT_ADMIN_PREFIX.into());
            let prefix = prefix.trim_end_matches('/').to_string();
            if !prefix.is_empty()
                && (!prefix.starts_with('/')
                    || !prefix
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"/_-.~".contains(&b)))
            {
                return Err(bad(
                    "upstream.admin_prefix".into(),
                    "expected a path like \"/.portcullis\" (letters, digits, / _ - . ~) or \"\"",
                ));
            }
            Some(Upstream {
                url,
                connect_timeout: dur("connect_timeout", u.connect_timeout, 5)?,
                response_timeout: dur("response_timeout", u.response_timeout, 30)?,
                admin_prefix: prefix,
            })
        }
    };
    if upstream.is_none() && !routes.is_empty() {
        return Err(bad(
            "login_routes".into(),
            "needs [upstream] (login routes are forwarded to it)",
        ));
    }
    let mut out: Vec<LoginRoute> = Vec::new();
    for (i, r) in routes.into_iter().enumerate() {
        let at = |k: &str| format!("login_routes[{i}].{k}");
        let method = match r.method {
            None => Method::POST,
            Some(m) => Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes())
                .map_err(|_| bad(at("method"), format!("{m:?} is not an HTTP method")))?,
        };
        if !r.path.starts_with('/') || r.path.contains('?') {
            return Err(bad(
                at("path"),
                "expected a path starting with / (no query)",
            ));
        }
        if out.iter().any(|o| o.method == method && o.path == r.path) {
            return Err(bad(
                at("path"),
                format!("{method} {} is listed twice", r.path),
            ));
        }
        let username = r.username.unwrap_or_else(|| "username".into());
        if username.is_empty() {
            return Err(bad(
                at("username"),
                "expected a field name or a JSON pointer",
            ));
        }
        let statuses = |k: &str, v: Vec<u16>| {
            v.iter().enumerate().try_for_each(|(j, s)| {
                if (100..600).contains(s) {
                    Ok(())
                } else {
                    Err(bad(
                        format!("login_routes[{i}].{k}[{j}]"),
                        format!("{s} is not an HTTP status"),
                    ))
                }
            })?;
            Ok::<_, BadConfig>(v)
        };
        let failure = statuses(
            "failure_statuses",
            r.failure_statuses.unwrap_or(vec![401, 403]),
        )?;
        let success = statuses("success_statuses", r.success_statuses.unwrap_or_default())?;
        if let Some(s) = failure.iter().find(|s| success.contains(s)) {
            return Err(bad(
                at("success_statuses"),
                format!("{s} is also a failure status"),
            ));
        }
        let max_body = match r.max_body {
            None => DEFAULT_MAX_BODY,
            Some(raw::Uint(0)) => return Err(bad(at("max_body"), "must be greater than zero")),
            Some(raw::Uint(n)) => usize::try_from(n).unwrap_or(usize::MAX),
        };
        out.push(LoginRoute {
            method,
            path: r.path,
            username,
            failure,
            success,
            max_body,
        });
    }
    Ok((upstream, out))
}

const UPSTREAM_ERRORS: &str = "portcullis_upstream_errors_total";

/// The running proxy.
pub struct Proxy {
    client: crate::upstream::Client,
    upstream: Upstream,
    routes: Vec<LoginRoute>,
    engine: Arc<dyn Engine>,
    proxies: TrustedProxies,
}

/// Hop-by-hop headers (RFC 9110 7.6.1), dropped both ways.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        h.remove(n);
    }
}

fn text(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

impl Proxy {
    /// A proxy to `upstream`; login routes settle on `engine`.
    pub fn new(
        upstream: Upstream,
        routes: Vec<LoginRoute>,
        engine: Arc<dyn Engine>,
        proxies: TrustedProxies,
    ) -> Proxy {
        describe_counter!(
            UPSTREAM_ERRORS,
            "Proxied requests answered by portcullis because the upstream failed: 502 unreachable, 504 too slow."
        );
        counter!(UPSTREAM_ERRORS, "status" => "502").absolute(0);
        counter!(UPSTREAM_ERRORS, "status" => "504").absolute(0);
        let client = crate::upstream::Client::new(
            &upstream.url,
            upstream.connect_timeout,
            upstream.response_timeout,
        );
        Proxy {
            client,
            upstream,
            routes,
            engine,
            proxies,
        }
    }

    /// Answer one request the rate-limit layer allowed from `ip`.
    pub async fn handle(
        self: Arc<Self>,
        ip: IpAddr,
        peer: Option<IpAddr>,
        req: Request,
    ) -> Response {
        if req.headers().contains_key(header::UPGRADE) {
            return text(
                StatusCode::NOT_IMPLEMENTED,
                "portcullis: Upgrade (WebSocket) requests are not proxied\n",
            );
        }
        let path = normalize(req.uri().path());
        let route = self
            .routes
            .iter()
            .find(|r| r.method == req.method() && normalize(&r.path) == path)
            .cloned();
        let Some(route) = route else {
            return self.forward(ip, peer, req).await;
        };
        let (parts, body) = req.into_parts();
        let too_big = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > route.max_body as u64);
        if too_big {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "portcullis: login body too large\n",
            );
        }
        let Ok(bytes) = axum::body::to_bytes(body, route.max_body).await else {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "portcullis: login body too large\n",
            );
        };
        let user = username(&parts.headers, &bytes, &route.username);
        // A body without a username is counted against the address only:
        // a name of its own per address, which no real username can be.
        let user = user.unwrap_or_else(|| format!("\u{0}no-username:{ip}"));
        let headers = parts.headers.clone();
        let req = Request::from_parts(parts, Body::from(bytes));
        let me = self.clone();
        let engine = self.engine.clone();
        crate::http::guarded_login(engine, user, ip, &headers, None, async move {
            let resp = me.forward(ip, peer, req).await;
            let ok = match route.classify(resp.status()) {
                Some(ok) => ok,
                None => {
                    tracing::warn!(status = resp.status().as_u16(), path = %route.path,
                        "login route: upstream status is neither success nor failure; counted as a failure");
                    false
                }
            };
            (ok, resp)
        })
        .await
    }

    /// Forward `req` and stream the answer back (502/504 on failure).
    async fn forward(&self, ip: IpAddr, peer: Option<IpAddr>, req: Request) -> Response {
        let (mut parts, body) = req.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let mut uri = self.upstream.url.clone().into_parts();
        uri.path_and_query = path.parse().ok();
        let Ok(uri) = Uri::from_parts(uri) else {
            return text(StatusCode::BAD_REQUEST, "portcullis: bad request target\n");
        };
        parts.uri = uri;
        parts.version = http::Version::HTTP_11;
        let h = &mut parts.headers;
        strip_hop_by_hop(h);
        let trusted = peer.is_some_and(|p| self.proxies.contains(p));
        if !trusted {
            h.remove("x-forwarded-proto");
            h.remove("x-forwarded-host");
        }
        if let Ok(v) = HeaderValue::from_str(&ip.to_string()) {
            h.insert("x-forwarded-for", v);
        }
        if !h.contains_key("x-forwarded-proto") {
            h.insert("x-forwarded-proto", HeaderValue::from_static("http"));
        }
        if !h.contains_key("x-forwarded-host") {
            if let Some(host) = h.get(header::HOST).cloned() {
                h.insert("x-forwarded-host", host);
            }
        }
        let req = http::Request::from_parts(parts, body);
        match self.client.send(req).await {
            Ok(resp) => {
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, body)
            }
            Err(e @ crate::upstream::UpstreamError::Unreachable(_)) => {
                tracing::warn!(error = %e, upstream = %self.upstream.url, "upstream unreachable");
                counter!(UPSTREAM_ERRORS, "status" => "502").increment(1);
                text(
                    StatusCode::BAD_GATEWAY,
                    "portcullis: upstream unreachable\n",
                )
            }
            Err(crate::upstream::UpstreamError::Timeout(_)) => {
                tracing::warn!(upstream = %self.upstream.url, timeout_ms = self.upstream.response_timeout.as_millis() as u64, "upstream too slow");
                counter!(UPSTREAM_ERRORS, "status" => "504").increment(1);
                text(
                    StatusCode::GATEWAY_TIMEOUT,
                    "portcullis: upstream timed out\n",
                )
            }
        }
    }
}

/// A path as an application might read it, for matching login routes:
/// percent-decoded, `;params` cut from each segment, empty and `.`
/// segments dropped, `..` applied, ASCII lowercase, no trailing slash. So
/// `//Login/`, `/%6cogin`, `/x/../login` and `/login;a=b` all are `/login`
/// and cannot slip past a login route.
pub fn normalize(path: &str) -> String {
    let decoded: Vec<u8> = {
        let b = path.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while let Some(&c) = b.get(i) {
            let hex = |j: usize| b.get(j).and_then(|h| (*h as char).to_digit(16));
            match (c, hex(i + 1), hex(i + 2)) {
                (b'%', Some(h), Some(l)) => {
                    out.push(u8::try_from(h * 16 + l).unwrap_or(b'%'));
                    i += 3;
                }
                _ => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        out
    };
    let decoded = String::from_utf8_lossy(&decoded).to_ascii_lowercase();
    let mut segs: Vec<&str> = Vec::new();
    for seg in decoded.split(['/', '\\']) {
        let seg = seg.split(';').next().unwrap_or("");
        match seg {
            "" | "." => {}
            ".." => {
                segs.pop();
            }
            s => segs.push(s),
        }
    }
    format!("/{}", segs.join("/"))
}

/// The username in a login body: a JSON pointer (`/user/email`) in a JSON
/// body, or a form field / top-level JSON key. Empty or blank: none.
fn username(headers: &HeaderMap, body: &Bytes, field: &str) -> Option<String> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            let v = v.to_ascii_lowercase();
            v.starts_with("application/json") || v.contains("+json")
        });
    let found = if json {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        let at = if field.starts_with('/') {
            v.pointer(field)
        } else {
            v.get(field)
        };
        at.and_then(|s| s.as_str()).map(str::to_string)
    } else if field.starts_with('/') {
        None
    } else {
        form_urlencoded::parse(body)
            .find(|(k, _)| k == field)
            .map(|(_, v)| v.into_owned())
    };
    found.filter(|u| !u.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServerConfig;

    fn load(text: &str) -> Result<ServerConfig, BadConfig> {
        ServerConfig::from_str_env(text, "t.toml", std::iter::empty())
    }

    #[test]
    fn the_example_proxy_block_loads_uncommented() {
        let example = include_str!("../../../portcullis.example.toml");
        let (head, rest) = example.split_once("# --- proxy mode").unwrap();
        let (block, _) = rest.split_once("# --- end proxy mode").unwrap();
        let block: String = block
            .lines()
            .skip(1)
            .map(|l| l.strip_prefix("# ").unwrap_or(l.trim_start_matches('#')))
            .map(|l| format!("{l}\n"))
            .collect();
        let c = load(&format!("{head}{block}")).unwrap();
        let u = c.upstream.unwrap();
        assert_eq!(u.url, "http://127.0.0.1:3000");
        assert_eq!(u.admin_prefix, "/.portcullis");
        assert_eq!(u.response_timeout, StdDuration::from_secs(30));
        assert_eq!(c.login_routes.len(), 1);
        assert_eq!(c.login_routes[0].failure, [401, 403]);
        assert_eq!(c.policies.len(), 1);
        assert_eq!(c.policies[0].name, "login-posts");
        assert_eq!(c.policies[0].methods, [Method::POST]);
        assert_eq!(c.policies[0].rules.requests.max_requests, 10);
    }

    #[test]
    fn config_errors_name_the_key() {
        let key = |t: &str| load(t).unwrap_err().key;
        assert_eq!(key("[upstream]\nurl = \"https://x:1\"\n"), "upstream.url");
        assert_eq!(
            key("[upstream]\nurl = \"http://x:1/app\"\n"),
            "upstream.url"
        );
        assert_eq!(
            key("[upstream]\nurl = \"http://x:1\"\nbogus = 1\n"),
            "upstream.bogus"
        );
        assert_eq!(
            key("[upstream]\nurl = \"http://x:1\"\nresponse_timeout = \"0s\"\n"),
            "upstream.response_timeout"
        );
        assert_eq!(
            key("[upstream]\nurl = \"http://x:1\"\nadmin_prefix = \"x\"\n"),
            "upstream.admin_prefix"
        );
        assert_eq!(key("[[login_routes]]\npath = \"/login\"\n"), "login_routes");
        let up = "[upstream]\nurl = \"http://x:1\"\n";
        assert_eq!(
            key(&format!("{up}[[login_routes]]\npath = \"login\"\n")),
            "login_routes[0].path"
        );
        assert_eq!(
            key(&format!(
                "{up}[[login_routes]]\npath = \"/l\"\nfailure_statuses = [99]\n"
            )),
            "login_routes[0].failure_statuses[0]"
        );
        assert_eq!(
            key(&format!(
                "{up}[[login_routes]]\npath = \"/l\"\nsuccess_statuses = [401]\n"
            )),
            "login_routes[0].success_statuses"
        );
        assert_eq!(
            key(&format!(
                "{up}[[login_routes]]\npath = \"/l\"\nmax_body = 0\n"
            )),
            "login_routes[0].max_body"
        );
        assert_eq!(
            key(&format!(
                "{up}[[login_routes]]\npath = \"/l\"\n[[login_routes]]\npath = \"/l\"\n"
            )),
            "login_routes[1].path"
        );
        let p = "[[policies]]\nname = \"a\"\nprefix = \"/a\"\n";
        assert_eq!(
            key("[[policies]]\nname = \"a b\"\nprefix = \"/a\"\n"),
            "policies[0].name"
        );
        assert_eq!(
            key("[[policies]]\nname = \"admin\"\nprefix = \"/a\"\n"),
            "policies[0].name"
        );
        assert_eq!(key(&format!("{p}{p}")), "policies[1].name");
        assert_eq!(
            key("[[policies]]\nname = \"a\"\nprefix = \"a\"\n"),
            "policies[0].prefix"
        );
        assert_eq!(
            key(&format!("{p}methods = [\"GE T\"]\n")),
            "policies[0].methods[0]"
        );
        assert_eq!(
            key(&format!("{p}[policies.requests]\nmax_requests = 0\n")),
            "policies[0].requests.max_requests"
        );
        assert_eq!(
            key(&format!("{p}[policies.requests]\nwindoww = \"1s\"\n")),
            "policies[0].requests.windoww"
        );
        // Defaults come from [requests]; a policy overrides only its keys.
        let c = load(&format!("[requests]\nmax_requests = 7\nwindow = \"9s\"\n{p}[policies.requests]\nmax_requests = 3\n")).unwrap();
        assert_eq!(c.policies[0].rules.requests.max_requests, 3);
        assert_eq!(
            c.policies[0].rules.requests.window,
            embassy_time::Duration::from_secs(9)
        );
        assert_eq!(c.rules.requests.max_requests, 7);
        assert!(c.upstream.is_none());
    }

    fn h(ct: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        h
    }

    #[test]
    fn username_from_form_json_and_pointer() {
        let form = h("application/x-www-form-urlencoded");
        let json = h("application/json; charset=utf-8");
        let b = |s: &str| Bytes::from(s.to_string());
        assert_eq!(
            username(&form, &b("username=Al%20ice&password=x"), "username").as_deref(),
            Some("Al ice")
        );
        assert_eq!(username(&form, &b("password=x"), "username"), None);
        assert_eq!(
            username(&form, &b("username=+&password=x"), "username"),
            None
        );
        assert_eq!(
            username(&json, &b(r#"{"username":"bob"}"#), "username").as_deref(),
            Some("bob")
        );
        assert_eq!(
            username(&json, &b(r#"{"user":{"email":"a@b"}}"#), "/user/email").as_deref(),
            Some("a@b")
        );
        assert_eq!(
            username(&json, &b(r#"{"user":{"email":5}}"#), "/user/email"),
            None
        );
        assert_eq!(username(&form, &b("user=a"), "/user"), None);
        assert_eq!(username(&json, &b("not json"), "username"), None);
    }

    #[test]
    fn login_paths_normalize() {
        for p in [
            "/login",
            "//Login/",
            "/%6cogin",
            "/x/../login",
            "/login;a=b",
            "/./login",
            "\\login",
            "/LOGIN%2f",
        ] {
            assert_eq!(normalize(p), "/login", "{p}");
        }
        assert_eq!(normalize("/"), "/");
        assert_eq!(normalize("/a/b/"), "/a/b");
        assert_ne!(normalize("/login2"), "/login");
        assert_eq!(normalize("/%zz"), "/%zz");
    }

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut m = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("te", "trailers"),
            ("x-kept", "yes"),
        ] {
            m.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut m);
        assert_eq!(m.len(), 1, "{m:?}");
        assert_eq!(m.get("x-kept").unwrap(), "yes");
    }

    #[test]
    fn statuses_classify() {
        let r = LoginRoute {
            method: Method::POST,
            path: "/login".into(),
            username: "username".into(),
            failure: vec![401, 403],
            success: vec![],
            max_body: 10,
        };
        assert_eq!(r.classify(StatusCode::OK), Some(true));
        assert_eq!(r.classify(StatusCode::FOUND), Some(true));
        assert_eq!(r.classify(StatusCode::UNAUTHORIZED), Some(false));
        assert_eq!(r.classify(StatusCode::FORBIDDEN), Some(false));
        assert_eq!(r.classify(StatusCode::BAD_GATEWAY), None);
        let r = LoginRoute {
            success: vec![302],
            failure: vec![200],
            ..r
        };
        assert_eq!(r.classify(StatusCode::OK), Some(false));
        assert_eq!(r.classify(StatusCode::FOUND), Some(true));
        assert_eq!(r.classify(StatusCode::NO_CONTENT), None);
    }
}
