//! SQLite persistence: one file, WAL, a versioned schema, and a dedicated
//! writer thread so no store I/O runs on the async executor.
//!
//! Bans, blocks and locks are written through (the caller awaits the
//! writer's acknowledgement before answering); a full snapshot replaces the
//! table on the cleanup timer and at shutdown. Times are Unix milliseconds,
//! so a restart restores the *remaining* time. `synchronous = NORMAL` in
//! WAL mode survives a killed process (`kill -9`), which is what the crash
//! test checks; power loss may drop the last commits.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use portcullis_core::{Addr, Key, KeyKind, Seed};
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::oneshot;

use crate::limiter::HostRecord;

/// Schema version this build writes and reads.
pub const SCHEMA_VERSION: i64 = 1;

/// What went wrong with the store, always naming the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused (not a database, locked, I/O).
    #[error("{path}: {source}")]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The file was written by a newer portcullis.
    #[error("{path}: unknown schema version {found} (this portcullis knows up to {SCHEMA_VERSION}); refusing to touch it")]
    UnknownVersion {
        /// The file.
        path: PathBuf,
        /// Its `user_version`.
        found: i64,
    },
    /// A row cannot be a record; nothing was loaded.
    #[error("{path}: corrupt store: {reason}; refusing to load it")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The writer thread is gone.
    #[error("{path}: store writer stopped")]
    Closed {
        /// The file.
        path: PathBuf,
    },
}

enum Job {
    Upsert(Vec<HostRecord>, oneshot::Sender<Result<(), StoreError>>),
    Snapshot(Vec<HostRecord>, oneshot::Sender<Result<(), StoreError>>),
    Stop,
}

/// What a store held at start.
pub struct Loaded {
    /// The deployment's seed (created on first start).
    pub seed: Seed,
    /// Every saved record.
    pub records: Vec<HostRecord>,
}

/// Handle to the SQLite writer thread.
pub struct SqliteStore {
    path: PathBuf,
    tx: mpsc::Sender<Job>,
    thread: parking_lot::Mutex<Option<JoinHandle<()>>>,
}

fn sql(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    }
}

/// Open (creating if missing) and migrate, refusing unknown versions.
pub fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let e = sql(path);
    let conn = Connection::open(path).map_err(&e)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(&e)?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(&e)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::UnknownVersion {
            path: path.to_path_buf(),
            found: version,
        });
    }
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(&e)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(&e)?;
    if version < 1 {
        conn.execute_batch(
            "BEGIN;
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS entries (
                 kind INTEGER NOT NULL,
                 addr BLOB NOT NULL,
                 user INTEGER NOT NULL,
                 log TEXT NOT NULL,
                 violations TEXT NOT NULL,
                 block_until INTEGER,
                 block_level INTEGER NOT NULL,
                 last_block_start INTEGER,
                 banned INTEGER NOT NULL,
                 lock_until INTEGER,
                 PRIMARY KEY (kind, addr, user)
             ) WITHOUT ROWID;
             PRAGMA user_version = 1;
             COMMIT;",
        )
        .map_err(&e)?;
    }
    Ok(conn)
}

fn ms(v: Option<u64>) -> Option<i64> {
    v.map(|x| i64::try_from(x).unwrap_or(i64::MAX))
}

fn times(list: &[u64]) -> String {
    serde_json::to_string(list).unwrap_or_else(|_| "[]".into())
}

fn holds_state(r: &HostRecord) -> bool {
    !r.log.is_empty()
        || !r.violations.is_empty()
        || r.block_until.is_some()
        || r.banned
        || r.lock_until.is_some()
}

