//! SQLite persistence: one file, WAL, a versioned schema, and a dedicated
//! writer thread so no store I/O runs on the async executor.
//!
//! Bans, blocks and locks are written through (the caller awaits the
//! writer's acknowledgement before answering); a full snapshot replaces the
//! table on the cleanup timer and at shutdown. Times are Unix milliseconds,
//! so a restart restores the *remaining* time. `synchronous = NORMAL` in
//! WAL mode survives a killed process (`kill -9`), which is what the crash
//! test checks; power loss may drop the last commits.
//!
//! The file is exclusively ours and writable, or it is refused untouched:
//! - one process at a time: an exclusive advisory lock (`flock`) on the
//!   sibling `<file>.lock`, held for as long as the store is open, taken
//!   by the server and by the CLI's `--db` mode alike;
//! - nothing is written to a file before it is validated (read-only) as
//!   empty (no tables, `user_version` 0) or as ours ([`APPLICATION_ID`]
//!   and a known version); anything else is [`StoreError::Foreign`];
//! - opening probes a real write (`BEGIN IMMEDIATE`, a meta row, commit),
//!   so a file this process cannot write is refused at start-up;
//! - a snapshot never deletes rows it did not load or write: it upserts
//!   the current records and deletes only the keys this process knows of
//!   that are no longer present, in one transaction.
//!
//! Schema version 2 added `manual_bans` (an operator's bans of addresses
//! and ranges, [`ManualBan`]); a version 1 store is migrated in the
//! opening transaction (the table is created, nothing else changes), and
//! read as having no manual bans by the read-only CLI.
//!
//! Schema version 3 added `journal` (`sqlite/journal.rs`: what a fleet server's
//! local fallback imposed during a Redis outage, until Redis has it);
//! versions 1 and 2 are migrated the same way (the missing tables are
//! created) and read as having an empty journal.
//!
//! Schema version 4 added `jail_positions` (`sqlite/jails.rs`: how far each of the
//! server's log jails has read its source); versions 1 to 3 are migrated
//! the same way.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use portcullis_core::{Addr, Key, KeyKind, Seed};
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::oneshot;

use crate::limiter::Record;
use crate::manual::ManualBan;
use crate::manual::ManualChange;

mod jails;
mod journal;
use crate::persist::{JournalChange, JournalRow};
pub use jails::JailPosition;

/// Schema version this build writes and reads (and migrates 1 to 3 to).
pub const SCHEMA_VERSION: i64 = 4;

/// `PRAGMA application_id` of a portcullis store ("PCLS").
pub const APPLICATION_ID: i32 = 0x5043_4c53;

/// The tables of schema version 1, as `sqlite_master` lists them.
const V1_TABLES: &[&str] = &["entries", "meta"];

/// The columns of version 1's `entries`, in order.
const V1_ENTRIES: &[&str] = &[
    "kind",
    "addr",
    "user",
    "log",
    "violations",
    "block_until",
    "block_level",
    "last_block_start",
    "banned",
    "lock_until",
];

/// The columns of version 1's `meta`.
const V1_META: &[&str] = &["key", "value"];

/// The tables of schema version 2: version 1's and `manual_bans`.
const V2_TABLES: &[&str] = &["entries", "manual_bans", "meta"];

/// The tables of schema version 3: version 2's and `journal`.
const V3_TABLES: &[&str] = &["entries", "journal", "manual_bans", "meta"];

/// The tables of schema version 4: version 3's and `jail_positions`.
const V4_TABLES: &[&str] = &[
    "entries",
    "jail_positions",
    "journal",
    "manual_bans",
    "meta",
];

/// The columns of version 2's `manual_bans`.
const V2_MANUAL: &[&str] = &["range", "until_ms", "reason", "created_ms"];

/// Version 2's new table (also the migration from version 1).
const CREATE_MANUAL: &str = "CREATE TABLE manual_bans (
                 range TEXT PRIMARY KEY,
                 until_ms INTEGER,
                 reason TEXT NOT NULL,
                 created_ms INTEGER NOT NULL
             );";

