//! What headers lose and gain crossing the proxy (the rules are in
//! `proxy.rs`'s module doc): hop-by-hop headers are dropped both
//! ways; on a request from a peer outside `server.trusted_proxies`, every
//! header naming a client, host or scheme ([`CLIENT_SENT`]) too; then the
//! forwarding headers are set.
//!
//! [`Forwarding`] decides a request's edit once, from its headers. The
//! upstream client applies it to the header map only for requests it
//! hands to hyper (those with a body); for the others the HTTP/1.1 writer
//! (`h1`) asks [`Forwarding::keeps`] per header and appends
//! [`Forwarding::write_added`], so the edited map is never built: that was
//! about 2 000 instructions of a proxied request (`bench/request_icount.sh`).
//! A test holds both ways to the same headers.

use std::net::IpAddr;

use axum::http::{header, HeaderMap, HeaderName, HeaderValue};

/// Hop-by-hop headers (RFC 9110 7.6.1), dropped both ways.
pub const HOP_BY_HOP: [&str; 9] = [
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
/// proxy (and any other `X-Original-*`).
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

/// `name` is hop-by-hop (one of [`HOP_BY_HOP`]).
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name.as_str())
}

/// `name` says something about forwarding (one of [`CLIENT_SENT`] or an
/// `X-Original-*`).
fn is_client_sent(name: &str) -> bool {
    CLIENT_SENT.contains(&name) || name.starts_with("x-original-")
}

/// A `Connection` token that names a header to drop (RFC 9110 7.6.1):
/// anything but `keep-alive` (listed already), `close` (names no header)
/// and `host` (never hop-by-hop: a request without it would be another
/// request).
fn names_a_header(token: &[u8]) -> bool {
    !token.is_empty()
        && !token.eq_ignore_ascii_case(b"keep-alive")
        && !token.eq_ignore_ascii_case(b"close")
        && !token.eq_ignore_ascii_case(b"host")
}

/// Whether the `Connection` value `v` names any header to drop (the test
/// before [`connection_named`], which allocates).
pub fn names_headers(v: &[u8]) -> bool {
    v.split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .any(names_a_header)
}

/// The headers the `Connection` values in `values` name ([`names_a_header`]).
/// Empty, without allocating, when they name none.
pub fn connection_named<'a>(values: impl Iterator<Item = &'a HeaderValue>) -> Vec<HeaderName> {
    values
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|n| names_a_header(n.as_bytes()))
        .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
        .collect()
}

/// Drop the hop-by-hop headers (the listed ones and those the
/// `Connection` header names) and, when `client_sent`, what an untrusted
/// client said about forwarding.
///
/// One pass over the headers present (a request has a handful), not a
/// hashed removal per listed name; nothing is allocated when nothing
/// matches.
fn strip(h: &mut HeaderMap, client_sent: bool) {
    let mut drop: Vec<HeaderName> = Vec::new();
    let mut connection = false;
    for k in h.keys() {
        if is_hop_by_hop(k) {
            connection |= k == header::CONNECTION;
            drop.push(k.clone());
        } else if client_sent && is_client_sent(k.as_str()) {
            drop.push(k.clone());
        }
    }
    if connection {
        drop.extend(connection_named(h.get_all(header::CONNECTION).iter()));
    }
    for n in drop {
        h.remove(n);
    }
}

/// What a response loses: its hop-by-hop headers, those its `Connection`
/// names included.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    strip(h, false);
}

/// Text built on the stack for a header value (an address is at most 45
/// bytes, `Forwarded` about 70): no intermediate `String`.
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

    fn bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
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
}

impl std::fmt::Write for Text {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.push(s.as_bytes()).ok_or(std::fmt::Error)
    }
}

/// `Forwarded: for=...;proto=...` (RFC 7239 section 6: an IPv6 address
/// is quoted and bracketed), the address inside it being the
/// `X-Forwarded-For` value: one text, not two.
struct Values {
    forwarded: Text,
    /// Where the address is in `forwarded`.
    addr: std::ops::Range<usize>,
}

impl Values {
    fn of(ip: IpAddr, https: bool) -> Option<Values> {
        let mut t = Text::new();
        let (open, close): (&[u8], &[u8]) = match ip {
            IpAddr::V4(_) => (b"for=", b";proto="),
            IpAddr::V6(_) => (b"for=\"[", b"]\";proto="),
        };
        t.push(open)?;
        let start = t.len;
        t.ip(ip)?;
        let addr = start..t.len;
        t.push(close)?;
        t.push(if https { b"https" } else { b"http" })?;
        Some(Values { forwarded: t, addr })
    }

