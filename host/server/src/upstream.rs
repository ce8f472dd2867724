//! The upstream HTTP/1.1 client of proxy mode.
//!
//! Each upstream connection is driven by the task of the request using it
//! (the client connection's task, on its worker thread: see
//! the `workers` module): while waiting for the response head the request's
//! future polls the connection, and while the response body streams back
//! the body polls it. A connection whose response is complete goes back to
//! a per-thread idle list and the next request on that thread takes it
//! (newest first). So there is no task per connection, no lock shared by
//! the workers and no channel hop between tasks per request, and both
//! sides of a request stay on one thread.
//!
//! A reused connection the upstream has closed is noticed when taken (its
//! end of stream is read) or, if the request was not written yet, when
//! sending; the request then goes on the next connection. A request that
//! was written is never sent twice. A connection taken from the list that
//! is not ready at once (still sending the body of a request the upstream
//! answered before reading it) is closed, not waited for.
//!
//! Requests without a body (most of them) go over connections of the
//! proxy's own HTTP/1.1 exchange (the `h1` module), kept in a second idle
//! list; requests with a body over hyper's client connection. A reused
//! connection of the own path found closed when taken is dropped; one
//! that ends without a byte of answer after an idempotent request
//! (`GET`, `HEAD`, `OPTIONS`) was written is retried once on a fresh
//! connection, as nginx retries (the upstream closed an idle connection
//! as the request arrived).
//!
//! Errors: connecting fails or times out (`connect_timeout`), or the
//! connection fails before a response head: [`UpstreamError::Unreachable`]
//! (502 in the proxy); no response head within `response_timeout`
//! (connecting included): [`UpstreamError::Timeout`] (504).

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use http::{header, HeaderValue, Request, Response, Uri};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::forwarding::{strip_hop_by_hop, Forwarding};
use crate::h1::{self, H1Error};

/// Idle upstream connections kept per worker thread (all clients).
const MAX_IDLE_PER_THREAD: usize = 256;

/// Why no upstream response came back.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Connecting failed or timed out, or the connection failed before a
    /// response head.
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    /// No response head within the response timeout.
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
}

/// A client for one upstream `http://host:port`.
#[derive(Debug)]
pub struct Client {
    /// Identifies this client's connections in the per-thread idle lists.
    id: u64,
    host: String,
    port: u16,
    authority: HeaderValue,
    connect_timeout: Duration,
    response_timeout: Duration,
}

type Conn = Connection<TokioIo<TcpStream>, Body>;

/// One upstream connection and its request handle. Kept boxed
/// ([`Conn`] with its buffers is several hundred bytes): taking it from the
/// idle list, holding it in the exchange future and the response body, and
/// putting it back move a pointer, not the connection
/// (`bench/request_icount.sh`: about 1 500 fewer instructions of `memcpy`
/// per proxied request).
struct Pooled {
    tx: SendRequest<Body>,
    conn: Conn,
    /// Not used for a request yet.
    fresh: bool,
    /// The response deadline of the request in flight: one timer per
    /// connection, set forward for each request. A deadline later than
    /// the one registered only moves a number (tokio re-registers the
    /// timer when the earlier one comes due), where a `timeout` per
    /// request registered and removed a timer in the wheel each time
    /// (`bench/request_icount.sh`).
    deadline: Pin<Box<Sleep>>,
}

/// A connection of the own HTTP/1.1 path ([`crate::h1`]), boxed like
/// [`Pooled`].
struct Raw {
    conn: h1::Conn,
    /// See [`Pooled::deadline`].
    deadline: Pin<Box<Sleep>>,
    /// The request head's buffer, kept for the next request.
    head: Vec<u8>,
}

thread_local! {
    /// This thread's idle connections: (client id, connection), newest last.
    static IDLE: RefCell<Vec<(u64, Box<Pooled>)>> = const { RefCell::new(Vec::new()) };
    /// The same for the own HTTP/1.1 path's connections.
    static IDLE_RAW: RefCell<Vec<(u64, Box<Raw>)>> = const { RefCell::new(Vec::new()) };
}

