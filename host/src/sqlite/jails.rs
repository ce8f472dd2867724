//! The `jail_positions` table (schema version 4): where each log jail of
//! the server (`[[jails]]`) has read its source up to, so a restart
//! neither counts a line twice nor skips one.
//!
//! One row per jail: the source it names (a file path or a journal unit),
//! for a file the device and inode of the file read and the byte offset
//! just past the last line handled, for the journal the cursor of the last
//! entry handled (`''` for a file), and when the row was written (Unix
//! milliseconds). A row whose source differs from the jail's configured
//! one is stale: the jail starts afresh.

use std::path::Path;

use rusqlite::{params, Connection};

use super::{corrupt, sql, StoreError};

/// Schema version 4's new table (also the migration from 1 to 3).
pub(super) const CREATE_JAIL_POSITIONS: &str = "CREATE TABLE jail_positions (
                 jail TEXT PRIMARY KEY,
                 source TEXT NOT NULL,
                 device INTEGER NOT NULL,
                 inode INTEGER NOT NULL,
                 offset INTEGER NOT NULL,
                 cursor TEXT NOT NULL,
                 updated_ms INTEGER NOT NULL
             );";

/// The columns of version 4's `jail_positions`, in order.
pub(super) const V4_JAIL_POSITIONS: &[&str] = &[
    "jail",
    "source",
    "device",
    "inode",
    "offset",
    "cursor",
    "updated_ms",
];

/// How far one jail has read its source.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JailPosition {
    /// The jail's name.
    pub jail: String,
    /// The file path or journal unit it read.
    pub source: String,
    /// The file's device (0 for the journal).
    pub device: u64,
    /// The file's inode (0 for the journal).
    pub inode: u64,
    /// Bytes of the file handled (0 for the journal).
    pub offset: u64,
    /// The journal cursor of the last entry handled (`""` for a file).
    pub cursor: String,
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Write (insert or replace) one jail's position.
pub(super) fn write(conn: &Connection, path: &Path, p: &JailPosition) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO jail_positions (jail, source, device, inode, offset, cursor, updated_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (jail) DO UPDATE SET source = excluded.source, device = excluded.device,
           inode = excluded.inode, offset = excluded.offset, cursor = excluded.cursor,
           updated_ms = excluded.updated_ms",
        params![
            p.jail,
            p.source,
            int(p.device),
            int(p.inode),
            int(p.offset),
            p.cursor,
            int(crate::clock::unix_ms())
        ],
    )
    .map_err(sql(path))?;
    Ok(())
}

/// Every jail's position.
pub(super) fn read(conn: &Connection, path: &Path) -> Result<Vec<JailPosition>, StoreError> {
    let e = sql(path);
    let mut stmt = conn
        .prepare("SELECT jail, source, device, inode, offset, cursor FROM jail_positions")
        .map_err(&e)?;
    let mut rows = stmt.query([]).map_err(&e)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(&e)? {
        let n = out.len();
        let num = |i: usize| -> Result<u64, StoreError> {
            let v: i64 = row.get(i).map_err(&e)?;
            u64::try_from(v).map_err(|_| corrupt(path, format!("jail_positions row {n}: negative")))
        };
        out.push(JailPosition {
            jail: row.get(0).map_err(&e)?,
            source: row.get(1).map_err(&e)?,
            device: num(2)?,
            inode: num(3)?,
            offset: num(4)?,
            cursor: row.get(5).map_err(&e)?,
        });
    }
    Ok(out)
}
