//! The cleanup task: purge every shard on an interval [30 min] and snapshot
//! to the store, each run logged; stopped explicitly with a graceful
//! shutdown that waits for the task (and takes a last snapshot).

use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::now;
use crate::guard::Guard;

/// Default interval (the 003 seed's 30 minutes).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30 * 60);

/// A running cleanup task.
pub struct Cleanup {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
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
            guard.snapshot().await;
            tracing::info!("cleanup task stopped; final snapshot taken");
        });
        Cleanup { stop, task }
    }

    /// Stop and wait for the task to finish its last snapshot.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "cleanup task failed");
        }
    }
}
