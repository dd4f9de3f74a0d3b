//! Where approvals and grants are kept: SQLite in the data directory (one gateway), or the
//! PostgreSQL database replicas share (`[state] backend = "postgres"`).
//!
//! Every change goes through a [`Tx`]: for SQLite, the service's one lock; for PostgreSQL,
//! a transaction holding an advisory lock, so replicas change approvals one at a time just
//! as one process does. Reads outside a change take neither.

mod postgres;
mod sqlite;

use std::path::Path;

use portcullis_state::Shared;
use tokio::sync::{Mutex, MutexGuard};

use crate::types::{Approval, Grant};

pub(crate) use postgres::PgStore;
pub(crate) use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("approvals store {path}: {source}")]
    Sqlite {
        path: String,
        source: rusqlite::Error,
    },
    #[error("approvals store (shared state): {0}")]
    Postgres(#[from] portcullis_state::StateError),
    #[error("approvals store: a stored record does not parse: {0}")]
    Corrupt(serde_json::Error),
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::Postgres(e.into())
    }
}

pub(crate) enum Store {
    Sqlite(Mutex<SqliteStore>),
    Postgres(PgStore),
}

/// One change to the store, exclusive across the service (and across replicas).
pub(crate) enum Tx<'a> {
    Sqlite(MutexGuard<'a, SqliteStore>),
    Postgres(postgres::PgTx),
}

impl Store {
    pub(crate) async fn open(
        data_dir: &Path,
        shared: Option<&Shared>,
    ) -> Result<Store, StoreError> {
        Ok(match shared {
            None => Store::Sqlite(Mutex::new(SqliteStore::open(data_dir)?)),
            Some(shared) => Store::Postgres(PgStore::open(shared.clone()).await?),
        })
    }

    pub(crate) async fn begin(&self) -> Result<Tx<'_>, StoreError> {
        Ok(match self {
            Store::Sqlite(store) => Tx::Sqlite(store.lock().await),
            Store::Postgres(store) => Tx::Postgres(store.begin().await?),
        })
    }

    pub(crate) async fn approval(&self, id: &str) -> Result<Option<Approval>, StoreError> {
        match self {
            Store::Sqlite(store) => store.lock().await.approval(id),
            Store::Postgres(store) => store.approval(id).await,
        }
    }

    /// Approvals, newest first; only pending ones when `pending_only`. At most `limit`.
    pub(crate) async fn approvals(
        &self,
        pending_only: bool,
        limit: usize,
    ) -> Result<Vec<Approval>, StoreError> {
        match self {
            Store::Sqlite(store) => store.lock().await.approvals(pending_only, limit),
            Store::Postgres(store) => store.approvals(pending_only, limit).await,
        }
    }

    /// Grants, newest first, at most `limit`.
    pub(crate) async fn grants(&self, limit: usize) -> Result<Vec<Grant>, StoreError> {
        match self {
            Store::Sqlite(store) => store.lock().await.grants(limit),
            Store::Postgres(store) => store.grants(limit).await,
        }
    }

    /// Grants not yet closed (active, or expired with the expiry not yet recorded).
    pub(crate) async fn open_grants(&self) -> Result<Vec<Grant>, StoreError> {
        match self {
            Store::Sqlite(store) => store.lock().await.open_grants(),
            Store::Postgres(store) => store.open_grants().await,
        }
    }

    pub(crate) fn shared(&self) -> Option<&Shared> {
        match self {
            Store::Sqlite(_) => None,
            Store::Postgres(store) => Some(store.shared()),
        }
    }
}

impl Tx<'_> {
    pub(crate) async fn approval(&self, id: &str) -> Result<Option<Approval>, StoreError> {
        match self {
            Tx::Sqlite(store) => store.approval(id),
            Tx::Postgres(tx) => tx.approval(id).await,
        }
    }

    pub(crate) async fn put_approval(&self, a: &Approval) -> Result<(), StoreError> {
        match self {
            Tx::Sqlite(store) => store.put_approval(a),
            Tx::Postgres(tx) => tx.put_approval(a).await,
        }
    }

    /// Held requests still pending that this gateway held in an earlier run (with shared
    /// state: this replica's, by its name).
    pub(crate) async fn own_pending_requests(&self) -> Result<Vec<Approval>, StoreError> {
        match self {
            Tx::Sqlite(store) => store.pending_requests(),
            Tx::Postgres(tx) => tx.pending_requests_of(None).await,
        }
    }

    /// Held requests still pending on replica `replica` (shared state only).
    pub(crate) async fn pending_requests_of(
        &self,
        replica: &str,
    ) -> Result<Vec<Approval>, StoreError> {
        match self {
            Tx::Sqlite(_) => Ok(Vec::new()),
            Tx::Postgres(tx) => tx.pending_requests_of(Some(replica)).await,
        }
    }

    /// Pending approvals whose time ran out by `now_ms`.
    pub(crate) async fn due_approvals(&self, now_ms: i64) -> Result<Vec<Approval>, StoreError> {
        match self {
            Tx::Sqlite(store) => store.due_approvals(now_ms),
            Tx::Postgres(tx) => tx.due_approvals(now_ms).await,
        }
    }

    /// Grants not yet closed whose end has come by `now_ms`.
    pub(crate) async fn due_grants(&self, now_ms: i64) -> Result<Vec<Grant>, StoreError> {
        match self {
            Tx::Sqlite(store) => store.due_grants(now_ms),
            Tx::Postgres(tx) => tx.due_grants(now_ms).await,
        }
    }

    pub(crate) async fn put_grant(&self, g: &Grant, closed: bool) -> Result<(), StoreError> {
        match self {
            Tx::Sqlite(store) => store.put_grant(g, closed),
            Tx::Postgres(tx) => tx.put_grant(g, closed).await,
        }
    }

    pub(crate) async fn grant(&self, id: &str) -> Result<Option<(Grant, bool)>, StoreError> {
        match self {
            Tx::Sqlite(store) => store.grant(id),
            Tx::Postgres(tx) => tx.grant(id).await,
        }
    }

    /// Marks approved request `id` as forwarded, once: false if it was already (by this
    /// replica or another), or is not approved.
    pub(crate) async fn consume(&self, id: &str) -> Result<bool, StoreError> {
        match self {
            Tx::Sqlite(store) => store.consume(id),
            Tx::Postgres(tx) => tx.consume(id).await,
        }
    }

    /// Replicas silent past their timeout (shared state only).
    pub(crate) async fn dead_replicas(&self) -> Result<Vec<String>, StoreError> {
        match self {
            Tx::Sqlite(_) => Ok(Vec::new()),
            Tx::Postgres(tx) => tx.dead_replicas().await,
        }
    }

    /// Forgets a dead replica once its holds are dealt with (shared state only).
    pub(crate) async fn forget_replica(&self, replica: &str) -> Result<(), StoreError> {
        match self {
            Tx::Sqlite(_) => Ok(()),
            Tx::Postgres(tx) => tx.forget_replica(replica).await,
        }
    }

    /// Makes the change durable (and, with shared state, visible to the other replicas).
    /// A change dropped without this is committed in the background.
    pub(crate) async fn commit(self) -> Result<(), StoreError> {
        match self {
            Tx::Sqlite(_) => Ok(()),
            Tx::Postgres(tx) => tx.commit().await,
        }
    }
}

/// Milliseconds since the epoch of an RFC 3339 time (0 if it does not parse, which the
/// records written here never do).
pub(crate) fn millis(time: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(time)
        .map(|t| t.timestamp_millis())
        .unwrap_or(0)
}
