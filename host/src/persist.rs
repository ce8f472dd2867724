//! [`Persist`]: where a [`Guard`](crate::Guard) writes bans, blocks and
//! locks through and takes its snapshots. The SQLite store (feature
//! `sqlite`) is one; a library user can bring their own (a file, a
//! database they already run) without taking SQLite.

use crate::BoxFuture;
use portcullis_core::{Addr, KeyKind};

use crate::limiter::Record;

/// Why a write or snapshot failed (the store's own error, boxed).
pub type PersistError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Durable storage for a limiter's records.
pub trait Persist: Send + Sync + 'static {
    /// Upsert these records (an empty one deletes its key) and wait until
    /// they are durable: called before a ban, block or lock is answered.
    fn write(&self, records: Vec<Record>) -> BoxFuture<'_, Result<(), PersistError>>;
    /// Replace what this process stored with `records` (a full export).
    fn snapshot(&self, records: Vec<Record>) -> BoxFuture<'_, Result<(), PersistError>>;
    /// Where the records go, for status pages (a path, a URL).
    fn location(&self) -> String;
    /// Write a manual ban of an address or range (or its lifting) through
    /// ([`ManualBan`](crate::ManualBan)). The default refuses: a store that cannot keep
    /// them says so rather than losing them silently.
    fn write_manual(
        &self,
        change: crate::manual::ManualChange,
    ) -> BoxFuture<'_, Result<(), PersistError>> {
        let _ = change;
        Box::pin(async { Err("this store does not keep manual bans".into()) })
    }
}

// A fleet server's journal ([`Journal`]): what its local fallback imposed
// while the fleet store was away and that store does not know yet.

/// Which key a journal row is for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct JournalKey {
    /// The key's kind.
    pub kind: KeyKind,
    /// Its address ([`Addr::NONE`] for an account key).
    pub addr: Addr,
    /// The username of a (username, address) or account key; `""` for an
    /// address key.
    pub username: String,
}

/// One journal row: a key and what the fallback imposed on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalRow {
    /// The key.
    pub key: JournalKey,
    /// What was imposed on it.
    pub imposed: Imposed,
}

/// What the fallback imposed on one key (times in Unix ms, as records
/// carry them): what the reconcile queue holds and the journal keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Imposed {
    /// Banned until lifted.
    pub banned: bool,
    /// End of the block.
    pub block_until_ms: Option<u64>,
    /// Escalation level of the block.
    pub block_level: u8,
    /// Start of the last block.
    pub last_block_start_ms: Option<u64>,
    /// End of the lock.
    pub lock_until_ms: Option<u64>,
    /// Violation times, oldest first.
    pub violations_ms: Vec<u64>,
}

impl Imposed {
    /// The ban, block, escalation, lock and violations of `r`.
    pub fn of<const W: usize>(r: &portcullis_core::Record<W>) -> Imposed {
        Imposed {
            banned: r.banned,
            block_until_ms: r.block_until,
            block_level: r.block_level,
            last_block_start_ms: r.last_block_start,
            lock_until_ms: r.lock_until,
            violations_ms: r.violations.iter().copied().collect(),
        }
    }
}

/// One change to the journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JournalChange {
    /// Insert or replace the row of its key.
    Put(JournalRow),
    /// Delete the row of this key (written to Redis, or lifted).
    Delete(JournalKey),
}

/// Durable storage for a fleet server's journal of what its local fallback
/// imposed during an outage (the SQLite store is one: its `journal` table).
pub trait Journal: Send + Sync + 'static {
    /// Hand `changes` over now, in the order of the calls; the future
    /// resolves once they are durable. (A caller that must order its
    /// changes against another caller's hands them over under its own lock
    /// and awaits afterwards.)
    fn submit(&self, changes: Vec<JournalChange>) -> BoxFuture<'static, Result<(), PersistError>>;
    /// Where the journal is, for status pages and logs.
    fn location(&self) -> String;
}

#[cfg(feature = "sqlite")]
impl Journal for crate::sqlite::SqliteStore {
    fn submit(&self, changes: Vec<JournalChange>) -> BoxFuture<'static, Result<(), PersistError>> {
        let done = self.write_journal(changes);
        Box::pin(async move { done.await.map_err(Into::into) })
    }
    fn location(&self) -> String {
        self.path().display().to_string()
    }
}

#[cfg(feature = "sqlite")]
impl Persist for crate::sqlite::SqliteStore {
    fn write(&self, records: Vec<Record>) -> BoxFuture<'_, Result<(), PersistError>> {
        Box::pin(async move {
            crate::sqlite::SqliteStore::write(self, records)
                .await
                .map_err(Into::into)
        })
    }
    fn snapshot(&self, records: Vec<Record>) -> BoxFuture<'_, Result<(), PersistError>> {
        Box::pin(async move {
            crate::sqlite::SqliteStore::snapshot(self, records)
                .await
                .map_err(Into::into)
        })
    }
    fn location(&self) -> String {
        self.path().display().to_string()
    }
    fn write_manual(
        &self,
        change: crate::manual::ManualChange,
    ) -> BoxFuture<'_, Result<(), PersistError>> {
        Box::pin(async move {
            crate::sqlite::SqliteStore::write_manual(self, change)
                .await
                .map_err(Into::into)
        })
    }
}
