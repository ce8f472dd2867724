//! One current-thread tokio runtime per worker thread, each accepting on
//! its own `SO_REUSEPORT` socket bound to the same address, so a
//! connection, its requests and their upstream hops all run on the thread
//! that accepted it: no work stealing, no cross-thread wake-ups on the
//! request path. `server.workers` sets how many \[one per core\].
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
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;

use crate::config::ConnLimits;
use crate::exporter::ServerMetrics;
use crate::listener::{serve_conn, Counts};
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

/// What every worker shares.
#[derive(Clone)]
struct Shared {
    pipeline: Arc<Pipeline>,
    cfg: Arc<ConnLimits>,
    counts: Arc<Counts>,
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
    let counts = Counts::new(&cfg, metrics);
    let grace = cfg.shutdown_grace;
    let (stop_tx, stop) = watch::channel(false);
    let (exit_tx, exit) = watch::channel(false);
    let shared = Shared {
        pipeline,
        cfg: Arc::new(cfg),
        counts: counts.clone(),
        stop,
        exit,
    };
    let (done_tx, mut done) = tokio::sync::mpsc::channel::<()>(1);
    let mut threads = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let (shared, done_tx) = (shared.clone(), done_tx.clone());
        let t = std::thread::Builder::new()
            .name(format!("portcullis-worker-{i}"))
            .spawn(move || {
                worker(l, shared);
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

/// One worker thread: its own current-thread runtime, accepting on `l`.
fn worker(l: std::net::TcpListener, shared: Shared) {
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
            Ok(l) => accept_loop(l, shared).await,
            Err(e) => tracing::error!(error = %e, "worker cannot listen"),
        }
        // Keep serving the connections in flight until the grace is over.
        let _ = exit.wait_for(|e| *e).await;
    });
}

/// Accept until told to stop; each connection is a task of this runtime.
async fn accept_loop(listener: TcpListener, shared: Shared) {
    let Shared {
        pipeline,
        cfg,
        counts,
        mut stop,
        ..
    } = shared;
    let mut warned: Option<Instant> = None;
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
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
        tokio::spawn(serve_conn(
            stream,
            peer,
            pipeline.clone(),
            cfg.clone(),
            ticket,
        ));
    }
}