/// What went wrong with the store, always naming the file.
#[derive(Debug)]
pub enum StoreError {
    /// SQLite refused (not a database, locked, I/O).
    Sqlite {
        /// The file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The file was written by a newer portcullis.
    UnknownVersion {
        /// The file.
        path: PathBuf,
        /// Its `user_version`.
        found: i64,
    },
    /// A row cannot be a record; nothing was loaded.
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The writer thread is gone.
    Closed {
        /// The file.
        path: PathBuf,
    },
    /// The file is some other program's (or not empty and not ours).
    Foreign {
        /// The file.
        path: PathBuf,
        /// What gave it away.
        reason: String,
    },
    /// This process cannot write the file.
    NotWritable {
        /// The file.
        path: PathBuf,
        /// SQLite's error on the probe write.
        source: rusqlite::Error,
    },
    /// Another process holds the store's lock.
    Locked {
        /// The file.
        path: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// The holder's pid, as it wrote it into the lock file.
        pid: Option<u32>,
    },
    /// The lock file cannot be opened or locked.
    Lock {
        /// The file.
        path: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The last snapshot before closing failed (its state is not saved).
    SnapshotFailed {
        /// The file.
        path: PathBuf,
        /// The snapshot's error (names the file).
        reason: String,
    },
    /// The file does not exist (CLI `--db` never creates one).
    Missing {
        /// The file.
        path: PathBuf,
    },
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Sqlite { path, source } => write!(f, "{}: {source}", path.display()),
            StoreError::UnknownVersion { path, found } => write!(
                f,
                "{}: unknown schema version {found} (this portcullis knows up to {SCHEMA_VERSION}); refusing to touch it",
                path.display()
            ),
            StoreError::Corrupt { path, reason } => write!(
                f,
                "{}: corrupt store: {reason}; refusing to load it",
                path.display()
            ),
            StoreError::Closed { path } => write!(f, "{}: store writer stopped", path.display()),
            StoreError::Foreign { path, reason } => write!(
                f,
                "{}: not a portcullis store ({reason}); refusing to touch it",
                path.display()
            ),
            StoreError::NotWritable { path, source } => write!(
                f,
                "{}: store is not writable ({source}); refusing to use it",
                path.display()
            ),
            StoreError::Locked { path, lock, pid } => {
                write!(f, "{}: store in use by a running server (", path.display())?;
                match pid {
                    Some(p) => write!(f, "pid {p}")?,
                    None => write!(f, "pid unknown")?,
                }
                write!(f, ", lock file {})", lock.display())
            }
            StoreError::Lock { path, lock, source } => write!(
                f,
                "{}: cannot lock {}: {source}",
                path.display(),
                lock.display()
            ),
            StoreError::SnapshotFailed { reason, .. } => {
                write!(f, "last snapshot failed: {reason}")
            }
            StoreError::Missing { path } => write!(f, "{}: no such file", path.display()),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Sqlite { source, .. } | StoreError::NotWritable { source, .. } => {
                Some(source)
            }
            StoreError::Lock { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Exclusive use of a store file for as long as it lives: an advisory
/// `flock` on `<file>.lock`, which holds the holder's pid. The kernel drops
/// it when the process dies, `kill -9` included. The lock file itself stays
/// (removing it would race with the next opener).
pub struct StoreLock {
    path: PathBuf,
    _file: std::fs::File,
}

impl StoreLock {
    /// Take the lock on `path`'s store, or say who holds it.
    pub fn acquire(path: &Path) -> Result<StoreLock, StoreError> {
        use std::io::{Read, Seek, Write};
        // Beside the real file, so two paths to one file (a symlink, `./`)
        // meet at one lock.
        let real = std::fs::canonicalize(path).unwrap_or_else(|_| {
            match (path.parent(), path.file_name()) {
                (Some(dir), Some(file)) => {
                    let dir = if dir.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        dir
                    };
                    std::fs::canonicalize(dir)
                        .map(|d| d.join(file))
                        .unwrap_or_else(|_| path.to_path_buf())
                }
                _ => path.to_path_buf(),
            }
        });
        let mut name = real.into_os_string();
        name.push(".lock");
        let lock = PathBuf::from(name);
        let fail = |source: std::io::Error| StoreError::Lock {
            path: path.to_path_buf(),
            lock: lock.clone(),
            source,
        };
        // A lock file this user may only read still locks (flock needs no
        // write access); it just keeps the holder's pid unrecorded.
        let (mut file, writable) = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock)
        {
            Ok(f) => (f, true),
            Err(err) if err.kind() == std::io::ErrorKind::PermissionDenied => {
                (std::fs::File::open(&lock).map_err(|_| fail(err))?, false)
            }
            Err(err) => return Err(fail(err)),
        };
        if let Err(err) = try_lock(&file) {
            if err.kind() != std::io::ErrorKind::WouldBlock {
                return Err(fail(err));
            }
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(StoreError::Locked {
                path: path.to_path_buf(),
                lock,
                pid: text.trim().parse().ok(),
            });
        }
        if writable {
            file.set_len(0)
                .and_then(|()| file.rewind())
                .and_then(|()| writeln!(file, "{}", std::process::id()))
                .map_err(fail)?;
        }
        Ok(StoreLock {
            path: path.to_path_buf(),
            _file: file,
        })
    }

    /// The store file this lock is for.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(unix)]
fn try_lock(file: &std::fs::File) -> std::io::Result<()> {
    use rustix::fs::{flock, FlockOperation};
    flock(file, FlockOperation::NonBlockingLockExclusive).map_err(std::io::Error::from)
}

#[cfg(not(unix))]
fn try_lock(_file: &std::fs::File) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "store locking needs a unix system",
    ))
}

