//! HTTP/1.1 on an upstream connection of its own, for the proxy's requests
//! without a body (most of them: `GET`, `HEAD`, ...): the request head is
//! written from the request's parts into one buffer and sent in one write,
//! the response head is parsed with `httparse` from the connection's read
//! buffer, and the body is handed on as slices of that buffer. hyper's
//! client connection costs about a third of a proxied request's
//! user-space instructions (its dispatch channel, role and connection
//! state machine: `bench/request_icount.sh`); this path does the same
//! exchange in a fraction of that. Requests with a body still go through
//! hyper (an early answer while the body is being sent is its business).
//!
//! Response framing follows RFC 9112 §6.3: no body for `HEAD`, 1xx, `204`
//! and `304`; `Transfer-Encoding` ending in `chunked` before
//! `Content-Length` (which is then dropped, and the connection not
//! reused); another transfer coding, or neither header: the body runs to
//! the connection's end; `Content-Length` values that disagree or do not
//! parse: refused ([`H1Error::Framing`]). Interim 1xx answers are skipped;
//! `101` is refused (the proxy never asks for an upgrade). A connection
//! goes back to the idle list only after a complete body with nothing
//! unread behind it, on an HTTP/1.1 answer without `Connection: close`.

use std::mem::MaybeUninit;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Response, StatusCode};
use http_body::{Frame, SizeHint};
use tokio::net::TcpStream;

use crate::forwarding::{self, Forwarding};

