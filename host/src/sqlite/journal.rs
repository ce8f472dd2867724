//! The `journal` table (schema version 3): a fleet server's record of
//! what its local fallback imposed while Redis was away and Redis does not
//! know yet (see [`Journal`](crate::persist::Journal)).
//!
//! One row per key: its kind and address, the username of a
//! (username, address) or account key (plain text: the local limiter's
//! username hashes change with its seed at every start, the fleet's are
//! Redis's, so only the name maps a row to both), and the state to impose
//! (ban, block, escalation, lock, violation times; Unix milliseconds). A
//! row is written through before the response that imposed it leaves, and
//! deleted once Redis has it. Address keys have the username `''`.

use std::path::Path;

use rusqlite::{params, Connection};

use super::{corrupt, ms, sql, times, StoreError};
use crate::persist::{Imposed, JournalChange, JournalKey, JournalRow};

/// Schema version 3's new table (also the migration from 1 and 2).
pub(super) const CREATE_JOURNAL: &str = "CREATE TABLE journal (
                 kind INTEGER NOT NULL,
                 addr BLOB NOT NULL,
                 username TEXT NOT NULL,
                 banned INTEGER NOT NULL,
                 block_until INTEGER,
                 block_level INTEGER NOT NULL,
                 last_block_start INTEGER,
                 lock_until INTEGER,
                 violations TEXT NOT NULL,
                 PRIMARY KEY (kind, addr, username)
             ) WITHOUT ROWID;";

/// The columns of version 3's `journal`, in order.
pub(super) const V3_JOURNAL: &[&str] = &[
    "kind",
    "addr",
    "username",
    "banned",
    "block_until",
    "block_level",
    "last_block_start",
    "lock_until",
    "violations",
];

/// Apply `changes` in one transaction, in order.
pub(super) fn write(
    conn: &mut Connection,
    path: &Path,
    changes: &[JournalChange],
) -> Result<(), StoreError> {
    let e = sql(path);
    let tx = conn.transaction().map_err(&e)?;
    for c in changes {
        match c {
            JournalChange::Put(r) => tx.execute(
                "INSERT INTO journal (kind, addr, username, banned, block_until, block_level, last_block_start, lock_until, violations)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (kind, addr, username) DO UPDATE SET
                   banned = excluded.banned, block_until = excluded.block_until,
                   block_level = excluded.block_level, last_block_start = excluded.last_block_start,
                   lock_until = excluded.lock_until, violations = excluded.violations",
                params![
                    r.key.kind.tag(),
                    r.key.addr.octets().as_slice(),
                    r.key.username,
                    r.imposed.banned,
                    ms(r.imposed.block_until_ms),
                    r.imposed.block_level,
                    ms(r.imposed.last_block_start_ms),
                    ms(r.imposed.lock_until_ms),
                    times(&r.imposed.violations_ms),
                ],
            ),
            JournalChange::Delete(k) => tx.execute(
                "DELETE FROM journal WHERE kind = ?1 AND addr = ?2 AND username = ?3",
                params![k.kind.tag(), k.addr.octets().as_slice(), k.username],
            ),
        }
        .map_err(&e)?;
    }
    tx.commit().map_err(&e)
}

/// Every journal row (none before version 3: read-only, not migrated).
pub(super) fn load(conn: &Connection, path: &Path) -> Result<Vec<JournalRow>, StoreError> {
    let e = sql(path);
    let has: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'journal'",
            [],
            |r| r.get(0),
        )
        .map_err(&e)?;
    if has == 0 {
        return Ok(Vec::new());
    }
    let mut stmt = conn
        .prepare(
            "SELECT kind, addr, username, banned, block_until, block_level, last_block_start, lock_until, violations FROM journal",
        )
        .map_err(&e)?;
    let mut rows = stmt.query([]).map_err(&e)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(&e)? {
        let n = out.len();
        let bad = |what: &str| corrupt(path, format!("journal row {n}: {what}"));
        let (kind, addr) = super::kind_addr(row, &e, &bad)?;
        let username: String = row.get(2).map_err(|_| bad("username is not text"))?;
        let opt = |i: usize| -> Result<Option<u64>, StoreError> {
            let v: Option<i64> = row.get(i).map_err(&e)?;
            v.map(|x| u64::try_from(x).map_err(|_| bad("negative time")))
                .transpose()
        };
        let level: i64 = row.get(5).map_err(&e)?;
        let v: String = row.get(8).map_err(&e)?;
        out.push(JournalRow {
            key: JournalKey {
                kind,
                addr,
                username,
            },
            imposed: Imposed {
                banned: row.get(3).map_err(&e)?,
                block_until_ms: opt(4)?,
                block_level: u8::try_from(level).map_err(|_| bad("block level out of range"))?,
                last_block_start_ms: opt(6)?,
                lock_until_ms: opt(7)?,
                violations_ms: serde_json::from_str(&v)
                    .map_err(|err| bad(&format!("violations: {err}")))?,
            },
        });
    }
    Ok(out)
}
