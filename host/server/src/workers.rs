//! One current-thread tokio runtime per worker thread, each accepting on
//! its own `SO_REUSEPORT` socket bound to the same address, so a
//! connection, its requests and their upstream hops all run on the thread
//! that accepted it: no work stealing, no cross-thread wake-ups on the
//! request path. `server.workers` sets how many \[one per core\].
//!
//! `SO_REUSEPORT` picks a worker by a hash of the connection's addresses,
//! so a few dozen connections often split 36/28 between two workers, and
//! the busier worker's clients wait longer: under load the tail latency
//! follows the busiest worker. So a worker that accepts a connection while
//! another serves at least two fewer hands it over, once, before its first
//! request (`Balance`); its requests then stay on that worker. Each worker's
//! count is on `/metrics` (`portcullis_worker_connections`), with the
//! hand-overs (`portcullis_connections_handed_over_total`).
//!
//! The connection caps ([`crate::listener::Counts`]) are shared, so they
//! stay exact across workers. Background work (cleanup, `SIGHUP` reload,
//! the Redis fleet's tasks, the shutdown sequence and the final snapshot)
//! runs on the runtime that called [`run`], which is not a worker.
//!
//! Sockets of one reuse-port group must all set the option before binding,
//! which would let a second server start on a port that is already in use
//! and silently share it; so before the group is bound a plain socket
//! probes the address and the usual "address in use" error stands.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::config::ConnLimits;
use crate::exporter::ServerMetrics;
use crate::listener::{serve_conn, Counts, Ticket};
use crate::pipeline::Pipeline;

/// Pending connections the kernel queues per socket.
const BACKLOG: u32 = 1024;

/// How many workers `server.workers = None` means: one per core.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `n` listening sockets on `addr` (one reuse-port group when `n > 1`;
/// port 0 picks one port for all). Call inside a runtime; the sockets are
/// handed to the workers' runtimes by [`run`].
pub fn bind(addr: SocketAddr, n: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let n = n.max(1);
    if n > 1 && addr.port() != 0 {
        // Refuse an address another server listens on (see the module doc).
        drop(socket(addr, false)?.listen(BACKLOG)?);
    }
    let mut out = Vec::with_capacity(n);
    let mut at = addr;
    for _ in 0..n {
        let l = socket(at, n > 1)?.listen(BACKLOG)?;
        at = l.local_addr()?;
        out.push(l.into_std()?);
    }
    Ok(out)
}

