//! `[upstream]` (proxy mode) and `[[login_routes]]`, as written and
//! checked. Login-route paths are canonicalised here, by the same function
//! requests are ([`crate::target`]).

use std::time::Duration as StdDuration;

use http::{Method, StatusCode, Uri};
use serde::Deserialize;

use super::{raw, BadConfig};

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
    /// The path as written (the query is not compared).
    pub path: String,
    /// Its canonical key ([`crate::target::key_of`]): what a request's
    /// canonical target is compared with.
    pub key: String,
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
    /// Whether a request with this canonical method and key is this
    /// route's: the same path, with a trailing slash (gone in the
    /// canonical form) or a `.json` / `.xml` format suffix (Rails, Django
    /// REST framework), any case.
    pub fn matches(&self, method: &Method, key: &str) -> bool {
        if *method != self.method {
            return false;
        }
        matches!(
            key.strip_prefix(self.key.as_str()),
            Some("" | ".json" | ".xml")
        )
    }

    /// `Some(true)` success, `Some(false)` failure, `None` neither.
    pub fn classify(&self, status: StatusCode) -> Option<bool> {
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
    let upstream = up.map(upstream).transpose()?;
    let mut out: Vec<LoginRoute> = Vec::new();
    for (i, r) in routes.into_iter().enumerate() {
        let route = login_route(i, r)?;
        if out
            .iter()
            .any(|o| o.method == route.method && o.key == route.key)
        {
            return Err(bad(
                format!("login_routes[{i}].path"),
                format!("{} {} is listed twice", route.method, route.path),
            ));
        }
        out.push(route);
    }
    Ok((upstream, out))
}

/// `[upstream]`, checked.
fn upstream(u: RawUpstream) -> Result<Upstream, BadConfig> {
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
    Ok(Upstream {
        url,
        connect_timeout: dur("connect_timeout", u.connect_timeout, 5)?,
        response_timeout: dur("response_timeout", u.response_timeout, 30)?,
        admin_prefix: prefix,
    })
}

/// One `[[login_routes]]` entry (the `i`th), checked.
fn login_route(i: usize, r: RawLoginRoute) -> Result<LoginRoute, BadConfig> {
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
    let key = crate::target::key_of(&r.path);
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
    Ok(LoginRoute {
        method,
        path: r.path,
        key,
        username,
        failure,
        success,
        max_body,
    })
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
        let example = include_str!("../../../../portcullis.example.toml");
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
        assert_eq!(
            key("[forward_auth]\nenabled = false\n[[login_routes]]\npath = \"/login\"\n"),
            "login_routes"
        );
        assert!(
            load("[[login_routes]]\npath = \"/login\"\n").is_ok(),
            "forward-auth's"
        );
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
    }

    #[test]
    fn policy_errors_name_the_key() {
        let key = |t: &str| load(t).unwrap_err().key;
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
        // Parsed by the shared [requests] table, but a policy's switch is
        // `shadow` on the policy: refused, never silently ignored.
        assert_eq!(
            key(&format!("{p}[policies.requests]\nshadow = true\n")),
            "policies[0].requests.shadow"
        );
        assert!(load(&format!("{p}shadow = true\n")).unwrap().policies[0].shadow);
        // Defaults come from [requests]; a policy overrides only its keys.
        let c = load(&format!("[requests]\nmax_requests = 7\nwindow = \"9s\"\n{p}[policies.requests]\nmax_requests = 3\n")).unwrap();
        assert_eq!(c.policies[0].rules.requests.max_requests, 3);
        assert_eq!(
            c.policies[0].rules.requests.window,
            portcullis::Duration::from_secs(9)
        );
        assert_eq!(c.rules.requests.max_requests, 7);
        assert!(c.upstream.is_none());
    }

    #[test]
    fn statuses_classify() {
        let r = LoginRoute {
            method: Method::POST,
            path: "/login".into(),
            key: "/login".into(),
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

    #[test]
    fn login_routes_match_their_spellings() {
        let r = LoginRoute {
            method: Method::POST,
            path: "/Login/".into(),
            key: crate::target::key_of("/Login/"),
            username: "username".into(),
            failure: vec![401],
            success: vec![],
            max_body: 10,
        };
        for p in [
            "/login",
            "/login.json",
            "/login.xml",
            "/LOGIN/",
            "/login;x=1",
        ] {
            let t = crate::target::Target::new(&Method::from_bytes(b"post").unwrap(), p.as_bytes());
            assert!(r.matches(&t.method, t.key()), "{p}");
        }
        for p in ["/login2", "/login.html", "/logi"] {
            let t = crate::target::Target::new(&Method::POST, p.as_bytes());
            assert!(!r.matches(&t.method, t.key()), "{p}");
        }
        assert!(!r.matches(&Method::GET, "/login"));
    }
}