fn upsert(tx: &rusqlite::Transaction<'_>, r: &HostRecord) -> rusqlite::Result<()> {
    let (kind, addr, user) = (
        r.key.kind().tag(),
        r.key.addr().octets(),
        r.key.user() as i64,
    );
    if !holds_state(r) {
        tx.execute(
            "DELETE FROM entries WHERE kind = ?1 AND addr = ?2 AND user = ?3",
            params![kind, addr.as_slice(), user],
        )?;
        return Ok(());
    }
    tx.execute(
        "INSERT INTO entries (kind, addr, user, log, violations, block_until, block_level, last_block_start, banned, lock_until)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (kind, addr, user) DO UPDATE SET
           log = excluded.log, violations = excluded.violations, block_until = excluded.block_until,
           block_level = excluded.block_level, last_block_start = excluded.last_block_start,
           banned = excluded.banned, lock_until = excluded.lock_until",
        params![
            kind,
            addr.as_slice(),
            user,
            times(&r.log),
            times(&r.violations),
            ms(r.block_until),
            r.block_level,
            ms(r.last_block_start),
            r.banned,
            ms(r.lock_until),
        ],
    )?;
    Ok(())
}

fn corrupt(path: &Path, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Read the seed and every record; any malformed row refuses the load.
pub fn load(conn: &Connection, path: &Path) -> Result<Loaded, StoreError> {
    let e = sql(path);
    let seed: Option<Vec<u8>> = conn
        .query_row("SELECT value FROM meta WHERE key = 'seed'", [], |r| {
            r.get(0)
        })
        .optional()
        .map_err(&e)?;
    let seed = match seed {
        Some(b) => {
            let arr: [u8; 16] = b
                .try_into()
                .map_err(|_| corrupt(path, "seed is not 16 bytes"))?;
            Seed::new(arr)
        }
        None => {
            let mut b = [0u8; 16];
            getrandom::getrandom(&mut b)
                .map_err(|err| corrupt(path, format!("no RNG for a seed: {err}")))?;
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('seed', ?1)",
                params![b.as_slice()],
            )
            .map_err(&e)?;
            Seed::new(b)
        }
    };
    let mut stmt = conn
        .prepare("SELECT kind, addr, user, log, violations, block_until, block_level, last_block_start, banned, lock_until FROM entries")
        .map_err(&e)?;
    let mut rows = stmt.query([]).map_err(&e)?;
    let mut records = Vec::new();
    while let Some(row) = rows.next().map_err(&e)? {
        let n = records.len();
        let bad = |what: &str| corrupt(path, format!("row {n}: {what}"));
        let kind: i64 = row.get(0).map_err(&e)?;
        let kind = u8::try_from(kind)
            .ok()
            .and_then(KeyKind::from_tag)
            .ok_or_else(|| bad("unknown kind"))?;
        let addr: Vec<u8> = row.get(1).map_err(|_| bad("addr is not a blob"))?;
        let addr: [u8; 16] = addr.try_into().map_err(|_| bad("addr is not 16 bytes"))?;
        let user: i64 = row.get(2).map_err(&e)?;
        let key = Key::from_parts(kind, Addr::from_octets(addr), user as u64)
            .ok_or_else(|| bad("impossible key"))?;
        let mut rec = HostRecord::empty(key);
        let log: String = row.get(3).map_err(&e)?;
        let log: Vec<u64> =
            serde_json::from_str(&log).map_err(|err| bad(&format!("log: {err}")))?;
        for t in log {
            rec.log
                .push(t)
                .map_err(|_| bad("log longer than the table's log capacity"))?;
        }
        let v: String = row.get(4).map_err(&e)?;
        let v: Vec<u64> =
            serde_json::from_str(&v).map_err(|err| bad(&format!("violations: {err}")))?;
        for t in v {
            rec.violations
                .push(t)
                .map_err(|_| bad("too many violations"))?;
        }
        let opt = |i: usize| -> Result<Option<u64>, StoreError> {
            let v: Option<i64> = row.get(i).map_err(&e)?;
            v.map(|x| u64::try_from(x).map_err(|_| bad("negative time")))
                .transpose()
        };
        rec.block_until = opt(5)?;
        let level: i64 = row.get(6).map_err(&e)?;
        rec.block_level = u8::try_from(level).map_err(|_| bad("block level out of range"))?;
        rec.last_block_start = opt(7)?;
        rec.banned = row.get(8).map_err(&e)?;
        rec.lock_until = opt(9)?;
        records.push(rec);
    }
    Ok(Loaded { seed, records })
}

