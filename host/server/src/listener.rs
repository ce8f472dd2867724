//! The HTTP/1 listener: an accept loop over hyper connections that slow or
//! idle clients cannot starve (finding 4 of issue 14) and that SIGTERM
//! stops within a bounded grace period (finding 5).
//!
//! - A request head must be complete within `header_read_timeout` of the
//!   connection opening or of the next request's first byte; a keep-alive
//!   connection without a request is closed after `idle_timeout`; a request
//!   body must be complete within `body_read_timeout` of its head.
//! - At most `max_connections` connections are open (capped by the file
//!   descriptor limit, which is raised to its hard limit at start-up), at
//!   most `max_connections_per_ip` per client address (IPv6: per /64).
//!   At the total cap the connection that has waited longest for a
//!   complete request head (or idled longest) is closed to make room, so
//!   stalled clients cannot lock others out; if every connection has a
//!   request in flight, or the address is at its own cap, the new
//!   connection is accepted and closed at once. Failed
//!   `accept` calls (`EMFILE`) back off briefly and the loop goes on.
//! - On shutdown the listener closes, idle connections close, in-flight
//!   requests get `shutdown_grace`, then every connection left is dropped.
//!
//! The counts are shared by every worker runtime (the `workers` module), so
//! the caps are exact across them. Each connection is one task driving
//! its hyper connection and one timer (re-armed every tick, not per
//! request); eviction and shutdown set a flag and wake that task.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::response::Response;
use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http::Request;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use super::config::ConnLimits;
use crate::armed::Armed;
use crate::exporter::ServerMetrics;
use crate::pipeline::Pipeline;

/// File descriptors kept back from client connections (store, logs,
/// Redis, the listener itself).
pub const FD_HEADROOM: u64 = 64;

/// Raise the soft file descriptor limit to the hard one and return
/// `max_connections` capped to what the limit allows (minus
/// [`FD_HEADROOM`]); a cap is logged.
pub fn fd_budget(max_connections: u32) -> u32 {
    let soft = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the file descriptor limit");
            match rlimit::Resource::NOFILE.get() {
                Ok((soft, _)) => soft,
                Err(_) => return max_connections,
            }
        }
    };
    let allowed = soft.saturating_sub(FD_HEADROOM).max(1);
    if u64::from(max_connections) > allowed {
        let capped = u32::try_from(allowed).unwrap_or(u32::MAX);
        tracing::warn!(
            configured = max_connections,
            fd_limit = soft,
            max_connections = capped,
            "server.max_connections capped by the file descriptor limit"
        );
        capped
    } else {
        tracing::info!(fd_limit = soft, max_connections, "connection cap");
        max_connections
    }
}

/// The key connections are counted under: the address, IPv4-mapped IPv6
/// as IPv4, other IPv6 by its /64.
pub fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(
                u128::from(v6) & 0xffff_ffff_ffff_ffff_0000_0000_0000_0000,
            )),
        },
    }
}

/// Connections admitted over the cap while the ones evicted for them close.
const EVICTION_SLACK: u64 = 32;

/// Open connections, in all and per address, shared by every worker.
pub struct Counts {
    max: u64,
    per_ip: u32,
    by_ip: Mutex<HashMap<IpAddr, u32>>,
    /// Open connections by id, for eviction at the cap.
    conns: Mutex<HashMap<u64, Arc<ConnState>>>,
    next_id: AtomicU64,
    /// Evicted connections not closed yet.
    evicting: AtomicU64,
    /// Shutdown began: connections finish their request and close.
    stopping: AtomicBool,
    metrics: Arc<ServerMetrics>,
}

/// One admitted connection; its counts are given back on drop.
pub struct Ticket {
    counts: Arc<Counts>,
    key: IpAddr,
    id: u64,
    state: Arc<ConnState>,
}

impl Counts {
    /// Counts for `cfg`'s caps (`max_connections` capped by the file
    /// descriptor limit, see [`fd_budget`]).
    pub fn new(cfg: &ConnLimits, metrics: Arc<ServerMetrics>) -> Arc<Counts> {
        Arc::new(Counts {
            max: u64::from(fd_budget(cfg.max_connections)),
            per_ip: cfg.max_connections_per_ip,
            by_ip: Mutex::new(HashMap::new()),
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            evicting: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            metrics,
        })
    }