/// Headers a response head may have.
const MAX_HEADERS: usize = 100;
/// Bytes a response head may take.
const MAX_HEAD: usize = 64 * 1024;
/// Bytes a chunk-size line (with extensions) or a trailer line may take.
const MAX_LINE: usize = 4096;
/// Headers the proxy may add to a response (room kept in its map).
const EXTRA_HEADERS: usize = 4;
/// Read buffer kept per connection (grown for a long head, then kept).
const READ_BUF: usize = 8 * 1024;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    /// The connection failed or ended.
    #[error("upstream connection: {0}")]
    Io(#[from] std::io::Error),
    /// The connection ended before a complete response head.
    #[error("upstream closed the connection before answering")]
    Closed,
    /// The response head is not valid HTTP/1.x or too large.
    #[error("upstream sent a bad response head: {0}")]
    Head(&'static str),
    /// The response's framing headers contradict themselves.
    #[error("upstream sent bad framing: {0}")]
    Framing(&'static str),
}

/// Append the request head for `method path` with `headers` (no body) to
/// `out`, edited by `edit` (headers it does not keep left out, the ones it
/// sets added). `Content-Length` and `Transfer-Encoding` from `headers`
/// are not written (the request has no body); methods that usually carry
/// one get `content-length: 0`.
pub fn write_head(
    out: &mut Vec<u8>,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    edit: Option<&Forwarding>,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut host = None;
    for (name, value) in headers {
        if name == header::HOST {
            host = host.or(Some(value));
        }
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || edit.is_some_and(|e| !e.keeps(name))
        {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(edit) = edit {
        edit.write_added(host, out);
    }
    if matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
        out.extend_from_slice(b"content-length: 0\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// How a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Exactly this many bytes (none for `HEAD`, 204, 304).
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// At the connection's end.
    Close,
}

/// A parsed response head.
#[derive(Debug)]
pub struct Head {
    pub response: Response<()>,
    pub framing: Framing,
    /// The connection may carry another request after this body.
    pub reusable: bool,
}

/// Parse a complete response head at the start of `buf` (consumed), or
/// `Ok(None)` if more bytes are needed. Interim 1xx answers are consumed
/// and skipped.
pub fn parse_head(buf: &mut BytesMut, method: &Method) -> Result<Option<Head>, H1Error> {
    loop {
        let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADERS];
        let mut r = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut r, buf, &mut slots)
        {
            Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => n,
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Ok(None),
            Ok(_) => return Err(H1Error::Head("response head too large")),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(H1Error::Head("too many response headers"))
            }
            Err(_) => return Err(H1Error::Head("not an HTTP/1.x response")),
        };
        let status =
            StatusCode::from_u16(r.code.unwrap_or(0)).map_err(|_| H1Error::Head("bad status"))?;
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(H1Error::Head("unasked-for protocol switch"));
        }
        if status.is_informational() {
            buf.advance(len);
            continue;
        }
        // Header values are kept as slices of the head's bytes (no copy):
        // note where each one is (16-bit offsets: a head is at most
        // `MAX_HEAD`), then take the head out of the buffer.
        let base = buf.as_ptr() as usize;
        let off = |p: &[u8]| u16::try_from(p.as_ptr() as usize - base).unwrap_or(u16::MAX);
        let mut at: [Spans; MAX_HEADERS] = [[0; 4]; MAX_HEADERS];
        let n = r.headers.len();
        for (slot, h) in at.iter_mut().zip(r.headers.iter()) {
            let (name, value) = (off(h.name.as_bytes()), off(h.value));
            let end = |start: u16, len: usize| start.saturating_add(len as u16);
            *slot = [
                name,
                end(name, h.name.len()),
                value,
                end(value, h.value.len()),
            ];
        }
        let version_1_1 = r.version == Some(1);
        let head = buf.split_to(len).freeze();
        let at = at.get(..n).unwrap_or(&[]);
        return head_of(&head, at, version_1_1, status, method).map(Some);
    }
}

/// Where a header's name and value are in a head: start and end offsets.
type Spans = [u16; 4];

/// The response head in `head`, its headers at `at`.
fn head_of(
    head: &Bytes,
    at: &[Spans],
    version_1_1: bool,
    status: StatusCode,
    method: &Method,
) -> Result<Head, H1Error> {
    // Room for the headers the proxy adds (`RateLimit`, ...) without
    // growing the map.
    let mut headers = HeaderMap::with_capacity(at.len() + EXTRA_HEADERS);
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut coded = false;
    let mut close = !version_1_1;
    let mut connection: Vec<HeaderValue> = Vec::new();
    for &[n0, n1, v0, v1] in at {
        let span = |a: u16, b: u16| usize::from(a)..usize::from(b);
        let raw_name = head.get(span(n0, n1)).ok_or(H1Error::Head("bad header"))?;
        let raw_value = head.get(span(v0, v1)).ok_or(H1Error::Head("bad header"))?;
        let name =
            HeaderName::from_bytes(raw_name).map_err(|_| H1Error::Head("bad header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(span(v0, v1)))
            .map_err(|_| H1Error::Head("bad header value"))?;
        if name == header::CONTENT_LENGTH {
            length = Some(content_length(raw_value, length)?);
        } else if name == header::TRANSFER_ENCODING {
            coded = true;
            // Only the last coding counts; a later header line adds to it.
            chunked = last_token_is(raw_value, b"chunked");
        } else if name == header::CONNECTION {
            close |= has_token(raw_value, b"close");
            // Rare: it names headers of its own, dropped below.
            if forwarding::names_headers(raw_value) {
                connection.push(value);
                continue;
            }
        }
        // Hop-by-hop headers stop here (`forwarding.rs`).
        if !forwarding::is_hop_by_hop(&name) {
            headers.append(name, value);
        }
    }
    for named in forwarding::connection_named(connection.iter()) {
        headers.remove(named);
    }
    let bodiless = *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = if bodiless {
        Framing::Length(0)
    } else if coded {
        // Transfer-Encoding overrides Content-Length (RFC 9112 §6.3),
        // which must not reach the client; such a connection is not
        // reused.
        if length.is_some() {
            headers.remove(header::CONTENT_LENGTH);
            close = true;
        }
        if chunked {
            Framing::Chunked
        } else {
            Framing::Close
        }
    } else {
        match length {
            Some(n) => Framing::Length(n),
            None => Framing::Close,
        }
    };
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(Head {
        response,
        framing,
        reusable: !close && framing != Framing::Close,
    })
}

/// The length a `Content-Length` line `v` gives, after the lines before it
/// gave `before`: every comma-separated value must agree.
fn content_length(v: &[u8], mut before: Option<u64>) -> Result<u64, H1Error> {
    for part in v.split(|&b| b == b',') {
        let n = parse_length(part).ok_or(H1Error::Framing("bad Content-Length"))?;
        if before.is_some_and(|l| l != n) {
            return Err(H1Error::Framing("Content-Length values disagree"));
        }
        before = Some(n);
    }
    before.ok_or(H1Error::Framing("bad Content-Length"))
}

/// A `Content-Length` value: ASCII digits only (no sign, no spaces inside).
fn parse_length(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// Whether a comma-separated header value lists `token` (any case).
fn has_token(v: &[u8], token: &[u8]) -> bool {
    v.split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// Whether the last item of a comma-separated header value is `token`.
fn last_token_is(v: &[u8], token: &[u8]) -> bool {
    v.rsplit(|&b| b == b',')
        .next()
        .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// Where a chunked body's decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading a chunk-size line.
    Size,
    /// This many data bytes of the current chunk left.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer lines after the last chunk, up to an empty line.
    Trailers,
}

/// What the body decoder has left to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Left {
    Length(u64),
    Chunked(ChunkState),
    Close,
    Done,
}

/// A chunked body's decoder state (opaque).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkState(Chunk);

impl Left {
    pub fn of(framing: Framing) -> Left {
        match framing {
            Framing::Length(0) => Left::Done,
            Framing::Length(n) => Left::Length(n),
            Framing::Chunked => Left::Chunked(ChunkState(Chunk::Size)),
            Framing::Close => Left::Close,
        }
    }

    /// Take the next piece of body data out of `buf`: `Ok(Some(data))`
    /// (possibly empty when only framing was consumed), `Ok(None)` when
    /// more bytes are needed. `eof`: the connection has ended.
    pub fn step(&mut self, buf: &mut BytesMut, eof: bool) -> Result<Option<Bytes>, H1Error> {
        match *self {
            Left::Done => Ok(Some(Bytes::new())),
            Left::Length(n) => {
                let Some((data, rest)) = take(buf, n, eof)? else {
                    return Ok(None);
                };
                *self = if rest == 0 {
                    Left::Done
                } else {
                    Left::Length(rest)
                };
                Ok(Some(data))
            }
            Left::Close => {
                if buf.is_empty() {
                    if eof {
                        *self = Left::Done;
                        return Ok(Some(Bytes::new()));
                    }
                    return Ok(None);
                }
                Ok(Some(buf.split().freeze()))
            }
            Left::Chunked(ChunkState(c)) => self.chunk(c, buf, eof),
        }
    }

    fn chunk(&mut self, c: Chunk, buf: &mut BytesMut, eof: bool) -> Result<Option<Bytes>, H1Error> {
        let more = |buf: &BytesMut| {
            if eof {
                Err(H1Error::Closed)
            } else if buf.len() > MAX_LINE {
                Err(H1Error::Framing("chunk line too long"))
            } else {
                Ok(None)
            }
        };
        match c {
            Chunk::Size => {
                let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
                    return more(buf);
                };
                let line = &buf[..end];
                let digits = line
                    .iter()
                    .position(|&b| !b.is_ascii_hexdigit())
                    .unwrap_or(line.len());
                if digits == 0 || digits > 16 {
                    return Err(H1Error::Framing("bad chunk size"));
                }
                // After the size: nothing, or extensions after `;` (with
                // optional whitespace first).
                let after = line[digits..].trim_ascii_start();
                if !after.is_empty() && after[0] != b';' {
                    return Err(H1Error::Framing("bad chunk size"));
                }
                let mut n = 0u64;
                for &b in &line[..digits] {
                    let d = (b as char).to_digit(16).unwrap_or(0);
                    n = (n << 4) | u64::from(d);
                }
                buf.advance(end + 2);
                *self = Left::Chunked(ChunkState(if n == 0 {
                    Chunk::Trailers
                } else {
                    Chunk::Data(n)
                }));
                Ok(Some(Bytes::new()))
            }
            Chunk::Data(n) => {
                let Some((data, rest)) = take(buf, n, eof)? else {
                    return Ok(None);
                };
                *self = Left::Chunked(ChunkState(if rest == 0 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(rest)
                }));
                Ok(Some(data))
            }
            Chunk::DataEnd => {
                if buf.len() < 2 {
                    return if eof { Err(H1Error::Closed) } else { Ok(None) };
                }
                if &buf[..2] != b"\r\n" {
                    return Err(H1Error::Framing("chunk data longer than its size"));
                }
                buf.advance(2);
                *self = Left::Chunked(ChunkState(Chunk::Size));
                Ok(Some(Bytes::new()))
            }
            Chunk::Trailers => {
                let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
                    return more(buf);
                };
                buf.advance(end + 2);
                // Trailer fields are dropped; the empty line ends the body.
                if end == 0 {
                    *self = Left::Done;
                }
                Ok(Some(Bytes::new()))
            }
        }
    }
}

/// Up to `n` body bytes from `buf` and how many are left after them;
/// `None` if `buf` is empty and more may come, an error if it has ended.
fn take(buf: &mut BytesMut, n: u64, eof: bool) -> Result<Option<(Bytes, u64)>, H1Error> {
    if buf.is_empty() {
        return if eof { Err(H1Error::Closed) } else { Ok(None) };
    }
    let len = usize::try_from(n).unwrap_or(usize::MAX).min(buf.len());
    let rest = n - len as u64;
    Ok(Some((buf.split_to(len).freeze(), rest)))
}

/// A connection's socket and read buffer.
#[derive(Debug)]
pub struct Conn {
    pub io: TcpStream,
    pub buf: BytesMut,
    /// The connection has ended (end of stream read).
    pub eof: bool,
}

impl Conn {
    pub fn new(io: TcpStream) -> Conn {
        Conn {
            io,
            buf: BytesMut::with_capacity(READ_BUF),
            eof: false,
        }
    }

    /// Read what the socket has into the buffer; `Ready(Ok(0))` at its end.
    pub fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        loop {
            if self.buf.capacity() - self.buf.len() < 1024 {
                self.buf.reserve(READ_BUF);
            }
            ready!(self.io.poll_read_ready(cx))?;
            let room = self.buf.capacity() - self.buf.len();
            match self.io.try_read_buf(&mut self.buf) {
                Ok(0) => {
                    self.eof = true;
                    return Poll::Ready(Ok(0));
                }
                Ok(n) => {
                    if n < room {
                        self.drained();
                    }
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// A read shorter than the room it had took all the socket held: mark
    /// the socket not readable, as nginx does, instead of learning it from
    /// one more `recv` that fails with `EAGAIN` (the next request's probe
    /// or read). The reactor's readiness is edge-triggered and carries a
    /// tick, so bytes that arrive later set it again, and a clear racing
    /// with a newer event is ignored.
    fn drained(&self) {
        let _ = self.io.try_io(tokio::io::Interest::READABLE, || {
            Err::<(), _>(std::io::ErrorKind::WouldBlock.into())
        });
    }

    /// An idle connection is still usable: nothing to read (no end of
    /// stream, no stray bytes), checked without waiting.
    pub fn idle_usable(&mut self) -> bool {
        if self.eof || !self.buf.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        match self.io.try_read(&mut probe) {
            Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
            Ok(_) => false,
        }
    }
}

/// The next body frame from `conn`, decoding with `left`: `None` at the
/// body's end.
pub fn poll_body(
    conn: &mut Conn,
    left: &mut Left,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
    loop {
        if *left == Left::Done {
            return Poll::Ready(None);
        }
        match left.step(&mut conn.buf, conn.eof) {
            Err(e) => return Poll::Ready(Some(Err(e))),
            Ok(Some(data)) if !data.is_empty() => return Poll::Ready(Some(Ok(Frame::data(data)))),
            Ok(Some(_)) => continue,
            Ok(None) => {
                if let Err(e) = ready!(conn.poll_fill(cx)) {
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }
}

/// The size hint of a body with `left` to read.
pub fn size_hint(left: &Left) -> SizeHint {
    match *left {
        Left::Done => SizeHint::with_exact(0),
        Left::Length(n) => SizeHint::with_exact(n),
        _ => SizeHint::default(),
    }
}

/// Wait for and parse the response head on `conn`.
pub async fn read_head(conn: &mut Conn, method: &Method) -> Result<Head, H1Error> {
    loop {
        if !conn.buf.is_empty() {
            if let Some(h) = parse_head(&mut conn.buf, method)? {
                return Ok(h);
            }
        }
        if conn.eof {
            return Err(H1Error::Closed);
        }
        std::future::poll_fn(|cx| conn.poll_fill(cx)).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str, method: Method) -> Result<Option<Head>, H1Error> {
        let mut b = BytesMut::from(raw.as_bytes());
        parse_head(&mut b, &method)
    }

    fn framing(raw: &str) -> Framing {
        head(raw, Method::GET).unwrap().unwrap().framing
    }

    #[test]
    fn framing_follows_rfc_9112() {
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"),
            Framing::Length(5)
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\n"),
            Framing::Length(5)
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n"),
            Framing::Chunked
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n"),
            Framing::Close
        );
        assert_eq!(framing("HTTP/1.1 200 OK\r\n\r\n"), Framing::Close);
        assert_eq!(
            framing("HTTP/1.1 204 No Content\r\ncontent-length: 9\r\n\r\n"),
            Framing::Length(0)
        );
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n", Method::HEAD)
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Length(0));
        assert!(h.reusable);
        // Both: chunked wins, the length is dropped, the connection closes.
        let h = head(
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, Framing::Chunked);
        assert!(!h.reusable);
        assert!(!h.response.headers().contains_key(header::CONTENT_LENGTH));
        for bad in [
            "content-length: 5, 6",
            "content-length: -1",
            "content-length: +5",
            "content-length: 0x5",
            "content-length: 99999999999999999999999",
            "content-length:",
        ] {
            let raw = format!("HTTP/1.1 200 OK\r\n{bad}\r\n\r\n");
            assert!(
                matches!(head(&raw, Method::GET), Err(H1Error::Framing(_))),
                "{bad}"
            );
        }
        let raw = "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n";
        assert!(matches!(head(raw, Method::GET), Err(H1Error::Framing(_))));
    }

    #[test]
    fn interim_answers_are_skipped_and_a_switch_refused() {
        let raw = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n";
        let h = head(raw, Method::GET).unwrap().unwrap();
        assert_eq!(h.response.status(), 201);
        assert!(!h.response.headers().contains_key("link"));
        assert!(head("HTTP/1.1 101 Switching Protocols\r\n\r\n", Method::GET).is_err());
    }

    #[test]
    fn reuse_needs_http_1_1_without_close() {
        let reusable = |raw: &str| head(raw, Method::GET).unwrap().unwrap().reusable;
        assert!(reusable("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"));
        assert!(!reusable("HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n"));
        assert!(!reusable(
            "HTTP/1.1 200 OK\r\nconnection: keep-alive, Close\r\ncontent-length: 0\r\n\r\n"
        ));
        assert!(!reusable("HTTP/1.1 200 OK\r\n\r\n"));
    }

    /// What `crate::forwarding` drops from a response is never put in
    /// its map: the listed hop-by-hop headers and, whichever line comes
    /// first, those its `Connection` names; the framing still reads them.
    #[test]
    fn responses_lose_hop_by_hop_headers() {
        let raw = "HTTP/1.1 200 OK\r\nx-secret: 1\r\nkeep-alive: timeout=5\r\n\
                   connection: keep-alive, X-Secret\r\nconnection: close\r\n\
                   transfer-encoding: chunked\r\nupgrade: h2c\r\nproxy-authenticate: x\r\n\
                   x-kept: yes\r\n\r\n";
        let h = head(raw, Method::GET).unwrap().unwrap();
        let names: Vec<&str> = h.response.headers().keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
        assert_eq!(h.framing, Framing::Chunked);
        assert!(!h.reusable, "connection: close on its second line");
        let h = head(
            "HTTP/1.1 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.response.headers().len(), 1);
        assert!(h.reusable);
    }

    #[test]
    fn partial_heads_wait_and_garbage_or_huge_heads_are_refused() {
        assert!(head("HTTP/1.1 200 OK\r\ncontent-le", Method::GET)
            .unwrap()
            .is_none());
        assert!(head("SSH-2.0-OpenSSH\r\n\r\n", Method::GET).is_err());
        let huge = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_HEAD));
        assert!(head(&huge, Method::GET).is_err());
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x{i}: 1\r\n")).collect();
        assert!(head(&format!("HTTP/1.1 200 OK\r\n{many}\r\n"), Method::GET).is_err());
    }

    /// Decode `wire` fed in pieces of `step` bytes.
    fn decode(framing: Framing, wire: &[u8], step: usize) -> Result<(Vec<u8>, usize), H1Error> {
        let mut left = Left::of(framing);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut fed = 0;
        loop {
            if left == Left::Done {
                return Ok((out, buf.len()));
            }
            let eof = fed >= wire.len();
            match left.step(&mut buf, eof)? {
                Some(d) => out.extend_from_slice(&d),
                None => {
                    let end = (fed + step).min(wire.len());
                    buf.extend_from_slice(&wire[fed..end]);
                    fed = end;
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_in_any_pieces() {
        let wire =
            b"5;ext=1\r\nhello\r\n1 \r\n,\r\nA\r\n0123456789\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, 100] {
            let (body, rest) = decode(Framing::Chunked, wire, step).unwrap();
            assert_eq!(body, b"hello,0123456789", "step {step}");
            // What follows the body is left for the next response.
            assert!(rest <= 4);
        }
        for bad in [
            &b"5\r\nhelloX\r\n0\r\n\r\n"[..],
            b"g\r\n",
            b"\r\n",
            b"11111111111111111\r\n",
            b"5 x\r\nhello\r\n0\r\n\r\n",
        ] {
            assert!(decode(Framing::Chunked, bad, 4).is_err(), "{bad:?}");
        }
        // Ended early.
        assert!(matches!(
            decode(Framing::Chunked, b"5\r\nhel", 2),
            Err(H1Error::Closed)
        ));
        assert!(decode(Framing::Chunked, &[b'1'; MAX_LINE + 10], 64).is_err());
    }

    #[test]
    fn length_and_close_delimited_bodies() {
        let (b, rest) = decode(Framing::Length(5), b"helloEXTRA", 3).unwrap();
        assert_eq!(b, b"hello");
        assert!(rest <= 5);
        assert!(matches!(
            decode(Framing::Length(5), b"hel", 2),
            Err(H1Error::Closed)
        ));
        let (b, _) = decode(Framing::Close, b"all of it", 4).unwrap();
        assert_eq!(b, b"all of it");
    }

    #[test]
    fn request_heads_carry_no_body_framing_of_the_client() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("up"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        h.append("x-a", HeaderValue::from_static("1"));
        h.append("x-a", HeaderValue::from_static("2"));
        let mut out = Vec::new();
        write_head(&mut out, &Method::GET, "/p?q=1", &h, None);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /p?q=1 HTTP/1.1\r\nhost: up\r\nx-a: 1\r\nx-a: 2\r\n\r\n"
        );
        let edit = Forwarding::new(&h, "10.0.0.1".parse().unwrap(), false);
        let mut out = Vec::new();
        write_head(&mut out, &Method::GET, "/", &h, Some(&edit));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET / HTTP/1.1\r\nhost: up\r\nx-a: 1\r\nx-a: 2\r\n\
             x-forwarded-proto: http\r\nx-forwarded-host: up\r\n\
             x-forwarded-for: 10.0.0.1\r\nforwarded: for=10.0.0.1;proto=http\r\n\r\n"
        );
        let mut out = Vec::new();
        write_head(&mut out, &Method::POST, "/", &HeaderMap::new(), None);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST / HTTP/1.1\r\ncontent-length: 0\r\n\r\n"
        );
    }
}
