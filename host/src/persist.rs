//! [`Persist`]: where a [`Guard`](crate::Guard) writes bans, blocks and
//! locks through and takes its snapshots. The SQLite store (feature
//! `sqlite`) is one; a library user can bring their own (a file, a
//! database they already run) without taking SQLite.

use crate::BoxFuture;

use crate::limiter::HostRecord;

/// Why a write or snapshot failed (the store's own error, boxed).
pub type PersistError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Durable storage for a limiter's records.
pub trait Persist: Send + Sync + 'static {
    /// Upsert these records (an empty one deletes its key) and wait until
    /// they are durable: called before a ban, block or lock is answered.
    fn write(&self, records: Vec<HostRecord>) -> BoxFuture<'_, Result<(), PersistError>>;
    /// Replace what this process stored with `records` (a full export).
    fn snapshot(&self, records: Vec<HostRecord>) -> BoxFuture<'_, Result<(), PersistError>>;
    /// Where the records go, for status pages (a path, a URL).
    fn location(&self) -> String;
    /// Write a manual ban of an address or range (or its lifting) through
    /// ([`crate::manual`]). The default refuses: a store that cannot keep
    /// them says so rather than losing them silently.
    fn write_manual(
        &self,
        change: crate::manual::ManualChange,
    ) -> BoxFuture<'_, Result<(), PersistError>> {
        let _ = change;
        Box::pin(async { Err("this store does not keep manual bans".into()) })
    }
}

#[cfg(feature = "sqlite")]
impl Persist for crate::sqlite::SqliteStore {
    fn write(&self, records: Vec<HostRecord>) -> BoxFuture<'_, Result<(), PersistError>> {
        Box::pin(async move {
            crate::sqlite::SqliteStore::write(self, records)
                .await
                .map_err(Into::into)
        })
    }
    fn snapshot(&self, records: Vec<HostRecord>) -> BoxFuture<'_, Result<(), PersistError>> {
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
