//! `[forward_auth]`, checked: the decision endpoint, the login-result API's
//! token and which proxy sits in front (whose headers name the original
//! method and URI).

use http::HeaderName;

use super::{bad, raw, BadConfig};

/// The default decision endpoint's path.
pub const DEFAULT_CHECK_PATH: &str = "/check";

/// What sits in front of the decision endpoint, and so which headers carry
/// the original request (`forward_auth.proxy`). Only that pair is read:
/// Caddy and Traefik pass a client's own `X-Original-*` headers through,
/// nginx's snippet sets `X-Original-*` and passes `X-Forwarded-*` through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrontProxy {
    /// `X-Original-Method` / `X-Original-URI` (the default: the shipped
    /// `docs/forward-auth/nginx.conf`).
    Nginx,
    /// `X-Forwarded-Method` / `X-Forwarded-Uri`.
    Caddy,
    /// `X-Forwarded-Method` / `X-Forwarded-Uri`.
    Traefik,
    /// An explicit pair (`method_header`, `uri_header`).
    Headers {
        /// The header naming the original method.
        method: HeaderName,
        /// The header naming the original URI.
        uri: HeaderName,
    },
}

impl FrontProxy {
    /// The (method, URI) header pair this proxy sets.
    pub fn headers(&self) -> (HeaderName, HeaderName) {
        match self {
            FrontProxy::Nginx => (
                HeaderName::from_static("x-original-method"),
                HeaderName::from_static("x-original-uri"),
            ),
            FrontProxy::Caddy | FrontProxy::Traefik => (
                HeaderName::from_static("x-forwarded-method"),
                HeaderName::from_static("x-forwarded-uri"),
            ),
            FrontProxy::Headers { method, uri } => (method.clone(), uri.clone()),
        }
    }

    /// Its name in the config.
    pub fn name(&self) -> &'static str {
        match self {
            FrontProxy::Nginx => "nginx",
            FrontProxy::Caddy => "caddy",
            FrontProxy::Traefik => "traefik",
            FrontProxy::Headers { .. } => "headers",
        }
    }
}

/// Forward-auth mode (`[forward_auth]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardAuth {
    /// Serve the decision endpoint \[true\].
    pub enabled: bool,
    /// Path of the decision endpoint \[/check\].
    pub path: String,
    /// Bearer token of `POST /v1/login-result` (none: that API is off).
    pub report_token: Option<String>,
    /// What sits in front \[nginx\].
    pub proxy: FrontProxy,
    /// Whether `proxy` was written (the default is logged at start-up).
    pub proxy_given: bool,
}

impl Default for ForwardAuth {
    fn default() -> Self {
        ForwardAuth {
            enabled: true,
            path: DEFAULT_CHECK_PATH.to_string(),
            report_token: None,
            proxy: FrontProxy::Nginx,
            proxy_given: false,
        }
    }
}

/// `[forward_auth]`, checked: the path (checked even when switched off) is
/// an absolute path of its own (not `/`, not under the server's own
/// `/admin`, `/metrics`, `/login`, `/v1/`).
pub(super) fn check(raw: raw::ForwardAuth) -> Result<ForwardAuth, BadConfig> {
    let mut fa = ForwardAuth::default();
    if let Some(p) = raw.path {
        let key = "forward_auth.path";
        let ok_chars = p
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-._~".contains(&b));
        if !p.starts_with('/') || p.len() < 2 || !ok_chars || p.contains("//") {
            return Err(bad(
                key,
                format!("{p:?} is not an absolute path like \"/check\""),
            ));
        }
        let taken = ["/admin", "/metrics", "/login", "/v1"];
        if let Some(t) = taken
            .iter()
            .find(|t| p == **t || p.starts_with(&format!("{t}/")))
        {
            return Err(bad(key, format!("{p:?} is taken by portcullis ({t})")));
        }
        fa.path = p;
    }
    fa.enabled = raw.enabled.unwrap_or(true);
    fa.report_token = raw.report_token.filter(|t| !t.is_empty());
    fa.proxy_given = raw.proxy.is_some();
    fa.proxy = front_proxy(raw.proxy.as_deref(), raw.method_header, raw.uri_header)?;
    Ok(fa)
}

fn header(key: &str, v: Option<String>) -> Result<Option<HeaderName>, BadConfig> {
    v.map(|h| {
        HeaderName::from_bytes(h.trim().as_bytes())
            .map_err(|_| bad(key, format!("{h:?} is not a header name")))
    })
    .transpose()
}

fn front_proxy(
    kind: Option<&str>,
    method: Option<String>,
    uri: Option<String>,
) -> Result<FrontProxy, BadConfig> {
    let method = header("forward_auth.method_header", method)?;
    let uri = header("forward_auth.uri_header", uri)?;
    let kind = kind.map(|k| k.trim().to_ascii_lowercase());
    let named = match kind.as_deref() {
        None | Some("nginx") => FrontProxy::Nginx,
        Some("caddy") => FrontProxy::Caddy,
        Some("traefik") => FrontProxy::Traefik,
        Some("headers") => {
            return match (method, uri) {
                (Some(method), Some(uri)) => Ok(FrontProxy::Headers { method, uri }),
                _ => Err(bad(
                    "forward_auth.method_header",
                    "proxy = \"headers\" needs method_header and uri_header",
                )),
            };
        }
        Some(other) => {
            return Err(bad(
                "forward_auth.proxy",
                format!("{other:?}: expected nginx, caddy, traefik or headers"),
            ))
        }
    };
    if method.is_some() || uri.is_some() {
        return Err(bad(
            "forward_auth.method_header",
            "only with proxy = \"headers\"",
        ));
    }
    Ok(named)
}
