//! Proxy mode's forwarding: `[upstream] url = "http://127.0.0.1:3000"`
//! makes `portcullis serve` forward every request the pipeline lets through
//! to the upstream and stream its answer back (`docs/pipeline.md`).
//!
//! - Bodies are streamed both ways; only `[[login_routes]]` buffer the
//!   request body (up to `max_body`, `413` beyond) to find the username.
//! - Hop-by-hop headers (`Connection` and the ones it names, `Keep-Alive`,
//!   `Proxy-*`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`) are dropped
//!   both ways; `Host` is kept even when `Connection` names it. The edit
//!   is `forwarding.rs`'s.
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
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use metrics::{counter, describe_counter};

use crate::config::proxy::Upstream;
use crate::forwarding::Forwarding;
pub use crate::forwarding::CLIENT_SENT;

const UPSTREAM_ERRORS: &str = "portcullis_upstream_errors_total";

/// The upstream client.
pub struct Proxy {
    client: crate::upstream::Client,
    upstream: Upstream,
}

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
        // Built in a block, so `parts` (borrowed by the edit) is not kept
        // in this future's state beside the request it became.
        let (req, forwarding) = {
            let (mut parts, body) = req.into_parts();
            // The origin form of the request's own target (its bytes
            // shared, not copied; the upstream client names the
            // upstream's `Host`).
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
            let forwarding = Forwarding::new(&parts.headers, ip, trusted);
            (http::Request::from_parts(parts, body), forwarding)
        };
        match self.client.forward(req, Some(&forwarding)).await {
            Ok(resp) => resp,
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
