//! Where each jail has read up to, kept in the server's SQLite store
//! (`portcullis::sqlite::jails`); with `store.kind = "memory"` nothing is
//! kept and a restart starts every jail afresh.

use std::collections::HashMap;
use std::sync::Arc;

use portcullis::sqlite::{JailPosition, SqliteStore};

/// The saved positions and where to save new ones.
#[derive(Clone, Default)]
pub struct Positions {
    store: Option<Arc<SqliteStore>>,
    saved: Arc<HashMap<String, JailPosition>>,
}

impl Positions {
    /// Read every saved position from `store`.
    pub async fn load(store: Option<Arc<SqliteStore>>) -> Positions {
        let mut saved = HashMap::new();
        if let Some(s) = &store {
            match s.jail_positions().await {
                Ok(rows) => saved.extend(rows.into_iter().map(|p| (p.jail.clone(), p))),
                Err(e) => {
                    tracing::error!(error = %e, "jail positions unreadable; jails start afresh")
                }
            }
        }
        Positions {
            store,
            saved: Arc::new(saved),
        }
    }

    /// What `jail` saved for `source` (a position saved for another source
    /// is stale).
    pub fn get(&self, jail: &str, source: &str) -> Option<JailPosition> {
        self.saved.get(jail).filter(|p| p.source == source).cloned()
    }

    /// Save `p` (nothing without a store); an error is logged.
    pub async fn save(&self, p: JailPosition) {
        if let Some(s) = &self.store {
            if let Err(e) = s.write_jail_position(p).await {
                tracing::error!(error = %e, "saving a jail position failed");
            }
        }
    }
}