fn socket(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpSocket> {
    let s = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    s.set_reuseaddr(true)?;
    if reuse_port {
        s.set_reuseport(true)?;
    }
    s.bind(addr)?;
    Ok(s)
}

/// Spreads connections over the workers: each worker's count of the
/// connections it serves, and a channel to hand a connection to each.
struct Balance {
    /// Holds the counts (`worker_connections`, one per worker).
    metrics: Arc<ServerMetrics>,
    hand: Box<[mpsc::UnboundedSender<Handoff>]>,
}

/// A connection accepted by one worker for another to serve.
struct Handoff {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    ticket: Ticket,
    slot: Slot,
}

/// One connection counted against a worker until it is dropped.
struct Slot {
    metrics: Arc<ServerMetrics>,
    worker: usize,
}

/// Each worker's count of the connections it serves (empty before the
/// workers start).
fn open(metrics: &ServerMetrics) -> &[AtomicU64] {
    metrics.worker_connections.get().map_or(&[], |b| b)
}

impl Balance {
    /// The worker to serve a connection worker `me` accepted, counted
    /// against it from now on: `me`, unless another serves at least two
    /// fewer (then the one serving fewest). The margin of one keeps
    /// short-lived connections, whose counts flicker, from moving back
    /// and forth while it leaves any two workers at most two apart.
    fn place(&self, me: usize) -> Slot {
        let open = open(&self.metrics);
        let to = pick(open, me);
        if let Some(n) = open.get(to) {
            n.fetch_add(1, Relaxed);
        }
        Slot {
            metrics: self.metrics.clone(),
            worker: to,
        }
    }
}

/// See [`Balance::place`].
fn pick(open: &[AtomicU64], me: usize) -> usize {
    let Some(mine) = open.get(me).map(|n| n.load(Relaxed)) else {
        return me;
    };
    let (mut to, mut least) = (me, mine);
    for (i, n) in open.iter().enumerate() {
        let n = n.load(Relaxed);
        if n < least {
            (to, least) = (i, n);
        }
    }
    if least.saturating_add(1) < mine {
        to
    } else {
        me
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(n) = open(&self.metrics).get(self.worker) {
            n.fetch_sub(1, Relaxed);
        }
    }
}

/// What every worker shares.
#[derive(Clone)]
struct Shared {
    pipeline: Arc<Pipeline>,
    cfg: Arc<ConnLimits>,
    counts: Arc<Counts>,
    balance: Arc<Balance>,
    /// `true`: stop accepting.
    stop: watch::Receiver<bool>,
    /// `true`: the grace is over, end the runtime (dropping what is left).
    exit: watch::Receiver<bool>,
}

/// Serve `pipeline` on `listeners` (one worker thread and runtime each)
/// under `cfg`'s limits until `signal` resolves, then stop accepting, give
/// in-flight requests `cfg.shutdown_grace` and drop whatever is left.
/// Returns when every worker has ended.
pub async fn run(
    listeners: Vec<std::net::TcpListener>,
    pipeline: Arc<Pipeline>,
    cfg: ConnLimits,
    metrics: Arc<ServerMetrics>,
    signal: impl Future<Output = ()>,
) -> io::Result<()> {
    let counts = Counts::new(&cfg, metrics.clone());
    let grace = cfg.shutdown_grace;
    let (stop_tx, stop) = watch::channel(false);
    let (exit_tx, exit) = watch::channel(false);
    let n = listeners.len();
    let _ = metrics
        .worker_connections
        .set((0..n).map(|_| AtomicU64::new(0)).collect());
    let (hand, handed): (Vec<_>, Vec<_>) = (0..n).map(|_| mpsc::unbounded_channel()).unzip();
    let shared = Shared {
        pipeline,
        cfg: Arc::new(cfg),
        counts: counts.clone(),
        balance: Arc::new(Balance {
            metrics,
            hand: hand.into(),
        }),
        stop,
        exit,
    };
    let (done_tx, mut done) = tokio::sync::mpsc::channel::<()>(1);
    let mut threads = Vec::new();
    for (i, (l, handed)) in listeners.into_iter().zip(handed).enumerate() {
        let (shared, done_tx) = (shared.clone(), done_tx.clone());
        let t = std::thread::Builder::new()
            .name(format!("portcullis-worker-{i}"))
            .spawn(move || {
                worker(i, l, handed, shared);
                drop(done_tx);
            })?;
        threads.push(t);
    }
    drop(done_tx);
    signal.await;
    let _ = stop_tx.send(true);
    counts.stop_all();
    tracing::info!(
        open = counts.open(),
        grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
        "stopped accepting; waiting for in-flight requests"
    );
    let deadline = Instant::now() + grace + Duration::from_millis(500);
    while counts.open() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if counts.open() > 0 {
        tracing::warn!(
            open = counts.open(),
            "connections still open after the grace period"
        );
    }
    let _ = exit_tx.send(true);
    // Every worker drops its sender as its thread ends.
    let _ = done.recv().await;
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// Worker `me`: its own current-thread runtime, accepting on `l` and
/// taking the connections other workers hand it on `handed`. Never
/// inlined: `bench/request_icount.sh` counts a request worker's
/// instructions as this function's inclusive cost, under LTO too.
#[inline(never)]
fn worker(
    me: usize,
    l: std::net::TcpListener,
    handed: mpsc::UnboundedReceiver<Handoff>,
    shared: Shared,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start a worker runtime");
            return;
        }
    };
    rt.block_on(async move {
        let mut exit = shared.exit.clone();
        match TcpListener::from_std(l) {
            Ok(l) => accept_loop(me, l, handed, shared).await,
            Err(e) => tracing::error!(error = %e, "worker cannot listen"),
        }
        // Keep serving the connections in flight until the grace is over.
        let _ = exit.wait_for(|e| *e).await;
    });
}