    /// Connections open now (all workers).
    pub fn open(&self) -> u64 {
        self.metrics.connections_open.load(Relaxed)
    }

    /// Failed `accept` calls, counted.
    pub fn accept_failed(&self) {
        self.metrics.accept_errors.fetch_add(1, Relaxed);
    }

    /// Shutdown: every connection finishes its request in flight (within
    /// `shutdown_grace`) and closes; idle ones close at once.
    pub fn stop_all(&self) {
        self.stopping.store(true, Relaxed);
        for c in self.conns.lock().values() {
            c.waker.wake();
        }
    }

    /// Admit a connection from `ip`, or count why not; `Err(true)` when
    /// evicted connections are still closing (worth a brief wait).
    pub fn admit(self: &Arc<Self>, ip: IpAddr, last_try: bool) -> Result<Ticket, bool> {
        let key = ip_key(ip);
        let mut map = self.by_ip.lock();
        if map.get(&key).is_some_and(|n| *n >= self.per_ip) {
            drop(map);
            self.metrics.refused_per_ip.fetch_add(1, Relaxed);
            return Err(false);
        }
        let open = self.open();
        if open >= self.max + EVICTION_SLACK && !last_try && self.evicting.load(Relaxed) > 0 {
            return Err(true);
        }
        if open >= self.max && (open >= self.max + EVICTION_SLACK || !self.evict_one()) {
            drop(map);
            self.metrics.refused_max_connections.fetch_add(1, Relaxed);
            return Err(false);
        }
        *map.entry(key).or_insert(0) += 1;
        drop(map);
        self.metrics.connections_open.fetch_add(1, Relaxed);
        let id = self.next_id.fetch_add(1, Relaxed);
        let state = Arc::new(ConnState::new());
        self.conns.lock().insert(id, state.clone());
        Ok(Ticket {
            counts: self.clone(),
            key,
            id,
            state,
        })
    }

    /// Close the connection that has waited longest for a request head,
    /// else the one idle longest; none with a request in flight.
    fn evict_one(&self) -> bool {
        let conns = self.conns.lock();
        let victim = conns
            .values()
            .filter(|c| c.in_flight.load(Relaxed) == 0 && !c.evicted.load(Relaxed))
            .max_by_key(|c| {
                let waited = c.waiting_ms();
                (c.head_started.load(Relaxed) != 0, waited)
            });
        match victim {
            Some(c) => {
                c.evicted.store(true, Relaxed);
                self.evicting.fetch_add(1, Relaxed);
                c.waker.wake();
                self.metrics.evicted.fetch_add(1, Relaxed);
                true
            }
            None => false,
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.counts.conns.lock().remove(&self.id);
        if self.state.evicted.load(Relaxed) {
            self.counts.evicting.fetch_sub(1, Relaxed);
        }
        let mut map = self.counts.by_ip.lock();
        if let Some(n) = map.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.key);
            }
        }
        self.counts.metrics.connections_open.fetch_sub(1, Relaxed);
    }
}

/// What a connection is doing, for its read timeouts.
struct ConnState {
    /// Requests handed to the service and not yet answered.
    in_flight: AtomicU64,
    /// When the current request head began ([`Self::ms`], plus one;
    /// 0 = no head being read).
    head_started: AtomicU64,
    /// Last byte read or written, or last response ([`Self::ms`]).
    last_activity: AtomicU64,
    /// Chosen for eviction at the connection cap.
    evicted: AtomicBool,
    /// Wakes the connection's task (eviction, shutdown).
    waker: AtomicWaker,
}

enum Expired {
    Header,
    Idle,
}

impl ConnState {
    fn new() -> Self {
        let now = Self::ms();
        ConnState {
            in_flight: AtomicU64::new(0),
            // A new connection must send its first head within the header timeout.
            head_started: AtomicU64::new(now.saturating_add(1)),
            last_activity: AtomicU64::new(now),
            evicted: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        }
    }

    /// How long this connection has waited for a head (or idled).
    fn waiting_ms(&self) -> u64 {
        let since = match self.head_started.load(Relaxed) {
            0 => self.last_activity.load(Relaxed),
            s => s - 1,
        };
        Self::ms().saturating_sub(since)
    }

