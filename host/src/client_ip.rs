//! The client's address: the connection's peer, or, only when the peer is
//! a configured trusted proxy, the rightmost address in `Forwarded` (RFC
//! 7239) or `X-Forwarded-For` that is not itself a trusted proxy.
//! Malformed headers fall back to the peer.
//!
//! ```
//! use portcullis::client_ip::{client_ip, TrustedProxies};
//! use http::HeaderMap;
//!
//! let proxies = TrustedProxies::parse(&["10.0.0.0/8"]).unwrap();
//! let mut h = HeaderMap::new();
//! h.insert("x-forwarded-for", "203.0.113.9, 10.0.0.7".parse().unwrap());
//! // From the trusted proxy: the rightmost untrusted hop.
//! assert_eq!(client_ip("10.0.0.1".parse().unwrap(), &h, &proxies).to_string(), "203.0.113.9");
//! // From anyone else: the header is ignored.
//! assert_eq!(client_ip("198.51.100.1".parse().unwrap(), &h, &proxies).to_string(), "198.51.100.1");
//! ```

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use portcullis_core::{Cidr, CidrError};

/// CIDRs whose connections may name the client in forwarding headers.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(Vec<Cidr>);

/// The peer address, for services not run by axum (insert it as a request
/// extension; axum's `ConnectInfo<SocketAddr>` is read too).
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

impl TrustedProxies {
    /// From CIDR strings.
    pub fn parse<S: AsRef<str>>(list: &[S]) -> Result<TrustedProxies, (String, CidrError)> {
        list.iter()
            .map(|s| s.as_ref().parse().map_err(|e| (s.as_ref().to_string(), e)))
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedProxies)
    }

    /// From parsed CIDRs.
    pub fn new(list: Vec<Cidr>) -> Self {
        TrustedProxies(list)
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }
}

/// One `for=` value of `Forwarded`: `1.2.3.4`, `"1.2.3.4:80"`, `"[2001:db8::1]:80"`.
fn forwarded_node(v: &str) -> Option<IpAddr> {
    let v = v.trim().trim_matches('"');
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    if let Ok(ip) = v.parse() {
        return Some(ip);
    }
    v.parse::<SocketAddr>().ok().map(|s| s.ip())
}

/// The hop list, client first; `None` if absent, `Some(Err)` if malformed.
fn chain(headers: &HeaderMap) -> Option<Result<Vec<IpAddr>, ()>> {
    let fwd: Vec<_> = headers.get_all("forwarded").iter().collect();
    if !fwd.is_empty() {
        let mut out = Vec::new();
        for h in fwd {
            let Ok(s) = h.to_str() else {
                return Some(Err(()));
            };
            for element in s.split(',') {
                let mut found = false;
                for pair in element.split(';') {
                    let Some((k, v)) = pair.split_once('=') else {
                        continue;
                    };
                    if k.trim().eq_ignore_ascii_case("for") {
                        match forwarded_node(v) {
                            Some(ip) => out.push(ip),
                            None => return Some(Err(())),
                        }
                        found = true;
                    }
                }
                if !found {
                    return Some(Err(()));
                }
            }
        }
        return Some(Ok(out));
    }
    let xff: Vec<_> = headers.get_all("x-forwarded-for").iter().collect();
    if xff.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    for h in xff {
        let Ok(s) = h.to_str() else {
            return Some(Err(()));
        };
        for part in s.split(',') {
            match forwarded_node(part) {
                Some(ip) => out.push(ip),
                None => return Some(Err(())),
            }
        }
    }
    Some(Ok(out))
}

/// The address to limit for a request that arrived from `peer`.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    if !trusted.contains(peer) {
        return peer;
    }
    match chain(headers) {
        Some(Ok(hops)) if !hops.is_empty() => hops
            .iter()
            .rev()
            .find(|ip| !trusted.contains(**ip))
            .or_else(|| hops.first())
            .copied()
            .unwrap_or(peer),
        Some(Err(())) => {
            tracing::debug!(%peer, "malformed forwarding header; using the peer address");
            peer
        }
        _ => peer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        m
    }

    #[test]
    fn rightmost_untrusted_hop_wins() {
        let t = TrustedProxies::parse(&["10.0.0.0/8", "2001:db8:ffff::/48"]).unwrap();
        let p: IpAddr = "10.1.1.1".parse().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // The client claims to be 1.1.1.1, the first proxy saw 203.0.113.5.
        assert_eq!(
            client_ip(
                p,
                &h(&[("x-forwarded-for", "1.1.1.1, 203.0.113.5, 10.2.2.2")]),
                &t
            ),
            ip("203.0.113.5")
        );
        assert_eq!(
            client_ip(
                p,
                &h(&[
                    ("x-forwarded-for", "1.1.1.1"),
                    ("x-forwarded-for", "203.0.113.5")
                ]),
                &t
            ),
            ip("203.0.113.5")
        );
        assert_eq!(
            client_ip(
                p,
                &h(&[(
                    "forwarded",
                    "for=192.0.2.60;proto=http, for=\"[2001:db8::7]:4711\""
                )]),
                &t
            ),
            ip("2001:db8::7")
        );
        assert_eq!(
            client_ip(p, &h(&[("forwarded", "for=\"198.51.100.17:80\"")]), &t),
            ip("198.51.100.17")
        );
        // Malformed: the peer.
        assert_eq!(
            client_ip(p, &h(&[("x-forwarded-for", "1.1.1.1, garbage")]), &t),
            p
        );
        assert_eq!(client_ip(p, &h(&[("forwarded", "by=1.2.3.4")]), &t), p);
        // All hops trusted: the leftmost.
        assert_eq!(
            client_ip(p, &h(&[("x-forwarded-for", "10.9.9.9, 10.8.8.8")]), &t),
            ip("10.9.9.9")
        );
        // Untrusted peer: headers ignored.
        let q = ip("198.51.100.1");
        assert_eq!(client_ip(q, &h(&[("x-forwarded-for", "1.1.1.1")]), &t), q);
        // No header: the peer.
        assert_eq!(client_ip(p, &HeaderMap::new(), &t), p);
    }
}
