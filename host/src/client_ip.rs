//! The client's address: the connection's peer, or, only when the peer is
//! a configured trusted proxy, the client named by ONE configured
//! forwarding header ([`ForwardingHeader`]: `X-Forwarded-For` by default,
//! `Forwarded` (RFC 7239), or a single-address header such as `X-Real-IP`).
//! Other forwarding headers are ignored, so a client cannot add a header the
//! proxy passes through untouched and pick its own key.
//!
//! # The rule
//!
//! Every line of the configured header is read, in order, and split into
//! comma-separated entries (empty elements and surrounding whitespace are
//! ignored, as HTTP list syntax asks). The entries are walked from the
//! RIGHT, the hop nearest to us first:
//!
//! 1. an address inside `trusted_proxies` is a proxy that appended the entry
//!    to its left: step over it;
//! 2. the first address outside `trusted_proxies` is the client;
//! 3. the first entry that is not an address (garbage, `unknown`, an
//!    obfuscated `_hidden` identifier, an element of `Forwarded` without
//!    `for=`) ends the walk: the client is [`UNIDENTIFIED`], one fixed key.
//! 4. if every entry is a trusted address, the leftmost one is the client
//!    (a request from inside the trusted range).
//!
//! Why (3) is a fixed key: an entry met in the walk was written by a trusted
//! hop about its own peer, or passed through unchanged by a hop that did not
//! append; either way the hop could not or would not say who the client is.
//! Falling back to the peer (the old behaviour) keyed such requests by the
//! proxy's own address, which the operator may have allowlisted and which
//! an attacker who can get garbage into that position could use to escape a
//! block. Believing any entry further left would let whoever wrote it choose
//! its bucket. A key derived from the malformed text would let its author
//! choose buckets too. So every unidentifiable client shares one key that
//! is no host's address (`100::`, the RFC 6666 discard-only prefix): stable,
//! not steerable, never a proxy, and visible as such in `/admin/bans`.
//! Garbage LEFT of the first untrusted address is never reached: with
//! `X-Forwarded-For: garbage, 203.0.113.9` the client is 203.0.113.9.
//!
//! Entries may be `203.0.113.9`, `203.0.113.9:5555`, `2001:db8::1`,
//! `[2001:db8::1]`, `[2001:db8::1]:443`; in `Forwarded`, `for=` values may
//! be quoted (`for="[2001:db8::1]:443"`), with other parameters in any order.
//! IPv4-mapped IPv6 addresses count as their IPv4 address.
//!
//! ```
//! use portcullis::{client_ip, TrustedProxies, UNIDENTIFIED};
//! use http::HeaderMap;
//!
//! let proxies = TrustedProxies::parse(&["10.0.0.0/8"]).unwrap();
//! let mut h = HeaderMap::new();
//! h.insert("x-forwarded-for", "garbage, 203.0.113.9, 10.0.0.7".parse().unwrap());
//! // From the trusted proxy: the rightmost untrusted hop.
//! assert_eq!(client_ip("10.0.0.1".parse().unwrap(), &h, &proxies).to_string(), "203.0.113.9");
//! // From anyone else: the header is ignored.
//! assert_eq!(client_ip("198.51.100.1".parse().unwrap(), &h, &proxies).to_string(), "198.51.100.1");
//! // The trusted proxy could not name the client: one fixed key, not the proxy.
//! h.insert("x-forwarded-for", "203.0.113.9, unknown".parse().unwrap());
//! assert_eq!(client_ip("10.0.0.1".parse().unwrap(), &h, &proxies), UNIDENTIFIED);
//! ```

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use http::{HeaderMap, HeaderName};
use portcullis_core::{Cidr, CidrError};

/// The key of a client whose forwarding entry is not an address (see the
/// module docs): `100::`, inside the RFC 6666 discard-only prefix, so it is
/// no host's address.
pub const UNIDENTIFIED: IpAddr = IpAddr::V6(Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0));

/// Which request header names the client when the peer is a trusted proxy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ForwardingHeader {
    /// `X-Forwarded-For`: comma-separated addresses, the client first.
    #[default]
    XForwardedFor,
    /// `Forwarded` (RFC 7239): the `for=` parameter of each element.
    Forwarded,
    /// Another header holding addresses in the `X-Forwarded-For` syntax,
    /// usually a single one set by the proxy (`X-Real-IP`,
    /// `CF-Connecting-IP`, `True-Client-IP`).
    Other(HeaderName),
}

impl std::str::FromStr for ForwardingHeader {
    type Err = String;