    /// Milliseconds on the coarse clock (a timer tick's resolution, no
    /// time-stamp counter read): stamped on every read and write, and a
    /// timeout of a second or more does not need better.
    fn ms() -> u64 {
        portcullis::clock::now_coarse().as_micros() / 1000
    }

    fn on_read(&self) {
        let now = Self::ms();
        self.last_activity.store(now, Relaxed);
        if self.in_flight.load(Relaxed) == 0 && self.head_started.load(Relaxed) == 0 {
            self.head_started.store(now.saturating_add(1), Relaxed);
        }
    }

    fn on_write(&self) {
        self.last_activity.store(Self::ms(), Relaxed);
    }

    fn begin(&self) {
        self.in_flight.fetch_add(1, Relaxed);
        self.head_started.store(0, Relaxed);
    }

    fn end(&self) {
        self.in_flight.fetch_sub(1, Relaxed);
        self.on_write();
    }

    fn expired(&self, cfg: &ConnLimits) -> Option<Expired> {
        if self.in_flight.load(Relaxed) > 0 {
            return None; // the body timeout and the handler bound the request
        }
        let now = Self::ms();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        match self.head_started.load(Relaxed) {
            0 => (now.saturating_sub(self.last_activity.load(Relaxed)) >= ms(cfg.idle_timeout))
                .then_some(Expired::Idle),
            started => (now.saturating_sub(started - 1) >= ms(cfg.header_read_timeout))
                .then_some(Expired::Header),
        }
    }
}

/// The socket, noting reads and writes in the connection's state.
struct TimedIo {
    inner: TcpStream,
    state: Arc<ConnState>,
}

impl AsyncRead for TimedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.on_read();
        }
        r
    }
}

impl AsyncWrite for TimedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.state.on_write();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.state.on_write();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A request body that must be complete within a deadline.
#[derive(Debug, thiserror::Error)]
#[error("request body not received within {0:?}")]
pub struct BodyTimeout(Duration);

