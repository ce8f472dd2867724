//! The cleanup task: purge every shard on an interval [30 min] and snapshot
//! to the store, each run logged; stopped explicitly with a graceful
//! shutdown that waits for the task (and takes a last snapshot).

use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::now;
use crate::guard::Guard;
use crate::persist::PersistError as StoreError;

/// A running cleanup task.
pub struct Cleanup {
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), StoreError>>,
}

/// One purge + snapshot run ([`Cleanup::run_once`]).
async fn run_once(guard: &Guard) -> crate::limiter::PurgeReport {
    let started = Instant::now();
    let limiter = guard.limiter().clone();
    let report = tokio::task::spawn_blocking(move || limiter.purge_at(now()))
        .await
        .unwrap_or_default();
    let manual = guard.purge_manual().await;
    if manual > 0 {
        tracing::info!(ended = manual, "manual bans that ended forgotten");
    }
    guard.snapshot().await;
    guard.record_table_metrics();
    tracing::info!(
        removed = report.removed,
        kept = report.kept,
        took_ms = started.elapsed().as_millis() as u64,
        "cleanup run"
    );
    report
}

impl Cleanup {
    /// Default interval (the 003 seed's 30 minutes).
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30 * 60);

    /// One purge + snapshot run, now, without a task.
    pub async fn run_once(guard: &Guard) -> crate::limiter::PurgeReport {
        run_once(guard).await
    }

    /// Start purging `guard` every `every`.
    pub fn start(guard: Guard, every: Duration) -> Cleanup {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            // A run every `every`; a late run delays the next (no burst).
            let mut next = tokio::time::Instant::now() + every;
            // `changed` is cancel-safe: a stop (or a dropped sender) wins
            // over the deadline it races.
            while tokio::time::timeout_at(next, stopped.changed())
                .await
                .is_err()
            {
                run_once(&guard).await;
                next = (next + every).max(tokio::time::Instant::now());
            }
            let last = guard.try_snapshot().await;
            if last.is_ok() {
                tracing::info!("cleanup task stopped; final snapshot taken");
            }
            last
        });
        Cleanup { stop, task }
    }

    /// Stop and wait for the task to finish its last snapshot; its error
    /// if that snapshot failed.
    pub async fn shutdown(self) -> Result<(), ShutdownError> {
        let _ = self.stop.send(true);
        match self.task.await {
            Ok(r) => r.map_err(ShutdownError::Snapshot),
            Err(e) => {
                tracing::error!(error = %e, "cleanup task failed");
                Err(ShutdownError::Task(e.to_string()))
            }
        }
    }
}

/// Why the final snapshot was not taken.
#[derive(Debug)]
pub enum ShutdownError {
    /// The store refused the snapshot.
    Snapshot(StoreError),
    /// The cleanup task panicked or was cancelled.
    Task(String),
}

impl std::fmt::Display for ShutdownError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShutdownError::Snapshot(e) => write!(f, "final snapshot failed: {e}"),
            ShutdownError::Task(e) => {
                write!(f, "cleanup task failed before the final snapshot: {e}")
            }
        }
    }
}

impl std::error::Error for ShutdownError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ShutdownError::Snapshot(e) => Some(&**e),
            ShutdownError::Task(_) => None,
        }
    }
}