    /// A header name, case-insensitive.
    fn from_str(s: &str) -> Result<Self, String> {
        let name = HeaderName::from_bytes(s.trim().as_bytes())
            .map_err(|_| format!("{s:?} is not a header name"))?;
        Ok(match name.as_str() {
            "x-forwarded-for" => ForwardingHeader::XForwardedFor,
            "forwarded" => ForwardingHeader::Forwarded,
            _ => ForwardingHeader::Other(name),
        })
    }
}

impl std::fmt::Display for ForwardingHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ForwardingHeader::XForwardedFor => f.write_str("X-Forwarded-For"),
            ForwardingHeader::Forwarded => f.write_str("Forwarded"),
            ForwardingHeader::Other(n) => f.write_str(n.as_str()),
        }
    }
}

/// CIDRs whose connections may name the client in the forwarding header,
/// and which header that is.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(Vec<Cidr>, ForwardingHeader);

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
            .map(TrustedProxies::new)
    }

    /// From parsed CIDRs.
    pub fn new(list: Vec<Cidr>) -> Self {
        TrustedProxies(list, ForwardingHeader::default())
    }

    /// Read the client from `header` instead of `X-Forwarded-For`.
    pub fn header(mut self, header: ForwardingHeader) -> Self {
        self.1 = header;
        self
    }

    /// The header the client is read from.
    pub fn forwarding_header(&self) -> &ForwardingHeader {
        &self.1
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|c| c.contains(ip))
    }
}

/// A decimal port, or (`Forwarded` only) an obfuscated one (`_abc`).
fn port_ok(p: &str, obfuscated_ok: bool) -> bool {
    if obfuscated_ok && p.len() > 1 && p.starts_with('_') {
        return p[1..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    }
    !p.is_empty()
        && p.len() <= 5
        && p.bytes().all(|b| b.is_ascii_digit())
        && p.parse::<u16>().is_ok()
}

/// One entry: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]`,
/// `[2001:db8::1]:80`. `None`: not an address (`unknown`, `_hidden`, junk).
fn node(v: &str, obfuscated_port_ok: bool) -> Option<IpAddr> {
    let ip = if let Some(rest) = v.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        if !after.is_empty() && !port_ok(after.strip_prefix(':')?, obfuscated_port_ok) {
            return None;
        }
        IpAddr::V6(inner.parse().ok()?)
    } else if let Ok(ip) = v.parse::<IpAddr>() {
        ip
    } else {
        let (host, port) = v.rsplit_once(':')?;
        if !port_ok(port, obfuscated_port_ok) {
            return None;
        }
        IpAddr::V4(host.parse().ok()?)
    };
    Some(ip.to_canonical())
}