pin_project_lite::pin_project! {
    /// The body of a request that has one: the deadline's timer is armed
    /// only if the body is not all there when first read.
    struct TimedBody {
        #[pin]
        inner: Incoming,
        deadline: Option<Pin<Box<Sleep>>>,
        start: tokio::time::Instant,
        limit: Duration,
    }
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(f) => Poll::Ready(f.map(|r| r.map_err(Into::into))),
            Poll::Pending => {
                let at = *this.start + *this.limit;
                let deadline = this
                    .deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
                match deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(BodyTimeout(*this.limit).into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Marks a request answered when dropped (also when cancelled).
struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// The request as the pipeline takes it: the body timed when there is
/// one (a `GET` has none: nothing to time, nothing to box).
fn timed(req: Request<Incoming>, limit: Duration) -> Request<axum::body::Body> {
    req.map(|inner| {
        if inner.is_end_stream() {
            axum::body::Body::empty()
        } else {
            axum::body::Body::new(TimedBody {
                inner,
                deadline: None,
                start: tokio::time::Instant::now(),
                limit,
            })
        }
    })
}

/// The connection's service: every request straight to the pipeline
/// ([`Pipeline::serve`]) with the peer address, the body deadline and
/// in-flight tracking. No router and no boxed layer sits between the
/// socket and the pipeline; hyper keeps the pipeline's future in place.
fn service(
    pipeline: Arc<Pipeline>,
    peer: SocketAddr,
    state: Arc<ConnState>,
    body_timeout: Duration,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response,
    Error = Infallible,
    Future = impl Future<Output = Result<Response, Infallible>> + Send,
> + Send {
    hyper::service::service_fn(move |req: Request<Incoming>| {
        state.begin();
        // Marks the request answered when dropped (also when cancelled).
        let busy = InFlight(state.clone());
        let req = timed(req, body_timeout);
        let p = pipeline.clone();
        async move {
            let resp = p.serve(peer.ip(), req).await;
            drop(busy);
            Ok(resp)
        }
    })
}

/// How often a connection checks its read timeouts.
fn tick(cfg: &ConnLimits) -> Duration {
    (cfg.header_read_timeout.min(cfg.idle_timeout) / 4)
        .clamp(Duration::from_millis(25), Duration::from_millis(500))
}

/// What the connection driver needs of hyper's connection.
trait Conn: Future<Output = Result<(), hyper::Error>> {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<S> Conn for hyper::server::conn::http1::Connection<TokioIo<TimedIo>, S>
where
    S: hyper::service::HttpService<Incoming, ResBody = axum::body::Body>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        hyper::server::conn::http1::Connection::graceful_shutdown(self);
    }
}

pin_project_lite::pin_project! {
    /// One connection: hyper's connection, one timer for the read
    /// timeouts and the shutdown grace, and the eviction and shutdown
    /// flags (checked on every wake-up; whoever sets one wakes the task).
    struct Driver<C> {
        #[pin]
        conn: C,
        #[pin]
        timer: Sleep,
        // The timer's registration: polled again only when it may have
        // fired (`armed.rs`).
        armed: Armed,
        ticket: Ticket,
        cfg: Arc<ConnLimits>,
        every: Duration,
        hard_stop: Option<tokio::time::Instant>,
        peer: SocketAddr,
    }
}

/// Why a connection task ends.
enum End {
    Done,
    Evicted,
    Grace,
    Expired(Expired),
}

impl<C: Conn> Future for Driver<C> {
    type Output = End;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<End> {
        let mut this = self.project();
        loop {
            if let Poll::Ready(r) = this.conn.as_mut().poll(cx) {
                if let Err(e) = r {
                    tracing::debug!(peer = %this.peer, error = %e, "connection ended with an error");
                }
                return Poll::Ready(End::Done);
            }
            let state = &this.ticket.state;
            state.waker.register(cx.waker());
            if state.evicted.load(Relaxed) {
                return Poll::Ready(End::Evicted);
            }
            if this.hard_stop.is_none() && this.ticket.counts.stopping.load(Relaxed) {
                this.conn.as_mut().graceful_shutdown();
                let hard = tokio::time::Instant::now() + this.cfg.shutdown_grace;
                *this.hard_stop = Some(hard);
                let next = this.timer.deadline();
                this.timer.as_mut().reset(hard.min(next));
                this.armed.disarm();
                continue; // hyper closes an idle connection on its next poll
            }
            if this.armed.poll(this.timer.as_mut(), cx).is_pending() {
                return Poll::Pending;
            }
            let now = tokio::time::Instant::now();
            if this.hard_stop.is_some_and(|h| now >= h) {
                return Poll::Ready(End::Grace);
            }
            if let Some(e) = state.expired(this.cfg) {
                return Poll::Ready(End::Expired(e));
            }
            let next = now + *this.every;
            this.timer
                .as_mut()
                .reset(this.hard_stop.map_or(next, |h| h.min(next)));
            this.armed.disarm();
        }
    }
}

/// Serve one admitted connection with `pipeline` until it closes, times
/// out, is evicted or outlives the shutdown grace.
pub async fn serve_conn(
    stream: TcpStream,
    peer: SocketAddr,
    pipeline: Arc<Pipeline>,
    cfg: Arc<ConnLimits>,
    ticket: Ticket,
) {
    let state = ticket.state.clone();
    let io = TokioIo::new(TimedIo {
        inner: stream,
        state: state.clone(),
    });
    let svc = service(pipeline, peer, state, cfg.body_read_timeout);
    let mut builder = hyper::server::conn::http1::Builder::new();
    // Header and idle timeouts are ours (hyper's header timer also runs
    // while a keep-alive connection is idle).
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .keep_alive(true);
    let every = tick(&cfg);
    let driver = Driver {
        conn: builder.serve_connection(io, svc),
        timer: tokio::time::sleep(every),
        armed: Armed::default(),
        ticket,
        cfg,
        every,
        hard_stop: None,
        peer,
    };
    let metrics = driver.ticket.counts.metrics.clone();
    match driver.await {
        End::Done => {}
        End::Evicted => {
            tracing::debug!(%peer, "connection cap reached; closing this waiting connection");
        }
        End::Grace => tracing::info!(%peer, "shutdown grace over; dropping connection"),
        End::Expired(Expired::Header) => {
            metrics.header_timeouts.fetch_add(1, Relaxed);
            tracing::debug!(%peer, "request head not complete in time; closing");
        }
        End::Expired(Expired::Idle) => {
            metrics.idle_timeouts.fetch_add(1, Relaxed);
            tracing::debug!(%peer, "idle keep-alive connection; closing");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_connections_count_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ip_key(a), ip_key(b));
        assert_ne!(ip_key(a), ip_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(ip_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }
}