enum Job {
    Upsert(Vec<Record>, oneshot::Sender<Result<(), StoreError>>),
    Manual(ManualChange, oneshot::Sender<Result<(), StoreError>>),
    Journal(Vec<JournalChange>, oneshot::Sender<Result<(), StoreError>>),
    Snapshot(Vec<Record>, oneshot::Sender<Result<(), StoreError>>),
    JailPosition(JailPosition, oneshot::Sender<Result<(), StoreError>>),
    JailPositions(oneshot::Sender<Result<Vec<JailPosition>, StoreError>>),
    Stop,
}

/// What a store held at start.
pub struct Loaded {
    /// The deployment's seed (created on first start).
    pub seed: Seed,
    /// Every saved record.
    pub records: Vec<Record>,
    /// The operator's manual bans of addresses and ranges (ended ones too:
    /// the limiter ignores them and its purge forgets them).
    pub manual: Vec<ManualBan>,
    /// A fleet server's journal (`sqlite/journal.rs`; empty for a store of
    /// `kind = "sqlite"`).
    pub journal: Vec<JournalRow>,
}

/// Handle to the SQLite writer thread.
pub struct SqliteStore {
    path: PathBuf,
    tx: mpsc::Sender<Job>,
    thread: parking_lot::Mutex<Option<JoinHandle<Result<(), StoreError>>>>,
}

fn sql(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    }
}

/// What a file holds, judged without writing to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contents {
    /// Missing, zero bytes, or a database with no schema objects and version 0.
    Empty,
    /// A portcullis store of `version`; `stamped` if it carries our
    /// `application_id` (stores written before it existed do not).
    Ours { stamped: bool, version: i64 },
}

