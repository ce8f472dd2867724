//! Proxy mode's forwarding: `[upstream] url = "http://127.0.0.1:3000"`
//! makes `portcullis serve` forward every request the pipeline lets through
//! to the upstream and stream its answer back (`docs/pipeline.md`).
//!
//! - Bodies are streamed both ways; only `[[login_routes]]` buffer the
//!   request body (up to `max_body`, `413` beyond) to find the username.
//! - Hop-by-hop headers (`Connection` and the ones it names, `Keep-Alive`,
//!   `Proxy-*`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`) are dropped
//!   both ways.
//! - Forwarding headers: from a peer outside `server.trusted_proxies`,
//!   every client-sent header that names a client, host or scheme
//!   ([`CLIENT_SENT`]: `Forwarded`, `X-Forwarded-*`, `X-Real-IP`,
//!   `True-Client-IP`, `X-Client-IP`, `X-Cluster-Client-IP`,
//!   `CF-Connecting-IP`, `Fastly-Client-IP`, `X-Original-*`) is dropped.
//!   Then `X-Forwarded-For` is set to the client address portcullis
//!   decided on and `Forwarded: for=…;proto=…` (RFC 7239; IPv6 quoted and
//!   bracketed) beside it; `X-Forwarded-Proto` and `-Host` are kept from a
//!   trusted proxy and otherwise set to `http` and the request's `Host`.
//!   `Host` is kept.
//! - `Upgrade` requests (WebSocket) are refused with `501` and a body
//!   saying so: the proxy does not tunnel them.
//! - Upstream unreachable: `502`; no response head within
//!   `response_timeout`: `504`. Both have a short text body and are counted
//!   in `portcullis_upstream_errors_total{status}`.

use std::net::IpAddr;

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use metrics::{counter, describe_counter};

use crate::config::proxy::Upstream;

const UPSTREAM_ERRORS: &str = "portcullis_upstream_errors_total";

/// The upstream client.
pub struct Proxy {
    client: crate::upstream::Client,
    upstream: Upstream,
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

/// Headers through which a client could name another client address,
/// host, scheme or original request: dropped unless the peer is a trusted
/// proxy.
pub const CLIENT_SENT: [&str; 16] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-server",
    "x-forwarded-method",
    "x-forwarded-uri",
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-original-uri",
    "x-original-method",
];

/// Drop the hop-by-hop headers (the listed ones and those the
/// `Connection` header names) and, when `client_sent`, what an untrusted
/// client said about forwarding (every [`CLIENT_SENT`] header and any
/// other `X-Original-*`).
///
/// One pass over the headers present (a request has a handful), not a
/// hashed removal per listed name; `Connection` is read only when present,
/// and nothing is allocated when nothing matches.
fn strip(h: &mut HeaderMap, client_sent: bool) {
    let mut drop: Vec<HeaderName> = Vec::new();
    let mut connection = false;
    for k in h.keys() {
        let name = k.as_str();
        if HOP_BY_HOP.contains(&name) {
            connection |= k == header::CONNECTION;
            drop.push(k.clone());
        } else if client_sent && (CLIENT_SENT.contains(&name) || name.starts_with("x-original-")) {
            drop.push(k.clone());
        }
    }
    if connection {
        let named = h
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            // `keep-alive` is listed already; `close` names no header.
            .filter(|n| !n.eq_ignore_ascii_case("keep-alive") && !n.eq_ignore_ascii_case("close"))
            .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok());
        drop.extend(named);
    }
    for n in drop {
        h.remove(n);
    }
}

/// [`strip`] without the client-sent part: what a response loses.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    strip(h, false);
}

/// Text built on the stack for a header value (an address is at most 45
/// bytes, `Forwarded` about 70): the value's own bytes are its one
/// allocation, no intermediate `String`.
struct Text {
    buf: [u8; 96],
    len: usize,
}

impl Text {
    fn new() -> Text {
        Text {
            buf: [0; 96],
            len: 0,
        }
    }