/// Accept until told to stop; each connection is a task of this runtime,
/// or of the one it is handed to ([`Balance::place`]).
async fn accept_loop(
    me: usize,
    listener: TcpListener,
    mut handed: mpsc::UnboundedReceiver<Handoff>,
    shared: Shared,
) {
    let Shared {
        pipeline,
        cfg,
        counts,
        balance,
        mut stop,
        ..
    } = shared;
    let serve = |stream: TcpStream, peer: SocketAddr, ticket: Ticket, slot: Slot| {
        let conn = serve_conn(stream, peer, pipeline.clone(), cfg.clone(), ticket);
        tokio::spawn(async move {
            conn.await;
            drop(slot);
        });
    };
    let mut warned: Option<Instant> = None;
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            Some(h) = handed.recv() => {
                match TcpStream::from_std(h.stream) {
                    Ok(stream) => serve(stream, h.peer, h.ticket, h.slot),
                    Err(e) => tracing::warn!(error = %e, "cannot take a handed-over connection"),
                }
                continue;
            }
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE/ENFILE and friends: keep accepting after a
                    // short pause (open connections free descriptors as
                    // their timeouts fire).
                    counts.accept_failed();
                    if warned.is_none_or(|w| w.elapsed() >= Duration::from_secs(1)) {
                        tracing::warn!(error = %e, "accept failed; backing off");
                        warned = Some(Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            }
        };
        // At the cap with evictions still closing: give them a few
        // milliseconds rather than refuse.
        let mut admitted = counts.admit(peer.ip(), false);
        for tries in 1..=20 {
            if !matches!(admitted, Err(true)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
            admitted = counts.admit(peer.ip(), tries == 20);
        }
        let Ok(ticket) = admitted else {
            tracing::debug!(%peer, "connection cap reached; closing");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let slot = balance.place(me);
        if slot.worker == me {
            serve(stream, peer, ticket, slot);
        } else {
            hand_over(&balance, stream, peer, ticket, slot);
        }
    }
}

/// Give a connection to the worker its `slot` counts it against; that
/// worker registers the socket with its own reactor.
fn hand_over(balance: &Balance, stream: TcpStream, peer: SocketAddr, ticket: Ticket, slot: Slot) {
    let Some(hand) = balance.hand.get(slot.worker) else {
        return;
    };
    match stream.into_std() {
        Ok(stream) => {
            let h = Handoff {
                stream,
                peer,
                ticket,
                slot,
            };
            // Refused only when that worker has stopped accepting: the
            // connection closes, as one still in the backlog would.
            if hand.send(h).is_ok() {
                balance.metrics.handed_over.fetch_add(1, Relaxed);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot hand a connection over"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(v: &[u64]) -> Vec<AtomicU64> {
        v.iter().map(|&n| AtomicU64::new(n)).collect()
    }

    #[test]
    fn a_connection_stays_unless_another_worker_serves_two_fewer() {
        assert_eq!(pick(&counts(&[3, 3]), 0), 0);
        assert_eq!(pick(&counts(&[4, 3]), 0), 0);
        assert_eq!(pick(&counts(&[5, 3]), 0), 1);
        assert_eq!(
            pick(&counts(&[9, 7, 2, 2]), 1),
            2,
            "the first of the least busy"
        );
        assert_eq!(pick(&counts(&[0]), 0), 0);
        assert_eq!(pick(&counts(&[]), 0), 0, "no counts yet: stay");
    }

    #[test]
    fn placing_keeps_workers_within_two_of_each_other() {
        let metrics = Arc::new(ServerMetrics::default());
        let _ = metrics
            .worker_connections
            .set((0..2).map(|_| AtomicU64::new(0)).collect());
        let (hand, _rx): (Vec<_>, Vec<_>) = (0..2).map(|_| mpsc::unbounded_channel()).unzip();
        let b = Balance {
            metrics: metrics.clone(),
            hand: hand.into(),
        };
        // Every connection lands on worker 0's socket (the worst hash).
        let slots: Vec<Slot> = (0..64).map(|_| b.place(0)).collect();
        let now = |w: usize| open(&b.metrics)[w].load(Relaxed);
        assert!(now(0).abs_diff(now(1)) <= 2, "{} / {}", now(0), now(1));
        assert_eq!(now(0) + now(1), 64);
        drop(slots);
        assert_eq!((now(0), now(1)), (0, 0), "a dropped slot is uncounted");
    }
}