/// Open `path` read-only (creating nothing) and decide whether it is empty,
/// ours, or to be refused.
fn inspect(path: &Path) -> Result<Contents, StoreError> {
    let e = sql(path);
    match std::fs::metadata(path) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Contents::Empty),
        Ok(m) if m.len() == 0 => return Ok(Contents::Empty),
        _ => {}
    }
    let conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(&e)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(&e)?;
    let app: i32 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(&e)?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(&e)?;
    let strings = |q: &str| -> Result<Vec<String>, StoreError> {
        let mut stmt = conn.prepare(q).map_err(&e)?;
        let v = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(&e)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(&e);
        v
    };
    // Every schema object (tables, indexes, views, triggers) but SQLite's own.
    let objects = strings("SELECT name FROM sqlite_master WHERE substr(name, 1, 7) != 'sqlite_'")?;
    let tables = strings(
        "SELECT name FROM sqlite_master WHERE type = 'table' \
         AND substr(name, 1, 7) != 'sqlite_' ORDER BY name",
    )?;
    let foreign = |reason: String| StoreError::Foreign {
        path: path.to_path_buf(),
        reason,
    };
    if app != 0 && app != APPLICATION_ID {
        return Err(foreign(format!("application_id {app:#x}")));
    }
    if version > SCHEMA_VERSION {
        return Err(StoreError::UnknownVersion {
            path: path.to_path_buf(),
            found: version,
        });
    }
    if app == 0 && version == 0 && objects.is_empty() {
        return Ok(Contents::Empty);
    }
    let known_tables = match version {
        1 => tables == V1_TABLES,
        2 => {
            tables == V2_TABLES
                && strings("SELECT name FROM pragma_table_info('manual_bans')")? == V2_MANUAL
        }
        3 => {
            tables == V3_TABLES
                && strings("SELECT name FROM pragma_table_info('manual_bans')")? == V2_MANUAL
                && strings("SELECT name FROM pragma_table_info('journal')")? == journal::V3_JOURNAL
        }
        4 => {
            tables == V4_TABLES
                && strings("SELECT name FROM pragma_table_info('manual_bans')")? == V2_MANUAL
                && strings("SELECT name FROM pragma_table_info('journal')")? == journal::V3_JOURNAL
                && strings("SELECT name FROM pragma_table_info('jail_positions')")?
                    == jails::V4_JAIL_POSITIONS
        }
        _ => false,
    };
    if known_tables
        && strings("SELECT name FROM pragma_table_info('entries')")? == V1_ENTRIES
        && strings("SELECT name FROM pragma_table_info('meta')")? == V1_META
    {
        return Ok(Contents::Ours {
            stamped: app == APPLICATION_ID,
            version,
        });
    }
    Err(foreign(format!(
        "user_version {version}, tables [{}]",
        tables.join(", ")
    )))
}

/// Open (creating if missing) a validated, writable store; see the module
/// docs. The caller holds the file's [`StoreLock`].
pub fn open_connection(lock: &StoreLock) -> Result<Connection, StoreError> {
    let path = lock.path();
    let e = sql(path);
    let contents = inspect(path)?;
    let mut conn = Connection::open(path).map_err(&e)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(&e)?;
    // The probe: a real write in a transaction. The schema of an empty
    // file goes in the same transaction, so a refused file stays empty.
    let not_writable = |source| StoreError::NotWritable {
        path: path.to_path_buf(),
        source,
    };
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(not_writable)?;
    let mut setup = String::new();
    if contents == Contents::Empty {
        setup.push_str(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
             CREATE TABLE entries (
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
             ) WITHOUT ROWID;",
        );
        setup.push_str(CREATE_MANUAL);
        setup.push_str(journal::CREATE_JOURNAL);
        setup.push_str(jails::CREATE_JAIL_POSITIONS);
        setup.push_str(&format!("PRAGMA user_version = {SCHEMA_VERSION};"));
    }
    if let Contents::Ours { version, .. } = contents {
        // The migrations: version 2 added the manual bans' table, 3 the
        // journal, 4 the jails' positions.
        if version < 2 {
            setup.push_str(CREATE_MANUAL);
        }
        if version < 3 {
            setup.push_str(journal::CREATE_JOURNAL);
        }
        if version < 4 {
            setup.push_str(jails::CREATE_JAIL_POSITIONS);
            setup.push_str(&format!("PRAGMA user_version = {SCHEMA_VERSION};"));
        }
    }
    if !matches!(contents, Contents::Ours { stamped: true, .. }) {
        setup.push_str(&format!("PRAGMA application_id = {APPLICATION_ID};"));
    }
    tx.execute_batch(&setup).map_err(not_writable)?;
    tx.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('opened', ?1)",
        params![format!(
            "pid {} at {} ms",
            std::process::id(),
            crate::clock::unix_ms()
        )],
    )
    .map_err(not_writable)?;
    tx.commit().map_err(not_writable)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(&e)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(&e)?;
    Ok(conn)
}