    /// Append `b`; `None` (and nothing appended) when it does not fit.
    fn push(&mut self, b: &[u8]) -> Option<()> {
        let end = self.len.checked_add(b.len())?;
        self.buf.get_mut(self.len..end)?.copy_from_slice(b);
        self.len = end;
        Some(())
    }

    /// Append `ip` as `Display` writes it. IPv4 is written by hand: through
    /// the formatting machinery it cost about 1 000 instructions a call,
    /// twice per proxied request (`bench/request_icount.sh`).
    fn ip(&mut self, ip: IpAddr) -> Option<()> {
        match ip {
            IpAddr::V4(v4) => {
                for (i, o) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        self.push(b".")?;
                    }
                    let d = [b'0' + o / 100, b'0' + o / 10 % 10, b'0' + o % 10];
                    let skip = if o >= 100 {
                        0
                    } else if o >= 10 {
                        1
                    } else {
                        2
                    };
                    self.push(d.get(skip..)?)?;
                }
                Some(())
            }
            IpAddr::V6(v6) => {
                use std::fmt::Write;
                write!(self, "{v6}").ok()
            }
        }
    }

    fn value(&self) -> Option<HeaderValue> {
        HeaderValue::from_bytes(self.buf.get(..self.len)?).ok()
    }
}

impl std::fmt::Write for Text {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.push(s.as_bytes()).ok_or(std::fmt::Error)
    }
}

/// `X-Forwarded-For: ip` and `Forwarded: for=...;proto=...` (RFC 7239
/// section 6: an IPv6 address is quoted and bracketed).
fn forwarding_values(ip: IpAddr, proto: &str) -> Option<(HeaderValue, HeaderValue)> {
    let mut addr = Text::new();
    addr.ip(ip)?;
    let mut fwd = Text::new();
    let (open, close): (&[u8], &[u8]) = match ip {
        IpAddr::V4(_) => (b"for=", b";proto="),
        IpAddr::V6(_) => (b"for=\"[", b"]\";proto="),
    };
    fwd.push(open)?;
    fwd.push(addr.buf.get(..addr.len)?)?;
    fwd.push(close)?;
    fwd.push(proto.as_bytes())?;
    Some((addr.value()?, fwd.value()?))
}