impl Client {
    /// A client for `url` (`http://host[:port]`, as `[upstream] url` is
    /// checked).
    pub fn new(url: &Uri, connect_timeout: Duration, response_timeout: Duration) -> Client {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let host = url.host().unwrap_or("localhost");
        // `[::1]` as written in a URL, `::1` to connect to.
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let authority = url.authority().map_or(host, |a| a.as_str());
        Client {
            id: NEXT.fetch_add(1, Relaxed),
            host: bare.to_string(),
            port: url.port_u16().unwrap_or(80),
            authority: HeaderValue::from_str(authority)
                .unwrap_or_else(|_| HeaderValue::from_static("localhost")),
            connect_timeout,
            response_timeout,
        }
    }

    /// Send `req` (its URI's path and query; `Host` set to the upstream's
    /// if it has none) and return the response head without its
    /// hop-by-hop headers, its body streaming.
    pub async fn send(&self, req: Request<Body>) -> Result<Response<Body>, UpstreamError> {
        self.forward(req, None).await
    }

    /// [`send`](Self::send) with the proxy's header edit: applied to the
    /// map for hyper (a request with a body), or made while the request
    /// head is written (`h1`).
    pub(crate) async fn forward(
        &self,
        req: Request<Body>,
        edit: Option<&Forwarding>,
    ) -> Result<Response<Body>, UpstreamError> {
        let (mut parts, body) = req.into_parts();
        if parts.uri.scheme().is_some() {
            let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            parts.uri = pq.parse().unwrap_or_else(|_| Uri::from_static("/"));
        }
        if !parts.headers.contains_key(header::HOST) {
            parts.headers.insert(header::HOST, self.authority.clone());
        }
        let deadline = Instant::now() + self.response_timeout;
        if body.is_end_stream() {
            return self.exchange_raw(&parts, edit, deadline).await;
        }
        if let Some(edit) = edit {
            edit.apply(&mut parts.headers);
        }
        let req = Request::from_parts(parts, body);
        // Boxed: hyper's client exchange is about 1 000 bytes of future
        // state that every bodiless request's future would otherwise carry
        // (and copy at each `.await` that moves it into place).
        let mut resp = Box::pin(self.exchange(req, deadline)).await?;
        strip_hop_by_hop(resp.headers_mut());
        Ok(resp)
    }

    /// A request without a body over the own HTTP/1.1 path: on a reused
    /// connection or a new one, its response head due by `deadline`.
    async fn exchange_raw(
        &self,
        parts: &http::request::Parts,
        edit: Option<&Forwarding>,
        deadline: Instant,
    ) -> Result<Response<Body>, UpstreamError> {
        let timeout = || UpstreamError::Timeout(self.response_timeout);
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let idempotent = matches!(
            parts.method,
            http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
        );
        let mut retried = false;
        loop {
            let (mut raw, reused) = match take(&IDLE_RAW, self.id) {
                Some(mut r) => {
                    if !r.conn.idle_usable() {
                        // Closed (or sent something unasked) while idle.
                        continue;
                    }
                    r.deadline.as_mut().reset(deadline);
                    (r, true)
                }
                // Boxed: a new connection is rare, and its future (about
                // 350 bytes) would otherwise be in every exchange's.
                None => {
                    match tokio::time::timeout_at(deadline, Box::pin(self.connect_raw(deadline)))
                        .await
                    {
                        Ok(r) => (r?, false),
                        Err(_) => return Err(timeout()),
                    }
                }
            };
            let Raw {
                conn,
                deadline: due,
                head,
            } = &mut *raw;
            head.clear();
            h1::write_head(head, &parts.method, path, &parts.headers, edit);
            let written = tokio::select! {
                biased;
                w = conn.io.write_all(head) => w,
                () = due.as_mut() => return Err(timeout()),
            };
            if let Err(e) = written {
                // A reused connection the upstream closed: nothing of it
                // was read, so the request goes on the next connection.
                if reused {
                    continue;
                }
                return Err(UpstreamError::Unreachable(e.to_string()));
            }
            let read = tokio::select! {
                biased;
                h = h1::read_head(conn, &parts.method) => h,
                () = due.as_mut() => return Err(timeout()),
            };
            let head = match read {
                Ok(h) => h,
                Err(H1Error::Closed) if reused && idempotent && !retried && conn.buf.is_empty() => {
                    retried = true;
                    continue;
                }
                Err(e) => return Err(UpstreamError::Unreachable(e.to_string())),
            };
            let left = h1::Left::of(head.framing);
            let (parts, ()) = head.response.into_parts();
            let body = RawBody {
                conn: Some(raw),
                left,
                reusable: head.reusable,
                id: self.id,
            };
            return Ok(Response::from_parts(parts, Body::new(body)));
        }
    }