    fn forwarded(&self) -> &[u8] {
        self.forwarded.bytes()
    }

    fn x_forwarded_for(&self) -> &[u8] {
        self.forwarded.bytes().get(self.addr.clone()).unwrap_or(&[])
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// How one request's headers change on the way upstream.
pub struct Forwarding {
    /// Drop what the peer said about forwarding: it is not a trusted proxy.
    untrusted: bool,
    /// The headers the request's `Connection` names.
    named: Vec<HeaderName>,
    /// A trusted proxy's `X-Forwarded-Proto` stays (else it is `http`).
    keep_proto: bool,
    /// `X-Forwarded-Host` is set to the request's `Host`, unless a trusted
    /// proxy sent one.
    set_host: bool,
    /// `X-Forwarded-For` and `Forwarded`.
    values: Option<Values>,
}

impl Forwarding {
    /// The edit for a request with `headers` from client `ip` (`trusted`:
    /// the peer is a trusted proxy).
    ///
    /// One pass over the headers (a request has a handful) rather than a
    /// hashed lookup per name; nothing is cloned.
    pub fn new(headers: &HeaderMap, ip: IpAddr, trusted: bool) -> Forwarding {
        let (mut connection, mut proto, mut fwd_host) = (false, None, false);
        for (k, v) in headers {
            if k == header::CONNECTION {
                connection = true;
            } else if *k == X_FORWARDED_PROTO {
                proto = proto.or(Some(v.as_bytes() == b"https"));
            } else if *k == X_FORWARDED_HOST {
                fwd_host = true;
            }
        }
        let named = if connection {
            connection_named(headers.get_all(header::CONNECTION).iter())
        } else {
            Vec::new()
        };
        let given = |present: bool, n: &HeaderName| trusted && present && !named.contains(n);
        let keep_proto = given(proto.is_some(), &X_FORWARDED_PROTO);
        let set_host = !given(fwd_host, &X_FORWARDED_HOST);
        Forwarding {
            untrusted: !trusted,
            named,
            keep_proto,
            set_host,
            values: Values::of(ip, keep_proto && proto == Some(true)),
        }
    }

    /// A request header `name` goes upstream as the client sent it.
    pub fn keeps(&self, name: &HeaderName) -> bool {
        if is_hop_by_hop(name) || name == X_FORWARDED_FOR || name == header::FORWARDED {
            return false;
        }
        if *name == X_FORWARDED_PROTO {
            return self.keep_proto;
        }
        if *name == X_FORWARDED_HOST && self.set_host {
            return false;
        }
        let client_sent = self.untrusted && is_client_sent(name.as_str());
        !client_sent && !self.named.contains(name)
    }

    /// The headers it sets, `name: value\r\n` each, appended to `out`;
    /// `host` is the request's `Host` (the writer passed it on its way).
    pub fn write_added(&self, host: Option<&HeaderValue>, out: &mut Vec<u8>) {
        if !self.keep_proto {
            out.extend_from_slice(b"x-forwarded-proto: http\r\n");
        }
        if let Some(host) = host.filter(|_| self.set_host) {
            out.extend_from_slice(b"x-forwarded-host: ");
            out.extend_from_slice(host.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if let Some(v) = &self.values {
            out.extend_from_slice(b"x-forwarded-for: ");
            out.extend_from_slice(v.x_forwarded_for());
            out.extend_from_slice(b"\r\nforwarded: ");
            out.extend_from_slice(v.forwarded());
            out.extend_from_slice(b"\r\n");
        }
    }

    /// The same edit made on the header map `h` (the request's own).
    pub fn apply(&self, h: &mut HeaderMap) {
        strip(h, self.untrusted);
        if !self.keep_proto {
            h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        }
        if self.set_host {
            if let Some(host) = h.get(header::HOST).cloned() {
                h.insert(X_FORWARDED_HOST, host);
            }
        }
        if let Some(v) = &self.values {
            let value = |b: &[u8]| HeaderValue::from_bytes(b).ok();
            if let (Some(xff), Some(fwd)) = (value(v.x_forwarded_for()), value(v.forwarded())) {
                h.insert(X_FORWARDED_FOR, xff);
                h.insert(header::FORWARDED, fwd);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn set_forwarding(h: &mut HeaderMap, ip: IpAddr, trusted: bool) {
        Forwarding::new(h, ip, trusted).apply(h);
    }

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
            let v = Values::of(ip, true).unwrap();
            let (xff, fwd) = (v.x_forwarded_for(), v.forwarded());
            assert_eq!(xff, ip.to_string().as_bytes());
            let want = match ip {
                IpAddr::V4(_) => format!("for={ip};proto=https"),
                IpAddr::V6(_) => format!("for=\"[{ip}]\";proto=https"),
            };
            assert_eq!(fwd, want.as_bytes());
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
        let mut h = map(&[("x-forwarded-proto", "https"), ("x-real-ip", "10.0.0.1")]);
        set_forwarding(&mut h, "10.0.0.1".parse().unwrap(), true);
        assert_eq!(h["forwarded"], "for=10.0.0.1;proto=https");
        assert_eq!(h["x-real-ip"], "10.0.0.1", "a trusted proxy's headers stay");
    }

    /// The request side strips hop-by-hop headers, trusted peer or not,
    /// including those its `Connection` names, before the forwarding
    /// headers are set (a `Connection` naming `X-Forwarded-Proto` cannot
    /// keep a trusted `https` either). `Connection` cannot name `Host`.
    #[test]
    fn requests_lose_hop_by_hop_headers_before_forwarding_is_set() {
        for trusted in [false, true] {
            let mut h = map(&[
                (
                    "connection",
                    "Keep-Alive, X-Secret, x-forwarded-proto, close, Host",
                ),
                ("host", "app.example"),
                ("x-secret", "1"),
                ("te", "trailers"),
                ("x-forwarded-proto", "https"),
                ("x-kept", "yes"),
            ]);
            set_forwarding(&mut h, "10.0.0.1".parse().unwrap(), trusted);
            for gone in ["connection", "x-secret", "te"] {
                assert!(!h.contains_key(gone), "{gone} (trusted: {trusted})");
            }
            assert_eq!(h["x-forwarded-proto"], "http", "trusted: {trusted}");
            assert_eq!(h["forwarded"], "for=10.0.0.1;proto=http");
            assert_eq!(h["x-kept"], "yes");
            assert_eq!(h["host"], "app.example");
        }
    }

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut m = map(&[
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("te", "trailers"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut m);
        assert_eq!(m.len(), 1, "{m:?}");
        assert_eq!(m.get("x-kept").unwrap(), "yes");
    }

    /// The headers of `h` as the writer sends them: kept ones in order,
    /// then the added ones, as (name, value) pairs sorted by name (the
    /// values of one name in their order).
    fn written(h: &HeaderMap, f: &Forwarding) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for (k, v) in h {
            if f.keeps(k) {
                out.extend_from_slice(k.as_str().as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(v.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
        f.write_added(h.get(header::HOST), &mut out);
        let mut pairs: Vec<(String, Vec<u8>)> = out
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let l = l.strip_suffix(b"\r").unwrap();
                let at = l.windows(2).position(|w| w == b": ").unwrap();
                let (k, v) = l.split_at(at);
                (String::from_utf8(k.to_vec()).unwrap(), v[2..].to_vec())
            })
            .collect();
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        pairs
    }

    fn applied(h: &HeaderMap, f: &Forwarding) -> Vec<(String, Vec<u8>)> {
        let mut h = h.clone();
        f.apply(&mut h);
        let mut pairs: Vec<(String, Vec<u8>)> = h
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
            .collect();
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        pairs
    }

    const NAMES: [&str; 16] = [
        "host",
        "connection",
        "keep-alive",
        "te",
        "upgrade",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-real-ip",
        "x-original-path",
        "x-secret",
        "cookie",
        "accept",
        "proxy-connection",
        "transfer-encoding",
    ];
    const VALUES: [&str; 8] = [
        "https",
        "http",
        "app.example",
        "close",
        "x-secret, X-Forwarded-Host",
        "keep-alive, x-forwarded-proto",
        "cookie,,  ,forwarded",
        "1.2.3.4",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The writer's edit (`keeps` + `write_added`) and the map's edit
        /// (`apply`) send the same headers, whatever a hostile client
        /// puts in `Connection` and the forwarding headers.
        #[test]
        fn writing_and_applying_agree(
            pairs in proptest::collection::vec((0..NAMES.len(), 0..VALUES.len()), 0..12),
            trusted: bool,
            v6: bool,
        ) {
            let h = map(&pairs.iter().map(|&(n, v)| (NAMES[n], VALUES[v])).collect::<Vec<_>>());
            let ip: IpAddr = if v6 { "2001:db8::7".parse().unwrap() } else { "10.1.2.3".parse().unwrap() };
            let f = Forwarding::new(&h, ip, trusted);
            prop_assert_eq!(written(&h, &f), applied(&h, &f));
        }
    }
}