impl SqliteStore {
    /// Open `path`, load it, and start the writer thread.
    pub fn open(path: impl AsRef<Path>) -> Result<(SqliteStore, Loaded), StoreError> {
        let path = path.as_ref().to_path_buf();
        let mut conn = open_connection(&path)?;
        let loaded = load(&conn, &path)?;
        let (tx, rx) = mpsc::channel::<Job>();
        let thread_path = path.clone();
        let thread = std::thread::Builder::new()
            .name("portcullis-sqlite".into())
            .spawn(move || {
                let path = thread_path;
                while let Ok(job) = rx.recv() {
                    match job {
                        Job::Upsert(recs, ack) => {
                            let r = write(&mut conn, &path, &recs, false);
                            let _ = ack.send(r);
                        }
                        Job::Snapshot(recs, ack) => {
                            let r = write(&mut conn, &path, &recs, true);
                            let _ = ack.send(r);
                        }
                        Job::Stop => break,
                    }
                }
                tracing::debug!(path = %path.display(), "sqlite writer stopped");
            })
            .map_err(|err| corrupt(&path, format!("cannot start writer thread: {err}")))?;
        Ok((
            SqliteStore {
                path,
                tx,
                thread: parking_lot::Mutex::new(Some(thread)),
            },
            loaded,
        ))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn send(
        &self,
        job: impl FnOnce(oneshot::Sender<Result<(), StoreError>>) -> Job,
    ) -> oneshot::Receiver<Result<(), StoreError>> {
        let (ack, rx) = oneshot::channel();
        let _ = self.tx.send(job(ack));
        rx
    }

    /// Write records through; resolves once they are committed.
    pub async fn write(&self, records: Vec<HostRecord>) -> Result<(), StoreError> {
        let rx = self.send(|ack| Job::Upsert(records, ack));
        rx.await.unwrap_or_else(|_| {
            Err(StoreError::Closed {
                path: self.path.clone(),
            })
        })
    }

    /// Replace everything with `records`; resolves once committed.
    pub async fn snapshot(&self, records: Vec<HostRecord>) -> Result<(), StoreError> {
        let rx = self.send(|ack| Job::Snapshot(records, ack));
        rx.await.unwrap_or_else(|_| {
            Err(StoreError::Closed {
                path: self.path.clone(),
            })
        })
    }

    /// [`snapshot`](Self::snapshot) for non-async callers.
    pub fn snapshot_blocking(&self, records: Vec<HostRecord>) -> Result<(), StoreError> {
        let rx = self.send(|ack| Job::Snapshot(records, ack));
        rx.blocking_recv().unwrap_or_else(|_| {
            Err(StoreError::Closed {
                path: self.path.clone(),
            })
        })
    }

    /// [`write`](Self::write) for non-async callers.
    pub fn write_blocking(&self, records: Vec<HostRecord>) -> Result<(), StoreError> {
        let rx = self.send(|ack| Job::Upsert(records, ack));
        rx.blocking_recv().unwrap_or_else(|_| {
            Err(StoreError::Closed {
                path: self.path.clone(),
            })
        })
    }

    /// Stop the writer after the queued jobs, and wait for it.
    pub fn close(&self) {
        let _ = self.tx.send(Job::Stop);
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.close();
    }
}

fn write(
    conn: &mut Connection,
    path: &Path,
    recs: &[HostRecord],
    replace: bool,
) -> Result<(), StoreError> {
    let e = sql(path);
    let tx = conn.transaction().map_err(&e)?;
    if replace {
        tx.execute("DELETE FROM entries", []).map_err(&e)?;
    }
    for r in recs {
        upsert(&tx, r).map_err(&e)?;
    }
    tx.commit().map_err(&e)
}

/// Read-only view for the CLI's `--db` mode (no server running).
pub fn read_only(path: &Path) -> Result<Loaded, StoreError> {
    if !path.exists() {
        return Err(corrupt(path, "no such file"));
    }
    let conn = open_connection(path)?;
    load(&conn, path)
}

/// Apply a change to a store file directly (CLI `unban --db`).
pub fn apply(path: &Path, records: &[HostRecord]) -> Result<(), StoreError> {
    let mut conn = open_connection(path)?;
    write(&mut conn, path, records, false)
}