    /// A new TCP connection to the upstream (`connect_timeout`, no Nagle).
    async fn dial(&self) -> Result<TcpStream, UpstreamError> {
        let addr = (self.host.as_str(), self.port);
        let stream =
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(UpstreamError::Unreachable(e.to_string())),
                Err(_) => {
                    return Err(UpstreamError::Unreachable(format!(
                        "connect timed out after {:?}",
                        self.connect_timeout
                    )))
                }
            };
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    async fn connect_raw(&self, deadline: Instant) -> Result<Box<Raw>, UpstreamError> {
        let stream = self.dial().await?;
        Ok(Box::new(Raw {
            conn: h1::Conn::new(stream),
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            head: Vec::with_capacity(1024),
        }))
    }

    /// One request on a reused connection or a new one, its response head
    /// due by `deadline`.
    async fn exchange(
        &self,
        mut req: Request<Body>,
        deadline: Instant,
    ) -> Result<Response<Body>, UpstreamError> {
        let timeout = || UpstreamError::Timeout(self.response_timeout);
        loop {
            let mut p = match take(&IDLE, self.id) {
                Some(p) => p,
                None => match tokio::time::timeout_at(deadline, self.connect()).await {
                    Ok(p) => p?,
                    Err(_) => return Err(timeout()),
                },
            };
            // Later than the deadline it was last set to (deadlines only
            // move forward): no timer registration, see `Pooled::deadline`.
            p.deadline.as_mut().reset(deadline);
            match p.ready().await {
                Readiness::Ready => {}
                Readiness::Late => return Err(timeout()),
                Readiness::Ended if p.fresh => {
                    return Err(UpstreamError::Unreachable(
                        "connection closed before the request".into(),
                    ))
                }
                Readiness::Ended => continue,
            }
            let fresh = std::mem::replace(&mut p.fresh, false);
            let mut sent = std::pin::pin!(p.tx.try_send_request(req));
            let r = poll_fn(|cx| {
                // The connection first: it writes the request and reads
                // the answer the response future waits for.
                let _ = p.poll_conn(cx);
                match sent.as_mut().poll(cx) {
                    Poll::Pending if p.deadline.as_mut().poll(cx).is_ready() => Poll::Ready(None),
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(r) => Poll::Ready(Some(r)),
                }
            })
            .await;
            let Some(r) = r else {
                // No head in time: the connection is dropped (closed) with
                // the request in flight.
                return Err(timeout());
            };
            match r {
                Ok(resp) => {
                    let id = self.id;
                    return Ok(resp.map(|body| {
                        Body::new(PooledBody {
                            inner: body,
                            conn: Some(p),
                            id,
                        })
                    }));
                }
                Err(mut e) => match e.take_message() {
                    // Not written: a stale connection; try the next one.
                    Some(r) if !fresh => req = r,
                    _ => return Err(UpstreamError::Unreachable(e.into_error().to_string())),
                },
            }
        }
    }

    async fn connect(&self) -> Result<Box<Pooled>, UpstreamError> {
        let stream = self.dial().await?;
        let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
        Ok(Box::new(Pooled {
            tx,
            conn,
            fresh: true,
            deadline: Box::pin(tokio::time::sleep_until(
                Instant::now() + self.response_timeout,
            )),
        }))
    }
}

/// Whether a connection takes a request ([`Pooled::ready`]).
enum Readiness {
    Ready,
    /// The deadline came first.
    Late,
    /// The connection has ended (or, reused, was busy).
    Ended,
}

impl Pooled {
    /// Wait until the connection takes a request. An idle connection is
    /// ready at once; one still busy (e.g. sending the body of a request
    /// the upstream answered early) is closed rather than waited for.
    async fn ready(&mut self) -> Readiness {
        let of = |r: Result<(), ()>| match r {
            Ok(()) => Readiness::Ready,
            Err(()) => Readiness::Ended,
        };
        poll_fn(|cx| {
            if !self.fresh {
                return Poll::Ready(match self.poll_ready(cx) {
                    Poll::Ready(r) => of(r),
                    Poll::Pending => Readiness::Ended,
                });
            }
            if self.deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Readiness::Late);
            }
            self.poll_ready(cx).map(of)
        })
        .await
    }

    /// Drive the connection; `Ready` once it has ended (closed or failed).
    fn poll_conn(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.conn).poll(cx).map(|_| ())
    }

    /// Ready for a request, or `Err` if the connection has ended.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ()>> {
        if self.poll_conn(cx).is_ready() {
            return Poll::Ready(Err(()));
        }
        self.tx.poll_ready(cx).map_err(|_| ())
    }
}

