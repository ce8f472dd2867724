//! The tower [`RateLimitLayer`]: works in front of any
//! `Service<http::Request<B>>` (axum, hyper, tonic).
//!
//! Limited → `429 Too Many Requests` with `Retry-After` (whole seconds,
//! rounded up); banned or denylisted → `403 Forbidden`; the body is an RFC
//! 9457 problem details document, or a short HTML page for browsers (see
//! [`crate::problem`]); [`RateLimitLayer::deny_response`] replaces it with
//! the application's own. Every response
//! carries the IETF structured fields (draft-ietf-httpapi-ratelimit-headers):
//! `RateLimit-Policy: "requests";q=50;w=60` and `RateLimit: "requests";r=12;t=31`.
//! Several named policies can be matched by path prefix (longest wins), each
//! with its own quota. The client address is the peer's, or, from a
//! trusted proxy, the one named by the single configured forwarding header
//! ([`TrustedProxies::header`], rule in [`crate::client_ip`]); it is put in
//! the request's extensions as [`ClientIp`] for handlers.
//!
//! With axum (feature `axum`, which reads its `ConnectInfo`):
//!
//! ```no_run
//! # #[cfg(feature = "axum")] mod m {
//! use std::sync::Arc;
//! use axum::{routing::get, Router};
//! use portcullis::{Config, Guard, Limiter, LimiterOptions, RateLimitLayer};
//!
//! # async fn run() {
//! let guard = |q: u32| {
//!     let mut c = Config::default();
//!     c.requests.max_requests = q;
//!     Guard::new(Arc::new(Limiter::new(c, LimiterOptions::default()).unwrap()), None)
//! };
//! let app = Router::new()
//!     .route("/", get(|| async { "ok" }))
//!     .route("/login", get(|| async { "login" }))
//!     .layer(RateLimitLayer::new("requests", guard(50)).route("/login", "login", guard(5)));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>()).await.unwrap();
//! # }
//! # }
//! ```
//!
//! Without axum (hyper, tonic, any tower stack): insert the connection's
//! address as a [`PeerAddr`] request extension before the layer. The
//! response body type must be `From<String>` (axum's `Body`,
//! `http_body_util::Full<Bytes>`, `String`), for the refusal bodies.
//!
//! ## Shadow mode
//!
//! A [`Shadow`] switch, for the whole layer ([`RateLimitLayer::shadow`]) or
//! one policy ([`RateLimitLayer::shadow_policy`]), makes denials advisory:
//! the decision is made and recorded exactly as usual (violations, blocks
//! and bans build up, so switching to enforcing starts from real state),
//! counted as `portcullis_shadow_denials_total{reason}` and logged at info,
//! and the request proceeds with its `RateLimit` fields. The switch is
//! shared: flipping it (a config reload) takes effect on the next request.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::BoxFuture;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use portcullis_core::Decision;
use tower_layer::Layer;
use tower_service::Service;

use crate::client_ip::{client_ip, PeerAddr, TrustedProxies};
use crate::engine::Engine;

/// The client address the layer limited, for handlers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// A named quota applied to paths starting with `prefix`.
#[derive(Clone)]
pub struct Policy {
    /// Name in the RateLimit fields.
    pub name: String,
    /// Path prefix.
    pub prefix: String,
    /// Methods it applies to (empty: every method).
    pub methods: Vec<http::Method>,
    /// The backend enforcing it.
    pub engine: Arc<dyn Engine>,
}

/// The policy for a request: the longest matching prefix wins; at the same
/// prefix, one that names the method beats one for every method. The
/// layer uses it, and so can a decision endpoint that learns the original
/// method and path from headers.
pub fn select_policy<'a>(
    policies: &'a [Policy],
    method: &http::Method,
    path: &str,
) -> Option<&'a Policy> {
    policies
        .iter()
        .filter(|p| path.starts_with(&p.prefix))
        .filter(|p| p.methods.is_empty() || p.methods.contains(method))
        .max_by_key(|p| (p.prefix.len(), !p.methods.is_empty()))
}

