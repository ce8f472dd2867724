//! A raw HTTP/1.1 client for the tests: the request line and headers are
//! written byte for byte (a lowercase method, `//`, `/./`, `..`, `;params`,
//! `<`, `"` or 0xFF in the target reach the server as written, which an
//! URL-normalising client such as reqwest does not allow), from any
//! 127/8 source address (the socket is bound before it connects, so one
//! test can play many clients).

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// An answer: status, headers (names lowercase) and the body.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A request written as is: `method target`, `headers` and `body`
/// (`Host`, `Content-Length` and `Connection: close` are added).
#[derive(Clone, Debug)]
pub struct Raw<'a> {
    pub method: &'a str,
    /// The request target: bytes, so anything can be sent.
    pub target: &'a [u8],
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl<'a> Raw<'a> {
    pub fn new(method: &'a str, target: &'a [u8]) -> Self {
        Raw {
            method,
            target,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn get(target: &'a str) -> Self {
        Self::new("GET", target.as_bytes())
    }

    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }

    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    pub fn json(mut self, v: &serde_json::Value) -> Self {
        self.body = v.to_string().into_bytes();
        self.header("content-type", "application/json")
    }

    /// The bytes on the wire.
    pub fn bytes(&self, host: SocketAddr) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.target);
        out.extend_from_slice(b" HTTP/1.1\r\n");
        out.extend_from_slice(format!("host: {host}\r\nconnection: close\r\n").as_bytes());
        for (k, v) in &self.headers {
            out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        if !self.body.is_empty() || self.method.eq_ignore_ascii_case("post") {
            out.extend_from_slice(format!("content-length: {}\r\n", self.body.len()).as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }

    /// Send from source address `from` to `to`; the answer, or why none.
    pub fn send(&self, from: IpAddr, to: SocketAddr) -> Result<Answer, String> {
        let stream = connect_from(from, to).map_err(|e| format!("connect {from} -> {to}: {e}"))?;
        exchange(stream, &self.bytes(to))
    }
}

/// A TCP connection to `to` whose local address is `from` (any 127/8
/// address works on Linux: bound before connecting).
pub fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<std::net::TcpStream> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(to), Type::STREAM, None)?;
    s.bind(&SocketAddr::new(from, 0).into())?;
    s.connect_timeout(&to.into(), Duration::from_secs(10))?;
    let s: std::net::TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_write_timeout(Some(Duration::from_secs(30)))?;
    Ok(s)
}

/// Write `request`, read to the end (the request said `Connection: close`).
fn exchange(mut s: std::net::TcpStream, request: &[u8]) -> Result<Answer, String> {
    s.write_all(request).map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    // A reset after a complete answer (a server closing with unread input)
    // keeps what arrived.
    if let Err(e) = s.read_to_end(&mut buf) {
        if buf.is_empty() {
            return Err(format!("read: {e}"));
        }
    }
    parse_answer(&buf)
}

/// Parse a whole HTTP/1.1 response (Content-Length, chunked or to EOF).
pub fn parse_answer(buf: &[u8]) -> Result<Answer, String> {
    let end = find(buf, b"\r\n\r\n").ok_or_else(|| {
        format!(
            "no complete response head in {:?}",
            String::from_utf8_lossy(buf)
        )
    })?;
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &buf[end + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else if let Some(n) = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        rest[..n.min(rest.len())].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// A chunked body's data (as much as is there).
pub fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = find(rest, b"\r\n") {
        let size = std::str::from_utf8(&rest[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok());
        let Some(size) = size else { break };
        if size == 0 {
            break;
        }
        let start = eol + 2;
        let stop = (start + size).min(rest.len());
        out.extend_from_slice(&rest[start..stop]);
        rest = &rest[(stop + 2).min(rest.len())..];
    }
    out
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