/// A thread's list of idle connections of one kind: (client id,
/// connection), newest last.
type IdleList<T> = std::thread::LocalKey<RefCell<Vec<(u64, Box<T>)>>>;

/// The newest idle connection of client `id` in `list`.
fn take<T: 'static>(list: &'static IdleList<T>, id: u64) -> Option<Box<T>> {
    list.try_with(|idle| {
        let mut idle = idle.borrow_mut();
        let at = idle.iter().rposition(|(i, _)| *i == id)?;
        Some(idle.swap_remove(at).1)
    })
    .ok()
    .flatten()
}

/// Keep `conn` of client `id` in `list` (the oldest goes when it is full).
fn put<T: 'static>(list: &'static IdleList<T>, id: u64, conn: Box<T>) {
    let _ = list.try_with(|idle| {
        let mut idle = idle.borrow_mut();
        if idle.len() >= MAX_IDLE_PER_THREAD {
            idle.remove(0);
        }
        idle.push((id, conn));
    });
}

/// A response body read from an own-path connection, which goes back to
/// this thread's idle list once the body is complete with nothing unread
/// behind it (and the answer allowed reuse).
struct RawBody {
    /// `None` once the connection failed.
    conn: Option<Box<Raw>>,
    left: h1::Left,
    reusable: bool,
    id: u64,
}

impl HttpBody for RawBody {
    type Data = Bytes;
    type Error = H1Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        let this = &mut *self;
        let Some(raw) = this.conn.as_mut() else {
            return Poll::Ready(None);
        };
        let r = h1::poll_body(&mut raw.conn, &mut this.left, cx);
        if let Poll::Ready(Some(Err(_))) = r {
            this.conn = None;
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.left == h1::Left::Done
    }

    fn size_hint(&self) -> SizeHint {
        h1::size_hint(&self.left)
    }
}

impl Drop for RawBody {
    fn drop(&mut self) {
        if !(self.reusable && self.left == h1::Left::Done) {
            return;
        }
        if let Some(r) = self.conn.take() {
            if r.conn.buf.is_empty() && !r.conn.eof {
                put(&IDLE_RAW, self.id, r);
            }
        }
    }
}

/// A response body that drives its connection, and puts the connection
/// back in this thread's idle list once the body is complete.
struct PooledBody {
    inner: Incoming,
    /// `None` once the connection has ended.
    conn: Option<Box<Pooled>>,
    id: u64,
}

