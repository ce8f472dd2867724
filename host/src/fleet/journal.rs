//! The fleet engine's journal: the reconciliation queue ([`Pending`](super::reconcile::Pending)) on
//! disk, so a ban the local fallback imposed during a Redis outage
//! survives a `kill -9` of the server and still reaches the fleet.
//!
//! Every change to the queue is handed to a [`Journal`] (the SQLite
//! store's `journal` table, `sqlite/journal.rs`) under the queue's
//! lock, so the journal sees the changes in the queue's order: a key
//! queued is written (`Put`) before the fallback's response leaves (the
//! fallback guard awaits it, as a SQLite server awaits its write-through),
//! and deleted once Redis has it (or once it was lifted or ended). At
//! start-up [`Restored`] turns the rows back into queue entries and into
//! records the local fallback limiter imposes again, so:
//! `kill -9` during an outage → restart (the ban holds locally) → Redis
//! back → the ban is reconciled into Redis and every server refuses it.
//!
//! Rows name their username in plain text (see `sqlite/journal.rs`):
//! only keys the fallback banned, blocked or locked during an outage are
//! written, and only until Redis has them.
//!
//! A write that fails is logged and counted ([`ERRORS`]); the decision is
//! still served and the key stays queued in memory (it is only not safe
//! from a crash). [`ENTRIES`] is the number of keys queued.

use std::sync::Arc;

use portcullis_core::{Key, KeyKind, UserHasher};

use super::reconcile::PendingEntry;
use crate::limiter::Record;
use crate::persist::{Journal, JournalChange, JournalKey, JournalRow, PersistError};
use crate::BoxFuture;

/// Gauge: keys queued for Redis, each one a journal row when a journal is
/// kept.
pub const ENTRIES: &str = "portcullis_journal_entries";

/// Counter: journal writes that failed.
pub const ERRORS: &str = "portcullis_journal_errors_total";

/// The journal row's key of a queue entry.
pub(crate) fn key_of(e: &PendingEntry) -> JournalKey {
    JournalKey {
        kind: e.key.kind(),
        addr: e.key.addr(),
        username: e.username.clone().unwrap_or_default(),
    }
}

/// The journal row of a queue entry.
pub(crate) fn row_of(e: &PendingEntry) -> JournalRow {
    JournalRow {
        key: key_of(e),
        imposed: e.imposed.clone(),
    }
}

/// Hand `changes` to `journal` now; the returned future waits until they
/// are durable and counts a failure.
pub(crate) fn submit(
    journal: &Arc<dyn Journal>,
    changes: Vec<JournalChange>,
) -> BoxFuture<'static, Result<(), PersistError>> {
    let done = journal.submit(changes);
    let location = journal.location();
    Box::pin(async move {
        let r = done.await;
        if let Err(e) = &r {
            metrics::counter!(ERRORS).increment(1);
            tracing::error!(journal = %location, error = %e, "journal write failed");
        }
        r
    })
}

/// A journal as it was at start-up: where it goes on, and what it held.
pub struct Restored {
    /// Where the queue is written from now on.
    pub journal: Arc<dyn Journal>,
    /// The rows it held.
    pub rows: Vec<JournalRow>,
}

impl Restored {
    /// `rows` read from `journal` at start-up.
    pub fn new(journal: Arc<dyn Journal>, rows: Vec<JournalRow>) -> Self {
        Restored { journal, rows }
    }
}

/// The queue entry of a saved row, keyed for the local limiter (whose
/// username hashes are `local`'s); `None` for a row that cannot be a key
/// (a pair or account without its username).
pub(crate) fn entry_of(row: &JournalRow, local: &UserHasher) -> Option<PendingEntry> {
    let k = &row.key;
    let (user, username) = match k.kind {
        KeyKind::Request | KeyKind::LoginIp => (0, None),
        KeyKind::LoginUser | KeyKind::Account if k.username.is_empty() => return None,
        KeyKind::LoginUser | KeyKind::Account => {
            (local.hash(&k.username), Some(k.username.clone()))
        }
    };
    Some(PendingEntry {
        key: Key::from_parts(k.kind, k.addr, user)?,
        username,
        imposed: row.imposed.clone(),
    })
}

/// The record that imposes `e` again in the local limiter (its latest
/// violations, as many as a record holds).
pub(crate) fn record_of(e: &PendingEntry) -> Record {
    let i = &e.imposed;
    let mut r = Record::empty(e.key);
    r.banned = i.banned;
    r.block_until = i.block_until_ms;
    r.block_level = i.block_level;
    r.last_block_start = i.last_block_start_ms;
    r.lock_until = i.lock_until_ms;
    let keep = i.violations_ms.len().min(r.violations.capacity());
    for &v in i.violations_ms.iter().skip(i.violations_ms.len() - keep) {
        let _ = r.violations.push(v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persist::Imposed;
    use portcullis_core::{Addr, Seed};

    #[test]
    fn rows_round_trip_to_local_keys_by_username() {
        let local = UserHasher::new(Seed::new([7; 16]));
        let addr = Addr::from_octets([9; 16]);
        let e = PendingEntry {
            key: Key::login_user(local.hash("alice"), addr),
            username: Some("alice".into()),
            imposed: Imposed {
                banned: false,
                block_until_ms: None,
                block_level: 0,
                last_block_start_ms: None,
                lock_until_ms: Some(9_000),
                violations_ms: vec![1, 2, 3],
            },
        };
        let row = row_of(&e);
        assert_eq!(row.key.username, "alice");
        assert_eq!(entry_of(&row, &local), Some(e.clone()));
        // Another start, another seed: the same name, its new hash.
        let other = UserHasher::new(Seed::new([8; 16]));
        let again = entry_of(&row, &other).expect("a key");
        assert_eq!(again.key, Key::login_user(other.hash("alice"), addr));
        // A pair without its name cannot be keyed.
        let mut nameless = row.clone();
        nameless.key.username.clear();
        assert_eq!(entry_of(&nameless, &local), None);
        let r = record_of(&e);
        assert_eq!(r.lock_until, Some(9_000));
        assert_eq!(r.violations.len(), 3.min(r.violations.capacity()));
    }
}