/// A shadow-mode switch, shared between the layer and whoever flips it
/// (a config reload): while on, denials are recorded but not enforced.
#[derive(Clone, Debug, Default)]
pub struct Shadow(Arc<AtomicBool>);

impl Shadow {
    /// A switch, on or off.
    pub fn new(on: bool) -> Shadow {
        Shadow(Arc::new(AtomicBool::new(on)))
    }

    /// Turn it on or off (the next decision sees it).
    pub fn set(&self, on: bool) {
        self.0.store(on, Ordering::Relaxed);
    }

    /// Whether it is on.
    pub fn is_on(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// A refusal the layer is about to send, for a
/// [`deny_response`](RateLimitLayer::deny_response) hook.
#[derive(Debug)]
pub struct Denial<'a> {
    /// The policy that denied (its name in the `RateLimit` fields).
    pub policy: &'a str,
    /// The client address.
    pub ip: IpAddr,
    /// The denial.
    pub decision: &'a Decision,
    /// The request's method, URI and headers (e.g. `Accept`).
    pub method: &'a http::Method,
    /// The request's URI.
    pub uri: &'a http::Uri,
    /// The request's headers.
    pub headers: &'a http::HeaderMap,
}

/// A hook building the refusal response; the layer adds the `RateLimit`
/// fields (and nothing else) to what it returns.
pub type DenyHook = Arc<dyn Fn(&Denial<'_>) -> Response<String> + Send + Sync>;

#[derive(Clone)]
struct Shared {
    policies: Vec<Policy>,
    proxies: TrustedProxies,
    /// Shadow for every policy.
    shadow: Shadow,
    /// Shadow for the policy of that name.
    policy_shadow: Vec<(String, Shadow)>,
    deny: Option<DenyHook>,
}

impl Shared {
    fn is_shadow(&self, policy: &str) -> bool {
        self.shadow.is_on()
            || self
                .policy_shadow
                .iter()
                .any(|(n, s)| n == policy && s.is_on())
    }

    fn pick(&self, method: &http::Method, path: &str) -> Option<&Policy> {
        select_policy(&self.policies, method, path)
    }
}

/// The layer.
#[derive(Clone)]
pub struct RateLimitLayer {
    shared: Arc<Shared>,
}

impl RateLimitLayer {
    /// One policy named `name` for every path.
    ///
    /// **The layer needs the connection's address** on every request:
    /// axum's `ConnectInfo<SocketAddr>` (serve with
    /// `into_make_service_with_connect_info::<SocketAddr>()`, feature
    /// `axum`) or, in any other tower stack (hyper, tonic), a
    /// [`PeerAddr`] request extension inserted before the layer. A request
    /// with neither is not guessed at: it gets a `500` whose text body is
    /// [`NO_PEER_ADDRESS`], naming the missing extension, logged with
    /// `tracing::error!` on every such request and printed to stderr once
    /// per process, so it shows even without a tracing subscriber.
    pub fn new(name: &str, engine: impl Engine) -> Self {
        Self::with_engine(name, Arc::new(engine))
    }

    /// One policy for every path, backed by a shared engine.
    pub fn with_engine(name: &str, engine: Arc<dyn Engine>) -> Self {
        let p = Policy {
            name: name.into(),
            prefix: "/".into(),
            methods: Vec::new(),
            engine,
        };
        RateLimitLayer {
            shared: Arc::new(Shared {
                policies: vec![p],
                proxies: TrustedProxies::default(),
                shadow: Shadow::default(),
                policy_shadow: Vec::new(),
                deny: None,
            }),
        }
    }

    fn edit(self, f: impl FnOnce(&mut Shared)) -> Self {
        let mut shared = Arc::try_unwrap(self.shared).unwrap_or_else(|a| (*a).clone());
        f(&mut shared);
        RateLimitLayer {
            shared: Arc::new(shared),
        }
    }

    /// Add a policy for paths under `prefix`.
    pub fn route(self, prefix: &str, name: &str, engine: impl Engine) -> Self {
        let p = Policy {
            name: name.into(),
            prefix: prefix.into(),
            methods: Vec::new(),
            engine: Arc::new(engine),
        };
        self.edit(|s| s.policies.push(p))
    }

    /// Shadow mode for every policy while `shadow` is on.
    pub fn shadow(self, shadow: Shadow) -> Self {
        self.edit(|s| s.shadow = shadow)
    }

    /// Shadow mode for the policy named `name` while `shadow` is on.
    pub fn shadow_policy(self, name: &str, shadow: Shadow) -> Self {
        self.edit(|s| s.policy_shadow.push((name.into(), shadow)))
    }

    /// Answer denials with `hook`'s response instead of the problem
    /// details of [`crate::problem::deny_response`]; the layer adds the
    /// `RateLimit` fields.
    pub fn deny_response(
        self,
        hook: impl Fn(&Denial<'_>) -> Response<String> + Send + Sync + 'static,
    ) -> Self {
        let hook: DenyHook = Arc::new(hook);
        self.edit(|s| s.deny = Some(hook))
    }

    /// Add a policy (prefix, optional methods, shared engine).
    pub fn policy(self, p: Policy) -> Self {
        self.edit(|s| s.policies.push(p))
    }

    /// The policies, in the order added (the first is the default, `/`).
    pub fn policies(&self) -> &[Policy] {
        &self.shared.policies
    }

    /// Trust forwarding headers from these proxies.
    pub fn trusted_proxies(self, proxies: TrustedProxies) -> Self {
        self.edit(|s| s.proxies = proxies)
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;
    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service the layer wraps around `S`.
#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// Whole seconds, rounded up (`Retry-After`, `t=`, `seconds_left`).
pub fn ceil_secs(d: portcullis_core::Duration) -> u64 {
    d.as_micros().div_ceil(1_000_000)
}

/// `RateLimit-Policy` and `RateLimit` values for a decision.
pub fn header_values(name: &str, engine: &dyn Engine, d: &Decision) -> (String, String) {
    let (q, w) = engine.quota();
    let policy = format!("\"{name}\";q={q};w={}", ceil_secs(w));
    let state = match d {
        Decision::Allow {
            remaining,
            reset_after,
        } => {
            format!("\"{name}\";r={remaining};t={}", ceil_secs(*reset_after))
        }
        Decision::Deny { retry_after, .. } if *retry_after == portcullis_core::Duration::MAX => {
            format!("\"{name}\";r=0")
        }
        Decision::Deny { retry_after, .. } => {
            format!("\"{name}\";r=0;t={}", ceil_secs(*retry_after))
        }
    };
    (policy, state)
}

fn put(h: &mut http::HeaderMap, k: &'static str, v: String) {
    if let Ok(v) = HeaderValue::from_str(&v) {
        h.insert(k, v);
    }
}

/// `RateLimit-Policy`.
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`.
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
/// `X-Portcullis-Reason`: the reason of a denial.
pub const REASON_HEADER: HeaderName = HeaderName::from_static("x-portcullis-reason");

/// A header value formatted on the stack: its one allocation is the
/// value's own bytes (`format!` and `HeaderValue::from_str` would be two).
/// A value longer than the buffer (a long policy name) goes through a
/// `String`.
fn value_of(args: std::fmt::Arguments<'_>) -> Option<HeaderValue> {
    use std::io::Write;
    let mut buf = [0u8; 128];
    let mut rest = &mut buf[..];
    if rest.write_fmt(args).is_err() {
        return HeaderValue::from_str(&args.to_string()).ok();
    }
    let n = 128 - rest.len();
    HeaderValue::from_bytes(buf.get(..n)?).ok()
}

/// The `RateLimit` value `"name";r=R[;t=T]`, written byte by byte into a
/// stack buffer: through `format_args!` and `io::Write` it cost about
/// 1 000 instructions a response (`bench/request_icount.sh`). A name too
/// long for the buffer goes through [`value_of`].
fn state_value(name: &str, r: u64, t: Option<u64>) -> Option<HeaderValue> {
    let mut b = [0u8; 96];
    let mut n = 0usize;
    let mut put = |bytes: &[u8]| -> Option<()> {
        let end = n.checked_add(bytes.len())?;
        b.get_mut(n..end)?.copy_from_slice(bytes);
        n = end;
        Some(())
    };
    let written = (|| {
        put(b"\"")?;
        put(name.as_bytes())?;
        put(b"\";r=")?;
        put(decimal(r, &mut [0; 20]))?;
        if let Some(t) = t {
            put(b";t=")?;
            put(decimal(t, &mut [0; 20]))?;
        }
        Some(())
    })();
    match written {
        Some(()) => HeaderValue::from_bytes(b.get(..n)?).ok(),
        None => match t {
            Some(t) => value_of(format_args!("\"{name}\";r={r};t={t}")),
            None => value_of(format_args!("\"{name}\";r={r}")),
        },
    }
}

/// `v` in decimal, written at the end of `buf`.
fn decimal(mut v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}

/// The last `RateLimit-Policy` value built on this thread: (policy name,
/// quota, window in whole seconds) and the value.
type LastPolicy = Option<(Box<str>, u32, u64, HeaderValue)>;

thread_local! {
    static LAST_POLICY: std::cell::RefCell<LastPolicy> = const { std::cell::RefCell::new(None) };
}

/// The `RateLimit-Policy` value of policy `name` with quota `(q, w)`. It
/// changes only with a reload, so the value last built on this thread is
/// handed out again when it matches (a reference count, no formatting and
/// no allocation: about 1 000 instructions a response less).
fn policy_value(name: &str, (q, w): (u32, portcullis_core::Duration)) -> Option<HeaderValue> {
    let secs = ceil_secs(w);
    let hit = LAST_POLICY
        .try_with(|last| match &*last.borrow() {
            Some((n, lq, lw, v)) if **n == *name && *lq == q && *lw == secs => Some(v.clone()),
            _ => None,
        })
        .ok()
        .flatten();
    if hit.is_some() {
        return hit;
    }
    let v = value_of(format_args!("\"{name}\";q={q};w={secs}"))?;
    let _ = LAST_POLICY.try_with(|last| {
        *last.borrow_mut() = Some((name.into(), q, secs, v.clone()));
    });
    Some(v)
}

/// Set the `RateLimit-Policy` and `RateLimit` fields of a decision
/// (the values of [`header_values`], without their intermediate strings).
pub fn set_ratelimit_fields(
    h: &mut http::HeaderMap,
    name: &str,
    engine: &dyn Engine,
    d: &Decision,
) {
    if let Some(v) = policy_value(name, engine.quota()) {
        h.insert(RATELIMIT_POLICY, v);
    }
    let state = match d {
        Decision::Allow {
            remaining,
            reset_after,
        } => state_value(name, u64::from(*remaining), Some(ceil_secs(*reset_after))),
        Decision::Deny { retry_after, .. } if *retry_after == portcullis_core::Duration::MAX => {
            state_value(name, 0, None)
        }
        Decision::Deny { retry_after, .. } => state_value(name, 0, Some(ceil_secs(*retry_after))),
    };
    if let Some(v) = state {
        h.insert(RATELIMIT, v);
    }
}

/// The bare response for a denial: status, `Retry-After`, reason and
/// `RateLimit` fields, empty body of the service's type (the layer sends
/// [`crate::problem`] bodies instead).
pub fn bare_deny_response<B: Default>(
    name: &str,
    engine: &dyn Engine,
    d: &Decision,
) -> Response<B> {
    let mut resp = Response::new(B::default());
    let (policy, state) = header_values(name, engine, d);
    if let Decision::Deny {
        reason,
        retry_after,
    } = d
    {
        if reason.is_forbidden() {
            *resp.status_mut() = StatusCode::FORBIDDEN;
        } else if *reason == portcullis_core::Reason::Unavailable {
            *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            put(
                resp.headers_mut(),
                "retry-after",
                ceil_secs(*retry_after).to_string(),
            );
        } else {
            *resp.status_mut() = StatusCode::TOO_MANY_REQUESTS;
            put(
                resp.headers_mut(),
                "retry-after",
                ceil_secs(*retry_after).to_string(),
            );
        }
        resp.headers_mut()
            .insert(REASON_HEADER, HeaderValue::from_static(reason.as_str()));
    }
    put(resp.headers_mut(), "ratelimit-policy", policy);
    put(resp.headers_mut(), "ratelimit", state);
    resp
}

impl<S, B, RB> Service<Request<B>> for RateLimit<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    RB: From<String> + Send + 'static,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<RB>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        Box::pin(async move {
            let Some(peer) = peer_of(&req) else {
                return Ok(no_peer_address());
            };
            let Some(policy) = shared.pick(req.method(), req.uri().path()) else {
                tracing::error!(
                    path = req.uri().path(),
                    "portcullis: no policy for the path"
                );
                let mut r = Response::new(RB::from(String::from(
                    "portcullis: no rate-limit policy for this path\n",
                )));
                *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                return Ok(r);
            };
            let ip = client_ip(peer, req.headers(), &shared.proxies);
            let d = policy.engine.check_request(ip).await;
            if let Some(reason) = d.reason() {
                if shared.is_shadow(&policy.name) {
                    shadow_denial(reason);
                    tracing::info!(%ip, policy = %policy.name, reason = reason.as_str(), "shadow: would deny; let through");
                } else {
                    tracing::debug!(%ip, decision = ?d, "denied");
                    let denial = Denial {
                        policy: &policy.name,
                        ip,
                        decision: &d,
                        method: req.method(),
                        uri: req.uri(),
                        headers: req.headers(),
                    };
                    let resp = match &shared.deny {
                        Some(hook) => hook(&denial),
                        None => {
                            let mut r = crate::problem::deny_response(
                                &d,
                                &[policy.name.as_str()],
                                req.headers(),
                            );
                            r.headers_mut()
                                .insert(REASON_HEADER, HeaderValue::from_static(reason.as_str()));
                            r
                        }
                    };
                    let mut resp = resp.map(RB::from);
                    let h = resp.headers_mut();
                    set_ratelimit_fields(h, &policy.name, policy.engine.as_ref(), &d);
                    return Ok(resp);
                }
            }
            req.extensions_mut().insert(ClientIp(ip));
            let mut resp = inner.call(req).await?;
            let h = resp.headers_mut();
            set_ratelimit_fields(h, &policy.name, policy.engine.as_ref(), &d);
            Ok(resp)
        })
    }
}

/// The `reason` labels of `portcullis_shadow_denials_total`, static, so a
/// shadow denial's key is never built on the heap.
static SHADOW_LABELS: [[metrics::Label; 1]; portcullis_core::Reason::ALL.len()] = {
    let mut out = [const { [metrics::Label::from_static_parts("reason", "")] };
        portcullis_core::Reason::ALL.len()];
    let mut i = 0;
    while i < out.len() {
        // Static labels own nothing; `forget` only spares const
        // evaluation the destructor of the placeholder replaced.
        std::mem::forget(std::mem::replace(
            &mut out[i],
            [metrics::Label::from_static_parts(
                "reason",
                portcullis_core::Reason::ALL[i].as_str(),
            )],
        ));
        i += 1;
    }
    out
};

/// Count a denial a shadow policy let through.
fn shadow_denial(reason: portcullis_core::Reason) {
    let i = portcullis_core::Reason::ALL
        .iter()
        .position(|r| *r == reason)
        .unwrap_or(0);
    if let Some(labels) = SHADOW_LABELS.get(i) {
        let key = metrics::Key::from_static_parts(crate::metrics::SHADOW_DENIALS, labels);
        static META: metrics::Metadata<'static> =
            metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));
        metrics::with_recorder(|r| r.register_counter(&key, &META)).increment(1);
    }
}

/// What a request without a peer address gets: see [`RateLimitLayer::new`].
pub const NO_PEER_ADDRESS: &str = "portcullis: no client address: insert \
    portcullis::PeerAddr as a request extension (or serve with \
    axum's into_make_service_with_connect_info)";

/// Set once the missing peer address has been printed to stderr.
static NO_PEER_PRINTED: AtomicBool = AtomicBool::new(false);

/// A 500 whose body names the missing extension, logged at error and,
/// once per process, printed to stderr so that it shows without a tracing
/// subscriber.
fn no_peer_address<RB: From<String>>() -> Response<RB> {
    tracing::error!("{NO_PEER_ADDRESS}");
    if !NO_PEER_PRINTED.swap(true, Ordering::Relaxed) {
        eprintln!("{NO_PEER_ADDRESS}");
    }
    let mut r = Response::new(RB::from(format!("{NO_PEER_ADDRESS}\n")));
    *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    if let Ok(v) = HeaderValue::from_str("text/plain; charset=utf-8") {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

/// The peer address: axum's `ConnectInfo<SocketAddr>` (feature `axum`) or
/// a [`PeerAddr`] extension.
fn peer_of<B>(req: &Request<B>) -> Option<IpAddr> {
    #[cfg(feature = "axum")]
    if let Some(c) = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
    {
        return Some(c.0.ip());
    }
    req.extensions().get::<PeerAddr>().map(|p| p.0.ip())
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use portcullis_core::Reason;

    /// The hand-written `RateLimit` value is what `format!` writes, for
    /// short and long names (a long one falls back to formatting).
    #[test]
    fn ratelimit_values_are_written_as_format_writes_them() {
        let long = "p".repeat(200);
        for name in ["default", "login", "", long.as_str()] {
            for r in [0u64, 1, 9, 10, 99, 1000, u64::from(u32::MAX), u64::MAX] {
                for t in [
                    None,
                    Some(0),
                    Some(7),
                    Some(60),
                    Some(86_400),
                    Some(u64::MAX),
                ] {
                    let want = match t {
                        Some(t) => format!("\"{name}\";r={r};t={t}"),
                        None => format!("\"{name}\";r={r}"),
                    };
                    let got = state_value(name, r, t).unwrap();
                    assert_eq!(got.to_str().unwrap(), want);
                }
            }
        }
    }

    /// The cached `RateLimit-Policy` value follows the policy, its quota
    /// and its window, whichever changed last, as a fresh format would.
    #[test]
    fn policy_values_follow_the_policy() {
        let d = portcullis_core::Duration::from_secs;
        let cases = [
            ("api", 10, d(60)),
            ("api", 10, d(60)),
            ("login", 10, d(60)),
            ("login", 11, d(60)),
            ("login", 11, d(61)),
            ("api", 10, d(60)),
            ("api", 10, portcullis_core::Duration::from_micros(1_500_000)),
        ];
        for (name, q, w) in cases {
            let want = format!("\"{name}\";q={q};w={}", ceil_secs(w));
            assert_eq!(policy_value(name, (q, w)).unwrap(), want.as_str());
        }
    }

    /// Shadow denials are counted by reason under the static labels.
    #[test]
    fn shadow_denials_are_counted_by_reason() {
        let rec = DebuggingRecorder::new();
        metrics::with_local_recorder(&rec, || {
            shadow_denial(Reason::Banned);
            shadow_denial(Reason::Banned);
            shadow_denial(Reason::RateLimited);
        });
        let mut seen: Vec<(String, u64)> = rec
            .snapshotter()
            .snapshot()
            .into_vec()
            .into_iter()
            .filter(|(k, ..)| k.key().name() == crate::metrics::SHADOW_DENIALS)
            .map(|(k, _, _, v)| {
                let labels: Vec<String> = k
                    .key()
                    .labels()
                    .map(|l| format!("{}={}", l.key(), l.value()))
                    .collect();
                let n = match v {
                    DebugValue::Counter(n) => n,
                    _ => 0,
                };
                (labels.join(","), n)
            })
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            [
                ("reason=banned".to_string(), 2),
                ("reason=rate_limited".to_string(), 1)
            ]
        );
    }
}