impl HttpBody for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some(p) = self.conn.as_mut() {
            if p.poll_conn(cx).is_ready() {
                // Ended (e.g. `Connection: close`): what it read is in the body.
                self.conn = None;
            }
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // A body dropped before its end leaves the connection mid-response:
        // it is closed (dropped) instead.
        if self.inner.is_end_stream() {
            if let Some(p) = self.conn.take() {
                put(&IDLE, self.id, p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// The next request head read from `s` (taken out of `buf`), `None`
    /// when the connection ends first.
    async fn next_head(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<String> {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut chunk = [0u8; 1024];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head: Vec<u8> = buf.drain(..end).collect();
        Some(String::from_utf8_lossy(&head).into_owned())
    }

    /// A raw HTTP/1.1 upstream on a free port: answers every request on a
    /// connection with `body` (closing after `per_conn` answers, without
    /// saying so), counting the connections it accepted.
    async fn upstream(body: &'static str, per_conn: usize) -> (Uri, Arc<AtomicUsize>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url: Uri = format!("http://{}", l.local_addr().unwrap())
            .parse()
            .unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                count.fetch_add(1, Relaxed);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    for _ in 0..per_conn {
                        // One request head (no bodies in these tests).
                        if next_head(&mut s, &mut buf).await.is_none() {
                            return;
                        }
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if s.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (url, accepted)
    }

    async fn get(c: &Client, url: &Uri) -> Result<String, UpstreamError> {
        let req = Request::get(format!("{url}x?y=1"))
            .body(Body::empty())
            .unwrap();
        let resp = c.send(req).await?;
        assert_eq!(resp.status(), 200);
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        Ok(String::from_utf8(bytes.to_vec()).unwrap())
    }

    fn client(url: &Uri) -> Client {
        Client::new(url, Duration::from_secs(2), Duration::from_secs(2))
    }

    #[tokio::test(flavor = "current_thread")]
    async fn keep_alive_connections_are_reused() {
        let (url, accepted) = upstream("hello", usize::MAX).await;
        let c = client(&url);
        for _ in 0..10 {
            assert_eq!(get(&c, &url).await.unwrap(), "hello");
        }
        assert_eq!(accepted.load(Relaxed), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn connections_the_upstream_closed_are_replaced_without_failing() {
        // The upstream closes each connection after one answer, without
        // `Connection: close`: the pooled connection is stale every time.
        let (url, accepted) = upstream("once", 1).await;
        let c = client(&url);
        for _ in 0..5 {
            // Give the upstream's close time to arrive, as it does when idle.
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert_eq!(get(&c, &url).await.unwrap(), "once");
        }
        assert_eq!(accepted.load(Relaxed), 5);
    }

    /// The per-connection deadline: a connection reused after its last
    /// deadline came due (while idle) still serves, and a reused
    /// connection whose upstream stops answering still times out.
    #[tokio::test(flavor = "current_thread")]
    async fn reused_connections_keep_their_deadline() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url: Uri = format!("http://{}", l.local_addr().unwrap())
            .parse()
            .unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = Vec::new();
            // Two answers, then silence on the same connection.
            for _ in 0..2 {
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    let mut chunk = [0u8; 1024];
                    let n = s.read(&mut chunk).await.unwrap();
                    assert!(n > 0);
                    buf.extend_from_slice(&chunk[..n]);
                }
                let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                buf.drain(..end);
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await
                    .unwrap();
            }
            let mut rest = [0u8; 1024];
            while s.read(&mut rest).await.is_ok_and(|n| n > 0) {}
        });
        let c = Client::new(&url, Duration::from_secs(2), Duration::from_millis(150));
        assert_eq!(get(&c, &url).await.unwrap(), "ok");
        // The first request's deadline comes due while the connection idles.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(get(&c, &url).await.unwrap(), "ok");
        let started = std::time::Instant::now();
        let err = get(&c, &url).await.unwrap_err();
        assert!(matches!(err, UpstreamError::Timeout(_)), "{err}");
        assert!(started.elapsed() >= Duration::from_millis(150));
        server.abort();
    }

    /// An upstream answering the n-th request of every connection with
    /// `answers[n]` (raw bytes, closing after the last, or at once after
    /// one starting `CLOSE:`), counting the connections and keeping the
    /// request heads it read.
    async fn scripted(
        answers: Vec<&'static str>,
    ) -> (Uri, Arc<AtomicUsize>, Arc<std::sync::Mutex<Vec<String>>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url: Uri = format!("http://{}", l.local_addr().unwrap())
            .parse()
            .unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (count, seen) = (accepted.clone(), heads.clone());
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                count.fetch_add(1, Relaxed);
                let (answers, seen) = (answers.clone(), seen.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    for a in answers {
                        let Some(head) = next_head(&mut s, &mut buf).await else {
                            return;
                        };
                        seen.lock().unwrap().push(head);
                        let (a, close) = match a.strip_prefix("CLOSE:") {
                            Some(a) => (a, true),
                            None => (a, false),
                        };
                        if s.write_all(a.as_bytes()).await.is_err() || close {
                            return;
                        }
                    }
                });
            }
        });
        (url, accepted, heads)
    }

    async fn call(
        c: &Client,
        url: &Uri,
        method: http::Method,
    ) -> Result<(u16, String), UpstreamError> {
        let req = Request::builder()
            .method(method)
            .uri(format!("{url}p"))
            .body(Body::empty())
            .unwrap();
        let resp = c.send(req).await?;
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
        Ok((status, String::from_utf8(bytes.to_vec()).unwrap()))
    }

    #[tokio::test(flavor = "current_thread")]
    async fn chunked_and_head_answers_keep_the_connection() {
        let (url, accepted, heads) = scripted(vec![
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nt: 1\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n",
            "HTTP/1.1 304 Not Modified\r\n\r\n",
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        ])
        .await;
        let c = client(&url);
        for (method, status, body) in [
            (http::Method::GET, 200, "abcde"),
            (http::Method::HEAD, 200, ""),
            (http::Method::GET, 304, ""),
            (http::Method::GET, 200, "ok"),
        ] {
            assert_eq!(call(&c, &url, method).await.unwrap(), (status, body.into()));
        }
        assert_eq!(accepted.load(Relaxed), 1, "one connection for all four");
        let heads = heads.lock().unwrap();
        assert!(heads[0].starts_with("GET /p HTTP/1.1\r\n"), "{}", heads[0]);
        assert!(heads[1].starts_with("HEAD /p HTTP/1.1\r\n"), "{}", heads[1]);
        assert!(heads[0].contains("host: 127.0.0.1:"), "{}", heads[0]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn answers_that_end_the_connection_are_not_reused() {
        for answer in [
            // Says so.
            "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\nx",
            // Runs to the connection's end.
            "CLOSE:HTTP/1.1 200 OK\r\n\r\nx",
            // HTTP/1.0.
            "HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\nx",
            // More than its length (stray bytes behind the body).
            "HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nxJUNK",
            // Both framings: chunked wins, and the connection goes.
            "HTTP/1.1 200 OK\r\ncontent-length: 50\r\ntransfer-encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
        ] {
            let (url, accepted, _) = scripted(vec![answer, answer]).await;
            let c = client(&url);
            for _ in 0..2 {
                assert_eq!(call(&c, &url, http::Method::GET).await.unwrap(), (200, "x".into()), "{answer}");
            }
            assert_eq!(accepted.load(Relaxed), 2, "{answer}");
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn bad_answers_are_502_material() {
        for answer in [
            "HTTP/1.1 200 OK\r\ncontent-length: 1, 2\r\n\r\nx",
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n",
            "NOT HTTP\r\n\r\n",
        ] {
            let (url, _, _) = scripted(vec![answer]).await;
            let err = call(&client(&url), &url, http::Method::GET)
                .await
                .unwrap_err();
            assert!(
                matches!(err, UpstreamError::Unreachable(_)),
                "{answer}: {err}"
            );
        }
        // A body cut short is an error of the body, not a short answer.
        let (url, _, _) =
            scripted(vec!["HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"]).await;
        assert!(call(&client(&url), &url, http::Method::GET).await.is_err());
    }

    /// The upstream reads the second request on a kept connection and
    /// closes without a byte of answer (it closed the idle connection as
    /// the request arrived): an idempotent request is sent again on a new
    /// connection, another is not.
    #[tokio::test(flavor = "current_thread")]
    async fn idempotent_requests_are_retried_once_after_a_silent_close() {
        let ok = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        // Each connection answers once, then reads a request and closes.
        let (url, accepted, _) = scripted(vec![ok, ""]).await;
        let c = client(&url);
        for _ in 0..2 {
            assert_eq!(
                call(&c, &url, http::Method::GET).await.unwrap(),
                (200, "ok".into())
            );
        }
        assert_eq!(accepted.load(Relaxed), 2);
        let err = call(&c, &url, http::Method::DELETE).await.unwrap_err();
        assert!(matches!(err, UpstreamError::Unreachable(_)), "{err}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn unreachable_and_silent_upstreams_are_told_apart() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url: Uri = format!("http://{}", closed.local_addr().unwrap())
            .parse()
            .unwrap();
        drop(closed);
        let err = get(&client(&url), &url).await.unwrap_err();
        assert!(matches!(err, UpstreamError::Unreachable(_)), "{err}");

        // Accepts, never answers.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url: Uri = format!("http://{}", silent.local_addr().unwrap())
            .parse()
            .unwrap();
        let held = tokio::spawn(async move {
            let mut conns = Vec::new();
            loop {
                conns.push(silent.accept().await.unwrap());
            }
        });
        let c = Client::new(&url, Duration::from_secs(2), Duration::from_millis(200));
        let err = get(&c, &url).await.unwrap_err();
        assert!(matches!(err, UpstreamError::Timeout(_)), "{err}");
        held.abort();
    }
}