/// Prepare a request's headers for the upstream: drop its hop-by-hop
/// headers and, from an untrusted peer, what it said about forwarding
/// ([`strip`], one pass), then set the forwarding headers for client `ip`
/// (see the module doc).
fn set_forwarding(h: &mut HeaderMap, ip: IpAddr, trusted: bool) {
    strip(h, !trusted);
    // From an untrusted peer the strip removed every forwarding header:
    // set them without asking.
    let given_proto = if trusted {
        h.get(X_FORWARDED_PROTO).map(|v| v.as_bytes() == b"https")
    } else {
        None
    };
    if given_proto.is_none() {
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if !trusted || !h.contains_key(X_FORWARDED_HOST) {
        if let Some(host) = h.get(header::HOST).cloned() {
            h.insert(X_FORWARDED_HOST, host);
        }
    }
    let proto = if given_proto == Some(true) {
        "https"
    } else {
        "http"
    };
    if let Some((xff, fwd)) = forwarding_values(ip, proto) {
        h.insert(X_FORWARDED_FOR, xff);
        h.insert(header::FORWARDED, fwd);
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// A short plain-text answer of portcullis's own.
pub fn text(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

impl Proxy {
    /// A client of `upstream`.
    pub fn new(upstream: Upstream) -> Proxy {
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
        Proxy { client, upstream }
    }

    /// The upstream it forwards to.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// Forward `req` from client `ip` (`trusted`: the peer is a trusted
    /// proxy) and stream the answer back (501 for an upgrade, 502/504 on
    /// failure).
    pub async fn forward(&self, ip: IpAddr, trusted: bool, req: Request) -> Response {
        if req.headers().contains_key(header::UPGRADE) {
            return text(
                StatusCode::NOT_IMPLEMENTED,
                "portcullis: Upgrade (WebSocket) requests are not proxied\n",
            );
        }
        let (mut parts, body) = req.into_parts();
        // The origin form of the request's own target (its bytes shared,
        // not copied; the upstream client names the upstream's `Host`).
        let mut uri = http::uri::Parts::default();
        uri.path_and_query = Some(
            parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
        );
        let Ok(uri) = Uri::from_parts(uri) else {
            return text(StatusCode::BAD_REQUEST, "portcullis: bad request target\n");
        };
        parts.uri = uri;
        parts.version = http::Version::HTTP_11;
        set_forwarding(&mut parts.headers, ip, trusted);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        let mut ips: Vec<IpAddr> = ["0.0.0.0", "255.255.255.255", "10.0.9.99", "1.20.100.255"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        ips.extend((0..=255u8).map(|o| IpAddr::from([o, 255 - o, o / 3, o.wrapping_mul(7)])));
        ips.push("2001:db8::1".parse().unwrap());
        ips.push("::ffff:1.2.3.4".parse().unwrap());
        ips.push("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap());
        for ip in ips {
            let (xff, fwd) = forwarding_values(ip, "https").unwrap();
            assert_eq!(xff, ip.to_string().as_str());
            let want = match ip {
                IpAddr::V4(_) => format!("for={ip};proto=https"),
                IpAddr::V6(_) => format!("for=\"[{ip}]\";proto=https"),
            };
            assert_eq!(fwd, want.as_str());
        }
    }

    #[test]
    fn client_sent_forwarding_headers_are_dropped_unless_trusted() {
        let mut h = HeaderMap::new();
        for n in CLIENT_SENT {
            h.insert(n, HeaderValue::from_static("6.6.6.6"));
        }
        h.insert("x-original-anything", HeaderValue::from_static("x"));
        h.insert(header::HOST, HeaderValue::from_static("app.example"));
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        set_forwarding(&mut h, ip, false);
        assert_eq!(h["x-forwarded-for"], "2001:db8::1");
        assert_eq!(h["forwarded"], "for=\"[2001:db8::1]\";proto=http");
        assert_eq!(h["x-forwarded-host"], "app.example");
        assert_eq!(h["x-forwarded-proto"], "http");
        for n in CLIENT_SENT
            .iter()
            .filter(|n| !n.starts_with("x-forwarded-") && **n != "forwarded")
        {
            assert!(!h.contains_key(*n), "{n}");
        }
        assert!(!h.contains_key("x-original-anything"));
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        h.insert("x-real-ip", HeaderValue::from_static("10.0.0.1"));
        set_forwarding(&mut h, "10.0.0.1".parse().unwrap(), true);
        assert_eq!(h["forwarded"], "for=10.0.0.1;proto=https");
        assert_eq!(h["x-real-ip"], "10.0.0.1", "a trusted proxy's headers stay");
    }

    /// The request side strips hop-by-hop headers inside `set_forwarding`,
    /// trusted peer or not, including those its `Connection` names, before
    /// the forwarding headers are set (a `Connection` naming
    /// `X-Forwarded-Proto` cannot keep a trusted `https` either).
    #[test]
    fn requests_lose_hop_by_hop_headers_before_forwarding_is_set() {
        for trusted in [false, true] {
            let mut h = HeaderMap::new();
            for (k, v) in [
                (
                    "connection",
                    "Keep-Alive, X-Secret, x-forwarded-proto, close",
                ),
                ("x-secret", "1"),
                ("te", "trailers"),
                ("x-forwarded-proto", "https"),
                ("x-kept", "yes"),
            ] {
                h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
            }
            set_forwarding(&mut h, "10.0.0.1".parse().unwrap(), trusted);
            for gone in ["connection", "x-secret", "te"] {
                assert!(!h.contains_key(gone), "{gone} (trusted: {trusted})");
            }
            assert_eq!(h["x-forwarded-proto"], "http", "trusted: {trusted}");
            assert_eq!(h["forwarded"], "for=10.0.0.1;proto=http");
            assert_eq!(h["x-kept"], "yes");
        }
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
}
