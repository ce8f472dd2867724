//! The cleanup task: purge every shard on an interval [30 min] and snapshot
//! to the store, each run logged; stopped explicitly with a graceful
//! shutdown that waits for the task (and takes a last snapshot).

use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::now;
use crate::guard::Guard;
use crate::persist::PersistError as StoreError;

/// Default interval (the 003 seed's 30 minutes).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30 * 60);

/// A running cleanup task.
pub struct Cleanup {
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), StoreError>>,
}

/// One purge + snapshot run.
pub async fn run_once(guard: &Guard) -> crate::limiter::PurgeReport {
    let started = Instant::now();
    let limiter = guard.limiter().clone();
    let report = tokio::task::spawn_blocking(move || limiter.purge_at(now()))
        .await
        .unwrap_or_default();
    guard.snapshot().await;
    tracing::info!(
        removed = report.removed,
        kept = report.kept,
        took_ms = started.elapsed().as_millis() as u64,
        "cleanup run"
    );
    report
}

impl Cleanup {
    /// Start purging `guard` every `every`.
    pub fn start(guard: Guard, every: Duration) -> Cleanup {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await; // the first tick is immediate
            loop {
                tokio::select! {
                    _ = tick.tick() => { run_once(&guard).await; }
                    _ = stopped.changed() => break,
                }
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
#[derive(Debug, thiserror::Error)]
pub enum ShutdownError {
    /// The store refused the snapshot.
    #[error("final snapshot failed: {0}")]
    Snapshot(StoreError),
    /// The cleanup task panicked or was cancelled.
    #[error("cleanup task failed before the final snapshot: {0}")]
    Task(String),
}