fn ms(v: Option<u64>) -> Option<i64> {
    v.map(|x| i64::try_from(x).unwrap_or(i64::MAX))
}

fn times(list: &[u64]) -> String {
    serde_json::to_string(list).unwrap_or_else(|_| "[]".into())
}

fn holds_state(r: &Record) -> bool {
    !r.log.is_empty()
        || !r.violations.is_empty()
        || r.block_until.is_some()
        || r.banned
        || r.lock_until.is_some()
}

fn upsert(tx: &rusqlite::Transaction<'_>, r: &Record) -> rusqlite::Result<()> {
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

/// A row's key kind and address (its columns 0 and 1), as the entries and
/// the journal tables both store them.
fn kind_addr(
    row: &rusqlite::Row<'_>,
    e: &dyn Fn(rusqlite::Error) -> StoreError,
    bad: &dyn Fn(&str) -> StoreError,
) -> Result<(KeyKind, Addr), StoreError> {
    let kind: i64 = row.get(0).map_err(e)?;
    let kind = u8::try_from(kind)
        .ok()
        .and_then(KeyKind::from_tag)
        .ok_or_else(|| bad("unknown kind"))?;
    let addr: Vec<u8> = row.get(1).map_err(|_| bad("addr is not a blob"))?;
    let addr: [u8; 16] = addr.try_into().map_err(|_| bad("addr is not 16 bytes"))?;
    Ok((kind, Addr::from_octets(addr)))
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
        // A read-only look (CLI `--db`) needs no seed and writes nothing.
        None if conn.is_readonly(rusqlite::DatabaseName::Main).map_err(&e)? => Seed::new([0; 16]),
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
        let (kind, addr) = kind_addr(row, &e, &bad)?;
        let user: i64 = row.get(2).map_err(&e)?;
        let key = Key::from_parts(kind, addr, user as u64).ok_or_else(|| bad("impossible key"))?;
        let mut rec = Record::empty(key);
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
    drop(rows);
    drop(stmt);
    let manual = load_manual(conn, path)?;
    let journal = journal::load(conn, path)?;
    Ok(Loaded {
        seed,
        records,
        manual,
        journal,
    })
}

/// The manual bans; none in a version 1 store (read-only, not migrated).
fn load_manual(conn: &Connection, path: &Path) -> Result<Vec<ManualBan>, StoreError> {
    let e = sql(path);
    let has: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'manual_bans'",
            [],
            |r| r.get(0),
        )
        .map_err(&e)?;
    if has == 0 {
        return Ok(Vec::new());
    }
    let mut stmt = conn
        .prepare("SELECT range, until_ms, reason, created_ms FROM manual_bans")
        .map_err(&e)?;
    let mut rows = stmt.query([]).map_err(&e)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(&e)? {
        let n = out.len();
        let bad = |what: &str| corrupt(path, format!("manual_bans row {n}: {what}"));
        let range: String = row.get(0).map_err(&e)?;
        let range = crate::manual::parse_range(&range).map_err(|r| bad(&r.to_string()))?;
        let until: Option<i64> = row.get(1).map_err(&e)?;
        let until_ms = until
            .map(|u| u64::try_from(u).map_err(|_| bad("negative time")))
            .transpose()?;
        let reason: String = row.get(2).map_err(&e)?;
        let created: i64 = row.get(3).map_err(&e)?;
        out.push(ManualBan {
            range,
            until_ms,
            reason,
            created_ms: u64::try_from(created).map_err(|_| bad("negative time"))?,
        });
    }
    Ok(out)
}