/// HTTP optional whitespace.
fn ows(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

/// One `Forwarded` element (`for=…;proto=…;by=…`): its single `for=` node.
/// No `for=`, two of them, or a value that is not an address: `None`.
fn forwarded_element(element: &str) -> Option<IpAddr> {
    let mut found = None;
    for pair in element.split(';') {
        let Some((k, v)) = pair.split_once('=') else {
            continue;
        };
        if !ows(k).eq_ignore_ascii_case("for") {
            continue;
        }
        if found.is_some() {
            return None;
        }
        let v = ows(v);
        let v = match v.strip_prefix('"') {
            Some(q) => q.strip_suffix('"')?,
            None => v,
        };
        found = Some(node(v, true));
    }
    found.flatten()
}

/// The entries of the configured header, client first, across all its
/// lines: `Some(ip)` or `None` for an entry that is not an address.
///
/// Lines are split at every comma, even inside quotes: no `for=` node
/// holds a comma, and quote-aware splitting would let an unbalanced quote
/// from the client swallow the entries a proxy appended to its right.
fn entries(headers: &HeaderMap, header: &ForwardingHeader) -> Vec<Option<IpAddr>> {
    let (name, forwarded) = match header {
        ForwardingHeader::XForwardedFor => (
            http::header::HeaderName::from_static("x-forwarded-for"),
            false,
        ),
        ForwardingHeader::Forwarded => (http::header::FORWARDED, true),
        ForwardingHeader::Other(n) => (n.clone(), false),
    };
    let mut out = Vec::new();
    for line in headers.get_all(&name) {
        // Bytes that are not ASCII make only their own entry malformed.
        let line = String::from_utf8_lossy(line.as_bytes());
        for element in line.split(',').map(ows).filter(|e| !e.is_empty()) {
            out.push(if forwarded {
                forwarded_element(element)
            } else {
                node(element, false)
            });
        }
    }
    out
}

/// The address to limit for a request that arrived from `peer` (see the
/// module docs for the rule).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted.contains(peer) {
        return peer;
    }
    let mut leftmost_trusted = None;
    for entry in entries(headers, &trusted.1).into_iter().rev() {
        match entry {
            Some(ip) if trusted.contains(ip) => leftmost_trusted = Some(ip),
            Some(ip) => return ip,
            None => {
                tracing::debug!(%peer, header = %trusted.1, "forwarding entry is not an address; client unidentified");
                return UNIDENTIFIED;
            }
        }
    }
    leftmost_trusted.unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_bytes(v).unwrap(),
            );
        }
        m
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const PEER: &str = "10.1.1.1";

    fn trusted() -> TrustedProxies {
        TrustedProxies::parse(&["10.0.0.0/8", "2001:db8:ffff::/48"]).unwrap()
    }

    /// The client for `X-Forwarded-For` lines from the trusted peer.
    fn xff(lines: &[&str]) -> IpAddr {
        let pairs: Vec<_> = lines
            .iter()
            .map(|l| ("x-forwarded-for", l.as_bytes()))
            .collect();
        client_ip(ip(PEER), &h(&pairs), &trusted())
    }

    /// The client for `Forwarded` lines, with `Forwarded` configured.
    fn fwd(lines: &[&str]) -> IpAddr {
        let pairs: Vec<_> = lines.iter().map(|l| ("forwarded", l.as_bytes())).collect();
        let t = trusted().header(ForwardingHeader::Forwarded);
        client_ip(ip(PEER), &h(&pairs), &t)
    }

    #[test]
    fn rightmost_untrusted_entry_is_the_client() {
        // The client claims 1.1.1.1; the first proxy saw 203.0.113.5.
        assert_eq!(xff(&["1.1.1.1, 203.0.113.5, 10.2.2.2"]), ip("203.0.113.5"));
        // All lines, in order.
        assert_eq!(xff(&["1.1.1.1", "203.0.113.5"]), ip("203.0.113.5"));
        assert_eq!(
            xff(&["1.1.1.1, 203.0.113.5", "10.2.2.2"]),
            ip("203.0.113.5")
        );
        // All hops trusted: the leftmost.
        assert_eq!(xff(&["10.9.9.9, 10.8.8.8"]), ip("10.9.9.9"));
        // Whitespace and empty elements are list syntax, not entries.
        assert_eq!(xff(&[" ,\t203.0.113.5 ,, 10.2.2.2 ,"]), ip("203.0.113.5"));
        assert_eq!(xff(&["", "203.0.113.5"]), ip("203.0.113.5"));
    }

    #[test]
    fn garbage_left_of_the_client_changes_nothing() {
        // Finding 2: a malformed entry the client wrote is never reached.
        for garbage in [
            "garbage",
            "unknown",
            "_hidden",
            "1.2.3.4.5",
            "[::1",
            "\"1.2.3.4\"",
            "999.1.1.1",
        ] {
            assert_eq!(
                xff(&[&format!("{garbage}, 203.0.113.9")]),
                ip("203.0.113.9"),
                "{garbage}"
            );
            assert_eq!(xff(&[garbage, "203.0.113.9"]), ip("203.0.113.9"));
        }
        // Non-ASCII bytes spoil only their own entry.
        let pairs = [("x-forwarded-for", &b"\xff\xfe, 203.0.113.9"[..])];
        assert_eq!(
            client_ip(ip(PEER), &h(&pairs), &trusted()),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn malformed_entry_in_the_walk_is_one_fixed_key_never_the_proxy() {
        for v in [
            "203.0.113.9, garbage",
            "203.0.113.9, unknown, 10.2.2.2",
            "203.0.113.9, _hidden",
            "1.2.3.4:99999",
            "1.2.3.4:",
            "1.2.3.4:_obf", // obfuscated ports are Forwarded syntax only
            "fe80::1%eth0",
            "[2001:db8::1]x",
            "not-an-ip",
        ] {
            let got = xff(&[v]);
            assert_eq!(got, UNIDENTIFIED, "{v}");
            assert_ne!(got, ip(PEER));
        }
        // Whatever the client writes left of it, the same key.
        assert_eq!(
            xff(&["198.51.100.1, garbage"]),
            xff(&["198.51.100.2, garbage"])
        );
        assert!(!trusted().contains(UNIDENTIFIED));
    }

    #[test]
    fn ipv6_and_ports() {
        assert_eq!(xff(&["2001:db8::1"]), ip("2001:db8::1"));
        assert_eq!(xff(&["[2001:db8::1]"]), ip("2001:db8::1"));
        assert_eq!(xff(&["[2001:db8::1]:443"]), ip("2001:db8::1"));
        assert_eq!(xff(&["203.0.113.9:5555"]), ip("203.0.113.9"));
        assert_eq!(xff(&["::ffff:203.0.113.9"]), ip("203.0.113.9"));
        // Trusted IPv6 proxies are stepped over; mapped IPv4 ones too.
        assert_eq!(
            xff(&["2001:db8::1, [2001:db8:ffff::2]:80, ::ffff:10.3.3.3"]),
            ip("2001:db8::1")
        );
        // A mapped-IPv4 peer is the IPv4 peer (trusted, and keyed as IPv4).
        let pairs = [("x-forwarded-for", &b"203.0.113.9"[..])];
        assert_eq!(
            client_ip(ip("::ffff:10.1.1.1"), &h(&pairs), &trusted()),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_ip(ip("::ffff:198.51.100.1"), &h(&pairs), &trusted()),
            ip("198.51.100.1")
        );
    }

    #[test]
    fn forwarded_syntax() {
        assert_eq!(
            fwd(&["for=192.0.2.60;proto=http, for=\"[2001:db8::7]:4711\""]),
            ip("2001:db8::7")
        );
        assert_eq!(fwd(&["for=\"198.51.100.17:80\""]), ip("198.51.100.17"));
        assert_eq!(fwd(&["For=198.51.100.17;BY=10.0.0.1"]), ip("198.51.100.17"));
        assert_eq!(
            fwd(&["proto=https; for = 198.51.100.17 ;host=x"]),
            ip("198.51.100.17")
        );
        assert_eq!(fwd(&["for=\"198.51.100.17:_port\""]), ip("198.51.100.17"));
        assert_eq!(fwd(&["for=\"[2001:db8::7]\""]), ip("2001:db8::7"));
        // Client garbage on the left, the proxy's element on the right.
        assert_eq!(
            fwd(&["for=unknown, for=198.51.100.17"]),
            ip("198.51.100.17")
        );
        assert_eq!(fwd(&["for=\", for=198.51.100.17"]), ip("198.51.100.17"));
        assert_eq!(
            fwd(&["garbage", "for=198.51.100.17, for=10.0.0.3"]),
            ip("198.51.100.17")
        );
        // Unknown, obfuscated, missing or doubled `for`, broken quotes: malformed.
        for v in [
            "for=unknown",
            "for=_hidden",
            "for=\"_hidden:80\"",
            "by=1.2.3.4",
            "for=1.2.3.4;for=5.6.7.8",
            "for=\"1.2.3.4",
            "for=2001:db8::1:80:x",
            "for=198.51.100.17, proto=http",
        ] {
            assert_eq!(fwd(&[v]), UNIDENTIFIED, "{v}");
        }
    }

    #[test]
    fn one_configured_header_only() {
        let t = trusted();
        let p = ip(PEER);
        // Finding 3: with X-Forwarded-For configured, Forwarded is ignored.
        let both = h(&[
            ("x-forwarded-for", b"203.0.113.9"),
            ("forwarded", b"for=198.51.100.77"),
        ]);
        assert_eq!(client_ip(p, &both, &t), ip("203.0.113.9"));
        // And the other way round.
        let t2 = t.clone().header(ForwardingHeader::Forwarded);
        assert_eq!(client_ip(p, &both, &t2), ip("198.51.100.77"));
        // Only Forwarded sent while X-Forwarded-For is configured: no client
        // named, so the peer (as with no header at all).
        assert_eq!(
            client_ip(p, &h(&[("forwarded", b"for=198.51.100.77")]), &t),
            p
        );
        assert_eq!(client_ip(p, &HeaderMap::new(), &t), p);
        // A single-address header.
        let t3 = t.clone().header("X-Real-IP".parse().unwrap());
        let m = h(&[
            ("x-real-ip", b"203.0.113.4"),
            ("x-forwarded-for", b"198.51.100.1"),
        ]);
        assert_eq!(client_ip(p, &m, &t3), ip("203.0.113.4"));
        // Untrusted peer: headers ignored.
        let q = ip("198.51.100.1");
        assert_eq!(client_ip(q, &h(&[("x-forwarded-for", b"1.1.1.1")]), &t), q);
    }

    #[test]
    fn header_names() {
        let p = |s: &str| s.parse::<ForwardingHeader>();
        assert_eq!(p("X-Forwarded-For"), Ok(ForwardingHeader::XForwardedFor));
        assert_eq!(p("x-forwarded-for"), Ok(ForwardingHeader::XForwardedFor));
        assert_eq!(p("FORWARDED"), Ok(ForwardingHeader::Forwarded));
        assert_eq!(p("X-Real-IP").unwrap().to_string(), "x-real-ip");
        assert!(p("bad header").is_err());
        assert!(p("").is_err());
    }
}
