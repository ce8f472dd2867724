//! Log jails (`[[jails]]`, `docs/jails.md`): services portcullis cannot sit
//! in front of (sshd, mail, FTP, databases) write their failed logins to a
//! log; a jail follows that log (a file, [`follow`], or a unit's systemd
//! journal, [`journal`]), turns its lines into failed and successful
//! logins ([`matcher`]) and feeds them to the same login rules the HTTP
//! login path uses ([`feed`]). How far each jail has read is saved in the
//! server's store ([`position`]); which jail locked an address is kept
//! for the ban list ([`origins`]).
//!
//! Each jail is one tokio task on the server's start-up runtime, not on
//! the request workers': a slow disk or a busy log never holds a request.

pub mod feed;
pub mod follow;
pub mod journal;
pub mod matcher;
pub mod origins;
pub mod position;
pub mod stamp;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use portcullis::sqlite::{JailPosition, SqliteStore};
use portcullis::Engine;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::jails::{JailConfig, JailSource};
use feed::Feeder;
use position::Positions;

/// How often a file at its end is looked at again.
pub const POLL: Duration = Duration::from_millis(200);

/// The running jails.
pub struct Jails {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Jails {
    /// Start every jail of `jails`, feeding `engine` (whose locks last
    /// `lock_for`), keeping positions in `store`.
    pub async fn start(
        jails: &[JailConfig],
        engine: Arc<dyn Engine>,
        lock_for: Duration,
        store: Option<Arc<SqliteStore>>,
    ) -> Jails {
        let lock_for_ms = u64::try_from(lock_for.as_millis()).unwrap_or(u64::MAX);
        describe();
        let (stop, rx) = watch::channel(false);
        let positions = Positions::load(store).await;
        let mut tasks = Vec::new();
        for j in jails {
            let jail = Arc::new(j.clone());
            let feeder = Feeder::new(jail.clone(), engine.clone(), lock_for_ms);
            let saved = positions.get(&jail.name, &jail.source.label());
            tracing::info!(jail = %jail.name, source = %jail.source.label(), resumed = saved.is_some(), "jail started");
            // The file's presence is judged now, before the server listens.
            let source = match &jail.source {
                JailSource::File(p) => Source::File(follow::Tail::new(p.clone(), saved)),
                JailSource::Journal(u) => Source::Journal(u.clone(), saved),
            };
            let task = Task {
                jail,
                feeder,
                positions: positions.clone(),
                stop: rx.clone(),
            };
            tasks.push(tokio::spawn(task.run(source)));
        }
        Jails { stop, tasks }
    }

    /// Stop every jail between two lines (the position of the last line
    /// handled is saved) and wait for them.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

fn describe() {
    metrics::describe_counter!(
        crate::jail_series::LINES,
        "Log lines each jail read, by outcome (failure, refused, success, unmatched, ignored, no_address, future, duplicate)."
    );
    metrics::describe_counter!(
        crate::jail_series::LOCKS,
        "Failure lines of each jail that locked a (username, ip) pair or an ip."
    );
}

/// What a jail reads, ready to start.
enum Source {
    /// A file, its start judged.
    File(follow::Tail),
    /// A unit's journal, after the saved cursor.
    Journal(String, Option<JailPosition>),
}

/// One jail's loop.
struct Task {
    jail: Arc<JailConfig>,
    feeder: Feeder,
    positions: Positions,
    stop: watch::Receiver<bool>,
}

impl Task {
    async fn run(self, source: Source) {
        match source {
            Source::File(tail) => self.file(tail).await,
            Source::Journal(unit, saved) => self.journal(unit, saved).await,
        }
    }

    /// Sleep `d`; false if the jail is being stopped.
    async fn pause(&mut self, d: Duration) -> bool {
        if *self.stop.borrow() {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => !*self.stop.borrow(),
            _ = self.stop.changed() => false,
        }
    }

    fn position(&self, at: (u64, u64, u64), cursor: String) -> JailPosition {
        JailPosition {
            jail: self.jail.name.clone(),
            source: self.jail.source.label(),
            device: at.0,
            inode: at.1,
            offset: at.2,
            cursor,
        }
    }

    async fn file(mut self, mut tail: follow::Tail) {
        let mut last = None;
        let mut failing = false;
        loop {
            let (t, read) = match tokio::task::spawn_blocking(move || {
                let r = tail.read();
                (tail, r)
            })
            .await
            {
                Ok(x) => x,
                Err(e) => {
                    tracing::error!(jail = %self.jail.name, error = %e, "jail reader died");
                    return;
                }
            };
            tail = t;
            let more = match read {
                Ok(chunk) => {
                    failing = false;
                    self.chunk(chunk, &mut last).await
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(jail = %self.jail.name, source = %self.jail.source.label(), error = %e, "jail cannot read its log");
                    }
                    failing = true;
                    false
                }
            };
            if *self.stop.borrow() || (!more && !self.pause(POLL).await) {
                return;
            }
        }
    }

    /// Feed a chunk's lines and save the position past them; whether more
    /// is waiting.
    async fn chunk(&mut self, chunk: follow::Chunk, last: &mut Option<(u64, u64, u64)>) -> bool {
        for line in &chunk.lines {
            let now = portcullis::clock::unix_ms();
            let stamp = stamp::parse(line, now);
            self.feeder.line(line, stamp, now).await;
        }
        if chunk.at.1 != 0 && *last != Some(chunk.at) {
            self.positions
                .save(self.position(chunk.at, String::new()))
                .await;
            *last = Some(chunk.at);
        }
        chunk.more
    }

    async fn journal(mut self, unit: String, saved: Option<JailPosition>) {
        let mut cursor = saved.map(|p| p.cursor).filter(|c| !c.is_empty());
        loop {
            match self.journal_once(&unit, &mut cursor).await {
                Ok(true) => return,
                Ok(false) => tracing::warn!(jail = %self.jail.name, unit, "journalctl exited"),
                Err(e) => {
                    tracing::warn!(jail = %self.jail.name, unit, error = %e, "journalctl failed")
                }
            }
            if !self.pause(journal::RESTART_AFTER).await {
                return;
            }
        }
    }

    /// Run `journalctl` until it exits (false) or the jail stops (true).
    async fn journal_once(
        &mut self,
        unit: &str,
        cursor: &mut Option<String>,
    ) -> std::io::Result<bool> {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new("journalctl")
            .args(journal::args(unit, cursor.as_deref()))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let out = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout"))?;
        let mut lines = tokio::io::BufReader::new(out).lines();
        loop {
            let line = tokio::select! {
                l = lines.next_line() => l?,
                _ = self.stop.changed() => return Ok(true),
            };
            let Some(line) = line else { return Ok(false) };
            let Some(entry) = journal::parse(&line) else {
                continue;
            };
            let now = portcullis::clock::unix_ms();
            self.feeder.line(&entry.message, entry.stamp, now).await;
            self.positions
                .save(self.position((0, 0, 0), entry.cursor.clone()))
                .await;
            *cursor = Some(entry.cursor);
        }
    }
}