/// Write one manual change in its own transaction.
fn write_manual(
    conn: &mut Connection,
    path: &Path,
    change: &ManualChange,
) -> Result<(), StoreError> {
    let e = sql(path);
    match change {
        ManualChange::Put(b) => conn
            .execute(
                "INSERT INTO manual_bans (range, until_ms, reason, created_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (range) DO UPDATE SET until_ms = excluded.until_ms,
                   reason = excluded.reason, created_ms = excluded.created_ms",
                params![
                    b.range.to_string(),
                    ms(b.until_ms),
                    b.reason,
                    ms(Some(b.created_ms))
                ],
            )
            .map_err(&e)?,
        ManualChange::Delete(c) => conn
            .execute(
                "DELETE FROM manual_bans WHERE range = ?1",
                params![c.to_string()],
            )
            .map_err(&e)?,
    };
    Ok(())
}

impl SqliteStore {
    /// Lock `path`, validate it (see the module docs), load it, and start
    /// the writer thread.
    pub fn open(path: impl AsRef<Path>) -> Result<(SqliteStore, Loaded), StoreError> {
        let path = path.as_ref().to_path_buf();
        let lock = StoreLock::acquire(&path)?;
        let mut conn = open_connection(&lock)?;
        let loaded = load(&conn, &path)?;
        let mut known: HashSet<Key> = loaded.records.iter().map(|r| r.key).collect();
        let (tx, rx) = mpsc::channel::<Job>();
        let thread_path = path.clone();
        let thread = std::thread::Builder::new()
            .name("portcullis-sqlite".into())
            .spawn(move || {
                let path = thread_path;
                // The last snapshot's failure, reported again by `close`.
                let mut last_snapshot: Option<String> = None;
                while let Ok(job) = rx.recv() {
                    match job {
                        Job::Upsert(recs, ack) => {
                            let r = write(&mut conn, &path, &recs, &mut known, false);
                            let _ = ack.send(r);
                        }
                        Job::Manual(change, ack) => {
                            let _ = ack.send(write_manual(&mut conn, &path, &change));
                        }
                        Job::Journal(changes, ack) => {
                            let _ = ack.send(journal::write(&mut conn, &path, &changes));
                        }
                        Job::Snapshot(recs, ack) => {
                            let r = write(&mut conn, &path, &recs, &mut known, true);
                            last_snapshot = r.as_ref().err().map(ToString::to_string);
                            let _ = ack.send(r);
                        }
                        Job::JailPosition(p, ack) => {
                            let _ = ack.send(jails::write(&conn, &path, &p));
                        }
                        Job::JailPositions(ack) => {
                            let _ = ack.send(jails::read(&conn, &path));
                        }
                        Job::Stop => break,
                    }
                }
                let closed = conn.close().map_err(|(_, source)| StoreError::Sqlite {
                    path: path.clone(),
                    source,
                });
                let closed = match last_snapshot {
                    Some(reason) => Err(StoreError::SnapshotFailed {
                        path: path.clone(),
                        reason,
                    }),
                    None => closed,
                };
                tracing::debug!(path = %path.display(), "sqlite writer stopped");
                // The lock goes only once the connection is closed.
                drop(lock);
                closed
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
    pub async fn write(&self, records: Vec<Record>) -> Result<(), StoreError> {
        let rx = self.send(|ack| Job::Upsert(records, ack));
        rx.await.unwrap_or_else(|_| {
            Err(StoreError::Closed {
                path: self.path.clone(),
            })
        })
    }

    /// Write a manual ban (or its lifting) through; resolves once committed.
    pub async fn write_manual(&self, change: ManualChange) -> Result<(), StoreError> {
        let rx = self.send(|ack| Job::Manual(change, ack));
        rx.await.unwrap_or_else(|_| {
            Err(StoreError::Closed {
                path: self.path.clone(),
            })
        })
    }

    /// Hand `changes` to the writer now (jobs are applied in the order
    /// they are handed over); the future resolves once they are committed,
    /// in one transaction. A caller that must order its changes against
    /// another's hands them over under its own lock and awaits afterwards.
    pub fn write_journal(
        &self,
        changes: Vec<JournalChange>,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send + 'static {
        let rx = self.send(|ack| Job::Journal(changes, ack));
        let path = self.path.clone();
        async move { rx.await.unwrap_or(Err(StoreError::Closed { path })) }
    }

    /// Save one log jail's read position (`sqlite/jails.rs`); resolves once
    /// committed.
    pub async fn write_jail_position(&self, position: JailPosition) -> Result<(), StoreError> {
        let rx = self.send(|ack| Job::JailPosition(position, ack));
        rx.await.unwrap_or_else(|_| {
            Err(StoreError::Closed {
                path: self.path.clone(),
            })
        })
    }

    /// Every log jail's saved read position (`sqlite/jails.rs`).
    pub async fn jail_positions(&self) -> Result<Vec<JailPosition>, StoreError> {
        let (ack, rx) = oneshot::channel();
        let _ = self.tx.send(Job::JailPositions(ack));
        rx.await.unwrap_or_else(|_| {
            Err(StoreError::Closed {
                path: self.path.clone(),
            })
        })
    }

    /// Replace everything with `records`; resolves once committed.
    pub async fn snapshot(&self, records: Vec<Record>) -> Result<(), StoreError> {
        let rx = self.send(|ack| Job::Snapshot(records, ack));
        rx.await.unwrap_or_else(|_| {
            Err(StoreError::Closed {
                path: self.path.clone(),
            })
        })
    }

    /// [`snapshot`](Self::snapshot) for non-async callers.
    pub fn snapshot_blocking(&self, records: Vec<Record>) -> Result<(), StoreError> {
        let rx = self.send(|ack| Job::Snapshot(records, ack));
        rx.blocking_recv().unwrap_or_else(|_| {
            Err(StoreError::Closed {
                path: self.path.clone(),
            })
        })
    }

    /// [`write`](Self::write) for non-async callers.
    pub fn write_blocking(&self, records: Vec<Record>) -> Result<(), StoreError> {
        let rx = self.send(|ack| Job::Upsert(records, ack));
        rx.blocking_recv().unwrap_or_else(|_| {
            Err(StoreError::Closed {
                path: self.path.clone(),
            })
        })
    }

    /// Stop the writer after the queued jobs, close the file (its final
    /// WAL checkpoint) and release the lock. An error if the last snapshot
    /// taken failed ([`StoreError::SnapshotFailed`]: the shutdown did not
    /// save the state, so the process should exit non-zero), if closing
    /// failed, or if the writer died. Closing again is a no-op.
    pub fn close(&self) -> Result<(), StoreError> {
        let _ = self.tx.send(Job::Stop);
        let Some(t) = self.thread.lock().take() else {
            return Ok(());
        };
        t.join().unwrap_or_else(|_| {
            Err(StoreError::Closed {
                path: self.path.clone(),
            })
        })
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::error!(error = %e, "closing the store failed");
        }
    }
}

/// Upsert `recs`; with `snapshot`, also delete the rows of keys in `known`
/// (loaded or written by this process) that `recs` no longer holds. Rows
/// this process never saw are left alone. `known` follows the commit.
fn write(
    conn: &mut Connection,
    path: &Path,
    recs: &[Record],
    known: &mut HashSet<Key>,
    snapshot: bool,
) -> Result<(), StoreError> {
    let e = sql(path);
    let tx = conn.transaction().map_err(&e)?;
    for r in recs {
        // A snapshot's empty record deletes a row only if it is ours.
        if snapshot && !holds_state(r) && !known.contains(&r.key) {
            continue;
        }
        upsert(&tx, r).map_err(&e)?;
    }
    let present: HashSet<Key> = recs.iter().map(|r| r.key).collect();
    if snapshot {
        for k in known.iter().filter(|k| !present.contains(k)) {
            tx.execute(
                "DELETE FROM entries WHERE kind = ?1 AND addr = ?2 AND user = ?3",
                params![
                    k.kind().tag(),
                    k.addr().octets().as_slice(),
                    k.user() as i64
                ],
            )
            .map_err(&e)?;
        }
    }
    tx.commit().map_err(&e)?;
    if snapshot {
        known.retain(|k| present.contains(k));
    }
    for r in recs {
        if holds_state(r) {
            known.insert(r.key);
        } else {
            known.remove(&r.key);
        }
    }
    Ok(())
}

/// Read-only view for the CLI's `--db` mode; the caller holds the lock, so
/// no server runs on the file. Writes nothing, creates nothing.
pub fn read_only(lock: &StoreLock) -> Result<Loaded, StoreError> {
    let path = lock.path();
    if !path.exists() {
        return Err(StoreError::Missing {
            path: path.to_path_buf(),
        });
    }
    if inspect(path)? == Contents::Empty {
        return Ok(Loaded {
            seed: Seed::new([0; 16]),
            records: Vec::new(),
            manual: Vec::new(),
            journal: Vec::new(),
        });
    }
    let conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql(path))?;
    load(&conn, path)
}

/// Apply a change to a store file directly (CLI `unban --db`); the caller
/// holds the lock. Nothing to apply writes nothing.
pub fn apply(lock: &StoreLock, records: &[Record]) -> Result<(), StoreError> {
    if records.is_empty() {
        return Ok(());
    }
    let mut conn = open_connection(lock)?;
    let mut known = HashSet::new();
    write(&mut conn, lock.path(), records, &mut known, false)
}

/// Apply a manual change to a store file directly (CLI `ban --db`,
/// `unban --db`); the caller holds the lock. Opening migrates a version 1
/// store first.
pub fn apply_manual(lock: &StoreLock, change: &ManualChange) -> Result<(), StoreError> {
    let mut conn = open_connection(lock)?;
    write_manual(&mut conn, lock.path(), change)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_name_the_file_in_their_messages() {
        let path = PathBuf::from("/var/lib/p.db");
        let lock = PathBuf::from("/var/lib/p.db.lock");
        let io = || std::io::Error::other("denied");
        let cases = [
            (
                StoreError::Locked {
                    path: path.clone(),
                    lock: lock.clone(),
                    pid: Some(42),
                },
                "/var/lib/p.db: store in use by a running server (pid 42, lock file /var/lib/p.db.lock)",
            ),
            (
                StoreError::Locked {
                    path: path.clone(),
                    lock: lock.clone(),
                    pid: None,
                },
                "/var/lib/p.db: store in use by a running server (pid unknown, lock file /var/lib/p.db.lock)",
            ),
            (
                StoreError::Lock {
                    path: path.clone(),
                    lock,
                    source: io(),
                },
                "/var/lib/p.db: cannot lock /var/lib/p.db.lock: denied",
            ),
            (
                StoreError::UnknownVersion {
                    path: path.clone(),
                    found: 99,
                },
                &format!("/var/lib/p.db: unknown schema version 99 (this portcullis knows up to {SCHEMA_VERSION}); refusing to touch it"),
            ),
            (
                StoreError::Corrupt {
                    path: path.clone(),
                    reason: "bad row".into(),
                },
                "/var/lib/p.db: corrupt store: bad row; refusing to load it",
            ),
            (
                StoreError::Foreign {
                    path: path.clone(),
                    reason: "other tables".into(),
                },
                "/var/lib/p.db: not a portcullis store (other tables); refusing to touch it",
            ),
            (
                StoreError::Closed { path: path.clone() },
                "/var/lib/p.db: store writer stopped",
            ),
            (
                StoreError::SnapshotFailed {
                    path: path.clone(),
                    reason: "disk full".into(),
                },
                "last snapshot failed: disk full",
            ),
            (
                StoreError::Missing { path },
                "/var/lib/p.db: no such file",
            ),
        ];
        for (e, want) in &cases {
            assert_eq!(e.to_string(), *want);
        }
        let lock_err = &cases[2].0;
        assert_eq!(
            std::error::Error::source(lock_err).map(|s| s.to_string()),
            Some("denied".into())
        );
    }
}
